"""IPv6 on real namespaces, both backends (issue 13): routed and NAT66 egress with the
source the far end really sees, IPv4 unchanged beside it, default-deny inbound but the
ingress entry, anti-spoofing, idempotency and an exact down."""

from __future__ import annotations

import socket
import threading

import pytest

from natns.kernel import nsexec

from .labs import existing, lab_namespaces

BACKENDS = ["nftables", "iptables"]
INET6, INET4 = "2001:db8:ffff::114", "203.0.113.114"
HOST6 = "2001:db8:1::2"


def dual(uid: str, backend: str, snat6: str = "off") -> dict:
    """examples/dual-stack.yaml with unique names."""
    r = {"name": f"t{uid}-vm", "snat": "masquerade", "snat6": snat6,
         "external": {"interface": "eth0", "address": "198.51.100.116/24", "gateway": "198.51.100.1",
                      "address6": "2001:db8:ff::116/64", "gateway6": "2001:db8:ff::1"}}
    if snat6 == "off":
        r["ingress"] = [{"to": HOST6, "protocol": "tcp", "port": 80}]
    return {
        "name": f"d{uid}", "backend": backend,
        "internet": {"namespace": f"t{uid}-inet", "address": "198.51.100.1/24", "address6": "2001:db8:ff::1/64",
                     "hosts": [INET4, INET6]},
        "routers": [r],
        "networks": [{"name": "tenant", "router": f"t{uid}-vm", "cidr": "192.0.2.0/24", "gateway": "192.0.2.3",
                      "cidr6": "2001:db8:1::/64", "gateway6": "2001:db8:1::1",
                      "hosts": [{"namespace": f"t{uid}-tenant1", "address": "192.0.2.2", "address6": HOST6}]}],
    }


class Server:
    """A TCP server in namespace `ns` on `addr`:`port` that answers each client with the address it saw."""

    def __init__(self, ns: str, addr: str, port: int):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = nsexec.call_in(ns, lambda: socket.create_server((addr, port), family=fam))
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while True:
                conn, peer = self.sock.accept()
                with conn:
                    conn.sendall(peer[0].encode())
        except OSError:
            return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)


def connect(ns: str, addr: str, port: int, timeout: float = 1.5) -> bytes | None:
    """What a server at `addr`:`port` answers a client in `ns` (None: no connection)."""
    def go():
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect((addr, port))
                return s.recv(100)
            except OSError:
                return None
    return nsexec.call_in(ns, go)


def ping6(ns: str, addr: str) -> bool:
    return nsexec.run(ns, ["ping", "-6", "-c", "1", "-W", "2", addr], check=False).returncode == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_routed_v6_keeps_the_tenants_source_and_opens_exactly_the_ingress_port(make_lab, uid, backend):
    data = dual(uid, backend)
    lab = make_lab(data)
    assert len(lab.up().steps) > 10
    inet, vm, tenant = f"t{uid}-inet", f"t{uid}-vm", f"t{uid}-tenant1"
    assert ping6(tenant, INET6)  # at once: no duplicate address detection to wait for
    with Server(inet, INET6, 8080), Server(inet, INET4, 8080):
        assert connect(tenant, INET6, 8080) == HOST6.encode()  # routed: the tenant's own address
        assert connect(tenant, INET4, 8080) == b"198.51.100.116"  # IPv4 SNAT as before
    with Server(tenant, "::", 80), Server(tenant, "::", 81):
        assert connect(inet, HOST6, 80) == b"2001:db8:ff::1"  # the ingress entry
        assert connect(inet, HOST6, 81) is None  # any other port: default deny
    assert nsexec.run(vm, ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    assert lab.up().empty  # a second up changes nothing
    assert lab.status().ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_nat66_shows_the_routers_address_and_nothing_gets_in(make_lab, uid, backend):
    data = dual(uid, backend, snat6="masquerade")
    lab = make_lab(data)
    lab.up()
    inet, tenant = f"t{uid}-inet", f"t{uid}-tenant1"
    with Server(inet, INET6, 8080):
        assert connect(tenant, INET6, 8080) == b"2001:db8:ff::116"
    with Server(tenant, "::", 80):
        assert connect(inet, HOST6, 80) is None  # the internet has no route to a NAT66 prefix
    assert lab.up().empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spoofed_v6_source_is_dropped(make_lab, uid, backend):
    data = dual(uid, backend)
    lab = make_lab(data)
    lab.up()
    inet, tenant = f"t{uid}-inet", f"t{uid}-tenant1"
    spoofed = "2001:db8:99::5"
    nsexec.run(tenant, ["ip", "addr", "add", f"{spoofed}/128", "dev", "lo", "nodad"])
    # Return routes for the spoofed source, so that only the router's anti-spoofing stops it.
    nsexec.run(inet, ["ip", "-6", "route", "add", "2001:db8:99::/64", "via", "2001:db8:ff::116"])
    nsexec.run(f"t{uid}-vm", ["ip", "-6", "route", "add", f"{spoofed}/128", "via", HOST6])

    def from_(src: str) -> bytes | None:
        def go():
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.settimeout(1.5)
                s.bind((src, 0))
                try:
                    s.connect((INET6, 8080))
                    return s.recv(100)
                except OSError:
                    return None
        return nsexec.call_in(tenant, go)
    with Server(inet, INET6, 8080):
        assert from_(HOST6) == HOST6.encode()  # the tenant's own address gets through
        assert from_(spoofed) is None  # another source does not


@pytest.mark.parametrize("backend", BACKENDS)
def test_down_of_a_v6_lab_leaves_nothing(make_lab, uid, backend):
    from natns import down_lab

    data = dual(uid, backend)
    lab = make_lab(data)
    lab.up()
    down_lab(lab.name)
    assert existing(lab_namespaces(data)) == []
