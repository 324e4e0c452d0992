"""Smoke run of the OVN benchmark (benchmarks/ovn.py) at its smallest sizes: it runs, reports
its figures with sane values, and leaves no namespace, daemon or run directory behind.
Numbers are not judged (they are `make bench`'s, as ratios of one run)."""

from __future__ import annotations

import os

import pytest

from benchmarks import ovn
from natns.engines.ovn import sandbox
from tests.integration.test_bench_smoke import sane

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(sandbox.missing_binaries()), reason="OVS/OVN not installed (scripts/bootstrap.sh)"),
]


def test_ovn_bench_smoke():
    before = set(os.listdir(sandbox.RUN_ROOT)) if os.path.isdir(sandbox.RUN_ROOT) else set()
    res = ovn.run([2], 1, smoke=True)
    sane(res, ["up to traffic", "up to traffic ovn / kernel", "floating IP add: NB write to traffic",
               "floating IP add: NB transaction", "single-stream TCP throughput through SNAT",
               "throughput ovn / kernel"])
    assert {f.params["engine"] for f in res.figures if f.name == "up to traffic"} == {"kernel", "ovn"}
    assert res.get("throughput ovn / kernel") > 0
    after = set(os.listdir(sandbox.RUN_ROOT)) if os.path.isdir(sandbox.RUN_ROOT) else set()
    # every lab the benchmark made (names "b" + its prefix) is gone: no run directory, so no daemon
    assert not {d for d in after - before if d.startswith("b")}, after - before
