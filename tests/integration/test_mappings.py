"""Floating IPs, port forwards, hairpin, isolation, anti-spoofing, conntrack hygiene.

Real traffic on real namespaces, both backends.
"""

from __future__ import annotations

import socket

import pytest

from natns import Lab, topology
from natns.firewall import get_backend
from natns.verify.probe import ping, tcp_connect
from natns.kernel import nsexec

from .labs import PeerServer, Stream, mapped

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
INET = "198.51.100.1"


def names(uid):
    return f"t{uid}-tenant1", f"t{uid}-tenant2", f"t{uid}-vm", f"t{uid}-inet"


def tcp_fails(ns: str, addr: str, port: int) -> bool:
    try:
        tcp_connect(ns, addr, port, timeout=1)
    except OSError:
        return True
    return False


def udp_ask(ns: str, addr: str, port: int) -> bytes | None:
    def go():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(b"q", (addr, port))
            try:
                return s.recvfrom(100)[0]
            except OSError:
                return None
    return nsexec.call_in(ns, go)


class UdpPeer:
    """A UDP server in a namespace that answers with the address it saw."""

    def __init__(self, ns, addr, port):
        import threading

        self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.bind((addr, port))
        self.sock.settimeout(5)
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        try:
            data, peer = self.sock.recvfrom(100)
            self.sock.sendto(peer[0].encode(), peer)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_floating_ip_and_port_forwards_in_and_out(make_lab, uid, backend):
    lab = make_lab(mapped(uid, backend))
    lab.up()
    t1, t2, vm, inet = names(uid)
    # Inbound to the floating IP reaches tenant1, which sees the real client.
    with PeerServer(t1, "192.0.2.2", 80):
        assert tcp_connect(inet, "198.51.100.50", 80) == INET.encode()
    # Inbound to port forwards reaches tenant2, port by port across a range.
    with PeerServer(t2, "192.0.2.4", 80):
        assert tcp_connect(inet, "198.51.100.116", 8080) == INET.encode()
    with PeerServer(t2, "192.0.2.4", 9101):
        assert tcp_connect(inet, "198.51.100.116", 9001) == INET.encode()
    udp = UdpPeer(t2, "192.0.2.4", 53)
    try:
        assert udp_ask(inet, "198.51.100.116", 5353) == INET.encode()
    finally:
        udp.close()
    # Outbound: tenant1 leaves with its floating IP, tenant2 with the router's address.
    with PeerServer(inet, "203.0.113.114", 8000):
        assert tcp_connect(t1, "203.0.113.114", 8000) == b"198.51.100.50"
        assert tcp_connect(t2, "203.0.113.114", 8000) == b"198.51.100.116"
    # The floating address answers ARP on the external network: inet learned the router's MAC.
    assert ping(inet, "198.51.100.50").ok
    neigh = nsexec.run(inet, ["ip", "-j", "neigh", "show", "198.51.100.50"]).stdout
    import json

    mac = json.loads(nsexec.run(vm, ["ip", "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    assert mac in neigh
    assert lab.up().empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_hairpin(make_lab, uid, backend):
    make_lab(mapped(uid, backend)).up()
    t1, t2, vm, inet = names(uid)
    with PeerServer(t1, "192.0.2.2", 80):
        # tenant2 reaches tenant1 through tenant1's floating IP; the reply comes
        # back through the router because the source was translated to it.
        assert tcp_connect(t2, "198.51.100.50", 80) == b"198.51.100.116"
    with PeerServer(t2, "192.0.2.4", 80):
        assert tcp_connect(t1, "198.51.100.116", 8080) == b"198.51.100.116"


@pytest.mark.parametrize("backend", BACKENDS)
def test_isolation_and_anti_spoofing(make_lab, uid, backend):
    make_lab(mapped(uid, backend)).up()
    t1, t2, vm, inet = names(uid)
    # Even with a route to the tenants, the outside can't reach them unsolicited.
    nsexec.run(inet, ["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.116"])
    assert not ping(inet, "192.0.2.4").ok
    with PeerServer(t2, "192.0.2.4", 22):
        assert tcp_fails(inet, "192.0.2.4", 22)
    # Nothing answers on the router's external address but the mappings.
    assert not ping(inet, "198.51.100.116").ok
    with PeerServer(vm, "198.51.100.116", 2222):
        assert tcp_fails(inet, "198.51.100.116", 2222)
    # A tenant host sending from an address outside its network is dropped at the router.
    nsexec.run(t1, ["ip", "addr", "add", "203.0.113.99/32", "dev", "lo"])
    assert ping(t1, "203.0.113.114").ok
    spoofed = nsexec.run(t1, ["ping", "-c1", "-W1", "-I", "203.0.113.99", "203.0.113.114"], check=False)
    assert spoofed.returncode != 0
    drops = [c for c in get_backend(backend).counters(vm) if c["comment"] == "natns anti-spoofing tenant"]
    assert sum(c["packets"] for c in drops) >= 1


def test_isolation_can_be_turned_off(make_lab, uid):
    data = mapped(uid)
    data["routers"][0]["isolation"] = False
    make_lab(data).up()
    t1, t2, vm, inet = names(uid)
    nsexec.run(inet, ["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.116"])
    assert ping(inet, "192.0.2.4").ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_removed_floating_ip_stops_working_at_once(make_lab, uid, backend):
    data = mapped(uid, backend)
    lab = make_lab(data)
    lab.up()
    t1, t2, vm, inet = names(uid)
    inbound = Stream(t1, "192.0.2.2", 80, inet, "198.51.100.50")
    try:
        assert inbound.roundtrip()
        ct = nsexec.run(vm, ["conntrack", "-L", "--orig-dst", "198.51.100.50"], check=False).stdout
        assert "198.51.100.50" in ct
        data["floating_ips"] = []
        smaller = Lab(topology.parse(data, "test.yaml"))
        steps = smaller.up().steps
        assert "flush_conntrack" in [s.action for s in steps]
        ct = nsexec.run(vm, ["conntrack", "-L", "--orig-dst", "198.51.100.50"], check=False).stdout
        assert "198.51.100.50" not in ct
        assert not inbound.roundtrip(timeout=1)
        assert tcp_fails(inet, "198.51.100.50", 80)
    finally:
        inbound.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_established_connection_survives_an_unrelated_up(make_lab, uid, backend):
    data = mapped(uid, backend)
    lab = make_lab(data)
    lab.up()
    t1, t2, vm, inet = names(uid)
    out = Stream(inet, "203.0.113.114", 7000, t1, "203.0.113.114")
    inbound = Stream(t2, "192.0.2.4", 80, inet, "198.51.100.116", 8080)
    try:
        assert out.roundtrip() and inbound.roundtrip()
        assert out.peer == ["198.51.100.50"]
        data["floating_ips"].append({"router": f"t{uid}-vm", "address": "198.51.100.51", "host": "192.0.2.4"})
        data["port_forwards"].append({"router": f"t{uid}-vm", "protocol": "tcp", "port": 8443, "to": "192.0.2.2:443"})
        grown = Lab(topology.parse(data, "test.yaml"))
        steps = grown.up().steps
        if backend == "nftables":
            # Only the mappings change: elements and one address, no reload; the running
            # flows are checked against the new mappings (and, translated right, stay).
            assert {s.action for s in steps} == {"update_firewall", "add_address", "forget_conntrack",
                                                 "clear_flush_notes"}
            assert {s.inner.action for s in steps if s.action == "clear_flush_notes"} == {"update_firewall"}
        for i in range(5):
            assert out.roundtrip(b"x%d\n" % i) and inbound.roundtrip(b"y%d\n" % i)
    finally:
        out.close()
        inbound.close()


def test_adding_a_floating_ip_is_an_element_change_that_keeps_counters(make_lab, uid):
    data = mapped(uid)
    lab = make_lab(data)
    lab.up()
    t1, t2, vm, inet = names(uid)
    assert ping(t2, "203.0.113.114").ok
    before = {c["comment"]: c["packets"] for c in get_backend("nftables").counters(vm)}
    assert before["natns snat tenant"] >= 1
    data["floating_ips"].append({"router": f"t{uid}-vm", "address": "198.51.100.51", "host": "192.0.2.4"})
    plan = Lab(topology.parse(data, "test.yaml")).plan()
    fw = [s for s in plan.steps if "firewall" in s.action]
    assert [s.action for s in fw] == ["update_firewall"]
    assert "fip_dnat +1 -0" in fw[0].command()
    Lab(topology.parse(data, "test.yaml")).up()
    after = {c["comment"]: c["packets"] for c in get_backend("nftables").counters(vm)}
    assert after["natns snat tenant"] == before["natns snat tenant"]
    with PeerServer(t2, "192.0.2.4", 80):
        assert tcp_connect(inet, "198.51.100.51", 80) == INET.encode()


def _mappings_lab(uid: str, backend: str) -> dict:
    import yaml

    with open("examples/mappings.yaml") as fh:
        data = yaml.safe_load(fh.read().replace("mp-", f"t{uid}"))
    data["name"] = f"mp{uid}"
    data["backend"] = backend
    return data


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_routers_overlapping_cidrs_five_floating_ips_three_port_forwards(make_lab, uid, backend):
    data = _mappings_lab(uid, backend)
    lab = make_lab(data)
    lab.up()
    inet = data["internet"]["namespace"]
    host_ns = {(n["router"], h["address"]): h["namespace"] for n in data["networks"] for h in n["hosts"]}
    # Every floating IP reaches its own host (same private address behind each router),
    # and that host leaves the lab with its floating address.
    for f in data["floating_ips"]:
        ns = host_ns[(f["router"], f["host"])]
        with PeerServer(ns, f["host"], 80):
            assert tcp_connect(inet, f["address"], 80) == INET.encode(), f
        with PeerServer(inet, "203.0.113.114", 8000):
            assert tcp_connect(ns, "203.0.113.114", 8000) == f["address"].encode(), f
    ext = {r["name"]: r["external"]["address"].split("/")[0] for r in data["routers"]}
    r1, r2, r3 = (r["name"] for r in data["routers"])
    with PeerServer(host_ns[(r1, "192.0.2.11")], "192.0.2.11", 80):
        assert tcp_connect(inet, ext[r1], 8080) == INET.encode()
    with PeerServer(host_ns[(r2, "192.0.2.10")], "192.0.2.10", 22):
        assert tcp_connect(inet, ext[r2], 2222) == INET.encode()
    c1 = host_ns[(r3, "192.0.2.10")]
    for port in (5000, 5001):
        udp = UdpPeer(c1, "192.0.2.10", port)
        try:
            assert udp_ask(inet, ext[r3], port) == INET.encode()
        finally:
            udp.close()
    # A port forward exists only on its own router; tenants of one router reach
    # another's tenants only through its public mappings.
    a1 = host_ns[(r1, "192.0.2.10")]
    assert tcp_fails(inet, ext[r3], 8080)
    with PeerServer(host_ns[(r2, "192.0.2.10")], "192.0.2.10", 80):
        assert tcp_connect(a1, "198.51.100.61", 80) == b"198.51.100.51"
    assert lab.up().empty


def test_a_thousand_floating_ips_are_one_incremental_update(make_lab, uid):
    """1,000 floating IPs on a running nftables router: one element transaction.

    Needs more addresses than the documentation ranges hold, so this lab uses
    100.64.0.0/16 (external 100.64.0.0/20, private 100.64.16.0/20), still only
    between namespaces the test built.
    """
    vm, inet = f"t{uid}-vm", f"t{uid}-inet"
    data = {
        "name": f"k{uid}",
        "internet": {"namespace": inet, "address": "100.64.0.1/20"},
        "routers": [{"name": vm, "external": {"address": "100.64.0.2/20"}}],
        "networks": [{"name": "big", "router": vm, "cidr": "100.64.16.0/20", "gateway": "100.64.16.1",
                      "hosts": [{"namespace": f"t{uid}-h", "address": "100.64.16.10"}]}],
    }
    lab = make_lab(data)
    lab.up()
    import ipaddress

    ext = list(ipaddress.ip_network("100.64.0.0/20").hosts())[10:1010]
    priv = list(ipaddress.ip_network("100.64.16.0/20").hosts())[100:1100]
    data["floating_ips"] = [{"router": vm, "address": str(e), "host": str(p)} for e, p in zip(ext, priv)]
    grown = Lab(topology.parse(data, "test.yaml"))
    plan = grown.plan()
    fw = [s for s in plan.steps if "firewall" in s.action]
    assert [s.action for s in fw] == ["update_firewall"]
    assert "fip_dnat +1000 -0" in fw[0].command() and "fip_snat +1000 -0" in fw[0].command()
    grown.up()
    listed = nsexec.run(vm, ["nft", "-j", "list", "map", "ip", "natns", "fip_dnat"]).stdout
    assert listed.count('"100.64.') == 2000
    assert grown.up().empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_connections_are_counted_per_floating_ip_and_forwarded_port(make_lab, uid, backend, tmp_path):
    """`status --counters` counts, per mapping, the connections NAT translated: nftables from
    each map element's own counter, iptables from the one rule per mapping. Checked against
    the connections made here, and for nftables against the kernel's map listing."""
    import json

    from .labs import natns, write

    data = mapped(uid, backend)
    lab = make_lab(data)
    lab.up()
    path = write(tmp_path, data)
    t1, t2, vm, inet = names(uid)
    with PeerServer(t1, "192.0.2.2", 80):
        for _ in range(3):
            assert tcp_connect(inet, "198.51.100.50", 80) == INET.encode()
    with PeerServer(t2, "192.0.2.4", 80):
        for _ in range(2):
            assert tcp_connect(inet, "198.51.100.116", 8080) == INET.encode()
    with PeerServer(inet, "203.0.113.114", 8000):
        for _ in range(4):
            assert tcp_connect(t1, "203.0.113.114", 8000) == b"198.51.100.50"
        assert tcp_connect(t2, "203.0.113.114", 8000) == b"198.51.100.116"  # not a floating IP's
    res = natns("status", path, "--counters", "--json")
    assert res.returncode == 0, res.stderr
    (router,) = json.loads(res.stdout)["counters"]
    got = {(m["kind"], m["outside"], m["inside"]): m["packets"] for m in router["mappings"]}
    assert got[("fip in", "198.51.100.50", "192.0.2.2")] == 3
    assert got[("fip out", "198.51.100.50", "192.0.2.2")] == 4
    assert got[("tcp", "198.51.100.116:8080", "192.0.2.4:80")] == 2
    assert got[("tcp", "198.51.100.116:9000", "192.0.2.4:9100")] == 0
    assert got[("udp", "198.51.100.116:5353", "192.0.2.4:53")] == 0
    assert len(got) == 2 + 1 + 3 + 1  # one per floating IP direction and per forwarded port
    if backend == "nftables":
        raw = json.loads(nsexec.run(vm, ["nft", "-j", "list", "map", "ip", "natns", "fip_dnat"]).stdout)
        (m,) = [o["map"] for o in raw["nftables"] if "map" in o]
        assert [(e[0]["elem"]["val"], e[0]["elem"]["counter"]["packets"]) for e in m["elem"]] == [("198.51.100.50", 3)]
        # the rule that looks up the outbound map has no counter of its own
        rules = {r["comment"]: r["packets"] for r in router["rules"]}
        assert rules["natns floating ips out"] is None and rules["natns snat tenant"] == 1
    # an element change keeps the other elements' counts
    data["floating_ips"].append({"router": f"t{uid}-vm", "address": "198.51.100.51", "host": "192.0.2.4"})
    Lab(topology.parse(data, "test.yaml")).up()
    after = {(m["kind"], m["outside"]): m["packets"]
             for m in get_backend(backend).mapping_counters(vm)}
    if backend == "nftables":
        assert after[("fip in", "198.51.100.50")] == 3 and after[("fip in", "198.51.100.51")] == 0
    else:  # iptables reloads its chains: the counts start again
        assert after[("fip in", "198.51.100.50")] == 0 and after[("fip in", "198.51.100.51")] == 0
