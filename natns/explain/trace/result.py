"""What a trace finds: the rules a packet met, its rewrites, each hop and hook, the legs, the probe.

Every type here turns itself into the JSON of `natns trace --json` (`to_json`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .tables import FAMILY, FAMILY6, TABLE

#: Header fields that NAT can change, and their short names in a `Rewrite`.
REWRITE_FIELDS = {
    "ip saddr": "saddr",
    "ip daddr": "daddr",
    "tcp sport": "sport",
    "tcp dport": "dport",
    "udp sport": "sport",
    "udp dport": "dport",
    "icmp id": "icmp id",
}

_NAT_WORDS = re.compile(r"\b(masquerade|snat|dnat|redirect|netmap)\b", re.IGNORECASE)


@dataclass
class RuleHit:
    """A rule (or a chain's policy) the packet met, with its verdict."""

    family: str
    table: str
    chain: str
    rule: str | None  # None: the chain's policy
    verdict: str
    handle: int | None = None
    iptables: str | None = None  # the iptables-save line of an iptables-nft rule

    @property
    def nat(self) -> bool:
        """Whether this is a NAT rule that applied (masquerade, snat, dnat, redirect)."""
        return bool(self.rule and self.verdict == "accept"
                    and (_NAT_WORDS.search(self.rule) or (self.iptables and _NAT_WORDS.search(self.iptables))))

    def text(self) -> str:
        """The rule's text, or ``policy VERDICT``."""
        return self.rule if self.rule is not None else f"policy {self.verdict}"

    def to_json(self) -> dict:
        return {"family": self.family, "table": self.table, "chain": self.chain, "rule": self.rule,
                "handle": self.handle, "iptables": self.iptables, "verdict": self.verdict,
                "policy": self.rule is None}


@dataclass
class ChainPass:
    """One base chain evaluated for one packet in one namespace."""

    ns: str
    family: str
    table: str
    chain: str
    hook: str
    priority: int | None
    headers: dict[str, str]
    hits: list[RuleHit] = field(default_factory=list)

    @property
    def tracer(self) -> bool:
        """True for natns's own tracing chains (instrumentation, not shown as rules)."""
        return self.family in (FAMILY, FAMILY6) and self.table == TABLE

    @property
    def verdict(self) -> str | None:
        """The verdict that ended this chain: accept, drop, ... (None: unknown)."""
        for h in reversed(self.hits):
            if h.verdict and h.verdict.split()[0] in ("accept", "drop", "queue", "stolen", "reject"):
                return h.verdict
        return None

    @property
    def key(self) -> tuple:
        """What identifies the packet across namespaces: IP id and length, transport details."""
        return packet_key(self.headers)


def packet_key(h: dict[str, str]) -> tuple:
    """A packet's fingerprint from its headers; forwarding and NAT leave it unchanged."""
    if "icmp type" in h:
        l4 = ("icmp", h.get("icmp type"), h.get("icmp sequence"))
    elif "tcp flags" in h:
        l4 = ("tcp", h.get("tcp flags"))
    elif "udp length" in h:
        l4 = ("udp", h.get("udp length"))
    else:
        l4 = ("other",)
    return (h.get("ip id"), h.get("ip length"), *l4)



@dataclass
class Rewrite:
    """A header field changed inside one hook: NAT by a rule, or by conntrack."""

    field: str  # saddr | daddr | sport | dport | icmp id
    before: str
    after: str
    hook: str
    by: str  # "rule" | "conntrack"
    rule: RuleHit | None = None
    conntrack: str | None = None  # the entry that did it (by "conntrack")

    def text(self) -> str:
        return f"{self.field} {self.before} → {self.after}"

    def to_json(self) -> dict:
        return {"field": self.field, "before": self.before, "after": self.after, "hook": self.hook,
                "by": self.by, "rule": self.rule.to_json() if self.rule else None, "conntrack": self.conntrack}


@dataclass
class HookTrace:
    """What happened to the packet in one hook of one namespace."""

    hook: str
    before: dict[str, str]  # headers entering the hook
    after: dict[str, str]  # headers leaving it
    chains: list[ChainPass]  # the chains met, natns's tracer chains left out
    rewrites: list[Rewrite] = field(default_factory=list)
    verdict: str = "accept"
    complete: bool = True  # the packet reached natns's last tracing chain of the hook

    def to_json(self) -> dict:
        return {
            "hook": self.hook,
            "verdict": self.verdict,
            "complete": self.complete,
            "before": _packet_json(self.before),
            "after": _packet_json(self.after),
            "chains": [{"family": c.family, "table": c.table, "chain": c.chain, "priority": c.priority,
                        "verdict": c.verdict, "rules": [h.to_json() for h in c.hits]} for c in self.chains],
            "rewrites": [r.to_json() for r in self.rewrites],
        }


@dataclass
class HopTrace:
    """The packet in one namespace: where it came in, each hook, the route, where it left."""

    ns: str
    hooks: list[HookTrace]
    in_iface: str | None = None
    out_iface: str | None = None
    origin: bool = False  # the packet was sent from here (output hook)
    local: bool = False  # the packet was delivered here (input hook)
    route: str | None = None  # the routing table entry used (ip route get fibmatch)
    route_error: str | None = None
    iptables_legacy: bool = False
    bridged: bool = False  # crossed a bridge at layer 2 (br_netfilter shows it in the ip hooks), not routed

    @property
    def rewrites(self) -> list[Rewrite]:
        return [r for h in self.hooks for r in h.rewrites]

    def hook(self, name: str) -> HookTrace | None:
        """The first HookTrace for hook `name`, or None."""
        return next((h for h in self.hooks if h.hook == name), None)

    def to_json(self) -> dict:
        return {"namespace": self.ns, "in_iface": self.in_iface, "out_iface": self.out_iface,
                "origin": self.origin, "local": self.local, "route": self.route,
                "route_error": self.route_error, "iptables_legacy": self.iptables_legacy, "bridged": self.bridged,
                "hooks": [h.to_json() for h in self.hooks]}


@dataclass
class Stop:
    """Where and why a packet stopped."""

    ns: str
    hook: str
    verdict: str  # "drop", ... or "lost"
    hit: RuleHit | None = None  # the rule (or chain policy) that dropped it
    reason: str = ""

    def to_json(self) -> dict:
        return {"namespace": self.ns, "hook": self.hook, "verdict": self.verdict,
                "rule": self.hit.to_json() if self.hit else None, "reason": self.reason}


@dataclass
class Leg:
    """One packet (the request or the reply) across the namespaces it crossed."""

    direction: str  # "request" | "reply"
    hops: list[HopTrace]
    outcome: str  # "delivered" | "dropped" | "lost" | "not sent"
    delivered_to: str | None = None
    stop: Stop | None = None

    @property
    def first(self) -> dict[str, str]:
        return self.hops[0].hooks[0].before if self.hops and self.hops[0].hooks else {}

    def hop(self, ns: str) -> HopTrace | None:
        """The hop in namespace `ns`, or None."""
        return next((h for h in self.hops if h.ns == ns), None)

    def summary(self) -> str:
        return packet_summary(self.first)

    def to_json(self) -> dict:
        return {"direction": self.direction, "packet": self.summary(), "outcome": self.outcome,
                "delivered_to": self.delivered_to, "stop": self.stop.to_json() if self.stop else None,
                "hops": [h.to_json() for h in self.hops]}


@dataclass
class ConntrackSeen:
    """A conntrack entry of the probe's connection in one namespace (see natns.verify.conntrack).

    `seen` is "table" when the entry was still in the table after the probe,
    "events" when it was only seen in conntrack events (e.g. a TCP reset
    removes it at once).
    """

    ns: str
    entry: object  # natns.verify.conntrack.Entry
    seen: str

    def text(self) -> str:
        """``icmp 192.0.2.2 > 203.0.113.114 id 7, reply 203.0.113.114 > 198.51.100.116 id 7 [ASSURED] SNAT ...``."""
        e = self.entry
        out = f"{e.protocol} {e.original.text()}, reply {e.reply.text()} [{e.state}]"
        if e.nat:
            out += " " + ", ".join(n.text() for n in e.nat)
        if self.seen != "table":
            out += " (gone from the table; seen in conntrack events)"
        return out

    def to_json(self) -> dict:
        return {"namespace": self.ns, "seen": self.seen, "text": self.text(), **self.entry.to_json()}


@dataclass
class Probe:
    """The probe that was sent and what its sender saw."""

    protocol: str  # icmp | tcp | udp
    dst: str
    port: int | None  # destination port (tcp, udp)
    sport: int | None  # source port (tcp, udp)
    icmp_id: int | None
    src: str | None = None  # the source address the kernel chose
    result: str = ""  # "reply", "connected", "refused", "no reply", an error ...
    answered: bool = False
    outcome: str = ""  # natns.kernel.probe's one classification: reply, refused, too-big, ...
    size: int | None = None  # payload bytes (--size), None: the default
    df: bool = False  # Don't Fragment set (--df)
    mtu: int | None = None  # too-big: the MTU the router's frag needed (or the local route) said
    error_from: str | None = None  # the address an ICMP error came from
    error: str | None = None  # the sender's error in full ("local error: message too long, mtu=1400")

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "src": self.src, "dst": self.dst, "port": self.port,
                "sport": self.sport, "icmp_id": self.icmp_id, "result": self.result, "answered": self.answered,
                "outcome": self.outcome, "size": self.size, "df": self.df, "mtu": self.mtu,
                "error_from": self.error_from}


@dataclass
class Trace:
    """The result of `trace`: the probe, its request and reply legs, conntrack entries, notes."""

    src_ns: str
    dst: str
    probe: Probe
    namespaces: list[str]
    request: Leg
    reply: Leg | None
    conntrack: list[ConntrackSeen] = field(default_factory=list)
    legacy: dict[str, str] = field(default_factory=dict)  # ns -> what iptables-legacy holds there
    path: dict | None = None  # what the path walker said: {"complete", "stop"}
    notes: list[str] = field(default_factory=list)
    raw: dict[str, list[str]] = field(default_factory=dict)  # ns -> trace lines of nft monitor (not in JSON)

    @property
    def ok(self) -> bool:
        """True when the request was delivered and the reply came back."""
        return self.request.outcome == "delivered" and self.reply is not None and self.reply.outcome == "delivered"

    def to_json(self) -> dict:
        return {
            "from": self.src_ns,
            "to": self.dst,
            "ok": self.ok,
            "probe": self.probe.to_json(),
            "namespaces": self.namespaces,
            "path": self.path,
            "request": self.request.to_json(),
            "reply": self.reply.to_json() if self.reply else None,
            "conntrack": [c.to_json() for c in self.conntrack],
            "iptables_legacy": self.legacy,
            "notes": self.notes,
        }


def _num(v: str):
    return int(v) if v.isdigit() else v


def _packet_json(h: dict[str, str]) -> dict:
    """Headers for JSON: iif, oif, saddr, daddr, ip_id, ttl, protocol and its fields (numbers as numbers)."""
    out: dict = {}
    for key, name in (("iif", "iif"), ("oif", "oif"), ("ip saddr", "saddr"), ("ip daddr", "daddr"),
                      ("ip id", "ip_id"), ("ip ttl", "ttl")):
        if key in h:
            out[name] = _num(h[key])
    for proto in ("tcp", "udp", "icmp"):
        fields = {k[len(proto) + 1:].replace(" ", "_"): v for k, v in h.items() if k.startswith(proto + " ")}
        if not fields:
            continue
        out["protocol"] = proto
        if proto == "icmp" and fields.get("type", "").startswith("echo"):
            fields.pop("code", None)  # nft names code 0 "net-unreachable" whatever the type
        if proto == "tcp" and "flags" in fields:
            fields["flags"] = tcp_flags(fields["flags"])
        fields.pop("window", None)
        out.update({k: _num(v) for k, v in fields.items()})
        break
    return out


_TCP_FLAGS = ((0x01, "fin"), (0x02, "syn"), (0x04, "rst"), (0x08, "psh"), (0x10, "ack"), (0x20, "urg"),
              (0x40, "ecn"), (0x80, "cwr"))


def tcp_flags(value: str) -> str:
    """nft's ``tcp flags`` value (``syn``, ``0x14``, ``syn | ack``) as names: ``rst|ack``."""
    try:
        n = int(value, 16) if value.startswith("0x") else None
    except ValueError:
        n = None
    if n is None:
        return value.replace(" ", "")
    return "|".join(name for bit, name in _TCP_FLAGS if n & bit) or value


def packet_summary(h: dict[str, str]) -> str:
    """One line like ``192.0.2.2 → 203.0.113.114 icmp echo-request id 4242``."""
    if not h:
        return ""
    src, dst = h.get("ip saddr", "?"), h.get("ip daddr", "?")
    if "icmp type" in h:
        t = h["icmp type"]
        tail = f"{'icmpv6' if 'icmpv6 type' in h else 'icmp'} {t}"
        if t.startswith("echo"):
            tail += f" id {h.get('icmp id')} seq {h.get('icmp sequence')}"
        else:
            tail += f" ({h.get('icmp code')})"
        return f"{src} → {dst} {tail}"
    for proto in ("tcp", "udp"):
        if f"{proto} sport" in h:
            flags = f" [{tcp_flags(h['tcp flags'])}]" if proto == "tcp" and "tcp flags" in h else ""
            at = (lambda a, port: f"[{a}]:{port}" if ":" in a else f"{a}:{port}")  # v6 with a port: bracketed
            return f"{at(src, h[f'{proto} sport'])} → {at(dst, h[f'{proto} dport'])} {proto}{flags}"
    return f"{src} → {dst}"
