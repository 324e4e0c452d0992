"""The OVN engine's groundwork on real daemons (issue 12): the 3-chassis sandbox of
examples/ovn.yaml, its NB rows, hosts bound to their logical ports, and real packets.

One lab is built for the module (it takes ~2 s) and torn down at the end, pass or fail;
the last test takes it down itself and checks that nothing is left.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from natns import topology
from natns.engines.ovn import nb, sandbox
from natns.kernel import netns, nsexec
from natns.verify.capture import Capture

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(sandbox.missing_binaries()),
                       reason="OVS/OVN not installed (scripts/bootstrap.sh installs them): missing "
                       + ", ".join(sandbox.missing_binaries())),
]

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ovn.yaml"

SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
s.settimeout(10)
c, peer = s.accept()
c.sendall(c.recv(100))
print(peer[0], flush=True)
c.close()
"""

CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"natns-ovn")
assert s.recv(100) == b"natns-ovn"
print(s.getsockname()[0])
"""


def renamed(uid: str) -> dict:
    """examples/ovn.yaml with the lab and every namespace unique to this run."""
    d = yaml.safe_load(EXAMPLE.read_text())
    p = f"o{uid}-"
    d["name"] = f"ovn{uid}"
    d["internet"]["namespace"] = p + d["internet"]["namespace"]
    for c in d["ovn"]["sandbox"]["chassis"]:
        c["namespace"] = p + c["name"]
    for n in d["networks"]:
        for h in n["hosts"]:
            h["namespace"] = p + h["namespace"]
    return d


def _alive(pid: int) -> bool:
    return sandbox._alive(pid)


@pytest.fixture(scope="module")
def lab():
    from tests.conftest import RUN
    import secrets

    uid = RUN + secrets.token_hex(1)
    t = topology.parse(renamed(uid), "ovn.yaml")
    times = {}
    api = None
    try:
        t0 = time.monotonic()
        lo = sandbox.up(t)
        times["sandbox"] = time.monotonic() - t0
        api = nb.connect(lo.nb_unix)
        # A row natns did not write: converge and remove must leave it alone.
        subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", "ls-add", "foreign"], check=True)
        changes = nb.converge(api, t)
        sandbox.attach_hosts(t, lo)
        sandbox.wait_bound(t, lo)
        times["bound"] = time.monotonic() - t0
        yield {"t": t, "lo": lo, "api": api, "changes": changes, "times": times}
    finally:
        if api is not None:
            nb.close(api)
        sandbox.down(t.name)


def _server(ns: str, addr: str, port: int) -> subprocess.Popen:
    proc = nsexec.popen(ns, [sys.executable, "-c", SERVER, addr, str(port)], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    line = proc.stdout.readline().strip()
    assert line == "ready", proc.stderr.read()
    return proc


def _tcp(client_ns: str, server_ns: str, listen: str, connect: str, port: int) -> tuple[str, str]:
    """A TCP exchange; (the client's own address, the client address the server saw)."""
    srv = _server(server_ns, listen, port)
    try:
        out = nsexec.run(client_ns, [sys.executable, "-c", CLIENT, connect, str(port)], timeout=15).stdout
        seen = srv.stdout.readline().strip()
        srv.wait(timeout=5)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return out.strip(), seen


def _ping(ns: str, to: str) -> None:
    nsexec.run(ns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", to], timeout=15)


def test_sandbox_runs_every_daemon_in_its_namespace(lab):
    lo = lab["lo"]
    assert sandbox.registered_chassis(lo) == {"ch1", "ch2", "ch3"}
    for d, ns in [(lo.central_dir, lo.central_ns)] + [(c.rundir, c.ns) for c in lo.chassis]:
        want = os.stat(nsexec.ns_path(ns)).st_ino
        pids = [int(open(os.path.join(d, f)).read()) for f in os.listdir(d) if f.endswith(".pid")]
        assert len(pids) == 3, (d, os.listdir(d))
        for pid in pids:
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == want, (pid, ns)
    print(f"\nOVN sandbox up in {lab['times']['sandbox']:.2f} s, hosts bound after {lab['times']['bound']:.2f} s")


def test_first_converge_wrote_the_rows_and_a_second_writes_nothing(lab):
    assert {c.op for c in lab["changes"]} == {"create"}
    rows = nb.marked_rows(lab["api"], lab["t"].name)
    assert {k for k in rows} == {(r.table, r.key) for root in nb.wanted_rows(lab["t"]) for r in root.walk()}
    dbfile = os.path.join(lab["lo"].central_dir, "nb.db")
    size = os.path.getsize(dbfile)  # a standalone ovsdb-server appends every committed transaction
    assert nb.converge(lab["api"], lab["t"]) == []
    time.sleep(0.1)
    assert os.path.getsize(dbfile) == size


def test_host_on_non_gateway_chassis_reaches_internet_with_snat_source(lab):
    t, lo = lab["t"], lab["lo"]
    vm1 = t.networks[0].hosts[0]
    assert vm1.chassis == "ch3" and not lo.place("ch3").gateway
    inet = t.internet
    target = str(inet.hosts[0])
    ul = f"ul{lo.place('ch3').index}"  # ch3's port on the underlay switch
    with Capture([(inet.namespace, inet.interface), (lo.central_ns, ul)],
                 bpf="icmp or tcp port 8080 or udp port 6081") as cap:
        _ping(vm1.namespace, target)
        mine, seen = _tcp(vm1.namespace, inet.namespace, target, target, 8080)
    assert mine == str(vm1.address)
    assert seen == "198.51.100.116"
    at_inet = cap.packets[f"{inet.namespace}:{inet.interface}"]
    tcp = [p for p in at_inet if p.proto == "tcp" and p.dst == target]
    icmp = [p for p in at_inet if p.proto == "icmp" and p.dst == target]
    assert tcp and icmp, at_inet
    assert {p.src for p in tcp + icmp} == {"198.51.100.116"}
    assert not [p for p in at_inet if p.src.startswith("192.0.2.")]
    geneve = [p for p in cap.packets[f"{lo.central_ns}:{ul}"] if p.proto == "udp" and p.dport == 6081]
    assert {(p.src, p.dst) for p in geneve} >= {(str(lo.place("ch3").ip), str(lo.place("ch1").ip))}


def test_full_size_packets_cross_the_geneve_underlay(lab):
    """Hosts get MTU 1442 (ovn-notes pitfall 2): a 1442-byte packet with DF set fits the
    1500-byte underlay once encapsulated, both ways."""
    t = lab["t"]
    vm1 = t.networks[0].hosts[0]
    nsexec.run(vm1.namespace, ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(nb.HOST_MTU - 28),
                               str(t.internet.hosts[0])], timeout=15)
    link = nsexec.run(vm1.namespace, ["ip", "-o", "link", "show", "dev", vm1.interface]).stdout.split()
    assert link[link.index("mtu") + 1] == str(nb.HOST_MTU)
    with pytest.raises(Exception):  # one byte more does not fit: the MTU is what bounds it
        nsexec.run(vm1.namespace, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", str(nb.HOST_MTU - 27),
                                   str(t.internet.hosts[0])], timeout=15)


def test_floating_ip_inbound_keeps_the_client_address_and_outbound_uses_it(lab):
    t = lab["t"]
    vm2 = t.networks[0].hosts[1]
    inet = t.internet
    mine, seen = _tcp(inet.namespace, vm2.namespace, "0.0.0.0", "198.51.100.50", 8081)
    assert seen == str(inet.address.ip)
    _, seen_out = _tcp(vm2.namespace, inet.namespace, str(inet.hosts[0]), str(inet.hosts[0]), 8082)
    assert seen_out == "198.51.100.50"


def test_converge_updates_only_what_differs_and_keeps_foreign_rows(lab):
    t, lo, api = lab["t"], lab["lo"], lab["api"]
    lr = nb.router_name(t.name, "r1")
    # A NAT row someone else added to natns's router, by hand.
    subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", "lr-nat-add", lr, "dnat_and_snat",
                    "198.51.100.60", "192.0.2.9"], check=True)
    data = t.model_dump(mode="json", by_alias=True)
    data["routers"][0]["gateway_chassis"] = ["ch2", "ch1"]
    data["floating_ips"] = []
    t2 = topology.parse(data, "ovn.yaml")
    changes = nb.converge(api, t2)
    assert sorted(map(str, changes)) == sorted([
        "update Gateway_Chassis gwc:r1:ch1 (priority)",
        "update Gateway_Chassis gwc:r1:ch2 (priority)",
        "update Logical_Router lr:r1 (nat)",
        "delete NAT nat:fip:r1:198.51.100.50",
        # the floating IP's host is no longer open inbound: its ACL goes from the port group
        "update Port_Group pg:r1 (acls)",
        f"delete ACL acl:r1:to-lport:1002:outport == @{nb.port_group_name(t.name, 'r1')} && ip4 && "
        "ip4.dst == 192.0.2.3",
    ])
    back = nb.converge(api, t)
    assert {c.op for c in back} == {"create", "update"}
    assert nb.converge(api, t) == []
    out = subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", "lr-nat-list", lr], check=True,
                         capture_output=True, text=True).stdout
    assert "198.51.100.60" in out and "198.51.100.50" in out


def test_remove_and_down_leave_nothing(lab):
    t, lo, api = lab["t"], lab["lo"], lab["api"]
    pids = sandbox._pidfile_pids(t.name)
    assert len(pids) == 3 + 3 * len(lo.chassis)
    removed = nb.remove(api, t.name)
    assert {c.op for c in removed} == {"delete"} and removed
    out = subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", "--format=csv", "--columns=name,external_ids",
                          "list", "Logical_Switch"], check=True, capture_output=True, text=True).stdout
    assert "natns:lab" not in out and "foreign" in out
    for table in nb.TABLES:
        out = subprocess.run(["ovn-nbctl", f"--db={lo.nb_unix}", "--bare", "--columns=external_ids",
                              "list", table], check=True, capture_output=True, text=True).stdout
        assert "natns:lab" not in out, table
    names = sandbox.lab_namespaces(t.name)
    assert len(names) == 2 + len(lo.chassis) + 2
    sandbox.down(t.name)
    assert [n for n in names if netns.exists(n)] == []
    assert [p for p in pids if _alive(p)] == []
    assert not os.path.exists(sandbox.lab_dir(t.name))


def test_down_after_up_was_killed_midway(tmp_path):
    """natns killed while the sandbox comes up (daemons of a chassis already running):
    `down` with only the lab's name stops them all and removes every namespace."""
    from tests.conftest import RUN
    import secrets
    import signal

    d = renamed(RUN + secrets.token_hex(1))
    d["name"] = "k" + d["name"]
    t = topology.parse(d, "ovn.yaml")
    path = tmp_path / "ovn.yaml"
    path.write_text(yaml.safe_dump(d))
    marker = os.path.join(sandbox.lab_dir(t.name), "ch2", "ovs-vswitchd.pid")
    proc = subprocess.Popen([sys.executable, "-m", "natns.engines.ovn", "up", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    names: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(marker) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert os.path.exists(marker), "up never got as far as ch2's vswitchd"
        pids = sandbox._pidfile_pids(t.name)
        names = sandbox.lab_namespaces(t.name)
        assert len(pids) >= 5 and len(names) >= 4
    finally:
        sandbox.down(t.name)
    assert [n for n in names if netns.exists(n)] == []
    assert [p for p in pids if _alive(p)] == []
    assert not os.path.exists(sandbox.lab_dir(t.name))
