"""A host reaching its own floating IP and a port forward back to itself (issue 15 item 9).

The DNATed packet's new destination is on the bridge port it came in by. With
br_netfilter (net.bridge.bridge-nf-call-iptables=1) the router's nat hook sees
the frame while the bridge is still switching it, and the bridge would send it
back out its ingress port, where hairpin is off: dropped. natns switches the
bridge's calls into iptables/nftables off in its routers, so the router routes
the packet (see docs/topology.md "Routers and bridge netfilter").
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from natns.kernel import nsexec, sysctl
from natns.verify.probe import tcp_connect

from .labs import PeerServer, mapped, natns, write

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
BRNF = "net.bridge.bridge-nf-call-iptables"


def _brnf_present(ns: str) -> bool:
    return sysctl.read(ns, [BRNF])[BRNF] is not None


def _self_hairpin(uid: str) -> tuple[bytes, bytes]:
    t1, t2 = f"t{uid}-tenant1", f"t{uid}-tenant2"
    with PeerServer(t1, "192.0.2.2", 80):
        own_fip = tcp_connect(t1, "198.51.100.50", 80, timeout=5)
    with PeerServer(t2, "192.0.2.4", 80):
        own_forward = tcp_connect(t2, "198.51.100.116", 8080, timeout=5)
    return own_fip, own_forward


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_host_reaches_its_own_floating_ip_and_port_forward(make_lab, uid, backend):
    lab = make_lab(mapped(uid, backend))
    lab.up()
    vm = f"t{uid}-vm"
    if not _brnf_present(vm):
        pytest.skip("br_netfilter is not loaded: no bridge netfilter to get in the way")
    assert sysctl.read(vm, [BRNF])[BRNF] == "0"
    # The router's external address is the source the host sees (hairpin SNAT).
    assert _self_hairpin(uid) == (b"198.51.100.116", b"198.51.100.116")
    assert lab.up().empty


def _up_then_bridge_netfilter_on(make_lab, uid, tmp_path, backend) -> tuple[str, str]:
    """`natns up` of the mapped lab from a file, then bridge netfilter switched on by hand in
    its router: (the file, the router)."""
    data = mapped(uid, backend)
    path = write(tmp_path, data)
    make_lab(data)
    assert natns("up", path).returncode == 0
    vm = f"t{uid}-vm"
    if not _brnf_present(vm):
        pytest.skip("br_netfilter is not loaded")
    nsexec.run(vm, ["sysctl", "-w", f"{BRNF}=1"])
    return path, vm


@pytest.mark.parametrize("backend", BACKENDS)
def test_bridge_netfilter_switched_on_by_hand_is_drift_and_up_restores_it(make_lab, uid, tmp_path, backend):
    path, vm = _up_then_bridge_netfilter_on(make_lab, uid, tmp_path, backend)
    # This is the failure natns's wiring prevents: the frame goes back out its ingress port.
    with pytest.raises(OSError):
        _self_hairpin(uid)
    js = natns("status", path, "--json")
    assert js.returncode == 1
    st = {n["namespace"]: n for n in json.loads(js.stdout)["namespaces"]}[vm]
    assert st["state"] == "drift" and any(BRNF in p for p in st["problems"]), st
    fix = shlex.split(st["fix"])
    assert fix[:2] == ["natns", "up"]
    assert natns(*fix[1:]).returncode == 0
    assert sysctl.read(vm, [BRNF])[BRNF] == "0"
    assert _self_hairpin(uid) == (b"198.51.100.116", b"198.51.100.116")
    assert natns("status", path).returncode == 0


def _run_printed(command: str) -> None:
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (command, done.stderr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_doctor_and_trace_see_the_hairpin_drop_and_both_fixes_work(make_lab, uid, tmp_path, backend):
    path, vm = _up_then_bridge_netfilter_on(make_lab, uid, tmp_path, backend)
    t1 = f"t{uid}-tenant1"
    doc = natns("doctor", "--from", t1, "--to", "198.51.100.50", "--tcp", "80", "--json")
    assert doc.returncode == 1, doc.stderr
    errors = [f for f in json.loads(doc.stdout)["findings"] if f["severity"] == "error"]
    f = errors[0]
    assert f["code"] == "bridge-hairpin" and f["namespace"] == vm, errors
    assert f["evidence"]["in port"] == f["evidence"]["out port"] and f["evidence"][BRNF] == "1"
    # trace blames the bridge, not routing
    tr = natns("trace", "--from", t1, "--to", "198.51.100.50", "--tcp", "80")
    assert tr.returncode == 1
    stop = next(ln for ln in tr.stdout.splitlines() if "stopped:" in ln)
    assert "the bridge dropped it (not routing)" in stop and f["evidence"]["in port"] in stop
    assert "the routing step dropped it" not in tr.stdout
    # The fix as printed (natns's own: bridge netfilter off), then the alternative (hairpin on the port).
    with PeerServer(t1, "192.0.2.2", 80):
        _run_printed(f["fix"][0])
        assert sysctl.read(vm, [BRNF])[BRNF] == "0"
        assert tcp_connect(t1, "198.51.100.50", 80, timeout=5) == b"198.51.100.116"
        nsexec.run(vm, ["sysctl", "-w", f"{BRNF}=1"])
        with pytest.raises(OSError):
            tcp_connect(t1, "198.51.100.50", 80, timeout=2)
        _run_printed(f["alternatives"][0])
        assert tcp_connect(t1, "198.51.100.50", 80, timeout=5) == b"198.51.100.116"
    healthy = natns("doctor", "--from", t1, "--to", "198.51.100.50", "--tcp", "80", "--json")
    assert "bridge-hairpin" not in [g["code"] for g in json.loads(healthy.stdout)["findings"]]


def test_traffic_inside_one_network_is_only_switched_by_the_router(make_lab, uid):
    """With bridge netfilter off, tenant1 -> tenant2 (one network, one bridge) never reaches the
    router's hooks: no conntrack entry there (with it on, one per flow: docs/topology.md)."""
    lab = make_lab(mapped(uid))
    lab.up()
    vm, t1 = f"t{uid}-vm", f"t{uid}-tenant1"
    if not _brnf_present(vm):
        pytest.skip("br_netfilter is not loaded")

    def entries_after_ping() -> list[str]:
        nsexec.run(vm, ["conntrack", "-F"], check=False)
        assert nsexec.run(t1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.4"], check=False).returncode == 0
        out = nsexec.run(vm, ["conntrack", "-L", "-s", "192.0.2.2", "-d", "192.0.2.4"], check=False).stdout
        return [ln for ln in out.splitlines() if ln.strip()]

    assert entries_after_ping() == []
    nsexec.run(vm, ["sysctl", "-w", f"{BRNF}=1"])
    assert len(entries_after_ping()) == 1
