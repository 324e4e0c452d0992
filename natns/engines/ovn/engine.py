"""The OVN engine behind `natns plan/up/down/status` (the seam: natns.engines.base).

The plan is made of three kinds of steps, each a `natns.steps.Step` whose ``command()``
is what a person would type:

* the sandbox's parts (``ovn.sandbox`` only): the central namespace (NB, SB, northd), the
  internet namespace, each chassis (ovsdb-server, ovs-vswitchd, ovn-controller). A part
  is left alone when it is whole (its ``ready`` marker, written last, its namespace, its
  daemons alive by pidfile); one found unfinished (natns killed while making it) or broken
  (a daemon dead) is removed and made again, and so is what hangs on it (a chassis' veths
  end in the central and internet namespaces, a host's in its chassis);
* the northbound rows: the difference between the rows natns wants (`nb.wanted_rows`)
  and the lab's marked rows in the NB DB (`nb.diff`), one step per change, shown as its
  ``ovn-nbctl`` command, and written by `up` in ONE ovsdbapp transaction (the first of
  those steps runs it; the others are in it);
* the hosts' plugging: a namespace per host, its veth on its chassis' br-int bound by
  ``iface-id`` (`natns attach` does the same against a host's own OVS in ``ovn.nb`` mode).

Steps run through `natns.apply.apply`, so the crash-test hook (NATNS_TEST_KILL_AT_STEP,
natns/testing/hooks.py) works on them as on the kernel engine's. `up` then waits until
traffic can flow (`sandbox.wait_bound`). `down` needs only the lab's name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ...apply import apply
from ...errors import KernelError, UserError
from ...kernel import procs
from ...lab import Lab, NsStatus, Status, lab_lock
from ...plan import Plan
from ...privileges import require_root
from ...steps import DeleteNetns, Step
from ..base import Engine
from . import nb, sandbox

#: In ``ovn.nb`` mode: the NB remote `up` wrote to, kept for ``down --lab`` (no file then).
REMOTE_FILE = "nb-remote"


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class OvnStep(Step):
    """A step of the OVN engine: `commands` say what it amounts to, `do` carries it out."""

    engine: ClassVar[str] = "ovn"
    part: str = ""
    where: str | None = None
    commands: tuple[str, ...] = ()
    do: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def phase(self) -> int:
        return 0  # an OVN plan is made in order; nothing sorts it

    @property
    def ns(self) -> str | None:
        return self.where

    @property
    def target(self) -> str:
        return self.part

    def command(self) -> str:
        return " && ".join(self.commands) if self.commands else "(in the transaction above)"

    def run(self, h) -> None:
        if self.do is not None:
            self.do()


def _kind(name: str, action: str) -> type:
    """A kind of OvnStep: only its `action` (its name in `plan --json` and the test hook) differs."""
    return type(name, (OvnStep,), {"action": action, "__module__": __name__, "__doc__": f"OvnStep {action}."})


StartCentral = _kind("StartCentral", "start_ovn_central")
StartInternet = _kind("StartInternet", "make_internet")
StartChassis = _kind("StartChassis", "start_chassis")
PlugHost = _kind("PlugHost", "plug_host")
RemovePart = _kind("RemovePart", "remove_part")
StopDaemons = _kind("StopDaemons", "stop_daemons")
RemoveNbRows = _kind("RemoveNbRows", "remove_nb_rows")
RemoveRunDir = _kind("RemoveRunDir", "remove_run_dir")


@dataclass(frozen=True)
class WriteNb(OvnStep):
    """One NB change; the first WriteNb of a plan writes them all, in one transaction."""

    action: ClassVar[str] = "write_nb"
    change: nb.Change | None = None


class _Transaction:
    """The one NB transaction of an `up`: run by the first WriteNb step, once."""

    def __init__(self, remote: str, t) -> None:
        self.remote, self.t, self.changes = remote, t, None

    def __call__(self) -> None:
        if self.changes is not None:
            return
        api = nb.connect(self.remote)
        try:
            self.changes = nb.converge(api, self.t)
        finally:
            nb.close(api)


_REASON = {"create": "missing", "update": "drift", "delete": "stale"}


def _nb_steps(remote: str, t, changes: list[nb.Change]) -> list[OvnStep]:
    txn = _Transaction(remote, t)
    steps: list[OvnStep] = []
    for c in changes:
        if not c.argv:  # implied by another change (a child made or removed with its parent's column)
            continue
        steps.append(WriteNb(part=f"{c.table} {c.key}" + (f" ({c.column})" if c.column else ""),
                             commands=c.argv, do=txn if not steps else None, change=c,
                             reason=_REASON[c.op]))
    if changes and not steps:  # only implied changes: still one step to write them
        steps.append(WriteNb(part="NB", commands=("ovn-nbctl sync",), do=txn, reason="drift"))
    return steps


# --------------------------------------------------------------------------- reading


def nb_remote(t) -> str:
    """The NB natns writes to: the sandbox's unix socket, or ``ovn.nb``."""
    return t.ovn.nb if t.ovn.sandbox is None else sandbox.layout(t).nb_unix


def nb_changes(t, remote: str | None = None) -> list[nb.Change]:
    """What the NB lacks or holds beyond the topology's rows (read, nothing written)."""
    api = nb.connect(remote or nb_remote(t))
    try:
        return nb.diff(api, t)
    finally:
        nb.close(api)


@dataclass
class _Parts:
    """What the sandbox plan found: each part's problems, and which parts are made again."""

    central: list[str]
    internet: list[str]
    chassis: dict[str, list[str]]
    hosts: dict[str, list[str]]
    remake: set[str]  # "central", "internet", "chassis:NAME", "host:NS"
    stale: list[str]  # namespaces of the lab's OVN roles the file no longer names


def _hosts(t):
    for n in t.networks:
        for h in n.hosts:
            yield n, h


def _survey(t) -> _Parts:
    lo = sandbox.layout(t)
    lab = t.name
    central = sandbox.part_problems(lo.central_dir, lo.central_ns, sandbox.CENTRAL_DAEMONS)
    internet = sandbox.part_problems(sandbox.internet_dir(lab), lo.inet_ns, ())
    remake = set()
    if central:
        remake.add("central")
    if internet:
        remake.add("internet")
    chassis = {}
    for c in lo.chassis:
        chassis[c.name] = sandbox.part_problems(c.rundir, c.ns, sandbox.CHASSIS_DAEMONS)
        if chassis[c.name] or "central" in remake or (c.gateway and "internet" in remake):
            remake.add(f"chassis:{c.name}")
    hosts = {}
    for _, h in _hosts(t):
        c = lo.place(h.chassis)
        if f"chassis:{c.name}" in remake:
            hosts[h.namespace] = [f"its chassis {c.name} is made again"] if netns_exists(h.namespace) \
                else [f"namespace {h.namespace} does not exist"]
        else:
            hosts[h.namespace] = sandbox.host_problems(t, h, c.ns, c.db)
        if hosts[h.namespace]:
            remake.add(f"host:{h.namespace}")
    wanted = {lo.central_ns, lo.inet_ns, *(c.ns for c in lo.chassis), *(h.namespace for _, h in _hosts(t))}
    stale = [ns for ns in sandbox.lab_namespaces(lab) if ns not in wanted]
    return _Parts(central, internet, chassis, hosts, remake, stale)


def _remove_stale(lab: str, ns: str, dbs: list[str]) -> None:
    sandbox.remove_part(None, ns)
    for db in dbs:
        sandbox.unplug_host(lab, ns, db)


def netns_exists(name: str) -> bool:
    from ...kernel import netns

    return netns.exists(name) and not netns.is_placeholder(name)


def _stale_dirs(t) -> list[str]:
    """Run directories of chassis the file no longer names."""
    d = sandbox.lab_dir(t.name)
    keep = {"central", "internet", "hosts", *(c.name for c in t.ovn.sandbox.chassis)}
    return sorted(os.path.join(d, x) for x in (os.listdir(d) if os.path.isdir(d) else [])
                  if os.path.isdir(os.path.join(d, x)) and x not in keep)


# --------------------------------------------------------------------------- the plan


def plan_up(t) -> Plan:
    """The steps that take what this machine (and the NB) holds to topology `t`."""
    steps: list[Step] = []
    if t.ovn.sandbox is None:
        return Plan(t.name, list(_nb_steps(t.ovn.nb, t, nb_changes(t))))
    lo = sandbox.layout(t)
    lab = t.name
    p = _survey(t)

    def reason(problems: list[str]) -> str:
        return "missing" if problems and problems[0].startswith("namespace ") else "drift"

    # Take away what is stale or broken, the parts hanging on others first.
    for ns in p.stale:  # a host's namespace leaves its port on some chassis' br-int: remove it there too
        dbs = [c.db for c in lo.chassis if f"chassis:{c.name}" not in p.remake]
        steps.append(RemovePart(part=f"stale {ns}", where=None, reason="stale",
                                commands=(f"ip netns del {ns}",) + tuple(
                                    f"ovs-vsctl --db={db} --if-exists del-port br-int {sandbox.host_tap(ns)}"
                                    for db in dbs),
                                do=lambda ns=ns, dbs=dbs: _remove_stale(lab, ns, dbs)))
    for d in _stale_dirs(t):
        steps.append(RemovePart(part=f"stale {d}", reason="stale", commands=(f"rm -r {d}",),
                                do=lambda d=d: sandbox.remove_part(d, "", sandbox.CHASSIS_DAEMONS)))
    for n, h in _hosts(t):
        if f"host:{h.namespace}" in p.remake and netns_exists(h.namespace):
            c = lo.place(h.chassis)
            steps.append(RemovePart(part=f"host {h.namespace}", reason="drift",
                                    commands=(f"ip netns del {h.namespace}",),
                                    do=lambda h=h, c=c: sandbox.unplug_host(lab, h.namespace, None)))
    for c in lo.chassis:
        if f"chassis:{c.name}" in p.remake and (netns_exists(c.ns) or os.path.isdir(c.rundir)):
            steps.append(RemovePart(part=f"chassis {c.name}", reason="drift", commands=(
                f"kill $(cat {c.rundir}/*.pid)", f"ip netns del {c.ns}", f"rm -r {c.rundir}"),
                do=lambda c=c: sandbox.remove_part(c.rundir, c.ns, sandbox.CHASSIS_DAEMONS)))
    if "internet" in p.remake and netns_exists(lo.inet_ns):
        steps.append(RemovePart(part="internet", reason="drift", commands=(f"ip netns del {lo.inet_ns}",),
                                do=lambda: sandbox.remove_part(sandbox.internet_dir(lab), lo.inet_ns)))
    if "central" in p.remake and (netns_exists(lo.central_ns) or os.path.isdir(lo.central_dir)):
        steps.append(RemovePart(part="ovn-central", reason="drift", commands=(
            f"kill $(cat {lo.central_dir}/*.pid)", f"ip netns del {lo.central_ns}", f"rm -r {lo.central_dir}"),
            do=lambda: sandbox.remove_part(lo.central_dir, lo.central_ns, sandbox.CENTRAL_DAEMONS)))

    # Make what is missing, in order.
    if "central" in p.remake:
        steps.append(StartCentral(part="ovn-central", where=lo.central_ns, reason=reason(p.central),
                                  commands=tuple(sandbox.central_commands(lo)),
                                  do=lambda: sandbox.make_central(t, lo)))
    if "internet" in p.remake:
        steps.append(StartInternet(part="internet", where=lo.inet_ns, reason=reason(p.internet),
                                   commands=tuple(sandbox.internet_commands(t, lo)),
                                   do=lambda: sandbox.make_internet(t, lo)))
    for c in lo.chassis:
        if f"chassis:{c.name}" in p.remake:
            steps.append(StartChassis(part=f"chassis {c.name}", where=c.ns, reason=reason(p.chassis[c.name]),
                                      commands=tuple(sandbox.chassis_commands(lo, c)),
                                      do=lambda c=c: sandbox.make_chassis(t, lo, c)))
    # The NB: a fresh central has empty databases; else what the NB holds now.
    changes = nb.diff_empty(t) if "central" in p.remake else nb_changes(t, lo.nb_unix)
    steps += _nb_steps(lo.nb_unix, t, changes)
    for n, h in _hosts(t):
        if f"host:{h.namespace}" in p.remake:
            c = lo.place(h.chassis)
            steps.append(PlugHost(part=f"host {h.namespace}", where=h.namespace,
                                  reason=reason(p.hosts[h.namespace]),
                                  commands=tuple(sandbox.plug_commands(t, n, h, c.ns, c.db)),
                                  do=lambda n=n, h=h, c=c: sandbox.plug_host(t, n, h, c.ns, c.db)))
    return Plan(lab, steps)


def plan_down(lab: str) -> Plan:
    """The steps that remove everything of lab `lab` (from its name alone)."""
    steps: list[Step] = []
    d = sandbox.lab_dir(lab)
    remote = _recorded_remote(lab)
    for port in _recorded_ports(lab):
        steps.append(RemovePart(part=f"port {port['tap']}", reason="teardown", commands=(
            f"ovs-vsctl --db={port['db']} --if-exists del-port br-int {port['tap']}",),
            do=lambda port=port: sandbox.unplug_host(lab, port["ns"], port["db"])))
    if os.path.isdir(d):
        for sub in sorted(os.listdir(d)):
            rundir = os.path.join(d, sub)
            pids = [p for p in sandbox.daemon_pids(rundir, _daemon_names(rundir)).values() if p]
            if pids:
                steps.append(StopDaemons(part=sub, reason="teardown",
                                         commands=(f"kill {' '.join(map(str, pids))}",),
                                         do=lambda pids=pids: sandbox.stop_pids(pids)))
    for ns in sandbox.lab_namespaces(lab):
        steps.append(DeleteNetns(ns, reason="teardown"))
    if remote:  # last but the run directory, which keeps the remote until the rows are gone
        steps.append(RemoveNbRows(part="NB", reason="teardown", commands=(
            f"ovn-nbctl --db={remote} (delete every row with external_ids:{nb.LAB}={lab})",),
            do=lambda: _remove_rows(remote, lab)))
    if os.path.isdir(d) or steps:
        steps.append(RemoveRunDir(part=d, reason="teardown", commands=(f"rm -r {d}",),
                                  do=lambda: sandbox.down(lab)))
    return Plan(lab, steps)


def _daemon_names(rundir: str) -> list[str]:
    try:
        return sorted(f[:-4] for f in os.listdir(rundir) if f.endswith(".pid"))
    except OSError:
        return []


def _recorded_remote(lab: str) -> str | None:
    try:
        with open(os.path.join(sandbox.lab_dir(lab), REMOTE_FILE)) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _record_remote(lab: str, remote: str) -> None:
    os.makedirs(sandbox.lab_dir(lab), exist_ok=True)
    with open(os.path.join(sandbox.lab_dir(lab), REMOTE_FILE), "w") as fh:
        fh.write(remote + "\n")


def _ports_file(lab: str) -> str:
    return os.path.join(sandbox.lab_dir(lab), "attached.json")


def _recorded_ports(lab: str) -> list[dict]:
    try:
        with open(_ports_file(lab)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return []


def _record_ports(lab: str, ports: list[dict]) -> None:
    have = {(p["db"], p["tap"]): p for p in _recorded_ports(lab)}
    have.update({(p["db"], p["tap"]): p for p in ports})
    os.makedirs(sandbox.lab_dir(lab), exist_ok=True)
    tmp = _ports_file(lab) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(sorted(have.values(), key=lambda p: p["tap"]), fh)
    os.replace(tmp, _ports_file(lab))


def _remove_rows(remote: str, lab: str) -> None:
    try:
        api = nb.connect(remote)
    except Exception as exc:  # ovsdbapp raises a bare Exception when the server doesn't answer
        raise KernelError(f"the NB DB at {remote} does not answer ({exc}): the lab's namespaces and ports "
                          f"are removed, its NB rows are not; `natns down --lab {lab}` again once it answers, "
                          f"or remove {sandbox.lab_dir(lab)} to forget them") from None
    try:
        nb.remove(api, lab)
    finally:
        nb.close(api)


# --------------------------------------------------------------------------- the engine


@dataclass
class OvnStatus(Status):
    """`Status` of an OVN lab, with the active gateway chassis of each router."""

    #: router -> {"gateway_chassis": [...], "active": chassis or None, "note": why unknown}
    gateways: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**super().to_json(), "engine": "ovn", "gateways": self.gateways}


class OvnEngine(Engine):
    name = "ovn"

    def plan(self, lab: Lab, adopt: bool = False) -> Plan:
        require_root("plan")
        _no_adopt(adopt)
        return plan_up(lab.topology)

    def up(self, lab: Lab, progress=None, adopt: bool = False) -> Plan:
        require_root("up")
        _no_adopt(adopt)
        t = lab.topology
        with lab_lock(t.name):
            if t.ovn.sandbox is None:
                _record_remote(t.name, t.ovn.nb)
            p = plan_up(t)
            apply(p, progress)
            wrote = any(isinstance(s, WriteNb) for s in p.steps)
            if t.ovn.sandbox is not None:
                lo = sandbox.layout(t)
                if any(isinstance(s, StartChassis) for s in p.steps):
                    sandbox.wait_chassis(lo)
                sandbox.wait_bound(t, lo, sync=bool(p.steps))
            elif wrote:
                sandbox.nb_sync(t.ovn.nb)
        return p

    def down(self, name: str, progress=None) -> Plan:
        require_root("down")
        with lab_lock(name) as held, procs.recording() as stopped:
            p = plan_down(name)
            apply(p, progress)
            held.remove()
        p.stopped = stopped
        return p

    def status(self, lab: Lab) -> OvnStatus:
        require_root("status")
        return status(lab)

    def attach(self, lab: Lab, chassis: str, ovs_db: str, progress=None) -> Plan:
        require_root("attach")
        return attach(lab, chassis, ovs_db, progress)


def _no_adopt(adopt: bool) -> None:
    if adopt:
        raise UserError("--adopt is for the kernel engine; the OVN engine takes over no namespace")


# --------------------------------------------------------------------------- status


def _describe(c: nb.Change) -> str:
    fix = "; ".join(c.argv)
    if c.op == "create":
        return f"NB row {c.table} {c.key} is missing (deleted by hand?); fix: {fix}" if fix else \
            f"NB row {c.table} {c.key} is missing"
    if c.op == "update":
        return f"NB row {c.table} {c.key}: {c.column} differs from the file (edited by hand?)" + \
            (f"; fix: {fix}" if fix else "")
    return f"NB row {c.table} {c.key} is natns's but not in the file (left over)" + (f"; fix: {fix}" if fix else "")


def status(lab: Lab) -> OvnStatus:
    t = lab.topology
    up = lab._command("up")
    entries: list[NsStatus] = []

    def entry(name: str, role: str, problems: list[str]) -> None:
        if not problems:
            entries.append(NsStatus(name, role, "ok"))
        else:
            state = "missing" if problems[0].startswith("namespace ") else "drift"
            entries.append(NsStatus(name, role, state, problems, fix=up))

    gateways = {r.name: {"gateway_chassis": list(r.gateway_chassis), "active": None, "note": None}
                for r in t.routers}
    nb_ok = True
    if t.ovn.sandbox is not None:
        lo = sandbox.layout(t)
        p = _survey(t)
        entry(lo.central_ns, "ovn-central", p.central)
        entry(lo.inet_ns, "internet", p.internet)
        nb_ok = not p.central
        try:
            registered = sandbox.registered_chassis(lo) if not p.central else set()
        except KernelError:
            registered = set()
        for c in lo.chassis:
            probs = list(p.chassis[c.name])
            if not probs and c.name not in registered:
                probs.append(f"chassis {c.name} is not registered in the SB DB (ovn-controller not connected)")
            entry(c.ns, "chassis", probs)
        for _, h in _hosts(t):
            c = lo.place(h.chassis)
            probs = list(p.hosts[h.namespace])
            if p.chassis[c.name] and probs and not probs[0].startswith("namespace "):
                probs = [f"its chassis {c.name} is down"]
            if not probs:
                try:
                    bound = sandbox.port_installed(c, sandbox.host_tap(h.namespace))
                except KernelError:
                    bound = False
                if not bound:
                    probs.append(f"port {nb.host_port(t.name, h.namespace)} is not bound on chassis {c.name} "
                                 f"(Interface {sandbox.host_tap(h.namespace)} has no external_ids:ovn-installed)")
            entry(h.namespace, "host", probs)
        for ns in p.stale:
            entries.append(NsStatus(ns, "", "stale", ["left over from an earlier topology"], fix=up))
        if nb_ok:
            for r in t.routers:
                gateways[r.name]["active"] = sandbox.active_gateway(lo, nb.gateway_port(t.name, r.name))
        else:
            for g in gateways.values():
                g["note"] = "the central namespace (SB DB) is down"
    else:
        for g in gateways.values():
            g["note"] = "read from the SB DB, which natns knows only in the sandbox (ovn.nb mode)"
    if nb_ok:
        try:
            changes = nb_changes(t)
        except Exception as exc:  # the NB does not answer: say so
            entries.append(NsStatus("(northbound)", "nb", "missing", [f"the NB DB does not answer: {exc}"], fix=up))
        else:
            probs = [_describe(c) for c in changes if c.argv] or [_describe(c) for c in changes]
            entry("(northbound)", "nb", probs)
    return OvnStatus(t.name, entries, gateways=gateways)


# --------------------------------------------------------------------------- attach


def attach(lab: Lab, chassis: str, ovs_db: str, progress=None) -> Plan:
    """``natns attach FILE --chassis NAME``: plug the file's hosts of chassis NAME into the
    br-int of the OVS at `ovs_db` in the namespace natns runs in, bound to their logical ports."""
    t = lab.topology
    hosts = [(n, h) for n, h in _hosts(t) if h.chassis == chassis]
    if not hosts:
        raise UserError(f"{lab.file or t.name}: no host of the file is on chassis {chassis!r} "
                        f"(networks[].hosts[].chassis)")
    with lab_lock(t.name):
        steps: list[Step] = []
        for n, h in hosts:
            probs = sandbox.host_problems(t, h, None, ovs_db)
            if probs:
                steps.append(PlugHost(part=f"host {h.namespace}", where=h.namespace,
                                      reason="missing" if probs[0].startswith("namespace ") else "drift",
                                      commands=tuple(sandbox.plug_commands(t, n, h, None, ovs_db)),
                                      do=lambda n=n, h=h: sandbox.plug_host(t, n, h, None, ovs_db)))
        _record_ports(t.name, [{"db": ovs_db, "tap": sandbox.host_tap(h.namespace), "ns": h.namespace}
                               for _, h in hosts])
        p = Plan(t.name, steps)
        apply(p, progress)
        for _, h in hosts:
            tap = sandbox.host_tap(h.namespace)
            sandbox._wait(f"host {h.namespace}'s port to be bound", lambda: sandbox.installed(ovs_db, tap), 20)
    return p
