"""`natns demo`: the seed's four steps for real, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from natns.kernel import netns as kns
from natns.observe import read_mark

from .labs import natns

pytestmark = pytest.mark.root


def tcpdump_pids() -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "tcpdump":
                        out.add(int(pid))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_demo_walks_the_seed_and_cleans_up(backend):
    before, dumps = kns.list_names(), tcpdump_pids()
    res = natns("demo", "--backend", backend)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    text = " ".join(res.stdout.split())
    # The four results, in order, as the seed saw them.
    results = re.findall(r"ping 203\.0\.113\.114: (.*?) tenant1:eth0", text)
    assert len(results) == 4, text
    assert "Network is unreachable" in results[0]
    assert "100% packet loss" in results[1] and "100% packet loss" in results[2]
    assert " 0% packet loss" in results[3]
    assert kns.list_names() == before
    assert tcpdump_pids() <= dumps


def test_demo_keep_leaves_a_lab_that_down_removes():
    before = kns.list_names()
    res = natns("demo", "--keep")
    try:
        assert res.returncode == 0, res.stdout[-2000:]
        lab = re.search(r"natns down --lab (demo[0-9a-f]{4})", res.stdout).group(1)
        kept = sorted(set(kns.list_names()) - set(before))
        assert kept == sorted(f"{lab}-{n}" for n in ("inet", "tenant1", "vm"))
        assert all(read_mark(ns).startswith(f"natns:{lab}:") for ns in kept)
        assert natns("exec", f"{lab}-tenant1", "--", "ping", "-c1", "-W1", "203.0.113.114").returncode == 0
    finally:
        for ns in set(kns.list_names()) - set(before):
            m = re.match(r"(demo[0-9a-f]{4})-", ns)
            if m:
                natns("down", "--lab", m.group(1))
    assert kns.list_names() == before


def test_ctrl_c_during_the_demo_removes_everything():
    before, dumps = kns.list_names(), tcpdump_pids()
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(n.startswith("demo") for n in set(kns.list_names()) - set(before)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the demo never created its namespaces")
        time.sleep(0.5)  # somewhere in the steps, captures running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert kns.list_names() == before, out[-2000:] + err
    assert tcpdump_pids() <= dumps
