"""up / plan / status / down / exec on real namespaces, with real traffic."""

from __future__ import annotations

import pytest

from natns import Lab, down_lab, topology
from natns.verify.probe import ping, tcp_connect
from natns.kernel import netns as kns
from natns.kernel import nsexec, sysctl

from .labs import (SEED_INET, PeerServer, existing, kernel_dump, lab_namespaces, natns, seed,
                   two_routers, write)

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_lab_reaches_the_internet_with_the_routers_address(make_lab, uid, backend):
    data = seed(uid, backend)
    lab = make_lab(data)
    main_before = kernel_dump(None)
    lab.up()
    tenant, vm, inet = f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"
    assert sysctl.read(vm, ["net.ipv4.ip_forward"]) == {"net.ipv4.ip_forward": "1"}
    assert ping(tenant, SEED_INET, count=2).received == 2
    with PeerServer(inet, SEED_INET, 8080) as srv:
        reply = tcp_connect(tenant, SEED_INET, 8080)
    assert reply == b"198.51.100.116"
    assert srv.seen == ["198.51.100.116"]
    # Traffic from the tenant to its own gateway is not translated (SNAT matches eth0 only).
    with PeerServer(vm, "192.0.2.3", 8081) as srv:
        assert tcp_connect(tenant, "192.0.2.3", 8081) == b"192.0.2.2"
    # Nothing natns did showed up in the namespace it runs in.
    assert kernel_dump(None) == main_before


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_up_changes_nothing_and_kernel_state_is_identical(make_lab, uid, backend):
    data = seed(uid, backend)
    lab = make_lab(data)
    first = lab.up()
    assert len(first.steps) > 10
    names = lab_namespaces(data)
    before = {ns: kernel_dump(ns) for ns in names + [None]}
    again = lab.up()
    assert again.empty, [s.command() for s in again.steps]
    after = {ns: kernel_dump(ns) for ns in names + [None]}
    assert after == before
    assert lab.status().ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_down_leaves_the_machine_as_it_was(uid, backend, tmp_path):
    data = seed(uid, backend)
    path = write(tmp_path, data)
    main_before = kernel_dump(None)
    try:
        assert natns("up", path).returncode == 0
        assert set(existing(lab_namespaces(data))) == set(lab_namespaces(data))
        res = natns("down", path)
        assert res.returncode == 0, res.stderr
    finally:
        down_lab(data["name"])
    assert existing(lab_namespaces(data)) == []
    assert kernel_dump(None) == main_before
    again = natns("down", path)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_routers_overlapping_cidrs_each_translate_to_their_own_address(make_lab, uid, backend):
    data = two_routers(uid, backend)
    lab = make_lab(data)
    lab.up()
    inet = data["internet"]["namespace"]
    b1, b2, red1, g1 = (f"t{uid}b1", f"t{uid}b2", f"t{uid}red1", f"t{uid}g1")
    with PeerServer(inet, "203.0.113.115", 8080):
        assert tcp_connect(b1, "203.0.113.115", 8080) == b"198.51.100.10"
        assert tcp_connect(b2, "203.0.113.115", 8080) == b"198.51.100.10"
        assert tcp_connect(red1, "203.0.113.115", 8080) == b"198.51.100.10"
        # g1 has the same address as b1 (192.0.2.10), behind the other router.
        assert tcp_connect(g1, "203.0.113.115", 8080) == b"198.51.100.20"
    # Between networks behind the same router: routed, not translated.
    with PeerServer(red1, "192.0.2.130", 8082):
        assert tcp_connect(b1, "192.0.2.130", 8082) == b"192.0.2.10"
    # Two hosts of one network share one L2 segment.
    assert ping(b1, "192.0.2.11").ok
    assert lab.up().empty


def test_capture_sees_the_source_rewritten_only_on_the_external_interface(make_lab, uid):
    from natns.verify.capture import Capture

    data = seed(uid)
    make_lab(data).up()
    tenant, vm = f"t{uid}-tenant1", f"t{uid}-vm"
    points = [(tenant, "eth0"), (vm, "qr-tenant"), (vm, "eth0")]
    with Capture(points, bpf="icmp") as cap:
        assert ping(tenant, SEED_INET, count=2).received == 2
    seen = {point: {(p.src, p.dst) for p in pkts} for point, pkts in cap.packets.items()}
    inside = {("192.0.2.2", SEED_INET), (SEED_INET, "192.0.2.2")}
    assert seen[f"{tenant}:eth0"] == inside
    assert seen[f"{vm}:qr-tenant"] == inside
    assert seen[f"{vm}:eth0"] == {("198.51.100.116", SEED_INET), (SEED_INET, "198.51.100.116")}
    assert all(len(pkts) == 4 for pkts in cap.packets.values())


def test_status_reports_drift_and_up_repairs_it(make_lab, uid):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    vm, tenant = f"t{uid}-vm", f"t{uid}-tenant1"
    nsexec.run(vm, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    nsexec.run(tenant, ["ip", "route", "del", "default"])
    st = {n.name: n for n in lab.status().namespaces}
    assert st[vm].state == "drift" and "net.ipv4.ip_forward" in st[vm].problems[0]
    assert st[tenant].state == "drift"
    assert not ping(tenant, SEED_INET).ok
    fixed = lab.up()
    assert {s.action for s in fixed.steps} == {"set_sysctl", "add_route"}
    assert ping(tenant, SEED_INET).ok
    assert lab.status().ok


def test_status_cli_exit_codes(make_lab, uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    make_lab(data)
    res = natns("status", path, "--json")
    assert res.returncode == 1 and '"missing"' in res.stdout
    assert natns("up", path).returncode == 0
    assert natns("status", path).returncode == 0
    listing = natns("status", "--json")
    assert data["name"] in listing.stdout


def test_removed_host_is_cleaned_up_as_stale(make_lab, uid):
    data = seed(uid)
    data["networks"][0]["hosts"].append({"namespace": f"t{uid}-tenant2", "address": "192.0.2.4"})
    lab = make_lab(data)
    lab.up()
    assert ping(f"t{uid}-tenant1", "192.0.2.4").ok
    del data["networks"][0]["hosts"][1]
    smaller = Lab(topology.parse(data, "test.yaml"))
    steps = smaller.up().steps
    assert ("delete_netns", f"t{uid}-tenant2") in [(s.action, s.target) for s in steps]
    from natns.desired import host_port_name

    router_links = nsexec.run(f"t{uid}-vm", ["ip", "-o", "link"]).stdout
    assert host_port_name(f"t{uid}-tenant2") not in router_links
    assert host_port_name(f"t{uid}-tenant1") in router_links
    assert not kns.exists(f"t{uid}-tenant2")
    assert smaller.up().empty


def test_switching_backend_replaces_the_rules(make_lab, uid):
    data = seed(uid, "nftables")
    lab = make_lab(data)
    lab.up()
    vm = f"t{uid}-vm"
    data["backend"] = "iptables"
    other = Lab(topology.parse(data, "test.yaml"))
    other.up()
    assert "table ip natns" not in nsexec.run(vm, ["nft", "list", "tables"]).stdout
    assert "natns-POSTROUTING" in nsexec.run(vm, ["iptables-save", "-t", "nat"]).stdout
    assert ping(f"t{uid}-tenant1", SEED_INET).ok
    assert other.up().empty


def test_foreign_namespace_is_refused_and_untouched(make_lab, scratch_ns, uid, tmp_path):
    data = seed(uid)
    foreign = scratch_ns("x")
    data["routers"][0]["name"] = foreign
    data["networks"][0]["router"] = foreign
    path = write(tmp_path, data)
    before = kernel_dump(foreign)
    make_lab(data)
    res = natns("up", path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "not created by natns" in res.stderr
    assert kernel_dump(foreign) == before
    assert existing(lab_namespaces(data)) == [foreign]


def test_invalid_topology_exits_2_with_one_line_and_creates_nothing(uid, tmp_path):
    data = seed(uid)
    data["networks"][0]["hosts"][0]["address"] = "192.0.3.2"
    path = write(tmp_path, data)
    for cmd in ("up", "plan", "status", "down"):
        res = natns(cmd, path)
        assert res.returncode == 2, (cmd, res.stderr)
        assert res.stderr == f"{path}: networks[0].hosts[0].address: 192.0.3.2 is outside 192.0.2.0/24\n"
    assert existing(lab_namespaces(data)) == []


def test_without_root_natns_says_so_and_exits_2(uid):
    import pathlib
    import shutil
    import tempfile

    readable = pathlib.Path(tempfile.mkdtemp(prefix="natns-test-"))
    try:
        readable.chmod(0o755)
        path = write(readable, seed(uid))
        res = natns("up", path, user="65534")
    finally:
        shutil.rmtree(readable)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "needs root" in res.stderr
    assert not existing(lab_namespaces(seed(uid)))


def test_exec_runs_in_the_lab_namespace(make_lab, uid):
    data = seed(uid)
    make_lab(data).up()
    res = natns("exec", f"t{uid}-tenant1", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert res.returncode == 0 and "192.0.2.2/24" in res.stdout
    assert natns("exec", f"t{uid}-tenant1", "--", "false").returncode == 1
    res = natns("exec", "no-such-namespace-" + uid, "--", "true")
    assert res.returncode == 2 and "not a natns lab namespace" in res.stderr


def test_plan_shows_the_steps_without_running_them(make_lab, uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    make_lab(data)
    res = natns("plan", path, "--json")
    assert res.returncode == 0
    assert '"create_netns"' in res.stdout and "route replace default via 192.0.2.3" in res.stdout
    assert existing(lab_namespaces(data)) == []
