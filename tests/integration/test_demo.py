"""`natns demo`: the seed's four steps for real, and nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from natns.kernel import netns as kns
from natns.observe import read_mark

from .labs import natns
from .verify_tools import tcpdumps_for

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
    assert tcpdump_pids() <= dumps or tcpdumps_for(prefix) == []  # others' tests may run tcpdumps


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


class CpuLoad:
    """Busy-loop processes, one per core, started here and stopped by PID (bounded in time)."""

    def __init__(self, seconds: float = 120):
        code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 2)]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_the_demo_runs_again_and_again_under_cpu_load():
    """Issue 16 item 1: a capture that did not start in time failed the demo and left its lab."""
    load = CpuLoad()
    kept = None
    prefixes = []
    try:
        for i, (backend, keep) in enumerate([("nftables", False), ("iptables", False), ("nftables", False),
                                             ("nftables", True)]):
            args = ["demo", "--backend", backend] + (["--keep"] if keep else [])
            res = natns(*args)
            m = re.search(r"(demo[0-9a-f]{4})-tenant1", res.stdout)
            assert m, res.stdout[-2000:] + res.stderr
            prefixes.append(m.group(1))
            if keep:
                kept = m.group(1)
            assert res.returncode == 0, (i, res.stdout[-3000:] + res.stderr)
            assert " 0% packet loss" in res.stdout
            if keep:
                assert sorted(demo_names(kept)) == sorted(f"{kept}-{n}" for n in ("inet", "tenant1", "vm"))
            else:
                assert demo_names(m.group(1)) == []
    finally:
        load.stop()
        if kept:
            natns("down", "--lab", kept)
    assert demo_names(kept) == []
    # (other tests on the machine may run tcpdumps of their own: look for the demo's only)
    assert [tcpdumps_for(p) for p in prefixes] == [[]] * len(prefixes)


def test_a_demo_that_fails_removes_its_lab_even_with_keep(monkeypatch):
    """Any error during the demo removes what it built; --keep keeps a lab only on success."""
    import io

    from rich.console import Console

    from natns import demo as demo_mod
    from natns.errors import KernelError

    real = demo_mod.Capture
    starts = []

    class FailingSecond(real):
        def __enter__(self):
            starts.append(1)
            if len(starts) == 2:  # step 2, as in the report: the lab is half built
                raise KernelError("tcpdump on x:eth0 did not start listening within 30 s")
            return super().__enter__()

    monkeypatch.setattr(demo_mod, "Capture", FailingSecond)
    buf = io.StringIO()
    d = demo_mod.Demo("nftables", keep=True, console=Console(file=buf, width=200))
    made = []
    real_converge = d._converge

    def converge(n):
        plan = real_converge(n)
        made.extend(demo_names(d.prefix))
        return plan

    monkeypatch.setattr(d, "_converge", converge)
    with pytest.raises(KernelError):
        d.run()
    assert len(starts) == 2 and set(made) == {d.tenant, d.vm, d.inet}  # it got as far as step 2
    assert demo_names(d.prefix) == [], buf.getvalue()[-2000:]
    assert "--keep does not keep it" in buf.getvalue()
    assert tcpdumps_for(d.prefix) == []
