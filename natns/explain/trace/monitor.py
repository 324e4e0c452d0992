"""Parsing ``nft -a monitor`` output: one `TraceEvent` per trace line."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

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
_PROTO_WORDS = {"ether", "vlan", "arp", "ip", "ip6", "icmp", "icmpv6", "igmp", "tcp", "udp", "udplite", "sctp",
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
    for v6, v4 in _V6_AS_V4.items():  # an IPv6 packet's fields also under IPv4's names (followed alike)
        if v6 in out:
            out.setdefault(v4, out[v6])
    word = out.get("icmpv6 parameter-problem")
    if out.get("icmpv6 type", "").startswith("echo") and word and word.isdigit():
        # nft prints an ICMPv6 echo's id and sequence as one 32-bit word under this name
        out.setdefault("icmp id", str(int(word) >> 16))
        out.setdefault("icmp sequence", str(int(word) & 0xFFFF))
    return out


#: IPv6 header fields -> the IPv4 names trace follows packets by (hop limit as TTL, ICMPv6 as ICMP).
_V6_AS_V4 = {"ip6 saddr": "ip saddr", "ip6 daddr": "ip daddr", "ip6 hoplimit": "ip ttl", "ip6 length": "ip length",
             "icmpv6 type": "icmp type", "icmpv6 code": "icmp code", "icmpv6 id": "icmp id",
             "icmpv6 sequence": "icmp sequence"}


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
