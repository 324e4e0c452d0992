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
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import firewall, locks, topology
from .apply import Progress, apply
from .desired import desired_state
from .errors import TopologyError
from .privileges import require_root  # noqa: F401  (lab.require_root: kept importable)
from .kernel import netns, procs
from .marks import ns_mark, parse_ns_mark
from .observe import marked_namespaces, observe_lab, observe_lab_host, read_mark
from .plan import Plan, plan_down, plan_up
from .state import LabState, ObservedLab
from .steps import CreateNetns, DeleteNetns, SetSysctl, Step

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
    state: str  # ok | missing | drift | stale
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"namespace": self.name, "role": self.role, "state": self.state, "problems": self.problems}


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
                                "ovn is not run by natns up/plan/status yet; bring the sandbox up with "
                                "`python -m natns.engines.ovn up FILE` (see docs/ovn.md)")
        return desired_state(self.topology)

    def observe(self) -> ObservedLab:
        """The lab's state as the kernel holds it."""
        require_root("needs to read namespaces and")
        uplink = any(r.external.uplink == "host" for r in self.topology.routers)
        return observe_lab(self.name, self.topology.backend, self.topology.namespaces(),
                           uplink_wanted=uplink)

    def plan(self, adopt: bool = False) -> Plan:
        """The steps `up` would run now (with `adopt`: `up(adopt=True)`)."""
        require_root("plan")
        return self._plan(self.desired(), adopt=adopt)

    def _plan(self, desired: LabState, adopt: bool = False) -> Plan:
        """plan_up of `desired` against the kernel, with the topology's backend (and every
        backend's rules read and, if they aren't the topology's, removed)."""
        return plan_up(desired, self.observe(), firewall.get_backend(desired.backend), adopt=adopt,
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
        with lab_lock(self.name):
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
        return out

    def down(self, progress: Progress | None = None) -> Plan:
        """Remove everything natns made for this lab; returns the steps run."""
        return down_lab(self.name, progress)

    def status(self) -> Status:
        """Compare the kernel with the topology: what is ok, missing, drifted or stale."""
        require_root("status")
        desired = self.desired()
        plan = self._plan(desired)
        by_ns: dict[str | None, list[Step]] = {}
        for step in plan.steps:
            key = step.name if isinstance(step, (CreateNetns, DeleteNetns)) else step.ns
            by_ns.setdefault(key, []).append(step)
        out = []
        for name, d in desired.namespaces.items():
            steps = by_ns.get(name, [])
            if any(isinstance(s, CreateNetns) for s in steps):
                out.append(NsStatus(name, d.role, "missing", ["namespace does not exist"]))
            elif steps:
                out.append(NsStatus(name, d.role, "drift", [_problem(s) for s in steps]))
            else:
                out.append(NsStatus(name, d.role, "ok"))
        host_steps = by_ns.get(None, [])
        if desired.host is not None or host_steps:
            out.append(NsStatus("(host)", "uplink", "drift" if host_steps else "ok",
                                [_problem(s) for s in host_steps]))
        for step in plan.steps:
            if isinstance(step, DeleteNetns):
                out.append(NsStatus(step.name, "", "stale", ["left over from an earlier topology"]))
        return Status(self.name, out)


def _problem(step: Step) -> str:
    what = {"missing": "missing", "drift": "drifted", "stale": "left over"}.get(step.reason, step.reason)
    fix = step.command()
    if isinstance(step, SetSysctl):
        return f"{step.key} {what} (want {step.value}); fix: {fix}"
    return f"{what}: {fix}"


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
    out: dict[str, list[tuple[str, str]]] = {}
    for name, (lab, role, _) in marked_namespaces().items():
        out.setdefault(lab, []).append((name, role))
    return out
