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

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import firewall, topology
from .apply import Progress, apply
from .desired import desired_state
from .privileges import require_root  # noqa: F401  (lab.require_root: kept importable)
from .kernel import netns
from .observe import marked_namespaces, observe_lab, observe_lab_host
from .plan import Plan, plan_down, plan_up
from .state import LabState, parse_ns_mark

LOCK_DIR = "/run/natns"


@contextmanager
def lab_lock(lab: str):
    """Hold an exclusive lock for `lab` so two `up`/`down` runs don't interleave."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(os.path.join(LOCK_DIR, f"{lab}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
        """The state the topology asks for."""
        return desired_state(self.topology)

    def observe(self) -> LabState:
        """The lab's state as the kernel holds it."""
        require_root("needs to read namespaces and")
        uplink = any(r.external.uplink == "host" for r in self.topology.routers)
        return observe_lab(self.name, self.topology.backend, self.topology.namespaces(),
                           uplink_wanted=uplink)

    def plan(self, adopt: bool = False) -> Plan:
        """The steps `up` would run now (with `adopt`: `up(adopt=True)`)."""
        require_root("plan")
        desired = self.desired()
        backend = firewall.get_backend(desired.backend)
        return plan_up(desired, self.observe(), backend.render, adopt=adopt)

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

    def down(self, progress: Progress | None = None) -> Plan:
        """Remove everything natns made for this lab; returns the steps run."""
        return down_lab(self.name, progress)

    def status(self) -> Status:
        """Compare the kernel with the topology: what is ok, missing, drifted or stale."""
        require_root("status")
        desired = self.desired()
        plan = plan_up(desired, self.observe(), firewall.get_backend(desired.backend).render)
        by_ns: dict[str, list] = {}
        for step in plan.steps:
            key = step.target if step.action in ("create_netns", "delete_netns") else step.ns
            by_ns.setdefault(key, []).append(step)
        out = []
        for name, d in desired.namespaces.items():
            steps = by_ns.get(name, [])
            if any(s.action == "create_netns" for s in steps):
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
            if step.action == "delete_netns":
                out.append(NsStatus(step.target, "", "stale", ["left over from an earlier topology"]))
        return Status(self.name, out)


def _problem(step) -> str:
    what = {"missing": "missing", "drift": "drifted", "stale": "left over"}.get(step.reason, step.reason)
    fix = step.command()
    if step.action == "set_sysctl":
        return f"{step.target} {what} (want {step.args[0]}); fix: {fix}"
    return f"{what}: {fix}"


def down_lab(lab: str, progress: Progress | None = None) -> Plan:
    """Remove every namespace marked for `lab` (and with it what natns put inside)."""
    require_root("down")
    with lab_lock(lab):
        # Read-only look at the host: the lab's uplink links, forwarding and
        # uplink firewall scope (read even without links, in case a hand
        # removed them and left the rules).
        host = observe_lab_host(lab, uplink_wanted=True)
        plan = plan_down(lab, sorted(marked_namespaces(lab)) + _leftover_files(lab), host)
        apply(plan, progress)
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
