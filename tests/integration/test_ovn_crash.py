"""Crash safety of the OVN engine (issue 12): natns SIGKILLed at chosen points of `up` and
`down` (NATNS_TEST_KILL_AT_STEP, natns/testing/hooks.py: before a step, or while a step's
child process runs) -> the next `up` converges exactly (an empty plan after it, traffic
flows), and `down` leaves no daemon, namespace, NB row or run directory.

One sandbox at a time; every test takes its lab down at the end, pass or fail.
"""

from __future__ import annotations

import json

import pytest

from natns.engines.ovn import sandbox
from natns.kernel import nsexec
from tests.integration import ovn_labs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(sandbox.missing_binaries()),
                       reason="OVS/OVN not installed (scripts/bootstrap.sh installs them): missing "
                       + ", ".join(sandbox.missing_binaries())),
]

KILL = "NATNS_TEST_KILL_AT_STEP"


@pytest.fixture
def lab(tmp_path):
    d = ovn_labs.renamed(ovn_labs.uid())
    path = ovn_labs.write(tmp_path, d)
    info = {"d": d, "file": path, "names": ovn_labs.all_namespaces(d), "pids": set()}
    try:
        yield info
    finally:
        ovn_labs.natns("down", path)
        sandbox.down(d["name"])


def _steps(path: str) -> list[dict]:
    r = ovn_labs.natns("plan", "--json", path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["steps"]


def _killed(lab, verb: str, at: str) -> None:
    r = ovn_labs.natns(verb, lab["file"], env={KILL: at})
    assert r.returncode == -9, (at, r.returncode, r.stderr)
    assert "test hook: SIGKILL" in r.stderr
    lab["pids"] |= set(ovn_labs.daemon_pids(lab["d"]["name"]).values())


def _converged(lab) -> None:
    r = ovn_labs.natns("up", lab["file"])
    assert r.returncode == 0, r.stderr
    assert _steps(lab["file"]) == []
    r = ovn_labs.natns("status", lab["file"])
    assert r.returncode == 0, r.stdout
    vm1 = lab["d"]["networks"][0]["hosts"][0]["namespace"]  # on ch3, a non-gateway chassis
    nsexec.run(vm1, ["ping", "-c", "1", "-W", "2", "203.0.113.114"], timeout=10)


def _gone(lab) -> None:
    r = ovn_labs.natns("down", lab["file"])
    assert r.returncode == 0, r.stderr
    pids = lab["pids"] | set(ovn_labs.daemon_pids(lab["d"]["name"]).values())
    assert ovn_labs.nothing_left(lab["d"]["name"], lab["names"], sorted(pids)) == []


def test_up_killed_anywhere_then_up_converges_and_down_leaves_nothing(lab):
    steps = _steps(lab["file"])
    actions = [s["action"] for s in steps]
    first_nb = actions.index("write_nb") + 1
    last = len(steps)
    assert actions[-1] == "plug_host"
    # mid central, mid a gateway chassis, after the NB transaction, mid the last host
    points = ["1:during", "4:during", f"{first_nb + 1}", f"{last}:during"]
    for at in points:
        _killed(lab, "up", at)
        _converged(lab)
        _gone(lab)


def test_down_killed_midway_then_down_leaves_nothing_and_up_converges(lab):
    _converged(lab)
    lab["pids"] |= set(ovn_labs.daemon_pids(lab["d"]["name"]).values())
    _killed(lab, "down", "2:during")  # while the daemons of the second part are being stopped
    _converged(lab)  # a half-removed lab is made whole again
    r = ovn_labs.natns("down", "--json", lab["file"], env={})
    steps = json.loads(r.stdout)
    assert steps["removed"], steps
    _converged(lab)
    n = len([1 for _ in lab["names"]])
    _killed(lab, "down", f"{4 + n // 2}:during")  # among the namespaces' removals
    _gone(lab)
