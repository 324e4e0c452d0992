"""Smoke run of every benchmark at its smallest size: it runs, cleans up, and reports its fields.

Numbers are not judged here (timings on a shared machine are noise, and the
benchmarks' goals are ratios for `make bench`); only that each benchmark ran,
produced its figures with sane values, and left no namespace behind.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import bringup, dataplane, fip, pcapdecode, snat, startup
from benchmarks.common import Run, our_namespaces
from benchmarks.__main__ import main as suite_main

pytestmark = pytest.mark.root


def figures(res) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in res.figures:
        out.setdefault(f.name, []).append(f)
    return out


def sane(res, names):
    got = figures(res)
    for name in names:
        assert name in got, f"{res.bench}: figure {name!r} missing; have {sorted(got)}"
        for f in got[name]:
            assert f.samples, f"{res.bench}: {name} {f.params} has no samples"
            assert all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in f.samples), f


def test_bringup_smoke(tmp_path):
    res = bringup.run([2], 1, smoke=True)
    sane(res, ["up, per router", "down, per router", "natns no-op up (library)", "natns no-op up (CLI process)",
               "kernel: create one namespace", "up: shell / natns", "up: batch / natns", "up: natns / floor",
               "kernel: settle before variant", "natns up: peak memory (ru_maxrss)"])
    assert {f.params["variant"] for f in res.figures if f.name == "up, per router"} == \
        {"natns", "shell", "batch", "floor"}
    assert {f.params["variant"] for f in res.figures if f.name == "kernel: settle before variant"} == \
        {"natns", "shell", "batch", "floor"}
    assert res.get("up, per router", variant="natns", n=2) > 0
    assert 10 < res.get("natns up: peak memory (ru_maxrss)", n=2) < 1000  # MB of a real Python process
    assert len(res.goals) == 4


def test_startup_smoke():
    res = startup.run([1], 1, smoke=True)
    sane(res, ["python -c pass", "natns --help", "natns status, no namespaces",
               "natns status, no labs, the machine's namespaces"])
    assert len(res.goals) == 3


def test_fip_smoke():
    res = fip.run([10], 1, smoke=True)
    sane(res, ["bulk converge to size", "add one: whole up", "add one: firewall step", "remove one: whole up",
               "new connections", "connect p50", "connect p99", "add one: natns up FILE (process)",
               "remove one: natns up FILE (process)"])
    for b in ("nftables", "iptables"):
        assert res.get("new connections", backend=b, fips=10) > 0


def test_dataplane_smoke():
    res = dataplane.run([1], 1, smoke=True)
    sane(res, ["TCP throughput", "throughput nat / routing"])
    assert {f.params["path"] for f in res.figures if f.name == "TCP throughput"} == \
        {"nat", "nat+policy", "routing", "veth"}
    assert all(f.median > 0 for f in res.figures if f.name == "TCP throughput")


def test_snat_smoke():
    res = snat.run([50], 1, smoke=True)
    sane(res, ["new connections", "conntrack insert failures", "concurrent connections that fit"])
    fit = {f.params["variant"]: f.median for f in res.figures if f.name == "concurrent connections that fit"}
    assert set(fit) == {"1 address", "1 address random-fully", "4 addresses", "4 addresses random-fully"}
    assert all(0 < v <= 4 * 50 for v in fit.values())


def test_suite_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert suite_main(["--smoke", "--only", "dataplane", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["results"][0]["bench"] == "dataplane"
    fig = data["results"][0]["figures"][0]
    assert {"median", "min", "max", "n", "samples", "unit", "params"} <= set(fig)


def test_run_removes_its_namespaces_and_lab_locks_on_failure():
    import os

    from natns.kernel import netns
    from natns.lab import LOCK_DIR, lab_lock

    with pytest.raises(RuntimeError):
        with Run("t") as r:
            netns.create(r.name("x1"))
            with lab_lock(r.name("n")):  # what natns up leaves until natns down removes it
                pass
            prefix = r.prefix
            assert os.path.exists(os.path.join(LOCK_DIR, f"{prefix}n.lock"))
            raise RuntimeError("boom")
    assert our_namespaces(prefix) == []
    assert [n for n in os.listdir(LOCK_DIR) if n.startswith(prefix)] == []


def test_pcapdecode_smoke():
    res = pcapdecode.run([200], 1, smoke=True)
    sane(res, ["decode time per packet", "decode scapy / dpkt", "import time"])
    # both libraries found the same IP packets in the capture (ARP left out by both)
    assert res.info["ip_packets_dpkt"] == res.info["ip_packets_scapy"] > 0
