"""A running OVN sandbox lab, found from the kernel and its run directory alone.

What `natns conntrack`, `trace`, `doctor` and `capture` need on an OVN lab, read the
way an operator would: the lab's namespaces by their natns marks, its run directory
(/run/natns/ovn/<lab>/: databases, sockets, pidfiles, control sockets), and the SB and
each chassis' OVS database through `ovn-sbctl`/`ovs-vsctl --format=json` (argument
lists, no shell). `trace` and `doctor` take no topology file, so everything here works
from a lab name (which a host namespace's mark gives).

`decode_table` turns ovsdb's JSON table output into a list of dicts (sets to lists, maps
to dicts, UUIDs to strings); it is pure, and the unit tests feed it recorded outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ...errors import KernelError
from ...kernel import nsexec
from ...state import parse_ns_mark
from . import sandbox

#: Runs an argument list (a namespace or None, argv) and returns its stdout; tests replace it.
Runner = Callable[[str | None, Sequence[str]], str]


def run(ns: str | None, argv: Sequence[str], timeout: float = 10) -> str:
    """Run `argv` (no shell), in namespace `ns` if given; KernelError if it fails."""
    return sandbox._run(ns, argv, timeout=timeout)


def _atom(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
        kind, val = v
        if kind == "set":
            return [_atom(x) for x in val]
        if kind == "map":
            return {_atom(k): _atom(x) for k, x in val}
        if kind in ("uuid", "named-uuid"):
            return val
    return v


def decode_table(text: str) -> list[dict]:
    """Rows of ``ovn-sbctl/ovs-vsctl --format=json list|find TABLE`` output, as dicts."""
    d = json.loads(text)
    heads = d["headings"]
    return [{h: _atom(v) for h, v in zip(heads, row)} for row in d["data"]]


def one(v: Any) -> Any:
    """An optional column's value: ``[]`` (unset) -> None, ``x`` -> x."""
    if isinstance(v, list):
        return v[0] if v else None
    return v


@dataclass
class Chassis:
    """One chassis of the sandbox: its name, namespace, run directory."""

    name: str
    ns: str | None
    rundir: str

    @property
    def db(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    def pid(self, daemon: str) -> int | None:
        """The PID in `daemon`'s pidfile if that process is alive and names this run directory."""
        return _live_pid(self.rundir, daemon)

    def controller_ctl(self) -> str | None:
        """ovn-controller's control socket (``ovn-controller.<pid>.ctl``: it has no --unixctl)."""
        pid = self.pid("ovn-controller")
        path = os.path.join(self.rundir, f"ovn-controller.{pid}.ctl")
        return path if pid and os.path.exists(path) else None

    def vswitchd_ctl(self) -> str:
        return os.path.join(self.rundir, "ovs-vswitchd.ctl")


def _live_pid(rundir: str, daemon: str) -> int | None:
    try:
        with open(os.path.join(rundir, f"{daemon}.pid")) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
    except (OSError, ValueError):
        return None
    if (rundir + "/").encode() not in cmd or not sandbox._alive(pid):
        return None
    return pid


@dataclass
class Lab:
    """A running OVN sandbox lab: where its databases and chassis are."""

    name: str
    central_ns: str | None
    central_dir: str
    chassis: dict[str, Chassis] = field(default_factory=dict)
    namespaces: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> mark
    runner: Runner = field(default=run, repr=False)

    @property
    def sb(self) -> str:
        return f"unix:{self.central_dir}/sb.sock"

    @property
    def nb(self) -> str:
        return f"unix:{self.central_dir}/nb.sock"

    def sbctl(self, *args: str) -> str:
        return self.runner(None, ["ovn-sbctl", f"--db={self.sb}", "--timeout=5", *args])

    def sb_rows(self, table: str, *conditions: str) -> list[dict]:
        verb = ["find", table, *conditions] if conditions else ["list", table]
        return decode_table(self.sbctl("--format=json", *verb))

    def vsctl(self, ch: Chassis, *args: str) -> str:
        return self.runner(None, ["ovs-vsctl", f"--db={ch.db}", "--timeout=5", *args])

    def ovs_rows(self, ch: Chassis, table: str, *conditions: str) -> list[dict]:
        verb = ["find", table, *conditions] if conditions else ["list", table]
        return decode_table(self.vsctl(ch, "--format=json", *verb))

    def role(self, ns: str) -> str | None:
        m = self.namespaces.get(ns)
        return m[1] if m else None

    def host_namespaces(self) -> list[str]:
        return sorted(n for n, m in self.namespaces.items() if m[1] == "host")

    def internet_ns(self) -> str | None:
        return next((n for n, m in self.namespaces.items() if m[1] == "internet"), None)

    def chassis_of_ns(self, ns: str) -> Chassis | None:
        return next((c for c in self.chassis.values() if c.ns == ns), None)

    def sb_remote(self) -> str | None:
        """The SB DB's TCP remote on the underlay (what a chassis' ``ovn-remote`` must name)."""
        try:
            out = self.runner(None, ["ovs-appctl", "-t", os.path.join(self.central_dir, "ovsdb-sb.ctl"),
                                     "ovsdb-server/list-remotes"])
        except KernelError:
            return None
        for ln in out.split():
            if ln.startswith("ptcp:"):
                _, port, ip = ln.split(":", 2)
                return f"tcp:{ip}:{port}"
        return None


def lab_of(ns: str) -> str | None:
    """The lab whose OVN sandbox namespace `ns` is (by its mark and the lab's run directory)."""
    from ...observe import read_mark

    owner = parse_ns_mark(read_mark(ns))
    if owner is None or owner[1] not in sandbox.ROLES:
        return None
    return owner[0] if os.path.isdir(os.path.join(sandbox.lab_dir(owner[0]), "central")) else None


def _ns_inode(ns: str) -> tuple[int, int] | None:
    try:
        st = os.stat(nsexec.ns_path(ns))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pid_inode(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find(lab: str) -> Lab:
    """The running OVN sandbox of `lab`; KernelError if it has none."""
    from ...observe import marked_namespaces

    root = sandbox.lab_dir(lab)
    central = os.path.join(root, "central")
    if not os.path.isdir(central):
        raise KernelError(f"lab {lab} has no OVN sandbox running ({central} does not exist)")
    marks = {n: m for n, m in marked_namespaces(lab).items() if m[1] in sandbox.ROLES}
    chassis_ns = {_ns_inode(n): n for n, m in marks.items() if m[1] == "chassis"}
    central_ns = next((n for n, m in marks.items() if m[1] == "ovn-central"), None)
    out = Lab(lab, central_ns, central, namespaces=marks)
    for sub in sorted(os.listdir(root)):
        d = os.path.join(root, sub)
        if sub == "central" or not os.path.isdir(d):
            continue
        ns = None
        for daemon in ("ovs-vswitchd", "ovsdb-server", "ovn-controller"):
            pid = _live_pid(d, daemon)
            if pid and _pid_inode(pid) in chassis_ns:
                ns = chassis_ns[_pid_inode(pid)]
                break
        if ns is None and sub in marks:  # every daemon dead: the default namespace is the name
            ns = sub
        out.chassis[sub] = Chassis(sub, ns, d)
    return out


def find_by_namespace(ns: str) -> Lab | None:
    """The running OVN sandbox lab that namespace `ns` belongs to, or None (not an OVN lab)."""
    lab = lab_of(ns)
    return find(lab) if lab else None


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run in namespace `ns`, as a command a user can paste (``ip netns exec``)."""
    return ["ip", "netns", "exec", ns, *argv]


def daemon_env(rundir: str) -> list[str]:
    """``env VAR=DIR ...`` for a daemon of a chassis (its OVS and OVN run directories)."""
    return ["env", *[f"{v}={rundir}" for v in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR",
                                               "OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR")]]


def controller_argv(ch: Chassis) -> list[str]:
    """The command that starts `ch`'s ovn-controller as the sandbox does (no shell)."""
    r = ch.rundir
    return ns_argv(ch.ns or ch.name, [*daemon_env(r), "ovn-controller", ch.db, f"--pidfile={r}/ovn-controller.pid",
                                      f"--log-file={r}/ovn-controller.log", "--detach"])


def vswitchd_argv(ch: Chassis) -> list[str]:
    """The command that starts `ch`'s ovs-vswitchd as the sandbox does (no shell)."""
    r = ch.rundir
    return ns_argv(ch.ns or ch.name, [*daemon_env(r), "ovs-vswitchd", ch.db, f"--unixctl={r}/ovs-vswitchd.ctl",
                                      f"--pidfile={r}/ovs-vswitchd.pid", f"--log-file={r}/ovs-vswitchd.log",
                                      "--detach"])


def capture_output(argv: Sequence[str], timeout: float = 10) -> subprocess.CompletedProcess:
    """Run `argv` (no shell) and return the completed process, whatever its status."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
