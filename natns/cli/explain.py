"""Explain commands: trace, doctor (issue: Explain)."""

from __future__ import annotations

import json
import sys

import click

from ..errors import ExitStatus
from ..privileges import require_root
from .main import exit_with, handle_errors, main, out
from .options import existing_namespace, from_option, json_option, protocol, protocol_options, to_option



def _ovn_lab(ns: str):
    """The running OVN sandbox lab namespace `ns` belongs to, or None (the kernel engine's tools apply)."""
    from ..engines.ovn import live

    return live.find_by_namespace(ns)


# --------------------------------------------------------------------------- doctor


@main.command("doctor")
@from_option("Namespace the packet starts in.")
@to_option("IPv4 or IPv6 address it should reach.")
# int, not a port range: a port out of range is the library's one-line error, as from Python
@protocol_options(icmp="Check ICMP echo (ping; the default).", tcp="Check a TCP connection to PORT.",
                  udp="Check UDP datagrams to PORT.", port_type=int)
@click.option("--no-probe", is_flag=True, help="Only inspect the configuration; send nothing.")
@json_option("Print JSON (schema: docs/explain.md, '## doctor').")
@handle_errors
def doctor_cmd(from_ns, to, icmp, tcp, udp, no_probe, json_out):
    """Say why namespace NS cannot reach ADDR, and the commands that fix it.

    \b
    Reads the configuration along the path from the kernel alone (any
    namespaces under /run/netns, natns's or not): routes, neighbours, links,
    MTUs, ip_forward, rp_filter, nftables / iptables-nft / iptables-legacy
    rules, source NAT, conntrack, duplicate addresses; follows the reply
    back; then confirms with a real probe from NS. Findings are listed in
    the order the packet meets them, each with the evidence read and a fix.

    \b
    On an OVN lab (NS a host of an OVN sandbox) it checks OVN instead: the
    host's port binding, ovn-controller on each chassis of the path (running,
    connected to the SB DB), TX checksum offload on the veths OVS sends
    through, the MTU left by Geneve, the router's gateway chassis, BFD towards
    it and the gateway's bridge mapping -- each with the command that fixes it.

    \b
    Exit status: 0 healthy (no error and the probe works; warnings may
    remain, e.g. a model that predicts a failure the probe contradicts),
    1 a finding explains a failure (or the probe fails), 2 bad arguments.
    """
    from ..explain import doctor as dr

    proto, port = protocol(icmp, tcp, udp)
    existing_namespace(from_ns, "--from")
    require_root("doctor")
    lab = _ovn_lab(from_ns)
    if lab is not None:
        _ovn_doctor(lab, from_ns, to, proto, port, not no_probe, json_out)
        return
    report = dr.diagnose(from_ns, to, proto=proto, port=port, probe=not no_probe)
    if json_out:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(dr.render(report), markup=False, highlight=False, soft_wrap=True)
    exit_with(report.healthy)  # report.exit_status, as an ExitStatus


def _ovn_doctor(lab, from_ns, to, proto, port, probe, json_out) -> None:
    """doctor on an OVN lab: the OVN issues as doctor's registered findings, the logical path, a probe."""
    from ..engines.ovn import doctor as od
    from ..explain.doctor.findings import cmd, finding

    rep = od.diagnose(lab, from_ns, to, proto, port, probe=probe)
    found = [finding(i.code, i.where, i.summary, i.evidence, i.fix, note=i.note, severity=i.severity)
             for i in rep.issues]
    errors = [f for f in found if f.severity == "error"]
    probe_ok = None if rep.probe is None else rep.probe.ok
    if probe_ok is False and not errors:
        argv = ["natns", "trace", "--from", from_ns, "--to", to] + ([f"--{proto}", str(port)] if port else [])
        found.append(finding("unexplained-failure", from_ns, "the probe failed but no OVN check explains it",
                             {"probe": rep.probe.summary()}, note=f"the logical path: {cmd(*argv)}"))
        errors = found[-1:]
    healthy = not errors and probe_ok is not False
    tr = rep.trace
    if json_out:
        click.echo(json.dumps({
            "engine": "ovn", "lab": rep.lab, "from": from_ns, "to": to, "protocol": proto, "port": port,
            "healthy": healthy, "exit_status": 0 if healthy else 1,
            "findings": [f.to_json() for f in found],
            "logical_path": tr.to_json() if tr is not None else None,
            "probe": rep.probe.to_json() if rep.probe is not None else None}, indent=2, ensure_ascii=False))
        exit_with(healthy)
        return
    what = proto if proto == "icmp" else f"{proto} port {port}"
    lines = [f"doctor (OVN lab {rep.lab}): {from_ns} -> {to} ({what})", ""]
    if tr is not None:
        hops = [f"{h.datapath.removeprefix(f'natns-{rep.lab}-')}@{h.chassis or '?'}" if h.kind == "pipeline"
                else f"[{h.text.split(',')[0]}]" if h.kind == "tunnel" else f"[{h.kind} {h.before}->{h.after}]"
                for h in tr.forward.hops if h.kind in ("pipeline", "tunnel", "nat") and h.text != "continued"]
        lines += ["logical path: " + " > ".join(hops) + f"  ({tr.forward.end}"
                  + (f" {tr.forward.out_port})" if tr.forward.out_port else ")"), ""]
    if found:
        lines.append("findings, in the order the packet meets them:")
        for f in found:
            lines.append(f"  {f.severity.upper():<7} {f.namespace}: {f.summary}")
            for k, v in f.evidence.items():
                lines.append(f"          {k}: {v}")
            lines += [f"          fix: {c}" for c in f.fix]
            if f.note:
                lines.append(f"          note: {f.note}")
    else:
        lines.append("findings: none")
    if rep.probe is not None:
        lines += ["", f"probe: {'ok' if rep.probe.ok else 'FAILED'}: {rep.probe.summary()}"]
    nwarn = len([f for f in found if f.severity == "warning"])
    lines += ["", f"{'healthy' if healthy else 'NOT healthy'}: {len(errors)} error(s), {nwarn} warning(s)"]
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    exit_with(healthy)


# --------------------------------------------------------------------------- trace


@main.command("trace")
@from_option("Namespace to send the probe from.")
@to_option("IPv4 or IPv6 address to send it to.")
@protocol_options(tcp="Send a TCP SYN to PORT.", udp="Send a UDP datagram to PORT.")
@click.option("--ns", "extra", multiple=True, metavar="NS",
              help="Trace in this namespace too (repeatable); the path's namespaces are found by themselves.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds to wait for the answer.")
@click.option("--size", type=click.IntRange(0, 65507), metavar="BYTES",
              help="Payload size in bytes, as `ping -s` (ICMP data, the UDP datagram, the data sent on "
                   "the TCP connection); e.g. --size 1472 --df for a 1500-byte packet.")
@click.option("--df", is_flag=True, help="Set Don't Fragment, as `ping -M do`: shows where the packet is "
                                         "too big (the router that answers frag needed, and its MTU).")
@json_option("Print JSON (schema: docs/explain.md, '## trace').")
@handle_errors
def trace_cmd(from_ns, to, icmp, tcp, udp, extra, timeout, size, df, json_out):
    """Follow one probe packet from namespace NS to ADDR, hook by hook, and its reply back.

    \b
    Netfilter tracing is switched on in every namespace of the path (a
    temporary nft table `ip natns_trace`, removed afterwards, also on Ctrl-C).
    Shows per namespace each hook the packet passes, the rules it meets with
    their verdicts, the route used, and every address or port rewrite
    (NAT) as before -> after; then the reply and the conntrack entry.

    \b
    On an OVN lab (NS a host of an OVN sandbox) it shows the logical path
    instead, from ovn-trace against the lab's SB DB: each logical datapath
    pipeline and stage, the chassis each runs on, the Geneve tunnel hop
    between chassis, NAT rewrites before -> after, and the reply (where
    ovn-trace assumes no conntrack entry, natns applies the forward
    translation's reverse); then one real probe.

    
    Exit status: 0 the reply came back, 1 it did not (the output says where
    the packet stopped), 2 bad arguments.
    """
    proto, port = protocol(icmp, tcp, udp)
    existing_namespace(from_ns, "--from")
    for ns in extra:
        existing_namespace(ns, "--ns")
    lab = _ovn_lab(from_ns)
    if lab is not None:  # an OVN lab: the logical path from ovn-trace
        from ..engines.ovn import trace as otr

        result = otr.trace(lab, from_ns, to, proto, port, timeout=timeout)
        if json_out:
            click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        else:
            out.print(otr.render(result), markup=False, highlight=False, soft_wrap=True)
        exit_with(result.ok)
        return
    from ..explain import trace as tr

    try:
        result = tr.trace(from_ns, to, proto, port, extra=extra, timeout=timeout, size=size, df=df)
    except KeyboardInterrupt:
        click.echo("natns trace: interrupted; the tracing tables and monitors were removed", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    if json_out:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(tr.render(result), markup=False, highlight=False, soft_wrap=True)
    exit_with(result.ok)
