"""The plain router the corpus builds by hand, and what its tests assert with.

    lan 192.0.2.2/24 (eth0, default via 192.0.2.1)
      -- veth -- router: lan side 192.0.2.1/24 (`lan0`, or a bridge such as Docker's
                 `docker0` with the veth as its port), wan0 198.51.100.2/24,
                 default via 198.51.100.9, ip_forward on
      -- veth -- far: eth0 198.51.100.9/24, 203.0.113.9/32 on lo (no route to 192.0.2.0/24:
                 the router must translate the lan's source)

Made with plain `ip` and `sysctl` (argument lists, no natns), so doctor and trace meet
namespaces natns did not build; the rules are loaded as their tools write them
(`nft -f`, `iptables-nft-restore`). One `Net` per test module (module-scoped fixtures),
`reset()` between tests; everything is removed at the end, pass or fail.

Reachability is asked of the kernel with real packets (`ping`, a TCP connect to a
server in lan); doctor's fixes are run exactly as printed: each line split with
shlex, no shell, and only against this Net's namespaces.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from natns.explain import trace as T
from natns.explain.doctor import diagnose
from natns.kernel import netns, nsexec



class Server:
    """A TCP server in a namespace for as long as the module runs: it answers each client with
    the address it saw (labs.PeerServer stops after 10 s without a client)."""

    def __init__(self, ns: str, addr: str, port: int):
        self.sock = nsexec.call_in(ns, lambda: socket.create_server((addr, port)))
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(64)
                    self.seen.append(peer[0])
                    conn.sendall(peer[0].encode())
                except OSError:
                    pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=2)

LAN, LAN_GW, WAN, FAR_WAN, FAR = "192.0.2.2", "192.0.2.1", "198.51.100.2", "198.51.100.9", "203.0.113.9"
PORT = 80  # the lan's TCP server


@dataclass
class Net:
    lan: str
    router: str
    far: str
    lan_if: str = "lan0"        # the router's lan-side interface (a bridge for Docker)
    wan_if: str = "wan0"
    lan_port: str | None = None  # the bridge port of the lan's veth, when there is a bridge
    servers: list = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [self.lan, self.router, self.far]

    def x(self, ns: str, *argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return nsexec.run(ns, list(argv), input=input, check=check)

    # -- rules ----------------------------------------------------------------------

    def nft(self, text: str) -> None:
        """Load an nft script into the router, as `nft -f` reads it."""
        self.x(self.router, "nft", "-f", "-", input=text)

    def ipt(self, text: str) -> None:
        """Load iptables-save text into the router with iptables-nft-restore (added to what is there)."""
        self.x(self.router, "iptables-nft-restore", "--noflush", input=text)

    def reset(self) -> None:
        """No rules, no conntrack entries, the routes and sysctls as built."""
        self.x(self.router, "nft", "flush", "ruleset")
        self.x(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.x(self.router, "ip", "route", "replace", "default", "via", FAR_WAN)
        self.x(self.lan, "ip", "route", "replace", "default", "via", LAN_GW)
        self.forget()

    def forget(self) -> None:
        """Flush conntrack everywhere (the entries the failed packets of a break made, which
        doctor rightly reports as stale once the rules are fixed)."""
        for ns in self.names:
            self.x(ns, "conntrack", "-F", check=False)

    # -- real reachability ------------------------------------------------------------

    def ping(self, src: str, dst: str) -> bool:
        return self.x(src, "ping", "-c1", "-W1", "-n", dst, check=False).returncode == 0

    def connect(self, src: str, dst: str, port: int) -> bool:
        """A TCP connection from namespace `src` to dst:port gets the server's answer."""
        def go() -> bool:
            try:
                with socket.create_connection((dst, port), timeout=2) as s:
                    s.sendall(b"x")
                    return bool(s.recv(64))
            except OSError:
                return False
        return nsexec.call_in(src, go)

    def reaches(self, src: str, dst: str, proto: str = "icmp", port: int | None = None) -> bool:
        return self.ping(src, dst) if proto == "icmp" else self.connect(src, dst, port)

    # -- doctor and trace -------------------------------------------------------------------

    def doctor(self, src: str, dst: str, proto: str = "icmp", port: int | None = None):
        return diagnose(src, dst, proto=proto, port=port)

    def trace(self, src: str, dst: str, proto: str = "icmp", port: int | None = None):
        return T.trace(src, dst, proto, port, timeout=1.0)

    def run_fix(self, commands: list[str]) -> None:
        """Run doctor's fix as printed (shlex.split, no shell), only in this Net's namespaces."""
        assert commands, "doctor printed no fix"
        for c in commands:
            argv = shlex.split(c)
            if argv[:2] == ["ip", "-n"]:
                assert argv[2] in self.names, c
            else:
                assert argv[:3] == ["ip", "netns", "exec"] and argv[3] in self.names, c
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


def errors(report) -> list:
    return [f for f in report.findings if f.severity == "error"]


def assert_healthy(net: Net, src: str, dst: str, proto: str = "icmp", port: int | None = None):
    """doctor finds nothing, its probe passes, and a real packet gets there and back. Returns
    doctor's report."""
    r = net.doctor(src, dst, proto, port)
    assert r.findings == [], [(f.code, f.summary) for f in r.findings]
    assert r.probe.ok and r.exit_status == 0 and r.path.complete and r.reply_complete
    assert net.reaches(src, dst, proto, port)
    return r


def assert_working(net: Net, src: str, dst: str, proto: str = "icmp", port: int | None = None, *,
                   to: str | None = None):
    """assert_healthy, and trace follows the probe to `to` (default far) and back. Returns
    doctor's report."""
    r = assert_healthy(net, src, dst, proto, port)
    assert_traced_there_and_back(net, src, dst, proto, port, to=to)
    return r


def assert_traced_there_and_back(net: Net, src: str, dst: str, proto: str = "icmp", port: int | None = None,
                                 *, to: str | None = None) -> None:
    """trace follows the probe to the namespace that answers (`to`) and the reply back to `src`."""
    t = net.trace(src, dst, proto, port)
    assert t.request.outcome == "delivered" and t.request.delivered_to == (to or net.far), T.render(t)
    assert t.reply is not None and t.reply.outcome == "delivered" and t.reply.delivered_to == src, T.render(t)
    assert net.router in [h.ns for h in t.request.hops] and net.router in [h.ns for h in t.reply.hops]


def assert_first_error_then_fix(net: Net, src: str, dst: str, code: str, *, proto: str = "icmp",
                                port: int | None = None, namespace: str | None = None, says: str = ""):
    """The real packet fails; doctor's first error is `code` (in `namespace`, saying `says`); its fix,
    run as printed, makes the packet get through. Returns that finding."""
    assert not net.reaches(src, dst, proto, port), "the break does not break"
    r = net.doctor(src, dst, proto, port)
    errs = errors(r)
    assert errs and errs[0].code == code, [(f.code, f.summary) for f in r.findings]
    f = errs[0]
    assert f.namespace == (namespace or net.router) and says in f.summary, f.summary
    net.run_fix(f.fix)
    assert net.reaches(src, dst, proto, port), f"after the fix {f.fix}"
    return f


def _veth(net: Net, a_ns: str, a: str, b_ns: str, b: str) -> None:
    net.x(a_ns, "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns)


def build(*, bridge: str | None = None, port_name: str | None = None, lan_if: str = "lan0",
          wan_if: str = "wan0", router_name: str = "rtr") -> Net:
    """The plain router; with `bridge` (e.g. "docker0"), its lan side is that bridge and the lan's
    veth is its port `port_name` (Docker names it vethXXXXXXX). `lan_if`, `wan_if`: the router's
    interface names (Neutron's are qr-XXXXXXXX-XX and qg-XXXXXXXX-XX)."""
    tok = secrets.token_hex(3)
    net = Net(f"c{tok}-lan", f"c{tok}-{router_name}", f"c{tok}-far", lan_if=lan_if, wan_if=wan_if)
    for ns in net.names:
        netns.create(ns)
    try:
        r, lan, far = net.router, net.lan, net.far
        for ns in net.names:
            net.x(ns, "ip", "link", "set", "lo", "up")
        if bridge:
            net.lan_if, net.lan_port = bridge, port_name or f"veth{tok}"
            net.x(r, "ip", "link", "add", bridge, "type", "bridge")
            _veth(net, r, net.lan_port, lan, "eth0")
            net.x(r, "ip", "link", "set", net.lan_port, "master", bridge)
            net.x(r, "ip", "link", "set", net.lan_port, "up")
        else:
            _veth(net, r, lan_if, lan, "eth0")
        net.x(r, "ip", "addr", "add", f"{LAN_GW}/24", "dev", net.lan_if)
        net.x(r, "ip", "link", "set", net.lan_if, "up")
        _veth(net, r, wan_if, far, "eth0")
        net.x(r, "ip", "addr", "add", f"{WAN}/24", "dev", wan_if)
        net.x(r, "ip", "link", "set", wan_if, "up")
        net.x(lan, "ip", "addr", "add", f"{LAN}/24", "dev", "eth0")
        net.x(lan, "ip", "link", "set", "eth0", "up")
        net.x(far, "ip", "addr", "add", f"{FAR_WAN}/24", "dev", "eth0")
        net.x(far, "ip", "link", "set", "eth0", "up")
        net.x(far, "ip", "addr", "add", f"{FAR}/32", "dev", "lo")
        net.servers.append(Server(lan, LAN, PORT))
        net.reset()
    except BaseException:
        remove(net)
        raise
    return net


def remove(net: Net) -> None:
    for s in net.servers:
        s.close()
    for ns in net.names:
        with contextlib.suppress(OSError):
            netns.remove(ns)
    left = [ns for ns in net.names if netns.exists(ns)]
    assert left == [], f"namespaces left behind: {left}"


def fixtures(setup: Callable[[Net], None] | None = None, *, prepare: Callable[[Net], None] | None = None,
             **kw):
    """A test module's two fixtures: `shared` (one Net for the module, built with `kw`, then
    `prepare`d once) and `net` (that Net reset, then `setup` -- the module's rules -- for each
    test, and reset after). In the module: ``shared, net = builder.fixtures(load_rules)``."""
    @pytest.fixture(scope="module")
    def shared():
        with plain_router(**kw) as n:
            if prepare:
                prepare(n)
            yield n

    @pytest.fixture
    def net(shared):
        shared.reset()
        if setup:
            setup(shared)
        yield shared
        shared.reset()

    return shared, net


@contextlib.contextmanager
def plain_router(**kw):
    net = build(**kw)
    try:
        yield net
    finally:
        remove(net)
