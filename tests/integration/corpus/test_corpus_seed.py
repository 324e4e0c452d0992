"""The corpus of foreign setups: the seed's own commands (/work/shared/design.md, "The seed,
in English"), typed as the walk-through types them, on documentation addresses.

The seed's namespace ``ns`` (veth1 192.0.2.2/24) hangs off the "VM" (``vm``: veth0
192.0.2.3/24, eth0 198.51.100.116/24, default via 198.51.100.1), whose uplink leads to
``out`` (198.51.100.1/24, 203.0.113.9/32 on lo, no route back to 192.0.2.0/24). Its three
steps: the default route, the SNAT rule (``-j SNAT --to-source``, no ``-o``), ip_forward.
Each missing one is a failure doctor must name first, with a fix that, run as printed,
restores the ping.
"""

from __future__ import annotations

import subprocess

import pytest

from natns.verify.probe import ping

from .test_corpus_cni import doctor, first_error, rewrites, run_fix, trace

pytestmark = pytest.mark.root
FAR = "203.0.113.9"
SNAT = ["-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "SNAT", "--to-source", "198.51.100.116"]


def seed_commands(ns: str, vm: str, out: str) -> list[list[str]]:
    """The walk-through's commands, in its order (step 1: the namespace and the veth pair)."""
    return [
        ["ip", "-n", vm, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
        ["ip", "-n", vm, "link", "set", "veth1", "netns", ns],
        ["ip", "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "veth1"],
        ["ip", "-n", ns, "link", "set", "veth1", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", vm, "addr", "add", "192.0.2.3/24", "dev", "veth0"],
        ["ip", "-n", vm, "link", "set", "veth0", "up"],
        # the VM's own uplink, there before the walk-through starts
        ["ip", "-n", vm, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", out],
        ["ip", "-n", vm, "addr", "add", "198.51.100.116/24", "dev", "eth0"],
        ["ip", "-n", vm, "link", "set", "eth0", "up"],
        ["ip", "-n", vm, "route", "add", "default", "via", "198.51.100.1"],
        ["ip", "-n", out, "addr", "add", "198.51.100.1/24", "dev", "eth0"],
        ["ip", "-n", out, "addr", "add", f"{FAR}/32", "dev", "lo"],
        ["ip", "-n", out, "link", "set", "eth0", "up"],
        ["ip", "-n", out, "link", "set", "lo", "up"],
        ["ip", "netns", "exec", vm, "sysctl", "-w", "net.ipv4.ip_forward=0"],
    ]


def steps(ns: str, vm: str) -> dict[str, list[str]]:
    return {
        "route": ["ip", "-n", ns, "route", "add", "default", "via", "192.0.2.3"],     # step 2
        "snat": ["ip", "netns", "exec", vm, "iptables", *SNAT],                       # step 3
        "forward": ["ip", "netns", "exec", vm, "sysctl", "-w", "net.ipv4.ip_forward=1"],  # step 4
    }


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)


def build(scratch_ns, *, done: tuple[str, ...] = ("route", "snat", "forward")) -> tuple[str, str, str]:
    ns, vm, out = scratch_ns("ns"), scratch_ns("vm"), scratch_ns("out")
    for argv in seed_commands(ns, vm, out):
        _run(argv)
    assert ping(ns, "192.0.2.3").ok  # step 1: the two ends ping each other
    for name in done:
        _run(steps(ns, vm)[name])
    return ns, vm, out


def test_the_walk_through_each_failure_named_first_then_fixed_as_printed(scratch_ns):
    ns, vm, out = build(scratch_ns, done=())
    seen = []
    for _ in range(4):
        code, doc = doctor(ns, FAR)
        if code == 0:
            break
        f = first_error(doc)
        seen.append((f["code"], f["namespace"]))
        run_fix(f)
    # (the seed adds SNAT before ip_forward; doctor names what the packet meets first)
    assert seen == [("no-route", ns), ("ip-forward-off", vm), ("no-snat", vm)]
    assert ping(ns, FAR).ok


def test_working_seed_doctor_healthy_and_trace_there_and_back(scratch_ns):
    ns, vm, out = build(scratch_ns)
    assert ping(ns, FAR).ok
    code, doc = doctor(ns, FAR)
    assert code == 0 and doc["healthy"], doc["findings"]
    assert [(n["namespace"], n["kind"], n["after"]) for n in doc["nat"]] == [(vm, "snat", "198.51.100.116")]
    code, tr = trace(ns, FAR)
    assert code == 0 and tr["request"]["delivered_to"] == out and tr["reply"]["delivered_to"] == ns
    assert (vm, "saddr", "192.0.2.2", "198.51.100.116") in rewrites(tr["request"])


UNDO = {
    "route": (lambda ns, vm: ["ip", "-n", ns, "route", "del", "default"], "no-route", "ns"),
    "snat": (lambda ns, vm: ["ip", "netns", "exec", vm, "iptables", *[w if w != "-A" else "-D" for w in SNAT]],
             "no-snat", "vm"),
    "forward": (lambda ns, vm: ["ip", "netns", "exec", vm, "sysctl", "-w", "net.ipv4.ip_forward=0"],
                "ip-forward-off", "vm"),
}


@pytest.mark.parametrize("missing", sorted(UNDO))
def test_each_step_undone_is_named_first_and_the_printed_fix_restores(scratch_ns, missing):
    ns, vm, out = build(scratch_ns)
    undo, code_wanted, where = UNDO[missing]
    _run(undo(ns, vm))
    assert not ping(ns, FAR).ok
    code, doc = doctor(ns, FAR)
    assert code == 1
    f = first_error(doc)
    assert (f["code"], f["namespace"]) == (code_wanted, {"ns": ns, "vm": vm}[where]), doc["findings"]
    run_fix(f)
    assert ping(ns, FAR).ok
