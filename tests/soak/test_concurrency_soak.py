"""Concurrency, repeated: same lab from several processes at once, different labs at once, up racing down.

Every round ends in a state a single command would have produced: after
concurrent `up`s the lab equals a clean build (snapshot of every namespace)
and a further `up` has nothing to do; after `up` racing `down` the lab is
either complete or entirely gone, never half.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from natns import Lab, topology
from tests.integration.labs import existing, lab_namespaces, write
from tests.integration.reliability_tools import ROOT, diff, many_routers, run_natns, snapshots

pytestmark = pytest.mark.root
ROUNDS = 6


def _spawn(*args):
    env = dict(os.environ)
    env.pop("NATNS_TEST_KILL_AT_STEP", None)
    return subprocess.Popen([sys.executable, "-m", "natns.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs):
    outs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def test_concurrent_ups_downs_and_labs(uid, tmp_path, figures):
    a = many_routers(uid + "a", 20, "nftables")
    b = many_routers(uid + "b", 20, "iptables")
    pa, pb = write(tmp_path, a, "a.yaml"), write(tmp_path, b, "b.yaml")
    try:
        assert run_natns("up", pa).returncode == 0 and run_natns("up", pb).returncode == 0
        ref_a, ref_b = snapshots(lab_namespaces(a)), snapshots(lab_namespaces(b))
        assert run_natns("down", pa).returncode == 0 and run_natns("down", pb).returncode == 0
        complete = gone = 0
        for r in range(ROUNDS):
            # Three `up`s of lab a and two of lab b, all at once.
            results = _wait([_spawn("up", pa) for _ in range(3)] + [_spawn("up", pb) for _ in range(2)])
            assert [rc for rc, _, _ in results] == [0] * 5, [err for _, _, err in results]
            assert sum("no changes" not in out for _, out, _ in results[:3]) == 1
            assert sum("no changes" not in out for _, out, _ in results[3:]) == 1
            for data, ref in ((a, ref_a), (b, ref_b)):
                assert Lab(topology.parse(data, "x")).plan().empty
                now = snapshots(lab_namespaces(data))
                assert now == ref, diff(now, ref)
            # `up` racing `down` of lab a: one wins the lock first; never half a lab.
            order = [_spawn("down", pa), _spawn("up", pa)] if r % 2 else [_spawn("up", pa), _spawn("down", pa)]
            assert [rc for rc, _, _ in _wait(order)] == [0, 0]
            left = existing(lab_namespaces(a))
            if left:
                assert Lab(topology.parse(a, "x")).plan().empty
                assert snapshots(lab_namespaces(a)) == ref_a
                complete += 1
            else:
                gone += 1
            results = _wait([_spawn("down", pa), _spawn("down", pb), _spawn("down", pa)])
            assert [rc for rc, _, _ in results] == [0, 0, 0]
            assert existing(lab_namespaces(a) + lab_namespaces(b)) == []
        figures(f"{ROUNDS} rounds: 3 concurrent ups of a 20-router nftables lab with 2 of a 20-router iptables "
                f"lab: every time exactly one up per lab built it, the others waited and found nothing to do, "
                f"and both labs equalled a clean build; up racing down: {complete} times complete, {gone} times "
                f"gone, never half; 0 failures")
    finally:
        run_natns("down", pa)
        run_natns("down", pb)
