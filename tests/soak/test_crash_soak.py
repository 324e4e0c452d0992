"""Crash consistency at scale: a 50-router lab killed at 25+ points of `up` and of `down`.

For every kill point (the apply test hook, NATNS_TEST_KILL_AT_STEP, see
natns/testing/hooks.py: before the first step of each kind, right after the
first veth pair, inside the first, a middle and the last firewall
transaction, the rest spread evenly), and for SIGKILLs and Ctrl-Cs sent to
the process group at random moments:

* `up` afterwards converges: the one after it has nothing to do, and every
  one of the lab's 101 namespaces is exactly as in a clean build
  (`snapshot`: links, addresses, routes, rules, all net.* sysctls, nft
  ruleset, iptables-save);
* `down` afterwards leaves nothing: no namespace, no mark, no leftover
  file under /run/netns, and the namespace natns runs in is as before.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest

from natns import Lab, labs, topology
from tests.integration.labs import existing, kernel_dump, lab_namespaces, write
from tests.integration.reliability_tools import diff, kill_points, many_routers, plan_steps, run_natns, snapshots

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
ROUTERS = 50
SIGNALS = 20  # random-moment signals to `up` (and half as many to `down`)


def _lab(data):
    return Lab(topology.parse(data, "soak.yaml"))


class Soak:
    """One 50-router lab and what a clean build of it looks like."""

    def __init__(self, uid, backend, tmp_path, figures):
        self.data = many_routers(uid, ROUTERS, backend)
        self.path = write(tmp_path, self.data)
        self.names = lab_namespaces(self.data)
        self.uid = uid
        self.figures = figures
        t = time.monotonic()
        res = run_natns("up", self.path)
        assert res.returncode == 0, res.stderr
        self.up_seconds = time.monotonic() - t
        self.reference = snapshots(self.names)
        t = time.monotonic()
        self.down()
        self.down_seconds = time.monotonic() - t
        self.recoveries: list[float] = []

    def down(self, *args) -> None:
        res = run_natns("down", self.path)
        assert res.returncode == 0, res.stderr
        self.assert_nothing_left()

    def assert_nothing_left(self) -> None:
        assert existing(self.names) == []
        assert self.data["name"] not in labs()
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(f"t{self.uid}")]
        assert leftovers == [], leftovers

    def converge(self) -> None:
        t = time.monotonic()
        res = run_natns("up", self.path)
        assert res.returncode == 0, res.stderr
        self.recoveries.append(time.monotonic() - t)
        again = _lab(self.data).plan()
        assert again.empty, [s.command() for s in again.steps][:10]
        now = snapshots(self.names)
        assert now == self.reference, diff(now, self.reference)


@pytest.fixture
def soak_main():
    """The namespace natns runs in is read, never changed: same dump before and after."""
    before = kernel_dump(None)
    yield
    assert kernel_dump(None) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_25_points_of_up_then_up_converges_and_down_leaves_nothing(soak_main, uid, backend, tmp_path,
                                                                              figures):
    s = Soak(uid, backend, tmp_path, figures)
    try:
        steps = plan_steps(s.path)
        points = kill_points(steps, 25)
        during = [p for p in points if p.endswith(":during")]
        if backend == "nftables":
            # The same firewall transactions once more, run by the nft tool (NATNS_NFT=tool)
            # instead of libnftables in process: the kill then hits a running nft.
            points += [p + ":tool" for p in during]
        assert len(points) >= 25
        struck, inside = [], 0
        for k, point in enumerate(points):
            tool = point.endswith(":tool")
            res = run_natns("up", s.path, kill_at=point.removesuffix(":tool"),
                            env={"NATNS_NFT": "tool"} if tool else None)
            if tool:
                assert "while it ran child process" in res.hook, res.hook
            assert res.returncode == -signal.SIGKILL, (point, res.stderr[-500:])
            assert res.hook, res.stderr[-500:]
            struck.append(res.hook)
            inside += "libnftables" in res.hook or "child process" in res.hook
            if k % 4 == 3:
                # What a killed `up` left, `down` removes.
                s.down()
                continue
            s.converge()
            s.down()
        assert inside >= 3
        figures(f"{backend}: {ROUTERS} routers, {len(s.names)} namespaces, {len(steps)} steps; clean up "
                f"{s.up_seconds:.1f} s, clean down {s.down_seconds:.1f} s")
        figures(f"{backend}: SIGKILL at {len(points)} points of up ({inside} inside a firewall transaction): "
                f"{len(s.recoveries)} recovered by up to the exact clean state (recovery up "
                f"{min(s.recoveries):.1f}-{max(s.recoveries):.1f} s), {len(points) - len(s.recoveries)} "
                f"removed by down; 0 failures")
        kinds = sorted({m.group(1) for h in struck for m in [re.search(r"\(([a-z_]+)\)", h)] if m})
        figures(f"{backend}: step kinds struck: {', '.join(kinds)}")
    finally:
        run_natns("down", "--lab", s.data["name"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_25_points_of_down_then_down_or_up_finishes_the_job(soak_main, uid, backend, tmp_path, figures):
    s = Soak(uid, backend, tmp_path, figures)
    try:
        total = len(s.names)  # `down` deletes one namespace per step (no uplink here)
        points = sorted({1, 2, total} | {round(k * total / 24) for k in range(1, 24)})
        assert len(points) >= 25
        for k, point in enumerate(points):
            res = run_natns("up", s.path)
            assert res.returncode == 0, res.stderr
            res = run_natns("down", s.path, kill_at=str(point))
            assert res.returncode == -signal.SIGKILL, (point, res.stderr[-500:])
            assert len(existing(s.names)) == total - point + 1
            if k % 2:
                s.down()
            else:
                s.converge()
        s.down()
        figures(f"{backend}: SIGKILL at {len(points)} points of down: every time `down` then removed the rest, "
                f"or `up` rebuilt the exact clean state ({len(s.recoveries)} times); 0 failures")
    finally:
        run_natns("down", "--lab", s.data["name"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_signals_at_random_moments_of_up_and_down(soak_main, uid, backend, tmp_path, figures):
    """SIGKILL and SIGINT to the whole process group (natns and the tools it runs), at
    random moments: also in the middle of a step (a namespace being made, a netlink
    request, iptables-restore running), which the step hook can't reach."""
    s = Soak(uid, backend, tmp_path, figures)
    rng = random.Random(uid)
    outcomes = {"killed": 0, "interrupted": 0, "finished": 0}
    try:
        t = time.monotonic()
        run_natns("--version")
        startup = time.monotonic() - t  # the interpreter and natns's imports: no kernel change yet
        for k in range(SIGNALS):
            sig = signal.SIGKILL if k % 2 == 0 else signal.SIGINT
            # Somewhere in the run after most of the imports (up_seconds is the whole run).
            after = rng.uniform(0.8 * startup, max(s.up_seconds, startup))
            res = run_natns("up", s.path, after=after, sig=sig)
            # -SIGINT: Ctrl-C while Python was still importing natns (nothing done yet).
            outcome = ("killed" if res.returncode == -signal.SIGKILL else "finished" if res.returncode == 0
                       else "interrupted")
            assert res.returncode in (0, 130, -signal.SIGKILL, -signal.SIGINT), res.stderr[-500:]
            if res.returncode == 130:
                assert "interrupted; run the same command again" in res.stderr
            outcomes[outcome] += 1
            if k % 4 < 2:
                s.converge()
                # and a signal at a random moment of `down`
                res = run_natns("down", s.path, after=rng.uniform(0.8 * startup, max(s.down_seconds, startup)),
                                sig=signal.SIGKILL if k % 4 == 0 else signal.SIGINT)
                assert res.returncode in (0, 130, -signal.SIGKILL, -signal.SIGINT), res.stderr[-500:]
                if k % 8 < 4:
                    s.converge()
            s.down()
        figures(f"{backend}: {SIGNALS} signals at random moments of up (+{SIGNALS // 2} of down): "
                f"{outcomes['killed']} killed, "
                f"{outcomes['interrupted']} interrupted, {outcomes['finished']} finished first; "
                f"all converged or were removed; 0 failures")
    finally:
        run_natns("down", "--lab", s.data["name"])
