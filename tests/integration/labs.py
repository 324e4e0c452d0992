"""Topologies and kernel helpers for integration tests.

Every topology here takes a unique token so namespace names never collide
with another test run or with anything else on the machine.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time

import yaml

from natns.kernel import netns as kns
from natns.kernel import nsexec

SEED_INET = "203.0.113.114"


def seed(uid: str, backend: str = "nftables") -> dict:
    """The seed's lab (examples/seed.yaml) with unique namespace names."""
    return {
        "name": f"seed{uid}",
        "backend": backend,
        "internet": {"namespace": f"t{uid}-inet", "address": "198.51.100.1/24", "hosts": [SEED_INET]},
        "routers": [{"name": f"t{uid}-vm",
                     "external": {"interface": "eth0", "address": "198.51.100.116/24", "gateway": "198.51.100.1"},
                     "snat": "masquerade"}],
        "networks": [{"name": "tenant", "router": f"t{uid}-vm", "cidr": "192.0.2.0/24", "gateway": "192.0.2.3",
                      "hosts": [{"namespace": f"t{uid}-tenant1", "address": "192.0.2.2"}]}],
    }


def two_routers(uid: str, backend: str = "nftables") -> dict:
    """examples/two-routers.yaml with unique names: 2 routers, 3 networks, one CIDR used twice."""
    with open("examples/two-routers.yaml") as fh:
        text = fh.read()
    data = yaml.safe_load(text.replace("tr-", f"t{uid}"))
    data["name"] = f"tr{uid}"
    data["backend"] = backend
    return data


def write(tmp_path, data: dict, name: str = "lab.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def kernel_dump(ns: str | None) -> dict:
    """Everything `ip` and the firewall tools show for namespace `ns` (None: ours)."""

    def ipj(*args):
        out = nsexec.run(ns, ["ip", "-j", "-d", *args]).stdout
        return json.loads(out or "[]")

    # IPv6 duplicate address detection finishes by itself (~1-2 s after a link comes up,
    # longer on a loaded machine) and adds local routes: wait for it, bounded, so that two
    # dumps differ only by what someone did in between.
    deadline = time.monotonic() + 10
    while "tentative" in nsexec.run(ns, ["ip", "-6", "addr"]).stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    links = _stable(ipj("link", "show"))
    sysctls = {}
    for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.forwarding"):
        sysctls[key] = nsexec.run(ns, ["sysctl", "-n", key]).stdout.strip()
    # Counters move with the kernel's own traffic (IGMP reports when links come up).
    nft = re.sub(r"counter packets \d+ bytes \d+", "counter",
                 nsexec.run(ns, ["nft", "list", "ruleset"], check=False).stdout)
    ipt = "\n".join(ln for ln in nsexec.run(ns, ["iptables-save"], check=False).stdout.splitlines()
                    if not ln.startswith("#"))
    return {
        "links": links,
        "addrs": _stable(ipj("addr", "show")),
        "routes": ipj("route", "show", "table", "all"),
        "rules": ipj("rule", "show"),
        "sysctls": sysctls,
        "nft": nft,
        "iptables": ipt,
    }


def _stable(obj):
    """Drop what changes by itself (bridge timers, statistics) from `ip -j` output."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not k.endswith("_timer") and not k.startswith("stats")}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def lab_namespaces(data: dict) -> list[str]:
    out = [data["internet"]["namespace"]] if data.get("internet") else []
    out += [r.get("namespace") or r["name"] for r in data["routers"]]
    out += [h["namespace"] for n in data["networks"] for h in n.get("hosts", [])]
    return out


def existing(names) -> list[str]:
    return [n for n in names if kns.exists(n)]


class PeerServer:
    """A TCP server in a lab namespace that answers each client with the address it saw."""

    def __init__(self, ns: str, addr: str, port: int):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET  # an IPv6 address (or "::"): IPv6
        self.sock = nsexec.call_in(ns, lambda: socket.create_server((addr, port), family=family))
        self.sock.settimeout(10)
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while True:
                conn, peer = self.sock.accept()
                with conn:
                    conn.recv(1024)
                    self.seen.append(peer[0])
                    conn.sendall(peer[0].encode())
        except OSError:
            return

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def natns(*args, user: str | None = None) -> subprocess.CompletedProcess:
    """Run the natns CLI as a separate process, as a user would."""
    import sys

    argv = [sys.executable, "-m", "natns.cli", *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def mapped(uid: str, backend: str = "nftables") -> dict:
    """The seed lab with a second tenant host, a floating IP and port forwards.

    tenant1 192.0.2.2 has floating IP 198.51.100.50; tcp 8080 on the router's
    external address goes to tenant2 192.0.2.4:80; tcp 9000-9002 to tenant2
    9100-9102; udp 5353 to tenant2 53.
    """
    data = seed(uid, backend)
    vm = f"t{uid}-vm"
    data["networks"][0]["hosts"].append({"namespace": f"t{uid}-tenant2", "address": "192.0.2.4"})
    data["floating_ips"] = [{"router": vm, "address": "198.51.100.50", "host": "192.0.2.2"}]
    data["port_forwards"] = [
        {"router": vm, "protocol": "tcp", "port": 8080, "to": "192.0.2.4:80"},
        {"router": vm, "protocol": "tcp", "port": "9000-9002", "to": "192.0.2.4:9100"},
        {"router": vm, "protocol": "udp", "port": 5353, "to": "192.0.2.4:53"},
    ]
    return data


class Stream:
    """A long-lived TCP connection from `client_ns` to a server in `server_ns` that echoes lines."""

    def __init__(self, server_ns: str, bind: str, port: int, client_ns: str, connect: str, cport: int | None = None):
        self.srv = nsexec.call_in(server_ns, lambda: socket.create_server((bind, port)))
        self.srv.settimeout(5)
        self.peer: list = []
        self.thread = threading.Thread(target=self._echo, daemon=True)
        self.thread.start()
        self.cli = nsexec.call_in(client_ns, lambda: socket.create_connection((connect, cport or port), timeout=5))

    def _echo(self):
        try:
            conn, peer = self.srv.accept()
        except OSError:
            return
        self.peer.append(peer[0])
        conn.settimeout(10)
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def roundtrip(self, payload: bytes = b"ping\n", timeout: float = 2.0) -> bool:
        """Send `payload` and read it back; False if it doesn't come back in time."""
        try:
            self.cli.settimeout(timeout)
            self.cli.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = self.cli.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return got == payload
        except OSError:
            return False

    def close(self):
        for s in (self.cli, self.srv):
            try:
                s.close()
            except OSError:
                pass
        self.thread.join(timeout=2)
