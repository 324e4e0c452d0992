"""doctor's report as text for a terminal."""

from __future__ import annotations

from ..path import HOST, Hop
from .findings import Report


def _hop_line(i: int, h: Hop, not_forwarding: dict[int, str] | None = None) -> str:
    if h.ns == HOST:
        where = (f"in {h.in_iface}" + (f" (port {h.in_port})" if h.in_port else "") + "  ") if h.in_iface else ""
        return (f"  {i + 1:>2}  {HOST}  {where}the namespace natns runs in: its forwarding and forward hook "
                f"are checked, the walk stops here")
    if h.bridge:
        return f"  {i + 1:>2}  {h.ns}  bridged by {h.bridge}: in {h.in_iface}, out {h.out_iface}"
    parts = [f"  {i + 1:>2}  {h.ns}"]
    if h.in_iface:
        parts.append(f"in {h.in_iface}" + (f" (port {h.in_port})" if h.in_port else ""))
    if h.out_iface:
        parts.append(f"out {h.out_iface}" + (f" (port {h.out_port})" if h.out_port else ""))
    if h.local:
        parts.append("delivered")
    elif h.forwards and not_forwarding and i in not_forwarding:
        parts.append(not_forwarding[i])
    elif h.forwards and not h.out_iface:
        parts.append("does not forward: no usable route")
    elif h.forwards:
        parts.append("forwards")
    if h.route:
        parts.append(f"route: {h.route}")
    if h.src:
        parts.append(f"src {h.src}")
    return "  ".join(parts)


def render(r: Report) -> str:
    """The report as text for a terminal."""
    what = r.proto if r.proto == "icmp" else f"{r.proto} port {r.port}"
    lines = [f"doctor: {r.src_ns} -> {r.dst} ({what})", "", "path:"]
    lines += [_hop_line(i, h, r.not_forwarding.get("forward")) for i, h in enumerate(r.path.hops)]
    if not r.path.complete:
        lines.append(f"      stops: {r.path.stop}")
    for n in r.nat:
        lines.append(f"      {n.text()}")
    if r.reply_hops:
        lines.append("reply:")
        lines += [_hop_line(i, h, r.not_forwarding.get("reply")) for i, h in enumerate(r.reply_hops)]
        if not r.reply_complete and r.reply_stop:
            lines.append(f"      stops: {r.reply_stop}")
    lines.append("")
    if r.findings:
        lines.append("findings, in the order the packet meets them:")
        for f in r.findings:
            lines.append(f"  {f.severity.upper():<7} {f.namespace}: {f.summary}"
                         + ("  [reply]" if f.direction == "reply" else ""))
            for k, v in f.evidence.items():
                if isinstance(v, list):
                    v = "; ".join(str(x) for x in v) or "(none)"
                lines.append(f"          {k}: {v}")
            for c in f.fix:
                lines.append(f"          fix: {c}")
            for c in f.alternatives:
                lines.append(f"          or:  {c}")
            if f.note:
                lines.append(f"          note: {f.note}")
    else:
        lines.append("findings: none")
    if r.probe:
        verdict = {True: "ok", False: "FAILED", None: "inconclusive"}[r.probe.ok]
        lines += ["", f"probe: {verdict}: {r.probe.detail}", f"       ({r.probe.command})"]
    nerr = len(r.errors)
    nwarn = len([f for f in r.findings if f.severity == "warning"])
    lines += ["", f"{'healthy' if r.healthy else 'NOT healthy'}: {nerr} error(s), {nwarn} warning(s)"]
    return "\n".join(lines)
