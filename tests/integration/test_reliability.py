"""Crash consistency, exactness and concurrency, on real namespaces (quick versions).

The long versions (20+ kill points on a 50-router lab, timed kills, more
rounds) are in tests/soak/; docs/reliability.md says what each proves.

natns is killed with the apply test hook (NATNS_TEST_KILL_AT_STEP, see
natns/testing/hooks.py) at exact steps, including inside a firewall
transaction, and by signals sent to its process group from outside.
"Converges exactly" means: the next `up` succeeds, the one after it has
nothing to do, and every lab namespace's kernel state (`snapshot`: links,
addresses, routes, rules, every net.* sysctl, nft ruleset, iptables-save)
equals that of a lab built cleanly from the same file.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from natns import Lab, down_lab, topology
from natns.verify.probe import ping, tcp_connect
from natns.kernel import nsexec

from .labs import SEED_INET, PeerServer, existing, kernel_dump, lab_namespaces, mapped, seed, two_routers, write
from .reliability_tools import ROOT, diff, many_routers, plan_steps, run_natns, settle, snapshots

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]


def lab_of(data: dict) -> Lab:
    return Lab(topology.parse(data, "test.yaml"))


@pytest.fixture
def cleanup():
    """Labs (by name) and namespace names to remove after the test, pass or fail."""
    labs: list[tuple[str, list[str]]] = []
    yield lambda data: labs.append((data["name"], lab_namespaces(data)))
    for name, names in labs:
        down_lab(name)
        assert existing(names) == [], f"namespaces left behind: {existing(names)}"


def converges_exactly(data: dict, reference: dict) -> None:
    """`up` after whatever happened converges to exactly `reference` (a clean build)."""
    lab_of(data).up()
    again = lab_of(data).plan()
    assert again.empty, [s.command() for s in again.steps]
    names = lab_namespaces(data)
    now = snapshots(names)
    assert now == reference, diff(now, reference)


def down_leaves_nothing(data: dict, path: str | None = None) -> None:
    """`down` (the CLI with `path`, else the API) removes every namespace and mark of the lab."""
    if path:
        res = run_natns("down", path)
        assert res.returncode == 0, res.stderr
    else:
        down_lab(data["name"])
    assert existing(lab_namespaces(data)) == []
    assert lab_of(data).name not in _labs_in_kernel()


def _labs_in_kernel() -> set[str]:
    from natns import labs

    return set(labs())


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_steps_of_up_and_down_then_up_converges_exactly_and_down_leaves_nothing(
        cleanup, uid, backend, tmp_path):
    data = many_routers(uid, 3, backend)
    cleanup(data)
    path = write(tmp_path, data)
    names = lab_namespaces(data)
    main_before = kernel_dump(None)
    lab_of(data).up()
    reference = snapshots(names)
    down_leaves_nothing(data)

    steps = plan_steps(path)
    actions = [s["action"] for s in steps]
    first = {a: actions.index(a) + 1 for a in dict.fromkeys(actions)}
    fw = [i for i, a in enumerate(actions, 1) if a == "load_firewall"]
    points = [
        str(first["create_veth"] + 1),     # veth pairs made, none configured (no alias yet)
        f"{fw[0]}:during",                 # inside the first firewall transaction
        str(first["configure_link"] + 2),  # some links configured, most not
    ][:3 if backend == "nftables" else 2]
    struck = []
    for k, point in enumerate(points):
        # The nft tool rather than libnftables in process, for the kill inside the
        # transaction: the watcher then reliably sees the tool running.
        res = run_natns("up", path, kill_at=point, env={"NATNS_NFT": "tool"} if k == 1 else None)
        assert res.returncode == -signal.SIGKILL, (point, res.stderr)
        struck.append(res.hook)
        # The killed run left a lab that is neither absent nor complete.
        assert existing(names) and not lab_of(data).plan().empty
        if k == 1:
            # What a killed `up` left, `down` removes.
            down_leaves_nothing(data, path)
            continue
        converges_exactly(data, reference)
        # A `down` killed half way leaves a state `up` converges from (first point)
        # and `down` removes (the others).
        res = run_natns("down", path, kill_at=str(1 + len(names) // 2))
        assert res.returncode == -signal.SIGKILL, res.stderr
        assert 0 < len(existing(names)) < len(names)
        if k == 0:
            converges_exactly(data, reference)
        down_leaves_nothing(data)
    assert "while it ran child process" in struck[1], struck
    assert kernel_dump(None) == main_before


def test_ctrl_c_while_the_command_is_still_starting_ends_quietly():
    """Ctrl-C in the first half second (Python still importing the CLI's libraries): exit
    status 130 and one line, no traceback, as for Ctrl-C later on."""
    console = os.path.join(os.path.dirname(sys.executable), "natns")
    early = 0
    # Python's own start-up (the site module, before any of natns's code) takes some 30 ms:
    # a Ctrl-C there is Python's. natns's start-up after it is short (docs/performance.md):
    # the first rounds may find `natns status` done already; the hook's rounds (a start-up
    # made 0.6 s slower, SIGINT still held) are certain to hit the window.
    rounds = [(d, {}) for d in (0.1, 0.15, 0.3)] + [(d, {"NATNS_TEST_STARTUP_DELAY": "0.6"}) for d in (0.2, 0.4)]
    for delay, env in rounds:
        proc = subprocess.Popen([console, "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
        time.sleep(delay)
        if proc.poll() is not None:  # `natns status` with nothing to read can be done by then
            proc.communicate(timeout=30)
            continue
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        if not env and proc.returncode in (0, -signal.SIGINT) and not err:
            # it had finished and was exiting: in Python's finalisation the signal either kills
            # it or only sets the flag no code checks any more (exit 0); either way the work
            # was done and nothing is printed. The hook's rounds below can't end this way.
            continue
        assert proc.returncode == 130, (delay, proc.returncode, err[-2000:])
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
        early += "before it started" in err
    assert early >= 1  # the window this is about was hit at least once


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_during_up_and_down_leaves_a_state_up_and_down_handle(cleanup, uid, backend, tmp_path):
    data = many_routers(uid, 2, backend)
    cleanup(data)
    path = write(tmp_path, data)
    names = lab_namespaces(data)
    lab_of(data).up()
    reference = snapshots(names)
    down_leaves_nothing(data)
    steps = plan_steps(path)
    fw = [i for i, s in enumerate(steps, 1) if s["action"] == "load_firewall"]
    # Ctrl-C between two steps (nftables) or inside a firewall transaction (iptables:
    # iptables-restore gets the SIGINT too, as from a terminal).
    point = f"{len(steps) // 3}:int" if backend == "nftables" else f"{fw[0]}:during:int"
    res = run_natns("up", path, kill_at=point)
    assert res.returncode == 130, (point, res.stderr)
    assert "interrupted; run the same command again" in res.stderr
    assert existing(names) and not lab_of(data).plan().empty
    converges_exactly(data, reference)
    # Ctrl-C while `down` runs: `up` rebuilds what is left, `down` removes it.
    res = run_natns("down", path, kill_at="2:int")
    assert res.returncode == 130 and "interrupted" in res.stderr
    assert 0 < len(existing(names)) < len(names)
    if backend == "nftables":
        converges_exactly(data, reference)
    down_leaves_nothing(data, path)


def settled_dumps(names) -> dict:
    """`kernel_dump` of every namespace in `names` and of ours, plus all their net.* sysctls,
    once IPv6 address autoconfiguration (whose timers change addresses' flags) is done."""
    settle(names)
    out = {}
    for ns in names + [None]:
        out[ns] = kernel_dump(ns)
        text = nsexec.run(ns, ["sysctl", "-a", "-r", r"^net\."], check=False).stdout
        out[ns]["all net sysctls"] = [ln for ln in text.splitlines() if "nf_conntrack_count" not in ln]
        assert len(out[ns]["all net sysctls"]) > 100
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_up_changes_nothing_and_down_restores_the_machine(cleanup, uid, backend, tmp_path):
    """The floating-IP lab and two_routers side by side: full dumps of every lab namespace
    and of the namespace natns runs in are identical after a second `up`; after `down`
    the latter is exactly as before."""
    labs = [mapped(uid + "m", backend), two_routers(uid + "t", backend)]
    names = []
    for data in labs:
        cleanup(data)
        names += lab_namespaces(data)
    main_before = kernel_dump(None)
    for data in labs:
        assert not lab_of(data).up().empty
    before = settled_dumps(names)
    path = write(tmp_path, labs[0])
    res = run_natns("up", path)
    assert res.returncode == 0 and "up to date, no changes" in res.stdout, res.stdout
    assert lab_of(labs[1]).up().empty
    after = settled_dumps(names)
    for ns in names + [None]:
        assert after[ns] == before[ns], ns
    for data in labs:
        assert lab_of(data).status().ok
        down_leaves_nothing(data)
    assert kernel_dump(None) == main_before


def test_two_ups_of_the_same_lab_at_once_equal_one_up(cleanup, uid, tmp_path):
    data = many_routers(uid, 6, "iptables")
    cleanup(data)
    path = write(tmp_path, data)
    names = lab_namespaces(data)
    env = dict(os.environ)
    env.pop("NATNS_TEST_KILL_AT_STEP", None)
    argv = [sys.executable, "-m", "natns.cli", "up", path]
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # One built the lab; the other waited for the lock, then found nothing to do.
    assert sorted("no changes" in out for out, _ in outs) == [False, True], outs
    concurrent = snapshots(names)
    third = run_natns("up", path)
    assert third.returncode == 0 and "no changes" in third.stdout
    down_leaves_nothing(data)
    lab_of(data).up()
    single = snapshots(names)
    assert concurrent == single, diff(concurrent, single)


def test_up_waits_for_the_lab_lock(cleanup, uid, tmp_path):
    from natns.lab import LOCK_DIR

    data = seed(uid)
    cleanup(data)
    path = write(tmp_path, data)
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(os.path.join(LOCK_DIR, f"{data['name']}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "up", path], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert proc.poll() is None and existing(lab_namespaces(data)) == []
        fcntl.flock(fd, fcntl.LOCK_UN)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, err
    assert existing(lab_namespaces(data)) == lab_namespaces(data)


def test_two_different_labs_at_once(cleanup, uid, tmp_path):
    a, b = seed(uid + "a", "nftables"), seed(uid + "b", "iptables")
    for d in (a, b):
        cleanup(d)
    paths = [write(tmp_path, a, "a.yaml"), write(tmp_path, b, "b.yaml")]
    argv = [[sys.executable, "-m", "natns.cli", "up", p] for p in paths]
    procs = [subprocess.Popen(v, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in argv]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for d in (a, b):
        assert lab_of(d).plan().empty
        u = d["name"].removeprefix("seed")
        assert ping(f"t{u}-tenant1", SEED_INET).ok
        with PeerServer(f"t{u}-inet", SEED_INET, 8080):
            assert tcp_connect(f"t{u}-tenant1", SEED_INET, 8080) == b"198.51.100.116"
    procs = [subprocess.Popen([sys.executable, "-m", "natns.cli", "down", p], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in paths]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert existing(lab_namespaces(a) + lab_namespaces(b)) == []


def test_a_namespace_carries_its_mark_before_it_has_its_name(uid, monkeypatch):
    """No moment exists at which a namespace natns makes is visible under /run/netns without
    its mark: `lo` is marked on the new namespace before it is mounted at its name. (A natns
    killed in between would leave an unmarked namespace `up` refuses and `down` can't see.)"""
    from natns.kernel import netns as kns
    from natns.kernel import rtnl

    name, mark = f"t{uid}-mk", f"natns:mk{uid}:host:t{uid}-mk"
    seen = []
    real_mount = kns._libc.mount

    def mount(src, target, *args):
        if target == f"/run/netns/{name}".encode():
            with rtnl.here() as h:  # on the creating thread, already in the new namespace
                lo = h.link("lo")
                seen.append((lo.alias, bool(lo.flags & 1)))
        return real_mount(src, target, *args)

    monkeypatch.setattr(kns._libc, "mount", mount)
    try:
        kns.create_open(name, rtnl=False, mark=mark)
        monkeypatch.undo()
        assert seen == [(mark, True)]
        from natns.observe import read_mark

        assert read_mark(name) == mark
    finally:
        monkeypatch.undo()
        kns.remove(name)
    assert not kns.exists(name)


def test_files_left_by_an_interrupted_create_or_remove_are_replaced_by_up_and_removed_by_down(uid, tmp_path):
    """Killed between creating /run/netns/NAME and mounting the namespace on it (or, in
    `down`, between unmounting and unlinking), natns leaves a file that is not a
    namespace. It holds the namespace's mark: `up` replaces it, `down` removes it. An
    empty one (as `ip netns add` leaves) `up` replaces too; someone else's file, never."""
    from natns.kernel import netns as kns
    from natns.observe import read_mark

    data = seed(uid)
    path = write(tmp_path, data)
    tenant, inet = f"t{uid}-tenant1", f"t{uid}-inet"
    marks = {tenant: f"natns:{data['name']}:host:{tenant}\n", inet: ""}
    try:
        for name, text in marks.items():
            with open(f"/run/netns/{name}", "w") as fh:
                fh.write(text)
        assert kns.placeholder_mark(tenant) == marks[tenant].strip() and kns.placeholder_mark(inet) is None
        lab_of(data).up()
        assert read_mark(tenant) == marks[tenant].strip() and read_mark(inet).startswith("natns:")
        assert lab_of(data).plan().empty
        down_lab(data["name"])
        with open(f"/run/netns/{tenant}", "w") as fh:
            fh.write(marks[tenant])
        assert run_natns("down", path).returncode == 0
        assert existing(lab_namespaces(data)) == []
        # Not natns's: refused by `up`, left by `down`.
        with open(f"/run/netns/{tenant}", "w") as fh:
            fh.write("someone else's\n")
        res = run_natns("up", path)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert f"/run/netns/{tenant} exists and is not a network namespace" in res.stderr, res.stderr
        assert existing(lab_namespaces(data)) == [tenant]  # refused before any change
        down_lab(data["name"])
        assert open(f"/run/netns/{tenant}").read() == "someone else's\n"
    finally:
        down_lab(data["name"])
        for name in marks:
            if os.path.isfile(f"/run/netns/{name}") and not os.path.ismount(f"/run/netns/{name}"):
                os.unlink(f"/run/netns/{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_between_removing_a_mapping_and_flushing_its_connections(cleanup, uid, backend, tmp_path):
    """A connection through a floating IP; `up` without that floating IP is killed right
    after the rules lose it, before its conntrack entry is deleted. The rules carry a
    note of the flush due (nft set flush_fip / a targetless iptables rule); the next `up`
    deletes the entry (the connection stops at once) and the note; then nothing to do."""
    from natns.firewall import get_backend
    from natns.verify.conntrack import entries

    data = mapped(uid, backend)
    cleanup(data)
    lab_of(data).up()
    t1, vm, inet = f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"

    def fip_entries() -> list:
        return [e for e in entries(vm) if e.original.dst == "198.51.100.50"]

    with PeerServer(t1, "192.0.2.2", 80):
        stream = nsexec.call_in(inet, lambda: socket.create_connection(("198.51.100.50", 80), timeout=5))
        try:
            assert fip_entries()
            data["floating_ips"] = []
            path = write(tmp_path, data)
            steps = [s["action"] for s in plan_steps(path)]
            flush_at = steps.index("flush_conntrack") + 1
            res = run_natns("up", path, kill_at=str(flush_at))
            assert res.returncode == -signal.SIGKILL and "before step" in res.stderr, res.stderr
            be = get_backend(backend)
            assert be.pending_flushes(be.observe(vm)) == {("fip", "198.51.100.50")}
            assert not [m for m in be.mappings(be.observe(vm)) if m[0] == "fip"]  # the rules lost it
            assert fip_entries(), "the entry should still be there: the flush did not run"
            again = run_natns("up", path)
            assert again.returncode == 0, again.stderr
            assert fip_entries() == []
            assert be.pending_flushes(be.observe(vm)) == set()
            assert lab_of(data).plan().empty
        finally:
            stream.close()
