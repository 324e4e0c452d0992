"""Explaining a followed trace: routes, conntrack entries and iptables-legacy flags added to
each hop, and in words why and where a packet stopped."""

from __future__ import annotations

from .read import _sysctl, hairpin_port, link_mtus, route_for
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


def _hairpinned(ns: str, hook) -> str | None:
    """The bridge port a packet DNATed in `hook` (prerouting) was dropped at (see read.hairpin_port)."""
    if hook is None or hook.before.get("ip daddr") == hook.after.get("ip daddr"):
        return None
    h = hook.after
    return hairpin_port(ns, h.get("iif"), h.get("ip saddr"), h.get("ip daddr"))


def _explain(t: Trace) -> None:
    """Reasons for a stop, and notes on what the trace cannot show."""
    for ns, what in t.legacy.items():
        t.notes.append(f"{ns}: iptables-legacy holds {what}; nftables tracing cannot show those rules: "
                       f"a packet they drop or rewrite only vanishes or changes between two hooks")
    req = t.request
    if req.outcome == "not sent":
        why = t.probe.error or t.probe.result
        if t.probe.outcome == "too-big":
            why += (f" (the packet is bigger than the MTU {t.probe.mtu} of its route out of {t.src_ns}"
                    if t.probe.mtu else " (the packet is bigger than its route's MTU")
            why += "; a frag needed a router sent before is remembered as the route's MTU)"
        req.stop = Stop(t.src_ns, "", "not sent", reason=f"the probe was not sent: {why}")
    too_big = _frag_needed(t)
    if too_big is not None and req.stop is not None and req.outcome != "delivered":
        ns = too_big
        hop = req.hop(ns)
        route = f" (route: {hop.route})" if hop and hop.route else ""
        mtu = f"mtu {t.probe.mtu}" if t.probe.mtu else "its MTU"
        req.stop.reason = (f"too big: {ns} cannot forward the {_size_text(req)} packet with DF set out of the "
                           f"link its route takes{route}, whose {mtu} is smaller; it answered ICMP frag needed "
                           f"({mtu})" + (f" from {t.probe.error_from}" if t.probe.error_from else ""))
        req.stop.verdict = "too-big"
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
        elif s.hook == "prerouting" and (port := _hairpinned(s.ns, last_hook)):
            s.reason = (f"after destination NAT in {s.ns} prerouting the packet must go back out {port}, the "
                        f"bridge port it came in by; with net.bridge.bridge-nf-call-iptables=1 the bridge "
                        f"switches it, and hairpin is off on {port}: the bridge dropped it (not routing)")
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
            too_big = _too_big_for_peer(leg, hop)
            if too_big:
                s.reason, s.verdict = too_big, "too-big"
        else:
            s.reason = f"last seen in {s.ns} {s.hook}; no nftables verdict dropped it"
        if s.ns in t.legacy:
            s.reason += f"; iptables-legacy rules in {s.ns} may have dropped it (not traceable)"
    if req.outcome == "delivered" and t.reply is None:
        t.notes.append(f"the request reached {req.delivered_to} but no reply was seen in a traced namespace")


def _frag_needed(t: Trace) -> str | None:
    """The namespace whose ICMP "fragmentation needed" came back as the reply, or None."""
    rep = t.reply
    if rep is None or not rep.hops:
        return None
    h = rep.first
    if h.get("icmp type") != "destination-unreachable" or h.get("icmp code") not in ("frag-needed", "4"):
        return None
    return rep.hops[0].ns


def _size_text(leg: Leg) -> str:
    n = leg.first.get("ip length")
    return f"{n}-byte" if n else "full-size"


def _too_big_for_peer(leg: Leg, hop) -> str | None:
    """Why a packet that left by a veth never arrived, when it is bigger than the peer's MTU: the
    receiving end drops it silently (no ICMP error)."""
    if hop is None or not hop.out_iface or not hop.hooks:
        return None
    try:
        length = int(hop.hooks[-1].after.get("ip length", ""))
    except ValueError:
        return None
    mtu, pns, peer, peer_mtu = link_mtus(hop.ns, hop.out_iface)
    if peer_mtu is None or length <= peer_mtu:
        return None
    return (f"too big: the {length}-byte packet left {hop.ns} by {hop.out_iface} (mtu {mtu}), but the other "
            f"end, {peer} in {pns}, has mtu {peer_mtu} and drops bigger frames silently (no ICMP error comes "
            f"back): the two ends of the link disagree on the MTU")
