"""Explaining a followed trace: routes, conntrack entries and iptables-legacy flags added to
each hop, and in words why and where a packet stopped."""

from __future__ import annotations

from .read import _sysctl, route_for
from .result import ConntrackSeen, Leg, Stop, Trace

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
            key = "net.ipv6.conf.all.forwarding" if ":" in t.dst else "net.ipv4.ip_forward"
            fwd = _sysctl(s.ns, key)
            why = [f"route: {hop.route}" if hop and hop.route else
                   f"no route ({hop.route_error})" if hop and hop.route_error else None,
                   f"{key}={fwd}" if fwd is not None else None]
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
