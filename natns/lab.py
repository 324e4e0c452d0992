"""The Python API: everything the CLI does, as functions and one class.

    from natns import Lab

    lab = Lab.from_file("examples/seed.yaml")
    print(lab.plan().steps)      # what `up` would do
    lab.up()                     # create or converge
    print(lab.status().ok)       # True when the kernel matches the file
    lab.down()                   # remove exactly what natns made

`down_lab(name)` and `labs()` work from the kernel's marks alone, with no file.
"""

from __future__ import annotations

import os
import secrets
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import firewall, locks, topology
from .apply import Progress, apply
from .desired import desired_state
from .errors import TopologyError
from .privileges import require_root  # noqa: F401  (lab.require_root: kept importable)
from .kernel import netns, procs
from .marks import ns_mark, parse_ns_mark
from .observe import Orphaned, labs_by_mark, marked_namespaces, observe_lab, observe_lab_host, orphaned_peer, read_mark
from .plan import Foreign, Plan, plan_down, plan_up
from .state import DesiredNs, LabState, ObservedLab, ObservedNs
from .steps import (
    FIREWALL_STEPS,
    AddRoute,
    CreateNetns,
    DeleteNetns,
    FlushConntrack,
    ForgetConntrack,
    SetSysctl,
    Step,
)

LOCK_DIR = "/run/natns/labs"  # LAB.lock, while the lab exists (down removes it); apart from trace.lock


@contextmanager
def lab_lock(lab: str):
    """Hold an exclusive lock for `lab` so two `up`/`down` runs don't interleave; yields a
    `locks.Held` whose `remove()` (by `down`, when done) deletes the lock file safely."""
    with locks.exclusive(os.path.join(LOCK_DIR, f"{lab}.lock")) as held:
        yield held


@dataclass
class NsStatus:
    """How one namespace compares with the topology."""

    name: str
    role: str
    state: str  # ok | missing | drift | stale | foreign
    problems: list[str] = field(default_factory=list)
    #: The one command that mends what is wrong here (``natns up FILE``, ``natns up --adopt
    #: FILE``), None when it is ok or only a person can decide (another lab's namespace).
    fix: str | None = None
    #: What `up` refuses here (state "foreign"): Foreign.to_json() of each.
    foreign: list[dict] = field(default_factory=list)
    #: A missing namespace deleted while processes still hold it: {"pid", "command"} of each.
    held_by: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"namespace": self.name, "role": self.role, "state": self.state, "problems": self.problems,
                "fix": self.fix, "foreign": self.foreign, "held_by": self.held_by}


@dataclass
class Status:
    """The lab as found, compared with its topology."""

    lab: str
    namespaces: list[NsStatus]

    @property
    def ok(self) -> bool:
        return all(n.state == "ok" for n in self.namespaces)

    def to_json(self) -> dict:
        return {"lab": self.lab, "ok": self.ok, "namespaces": [n.to_json() for n in self.namespaces]}


@dataclass
class RuleCheck:
    """Whether the kernel would load the rules natns renders for one namespace."""

    namespace: str  # the lab namespace, or "(host)" for an `uplink: host` lab's rules there
    checked_in: str  # the namespace the checker ran in: that one, or a scratch namespace
    error: str | None = None  # the checker's message; None: the rules load

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "checked_in": self.checked_in, "ok": self.ok, "error": self.error}


class Lab:
    """A lab described by a topology: plan it, bring it up, inspect it, take it down."""

    def __init__(self, topology: topology.Topology, file: str | None = None):
        self.topology = topology
        self.file = file

    @classmethod
    def from_file(cls, path: str) -> "Lab":
        """Load and validate the topology file at `path` (raises TopologyError)."""
        return cls(topology.load(path), path)

    @property
    def name(self) -> str:
        return self.topology.name

    def desired(self) -> LabState:
        """The state the topology asks for (kernel engine)."""
        if self.topology.engine != "kernel":
            raise TopologyError(self.file or "<topology>", "engine",
                                f"{self.topology.engine}: the kernel engine's state is not this lab's; "
                                "natns up/plan/down/status run it through natns.engines.for_topology "
                                "(see docs/ovn.md)")
        return desired_state(self.topology)

    def observe(self, desired: LabState | None = None) -> ObservedLab:
        """The lab's state as the kernel holds it (with `desired`, the sysctls read are the
        ones it wants: see observe.observe_many)."""
        require_root("needs to read namespaces and")
        uplink = any(r.external.uplink == "host" for r in self.topology.routers)
        wanted = None if desired is None else {n: tuple(d.sysctls) for n, d in desired.namespaces.items()}
        return observe_lab(self.name, self.topology.backend, self.topology.namespaces(),
                           uplink_wanted=uplink, sysctls=wanted)

    def plan(self, adopt: bool = False) -> Plan:
        """The steps `up` would run now (with `adopt`: `up(adopt=True)`)."""
        require_root("plan")
        return self._plan(self.desired(), adopt=adopt)

    def _plan(self, desired: LabState, adopt: bool = False) -> Plan:
        """plan_up of `desired` against the kernel, with the topology's backend (and every
        backend's rules read and, if they aren't the topology's, removed)."""
        return plan_up(desired, self.observe(desired), firewall.get_backend(desired.backend), adopt=adopt,
                       others=firewall.backends())

    def up(self, progress: Progress | None = None, adopt: bool = False) -> Plan:
        """Create or converge the lab; returns the plan that was applied (empty: no change).

        A namespace the topology names that exists but wasn't made by natns
        is refused (ForeignObjectError) unless `adopt`: then it is marked as
        this lab's and converged like the others (and `down` removes it).
        """
        require_root("up")
        with lab_lock(self.name):
            plan = self.plan(adopt=adopt)
            apply(plan, progress)
        return plan

    def check_rules(self) -> list[RuleCheck]:
        """Ask the kernel's own checker whether the rules natns renders for each namespace load.

        nftables: ``nft -c`` (libnftables' dry run of the very transaction `up`
        sends); iptables: ``iptables-restore --noflush --test``. Either runs in
        the lab's namespace when it exists (changing nothing there), else in a
        scratch namespace natns makes for the check and removes after it (marked
        as this lab's, so `down` would remove it if natns were killed meanwhile).
        The host's rules (``uplink: host``) are checked in the scratch namespace.
        """
        require_root("plan --check")
        desired = self.desired()
        backend = firewall.get_backend(desired.backend)
        wanted = [(name, d.firewall) for name, d in desired.namespaces.items() if d.firewall is not None]
        if desired.host is not None and desired.host.firewall is not None:
            wanted.append((None, desired.host.firewall))
        out: list[RuleCheck] = []
        scratch: str | None = None
        with lab_lock(self.name) as held:
            try:
                for name, intent in wanted:
                    ruleset = backend.render(intent)
                    if name is not None and netns.exists(name) and _mark_owner(name) == self.name:
                        where = name
                    else:
                        if scratch is None:
                            scratch = _scratch_namespace(self.name)
                        where = scratch
                    out.append(RuleCheck(name or "(host)", where, backend.check(where, ruleset)))
            finally:
                if scratch is not None:
                    netns.remove(scratch)
                if not marked_namespaces(self.name):  # checked a lab that isn't up: leave no lock file
                    held.remove()
        return out

    def down(self, progress: Progress | None = None) -> Plan:
        """Remove everything natns made for this lab; returns the steps run."""
        return down_lab(self.name, progress)

    def status(self) -> Status:
        """Compare the kernel with the topology: what is ok, missing, drifted, stale or foreign.

        Nothing is refused here: what `up` would refuse (a namespace or link that exists
        but isn't this lab's) is reported as state "foreign", with what `up --adopt`
        would do about it. A missing namespace that was deleted while a process still
        holds it (its links live on, paired with the lab's) says so, with those
        processes; the steps `up` takes in other namespaces to re-make its links are
        its, not theirs. Firewall drift names the chains, rules and map elements that
        differ (the backend's `describe_drift`); every fix is a command to run.
        """
        require_root("status")
        desired = self.desired()
        observed = self.observe(desired)
        backend = firewall.get_backend(desired.backend)
        foreign: list[Foreign] = []
        plan = plan_up(desired, observed, backend, others=firewall.backends(), foreign=foreign)
        up = self._command("up")
        by_ns: dict[str | None, list[Step]] = {}
        for step in plan.steps:
            key = step.name if isinstance(step, (CreateNetns, DeleteNetns)) else step.ns
            by_ns.setdefault(key, []).append(step)
        missing = {s.name for s in plan.steps if isinstance(s, CreateNetns)}
        orphans = {name: _orphans(desired.namespaces[name], observed, missing) for name in missing}
        # Steps on a surviving end of a held namespace's pair belong to that namespace.
        absorbed = {(o.namespace, o.link) for found in orphans.values() for o in found}
        foreign_in: dict[str | None, list[Foreign]] = {}
        for f in foreign:
            foreign_in.setdefault(f.namespace if f.kind == "link" else f.name, []).append(f)

        def steps_of(key: str | None) -> list[Step]:
            a = observed.namespaces.get(key) if key is not None else observed.host
            have = set(a.routes) if a is not None and a.exists else set()
            return [s for s in by_ns.get(key, []) if (s.ns, s.target) not in absorbed
                    and not (isinstance(s, AddRoute) and s.route in have)]  # re-added with a link only

        out = []
        for name, d in desired.namespaces.items():
            found = foreign_in.get(name, [])
            steps = steps_of(name)
            if any(f.kind in ("namespace", "file") for f in found):
                (f,) = [f for f in found if f.kind in ("namespace", "file")]
                n = len(by_ns.get(name, []))
                out.append(NsStatus(name, d.role, "foreign", [_foreign_text(f, self._command, n)],
                                    fix=self._command("up", "--adopt") if f.adoptable else None,
                                    foreign=[_foreign_json(f)]))
            elif name in missing:
                problems = ["namespace does not exist"] + _orphan_text(name, orphans[name], up)
                held = {h.pid: h for o in orphans[name] for h in o.holders}
                out.append(NsStatus(name, d.role, "missing", problems, fix=up,
                                    held_by=[h.to_json() for _, h in sorted(held.items())]))
            elif found or steps:
                problems = [_foreign_text(f, self._command) for f in found]
                problems += _problems(steps, d, observed.namespaces.get(name), backend, up)
                # up refuses while a foreign link is there: no one command mends it then
                out.append(NsStatus(name, d.role, "foreign" if found else "drift", problems,
                                    fix=up if steps and not found else None,
                                    foreign=[_foreign_json(f) for f in found]))
            else:
                out.append(NsStatus(name, d.role, "ok"))
        host_steps = steps_of(None)
        host_foreign = foreign_in.get(None, [])
        if desired.host is not None or host_steps or host_foreign:
            want = desired.host or DesiredNs(name=None, mark=None, role="host")
            problems = [_foreign_text(f, self._command) for f in host_foreign]
            problems += _problems(host_steps, want, observed.host, backend, up)
            state = "foreign" if host_foreign else "drift" if host_steps else "ok"
            out.append(NsStatus("(host)", "uplink", state, problems,
                                fix=up if host_steps and not host_foreign else None,
                                foreign=[_foreign_json(f) for f in host_foreign]))
        for step in plan.steps:
            if isinstance(step, DeleteNetns):
                out.append(NsStatus(step.name, "", "stale", ["left over from an earlier topology"], fix=up))
        return Status(self.name, out)

    def _command(self, verb: str, *options: str) -> str:
        """``natns VERB [OPTIONS] FILE``, the file as this lab was read from (quoted for a shell)."""
        return " ".join(["natns", verb, *options, shlex.quote(self.file) if self.file else "FILE"])


def _orphans(d: DesiredNs, observed: ObservedLab, missing: set[str]) -> list[Orphaned]:
    """For missing namespace `d`: the other ends of its veth pairs that still exist and lead
    into a namespace without a name (it was deleted while something holds it open)."""
    out = []
    for want in d.links.values():
        if want.kind != "veth" or want.peer_ns in missing:
            continue
        a = observed.namespaces.get(want.peer_ns) if want.peer_ns is not None else observed.host
        if a is None or not a.exists or want.peer_name not in a.links:
            continue
        found = orphaned_peer(want.peer_ns, want.peer_name)
        if found is not None:
            out.append(found)
    return out


def _orphan_text(name: str, orphans: list[Orphaned], up: str) -> list[str]:
    if not orphans:
        return []
    holders = {h.pid: h for o in orphans for h in o.holders}
    if holders:
        who = "process" + ("es" if len(holders) > 1 else "") + " " + ", ".join(
            f"{pid} ({h.command})" for pid, h in sorted(holders.items()))
        held = f"deleted (ip netns del) while still held open by {who}"
    else:
        held = ("deleted (ip netns del) while still held open, by no process's network namespace "
                "(a bind mount elsewhere, or an open file descriptor)")
    ends = ", ".join(f"{o.link} in {o.namespace or 'the namespace natns runs in'}" for o in orphans)
    problems = [f"{held}: it lives on without a name, and the other end of its link(s) ({ends}) still "
                f"leads into it"]
    kill = f"; its processes stay there until they end: kill {' '.join(map(str, sorted(holders)))}" \
        if holders else ""
    problems.append(f"fix: {up} (makes namespace {name} again and its link(s): deletes {ends}, which takes "
                    f"the old pair(s) along, then makes the pair(s) again with their addresses and routes"
                    f"{kill})")
    return problems


def _foreign_json(f: Foreign) -> dict:
    return {"object": f.kind, "namespace": f.namespace, "name": f.name, "detail": f.message,
            "adoptable": f.adoptable, "owner": f.owner, "alias": f.alias}


def _foreign_text(f: Foreign, command, steps: int = 0) -> str:
    """What status says of something `up` refuses, and what would take care of it."""
    if f.kind == "file":
        return (f"foreign: /run/netns/{f.name} exists and is not a network namespace (nothing is mounted "
                f"on it, and natns didn't leave it); natns won't replace it: remove it or use another name")
    if f.kind == "namespace":
        if f.adoptable:
            return (f"foreign: namespace {f.name} exists but natns didn't make it (its lo carries no natns "
                    f"mark); `{command('up', '--adopt')}` would take it over: mark it as this lab's and "
                    f"converge it ({steps} step(s); `{command('plan', '--adopt')}` lists them), and `down` "
                    f"would then remove it; or remove it (ip netns del {f.name})")
        if f.owner:
            return (f"foreign: namespace {f.name} belongs to natns lab {f.owner!r}, not this one; natns never "
                    f"takes it over: `natns down --lab {f.owner}` removes that lab, or use another name")
        return f"foreign: {f.message}"
    where = f"namespace {f.namespace}" if f.namespace else "the namespace natns runs in"
    ip = f"ip -n {f.namespace}" if f.namespace else "ip"
    if f.owner:
        has = f"its alias {f.alias!r} is natns lab {f.owner!r}'s mark"
    elif f.alias:
        has = f"its alias {f.alias!r} is not natns's mark"
    else:
        has = "it has no alias, and is not as natns leaves a link it is making"
    text = (f"foreign: link {f.name} in {where} exists but natns didn't make it ({has}); `up` won't touch it "
            f"(`--adopt` takes over namespaces, never links): remove it ({ip} link del {f.name}; "
            f"`{command('up')}` then makes it again)")
    if f.mark and f.same_kind and not f.owner:
        text += f", or, if it is natns's own, give it back its mark ({ip} link set {f.name} alias {shlex.quote(f.mark)})"
    return text


def _problem(step: Step) -> str:
    what = {"missing": "missing", "drift": "drifted", "stale": "left over"}.get(step.reason, step.reason)
    fix = step.command()
    if isinstance(step, SetSysctl):
        return f"{step.key} {what} (want {step.value}); fix: {fix}"
    return f"{what}: {fix}"


def _problems(steps: list[Step], d: DesiredNs, a: ObservedNs | None, backend, up: str) -> list[str]:
    """The problems of one namespace that exists: a line per step, but the firewall's steps
    as one description of what differs (`describe_drift`) with `natns up FILE` as the fix."""
    fw = [s for s in steps if isinstance(s, (*FIREWALL_STEPS, FlushConntrack, ForgetConntrack))]
    out = [_problem(s) for s in steps if s not in fw]
    if fw:
        out += _firewall_problems(fw, d, a, backend, up)
    return out


def _firewall_problems(steps: list[Step], d: DesiredNs, a: ObservedNs | None, backend, up: str) -> list[str]:
    have = a.firewalls if a is not None else {}
    lines = []
    if d.firewall is not None:
        want = backend.render(d.firewall)
        old = have.get(backend.name)
        lines += [f"firewall ({backend.name}): {x}" for x in backend.describe_drift(old, want)]
    for other in sorted(have):
        if other != backend.name or d.firewall is None:
            lines.append(f"firewall ({other}): natns's rules are there, but the file wants "
                         + (f"{backend.name} rules" if d.firewall is not None else "none here"))
    if not lines:  # nothing differs in the rules themselves: say what the steps are for
        lines = [f"firewall: {s.reason}: {s.command()}" for s in steps]
    lines[-1] += f"; fix: {up}"
    return lines


def _mark_owner(name: str) -> str | None:
    owner = parse_ns_mark(read_mark(name))
    return owner[0] if owner else None


def _scratch_namespace(lab: str) -> str:
    """A new empty namespace for checking rules in, marked as `lab`'s (role "check")."""
    from .kernel import link

    name = f"natnsck-{secrets.token_hex(3)}"
    mark = ns_mark(lab, "check", name)
    h = netns.create_open(name, mark=mark)
    try:
        link.configure(h, "lo", alias=mark, up=True)
    finally:
        h.close()
    return name


def down_lab(lab: str, progress: Progress | None = None) -> Plan:
    """Remove every namespace marked for `lab` (and with it what natns put inside).

    Processes running inside those namespaces are stopped first (SIGTERM, then
    SIGKILL); the returned plan's `stopped` lists them (`kernel.procs.Stopped`)."""
    require_root("down")
    with lab_lock(lab) as held, procs.recording() as stopped:
        # Read-only look at the host: the lab's uplink links, forwarding and
        # uplink firewall scope (read even without links, in case a hand
        # removed them and left the rules).
        host = observe_lab_host(lab, uplink_wanted=True)
        plan = plan_down(lab, sorted(marked_namespaces(lab)) + _leftover_files(lab), host)
        apply(plan, progress)
        held.remove()  # the lab is gone: so is its lock file (a waiter retries on a new one)
    plan.stopped = stopped  # the processes that ran in the removed namespaces (kernel.procs.Stopped)
    return plan


def _leftover_files(lab: str) -> list[str]:
    """Files under /run/netns that a natns killed while making or removing a namespace of
    `lab` left (not namespaces: nothing is mounted on them; they hold the lab's mark)."""
    out = []
    for name in netns.list_names():
        owner = parse_ns_mark(netns.placeholder_mark(name))
        if owner and owner[0] == lab:
            out.append(name)
    return sorted(out)


def labs() -> dict[str, list[tuple[str, str]]]:
    """Labs present in the kernel: lab name -> [(namespace, role)], from marks alone."""
    require_root("status")
    return labs_by_mark()
