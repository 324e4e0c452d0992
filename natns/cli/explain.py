"""Explain commands: trace, doctor (issue: Explain)."""

from __future__ import annotations

import json
import sys

import click

from .common import handle_errors, main

# --------------------------------------------------------------------------- doctor


@main.command("doctor")
@click.option("--from", "src", required=True, metavar="NS", help="Namespace the packet starts in.")
@click.option("--to", "dst", required=True, metavar="ADDR", help="IPv4 address it should reach.")
@click.option("--icmp", is_flag=True, help="Check ICMP echo (ping; the default).")
@click.option("--tcp", type=int, metavar="PORT", help="Check a TCP connection to PORT.")
@click.option("--udp", type=int, metavar="PORT", help="Check UDP datagrams to PORT.")
@click.option("--no-probe", is_flag=True, help="Only inspect the configuration; send nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON (schema: docs/explain.md, '## doctor').")
@handle_errors
def doctor_cmd(src, dst, icmp, tcp, udp, no_probe, json_out):
    """Say why namespace NS cannot reach ADDR, and the commands that fix it.

    \b
    Reads the configuration along the path from the kernel alone (any
    namespaces under /run/netns, natns's or not): routes, neighbours, links,
    MTUs, ip_forward, rp_filter, nftables / iptables-nft / iptables-legacy
    rules, source NAT, conntrack, duplicate addresses; follows the reply
    back; then confirms with a real probe from NS. Findings are listed in
    the order the packet meets them, each with the evidence read and a fix.

    \b
    Exit status: 0 healthy (no error and the probe works), 1 a finding
    explains a failure (or the probe fails), 2 bad arguments.
    """
    from ..errors import UserError
    from ..explain import doctor as dr
    from ..lab import require_root
    from .common import out

    if (tcp is not None) + (udp is not None) + bool(icmp) > 1:
        raise UserError("choose one of --icmp, --tcp PORT, --udp PORT")
    proto, port = ("tcp", tcp) if tcp is not None else ("udp", udp) if udp is not None else ("icmp", None)
    require_root("doctor")
    report = dr.diagnose(src, dst, proto=proto, port=port, probe=not no_probe)
    if json_out:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(dr.render(report), markup=False, highlight=False, soft_wrap=True)
    sys.exit(report.exit_status)


# --------------------------------------------------------------------------- trace
# (kept in one block with its own imports, so the doctor command can live beside it)

import json as _json
import sys as _sys

import click

from .common import handle_errors, main, out


@main.command("trace")
@click.option("--from", "src", required=True, metavar="NS", help="Namespace to send the probe from.")
@click.option("--to", "dst", required=True, metavar="ADDR", help="IPv4 address to send it to.")
@click.option("--icmp", is_flag=True, help="Send an ICMP echo request (the default).")
@click.option("--tcp", type=click.IntRange(1, 65535), metavar="PORT", help="Send a TCP SYN to PORT.")
@click.option("--udp", type=click.IntRange(1, 65535), metavar="PORT", help="Send a UDP datagram to PORT.")
@click.option("--ns", "extra", multiple=True, metavar="NS",
              help="Trace in this namespace too (repeatable); the path's namespaces are found by themselves.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds to wait for the answer.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON (schema: docs/explain.md, '## trace').")
@handle_errors
def trace_cmd(src, dst, icmp, tcp, udp, extra, timeout, json_out):
    """Follow one probe packet from namespace NS to ADDR, hook by hook, and its reply back.

    \b
    Netfilter tracing is switched on in every namespace of the path (a
    temporary nft table `ip natns_trace`, removed afterwards, also on Ctrl-C).
    Shows per namespace each hook the packet passes, the rules it meets with
    their verdicts, the route used, and every address or port rewrite
    (NAT) as before -> after; then the reply and the conntrack entry.

    \b
    Exit status: 0 the reply came back, 1 it did not (the output says where
    the packet stopped), 2 bad arguments.
    """
    from ..explain import trace as tr

    if (tcp is not None) + (udp is not None) + bool(icmp) > 1:
        raise click.UsageError("choose one of --icmp, --tcp PORT, --udp PORT")
    proto, port = ("tcp", tcp) if tcp is not None else ("udp", udp) if udp is not None else ("icmp", None)
    try:
        result = tr.trace(src, dst, proto, port, extra=extra, timeout=timeout)
    except KeyboardInterrupt:
        click.echo("natns trace: interrupted; the tracing tables and monitors were removed", err=True)
        _sys.exit(130)
    if json_out:
        click.echo(_json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(tr.render(result), markup=False, highlight=False, soft_wrap=True)
    _sys.exit(0 if result.ok else 1)
