"""Destination NAT along a path: where a floating IP or a port forward sends a packet.

`path.walk` follows routes only; a router that translates the destination (nft
`dnat to ...` or a map lookup, iptables `-j DNAT`) sends the packet on to another
address than the one it was sent to. `rewrite` evaluates one namespace's nat
rules for the packet (prerouting, or output where it is sent), `splice` walks
the rest of the path again from there, and `follow` does both along a whole
path (for `trace`, which needs the namespaces; `doctor` interleaves them with
its checks). Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import path as pathmod
from .path import HOST, Path
from .rules import Firewall, Packet, Verdict, read_firewall


@dataclass
class Rewrite:
    addr: str
    port: int | None
    rule: str


def _lookup(fw: Firewall, first: bool, src: str, dst: str, proto: str, port: int | None,
            in_iface: str | None) -> tuple[Packet, Verdict]:
    """The destination NAT verdict of `fw` for a new packet of the flow (output where it is
    sent, prerouting where it arrives by `in_iface`)."""
    pkt = Packet(src, dst, proto, 40000 if proto != "icmp" else None, port,
                 "echo-request" if proto == "icmp" else None, None if first else in_iface, None, "new")
    return pkt, fw.dnat(pkt, "output" if first else "prerouting")


def rewrite(fw: Firewall, first: bool, src: str, dst: str, proto: str, port: int | None,
            in_iface: str | None) -> Rewrite | None:
    """The destination the nat rules of `fw` give a new packet (None: unchanged)."""
    pkt, v = _lookup(fw, first, src, dst, proto, port, in_iface)
    if v.verdict != "dnat" or v.rule is None:
        return None
    addr, new_port = v.rule.nat_rewrite(pkt)
    new_port = new_port if (new_port is not None and proto != "icmp") else port
    if not addr or (addr, new_port) == (dst, port):
        return None
    return Rewrite(addr, new_port, v.rule.text)


def splice(p: Path, i: int, addr: str, src: str | None, snapshot=None) -> None:
    """Replace p.hops[i:] by the walk from hop i's namespace towards `addr`, as forwarded
    there (the packet arrived by the same interface). `snapshot`: as for path.walk."""
    hop = p.hops[i]
    sub = pathmod.walk(hop.ns, addr, in_iface=hop.in_iface if i else None, src=src if i else None,
                       snapshot=snapshot)
    if sub.hops:
        sub.hops[0].in_port = hop.in_port
        p.hops[i:] = sub.hops
        p.complete, p.stop, p.stop_code = sub.complete, sub.stop, sub.stop_code


def unsure(fw: Firewall, first: bool, src: str, dst: str, proto: str, port: int | None,
           in_iface: str | None) -> list[str]:
    """The destination NAT rules (and jumps) of `fw` the walk cannot evaluate for a new packet
    of the flow, in words: where it may be rewritten without the walk following."""
    _, v = _lookup(fw, first, src, dst, proto, port, in_iface)
    return [f"rule `{r.text}` ({r.where()}): {', '.join(r.unknown_parts())} not evaluated" for r in v.maybe]


def follow(src_ns: str, dst: str, proto: str = "icmp", port: int | None = None,
           notes: list[str] | None = None) -> tuple[Path, list[Rewrite]]:
    """The path from `src_ns` to `dst` through every destination NAT on the way.

    The source is taken as the first hop's (source NAT on the way is not applied:
    natns's DNAT rules don't look at it). `notes` (when given) gets a line for each
    destination NAT rule on the way the walk cannot evaluate."""
    p = pathmod.walk(src_ns, dst)
    src = p.hops[0].src if p.hops and p.hops[0].src else "0.0.0.0"
    done: list[Rewrite] = []
    i = 0
    while i < len(p.hops) and len(done) < 8:
        hop = p.hops[i]
        if hop.ns != HOST and not hop.bridge:
            fw = read_firewall(hop.ns)
            rw = rewrite(fw, i == 0, src, dst, proto, port, hop.in_iface)
            if notes is not None:
                notes += [f"{hop.ns}: {u}: the packet may be sent elsewhere than the namespaces traced"
                          for u in unsure(fw, i == 0, src, dst, proto, port, hop.in_iface)]
            if rw is not None:
                done.append(rw)
                dst, port = rw.addr, rw.port
                splice(p, i, rw.addr, src)
        i += 1
    return p, done
