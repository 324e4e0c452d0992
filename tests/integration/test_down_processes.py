"""`natns down` stops the processes inside the namespaces it removes (issue 16 item 3):
SIGTERM, then SIGKILL after a short grace, by pidfd; it says so, and `--json` lists them.
Processes of the main namespace and of a namespace natns didn't make are never touched."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from natns.kernel import procs

from .labs import existing, lab_namespaces, seed, write
from .reliability_tools import ROOT, run_natns

pytestmark = pytest.mark.root


def _net_ns(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ignores_term(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


class Started:
    """Processes the test starts; all are killed (by PID) and reaped at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.fds: dict[int, int] = {}

    def start(self, argv: list[str], ns: str | None, program: str, ignore_term: bool = False) -> subprocess.Popen:
        p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        self.fds[p.pid] = os.pidfd_open(p.pid)
        want = _net_ns(f"/run/netns/{ns}") if ns else _net_ns("/proc/self/ns/net")
        deadline = time.monotonic() + 20
        while True:  # until it runs `program` in the namespace (nsenter has exec'd), trap set
            try:
                with open(f"/proc/{p.pid}/cmdline", "rb") as fh:
                    argv0 = fh.read().split(b"\0")[0].decode()
                ready = (_net_ns(f"/proc/{p.pid}/ns/net") == want and os.path.basename(argv0) == program
                         and (not ignore_term or _ignores_term(p.pid)))
            except OSError:
                ready = False
            if ready:
                return p
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline, f"{argv} did not start in {ns}"
            time.sleep(0.05)

    def gone(self, p: subprocess.Popen) -> bool:
        """Whether `p` has exited (its pidfd is readable), without reaping it."""
        return bool(select.select([self.fds[p.pid]], [], [], 0)[0])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            p.stderr.close()
        for fd in self.fds.values():
            os.close(fd)


@pytest.fixture
def started():
    s = Started()
    yield s
    s.close()


@pytest.fixture
def lab_file(uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    yield data, path
    run_natns("down", "--lab", data["name"])
    assert existing(lab_namespaces(data)) == []


def natns_exec(ns: str, *command: str) -> list[str]:
    return [sys.executable, "-m", "natns.cli", "exec", ns, "--", *command]


def test_down_stops_what_runs_in_its_namespaces_and_nothing_else(uid, lab_file, started, scratch_ns):
    data, path = lab_file
    tenant, inet = f"t{uid}-tenant1", f"t{uid}-inet"
    assert run_natns("up", path).returncode == 0
    polite = started.start(natns_exec(tenant, "sleep", "60"), tenant, "sleep")
    stubborn = started.start(natns_exec(inet, "sh", "-c", 'trap "" TERM; sleep 60'), inet, "sh",
                             ignore_term=True)
    main_ns = started.start(["sleep", "60"], None, "sleep")
    foreign = scratch_ns("foreign")
    outsider = started.start(["nsenter", f"--net=/run/netns/{foreign}", "--", "sleep", "60"], foreign, "sleep")

    t0 = time.monotonic()
    res = run_natns("down", "--json", path)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)

    # Both lab processes are gone: the polite one by SIGTERM, the one ignoring it by SIGKILL.
    assert started.gone(polite) and started.gone(stubborn)
    assert polite.wait(5) == -signal.SIGTERM
    assert stubborn.wait(5) == -signal.SIGKILL
    assert took >= procs.GRACE  # the stubborn one had its grace before SIGKILL
    assert existing(lab_namespaces(data)) == []
    by_pid = {s["pid"]: s for s in out["stopped"]}
    assert by_pid[polite.pid] == {"pid": polite.pid, "namespace": tenant, "command": "sleep 60", "signal": "SIGTERM"}
    assert by_pid[stubborn.pid]["namespace"] == inet
    assert by_pid[stubborn.pid]["signal"] == "SIGKILL"
    assert by_pid[stubborn.pid]["command"].split()[0] in ("sh", "sleep")  # sh may exec its last command
    # sh's own child (if it forked one) ran in inet too, ignoring SIGTERM as well.
    assert {s["namespace"] for s in out["stopped"]} == {tenant, inet}
    assert all(s["signal"] == "SIGKILL" for s in out["stopped"] if s["namespace"] == inet)
    assert not any(os.path.exists(f"/proc/{s['pid']}") and _net_ns(f"/proc/{s['pid']}/ns/net")
                   for s in out["stopped"] if s["pid"] not in (polite.pid, stubborn.pid))

    # Untouched: a process of the main namespace, and one in a namespace natns didn't make.
    assert main_ns.poll() is None and not started.gone(main_ns)
    assert outsider.poll() is None and not started.gone(outsider)
    assert existing([foreign]) == [foreign]
    assert {main_ns.pid, outsider.pid}.isdisjoint(by_pid)


def test_down_says_how_many_it_stopped(uid, lab_file, started):
    data, path = lab_file
    tenant = f"t{uid}-tenant1"
    assert run_natns("up", path).returncode == 0
    p = started.start(natns_exec(tenant, "sleep", "60"), tenant, "sleep")
    res = run_natns("down", path)
    assert res.returncode == 0, res.stderr
    assert f"stopped 1 process in {tenant} (sleep)" in res.stdout, res.stdout
    assert p.wait(5) == -signal.SIGTERM
    # Nothing running: nothing said about processes, and --json lists none.
    assert run_natns("up", path).returncode == 0
    res = run_natns("down", "--json", path)
    assert res.returncode == 0 and json.loads(res.stdout)["stopped"] == []
    assert run_natns("up", path).returncode == 0
    res = run_natns("down", path)
    assert res.returncode == 0 and "stopped" not in res.stdout, res.stdout


def test_the_namespace_natns_runs_in_and_pid_1s_are_never_signalled(started):
    """Asked for the main namespace (or any path naming it), stop_processes stops nothing."""
    me = started.start(["sleep", "60"], None, "sleep")
    assert procs.pids_in("/proc/self/ns/net") == []
    assert procs.pids_in("/proc/1/ns/net") == []
    assert procs.stop_processes(f"/proc/{me.pid}/ns/net", "main") == []
    assert me.poll() is None
    # Not a namespace at all (a plain file, like a placeholder under /run/netns): nothing.
    assert procs.stop_processes("/etc/hostname", "x") == []


@pytest.mark.parametrize("session", [False, True])
def test_a_process_started_while_stopping_is_stopped_too(scratch_ns, started, session):
    """A shell that answers SIGTERM by starting another process: that one (born after
    the namespace was read) is found by the next look and stopped as well. Outside and
    inside a `recording()` (the latter is what `down` uses)."""
    ns = scratch_ns("fork")
    path = f"/run/netns/{ns}"
    sh = started.start(["nsenter", f"--net={path}", "--", "sh", "-c",
                        'trap "sleep 60 & echo \\$! >&2" TERM; while :; do sleep 0.05; done'], ns, "sh")
    if session:
        with procs.recording() as got:
            stopped = procs.stop_in_netns(ns)
        assert got == stopped
    else:
        stopped = procs.stop_in_netns(ns)
    assert sh.wait(5) == -signal.SIGKILL
    assert procs.pids_in(path) == []
    by_pid = {s.pid: s for s in stopped}
    assert by_pid[sh.pid].signal == "SIGKILL"
    late = [s for s in stopped if s.command == "sleep 60"]
    assert late and all(s.namespace == ns for s in late), stopped
    assert not any(os.path.exists(f"/proc/{s.pid}") and _net_ns(f"/proc/{s.pid}/ns/net") == _net_ns(path)
                   for s in stopped)
