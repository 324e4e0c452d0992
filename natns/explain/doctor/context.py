"""The flow doctor examines and the questions its checks share, answered from a Snapshot."""

from __future__ import annotations

import ipaddress

from ..path import HOST, RTN_LOCAL, RTN_UNICAST, Hop, LinkInfo, segment
from ..rules import Packet
from ..snapshot import RouteLookupError, Snapshot
from . import findings as fd


class Flow:
    """One flow (`proto` from `src_ns` to `dst`[:`port`]) and the snapshot it is checked on.

    `fdst`/`fport` are the destination as the forward packet carries it at the point the
    forward pass has reached: a DNAT on the way (floating IP, port forward) changes them.
    """

    def __init__(self, snap: Snapshot, src_ns: str, dst: str, proto: str, port: int | None):
        self.snap = snap
        self.src_ns, self.dst, self.proto, self.port = src_ns, dst, proto, port
        self.fdst, self.fport = dst, port
        self.v6 = ":" in dst  # an IPv6 flow: v6 forwarding, `ip -6` fixes, the ip6 rules

    @property
    def forwarding_key(self) -> str:
        """The sysctl that turns forwarding on for this flow's family."""
        return "net.ipv6.conf.all.forwarding" if self.v6 else "net.ipv4.ip_forward"

    def forwards(self, ns: str | None) -> bool:
        """Whether `ns` forwards this flow's family."""
        return self.snap.sysctl(ns, self.forwarding_key) == "1"

    def ip(self, ns: str, *args: str) -> str:
        """An `ip -n NS ...` command for this flow's family (``ip -6 -n NS ...`` for IPv6)."""
        return fd.cmd("ip", *(["-6"] if self.v6 else []), "-n", ns, *args)

    @staticmethod
    def snap_flags(link: LinkInfo, addr: str) -> int:
        """The ifa_flags of IPv6 address `addr` on `link` (0 for IPv4 or unknown)."""
        return link.addr_flags.get(addr, 0)

    def routes(self, ns: str) -> list[str]:
        """The main table of `ns` for this flow's family, as `ip route` / `ip -6 route` print it."""
        return self.snap.routes_text(ns, 6) if self.v6 else self.snap.routes_text(ns)

    def packet(self, saddr: str, daddr: str, iif, oif, reply: bool, port: int | None = None,
               ct_status: frozenset = frozenset()) -> Packet:
        port = self.fport if port is None else port
        if self.proto == "icmp":
            return Packet(saddr, daddr, "icmp", None, None, "echo-reply" if reply else "echo-request", iif, oif,
                          "established" if reply else "new", ct_status)
        if reply:
            return Packet(saddr, daddr, self.proto, port, 40000, None, iif, oif, "established", ct_status)
        return Packet(saddr, daddr, self.proto, 40000, port, None, iif, oif, "new", ct_status)

    @staticmethod
    def flow_text(pkt: Packet) -> str:
        ports = f" dport {pkt.dport}" if pkt.dport else (f" sport {pkt.sport}" if pkt.sport and pkt.proto != "icmp" else "")
        t = f" {pkt.icmp_type}" if pkt.proto == "icmp" else ""
        return (f"{pkt.proto}{t} {pkt.saddr} > {pkt.daddr}{ports} in {pkt.iif or '-'} out {pkt.oif or '-'} "
                f"ct state {pkt.ct_state}")

    def link(self, ns: str, name: str | None) -> LinkInfo | None:
        if not name or ns == HOST:
            return None
        return self.snap.get(ns).by_name(name)

    def routes_ok(self, ns: str, dst: str) -> bool:
        try:
            res = self.snap.route_get(ns, dst)
        except (RouteLookupError, OSError):
            return False
        return res.type in (RTN_UNICAST, RTN_LOCAL)

    def gateway_candidates(self, ns: str, target: str, exclude_ns: set[str] = frozenset()) -> list[tuple[str, str, str]]:
        """(gateway address, our interface, their namespace) on our segments that can route to `target`."""
        view = self.snap.get(ns)
        version = ipaddress.ip_address(target).version
        out = []
        for link in view.links.values():
            if link.kind == "loopback" or not link.addresses or link.master or not link.up:
                continue
            ours = link.networks()
            for pns, plink in segment(ns, link.name, self.snap):
                if pns == ns or pns in exclude_ns:
                    continue
                for a, plen in plink.addresses:
                    ip = ipaddress.ip_address(a)
                    if ip.version != version or not any(ip in n.network for n in ours):
                        continue
                    owns = self.snap.get(pns).owns(target) is not None
                    if not owns and not self.routes_ok(pns, target):
                        continue
                    fwd = self.forwards(pns)
                    out.append((0 if owns else (1 if fwd else 2), a, link.name, pns))
        out.sort()
        return [(a, ifn, pns) for _, a, ifn, pns in out]

    def prev_hop_address(self, hops: list[Hop], i: int, version: int | None = None) -> str | None:
        """The address of the namespace before hops[i] on the link the packet came by (of IP
        `version`, when given)."""
        here = hops[i]
        inl = self.link(here.ns, here.in_iface)
        if inl is None:
            return None
        nets = inl.networks()
        for j in range(i - 1, -1, -1):
            h = hops[j]
            if h.bridge or h.ns == HOST:
                continue
            outl = self.link(h.ns, h.out_iface)
            if outl is None:
                return None
            addrs = [a for a, _ in outl.addresses if version is None or ipaddress.ip_address(a).version == version]
            for a in addrs:
                if any(ipaddress.ip_address(a) in n.network for n in nets):
                    return a
            return addrs[0] if addrs else None
        return None

    def address_towards(self, ns: str, iface: str | None, nh: str) -> str | None:
        """The address of `iface` in `ns` on `nh`'s subnet (else its first address)."""
        out = self.link(ns, iface)
        if out is None or not out.addresses:
            return None
        ip = ipaddress.ip_address(nh)
        for a, plen in out.addresses:
            if ip in ipaddress.ip_network(f"{a}/{plen}", strict=False):
                return a
        return out.addresses[0][0]


class Findings:
    """The findings of one run, each cause once (by Finding.dedup_key)."""

    def __init__(self):
        self.items: list[fd.Finding] = []
        self._seen: set[tuple] = set()

    def add(self, found) -> None:
        for f in ([found] if isinstance(found, fd.Finding) else found):
            k = f.dedup_key()
            if k in self._seen:
                continue
            self._seen.add(k)
            self.items.append(f)
