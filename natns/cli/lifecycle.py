"""Lifecycle commands: plan, up, down, status, exec.

The model, the kernel layer and rich are imported inside the commands that use
them: `natns status` with no labs needs none of them (docs/performance.md).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

from ..errors import UserError
from ..privileges import require_root
from .main import err, exit_with, handle_errors, main, natsorted, natural_key, out, progress_printer
from .options import NETNS_DIR, file_argument, json_option

if TYPE_CHECKING:  # pragma: no cover
    from ..lab import Lab
    from ..plan import Plan


def _load_lab(file: str) -> Lab:
    """`Lab.from_file(file)`, then the heap frozen (gc.freeze): the modules, the model and
    the topology live until natns exits, and reading a lab allocates ~20 objects per
    kernel message; without the freeze each of the collector's full passes walks all
    the objects that are already there again. A no-op `up` of 500 routers, whole
    process: 2.12 -> 1.92 s (medians of 10, alternating; docs/performance.md)."""
    import gc

    from ..lab import Lab

    lab = Lab.from_file(file)
    gc.freeze()
    return lab


def _print_plan(plan: Plan, header: str, rules: bool = False, matches: str = "the kernel already matches") -> None:
    from rich.text import Text

    from ..steps import LoadFirewall

    if plan.empty:
        out.print(f"{header}: nothing to do, {matches}")
        return
    out.print(f"{header}: {len(plan.steps)} step(s)")
    width = max(len(str(len(plan.steps))), 1)
    for i, s in enumerate(plan.steps, 1):
        out.print(Text.assemble(f"  {i:>{width}}  ", (f"{s.reason:<7}", "dim"), f"  {s.command()}"),
                  soft_wrap=True)
        if rules and isinstance(s, LoadFirewall):
            for line in s.ruleset.text().splitlines():
                out.print(f"  {'':>{width}}           {line.expandtabs(4)}", soft_wrap=True, markup=False, style="dim")


def _plan_json(plan: Plan, applied: bool, **extra) -> str:
    return json.dumps({"lab": plan.lab, "applied": applied, "changed": len(plan.steps),
                       "steps": [s.to_json() for s in plan.steps], **extra}, indent=2)


@main.command()
@file_argument()
@json_option("Print the steps as JSON.")
@click.option("--rules", is_flag=True, help="Show the full firewall rules each load would install "
              "(NAT, the router's filter policy, the maps of floating IPs and port forwards).")
@click.option("--check", is_flag=True, help="Instead of the steps: ask the kernel's own checker (nft -c, "
              "iptables-restore --test) whether the rules natns renders load, changing nothing. "
              "Exit status 0 when all of them load, 1 otherwise.")
@click.option("--adopt", is_flag=True, help="The steps `natns up --adopt FILE` would run: namespaces the file "
              "names that exist without any natns mark are taken over (marked, then converged).")
@handle_errors
def plan(file, json_out, rules, check, adopt):
    """Show the steps `natns up FILE` would run, without running them.

    Each step is shown with the `ip`/`sysctl`/`nft` command a person would type
    for the same change, and why it is needed (missing, drift, stale).

    With --check, the rules of every namespace are given to the kernel's
    checker instead, in that namespace if the lab has it (nothing there is
    changed), else in a scratch namespace natns makes and removes.

    With --adopt, the steps of `natns up --adopt FILE`: the takeover of
    namespaces that exist without a natns mark (`natns status` calls them
    foreign), shown as `set_mark ... adopt` and what converges them.
    """
    if check and adopt:
        raise click.UsageError("--check and --adopt don't go together")

    lab = _load_lab(file)
    if check:
        if lab.topology.engine != "kernel":
            raise UserError(f"{file}: engine: --check asks the kernel's rule checker, which the "
                            f"{lab.topology.engine} engine does not use")
        _check_rules(lab, json_out)
        return
    p = _engine(lab).plan(lab, adopt=adopt)
    notes = _upstream_notes(lab)
    if json_out:
        click.echo(_plan_json(p, applied=False, **({"adopt": True} if adopt else {}),
                              **({"notes": notes} if notes else {})))
    else:
        _print_plan(p, f"plan {lab.name}" + (" --adopt" if adopt else ""), rules=rules,
                    **({"matches": "OVN (its NB rows, daemons and hosts) already matches"}
                       if lab.topology.engine == "ovn" else {}))
        _print_notes(notes)


def _upstream_notes(lab: Lab) -> list[str]:
    """What the host's upstream must route for the lab's routed IPv6 prefixes (uplink: host)."""
    from ..desired import routed_via_host

    routed = routed_via_host(lab.topology)
    if not routed:
        return []
    from ..observe import upstream_notes

    return upstream_notes(routed)


def _print_notes(notes: list[str]) -> None:
    from rich.text import Text

    for n in notes:
        out.print(Text.assemble(("note: ", "cyan"), n), soft_wrap=True)


def _check_rules(lab: Lab, json_out: bool) -> None:
    """`plan --check`: print what the kernel's checker says of each namespace's rules; exit 1 if any fail."""
    checks = lab.check_rules()
    ok = all(c.ok for c in checks)
    backend = lab.topology.backend
    if json_out:
        click.echo(json.dumps({"lab": lab.name, "backend": backend, "ok": ok,
                               "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        tool = "nft -c" if backend == "nftables" else "iptables-restore --test"
        for c in checks:
            where = "" if c.checked_in == c.namespace else f" (in scratch namespace {c.checked_in})"
            if c.ok:
                out.print(f"{c.namespace}: the {backend} rules load{where}", markup=False, soft_wrap=True)
            else:
                err.print(f"{c.namespace}: {tool} refuses the {backend} rules{where}:", markup=False)
                for line in c.error.splitlines():
                    err.print(f"  {line}", markup=False, soft_wrap=True)
        out.print(f"{lab.name}: {'all' if ok else 'not all'} {len(checks)} rule set(s) load", markup=False)
    exit_with(ok)


@main.command()
@file_argument()
@json_option("Print the applied steps as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List every applied step.")
@click.option("--adopt", is_flag=True, help="Take over namespaces the file names that exist but were not "
              "made by natns (they get the lab's mark; `down` then removes them). Without it they are refused.")
@handle_errors
def up(file, json_out, verbose, adopt):
    """Create the lab in FILE, or converge it to FILE. Idempotent.

    Validates the whole file first; nothing is created if it is invalid. A
    second run changes nothing and says so.
    """
    from rich.text import Text

    from ..steps import CreateNetns

    lab = _load_lab(file)
    p = _engine(lab).up(lab, progress=progress_printer(json_out), adopt=adopt)
    blocked = _blocked_uplinks(lab)
    notes = _upstream_notes(lab)
    if json_out:
        click.echo(_plan_json(p, applied=True, warnings=[b.to_json() for b in blocked],
                              **({"notes": notes} if notes else {})))
        return
    if p.empty:
        out.print(f"{lab.name}: up to date, no changes")
    else:
        if verbose:
            _print_plan(p, f"up {lab.name}")
        nss = natsorted({s.name for s in p.steps if isinstance(s, CreateNetns)})
        out.print(f"{lab.name}: {len(p.steps)} change(s) applied"
                  + (f"; created namespaces {', '.join(nss)}" if nss else ""), markup=False, soft_wrap=True)
    for b in blocked:
        err.print(Text.assemble(("warning: ", "yellow"), b.text()), soft_wrap=True)
    _print_notes(notes)


def _engine(lab: Lab):
    """The engine the lab's topology names (`engine:`): natns.engines.base.Engine."""
    from ..engines import for_topology

    return for_topology(lab.topology)


def _blocked_uplinks(lab: Lab) -> list:
    """What in the host would drop the traffic of the lab's `uplink: host` routers."""
    if not any(r.external.uplink == "host" for r in lab.topology.routers):
        return []
    from ..explain.uplink import blocked_uplinks
    from ..topology.names import uplink_name

    return blocked_uplinks((r.name, uplink_name(lab.name, r.name), str(r.external.address.ip))
                           for r in lab.topology.routers if r.external.uplink == "host")


@main.command()
@file_argument(required=False)
@click.option("--lab", "lab_name", help="Remove the lab of this name, found by its marks (no file needed).")
@json_option("Print the removed namespaces (and the processes stopped in them) as JSON.")
@handle_errors
def down(file, lab_name, json_out):
    """Remove exactly what natns made for a lab, nothing else.

    Give the topology FILE, or --lab NAME: natns finds the lab's namespaces by
    the marks it left in the kernel, so this works after a crash too.
    Processes still running inside them (`natns exec HOST -- ...`) are
    stopped first: SIGTERM, then SIGKILL after a second; the output says which.
    """
    if bool(file) == bool(lab_name):
        raise click.UsageError("give either FILE or --lab NAME")
    from ..engines import for_lab, for_topology
    from ..steps import DeleteNetns

    lab = _load_lab(file) if file else None
    name = lab.name if lab else lab_name
    engine = for_topology(lab.topology) if lab else for_lab(name)
    p = engine.down(name, progress=progress_printer(json_out))
    removed = [s.name for s in p.steps if isinstance(s, DeleteNetns)]
    ovn = [s for s in p.steps if getattr(s, "engine", None) == "ovn"]
    host = [s for s in p.steps if not isinstance(s, DeleteNetns) and s not in ovn]  # `uplink: host`: undone
    stopped = getattr(p, "stopped", [])  # processes that ran inside the removed namespaces
    if json_out:
        click.echo(json.dumps({"lab": name, "removed": removed,
                               "host": [s.to_json() for s in host], "ovn": [s.to_json() for s in ovn],
                               "stopped": [s.to_json() for s in stopped]}, indent=2))
    elif p.empty:
        out.print(f"{name}: nothing to remove")
    else:
        parts = [f"removed namespaces {', '.join(natsorted(removed))}"] if removed else []
        parts += _stopped_text(stopped)
        if ovn:
            parts.append("OVN: " + ", ".join(f"{s.action} {s.target}" for s in ovn))
        if host:
            parts.append(f"undid {len(host)} change(s) in the namespace natns runs in (uplinks: "
                         + ", ".join(sorted({s.command() for s in host})) + ")")
        out.print(f"{name}: " + "; ".join(parts), markup=False, soft_wrap=True)  # one line, also in a pipe


def _stopped_text(stopped) -> list[str]:
    """Text like "stopped 1 process in tenant1 (sleep)", one per namespace, in the order stopped."""
    by_ns: dict[str, list] = {}
    for s in stopped:
        by_ns.setdefault(s.namespace, []).append(s)
    return [f"stopped {len(ps)} process{'es' if len(ps) != 1 else ''} in {ns} "
            f"({', '.join(sorted({p.program for p in ps}))})" for ns, ps in by_ns.items()]


@main.command()
@file_argument(required=False)
@json_option("Print the status as JSON.")
@click.option("--counters", is_flag=True,
              help="Also show the packet and byte counters of natns's rules in each router, and the "
                   "connections each floating IP and port forward translated.")
@handle_errors
def status(file, json_out, counters):
    """Compare the kernel with FILE: what exists, what is missing, what drifted.

    Without FILE, list the labs natns finds in the kernel by their marks.
    With --counters, also the counters of natns's own firewall rules per
    router (like `iptables -t nat -vnL`, for either backend).
    A namespace or link that `up` would refuse (made by hand at a name the lab
    wants, or a natns link whose alias was changed) is reported as "foreign",
    with what `natns up --adopt` would do about it; a namespace deleted while
    processes hold it names them. Exit status 0 when everything matches, 1
    otherwise.
    """
    if counters and not file:
        raise click.UsageError("--counters needs the topology FILE")
    if not file:
        found = labs()
        if json_out:
            click.echo(json.dumps({lab: [{"namespace": n, "role": r} for n, r in nss]
                                   for lab, nss in found.items()}, indent=2))
            return
        if not found:
            click.echo("no natns labs in this kernel")
            return
        from rich.table import Table

        table = Table(title="natns labs", title_justify="left")
        table.add_column("lab")
        table.add_column("namespaces (role)")
        for lab in natsorted(found):
            table.add_row(lab, ", ".join(f"{n} ({r})" for n, r in sorted(found[lab], key=lambda nr: natural_key(nr[0]))))
        out.print(table)
        return
    from rich.table import Table

    lab = _load_lab(file)
    if counters and lab.topology.engine != "kernel":
        raise UserError(f"{file}: engine: --counters reads natns's firewall rules, which the "
                        f"{lab.topology.engine} engine does not use")
    st = _engine(lab).status(lab)
    ctrs = None
    if counters:
        from ..verify.counters import rule_counters

        present = {n.name for n in st.namespaces if n.state not in ("missing", "foreign")}
        ctrs = rule_counters(lab.topology, [r.ns for r in lab.topology.routers if r.ns in present])
    if json_out:
        data = st.to_json()
        if ctrs is not None:
            data["counters"] = [c.to_json() for c in ctrs]
        click.echo(json.dumps(data, indent=2))
    else:
        table = Table(title=f"{lab.name}: " + ("ok" if st.ok else "not as in " + file), title_justify="left")
        table.add_column("namespace")
        table.add_column("role")
        table.add_column("state")
        table.add_column("details")
        colour = {"ok": "green", "missing": "red", "drift": "yellow", "stale": "magenta", "foreign": "red"}
        for n in st.namespaces:
            table.add_row(n.name, n.role, f"[{colour[n.state]}]{n.state}[/]", "\n".join(n.problems))
        out.print(table)
        gateways = getattr(st, "gateways", None)
        if gateways:
            _print_gateways(gateways)
        if ctrs is not None:
            _print_counters(ctrs)
    exit_with(st.ok)


def labs() -> dict[str, list[tuple[str, str]]]:
    """`natns.lab.labs()`; with no namespace under /run/netns at all, {} without importing the kernel layer."""
    require_root("status")
    try:
        if not os.listdir(NETNS_DIR):
            return {}
    except FileNotFoundError:
        return {}
    except OSError:
        pass
    from ..observe import labs_by_mark

    return labs_by_mark()


def _print_gateways(gateways: dict) -> None:
    from rich.table import Table

    table = Table(title="gateway chassis (OVN: the active one carries the router's SNAT and floating IPs)",
                  title_justify="left")
    for col in ("router", "gateway_chassis (priority order)", "active"):
        table.add_column(col)
    for router, g in gateways.items():
        table.add_row(router, ", ".join(g["gateway_chassis"]) or "-",
                      g["active"] or f"[red]unknown[/]" + (f" ({g['note']})" if g.get("note") else ""))
    out.print(table)


@main.command()
@file_argument()
@click.option("--chassis", required=True, help="The chassis this host is in OVN (its system-id): the file's "
              "hosts with `chassis: NAME` are plugged here.")
@click.option("--ovs-db", default="unix:/var/run/openvswitch/db.sock", show_default=True,
              help="The local Open vSwitch database, whose br-int ovn-controller manages.")
@json_option("Print the applied steps as JSON.")
@handle_errors
def attach(file, chassis, ovs_db, json_out):
    """Plug this machine's lab hosts into its local OVN integration bridge (engine: ovn).

    For `ovn: {nb: tcp:HOST:6641}` labs, where OVN runs elsewhere: `natns up FILE`
    writes the northbound rows (from anywhere that reaches the NB), and on each
    hypervisor `natns attach FILE --chassis NAME` makes a namespace per host of that
    chassis, with a veth on br-int bound to the host's logical port (iface-id), and
    returns once ovn-controller has installed it. Idempotent; `natns down FILE` on
    that machine removes the namespaces and the ports.

    \b
    natns up examples/ovn-external.yaml
    natns attach examples/ovn-external.yaml --chassis compute1
    """

    lab = _load_lab(file)
    if lab.topology.engine != "ovn":
        raise UserError(f"{file}: engine: attach is for engine: ovn (the kernel engine plugs its hosts itself)")
    p = _engine(lab).attach(lab, chassis, ovs_db, progress=progress_printer(json_out))
    if json_out:
        click.echo(_plan_json(p, applied=True))
    elif p.empty:
        out.print(f"{lab.name}: the hosts of chassis {chassis} are plugged and bound, no changes", markup=False)
    else:
        out.print(f"{lab.name}: plugged {len(p.steps)} host(s) into br-int ({ovs_db})", markup=False)


def _print_counters(ctrs) -> None:
    from rich.table import Table

    backend = ctrs[0].backend if ctrs else ""
    table = Table(title=f"counters of natns's rules ({backend}; a NAT rule counts each connection's "
                  "first packet)", title_justify="left")
    for col in ("router", "chain", "rule", "packets", "bytes"):
        table.add_column(col, justify="right" if col in ("packets", "bytes") else "left")
    for c in ctrs:
        if not c.rules:
            table.add_row(c.router, "-", "[red](no natns rules)[/]", "-", "-")
        for r in c.rules:
            chain = (r["chain"] or "-") + (" (ip6)" if r.get("family") == 6 else "")
            table.add_row(c.router, chain, r["comment"] or r["rule"],
                          _num(r["packets"]), _num(r["bytes"]))
    out.print(table)
    if not any(c.mappings for c in ctrs):
        return
    table = Table(title="connections per floating IP (fip in / fip out) and port forward (tcp, udp)",
                  title_justify="left")
    for col in ("router", "mapping", "outside", "inside", "conns", "bytes"):
        table.add_column(col, justify="right" if col in ("conns", "bytes") else "left", no_wrap=True)
    for c in ctrs:
        for m in c.mappings:
            table.add_row(c.router, m["kind"], m["outside"], m["inside"], _num(m["packets"]), _num(m["bytes"]))
    out.print(table)


def _num(v) -> str:
    return "-" if v is None else str(v)


@main.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("namespace")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def exec_(namespace, command):
    """Run COMMAND inside the lab namespace NAMESPACE.

    \b
    natns exec tenant1 -- ping -c1 203.0.113.114
    natns exec vm -- nft list ruleset
    """
    from ..marks import parse_ns_mark
    from ..observe import read_mark

    require_root("exec")
    if parse_ns_mark(read_mark(namespace)) is None:
        raise UserError(f"namespace {namespace!r} is not a natns lab namespace (see `natns status`)")
    # Enter the namespace here and run COMMAND itself (not through nsenter, whose
    # name would then be in the errors): what `nsenter --net=` does, in-process.
    import ctypes

    from ..kernel.nsexec import CLONE_NEWNET, _libc, ns_path

    fd = os.open(ns_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise UserError(f"cannot enter namespace {namespace!r}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    try:
        os.execvp(command[0], list(command))
    except OSError as exc:
        raise UserError(f"cannot run {command[0]!r} in namespace {namespace!r}: {exc.strerror}") from None
