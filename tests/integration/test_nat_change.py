"""A NAT change reaches the flows already running (issue 17), on real namespaces.

The kernel consults the nat table for a connection's first packet only; the
rest are translated from the conntrack entry. So `up` must delete the entries
its new rules would translate otherwise, and only those. Every test here
watches the internet side with tcpdump (a pcap read back by tcpdump itself,
with the kernel's timestamps) while flows run through the router:

* a ping (``ping -i 0.2``) and a UDP stream started with ``snat: off`` leave
  with the router's address from one packet interval after `up` switched to
  ``masquerade`` (or to the fixed address) returned;
* a host's running outbound flows (ping, UDP) leave with its floating address
  after `up` gave it one, while another host's TCP connection, already
  masqueraded, keeps streaming through that same `up` without losing a byte (its
  conntrack entry is the same one, by id), and so does the host's own open TCP
  connection (see ctselect.kept_tcp);
* natns SIGKILLed after the rules changed and before the deletion leaves a
  note in the rules; the next `up` deletes the entries.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from natns import topology
from natns.desired import desired_state
from natns.firewall import ctselect, get_backend
from natns.kernel import conntrack, nsexec

from .labs import SEED_INET, seed, write
from .reliability_tools import plan_steps, run_natns
from .verify_tools import PcapCapture

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
ROUTER_ADDR = "198.51.100.116"
FIP = "198.51.100.50"
T1, T2 = "192.0.2.2", "192.0.2.4"
INTERVAL = 0.2
UDP_PORT, TCP_PORT = 5001, 7000
_PKT = re.compile(r"^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?: (\S+)")


def lab(uid: str, backend: str, snat: str = "off") -> dict:
    data = seed(uid, backend)
    data["routers"][0]["snat"] = snat
    data["networks"][0]["hosts"].append({"namespace": f"t{uid}-tenant2", "address": T2})
    return data


class Capture(PcapCapture):
    """tcpdump on the internet's bridge, to a pcap; `stop()` gives (time, src, sport, dst, dport, kind)."""

    read_args = ("-q",)

    def __init__(self, ns: str, path: str, iface: str = "ext"):
        super().__init__(ns, iface, path, f"dst host {SEED_INET} and (icmp or udp or tcp)")

    def stop(self) -> list[tuple]:
        pkts = []
        for ln in self.lines():
            m = _PKT.match(ln)
            if m:
                t, src, sport, dst, dport, kind = m.groups()
                pkts.append((float(t), src, sport and int(sport), dst, dport and int(dport), kind.rstrip(",")))
        return pkts


class Flows:
    """What runs through the router during a test: a ping and a UDP stream from `ns`
    to the internet host, a UDP sink there; all stopped (by PID, by flag) in `stop`."""

    def __init__(self, ns: str, inet: str, src: str):
        self.stopping = threading.Event()
        self.sink = nsexec.call_in(inet, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sink.bind((SEED_INET, UDP_PORT))
        self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.bind((src, 40000))
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.ping = nsexec.popen(ns, ["ping", "-n", "-i", str(INTERVAL), SEED_INET],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.thread.start()

    def _send(self):
        while not self.stopping.wait(INTERVAL):
            try:
                self.sock.sendto(b"tick", (SEED_INET, UDP_PORT))
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        if self.ping.poll() is None:
            self.ping.terminate()
        self.ping.wait(timeout=10)
        self.sock.close()
        self.sink.close()


class TcpStream:
    """A TCP connection from `ns` to the internet host that streams numbered bytes
    continuously; the server keeps every byte it got, the client every byte it sent."""

    def __init__(self, ns: str, inet: str, port: int = TCP_PORT):
        self.port = port
        self.srv = nsexec.call_in(inet, lambda: socket.create_server((SEED_INET, port)))
        self.srv.settimeout(10)
        self.got = bytearray()
        self.sent = bytearray()
        self.peers: list = []
        self.errors: list = []
        self.stopping = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.cli = nsexec.call_in(ns, lambda: socket.create_connection((SEED_INET, port), timeout=10))
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()

    def _read(self):
        try:
            conn, peer = self.srv.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        self.peers.append(peer)
        conn.settimeout(10)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError as exc:
                    self.errors.append(exc)
                    return
                if not data:
                    return
                self.got += data

    def _write(self):
        n = 0
        while not self.stopping.wait(0.02):
            chunk = f"{n:08d}\n".encode() * 16
            try:
                self.cli.sendall(chunk)
            except OSError as exc:
                self.errors.append(exc)
                return
            self.sent += chunk
            n += 1

    def finish(self) -> None:
        self.stopping.set()
        self.writer.join(timeout=5)
        try:
            self.cli.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.errors.append(exc)
        self.reader.join(timeout=15)

    def close(self) -> None:
        self.stopping.set()
        for s in (self.cli, self.srv):
            s.close()
        self.writer.join(timeout=5)
        self.reader.join(timeout=5)


def changed(pkts, since: float, until: float | None = None) -> list[tuple]:
    return [p for p in pkts if p[0] >= since and (until is None or p[0] < until)]


def flow_packets(pkts, kind: str) -> list[tuple]:
    """The ping's echo requests (kind "ICMP") or the UDP stream's datagrams ("UDP")."""
    return [p for p in pkts if p[5] == kind and (kind != "UDP" or p[4] == UDP_PORT)]


def up(path: str) -> tuple[float, float]:
    """`natns up PATH` as a user runs it; (when it started, when it returned)."""
    t0 = time.time()
    res = run_natns("up", path)
    assert res.returncode == 0, res.stderr
    return t0, time.time()


def assert_switched(pkts, old_src: str, new_src: str, t0: float, done: float) -> None:
    """Both flows left with `old_src` before `up` began, and every packet from one
    packet interval after it returned has `new_src` (and there are such packets)."""
    for kind in ("ICMP", "UDP"):
        flow = flow_packets(pkts, kind)
        before = changed(flow, 0, t0)
        after = changed(flow, done + INTERVAL)
        assert before and {p[1] for p in before} == {old_src}, (kind, before)
        assert len(after) >= 3, (kind, after)
        assert {p[1] for p in after} == {new_src}, (kind, [p for p in after if p[1] != new_src])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("snat", ["masquerade", ROUTER_ADDR])
def test_flows_started_without_snat_are_translated_right_after_up_turns_it_on(make_lab, uid, tmp_path, backend,
                                                                              snat):
    data = lab(uid, backend)
    make_lab(data).up()
    vm, t1, inet = f"t{uid}-vm", f"t{uid}-tenant1", f"t{uid}-inet"
    cap = Capture(inet, str(tmp_path / "inet.pcap"))
    flows = Flows(t1, inet, T1)
    try:
        time.sleep(1.5)  # the flows leak the private address
        data["routers"][0]["snat"] = snat
        path = write(tmp_path, data)
        steps = plan_steps(path)
        forget = [s for s in steps if s["action"] == "forget_conntrack"]
        assert len(forget) == 1 and forget[0]["namespace"] == vm
        assert "conntrack -D -s 192.0.2.0/24 -q 192.0.2.0/24" in forget[0]["command"]
        t0, done = up(path)
        time.sleep(1.5)
    finally:
        flows.stop()
        pkts = cap.stop()
    assert_switched(pkts, T1, ROUTER_ADDR, t0, done)
    be = get_backend(backend)
    assert be.pending_flushes(be.observe(vm)) == set()
    assert plan_steps(path) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_floating_ip_reaches_the_hosts_running_flow_and_spares_the_neighbours_connection(
        make_lab, uid, tmp_path, backend):
    data = lab(uid, backend, snat="masquerade")
    make_lab(data).up()
    vm, t1, t2, inet = f"t{uid}-vm", f"t{uid}-tenant1", f"t{uid}-tenant2", f"t{uid}-inet"
    cap = Capture(inet, str(tmp_path / "inet.pcap"))
    flows = Flows(t1, inet, T1)
    # The neighbour's connection, and one of the host itself (open TCP connections keep
    # the router's address: a new source mid-stream could only get them reset).
    streams = {T2: TcpStream(t2, inet), T1: TcpStream(t1, inet, TCP_PORT + 1)}
    try:
        time.sleep(1.5)

        def tcp_entries():
            return {src: [e for e in conntrack.entries(vm) if e.protocol == "tcp" and e.original.src == src
                          and e.original.dport == st.port] for src, st in streams.items()}

        before = tcp_entries()
        assert all(len(es) == 1 and es[0].reply.dst == ROUTER_ADDR for es in before.values()), before
        data["floating_ips"] = [{"router": vm, "address": FIP, "host": T1}]
        path = write(tmp_path, data)
        t0, done = up(path)
        time.sleep(1.5)
        after = tcp_entries()
        received_during = {src: len(st.got) for src, st in streams.items()}
        for st in streams.values():
            st.finish()
    finally:
        for st in streams.values():
            st.close()
        flows.stop()
        pkts = cap.stop()
    assert_switched(pkts, ROUTER_ADDR, FIP, t0, done)
    for src, st in streams.items():
        # Never deleted (the same entry), never interrupted, every byte there in order.
        assert [e.id for e in after[src]] == [before[src][0].id], (src, before, after)
        assert st.errors == [] and [p[0] for p in st.peers] == [ROUTER_ADDR], (src, st.errors)
        assert received_during[src] > 0 and bytes(st.got) == bytes(st.sent), src
        tcp = [p for p in pkts if p[5] == "tcp" and p[4] == st.port]
        assert changed(tcp, done, done + 1.0), f"the connection from {src} kept streaming right after up"
        assert {p[1] for p in tcp} == {ROUTER_ADDR}, src


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_between_the_rule_change_and_the_deletion_the_next_up_deletes_the_entries(
        make_lab, uid, tmp_path, backend):
    data = lab(uid, backend)
    make_lab(data).up()
    vm, t1, inet = f"t{uid}-vm", f"t{uid}-tenant1", f"t{uid}-inet"
    be = get_backend(backend)

    def leaking():
        return [e for e in conntrack.entries(vm) if e.original.src == T1 and e.reply.dst == T1
                and e.original.dst == SEED_INET]

    cap = Capture(inet, str(tmp_path / "inet.pcap"))
    flows = Flows(t1, inet, T1)
    try:
        time.sleep(1.0)
        data["routers"][0]["snat"] = "masquerade"
        path = write(tmp_path, data)
        actions = [s["action"] for s in plan_steps(path)]
        at = actions.index("forget_conntrack") + 1
        killed = run_natns("up", path, kill_at=str(at))
        assert killed.returncode == -signal.SIGKILL and "before step" in killed.hook, killed.stderr
        # The rules masquerade now and carry the note; the running flows' entries are still un-NATed.
        assert ("nat", ROUTER_ADDR) in be.pending_flushes(be.observe(vm))
        assert {e.protocol for e in leaking()} == {"icmp", "udp"}, conntrack.entries(vm)
        assert [s["action"] for s in plan_steps(path)] == ["forget_conntrack", "clear_flush_notes"]
        # What doctor is given: the rules read back from the kernel, and the stale entry named.
        want = desired_state(topology.parse(data, "t.yaml")).namespaces[vm].firewall
        assert ctselect.observed(vm) == ctselect.from_firewall(want)
        (found,) = ctselect.contradiction(vm, "icmp", T1, SEED_INET)
        assert f"is not SNATed, the rules SNAT it to {ROUTER_ADDR}" in found.problem
        assert found.fix.startswith(f"ip netns exec {vm} conntrack -D -p icmp -s {T1} -d {SEED_INET} --icmp-id ")
        time.sleep(1.0)
        killed_at = time.time()
        t0, done = up(path)
        time.sleep(1.5)
        assert leaking() == []
        assert be.pending_flushes(be.observe(vm)) == set()
        assert plan_steps(path) == []
    finally:
        flows.stop()
        pkts = cap.stop()
    for kind in ("ICMP", "UDP"):
        # still leaking while natns lay dead: only the deletion makes the rules reach them
        assert {p[1] for p in changed(flow_packets(pkts, kind), killed_at - 0.8, t0)} == {T1}, kind
    assert_switched(pkts, T1, ROUTER_ADDR, t0 - 2.5, done)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_port_forward_added_reaches_a_stream_already_sent_to_that_port(make_lab, uid, tmp_path, backend):
    """A UDP stream from the internet to the router's port 5353 before any forward exists
    (no isolation: the router takes it in, and conntrack tracks it un-DNATed); after `up`
    adds the forward, its datagrams reach the tenant within a packet interval."""
    data = lab(uid, backend, snat="masquerade")
    data["routers"][0]["isolation"] = False
    make_lab(data).up()
    vm, t2, inet = f"t{uid}-vm", f"t{uid}-tenant2", f"t{uid}-inet"
    sink = nsexec.call_in(t2, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sink.bind((T2, 53))
    sink.settimeout(0.1)
    sender = nsexec.call_in(inet, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sender.bind((SEED_INET, 40053))
    stopping = threading.Event()
    arrivals: list[float] = []

    def send():
        while not stopping.wait(INTERVAL):
            try:
                sender.sendto(b"q", (ROUTER_ADDR, 5353))
            except OSError:
                pass

    def receive():
        while not stopping.is_set():
            try:
                sink.recv(64)
                arrivals.append(time.time())
            except OSError:
                continue

    threads = [threading.Thread(target=send, daemon=True), threading.Thread(target=receive, daemon=True)]
    for th in threads:
        th.start()
    try:
        time.sleep(1.5)
        stale = [e for e in conntrack.entries(vm) if e.protocol == "udp" and e.original.dport == 5353]
        assert len(stale) == 1 and stale[0].reply.src == ROUTER_ADDR, stale  # tracked, not DNATed
        data["port_forwards"] = [{"router": vm, "protocol": "udp", "port": 5353, "to": f"{T2}:53"}]
        t0, done = up(write(tmp_path, data))
        time.sleep(1.5)
    finally:
        stopping.set()
        for th in threads:
            th.join(timeout=5)
        sink.close()
        sender.close()
    assert not [t for t in arrivals if t < t0]
    assert [t for t in arrivals if t < done + INTERVAL + 0.1], "the first datagram after up was forwarded"
    assert len([t for t in arrivals if t >= done]) >= 5
