"""IPv6 on real namespaces, both backends (issue 13): routed and NAT66 egress with the
source the far end really sees, IPv4 unchanged beside it, default-deny inbound but the
ingress entry, anti-spoofing, idempotency and an exact down."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading

import pytest

from natns.kernel import nsexec

from .labs import existing, kernel_dump, lab_namespaces, write

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
                      "hosts": [{"namespace": f"t{uid}-tenant1", "address": "192.0.2.2", "address6": HOST6},
                                {"namespace": f"t{uid}-tenant2", "address": "192.0.2.4",
                                 "address6": "2001:db8:1::3"}]}],
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
    other = f"t{uid}-tenant2"  # a host with no ingress entry: nothing reaches it, not even ping
    with Server(other, "::", 80):
        assert connect(inet, "2001:db8:1::3", 80) is None
    assert not ping6(inet, "2001:db8:1::3") and ping6(inet, HOST6)  # echo only where ingress opens
    assert ping6(other, INET6)
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


# --------------------------------------------------------------------------- uplink: host


def natns_in(host_ns: str, *args) -> subprocess.CompletedProcess:
    """natns run with the play-host as the namespace it runs in (as tests/integration/test_uplink.py)."""
    argv = ["nsenter", f"--net=/run/netns/{host_ns}", "--", sys.executable, "-m", "natns.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture
def play_host6(scratch_ns):
    """(host, world): a namespace that plays the host, reaching the world over wan0 in both
    families (203.0.113.2 -> .1, 2001:db8:e::2 -> ::1)."""
    host, world = scratch_ns("host"), scratch_ns("world")
    for ns in (host, world):
        nsexec.run(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"])
    nsexec.run(host, ["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns", world])
    for ns, four, six in ((host, "203.0.113.2/24", "2001:db8:e::2/64"), (world, "203.0.113.1/24", "2001:db8:e::1/64")):
        nsexec.run(ns, ["ip", "addr", "add", four, "dev", "wan0"])
        nsexec.run(ns, ["ip", "addr", "add", six, "dev", "wan0", "nodad"])
        nsexec.run(ns, ["ip", "link", "set", "wan0", "up"])
        nsexec.run(ns, ["ip", "link", "set", "lo", "up"])
    nsexec.run(host, ["ip", "route", "add", "default", "via", "203.0.113.1"])
    nsexec.run(host, ["ip", "-6", "route", "add", "default", "via", "2001:db8:e::1"])
    return host, world


def uplink6(uid: str, backend: str, snat6: str) -> dict:
    return {
        "name": f"u{uid}", "backend": backend,
        "routers": [{"name": f"t{uid}-vm", "snat6": snat6,
                     "external": {"interface": "eth0", "address": "198.51.100.2/30", "gateway": "198.51.100.1",
                                  "address6": "2001:db8:fe::2/64", "gateway6": "2001:db8:fe::1",
                                  "uplink": "host"}}],
        "networks": [{"name": "tenant", "router": f"t{uid}-vm", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                      "cidr6": "2001:db8:1::/64", "gateway6": "2001:db8:1::1",
                      "hosts": [{"namespace": f"t{uid}-tenant1", "address": "192.0.2.10",
                                 "address6": "2001:db8:1::10"}]}],
    }


FWD6 = ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_routed_v6_through_the_host_prints_the_upstream_route_that_makes_it_work(play_host6, uid, backend,
                                                                                   tmp_path):
    host, world = play_host6
    data = uplink6(uid, backend, "off")
    path = write(tmp_path, data)
    tenant = f"t{uid}-tenant1"
    assert nsexec.run(host, FWD6).stdout.strip() == "0"
    before = kernel_dump(host)
    try:
        res = natns_in(host, "up", path)
        assert res.returncode == 0, res.stderr
        assert nsexec.run(host, FWD6).stdout.strip() == "1"
        note = next(ln for ln in res.stdout.splitlines() if ln.startswith("note: "))
        assert "2001:db8:1::/64 is routed" in note and "on 2001:db8:e::1 run: " in note, note
        fix = shlex.split(note.split(" run: ", 1)[1])
        with Server(world, "2001:db8:e::1", 8080):
            assert connect(tenant, "2001:db8:e::1", 8080) is None  # the world can't answer yet
            nsexec.run(world, fix)  # what natns printed, run where it said
            assert connect(tenant, "2001:db8:e::1", 8080) == b"2001:db8:1::10"  # untranslated
        assert "no changes" in natns_in(host, "up", path).stdout
        assert natns_in(host, "status", path).returncode == 0
        plan = natns_in(host, "plan", path)
        assert "nothing to do" in plan.stdout and "note: " in plan.stdout
        down = natns_in(host, "down", path)
        assert down.returncode == 0, down.stderr
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert existing([f"t{uid}-vm", tenant]) == []
    assert nsexec.run(host, FWD6).stdout.strip() == "0"  # restored
    assert kernel_dump(host) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_nat66_through_the_host_is_translated_twice(play_host6, uid, backend, tmp_path):
    host, world = play_host6
    data = uplink6(uid, backend, "masquerade")
    path = write(tmp_path, data)
    try:
        res = natns_in(host, "up", path)
        assert res.returncode == 0, res.stderr
        assert "note: " not in res.stdout
        with Server(world, "2001:db8:e::1", 8080):
            # By the router to 2001:db8:fe::2, by the host to 2001:db8:e::2.
            assert connect(f"t{uid}-tenant1", "2001:db8:e::1", 8080) == b"2001:db8:e::2"
        assert "no changes" in natns_in(host, "up", path).stdout
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert nsexec.run(host, FWD6).stdout.strip() == "0"


# --------------------------------------------------------------------------- crash safety


def snapshot6(names) -> dict:
    """reliability_tools.snapshots plus what it leaves out for IPv6: the global IPv6
    addresses (link-local ones follow each veth's random MAC) and ip6tables-save."""
    import json
    import re

    from .reliability_tools import snapshots

    out = snapshots(names)
    for ns in names:
        addrs = json.loads(nsexec.run(ns, ["ip", "-j", "-6", "addr", "show"]).stdout or "[]")
        out[ns]["addrs6"] = {a["ifname"]: sorted((i["local"], i["prefixlen"]) for i in a.get("addr_info", [])
                                                 if i.get("scope") != "link") for a in addrs}
        out[ns]["ip6tables"] = "\n".join(re.sub(r"\[\d+:\d+\]", "[]", ln) for ln in nsexec.run(
            ns, ["ip6tables-save"], check=False).stdout.splitlines() if not ln.startswith("#"))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_at_any_kind_of_step_a_v6_lab_converges_exactly_and_down_leaves_nothing(make_lab, uid, backend,
                                                                                       tmp_path):
    import signal

    from natns import Lab, down_lab, topology

    from .reliability_tools import diff, kill_points, plan_steps, run_natns

    data = dual(uid, backend)
    make_lab(data)  # taken down after the test, pass or fail
    path = write(tmp_path, data)
    names = lab_namespaces(data)
    lab = lambda: Lab(topology.parse(data, "test.yaml"))  # noqa: E731
    lab().up()
    reference = snapshot6(names)
    down_lab(data["name"])
    points = kill_points(plan_steps(path), 8)
    for point in points:
        res = run_natns("up", path, kill_at=point)
        assert res.returncode == -signal.SIGKILL, (point, res.stderr)
        lab().up()
        assert lab().plan().empty, point
        now = snapshot6(names)
        assert now == reference, (point, res.hook, diff(now, reference))
        assert ping6(f"t{uid}-tenant1", INET6), point
        down_lab(data["name"])
        assert existing(names) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_names_v6_drift_and_up_repairs_it(make_lab, uid, backend):
    data = dual(uid, backend)
    lab = make_lab(data)
    lab.up()
    vm, tenant = f"t{uid}-vm", f"t{uid}-tenant1"
    nsexec.run(tenant, ["ip", "-6", "route", "del", "default"])
    nsexec.run(vm, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"])
    if backend == "nftables":
        nsexec.run(vm, ["nft", "delete", "table", "ip6", "natns"])
    else:
        nsexec.run(vm, ["ip6tables", "-D", "FORWARD", "-m", "comment", "--comment", "natns", "-j", "natns-FORWARD"])
    assert not ping6(tenant, INET6)
    st = {n.name: n for n in lab.status().namespaces}
    assert st[tenant].state == "drift" and any("route" in p and "::/0" in p or "default" in p
                                                for p in st[tenant].problems), st[tenant].problems
    problems = " ".join(st[vm].problems)
    assert "net.ipv6.conf.all.forwarding" in problems, problems
    assert ("table ip6 natns is missing" if backend == "nftables" else "ip6tables: the jump from filter FORWARD") \
        in problems, problems
    lab.up()
    assert lab.status().ok and ping6(tenant, INET6)
    with Server(tenant, "::", 81):
        assert connect(f"t{uid}-inet", HOST6, 81) is None  # the policy is back


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_smaller_mtu_on_the_way_is_told_with_packet_too_big(make_lab, uid, backend):
    """IPv6 routers don't fragment: a too big packet is answered with packet-too-big, and
    the sender learns the path MTU from it (then its own kernel refuses bigger ones)."""
    data = dual(uid, backend)
    data["routers"][0]["external"]["mtu"] = 1280
    lab = make_lab(data)
    lab.up()
    tenant = f"t{uid}-tenant1"
    big = ["ping", "-6", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", INET6]
    first = nsexec.run(tenant, big, check=False)
    again = nsexec.run(tenant, big, check=False)
    assert first.returncode != 0 and again.returncode != 0
    assert "mtu=1280" in (first.stdout + first.stderr + again.stdout + again.stderr).replace(" = ", "="), \
        (first.stdout, first.stderr, again.stdout, again.stderr)
    assert nsexec.run(tenant, ["ping", "-6", "-c", "1", "-W", "2", "-M", "do", "-s", "1200", INET6],
                      check=False).returncode == 0
