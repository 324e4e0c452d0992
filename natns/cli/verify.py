"""Verify commands: capture, conntrack, probe, check, show (issue: Verify).

Thin: each command parses its arguments, calls natns.verify and renders a
table (or JSON with --json, schemas in docs/verify.md).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import contextmanager

import click
from rich import box
from rich.table import Table
from rich.text import Text

from .. import topology
from ..errors import ExitStatus, UserError
from ..privileges import require_root
from .main import err, exit_with, handle_errors, main, natsorted, out
from .options import file_argument, from_option, json_option, protocol, protocol_options, to_option

CHANGED = "bold yellow"


def _topology(file: str) -> topology.Topology:
    return topology.load(file)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C while inside; either ends the command with status 130.

    The library's own cleanup (stopping tcpdump, closing listeners) runs as the
    interrupt unwinds; these commands change nothing, so there is nothing to
    converge or remove afterwards.
    """

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        click.echo("natns: interrupted; nothing was left running", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, old)


def _print(renderable) -> None:
    """Print a table: to fit a terminal, or a pipe or file (natns.cli.main.PIPE_WIDTH columns)."""
    out.print(renderable)


def _emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


# --------------------------------------------------------------------------- probe


def _probe_table(r, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    what = r.protocol + (f" port {r.port}" if r.port is not None else " echo")
    result = (Text(f"reachable in {r.latency_ms:.3f} ms", style="green") if r.ok
              else Text(f"no: {r.error or 'no answer'}", style="red"))
    table.add_row("probe", f"{r.from_ns} -> {r.to} ({what})")
    table.add_row("result", result)
    table.add_row("sent from", r.local or "-")
    table.add_row("far end", r.far_end or r.far_end_note or "not a namespace of the lab")
    table.add_row("source seen there", r.source_seen or "-")
    if r.responder:
        table.add_row("listener", r.responder)
    return table


@main.command()
@file_argument()
@from_option("Lab namespace to send from.")
@to_option("IPv4 or IPv6 address to probe.")
@protocol_options()
@click.option("--timeout", type=click.FloatRange(0.05, 60), default=2.0, show_default=True,
              help="Seconds to wait for an answer.")
@json_option("Print the result as JSON.")
@handle_errors
def probe(file, from_ns, to, icmp, tcp, udp, timeout, json_out):
    """Send one probe from a lab namespace and say what happened.

    \b
    Reports success, latency, and, when ADDR belongs to a namespace of the
    lab, the source address seen there: natns listens at the far end for the
    probe's duration (a TCP/UDP responder on ADDR:PORT, or a raw ICMP socket)
    and removes it afterwards.
      natns probe examples/seed.yaml --from tenant1 --to 203.0.113.114
      natns probe examples/seed.yaml --from tenant1 --to 203.0.113.114 --tcp 80
    Exit status 0 if the probe got through, 1 if not.
    """
    from ..verify.probe import probe as run_probe

    require_root("probe")
    proto, port = protocol(icmp, tcp, udp)
    t = _topology(file)
    with _sigterm_as_interrupt():
        r = run_probe(t, from_ns, to, proto=proto, port=port, timeout=timeout)
    if json_out:
        _emit_json(r.to_json())
    else:
        _print(_probe_table(r))
    exit_with(r.ok)


# --------------------------------------------------------------------------- check


@main.command()
@file_argument()
@click.option("--timeout", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              help="Seconds each probe waits for an answer.")
@json_option("Print the results as JSON.")
@handle_errors
def check(file, timeout, json_out):
    """Run the `checks:` of FILE against the running lab.

    \b
    Each check is a real probe (ICMP, or TCP/UDP to a port) from a lab
    namespace; it holds when the destination is reachable or blocked as
    expected and, if the check names a source, the far end saw that source.
    Exit status 0 only if every check holds; 1 otherwise, naming the failed
    checks. Without `checks:`, each lab host probes each internet host of
    its families (IPv4 and IPv6; a v6 check names the source the far end
    must see: the host's own address when routed, the router's with NAT66).
    """
    from ..verify.checks import default_checks, run_checks

    require_root("check")
    t = _topology(file)
    todo = t.checks or default_checks(t)
    if not todo:
        if json_out:
            _emit_json({"lab": t.name, "ok": True, "total": 0, "failed": [], "checks": []})
        else:
            out.print(f"{file}: no checks (add a `checks:` list; see docs/topology.md)")
        return
    with _sigterm_as_interrupt():
        report = run_checks(t, timeout=timeout, checks=todo)
    if json_out:
        _emit_json(report.to_json())
    else:
        table = Table(title=f"{t.name}: {len(report.results) - len(report.failed)} of "
                      f"{len(report.results)} checks hold", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("#", "check", "expect", "result", "source seen", "verdict"):
            table.add_column(col)
        for r in report.results:
            p, c = r.probe, r.check
            proto = c.protocol + (f"/{c.port}" if c.port is not None else "")
            expect = c.expect + (f"\nsource {c.source}" if c.source else "")
            result = (f"reachable\n{p.latency_ms:.3f} ms" if p.ok else f"blocked\n{p.error or 'no answer'}")
            verdict = Text("holds", style="green") if r.holds else Text("FAILS", style="bold red")
            table.add_row(str(r.index), f"{c.from_} ->\n{c.to} {proto}", expect, result,
                          p.source_seen or "-", verdict)
        _print(table)
        for r in report.failed:
            out.print(Text.assemble(("failed: ", "bold red"), f"{r.name}: {r.problem}"), soft_wrap=True)
    exit_with(report.ok)


# --------------------------------------------------------------------------- conntrack


def _entry_row(e, acct: bool) -> list:
    nat = Text("\n".join(f"{n.kind} to {n.after}" for n in e.nat) or "-", style=CHANGED if e.nat else "")
    row = [e.protocol, f"{e.original.text()}\n{e.reply.text()}", nat, e.state,
           "-" if e.timeout is None else str(e.timeout)]
    if acct:
        c = e.counters
        row.append("-" if c is None else
                   f"{c['original']['packets']} / {c['original']['bytes']}\n"
                   f"{c['reply']['packets']} / {c['reply']['bytes']}")
    return row


def _event_line(ev, label: bool) -> Text:
    e = ev.entry
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.time)) + f".{int(ev.time * 1000) % 1000:03d}"
    style = {"new": "green", "destroy": "red"}.get(ev.kind, "yellow")
    txt = Text.assemble(stamp, " ", (f"{ev.kind:<7}", style), " ")
    if label:
        txt.append(f"[{ev.namespace}] ", style="dim")
    txt.append(f"{e.protocol:<5} {e.original.text()}  reply {e.reply.text()}")
    for n in e.nat:
        txt.append(f"  {n.text()}", style=CHANGED)
    if ev.kind == "destroy" and e.counters:
        c = e.counters
        txt.append(f"  ({c['original']['packets']}+{c['reply']['packets']} packets)", style="dim")
    return txt


@main.command()
@file_argument()
@click.argument("router", required=False)
@click.option("--watch", is_flag=True, help="Stream new and destroyed entries instead (Ctrl-C to stop).")
@click.option("--count", type=click.IntRange(1), metavar="N", help="With --watch: stop after N events.")
@click.option("--timeout", type=click.FloatRange(0.1), metavar="S", help="With --watch: stop after S seconds.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None,
              help="Only IPv4 or only IPv6 entries (default: both).")
@json_option("Print the tables as JSON (with --watch: one JSON object per line).")
@handle_errors
def conntrack(file, router, watch, count, timeout, family, json_out):
    """Show a router's NAT table (conntrack), read over netlink.

    \b
    ROUTER is a router's name (or namespace); without it, every router.
    Each entry: the original tuple (as the sender sent it), the reply tuple
    (what a reply looks like when it arrives), the translation the two imply
    (SNAT: the source was rewritten; DNAT: the destination), the protocol
    state and the seconds left. Packets/bytes appear when accounting is on in
    the router (sysctl net.netfilter.nf_conntrack_acct=1; natns does not
    change it). IPv6 entries (routed or NAT66) are shown beside IPv4's, their
    addresses with a port written [addr]:port; --family 6 (or 4) shows one.
      natns conntrack examples/seed.yaml vm
      natns conntrack examples/seed.yaml vm --watch
      natns conntrack examples/dual-stack.yaml --family 6
    
    On an OVN lab (engine: ovn) it shows the NAT entries of OVS's userspace
    conntrack on the router's active gateway chassis (the chassis its
    chassisredirect port is bound to in the SB DB), read with
    `ovs-appctl dpctl/dump-conntrack`; --watch is not available there.
    """
    from ..verify import conntrack as ct

    require_root("conntrack")
    if (count or timeout) and not watch:
        raise click.UsageError("--count and --timeout go with --watch")
    t = _topology(file)
    families = (int(family),) if family else (4, 6)
    if getattr(t, "engine", "kernel") == "ovn":
        _ovn_conntrack(t, router, watch, json_out)
        return
    if watch:
        _watch(t, router, count, timeout, json_out, families)
        return
    tables = ct.tables(t, router, families)
    if json_out:
        _emit_json({"lab": t.name, "routers": [tb.to_json() for tb in tables]})
        return
    for tb in tables:
        acct = bool(tb.accounting)
        state = {True: "on", False: "off (sysctl net.netfilter.nf_conntrack_acct=1 turns it on)",
                 None: "conntrack not active"}[tb.accounting]
        table = Table(title=f"router {tb.router} (namespace {tb.namespace}): {len(tb.entries)} entries, "
                      f"accounting {state}", title_justify="left", box=box.SIMPLE_HEAD)
        cols = ["proto", "original tuple\nreply tuple", "NAT", "state", "timeout s"]
        if acct:
            cols.append("packets / bytes\norig, reply")
        for c in cols:
            table.add_column(c, min_width=30 if c.startswith("original") else None)
        for e in tb.entries:
            table.add_row(*_entry_row(e, acct))
        _print(table)


def _ovn_conntrack(t, router, watch, json_out) -> None:
    """OVN lab: OVS's userspace conntrack on each router's active gateway chassis."""
    from ..engines.ovn import conntrack as oct

    if watch:
        raise click.UsageError("--watch reads ctnetlink events, which OVS's userspace conntrack "
                               "does not send; run `natns conntrack FILE ROUTER` again instead")
    tables = oct.tables(t, router)
    if json_out:
        _emit_json({"lab": t.name, "routers": [tb.to_json() for tb in tables]})
        return
    for tb in tables:
        where = (f"active gateway chassis {tb.chassis} (namespace {tb.namespace}), OVS userspace conntrack"
                 if tb.namespace else tb.note)
        table = Table(title=f"router {tb.router} on {where}: {len(tb.entries)} NAT entries",
                      title_justify="left", box=box.SIMPLE_HEAD)
        for c in ("proto", "original tuple\nreply tuple", "NAT", "state", "timeout s", "zone"):
            table.add_column(c, min_width=30 if c.startswith("original") else None)
        for e in tb.entries:
            table.add_row(*_entry_row(e, False), "-" if e.zone is None else str(e.zone))
        _print(table)


def _until(count: int | None, timeout: float | None) -> str:
    """When a watch ends: ``1 event``, ``5 events or 2 s``, ``Ctrl-C``."""
    limits = [f"{count} event{'' if count == 1 else 's'}" if count else "", f"{timeout:g} s" if timeout else ""]
    return " or ".join(x for x in limits if x) or "Ctrl-C"


def _watch(t, router, count, timeout, json_out, families=(4, 6)) -> None:
    from contextlib import ExitStack

    from ..verify import conntrack as ct

    chosen = ct.routers(t, router)
    with ExitStack() as stack, _sigterm_as_interrupt():
        watches = [stack.enter_context(ct.Watch(r.ns, families=families)) for r in chosen]
        err.print(f"watching conntrack in {', '.join(natsorted(r.ns for r in chosen))} "
                  f"(new and destroyed entries; until {_until(count, timeout)})")
        try:
            for ev in ct.stream(watches, timeout=timeout, count=count):
                if json_out:
                    click.echo(json.dumps(ev.to_json()))
                else:
                    out.print(_event_line(ev, len(watches) > 1), soft_wrap=True)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- capture


class _DashDashCommand(click.Command):
    """A command whose arguments after ``--`` are a command line to run (kept apart)."""

    def parse_args(self, ctx, args):
        if "--" in args:
            i = args.index("--")
            ctx.meta["natns.cmd"] = list(args[i + 1:])
            args = list(args[:i])
        else:
            ctx.meta["natns.cmd"] = []
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage(ctx.command_path, "[OPTIONS] FILE [NS:IFACE]... [-- CMD...]")


def _short(p) -> str:
    """A packet's one-word-ish summary for the table (full one in --json)."""
    if p.geneve is not None:
        if p.inner is None:
            return p.info
        return f"Geneve VNI {p.geneve['vni']} [{p.inner.src} > {p.inner.dst} {_short(p.inner)}]"
    if p.icmp_type in (0, 8):
        return f"{'echo request' if p.icmp_type == 8 else 'echo reply'} id {p.icmp_id} seq {p.icmp_seq}"
    if p.proto == "tcp":
        return f"TCP [{p.tcp_flags}]" + (f" {len(p.payload)} B" if p.payload else "")
    if p.proto == "udp":
        return f"UDP {len(p.payload)} B"
    return p.info


def _capture_table(run) -> Table:
    table = Table(title=f"{len(run.rows)} packets at {len(run.points)} points, in time order "
                  "(same # = the same packet at another point)", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("#", "+ms", "point", "src", "dst", "packet", "ttl"):
        table.add_column(col, justify="right" if col in ("#", "+ms", "ttl") else "left",
                         min_width=12 if col in ("point", "src", "dst") else None)
    t0 = run.rows[0].packet.time if run.rows else 0.0

    def cell(text, changed) -> Text:
        return Text(str(text), style=CHANGED if changed else "")

    last = None
    for r in run.rows:
        p, ch = r.packet, set(r.changed)
        table.add_row(
            str(r.number) if r.number != last else "", f"{(p.time - t0) * 1000:.3f}", p.point,
            cell(p.addr("src"), ch & {"src", "sport"}), cell(p.addr("dst"), ch & {"dst", "dport"}),
            cell(_short(p), "icmp_id" in ch), cell("-" if p.ttl is None else p.ttl, "ttl" in ch))
        last = r.number
    return table


@main.command(cls=_DashDashCommand)
@file_argument()
@click.argument("points", nargs=-1, metavar="[NS:IFACE]...")
@from_option("Lab namespace the probe (or CMD) runs in.")
@to_option("Probe this address; the default points are its path.", required=False)
@protocol_options()
@click.option("--filter", "bpf", metavar="BPF",
              help="tcpdump filter (default: the probe's protocol with its ICMP or ICMPv6 errors, or IPv4 and IPv6 but IGMP/MLD with a command).")
@click.option("-w", "--write", "pcap_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep one pcap file per point in DIR (NS_IFACE.pcap), for Wireshark.")
@click.option("--timeout", type=click.FloatRange(0.05, 3600), metavar="S",
              help="Probe: seconds to wait for an answer (2). CMD: seconds before it is stopped (60).")
@json_option("Print the packets as JSON.")
@handle_errors
def capture(file, points, from_ns, to, icmp, tcp, udp, bpf, pcap_dir, timeout, json_out):
    """Capture at several points at once while a probe or a command runs.

    \b
    One tcpdump per point, started before the traffic and stopped after it;
    none is left running, also on Ctrl-C. The packets of all points are shown
    merged in time order, one row per packet per point, numbered so the same
    packet can be followed; fields that changed since the previous point (the
    SNAT rewrite, the TTL) are highlighted.
    \b
    Points default to every interface on the path from --from to --to (with a
    command and no --to: the path out to the internet).
      natns capture examples/seed.yaml --from tenant1 --to 203.0.113.114
      natns capture examples/seed.yaml --from tenant1 --to 203.0.113.114 --tcp 80 -w pcaps
      natns capture examples/seed.yaml tenant1:eth0 vm:eth0 --from tenant1 -- ping -c2 203.0.113.114
    \b
    On an OVN lab the default points include the underlay (the sender's
    chassis' phy0, the underlay bridge `ul` in the central namespace, the
    gateway's uplink): packets between chassis are shown with their Geneve
    header decoded (VNI, and the inner packet, numbered as the same packet).
    The point `underlay:ul` names the underlay bridge.
      natns capture examples/ovn.yaml --from vm1 --to 203.0.113.114
      natns capture examples/ovn.yaml underlay:ul vm1:eth0 --from vm1 --to 203.0.113.114
    Exit status 1 if the probe did not get through (as `natns probe`), else 0.
    """
    from ..verify.capture import capture as run_capture
    from ..verify.capture import parse_point

    require_root("capture")
    cmd = click.get_current_context().meta.get("natns.cmd") or None
    proto, port = protocol(icmp, tcp, udp)
    if not cmd and not to:
        raise click.UsageError("give --to ADDR to capture a probe, or -- CMD... to capture a command")
    if cmd and (icmp or tcp or udp):
        raise click.UsageError("--icmp/--tcp/--udp choose the probe; with -- CMD there is no probe")
    t = _topology(file)
    pts = [parse_point(p) for p in points] or None
    kw = {"timeout": timeout} if timeout and not cmd else {}
    if timeout and cmd:
        kw["command_timeout"] = timeout
    if getattr(t, "engine", "kernel") == "ovn":  # the sandbox's chassis and underlay are points too
        from ..engines.ovn import capture as ocap

        kw["known"] = ocap.namespaces(t)
        pts = ocap.expand(t, pts) if pts else ocap.points(t, from_ns, to)
        if bpf is None:
            bpf = ocap.bpf(None if cmd else proto, port)
    with _sigterm_as_interrupt():
        run = run_capture(t, from_ns, to=to, proto=proto, port=port, argv=cmd, points=pts, bpf=bpf,
                          pcap_dir=pcap_dir, **kw)
    probe_ok = run.probe is None or run.probe.ok  # the exit status says whether the probe got through
    if json_out:
        _emit_json(run.to_json())
        exit_with(probe_ok)
    out.print(f"capture at {', '.join(f'{ns}:{i}' for ns, i in run.points)}; filter {run.bpf!r}",
              soft_wrap=True)
    if run.probe is not None:
        out.print(f"probe: {run.probe.summary()}", soft_wrap=True)
    if run.command is not None:
        c = run.command
        status = f"exit {c.returncode}" if c.stopped is None else f"stopped ({c.stopped})"
        out.print(f"command in {c.ns}: {' '.join(c.argv)}  [{status}]", soft_wrap=True)
        for line in c.output.rstrip().splitlines():
            out.print(Text("  " + line, style="dim"), soft_wrap=True)
    _print(_capture_table(run))
    out.print(Text("highlighted: changed since the same packet's previous point "
                   "(addresses and ports rewritten by NAT, TTL decremented by routing)", style="dim"))
    for point, path in run.pcaps.items():
        out.print(f"pcap {point}: {path}", soft_wrap=True)
    exit_with(probe_ok)


# --------------------------------------------------------------------------- show


_EXT = {".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}


@main.command()
@file_argument()
@click.option("--format", "fmt", type=click.Choice(["tree", "svg", "dot", "mermaid"]),
              help="tree (the terminal; default), or a diagram: svg (needs graphviz), dot, mermaid.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="OUT",
              help="Write the diagram to OUT (format from its extension unless --format).")
@json_option("Print the topology's graph as JSON.")
@handle_errors
def show(file, fmt, output, json_out):
    """Draw the topology: routers, networks, hosts, the internet, addresses, SNAT.

    \b
    Works from the file alone (no root, nothing is read from the kernel).
      natns show examples/seed.yaml
      natns show examples/seed.yaml --format svg -o seed.svg
      natns show examples/seed.yaml --format mermaid
    """
    from ..topology import drawing as draw

    t = _topology(file)
    if json_out:
        _emit_json(draw.graph(t).to_json())
        return
    if fmt is None:
        fmt = "tree"
        if output:
            import os

            fmt = _EXT.get(os.path.splitext(output)[1].lower(), "")
            if not fmt:
                raise click.UsageError("give --format svg|dot|mermaid (OUT's extension does not say)")
    if fmt == "tree":
        if output:
            raise click.UsageError("the tree is for the terminal; use --format svg|dot|mermaid with -o")
        out.print(draw.tree(t))
        return
    data = draw.render(t, fmt)
    if output:
        try:
            with open(output, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise UserError(f"cannot write {output} ({exc.strerror})") from None
        out.print(f"wrote {output} ({fmt}, {len(data)} bytes)")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
