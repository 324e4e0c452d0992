"""Will the host forward an `uplink: host` router's traffic? (read-only)

natns forwards and masquerades an uplink's traffic in the namespace it runs in,
in its own firewall scope, and touches no one else's rules. A host whose
filter FORWARD drops by policy (Docker sets it to DROP) still drops that
traffic in its own chain, which natns's rules can't override: every base
chain of a hook must accept a packet. `blocked_uplinks` evaluates the host's
rules (all of them: nftables, iptables-nft, iptables-legacy, read as `doctor`
reads them) for a new connection from each uplink router out by the host's
default route, and for its replies, and says which rule or policy drops it
and the commands that would let it through. `natns up` prints that as a
warning; it changes nothing itself.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..kernel import rtnl
from .rules import Firewall, Packet, Verdict, ipt_tool, read_firewall

#: a destination beyond the host, only to evaluate rules with (nothing is sent)
_BEYOND = "203.0.113.1"


@dataclass
class BlockedUplink:
    router: str
    uplink: str                 # the host's end of the router's external veth
    direction: str              # "out" (new connections) | "reply"
    dropped_by: str             # the rule's text, or the chain and its policy
    fix: list[str] = field(default_factory=list)  # commands to run in the host, in order

    def text(self) -> str:
        what = "new connections out of" if self.direction == "out" else "replies to"
        return (f"the host's forward hook drops {what} router {self.router} (via {self.uplink}): "
                f"{self.dropped_by}; to let it through, run in the host: " + "; ".join(self.fix))

    def to_json(self) -> dict:
        return {"router": self.router, "uplink": self.uplink, "direction": self.direction,
                "dropped_by": self.dropped_by, "fix": self.fix}


def default_dev() -> str | None:
    """The interface of the host's default route (main table), if it has one."""
    with rtnl.open_in(None) as h:
        names = {ln.index: ln.name for ln in h.links()}
        for r in h.routes(table=254):
            if r.dst_len == 0 and r.oif is not None:
                return names.get(r.oif)
    return None


def accept_cmds(fw: Firewall, v: Verdict, iface: str, direction: str) -> list[str]:
    """Accept rules for the uplink's traffic, in the chain that drops it (Docker's
    DOCKER-USER when the drop is in iptables' FORWARD and that chain exists)."""
    c = v.rule and fw.chains.get((v.rule.source, v.rule.family, v.rule.table, v.rule.chain)) or v.chain
    if c is None:
        return []
    if c.source == "nftables":
        words = (["iifname", iface, "accept"] if direction == "out"
                 else ["oifname", iface, "ct", "state", "established,related", "accept"])
        return [shlex.join(["nft", "insert", "rule", c.family, c.table, c.name, *words])]
    tool = ipt_tool(c.source)
    chain = c.name
    if (c.source, "ip", "filter", "DOCKER-USER") in fw.chains:
        chain = "DOCKER-USER"
    words = (["-i", iface, "-j", "ACCEPT"] if direction == "out"
             else ["-o", iface, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"])
    return [shlex.join([tool, "-t", c.table, "-I", chain, *words])]


def blocked_uplinks(uplinks: Iterable[tuple[str, str, str]]) -> list[BlockedUplink]:
    """For each `uplink: host` router, given as (router, its host-side interface, its external
    address): does the host's forward hook drop its traffic?"""
    uplinks = list(uplinks)
    if not uplinks:
        return []
    fw = read_firewall(None)
    out_dev = default_dev()
    found = []
    for router, iface, src in uplinks:
        packets = {
            "out": Packet(src, _BEYOND, "tcp", 40000, 443, None, iface, out_dev, "new"),
            "reply": Packet(_BEYOND, src, "tcp", 443, 40000, None, out_dev, iface, "established"),
        }
        for direction, pkt in packets.items():
            v = fw.evaluate("forward", pkt)
            if v.drops:
                found.append(BlockedUplink(router, iface, direction, v.describe(), accept_cmds(fw, v, iface, direction)))
    return found
