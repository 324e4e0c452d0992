"""Follow one probe packet through every namespace of its path with nftables tracing.

`trace(src_ns, dst, proto, port)` sends one recognisable probe from namespace
`src_ns` to address `dst` (an ICMP echo with its own id, or a TCP/UDP packet
from a source port of its own) with netfilter tracing on in every namespace
the packet crosses, and returns a `Trace`: the request and the reply, hop by
hop (namespace, hook, table, chain, rule text, verdict, routing decision,
address and port rewrites as before → after), and the conntrack entries that
the probe made.

How it works, per traced namespace:

* a temporary table ``ip natns_trace`` holds two chains on every IPv4 hook,
  one before everything else (priority `FIRST`) and one after everything
  else (priority `LAST`). The first chains of prerouting and output set
  ``meta nftrace 1`` on the probe and its replies (matched by ICMP id or by
  the probe's source port, ICMP errors about the probe included). A traced
  packet produces an event for every base chain it passes, so the two
  tracer chains show each hook the packet took and its headers before and
  after the hook: a difference is a rewrite (NAT);
* ``nft -a monitor`` runs in the namespace and prints the trace events; it
  is ready once it has printed the creation of the tracing table.

iptables-nft rules are nftables rules, so they are traced as well (with their
``iptables-save`` text beside the rule). iptables-legacy rules are not: a
namespace that has some is flagged and what they do can only be seen as a
packet that vanishes or changes between two hooks.

The trace id the kernel gives a packet changes at every veth crossing (and
between hooks), so events are tied together by the packet's own contents:
IP id, length and transport header, which forwarding and NAT keep.

Everything is removed afterwards, on error and on Ctrl-C / SIGTERM too: the
tracing tables are deleted in every namespace, and every ``nft monitor`` is
stopped (each also gets SIGTERM from the kernel if natns itself dies).
Traces take a lock, so two traces never share the tracing tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import itertools
import json
import os
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import KernelError, UserError
from ..kernel import netns, nsexec

TABLE = "natns_trace"
FAMILY = "ip"
#: Priorities of the tracer chains: before and after any chain anyone else uses.
FIRST = -1000000
LAST = 1000000
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
PROTOCOLS = ("icmp", "tcp", "udp")
LOCK_PATH = "/run/natns/trace.lock"

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

# ---------------------------------------------------------------------------
# Parsing `nft -a monitor` output


@dataclass
class TraceEvent:
    """One line of ``nft monitor trace`` output."""

    trace_id: str
    family: str
    table: str
    chain: str
    kind: str  # "packet" | "rule" | "policy" | "return"
    headers: dict[str, str] = field(default_factory=dict)  # kind "packet"
    rule: str | None = None  # kind "rule": the rule's text, counters left out
    handle: int | None = None
    verdict: str | None = None  # "accept", "drop", "continue", "jump X", ...


_HDR = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*)$")
_RULE = re.compile(r"^rule (?P<rule>.*?)(?: # handle (?P<handle>\d+))? \(verdict (?P<verdict>[^)]*)\)\s*$")
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
# Header keys of one word, and the words that start two-word keys ("ip saddr").
_ONE_WORD = {"iif", "oif", "iifname", "oifname", "mark"}
_PROTO_WORDS = {"ether", "vlan", "arp", "ip", "ip6", "icmp", "igmp", "tcp", "udp", "udplite", "sctp",
                "dccp", "th", "ah", "esp", "comp", "meta", "ct", "gre"}


def clean_rule(text: str) -> str:
    """A rule's text without counter values and doubled spaces (iptables-nft leaves some)."""
    return re.sub(r" {2,}", " ", _COUNTER.sub("counter", text)).strip()


def parse_headers(text: str) -> dict[str, str]:
    """The header fields of a ``packet:`` line: {"ip saddr": "192.0.2.2", "tcp flags": "syn", ...}."""
    try:
        toks = shlex.split(text)
    except ValueError:
        toks = text.split()
    out: dict[str, str] = {}
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in _ONE_WORD and i + 1 < len(toks):
            out[t] = toks[i + 1]
            i += 2
        elif t.startswith("@") and i + 1 < len(toks):
            out[t] = toks[i + 1]
            i += 2
        elif t in _PROTO_WORDS and i + 2 < len(toks):
            key = f"{t} {toks[i + 1]}"
            j = i + 2
            if toks[j] == "==" and j + 1 < len(toks):
                j += 1
            out[key] = toks[j]
            i = j + 1
        else:
            i += 1
    return out


def parse_line(line: str) -> TraceEvent | None:
    """One line of monitor output as a TraceEvent, or None if it is no trace event."""
    m = _HDR.match(line.strip())
    if not m:
        return None
    base = {"trace_id": m["id"], "family": m["family"], "table": m["table"], "chain": m["chain"]}
    rest = m["rest"]
    if rest.startswith("packet:"):
        return TraceEvent(kind="packet", headers=parse_headers(rest[len("packet:"):]), **base)
    if rest.startswith("rule "):
        r = _RULE.match(rest)
        if r:
            return TraceEvent(kind="rule", rule=clean_rule(r["rule"]),
                              handle=int(r["handle"]) if r["handle"] else None,
                              verdict=r["verdict"].strip(), **base)
        return TraceEvent(kind="rule", rule=clean_rule(rest[5:]), **base)
    if rest.startswith("policy"):
        words = rest.split()
        return TraceEvent(kind="policy", verdict=words[1] if len(words) > 1 else None, **base)
    if rest.startswith("return"):
        words = rest.replace("(verdict", "").replace(")", "").split()
        return TraceEvent(kind="return", verdict=" ".join(words[1:]) or "return", **base)
    if rest.startswith("unknown rule handle"):
        handle = rest.split()[-1]
        return TraceEvent(kind="rule", rule=f"(rule {handle}, gone)", handle=int(handle) if handle.isdigit() else None,
                          **base)
    return None


def parse_monitor_output(lines: Iterable[str]) -> list[TraceEvent]:
    """Every trace event in the output of ``nft [-a] monitor [trace]`` (other lines skipped)."""
    return [e for e in (parse_line(ln) for ln in lines) if e is not None]


# ---------------------------------------------------------------------------
# Passes: one base chain evaluated for one packet


@dataclass
class ChainInfo:
    """A base chain as ``nft list chains`` shows it."""

    family: str
    table: str
    name: str
    hook: str
    priority: int
    type: str | None = None
    policy: str | None = None


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
        return self.family == FAMILY and self.table == TABLE

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


def tracer_chains() -> list[ChainInfo]:
    """The chains of table ``ip natns_trace``, first and last on every hook."""
    out = []
    for hook in HOOKS:
        out.append(ChainInfo(FAMILY, TABLE, f"{hook}_first", hook, FIRST, "filter", "accept"))
        out.append(ChainInfo(FAMILY, TABLE, f"{hook}_last", hook, LAST, "filter", "accept"))
    return out


def group_passes(ns: str, events: Sequence[TraceEvent], chains: dict[tuple[str, str, str], ChainInfo],
                 iptables: dict[tuple[str, str, str, int], str] | None = None) -> list[ChainPass]:
    """Cut one namespace's events into passes (base chain evaluations), in order.

    A ``packet:`` event starts a pass; the rule, policy and return events that
    follow with the same trace id (possibly from chains it jumps to) belong
    to it. `chains` maps (family, table, base chain) to its hook; `iptables`
    maps (family, table, chain, handle) to the iptables-save line of a rule.
    """
    iptables = iptables or {}
    passes: list[ChainPass] = []
    open_by_id: dict[str, ChainPass] = {}

    def start(ev: TraceEvent, headers: dict) -> ChainPass:
        info = chains.get((ev.family, ev.table, ev.chain))
        p = ChainPass(ns, ev.family, ev.table, ev.chain, info.hook if info else "unknown",
                      info.priority if info else None, headers)
        passes.append(p)
        open_by_id[ev.trace_id] = p
        return p

    for ev in events:
        if ev.kind == "packet":
            start(ev, ev.headers)
            continue
        p = open_by_id.get(ev.trace_id)
        if p is None:
            p = start(ev, {})
        if ev.kind == "rule":
            p.hits.append(RuleHit(ev.family, ev.table, ev.chain, ev.rule, ev.verdict or "",
                                  ev.handle, iptables.get((ev.family, ev.table, ev.chain, ev.handle))))
        elif ev.kind == "policy":
            p.hits.append(RuleHit(ev.family, ev.table, ev.chain, None, ev.verdict or ""))
    return passes


# ---------------------------------------------------------------------------
# The result


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

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "src": self.src, "dst": self.dst, "port": self.port,
                "sport": self.sport, "icmp_id": self.icmp_id, "result": self.result, "answered": self.answered}


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
        tail = f"icmp {t}"
        if t.startswith("echo"):
            tail += f" id {h.get('icmp id')} seq {h.get('icmp sequence')}"
        else:
            tail += f" ({h.get('icmp code')})"
        return f"{src} → {dst} {tail}"
    for proto in ("tcp", "udp"):
        if f"{proto} sport" in h:
            flags = f" [{tcp_flags(h['tcp flags'])}]" if proto == "tcp" and "tcp flags" in h else ""
            return f"{src}:{h[f'{proto} sport']} → {dst}:{h[f'{proto} dport']} {proto}{flags}"
    return f"{src} → {dst}"


# ---------------------------------------------------------------------------
# Following the packet: passes of all namespaces → legs


def _hops_for(key: tuple, order: Sequence[str], passes: dict[str, list[ChainPass]]) -> list[HopTrace]:
    hops = []
    for ns in order:
        mine = [p for p in passes.get(ns, []) if p.key == key]
        if not mine:
            continue
        hooks: list[HookTrace] = []
        groups: list[list[ChainPass]] = []
        for p in mine:
            if groups and groups[-1][-1].hook == p.hook:
                groups[-1].append(p)
            else:
                groups.append([p])
        for g in groups:
            ht = HookTrace(hook=g[0].hook, before=g[0].headers, after=g[-1].headers,
                           chains=[p for p in g if not p.tracer],
                           complete=g[-1].tracer and g[-1].chain.endswith("_last"))
            for p in g:
                v = p.verdict
                if not p.tracer and v and v.split()[0] in ("drop", "reject", "queue", "stolen"):
                    ht.verdict = v.split()[0]
            for a, b in itertools.pairwise(g):
                ht.rewrites += _diff(a, b)
            hooks.append(ht)
        first = mine[0]
        hops.append(HopTrace(
            ns=ns,
            hooks=hooks,
            in_iface=first.headers.get("iif"),
            out_iface=next((p.headers["oif"] for p in reversed(mine) if p.hook == "postrouting"
                            and "oif" in p.headers), None),
            origin=first.hook == "output",
            local=any(p.hook == "input" for p in mine),
            bridged=_bridged(mine),
        ))
    return hops


def _bridged(passes: list[ChainPass]) -> bool:
    """Whether these passes are a bridged packet: forwarded out by the device it came in by, TTL kept.

    With br_netfilter (net.bridge.bridge-nf-call-iptables=1) packets a bridge
    forwards at layer 2 pass the ip hooks too, with iif and oif the bridge.
    """
    pre = next((p for p in passes if p.hook == "prerouting"), None)
    fwd = next((p for p in passes if p.hook == "forward"), None)
    if pre is None or fwd is None:
        return False
    h, f = pre.headers, fwd.headers
    return "iif" in f and f.get("iif") == f.get("oif") and h.get("ip ttl") == f.get("ip ttl")


def _diff(a: ChainPass, b: ChainPass) -> list[Rewrite]:
    """Fields that changed between passes `a` and `b` (consecutive in one hook)."""
    out = []
    nat_rule = next((h for h in reversed(a.hits) if h.nat), None)
    for key, name in REWRITE_FIELDS.items():
        if key in a.headers and key in b.headers and a.headers[key] != b.headers[key]:
            out.append(Rewrite(name, a.headers[key], b.headers[key], a.hook,
                               "rule" if nat_rule else "conntrack", nat_rule))
    return out


def follow(passes: dict[str, list[ChainPass]], order: Sequence[str], src_ns: str) -> tuple[Leg, Leg | None]:
    """The request and reply legs of the probe, from every namespace's passes.

    `order` lists the namespaces in path order (the request's); the reply
    is followed in the opposite order. The request is the first packet seen
    in `src_ns`; the reply is the first packet another namespace sent back
    (an answer, or an ICMP error about the probe).
    """
    order = list(dict.fromkeys([*order, *passes]))
    src = [p for p in passes.get(src_ns, [])]
    if not src:
        return Leg("request", [], "not sent"), None
    req_key = src[0].key
    request = _leg("request", req_key, order, passes)

    # The reply: a packet sent (output hook) by another namespace, the one the
    # request was delivered to first; failing that, any packet other than the
    # request that reached the source namespace.
    candidates: list[tuple[int, tuple]] = []
    for ns in order:
        if ns == src_ns:
            continue
        for p in passes.get(ns, []):
            if p.hook == "output" and p.key != req_key:
                rank = 0 if ns == request.delivered_to else 1
                candidates.append((rank, p.key))
                break
    if not candidates:
        for p in passes.get(src_ns, []):
            if p.hook == "prerouting" and p.key != req_key:
                candidates.append((2, p.key))
                break
    if not candidates:
        return request, None
    reply_key = min(candidates, key=lambda c: c[0])[1]
    return request, _leg("reply", reply_key, list(reversed(order)), passes)


def _leg(direction: str, key: tuple, order: Sequence[str], passes: dict[str, list[ChainPass]]) -> Leg:
    hops = _hops_for(key, order, passes)
    leg = Leg(direction, hops, "lost")
    for hop in hops:
        for ht in hop.hooks:
            if ht.verdict != "accept":
                hit = None
                for c in ht.chains:
                    for h in c.hits:
                        if (h.verdict.split() or [""])[0] in ("drop", "reject", "queue", "stolen"):
                            hit = h
                leg.outcome, leg.stop = "dropped", Stop(hop.ns, ht.hook, ht.verdict, hit)
                return leg
        if hop.local:
            leg.outcome, leg.delivered_to = "delivered", hop.ns
            return leg
    if hops:
        last = hops[-1]
        leg.stop = Stop(last.ns, last.hooks[-1].hook if last.hooks else "", "lost")
    return leg


# ---------------------------------------------------------------------------
# Reading each namespace: chains, iptables text, legacy rules, routes, conntrack


def read_chains(ns: str) -> dict[tuple[str, str, str], ChainInfo]:
    """Base chains of namespace `ns` by (family, table, name), natns's tracer chains included."""
    out = {(c.family, c.table, c.name): c for c in tracer_chains()}
    proc = nsexec.run(ns, ["nft", "-j", "list", "chains"], check=False)
    try:
        data = json.loads(proc.stdout)["nftables"]
    except (ValueError, KeyError, TypeError):
        return out
    for o in data:
        c = o.get("chain")
        if c and c.get("hook"):
            out[(c["family"], c["table"], c["name"])] = ChainInfo(
                c["family"], c["table"], c["name"], c["hook"], c.get("prio", 0), c.get("type"), c.get("policy"))
    return out


def read_iptables_nft(ns: str) -> dict[tuple[str, str, str, int], str]:
    """iptables-save lines of iptables-nft rules by (family, table, chain, nft handle).

    iptables-nft keeps rules in nftables tables of the same names, in the
    same order, so the k-th rule of a chain in ``nft -j list ruleset`` is
    the k-th ``-A CHAIN`` line of ``iptables-nft-save``.
    """
    proc = nsexec.run(ns, ["iptables-nft-save"], check=False)
    if proc.returncode != 0:
        return {}
    lines: dict[tuple[str, str], list[str]] = {}
    table = None
    for ln in proc.stdout.splitlines():
        if ln.startswith("*"):
            table = ln[1:].strip()
        elif ln.startswith("-A ") and table:
            chain = ln.split()[1]
            lines.setdefault((table, chain), []).append(ln)
    if not lines:
        return {}
    handles: dict[tuple[str, str], list[int]] = {}
    for table_name in {t for t, _ in lines}:
        proc = nsexec.run(ns, ["nft", "-j", "list", "table", "ip", table_name], check=False)
        try:
            data = json.loads(proc.stdout)["nftables"]
        except (ValueError, KeyError, TypeError):
            continue
        for o in data:
            r = o.get("rule")
            if r:
                handles.setdefault((table_name, r["chain"]), []).append(r["handle"])
    out = {}
    for (t, c), ipt in lines.items():
        hs = handles.get((t, c), [])
        if len(hs) == len(ipt):
            for h, text in zip(hs, ipt):
                out[("ip", t, c, h)] = text
    return out


def _legacy_table_names() -> list[str]:
    # /proc/thread-self/net is the calling thread's namespace (call_in's thread).
    try:
        with open("/proc/thread-self/net/ip_tables_names") as fh:
            return fh.read().split()
    except OSError:
        return []


def read_legacy(ns: str) -> str | None:
    """What iptables-legacy holds in `ns` (a short description), or None if it holds nothing.

    Asks the kernel first which legacy tables exist in the namespace, so that
    iptables-legacy-save (which may load kernel modules) runs only where
    there are some.
    """
    if not nsexec.call_in(ns, _legacy_table_names):
        return None
    proc = nsexec.run(ns, ["iptables-legacy-save"], check=False)
    if proc.returncode != 0:
        return None
    rules = [ln for ln in proc.stdout.splitlines() if ln.startswith("-A ")]
    policies = [ln for ln in proc.stdout.splitlines()
                if ln.startswith(":") and len(ln.split()) > 1 and ln.split()[1] not in ("ACCEPT", "-")]
    if not rules and not policies:
        return None
    tables = sorted({ln[1:].strip() for ln in proc.stdout.splitlines() if ln.startswith("*")})
    parts = []
    if rules:
        parts.append(f"{len(rules)} rule{'s' if len(rules) != 1 else ''}")
    if policies:
        parts.append("policy " + ", ".join(f"{p.split()[0][1:]} {p.split()[1]}" for p in policies))
    return f"{' and '.join(parts)} in table{'s' if len(tables) != 1 else ''} {', '.join(tables)}"


def route_for(ns: str, daddr: str, saddr: str | None, iif: str | None) -> tuple[str | None, str | None]:
    """(the routing table entry the kernel uses for this packet, error), by ``ip route get fibmatch``."""
    argv = ["ip", "-j", "route", "get", "fibmatch", daddr]
    if saddr:
        argv += ["from", saddr]
    if iif:
        argv += ["iif", iif]
    proc = nsexec.run(ns, argv, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        if not msg:
            return None, f"ip route get: exit {proc.returncode}"
        return None, msg[-1].removeprefix("RTNETLINK answers: ")
    try:
        r = json.loads(proc.stdout)[0]
    except (ValueError, IndexError, KeyError, TypeError):
        return None, "unreadable output of ip route get"
    return route_text(r), None


def route_text(r: dict) -> str:
    """An ``ip -j route`` object written the way ``ip route`` prints it."""
    words = []
    if r.get("type") and r["type"] != "unicast":
        words.append(r["type"])
    words.append(r.get("dst", "?"))
    if r.get("gateway"):
        words += ["via", r["gateway"]]
    if r.get("dev"):
        words += ["dev", r["dev"]]
    if r.get("table") and r["table"] != "main":
        words += ["table", str(r["table"])]
    if r.get("protocol"):
        words += ["proto", str(r["protocol"])]
    if r.get("scope") and r.get("scope") not in ("global",):
        words += ["scope", r["scope"]]
    if r.get("prefsrc"):
        words += ["src", r["prefsrc"]]
    return " ".join(words)


def _probe_entry(e, probe: Probe) -> bool:
    """Whether conntrack entry `e` is the probe's connection."""
    o = e.original
    if e.protocol != probe.protocol or probe.dst not in (o.dst, e.reply.src):
        return False
    if probe.protocol == "icmp":
        return o.icmp_id == probe.icmp_id
    return o.sport == probe.sport


def conntrack_of(probe: Probe, namespaces: Sequence[str], events: Sequence = ()) -> list[ConntrackSeen]:
    """The probe's conntrack entries: in each namespace's table now, else from `events` seen earlier."""
    from ..verify import conntrack as ct

    out = []
    for ns in namespaces:
        live = [e for e in ct.entries(ns) if _probe_entry(e, probe)]
        if live:
            out += [ConntrackSeen(ns, e, "table") for e in live]
            continue
        seen = [ev.entry for ev in events if ev.namespace == ns and _probe_entry(ev.entry, probe)]
        if seen:
            out.append(ConntrackSeen(ns, next((e for e in reversed(seen) if e.nat), seen[-1]), "events"))
    return out


# ---------------------------------------------------------------------------
# The probe


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


PAYLOAD = b"natns trace"
_ICMP_UNREACH = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                 3: "port unreachable", 4: "fragmentation needed", 9: "network prohibited",
                 10: "host prohibited", 13: "administratively prohibited"}


class _Sender:
    """The probe's socket in the source namespace, made (and port bound) before tracing starts."""

    def __init__(self, ns: str, dst: str, proto: str, port: int | None):
        self.ns, self.dst, self.proto, self.port = ns, dst, proto, port
        self.icmp_id = self.sport = None
        if proto == "icmp":
            self.icmp_id = random.randint(0x1000, 0xFFFE)
            self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
        else:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, kind))
            for _ in range(50):
                sport = random.randint(33000, 60999)
                try:
                    self.sock.bind(("0.0.0.0", sport))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        continue
                    raise
                self.sport = sport
                break
            else:
                raise KernelError(f"no free source port in namespace {ns}")
            if proto == "tcp":
                # Close with a RST: no FIN exchange after the traced packets.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def match_rules(self) -> list[str]:
        """nft rules (after the match, `meta nftrace set 1`) that pick out the probe and its replies."""
        errors = "icmp type { destination-unreachable, time-exceeded, parameter-problem }"
        if self.proto == "icmp":
            i = int(self.icmp_id)
            # In an ICMP error: inner IP header at th+8 bytes; its protocol at +9, the inner ICMP id at +28+4.
            return [f"icmp type {{ echo-request, echo-reply }} icmp id {i}",
                    f"{errors} @th,136,8 1 @th,256,16 {i}"]
        p = int(self.sport)
        num = 6 if self.proto == "tcp" else 17
        return [f"meta l4proto {self.proto} th sport {p}",
                f"meta l4proto {self.proto} th dport {p}",
                f"{errors} @th,136,8 {num} @th,224,16 {p}"]

    def probe(self) -> Probe:
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id)

    def send(self, timeout: float) -> Probe:
        """Send the probe and wait up to `timeout` s for its answer."""
        pr = self.probe()
        s = self.sock
        s.settimeout(timeout)
        try:
            if self.proto == "icmp":
                hdr = struct.pack("!BBHHH", 8, 0, 0, self.icmp_id, 1) + PAYLOAD
                pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr), self.icmp_id, 1) + PAYLOAD
                s.sendto(pkt, (self.dst, 0))
                pr.result, pr.answered = self._icmp_answer(timeout)
            elif self.proto == "tcp":
                s.connect((self.dst, self.port))
                pr.result, pr.answered = "connected", True
            else:
                s.connect((self.dst, self.port))
                s.send(PAYLOAD + b"\n")
                data = s.recv(2048)
                pr.result, pr.answered = f"reply ({len(data)} bytes)", True
        except ConnectionRefusedError:
            pr.result = "refused (TCP RST)" if self.proto == "tcp" else "refused (ICMP port unreachable)"
            pr.answered = True
        except TimeoutError:
            pr.result = "no reply"
        except OSError as exc:
            pr.result = exc.strerror or str(exc)
        return pr

    def _icmp_answer(self, timeout: float) -> tuple[str, bool]:
        deadline = time.monotonic() + timeout
        names = {3: "destination unreachable", 11: "time exceeded", 12: "parameter problem"}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "no reply", False
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                return "no reply", False
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8:
                continue
            typ, code = icmp[0], icmp[1]
            if typ == 0 and struct.unpack("!H", icmp[4:6])[0] == self.icmp_id:
                return "reply", True
            if typ in names and len(icmp) >= 8 + 20 + 8:
                inner = icmp[8:]
                ihl2 = (inner[0] & 0x0F) * 4
                if inner[9] == 1 and struct.unpack("!H", inner[ihl2 + 4:ihl2 + 6])[0] == self.icmp_id:
                    what = _ICMP_UNREACH.get(code, f"code {code}") if typ == 3 else f"code {code}"
                    return f"ICMP {names[typ]} ({what}) from {addr[0]}", True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# ---------------------------------------------------------------------------
# The tracing session: tables and monitors, always cleaned up


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup() -> None:
    """In the monitor's process before exec: SIGTERM when natns dies; no signals held back."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def table_script(match_rules: Sequence[str]) -> str:
    """The nft script that (re)creates table ``ip natns_trace`` with the given match rules."""
    lines = [f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]
    for c in tracer_chains():
        lines.append(f"\tchain {c.name} {{")
        lines.append(f"\t\ttype filter hook {c.hook} priority {c.priority}; policy accept;")
        if c.priority == FIRST and c.hook in ("prerouting", "output"):
            for m in match_rules:
                lines.append(f"\t\t{m} meta nftrace set 1")
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


REMOVE_SCRIPT = f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


class _Monitor:
    """``nft -a monitor`` in one namespace, its output read line by line on a thread."""

    def __init__(self, ns: str):
        self.ns = ns
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = nsexec.popen(ns, ["nft", "-a", "monitor"], stdout=subprocess.PIPE, stderr=self._err,
                                 stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                                 start_new_session=True, preexec_fn=_child_setup)
        self._thread = threading.Thread(target=self._read, name=f"natns-trace-{ns}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> None:
        """Wait until a line starting with `prefix` was printed; KernelError if not in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(ln.startswith(prefix) for ln in self.lines):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            else:
                return
        self._err.seek(0)
        why = self._err.read().strip() or ("it exited" if self.proc.poll() is not None else "no output")
        raise KernelError(f"nft monitor in namespace {self.ns} did not start: {why}")

    def stop(self) -> None:
        """Stop the monitor (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):
            self._err.close()


class TraceSession:
    """Tracing on in a set of namespaces: tables loaded, monitors running.

    A context manager; leaving it (normally, on error or on
    KeyboardInterrupt) stops every monitor and deletes every tracing table,
    with SIGINT/SIGTERM held off until that is done.
    """

    def __init__(self, namespaces: Sequence[str], match_rules: Sequence[str], ready_timeout: float = 5.0):
        for ns in namespaces:
            if not ns or not netns.exists(ns):
                raise UserError(f"namespace {ns!r} does not exist")
        self.namespaces = list(namespaces)
        self.script = table_script(match_rules)
        self.ready_timeout = ready_timeout
        self.monitors: dict[str, _Monitor] = {}
        self.lines: dict[str, list[str]] = {}

    def __enter__(self) -> TraceSession:
        try:
            # Tables first, so each monitor's rule cache holds the tracing rules.
            for ns in self.namespaces:
                nsexec.run(ns, ["nft", "-f", "-"], input=self.script)
            for ns in self.namespaces:
                with _signals_held():  # a monitor started is a monitor recorded (and stopped later)
                    self.monitors[ns] = _Monitor(ns)
            for ns, mon in self.monitors.items():
                self._wait_ready(ns, mon)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, ns: str, mon: _Monitor) -> None:
        """Make ruleset changes in `ns` until its monitor prints one: then it is listening."""
        deadline = time.monotonic() + self.ready_timeout
        n = 0
        while True:
            n += 1
            nsexec.run(ns, ["nft", "add", "chain", FAMILY, TABLE, f"ready{n}"])
            try:
                mon.wait_for(f"add chain {FAMILY} {TABLE} ready", min(0.2, max(deadline - time.monotonic(), 0.01)))
                return
            except KernelError:
                if mon.proc.poll() is not None or time.monotonic() >= deadline:
                    raise

    def __exit__(self, *exc) -> None:
        self.close()

    def stop_monitors(self) -> None:
        """Stop every monitor and keep what each printed (in `lines`)."""
        for ns, mon in list(self.monitors.items()):
            try:
                mon.stop()
            finally:
                self.lines[ns] = list(mon.lines)
                del self.monitors[ns]

    def close(self) -> None:
        """Stop the monitors and delete the tracing tables; safe to call twice."""
        with _signals_held():
            errors = []
            try:
                self.stop_monitors()
            except Exception as exc:  # keep going: the tables must go too
                errors.append(str(exc))
            for ns in self.namespaces:
                if not netns.exists(ns):
                    continue
                try:
                    nsexec.run(ns, ["nft", "-f", "-"], input=REMOVE_SCRIPT, check=True)
                except Exception as exc:
                    errors.append(str(exc))
            if errors:
                raise KernelError("cleaning up after trace: " + "; ".join(errors))


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM/SIGHUP back (main thread only) while cleaning up."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a trace (treated like Ctrl-C: clean up, then stop)."""


@contextlib.contextmanager
def _term_as_interrupt():
    """Turn SIGTERM/SIGHUP into an exception for the duration (main thread only), so finally runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _trace_lock():
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# trace()


def path_namespaces(src_ns: str, dst: str, proto: str = "icmp",
                    port: int | None = None) -> tuple[list[str], dict | None, list[str]]:
    """Namespaces the path walker says a packet from `src_ns` to `dst` crosses, in order,
    through any destination NAT on the way (a floating IP, a port forward: the namespace
    behind it is traced too).

    Returns (namespaces, {"complete", "stop"} or None, notes). Without the
    walker, only `src_ns`.
    """
    notes: list[str] = []
    try:
        from . import dnat
    except ImportError:
        return [src_ns], None, ["path walker not available: traced only the source namespace"]
    try:
        p, _ = dnat.follow(src_ns, dst, proto, port)
    except Exception as exc:  # the walker failing must not stop the trace itself
        return [src_ns], None, [f"path walker failed ({type(exc).__name__}: {exc}): traced only {src_ns}"]
    hop_names = p.namespaces() if hasattr(p, "namespaces") else [h.ns for h in getattr(p, "hops", [])]
    names: list[str] = []
    for ns in hop_names:
        if not isinstance(ns, str) or not netns.exists(ns):
            notes.append(f"{ns}: not a named namespace under /run/netns; not traced")
            continue
        if ns not in names:
            names.append(ns)
    if src_ns not in names:
        names.insert(0, src_ns)
    stop = getattr(p, "stop", None)
    info = {"complete": bool(getattr(p, "complete", False)), "stop": None if stop is None else str(stop),
            "stop_code": getattr(p, "stop_code", None)}
    return names, info, notes


def trace(src_ns: str, dst: str, proto: str = "icmp", port: int | None = None, *,
          namespaces: Sequence[str] | None = None, extra: Sequence[str] = (), timeout: float = 1.0,
          settle: float = 0.3) -> Trace:
    """Send one probe from namespace `src_ns` to `dst` with tracing on along its path.

    `proto` is icmp (an echo request), tcp or udp (to `port`). The
    namespaces traced are `namespaces` if given, else the path walker's,
    plus `extra`. Waits `timeout` s for an answer and `settle` s more for
    the last trace events. Needs root. Raises UserError for bad arguments.
    """
    from ..privileges import require_root

    require_root("trace")
    if proto not in PROTOCOLS:
        raise UserError(f"protocol {proto!r}: choose one of {', '.join(PROTOCOLS)}")
    try:
        ip = ipaddress.ip_address(dst)
    except ValueError:
        raise UserError(f"--to {dst!r} is not an IPv4 address") from None
    if ip.version != 4:
        raise UserError(f"--to {dst}: natns handles IPv4 only")
    dst = str(ip)
    if proto == "icmp":
        port = None
    elif port is None or not 1 <= int(port) <= 65535:
        raise UserError(f"{proto} needs a port 1-65535")
    if not netns.exists(src_ns):
        raise UserError(f"--from {src_ns!r}: no such namespace")
    for ns in extra:
        if not netns.exists(ns):
            raise UserError(f"--ns {ns!r}: no such namespace")

    if namespaces is None:
        order, path_info, notes = path_namespaces(src_ns, dst, proto, port)
    else:
        order, path_info, notes = list(dict.fromkeys([src_ns, *namespaces])), None, []
    order = list(dict.fromkeys([*order, *extra]))

    with _term_as_interrupt(), _trace_lock():
        sender = _Sender(src_ns, dst, proto, port)
        try:
            with TraceSession(order, sender.match_rules()) as sess:
                chains = {ns: read_chains(ns) for ns in order}
                iptables = {ns: read_iptables_nft(ns) for ns in order}
                legacy = {ns: d for ns in order if (d := read_legacy(ns))}
                with contextlib.ExitStack() as watching:
                    watches = [watching.enter_context(_ct_watch(ns)) for ns in order]
                    probe = sender.send(timeout)
                    time.sleep(settle)
                    ct_events = _drain(watches)
                sess.stop_monitors()
                lines = sess.lines
        finally:
            sender.close()

    passes = {ns: group_passes(ns, parse_monitor_output(lines.get(ns, [])), chains[ns], iptables[ns])
              for ns in order}
    request, reply = follow(passes, order, src_ns)
    if request.first:
        probe.src = request.first.get("ip saddr")
    conntrack = conntrack_of(probe, order, ct_events)
    for leg in (request, reply):
        if leg is not None:
            _enrich(leg, conntrack, legacy)
    t = Trace(src_ns, dst, probe, order, request, reply, conntrack, legacy, path_info, notes,
              raw={ns: [ln for ln in lines.get(ns, []) if ln.startswith("trace id ")] for ns in order})
    _explain(t)
    return t


def _ct_watch(ns: str):
    from ..verify import conntrack as ct

    return ct.Watch(ns, ("new", "update", "destroy"))


def _drain(watches: list) -> list:
    from ..verify import conntrack as ct

    return list(ct.stream(watches, timeout=0.05))


def _enrich(leg: Leg, conntrack: list[ConntrackSeen], legacy: dict[str, str]) -> None:
    """Add routes, conntrack references and iptables-legacy flags to a followed leg."""
    for hop in leg.hops:
        hop.iptables_legacy = hop.ns in legacy
        routed = next((h for h in hop.hooks if h.hook in ("forward", "input")), None)
        if hop.bridged:
            pass  # not routed: the bridge forwarded it
        elif hop.origin:
            h = hop.hooks[0].before
            hop.route, hop.route_error = route_for(hop.ns, h.get("ip daddr", ""), h.get("ip saddr"), None)
        elif routed is not None:
            h = routed.before
            hop.route, hop.route_error = route_for(hop.ns, h.get("ip daddr", ""), h.get("ip saddr"), h.get("iif"))
        elif hop.hooks and hop.hooks[-1].hook == "prerouting":
            h = hop.hooks[-1].after
            if "ip daddr" in h:
                hop.route, hop.route_error = route_for(hop.ns, h["ip daddr"], h.get("ip saddr"), h.get("iif"))
        entries = [e for e in conntrack if e.ns == hop.ns]
        for rw in hop.rewrites:
            if rw.by == "conntrack" and entries:
                rw.conntrack = entries[0].text()


def _explain(t: Trace) -> None:
    """Reasons for a stop, and notes on what the trace cannot show."""
    for ns, what in t.legacy.items():
        t.notes.append(f"{ns}: iptables-legacy holds {what}; nftables tracing cannot show those rules: "
                       f"a packet they drop or rewrite only vanishes or changes between two hooks")
    req = t.request
    if req.outcome == "not sent":
        req.stop = Stop(t.src_ns, "", "not sent", reason=f"the probe was not sent: {t.probe.result}")
    for leg in (req, t.reply):
        if leg is None or leg.stop is None or leg.stop.reason:
            continue
        s = leg.stop
        if leg.outcome == "dropped":
            h = s.hit
            if h is None:
                what = "a rule"
            elif h.rule is None:
                what = f"the policy of chain {h.family} {h.table} {h.chain}"
            else:
                what = f"rule {h.rule!r} in chain {h.family} {h.table} {h.chain}"
                if h.iptables:
                    what += f" (iptables: {h.iptables})"
            s.reason = f"dropped in {s.ns} {s.hook} by {what}"
            continue
        hop = leg.hop(s.ns)
        last_hook = hop.hooks[-1] if hop and hop.hooks else None
        if last_hook is not None and not last_hook.complete:
            s.reason = (f"vanished inside the {s.hook} hook of {s.ns}, after natns's first tracing chain and "
                        f"before its last: something nftables tracing cannot show dropped it")
        elif s.hook == "prerouting":
            fwd = _sysctl(s.ns, "net.ipv4.ip_forward")
            why = [f"route: {hop.route}" if hop and hop.route else
                   f"no route ({hop.route_error})" if hop and hop.route_error else None,
                   f"net.ipv4.ip_forward={fwd}" if fwd is not None else None]
            s.reason = (f"after prerouting in {s.ns} the packet was neither forwarded nor delivered: the routing "
                        f"step dropped it (no route, rp_filter, ip_forward off)"
                        + (f" [{'; '.join(w for w in why if w)}]" if any(why) else ""))
        elif s.hook == "postrouting":
            s.reason = (f"left {s.ns} by {hop.out_iface if hop else '?'} and no traced namespace saw it arrive "
                        f"(link or peer down, no neighbour answer, or the next namespace is not traced)")
        else:
            s.reason = f"last seen in {s.ns} {s.hook}; no nftables verdict dropped it"
        if s.ns in t.legacy:
            s.reason += f"; iptables-legacy rules in {s.ns} may have dropped it (not traceable)"
    if req.outcome == "delivered" and t.reply is None:
        t.notes.append(f"the request reached {req.delivered_to} but no reply was seen in a traced namespace")


def _sysctl(ns: str, key: str) -> str | None:
    from ..kernel import sysctl

    try:
        return sysctl.read(ns, [key]).get(key)
    except OSError:
        return None


# ---------------------------------------------------------------------------
# Text rendering


def render(t: Trace) -> str:
    """The trace as readable text, hop by hop."""
    pr = t.probe
    what = f"icmp echo id {pr.icmp_id}" if pr.protocol == "icmp" else f"{pr.protocol} port {pr.port} from port {pr.sport}"
    lines = [f"trace {t.src_ns} → {t.dst} ({what}): {pr.result}",
             f"namespaces traced: {', '.join(t.namespaces)}"]
    for leg in (t.request, t.reply):
        if leg is None:
            continue
        lines.append("")
        lines.append(f"{leg.direction}  {leg.summary()}")
        for hop in leg.hops:
            head = f"  {hop.ns}"
            if hop.origin:
                head += "  (sent here)"
            elif hop.in_iface:
                head += f"  in {hop.in_iface}"
            if hop.bridged:
                head += "  (bridged at layer 2; br_netfilter shows it in the ip hooks)"
            if hop.iptables_legacy:
                head += "  [iptables-legacy rules here: not traced]"
            lines.append(head)
            route = f"    routing: {hop.route}" if hop.route else (
                f"    routing: {hop.route_error}" if hop.route_error else None)
            if route and hop.origin:
                lines.append(route)  # a packet sent from here is routed before the output hook
            for ht in hop.hooks:
                lines.append(f"    {ht.hook}" + ("" if ht.verdict == "accept" else f"  → {ht.verdict.upper()}"))
                for c in ht.chains:
                    for h in c.hits:
                        lines.append(f"      {h.family} {h.table} {h.chain}: {h.text()}  → {h.verdict}")
                        if h.iptables:
                            lines.append(f"        iptables: {h.iptables}")
                for rw in ht.rewrites:
                    by = ("by this rule" if rw.by == "rule" else
                          "by conntrack (entry below)" if rw.conntrack else "by conntrack")
                    lines.append(f"      rewrite: {rw.text()}  {by}")
                if route and not hop.origin and ht.hook == "prerouting":
                    lines.append(route)  # a received packet is routed after prerouting
            if hop.local and all(h.verdict == "accept" for h in hop.hooks):
                lines.append("    delivered here")
            elif hop.out_iface:
                lines.append(f"    leaves by {hop.out_iface}")
        if leg.outcome != "delivered" and leg.stop is not None:
            lines.append(f"  stopped: {leg.stop.reason or leg.stop.verdict}")
        elif leg.outcome != "delivered":
            lines.append(f"  {leg.outcome}")
    if t.conntrack:
        lines.append("")
        lines.append("conntrack")
        for e in t.conntrack:
            lines.append(f"  {e.ns}: {e.text()}")
    if t.notes:
        lines.append("")
        lines += [f"note: {n}" for n in t.notes]
    return "\n".join(lines)
