"""A lab's lock file (/run/natns/labs/LAB.lock) is removed by its `down`, and `up`/`down`
of one lab still serialise across that removal (issue 16 item 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from natns import Lab, down_lab, topology
from natns.lab import LOCK_DIR, lab_lock

from .labs import existing, lab_namespaces, seed, write
from .reliability_tools import ROOT, run_natns

pytestmark = pytest.mark.root


@pytest.fixture
def cleanup():
    labs: list[dict] = []
    yield labs.append
    for data in labs:
        down_lab(data["name"])
        assert existing(lab_namespaces(data)) == []
        assert not os.path.exists(os.path.join(LOCK_DIR, f"{data['name']}.lock"))


def test_down_removes_the_labs_lock_file(cleanup, uid, tmp_path):
    data = seed(uid)
    cleanup(data)
    path = write(tmp_path, data)
    lock = os.path.join(LOCK_DIR, f"{data['name']}.lock")
    res = run_natns("up", path)
    assert res.returncode == 0, res.stderr
    assert os.path.exists(lock)
    res = run_natns("down", path)
    assert res.returncode == 0, res.stderr
    assert existing(lab_namespaces(data)) == []
    assert not os.path.exists(lock)
    # A `down` of a lab that isn't there leaves no file either.
    res = run_natns("down", "--lab", data["name"])
    assert res.returncode == 0 and "nothing to remove" in res.stdout, res.stderr
    assert not os.path.exists(lock)


def test_ups_waiting_while_a_down_removes_the_lock_file_still_run_one_at_a_time(cleanup, uid, tmp_path):
    """Two `up`s wait on the lock held by a `down` (here: the test, holding it as `down`
    does); the holder removes the file and releases. Both waiters must notice the file
    they waited on is gone, and take the new one in turn: one builds the lab, the other
    finds nothing to do. (If both took a lock, each on its own file, both would build.)"""
    data = seed(uid, "iptables")
    cleanup(data)
    path = write(tmp_path, data)
    lock = os.path.join(LOCK_DIR, f"{data['name']}.lock")
    env = dict(os.environ)
    env.pop("NATNS_TEST_KILL_AT_STEP", None)
    argv = [sys.executable, "-m", "natns.cli", "up", path]
    procs = []
    try:
        with lab_lock(data["name"]) as held:
            procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2)]
            time.sleep(3)  # both are waiting for the lock by now (they import in < 1 s)
            assert [p.poll() for p in procs] == [None, None]
            assert existing(lab_namespaces(data)) == []
            held.remove()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted("no changes" in out for out, _ in outs) == [False, True], outs
    assert os.path.exists(lock)  # the waiters made a new one (the `up`s don't remove it)
    assert Lab(topology.parse(data, "test.yaml")).plan().empty
