"""Following the packet: one namespace's trace events cut into passes, every namespace's
passes into the request and reply legs.

The trace id the kernel gives a packet changes at every veth crossing (and
between hooks), so passes are tied together by the packet's own contents
(`packet_key`): IP id, length and transport header, which forwarding and NAT keep.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ...kernel.netfilter import Chain
from .monitor import TraceEvent
from .result import REWRITE_FIELDS, ChainPass, HookTrace, HopTrace, Leg, Rewrite, RuleHit, Stop

def group_passes(ns: str, events: Sequence[TraceEvent], chains: dict[tuple[str, str, str], Chain],
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
    # Either answers the request by its tuple as that namespace saw it (after any rewrite:
    # source NAT may have changed its ICMP id or source port), so other packets the tracing
    # rules picked out (another flow to the same address and port) are not taken for it.
    candidates: list[tuple[int, tuple]] = []
    for ns in order:
        if ns == src_ns:
            continue
        seen = [p.headers for p in passes.get(ns, []) if p.key == req_key]
        for p in passes.get(ns, []):
            if p.hook == "output" and p.key != req_key and answers(p.headers, seen):
                rank = 0 if ns == request.delivered_to else 1
                candidates.append((rank, p.key))
                break
    if not candidates:
        seen = [p.headers for p in passes.get(src_ns, []) if p.key == req_key]
        for p in passes.get(src_ns, []):
            if p.hook == "prerouting" and p.key != req_key and answers(p.headers, seen):
                candidates.append((2, p.key))
                break
    if not candidates:
        return request, None
    reply_key = min(candidates, key=lambda c: c[0])[1]
    return request, _leg("reply", reply_key, list(reversed(order)), passes)


_ICMP_ERRORS = ("destination-unreachable", "time-exceeded", "parameter-problem")


def answers(h: dict[str, str], request: Sequence[dict[str, str]]) -> bool:
    """Whether a packet with headers `h` answers the request as one namespace saw it (the
    request's headers at each of its passes there): its reply tuple is the request's
    tuple reversed (addresses, ports or ICMP id), or it is an ICMP error sent to the
    request's source. True when the request was not seen there (nothing to compare)."""
    if not request:
        return True
    if h.get("icmp type") in _ICMP_ERRORS:
        return any(h.get("ip daddr") == r.get("ip saddr") for r in request)
    for r in request:
        if h.get("ip saddr") != r.get("ip daddr") or h.get("ip daddr") != r.get("ip saddr"):
            continue
        if "icmp id" in h or "icmp id" in r:
            if h.get("icmp id") == r.get("icmp id"):
                return True
            continue
        proto = "tcp" if "tcp sport" in r else "udp"
        if h.get(f"{proto} sport") == r.get(f"{proto} dport") and h.get(f"{proto} dport") == r.get(f"{proto} sport"):
            return True
    return False


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
