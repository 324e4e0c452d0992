"""What doctor reports: the finding codes (one registry), findings, NAT points, the report.

`CODES` lists every finding code doctor emits, with its usual severity and what
it means (docs/explain.md, "### Findings", is the same table for people).
`finding()` makes a Finding of a registered code, so a check cannot invent one.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from ..path import Hop, Path

SEVERITIES = ("error", "warning", "info")

# Stages: where in one namespace's processing a finding applies (sort order).
ST_TOOLS, ST_CONNTRACK, ST_PREROUTING, ST_LINK_GONE, ST_ROUTE, ST_FORWARDING, ST_RPFILTER = 0, 5, 10, 19, 20, 30, 35
ST_FILTER, ST_POSTROUTING, ST_MTU, ST_LINK, ST_NEIGH, ST_END = 40, 50, 60, 70, 80, 90


def cmd(*argv: str) -> str:
    """A command line a user can paste; shlex.split gives `argv` back."""
    return shlex.join([str(a) for a in argv])


@dataclass(frozen=True)
class Code:
    code: str
    severity: str   # the usual one; `finding(..., severity=)` overrides it where noted
    meaning: str


_CODES = [
    Code("legacy-and-nft", "warning", "iptables-legacy rules and native nftables tables in one namespace"),
    Code("firewall-unreadable", "warning", "a rule dump failed"),
    Code("conntrack-full", "error", "nf_conntrack_count reached nf_conntrack_max: new connections are dropped"),
    Code("conntrack-nearly-full", "warning", "the conntrack table is at least 90 % full"),
    Code("conntrack-insert-failed", "warning", "conntrack failed to insert entries (insert_failed > 0)"),
    Code("conntrack-drops", "info", "conntrack dropped packets before; the table is not full now"),
    Code("stale-conntrack", "error", "the flow's conntrack entry is translated otherwise than the rules now "
                                     "translate it (made before they changed): a warning when a NAT rule "
                                     "doctor cannot evaluate might explain it, info for an open TCP connection "
                                     "kept on the router's address"),
    Code("firewall-drop", "error", "the input, output, prerouting or postrouting hook drops the packet or reply"),
    Code("forward-drop", "error", "the forward hook drops the packet or reply"),
    Code("firewall-maybe-drop", "warning", "a drop rule doctor cannot evaluate for the packet"),
    Code("firewall-unknown", "warning", "a rule doctor cannot evaluate decides whether the hook drops the packet "
                                        "(otherwise a later rule or policy drops it)"),
    Code("ip-forward-off", "error", "IP forwarding is off (or off on the incoming interface) where the packet "
                                    "must be forwarded"),
    Code("ip6-forward-off", "error", "IPv6 forwarding is off (net.ipv6.conf.all.forwarding) where the "
                                     "packet must be forwarded"),
    Code("ptb-dropped", "warning", "IPv6: a forward hook on the way drops ICMPv6 packet too big back to the "
                                   "source: v6 routers never fragment, so a smaller MTU beyond black-holes "
                                   "big packets"),
    Code("dad-failed", "error", "duplicate address detection failed for an IPv6 address the flow needs: "
                                "the kernel never uses it (a warning for another address on the path)"),
    Code("rp-filter", "error", "rp_filter drops the packet (or ARP requests) from its source"),
    Code("link-down", "error", "a link the packet crosses (or one whose routes it needs) is down"),
    Code("mtu-mismatch", "warning", "the two ends of a veth disagree on the MTU (an error when the DF probe "
                                    "at the source's MTU fails)"),
    Code("path-mtu", "warning", "a router on the way sends out of a link with a smaller MTU than the source's "
                                "and answers full-size DF packets with frag needed (an error when the DF "
                                "probe at the source's MTU fails)"),
    Code("next-hop-unreachable", "error", "nothing on the out link holds the next-hop address"),
    Code("neighbour-failed", "warning", "the next hop's neighbour entry is FAILED/INCOMPLETE (an error when "
                                        "it still is after the probe)"),
    Code("duplicate-address", "error", "two namespaces on one segment hold the same address (a warning when "
                                       "it is not the source, destination or next hop)"),
    Code("no-route", "error", "no route to the destination, or an unreachable/prohibit/blackhole route"),
    Code("no-return-route", "error", "the reply cannot be routed on its way back"),
    Code("no-snat", "error", "no source NAT on the way out and the destination has no route back"),
    Code("reply-misdelivered", "error", "the reply is delivered to another namespace holding the source address"),
    Code("path-loop", "error", "the route leads back to where the packet was"),
    Code("path-max-hops", "error", "the path is longer than the walk follows"),
    Code("path-host", "warning", "the path enters the namespace natns runs in, which is not walked"),
    Code("path-no-peer", "warning", "a veth's peer is in a namespace not under /run/netns"),
    Code("path-unsupported-link", "warning", "a link that is neither veth nor bridge"),
    Code("path-broadcast", "warning", "the destination is a broadcast address on the way"),
    Code("path-unknown", "warning", "the walk stopped for a reason it did not name"),
    Code("bridge-hairpin", "error", "destination NAT sends the packet back out the bridge port it came in by "
                                    "(a host reaching its own floating IP or port forward) while "
                                    "bridge-nf-call-iptables is on and hairpin is off on that port: the bridge "
                                    "drops it"),
    Code("unexplained-failure", "error", "the probe failed but nothing found explains it"),
    Code("model-disagrees", "warning", "doctor's model of the rules predicts a failure that its own probe of "
                                       "the same flow contradicts (a natns bug to report)"),
    # OVN labs (natns/engines/ovn/doctor.py reads the SB/OVS state of the host's path)
    Code("ovn-controller-down", "error", "a chassis on the path has no ovn-controller running"),
    Code("ovn-controller-disconnected", "error", "a chassis' ovn-controller is not connected to the SB DB "
                                                 "(ovn-remote wrong, or the SB unreachable)"),
    Code("ovn-port-unbound", "error", "a host's logical port is not bound: its veth on br-int lacks the right "
                                      "iface-id (or is on no br-int)"),
    Code("ovn-tx-offload", "error", "TX checksum offload is on on a veth OVS's userspace datapath sends through: "
                                    "TCP through NAT breaks (ping still works)"),
    Code("ovn-tunnel-mtu", "error", "a host's MTU is above what Geneve leaves of the underlay MTU: larger "
                                    "packets are dropped without an ICMP error"),
    Code("ovn-no-gateway-chassis", "error", "the router's gateway port is resident on no chassis: SNAT and "
                                            "floating IPs have nowhere to run"),
    Code("ovn-no-bridge-mapping", "error", "the active gateway chassis has no ovn-bridge-mappings entry for "
                                           "the external network's localnet port"),
    Code("ovn-bfd-down", "warning", "BFD from the host's chassis to a gateway chassis is down (an error when "
                                    "it is down to every gateway chassis)"),
]

#: code -> Code, every finding code doctor can report.
CODES: dict[str, Code] = {c.code: c for c in _CODES}


@dataclass
class Finding:
    """One thing found wrong (or worth knowing) along the path."""

    code: str
    severity: str           # error | warning | info
    namespace: str
    summary: str
    evidence: dict = field(default_factory=dict)
    fix: list[str] = field(default_factory=list)           # commands to run, in order
    alternatives: list[str] = field(default_factory=list)  # other commands that also fix it
    note: str | None = None
    direction: str = "forward"  # forward | reply
    hop: int = 0                # index in the forward path's (or reply path's) hops
    stage: int = 0
    key: tuple | None = field(default=None, repr=False, compare=False)  # the same cause, once per report

    def sort_key(self) -> tuple:
        return (0 if self.direction == "forward" else 1, self.hop, self.stage)

    def dedup_key(self) -> tuple:
        return self.key or (self.code, self.namespace, self.summary)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("stage")
        d.pop("key")
        return d


def finding(code: str, namespace: str, summary: str, evidence: dict | None = None, fix: list[str] | None = None,
            alternatives: list[str] | None = None, note: str | None = None, *, severity: str | None = None,
            direction: str = "forward", hop: int = 0, stage: int = 0, key: tuple | None = None) -> Finding:
    """A Finding of the registered `code` (its usual severity unless `severity` is given)."""
    c = CODES[code]
    return Finding(code, severity or c.severity, namespace, summary, evidence or {}, fix or [], alternatives or [],
                   note, direction, hop, stage, key)


@dataclass
class ProbeResult:
    kind: str               # icmp | tcp | udp
    ok: bool | None         # None: inconclusive (UDP without an answer)
    detail: str
    command: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class NatPoint:
    ns: str
    hop: int
    kind: str       # masquerade | snat (the source changes) | dnat (the destination changes)
    before: str     # address before -> after
    after: str
    rule: str
    port_before: int | None = None  # dnat of TCP/UDP: the destination port before -> after
    port_after: int | None = None

    def to_json(self) -> dict:
        d = {"namespace": self.ns, "hop": self.hop, "kind": self.kind, "before": self.before,
             "after": self.after, "rule": self.rule}
        if self.port_before is not None:
            d["port_before"], d["port_after"] = self.port_before, self.port_after
        return d

    def text(self) -> str:
        if self.kind != "dnat":
            return f"{self.kind} in {self.ns}: source {self.before} -> {self.after}  ({self.rule})"
        pb = f":{self.port_before}" if self.port_before is not None else ""
        pa = f":{self.port_after}" if self.port_after is not None else ""
        return f"dnat in {self.ns}: destination {self.before}{pb} -> {self.after}{pa}  ({self.rule})"


@dataclass
class Report:
    src_ns: str
    dst: str
    proto: str
    port: int | None
    path: Path
    reply_hops: list[Hop] = field(default_factory=list)
    reply_complete: bool = False
    reply_stop: str | None = None
    nat: list[NatPoint] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    probe: ProbeResult | None = None
    #: "forward"/"reply" -> hop index -> why that hop does not forward although the packet
    #: must be forwarded there (forwarding off in the namespace or on the incoming interface)
    not_forwarding: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def healthy(self) -> bool:
        return not self.errors and (self.probe is None or self.probe.ok is not False)

    @property
    def exit_status(self) -> int:
        return 0 if self.healthy else 1

    def to_json(self) -> dict:
        return {
            "from": self.src_ns, "to": self.dst, "protocol": self.proto, "port": self.port,
            "healthy": self.healthy, "exit_status": self.exit_status,
            "path": self.path.to_json(),
            "reply_path": {"complete": self.reply_complete, "stop": self.reply_stop,
                           "hops": [h.to_json() for h in self.reply_hops]},
            "nat": [n.to_json() for n in self.nat],
            "findings": [f.to_json() for f in self.findings],
            "probe": self.probe.to_json() if self.probe else None,
        }
