"""Explain commands: trace, doctor (issue: Explain)."""

from __future__ import annotations

import json
import sys

import click

from ..errors import ExitStatus
from ..privileges import require_root
from .main import exit_with, handle_errors, main, out
from .options import existing_namespace, from_option, json_option, protocol, protocol_options, to_option

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
    Exit status: 0 healthy (no error and the probe works), 1 a finding
    explains a failure (or the probe fails), 2 bad arguments.
    """
    from ..explain import doctor as dr

    proto, port = protocol(icmp, tcp, udp)
    existing_namespace(from_ns, "--from")
    require_root("doctor")
    report = dr.diagnose(from_ns, to, proto=proto, port=port, probe=not no_probe)
    if json_out:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(dr.render(report), markup=False, highlight=False, soft_wrap=True)
    exit_with(report.healthy)  # report.exit_status, as an ExitStatus


# --------------------------------------------------------------------------- trace


@main.command("trace")
@from_option("Namespace to send the probe from.")
@to_option("IPv4 or IPv6 address to send it to.")
@protocol_options(tcp="Send a TCP SYN to PORT.", udp="Send a UDP datagram to PORT.")
@click.option("--ns", "extra", multiple=True, metavar="NS",
              help="Trace in this namespace too (repeatable); the path's namespaces are found by themselves.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds to wait for the answer.")
@json_option("Print JSON (schema: docs/explain.md, '## trace').")
@handle_errors
def trace_cmd(from_ns, to, icmp, tcp, udp, extra, timeout, json_out):
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

    proto, port = protocol(icmp, tcp, udp)
    existing_namespace(from_ns, "--from")
    for ns in extra:
        existing_namespace(ns, "--ns")
    try:
        result = tr.trace(from_ns, to, proto, port, extra=extra, timeout=timeout)
    except KeyboardInterrupt:
        click.echo("natns trace: interrupted; the tracing tables and monitors were removed", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    if json_out:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(tr.render(result), markup=False, highlight=False, soft_wrap=True)
    exit_with(result.ok)
