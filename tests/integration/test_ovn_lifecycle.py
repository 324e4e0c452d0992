"""The OVN engine behind `natns up/plan/down/status/check/attach` (issue 12), on real daemons.

One lab for the module (examples/ovn.yaml, renamed per run, plus a port forward and a
second tenant with the same CIDR behind a second router), brought up with the CLI and
taken down with it at the end, pass or fail; the last test checks that `natns down`
left nothing. One OVN sandbox at a time (the daemons are CPU-hungry on this box).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
import yaml

from natns.engines.ovn import nb, sandbox
from natns.kernel import nsexec
from natns.verify.capture import Capture
from tests.integration import ovn_labs
from tests.integration.labs import PeerServer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(sandbox.missing_binaries()),
                       reason="OVS/OVN not installed (scripts/bootstrap.sh installs them): missing "
                       + ", ".join(sandbox.missing_binaries())),
]


#: What `natns check` proves on the lab (examples/ovn.yaml is the issue's form exactly, without checks).
CHECKS = [
    {"from": "vm1", "to": "203.0.113.114", "source": "198.51.100.116"},  # SNAT, from the non-gateway ch3
    {"from": "vm2", "to": "203.0.113.114", "source": "198.51.100.50"},   # the floating IP's host, outbound
    {"from": "inet", "to": "198.51.100.50", "tcp": 8080, "source": "198.51.100.1"},  # floating IP inbound
    {"from": "inet", "to": "192.0.2.2", "expect": "blocked"},            # the private network, from outside
]


def _data(uid: str) -> dict:
    d = yaml.safe_load(ovn_labs.EXAMPLE.read_text())
    d["checks"] = [dict(c) for c in CHECKS]
    d["port_forwards"] = [{"router": "r1", "protocol": "tcp", "port": 2222, "to": "192.0.2.2:22"}]
    d["routers"].append({"name": "r2", "external": {"address": "198.51.100.117/24", "gateway": "198.51.100.1"},
                         "gateway_chassis": ["ch2"], "snat": "masquerade"})
    d["networks"].append({"name": "tenant2", "router": "r2", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                          "hosts": [{"namespace": "vm3", "address": "192.0.2.2", "chassis": "ch2"}]})
    return ovn_labs.renamed(uid, d)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = _data(ovn_labs.uid())
    path = ovn_labs.write(tmp_path_factory.mktemp("ovn"), d)
    names = ovn_labs.all_namespaces(d)
    info = {"d": d, "file": path, "names": names, "pids": []}
    try:
        t0 = time.monotonic()
        r = ovn_labs.natns("up", path)
        info["up_seconds"] = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        info["pids"] = list(ovn_labs.daemon_pids(d["name"]).values())
        yield info
    finally:
        ovn_labs.natns("down", path)
        sandbox.down(d["name"])  # in case the CLI's down failed: leave nothing either way


def _ns(lab, name: str) -> str:
    return {n: n for n in lab["names"]}[[n for n in lab["names"] if n.endswith("-" + name)][0]]


def _nbctl(lab, *args: str) -> str:
    lo = sandbox.layout(_topology(lab))
    return subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", *args], check=True, capture_output=True,
                          text=True).stdout


def _topology(lab):
    from natns import topology

    return topology.load(lab["file"])


def _tcp_seen(client_ns: str, server_ns: str, listen: str, connect: str, port: int, cport: int | None = None) -> str:
    """One TCP exchange; the client address the server saw."""
    with PeerServer(server_ns, listen, port) as srv:
        def go():
            with socket.create_connection((connect, cport or port), timeout=5) as s:
                s.sendall(b"natns")
                return s.recv(100).decode()
        return nsexec.call_in(client_ns, go) and srv.seen[-1]


def test_up_returns_ready_and_a_second_up_changes_nothing(lab):
    name = lab["d"]["name"]
    r = ovn_labs.natns("plan", "--json", lab["file"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == []
    nbdb = os.path.join(sandbox.lab_dir(name), "central", "nb.db")
    size = os.path.getsize(nbdb)  # a standalone ovsdb-server appends every transaction to its file
    before = ovn_labs.daemon_pids(name)
    assert len(before) == 3 + 3 * 3
    r = ovn_labs.natns("up", "--json", lab["file"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["changed"] == 0
    assert ovn_labs.daemon_pids(name) == before  # no daemon restarted
    assert os.path.getsize(nbdb) == size
    print(f"\nnatns up (3 chassis, 2 routers, 3 hosts) to traffic: {lab['up_seconds']:.2f} s")


def test_natns_check_probe_and_capture_work_on_the_lab_namespaces(lab):
    r = ovn_labs.natns("check", "--timeout", "3", lab["file"])  # a loaded 2-core box: first packets slow
    assert r.returncode == 0, r.stdout + r.stderr
    r = ovn_labs.natns("probe", lab["file"], "--from", _ns(lab, "vm1"), "--to", "203.0.113.114", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["source_seen"] == "198.51.100.116"
    inet = lab["d"]["internet"]["namespace"]
    r = ovn_labs.natns("capture", lab["file"], f"{inet}:ext", "--from", _ns(lab, "vm2"), "--to", "203.0.113.114",
                       "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "198.51.100.50" in r.stdout


def test_snat_and_floating_ip_sources_seen_in_the_internet_namespace(lab):
    inet = lab["d"]["internet"]["namespace"]
    with Capture([(inet, "ext")], bpf="tcp port 8080 or tcp port 8081") as cap:
        assert _tcp_seen(_ns(lab, "vm1"), inet, "203.0.113.114", "203.0.113.114", 8080) == "198.51.100.116"
        assert _tcp_seen(_ns(lab, "vm2"), inet, "203.0.113.114", "203.0.113.114", 8081) == "198.51.100.50"
        assert _tcp_seen(inet, _ns(lab, "vm2"), "0.0.0.0", "198.51.100.50", 8082) == "198.51.100.1"
    pkts = cap.packets[f"{inet}:ext"]
    to_inet = {(p.src, p.dport) for p in pkts if p.dst == "203.0.113.114"}
    assert ("198.51.100.116", 8080) in to_inet and ("198.51.100.50", 8081) in to_inet
    assert not [p for p in pkts if p.src.startswith("192.0.2.") or p.dst.startswith("192.0.2.")]


def test_port_forward_reaches_the_host_inbound(lab):
    inet = lab["d"]["internet"]["namespace"]
    assert _tcp_seen(inet, _ns(lab, "vm1"), "0.0.0.0", "198.51.100.116", 22, 2222) == "198.51.100.1"
    lb = _nbctl(lab, "lr-lb-list", nb.router_name(lab["d"]["name"], "r1"))
    assert "198.51.100.116:2222" in lb and "192.0.2.2:22" in lb


def test_unsolicited_inbound_to_a_host_without_floating_ip_is_dropped(lab):
    """With a route to the tenant network in the internet namespace, a SYN to vm1's private
    address is routed by OVN up to vm1's port and dropped there by the port group's ACLs;
    the same to vm2 (the floating IP's host, allowed inbound) arrives: routing is not why."""
    inet = lab["d"]["internet"]["namespace"]
    vm1, vm2 = _ns(lab, "vm1"), _ns(lab, "vm2")
    nsexec.run(inet, ["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.116"])
    try:
        with Capture([(vm1, "eth0"), (vm2, "eth0")], bpf="tcp port 7000") as cap:
            for dst in ("192.0.2.2", "192.0.2.3"):
                def syn(dst=dst):
                    s = socket.socket()
                    s.settimeout(1.0)
                    try:
                        s.connect((dst, 7000))
                    except OSError:
                        pass
                    finally:
                        s.close()
                nsexec.call_in(inet, syn)
    finally:
        nsexec.run(inet, ["ip", "route", "del", "192.0.2.0/24"])
    assert not [p for p in cap.packets[f"{vm1}:eth0"] if p.proto == "tcp"]
    assert [p for p in cap.packets[f"{vm2}:eth0"] if p.proto == "tcp" and p.src == "198.51.100.1"]


def test_spoofed_source_is_dropped_by_port_security(lab):
    vm1, vm2 = _ns(lab, "vm1"), _ns(lab, "vm2")
    nsexec.run(vm1, ["ping", "-c", "1", "-W", "2", "192.0.2.3"])  # the real source passes (and ARP is learnt)
    nsexec.run(vm1, ["ip", "addr", "add", "192.0.2.99/32", "dev", "eth0"])
    try:
        with Capture([(vm2, "eth0")], bpf="icmp") as cap:
            subprocess.run(["ip", "netns", "exec", vm1, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "192.0.2.99",
                            "192.0.2.3"], capture_output=True)
            nsexec.run(vm1, ["ping", "-c", "1", "-W", "2", "192.0.2.3"])
    finally:
        nsexec.run(vm1, ["ip", "addr", "del", "192.0.2.99/32", "dev", "eth0"])
    srcs = {p.src for p in cap.packets[f"{vm2}:eth0"]}
    assert "192.0.2.2" in srcs and "192.0.2.99" not in srcs


def test_two_tenants_with_the_same_cidr_stay_apart(lab):
    inet = lab["d"]["internet"]["namespace"]
    vm1, vm3 = _ns(lab, "vm1"), _ns(lab, "vm3")  # both 192.0.2.2, behind r1 and r2
    assert _tcp_seen(vm3, inet, "203.0.113.114", "203.0.113.114", 8090) == "198.51.100.117"
    assert _tcp_seen(vm1, inet, "203.0.113.114", "203.0.113.114", 8091) == "198.51.100.116"
    with Capture([(_ns(lab, "vm2"), "eth0")], bpf="icmp") as cap:
        r = subprocess.run(["ip", "netns", "exec", vm3, "ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.3"],
                           capture_output=True)
    assert r.returncode != 0  # 192.0.2.3 is vm2 in the other tenant: not reachable from vm3's network
    assert not cap.packets[f"{_ns(lab, 'vm2')}:eth0"]


def test_status_names_drift_and_up_repairs_only_that(lab):
    name, d = lab["d"]["name"], lab["d"]
    t = _topology(lab)
    lr = nb.router_name(name, "r1")
    # Rows natns did not write: never touched.
    _nbctl(lab, "ls-add", f"foreign-{name}")
    _nbctl(lab, "lr-nat-add", lr, "dnat_and_snat", "198.51.100.60", "192.0.2.9")
    # Drift: a row deleted and a column edited by hand, a daemon killed (by PID).
    _nbctl(lab, "lr-nat-del", lr, "dnat_and_snat", "198.51.100.50")
    vm1_port = nb.host_port(name, _ns(lab, "vm1"))
    _nbctl(lab, "lsp-set-addresses", vm1_port, "0a:00:00:00:00:01 192.0.2.2")
    before = ovn_labs.daemon_pids(name)
    os.kill(before["ch2/ovn-controller"], 9)
    time.sleep(0.2)
    r = ovn_labs.natns("status", "--json", lab["file"])
    assert r.returncode == 1, r.stdout + r.stderr
    st = json.loads(r.stdout)
    bad = {n["namespace"]: n for n in st["namespaces"] if n["state"] != "ok"}
    ch2 = [c["namespace"] for c in d["ovn"]["sandbox"]["chassis"] if c["name"] == "ch2"][0]
    assert set(bad) == {ch2, "(northbound)", _ns(lab, "vm3")}, bad
    assert any("ovn-controller is not running" in p for p in bad[ch2]["problems"])
    nbp = "\n".join(bad["(northbound)"]["problems"])
    assert "NAT nat:fip:r1:198.51.100.50 is missing" in nbp and "lr-nat-add" in nbp
    assert "lsp:host:" in nbp and "addresses differs" in nbp
    r = ovn_labs.natns("plan", "--json", lab["file"])
    actions = [s["action"] for s in json.loads(r.stdout)["steps"]]
    assert actions.count("write_nb") == 2 and "start_chassis" in actions
    r = ovn_labs.natns("up", lab["file"])
    assert r.returncode == 0, r.stderr
    after = ovn_labs.daemon_pids(name)
    assert {k: v for k, v in after.items() if not k.startswith("ch2/")} == \
        {k: v for k, v in before.items() if not k.startswith("ch2/")}  # only ch2 was made again
    r = ovn_labs.natns("status", "--json", lab["file"])
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["gateways"]["r1"]["active"] == "ch1"
    out = _nbctl(lab, "lr-nat-list", lr)
    assert "198.51.100.60" in out and "198.51.100.50" in out
    assert f"foreign-{name}" in _nbctl(lab, "ls-list")
    assert _tcp_seen(_ns(lab, "vm3"), d["internet"]["namespace"], "203.0.113.114", "203.0.113.114", 8092) \
        == "198.51.100.117"  # vm3 (on the re-made ch2) is plugged again and bound


def test_a_port_left_unbound_is_named_by_status_and_up_binds_it_again(lab):
    """A host's logical port deleted by hand: its chassis releases the binding (no
    ovn-installed on its veth); status names the unbound port and the missing row, and
    `up` writes the row back, after which the port is bound and traffic flows."""
    name = lab["d"]["name"]
    vm1 = _ns(lab, "vm1")
    _nbctl(lab, "lsp-del", nb.host_port(name, vm1))
    lo = sandbox.layout(_topology(lab))
    deadline = time.monotonic() + 10
    while sandbox.port_installed(lo.place("ch3"), sandbox.host_tap(vm1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = ovn_labs.natns("status", "--json", lab["file"])
    assert r.returncode == 1
    bad = {n["namespace"]: n["problems"] for n in json.loads(r.stdout)["namespaces"] if n["state"] != "ok"}
    assert any("is not bound on chassis ch3" in p for p in bad[vm1]), bad
    assert any("lsp:host:" in p and "is missing" in p for p in bad["(northbound)"]), bad
    r = ovn_labs.natns("up", lab["file"])
    assert r.returncode == 0, r.stderr
    assert ovn_labs.natns("status", lab["file"]).returncode == 0
    nsexec.run(vm1, ["ping", "-c", "1", "-W", "2", "203.0.113.114"], timeout=10)


def test_external_nb_mode_and_attach_use_the_same_nb_code(lab, tmp_path):
    """A second lab with `ovn: {nb: tcp:...}` pointing at the sandbox's NB, run from inside
    chassis ch3's namespace (which reaches the NB over the underlay): `up` writes only its
    NB rows, `attach --chassis ch3` plugs its host into ch3's br-int (by ch3's OVS socket),
    traffic flows with its own SNAT address, and `down` removes exactly its rows and host."""
    d = lab["d"]
    lo = sandbox.layout(_topology(lab))
    ch3 = lo.place("ch3")
    name2 = d["name"] + "x"
    vmx = f"{name2}-vmx"
    ext = {"name": name2, "engine": "ovn", "ovn": {"nb": lo.nb_tcp},
           "internet": {"namespace": d["internet"]["namespace"], "address": "198.51.100.1/24",
                        "hosts": ["203.0.113.114"]},
           "routers": [{"name": "r9", "external": {"address": "198.51.100.118/24", "gateway": "198.51.100.1"},
                        "gateway_chassis": ["ch1"], "snat": "198.51.100.118"}],
           "networks": [{"name": "net9", "router": "r9", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                         "hosts": [{"namespace": vmx, "address": "192.0.2.2", "chassis": "ch3"}]}]}
    path = ovn_labs.write(tmp_path, ext, "ext.yaml")
    rows1 = _nbctl(lab, "--bare", "--columns=_uuid", "find", "NAT", f"external_ids:\"{nb.LAB}\"={d['name']}")
    try:
        r = ovn_labs.natns("plan", path, ns=ch3.ns)
        assert r.returncode == 0 and "ovn-nbctl lr-add natns-" + name2 + "-r9" in r.stdout, r.stdout + r.stderr
        r = ovn_labs.natns("up", path, ns=ch3.ns)
        assert r.returncode == 0, r.stderr
        r = ovn_labs.natns("attach", path, "--chassis", "ch3", "--ovs-db", ch3.db, ns=ch3.ns)
        assert r.returncode == 0, r.stderr
        assert _tcp_seen(vmx, d["internet"]["namespace"], "203.0.113.114", "203.0.113.114", 8093) == "198.51.100.118"
        assert ovn_labs.natns("up", "--json", path, ns=ch3.ns).stdout.count('"changed": 0') == 1
        assert "no changes" in ovn_labs.natns("attach", path, "--chassis", "ch3", "--ovs-db", ch3.db, ns=ch3.ns).stdout
        r = ovn_labs.natns("down", "--lab", name2, ns=ch3.ns)
        assert r.returncode == 0, r.stderr
        left = _nbctl(lab, "--bare", "--columns=_uuid", "find", "Logical_Router",
                      f"external_ids:\"{nb.LAB}\"={name2}")
        assert left.strip() == ""
        assert _nbctl(lab, "--bare", "--columns=_uuid", "find", "NAT",
                      f"external_ids:\"{nb.LAB}\"={d['name']}") == rows1  # the first lab's rows stay
        assert not os.path.exists(f"/run/netns/{vmx}")
        ports = subprocess.run(["ovs-vsctl", f"--db={ch3.db}", "list-ports", "br-int"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert sandbox.host_tap(vmx) not in ports
        assert not os.path.exists(sandbox.lab_dir(name2))
    finally:
        ovn_labs.natns("down", "--lab", name2, ns=ch3.ns)


def test_a_router_taken_out_of_the_file_goes_exactly_and_comes_back(lab, tmp_path):
    """The file without r2, tenant2 and vm3: `plan` removes vm3's namespace and deletes r2's
    and tenant2's rows (one command per root row: what goes with it shows none), `up` does
    it and leaves the rest running; the full file again brings them back, traffic included."""
    d, name = lab["d"], lab["d"]["name"]
    small = json.loads(json.dumps(d))
    small["routers"] = [r for r in small["routers"] if r["name"] != "r2"]
    small["networks"] = [n for n in small["networks"] if n["name"] != "tenant2"]
    path = ovn_labs.write(tmp_path, small)
    vm3 = _ns(lab, "vm3")
    before = ovn_labs.daemon_pids(name)
    r = ovn_labs.natns("plan", "--json", path)
    steps = json.loads(r.stdout)["steps"]
    commands = [s["command"] for s in steps]
    assert [c for c in commands if c.startswith(f"ip netns del {vm3} && ovs-vsctl")]
    assert f"ovn-nbctl lr-del {nb.router_name(name, 'r2')}" in commands
    assert f"ovn-nbctl ls-del {nb.switch_name(name, 'tenant2')}" in commands
    assert f"ovn-nbctl pg-del {nb.port_group_name(name, 'r2')}" in commands
    assert f"ovn-nbctl lsp-del natns-{name}-ext-r2" in commands  # a port on a switch that stays
    assert all(s["action"] in ("remove_part", "write_nb") for s in steps), steps
    r = ovn_labs.natns("up", path)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(f"/run/netns/{vm3}")
    assert ovn_labs.daemon_pids(name) == before
    assert _nbctl(lab, "--bare", "--columns=_uuid", "find", "Logical_Router",
                  f'external_ids:"{nb.KEY}"="lr:r2"').strip() == ""
    r = ovn_labs.natns("up", lab["file"])
    assert r.returncode == 0, r.stderr
    assert _tcp_seen(vm3, d["internet"]["namespace"], "203.0.113.114", "203.0.113.114", 8094) == "198.51.100.117"


def test_down_leaves_nothing(lab):
    name = lab["d"]["name"]
    pids = list(ovn_labs.daemon_pids(name).values())
    r = ovn_labs.natns("down", lab["file"])
    assert r.returncode == 0, r.stderr
    assert ovn_labs.nothing_left(name, lab["names"], pids + lab["pids"]) == []
    r = ovn_labs.natns("down", lab["file"])
    assert r.returncode == 0 and "nothing to remove" in r.stdout, r.stdout + r.stderr
