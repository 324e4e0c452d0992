"""A trace as readable text, hop by hop (`natns trace` without --json)."""

from __future__ import annotations

from .result import Trace

def render(t: Trace) -> str:
    """The trace as readable text, hop by hop."""
    pr = t.probe
    what = f"icmp echo id {pr.icmp_id}" if pr.protocol == "icmp" else f"{pr.protocol} port {pr.port} from port {pr.sport}"
    if pr.size is not None:
        what += f", {pr.size} bytes of data"
    if pr.df:
        what += ", DF"
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
