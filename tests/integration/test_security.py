"""Security as tests: what a router lets through, probed with real packets, both backends.

test_mappings.py already shows that the outside can't reach a tenant's
private address (TCP, ping), that a tenant's packets with a source outside
its network are dropped, and that a listener on the router's external
address can't be reached from outside. Here the rest: a port scan of the
external address from outside and from inside (only the port forwards
answer; nothing else even refuses), no listening socket in a router,
tenants behind different routers, unsolicited UDP, spoofed sources coming
from outside (a private source through a floating IP or port forward) and
from a tenant (another network's source), and bad topology files on the
command line.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading

import pytest

from natns.firewall import get_backend
from natns.verify.probe import ping, tcp_connect
from natns.explain.trace import _checksum as _csum  # the Internet checksum (RFC 1071)
from natns.kernel import nsexec

from .labs import PeerServer, existing, lab_namespaces, mapped, natns, seed, write

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
INET = "198.51.100.1"


# --------------------------------------------------------------------------- probes


def tcp_scan(ns: str, addr: str, ports, wait: float = 1.5) -> dict[int, str]:
    """Each port of `addr` seen from `ns`: "open" (handshake done), "refused" (RST or
    ICMP unreachable: something answered) or "silent" (nothing came back: dropped)."""
    socks = {}
    for port in ports:
        s = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        s.setblocking(False)
        s.connect_ex((addr, port))
        socks[port] = s
    out: dict[int, str] = {}
    try:
        pending = dict(socks)
        deadline = wait
        import time

        end = time.monotonic() + deadline
        while pending and time.monotonic() < end:
            _, writable, _ = select.select([], list(pending.values()), [], max(0.0, end - time.monotonic()))
            for s in writable:
                port = next(p for p, x in pending.items() if x is s)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                out[port] = "open" if err == 0 else "refused" if err in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                                                           errno.ENETUNREACH) else f"error {err}"
                del pending[port]
        for port in pending:
            out[port] = "silent"
    finally:
        for s in socks.values():
            s.close()
    return out


def udp_probe(ns: str, addr: str, port: int, wait: float = 1.0) -> str:
    """"open" (an answer), "refused" (ICMP port unreachable) or "silent"."""
    def go():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(wait)
            s.connect((addr, port))
            s.send(b"q")
            try:
                s.recv(100)
                return "open"
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "silent"
    return nsexec.call_in(ns, go)


def together(**probes) -> dict:
    """Run independent probes (name -> callable) at once; their results by name.

    A silent probe costs its whole timeout, so they wait side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = {name: pool.submit(fn) for name, fn in probes.items()}
        return {name: f.result() for name, f in futures.items()}


class UdpEcho:
    """UDP servers in `ns` on `ports` answering every datagram with the sender's address."""

    def __init__(self, ns: str, addr: str, ports):
        self.socks = []
        for port in ports:
            s = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            s.bind((addr, port))
            self.socks.append(s)
        self.stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self.stop:
            ready, _, _ = select.select(self.socks, [], [], 0.2)
            for s in ready:
                try:
                    _, peer = s.recvfrom(100)
                    s.sendto(peer[0].encode(), peer)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.t.join(timeout=2)
        for s in self.socks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Servers:
    """TCP PeerServers on several (namespace, address, port); closed together."""

    def __init__(self, *where):
        self.servers = [PeerServer(ns, addr, port) for ns, addr, port in where]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in self.servers:
            s.close()


def send_udp_from(ns: str, src: str, dst: str, dport: int, payload: bytes = b"spoof") -> None:
    """Send one UDP datagram from `ns` with any source address (a raw socket, IP_HDRINCL)."""
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 4444, dport, length, 0) + payload
    udp = struct.pack("!HHHH", 4444, dport, length, _csum(pseudo + udp)) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    with nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)) as raw:
        raw.sendto(ip + udp, (dst, 0))


def received_from(sock: socket.socket, wait: float = 1.0) -> list[str]:
    """Source addresses of the datagrams `sock` gets within `wait` seconds."""
    got = []
    sock.settimeout(wait)
    while True:
        try:
            got.append(sock.recvfrom(100)[1][0])
        except TimeoutError:
            return got


def udp_listener(ns: str, port: int) -> socket.socket:
    s = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    s.bind(("0.0.0.0", port))
    return s


def counter(backend: str, ns: str, comment: str) -> int:
    return sum(c["packets"] for c in get_backend(backend).counters(ns) if c["comment"] == comment)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_port_forwards_answer_on_the_external_address(make_lab, uid, backend):
    """`ss` in the router lists no socket; a scan of the external address from outside
    and from a tenant finds exactly the port forwards, and nothing else even refuses:
    not a service someone started in the router, not a closed port."""
    make_lab(mapped(uid, backend)).up()
    t1, t2, vm, inet = f"t{uid}-tenant1", f"t{uid}-tenant2", f"t{uid}-vm", f"t{uid}-inet"
    ext = "198.51.100.116"
    for args in (["-ltnH"], ["-lunH"], ["-lwnH"]):
        assert nsexec.run(vm, ["ss", *args]).stdout.strip() == "", args
    forwards = {8080, 9000, 9001, 9002}
    ports = sorted(forwards | {22, 80, 443, 2222, 8079, 8081, 8999, 9003, 9100})
    with Servers((t2, "192.0.2.4", 80), (t2, "192.0.2.4", 9100), (t2, "192.0.2.4", 9101), (t2, "192.0.2.4", 9102),
                 (vm, "0.0.0.0", 2222)), UdpEcho(t2, "192.0.2.4", [53]), UdpEcho(vm, "0.0.0.0", [2223]):
        udp_ports = (2223, 53, 5354)
        r = together(outside=lambda: tcp_scan(inet, ext, ports), inside=lambda: tcp_scan(t1, ext, ports),
                     udp_forward=lambda: udp_probe(inet, ext, 5353),
                     **{f"udp_out_{p}": (lambda p=p: udp_probe(inet, ext, p)) for p in udp_ports},
                     **{f"udp_in_{p}": (lambda p=p: udp_probe(t1, ext, p)) for p in udp_ports},
                     gateway=lambda: tcp_scan(t1, "192.0.2.3", [2222]),
                     ping_in=lambda: ping(t1, ext).ok, ping_out=lambda: ping(inet, ext).ok)
        from_outside, from_inside = r["outside"], r["inside"]
        assert {p for p, v in from_outside.items() if v == "open"} == forwards, from_outside
        assert {v for p, v in from_outside.items() if p not in forwards} == {"silent"}, from_outside
        # A tenant reaches the port forwards too (hairpin), and nothing else there either.
        assert {p for p, v in from_inside.items() if v == "open"} == forwards, from_inside
        assert {v for p, v in from_inside.items() if p not in forwards} == {"silent"}, from_inside
        # UDP: the forward answers; the router's own UDP service and a closed port stay silent
        # (no ICMP port unreachable either).
        assert r["udp_forward"] == "open"
        for port in udp_ports:
            assert r[f"udp_out_{port}"] == "silent" and r[f"udp_in_{port}"] == "silent", port
        # The router's internal address is its tenants' gateway: what listens there, they reach.
        assert r["gateway"] == {2222: "open"}
        assert not r["ping_in"] and not r["ping_out"]
    assert counter(backend, vm, "natns external address no services") >= 1


def two_routers_apart(uid: str, backend: str) -> dict:
    """Two routers, different CIDRs behind each; b1 has a floating IP."""
    r1, r2 = f"t{uid}-r1", f"t{uid}-r2"
    return {
        "name": f"sec{uid}", "backend": backend,
        "internet": {"namespace": f"t{uid}-inet", "address": "198.51.100.1/24", "hosts": ["203.0.113.114"]},
        "routers": [{"name": r1, "external": {"address": "198.51.100.10/24"}},
                    {"name": r2, "external": {"address": "198.51.100.20/24"}}],
        "networks": [{"name": "a", "router": r1, "cidr": "192.0.2.0/25", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"t{uid}-a1", "address": "192.0.2.10"}]},
                     {"name": "b", "router": r2, "cidr": "192.0.2.128/25", "gateway": "192.0.2.129",
                      "hosts": [{"namespace": f"t{uid}-b1", "address": "192.0.2.130"}]}],
        "floating_ips": [{"router": r2, "address": "198.51.100.61", "host": "192.0.2.130"}],
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_tenants_behind_different_routers_reach_each_other_only_through_public_mappings(make_lab, uid, backend):
    make_lab(two_routers_apart(uid, backend)).up()
    a1, b1, r1, r2, inet = (f"t{uid}-{n}" for n in ("a1", "b1", "r1", "r2", "inet"))
    # Make it as easy as possible: the internet routes each CIDR to its router.
    nsexec.run(inet, ["ip", "route", "add", "192.0.2.0/25", "via", "198.51.100.10"])
    nsexec.run(inet, ["ip", "route", "add", "192.0.2.128/25", "via", "198.51.100.20"])
    for ns in (r1, r2):
        assert nsexec.run(ns, ["ss", "-ltunH"]).stdout.strip() == ""
    with Servers((b1, "192.0.2.130", 22), (a1, "192.0.2.10", 22), (r2, "0.0.0.0", 2222), (r1, "0.0.0.0", 2222)), \
            UdpEcho(b1, "192.0.2.130", [53]), UdpEcho(a1, "192.0.2.10", [53]):
        # The public mapping works, and shows a1 as its router's address.
        assert tcp_connect(a1, "198.51.100.61", 22) == b"198.51.100.10"
        # Private addresses across routers: nothing gets through, either way, any protocol
        # (the listeners stay: a SYN that arrived would be answered by the kernel). The other
        # router's own services: silent too (and to its own tenant, on its external address).
        # Unsolicited inbound from the internet to either tenant: dropped (TCP, UDP).
        r = together(
            a_to_b=lambda: tcp_scan(a1, "192.0.2.130", [22]), b_to_a=lambda: tcp_scan(b1, "192.0.2.10", [22]),
            a_to_b_udp=lambda: udp_probe(a1, "192.0.2.130", 53), b_to_a_udp=lambda: udp_probe(b1, "192.0.2.10", 53),
            a_to_b_ping=lambda: ping(a1, "192.0.2.130").ok, b_to_a_ping=lambda: ping(b1, "192.0.2.10").ok,
            a_to_r2=lambda: tcp_scan(a1, "198.51.100.20", [2222, 22]), b_to_r2=lambda: tcp_scan(b1, "198.51.100.20", [2222]),
            inet_to_b=lambda: tcp_scan(inet, "192.0.2.130", [22]), inet_to_a_udp=lambda: udp_probe(inet, "192.0.2.10", 53))
        assert r == {"a_to_b": {22: "silent"}, "b_to_a": {22: "silent"}, "a_to_b_udp": "silent",
                     "b_to_a_udp": "silent", "a_to_b_ping": False, "b_to_a_ping": False,
                     "a_to_r2": {2222: "silent", 22: "silent"}, "b_to_r2": {2222: "silent"},
                     "inet_to_b": {22: "silent"}, "inet_to_a_udp": "silent"}, r
    assert counter(backend, r2, "natns dropped by policy") >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_spoofed_sources_are_dropped_from_outside_and_from_tenants(make_lab, uid, backend):
    """From outside, a packet claiming a tenant's private source dies at the router even
    when a floating IP or port forward would carry it in; from a tenant, a packet with
    another network's source dies at the router. The genuine packet passes each time."""
    data = mapped(uid, backend)
    vm = f"t{uid}-vm"
    data["networks"].append({"name": "other", "router": vm, "cidr": "192.0.2.128/25", "gateway": "192.0.2.129",
                             "hosts": [{"namespace": f"t{uid}-o1", "address": "192.0.2.130"}]})
    data["networks"][0]["cidr"] = "192.0.2.0/25"
    make_lab(data).up()
    t1, t2, inet, o1 = f"t{uid}-tenant1", f"t{uid}-tenant2", f"t{uid}-inet", f"t{uid}-o1"
    fip_rx, pf_rx = udp_listener(t1, 9999), udp_listener(t2, 53)
    try:
        send_udp_from(inet, INET, "198.51.100.50", 9999)  # genuine, through the floating IP
        assert received_from(fip_rx) == [INET]
        send_udp_from(inet, "192.0.2.4", "198.51.100.50", 9999)  # tenant2's address, from outside
        send_udp_from(inet, "192.0.2.130", "198.51.100.50", 9999)  # the other network's
        send_udp_from(inet, "192.0.2.2", "198.51.100.116", 5353)  # tenant1's, to a port forward
        assert received_from(fip_rx) == [] and received_from(pf_rx) == []
        send_udp_from(inet, INET, "198.51.100.116", 5353)
        assert received_from(pf_rx) == [INET]
    finally:
        fip_rx.close()
        pf_rx.close()
    assert counter(backend, vm, "natns anti-spoofing external tenant") >= 2
    assert counter(backend, vm, "natns anti-spoofing external other") >= 1
    # From a tenant: o1 (192.0.2.128/25) claims tenant1's address, and the router's.
    inet_rx = udp_listener(inet, 7777)
    try:
        send_udp_from(o1, "192.0.2.130", "198.51.100.1", 7777)
        assert received_from(inet_rx) == ["198.51.100.116"]  # genuine: translated
        for fake in ("192.0.2.2", "198.51.100.116", "198.51.100.50", "203.0.113.114"):
            send_udp_from(o1, fake, "198.51.100.1", 7777)
        assert received_from(inet_rx) == []
    finally:
        inet_rx.close()
    # tenant1's and the internet host's addresses die at natns's rule; the router's own
    # addresses (external, floating) already at the kernel's martian check, before any rule.
    assert counter(backend, vm, "natns anti-spoofing other") >= 2


BAD = {
    "shell metacharacters": lambda d, tmp: d["networks"][0]["hosts"][0].__setitem__(
        "namespace", f"$(touch {tmp}/pwned);`touch {tmp}/pwned2`"),
    "16-byte interface": lambda d, tmp: d["routers"][0]["external"].__setitem__("interface", "eth0123456789abc"),
    "IPv6 address": lambda d, tmp: d["routers"][0]["external"].__setitem__("address", "2001:db8::116/64"),
    "unicode name": lambda d, tmp: d.__setitem__("name", "läb"),
    "wrong type": lambda d, tmp: d.__setitem__("routers", {"vm": 1}),
    "reserved interface": lambda d, tmp: d["networks"][0]["hosts"][0].__setitem__("interface", "lo"),
    "overlap": lambda d, tmp: d["networks"].append({**d["networks"][0], "name": "copy", "hosts": []}),
}


def test_bad_files_exit_2_with_one_line_and_nothing_is_created(uid, tmp_path):
    """Through the CLI, as a user would: validation errors, and files that aren't topologies."""
    files = {}
    for what, mutate in BAD.items():
        data = seed(uid)
        mutate(data, tmp_path)
        files[what] = write(tmp_path, data, what.replace(" ", "-") + ".yaml")
    raw = {
        "binary": b"\x00\xff\xfe natns",
        "deep": b"name: " + b"[" * 50000 + b"]" * 50000,
        "tag": b"name: !!python/object/apply:os.system ['touch pwned']",
        "list": b"- name: x",
        "alias-bomb": b"a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n"
                      b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c]\nname: x\nrouters: *d\n",
    }
    for what, content in raw.items():
        (tmp_path / f"{what}.yaml").write_bytes(content)
        files[what] = str(tmp_path / f"{what}.yaml")
    files["missing"] = str(tmp_path / "nope.yaml")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(files, pool.map(lambda p: natns("up", p), files.values())))
    for what, res in results.items():
        assert res.returncode == 2, (what, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"{files[what]}: "), (what, res.stderr)
        assert res.stdout == "", what
    assert not any(p.name.startswith("pwned") for p in tmp_path.iterdir())
    assert not os.path.exists("pwned")
    assert existing(lab_namespaces(seed(uid))) == []
    assert [n for n in os.listdir("/run/netns") if n.startswith(f"t{uid}")] == []
