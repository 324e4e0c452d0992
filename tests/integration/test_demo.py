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


def demo_names(prefix: str) -> list[str]:
    """Namespaces of one demo run (other tests may create namespaces meanwhile)."""
    return [n for n in kns.list_names() if n.startswith(prefix + "-")]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_demo_walks_the_seed_and_cleans_up(backend):
    dumps = tcpdump_pids()
    res = natns("demo", "--backend", backend)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    text = " ".join(res.stdout.split())
    # The four results, in order, as the seed saw them.
    results = re.findall(r"ping 203\.0\.113\.114: (.*?) tenant1:eth0", text)
    assert len(results) == 4, text
    assert "Network is unreachable" in results[0]
    assert "100% packet loss" in results[1] and "100% packet loss" in results[2]
    assert " 0% packet loss" in results[3]
    # the seed's SNAT rule counted, read from the kernel: nothing at step 3 (the router does
    # not forward yet), the pings' first packets at step 4, and no other rule shown as it
    counts = re.findall(r"SNAT rule counter: (\d+) packets", text)
    assert len(counts) == 2 and counts[0] == "0" and int(counts[1]) > 0, counts
    final = re.findall(r"SNAT rule (.*?): (\d+) packets", text.split("The proof", 1)[1])
    assert len(final) == 1 and "natns snat tenant" in final[0][0] and int(final[0][1]) > int(counts[1]), final
    prefix = re.search(r"(demo[0-9a-f]{4})-tenant1", text).group(1)
    assert demo_names(prefix) == []
    assert tcpdump_pids() <= dumps


def test_demo_keep_leaves_a_lab_that_down_removes():
    res = natns("demo", "--keep")
    m = re.search(r"natns down --lab (demo[0-9a-f]{4})", res.stdout)
    assert m, res.stdout[-2000:] + res.stderr
    lab = m.group(1)
    try:
        assert res.returncode == 0, res.stdout[-2000:]
        kept = sorted(demo_names(lab))
        assert kept == sorted(f"{lab}-{n}" for n in ("inet", "tenant1", "vm"))
        assert all(read_mark(ns).startswith(f"natns:{lab}:") for ns in kept)
        assert natns("exec", f"{lab}-tenant1", "--", "ping", "-c1", "-W1", "203.0.113.114").returncode == 0
    finally:
        natns("down", "--lab", lab)
    assert demo_names(lab) == []


def test_ctrl_c_during_the_demo_removes_everything():
    before, dumps = kns.list_names(), tcpdump_pids()
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    prefix = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and prefix is None:
            new = [n for n in set(kns.list_names()) - set(before) if re.match(r"demo[0-9a-f]{4}-", n)]
            if new:
                prefix = new[0].split("-")[0]
            time.sleep(0.05)
        if prefix is None:
            pytest.fail("the demo never created its namespaces")
        time.sleep(0.5)  # somewhere in the steps, captures running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert demo_names(prefix) == [], out[-2000:] + err
    assert tcpdump_pids() <= dumps
