"""Floating IPs at scale: update latency, and new-connection cost, vs how many exist.

One router per backend (nftables, iptables), side by side, grown through the
sizes: 10 -> 100 -> 1,000 -> 10,000 floating IPs. The lab needs more
addresses than the documentation ranges hold, so it lives in 100.64.0.0/16:
the external network is 100.64.0.0/17 (internet 100.64.0.1, router
100.64.0.2, floating IPs from 100.64.0.10), the private network
100.64.128.0/17 (the one real tenant host 100.64.128.2).

* Update latency (sizes 100, 1,000, 10,000): add one floating IP to the
  topology and converge (`up`), then remove it again. Reported whole (read
  the kernel, plan, apply) and by part: the firewall step alone (nftables: one
  element transaction; iptables: a reload of natns's chains) and reading the
  kernel + planning.
* New connections (sizes 10, 1,000, 10,000): TCP connections from the
  internet namespace to the floating IP that comes *last* (the worst case for
  iptables, whose DNAT rules are a list), answered by the tenant host: rate,
  and p50 / p99 time of connect().

Run alone: ``python -m benchmarks.fip [--sizes 10,100,1000,10000] [--reps 5]``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time

import yaml

from natns import Lab
from natns.topology import parse as parse_topology
from natns.apply import Handles, run_step
from natns.kernel import nsexec
from natns.steps import FIREWALL_STEPS

from .common import Results, Run, main_for, natns_cli, timed

BENCH = "fip"
BACKENDS = ("nftables", "iptables")
EXT = ipaddress.ip_network("100.64.0.0/17")
PRIV = ipaddress.ip_network("100.64.128.0/17")
HOST = "100.64.128.2"
TARGET = "100.64.0.9"  # the floating IP of the real host, always listed last
PORT = 80
UPDATE_SIZES = (100, 1000, 5000, 10000)
CONN_SIZES = (10, 1000, 5000, 10000)
CLI_BACKEND = "nftables"  # `natns up FILE` as a process: the row


def fip_pairs(n: int) -> list[tuple[str, str]]:
    """n floating IPs: n-1 to private addresses with no host behind them, then TARGET -> HOST."""
    base_e, base_p = int(EXT.network_address) + 10, int(PRIV.network_address) + 10
    out = [(str(ipaddress.ip_address(base_e + i)), str(ipaddress.ip_address(base_p + i))) for i in range(n - 1)]
    return out + [(TARGET, HOST)]


def extra_pair(n: int) -> tuple[str, str]:
    base_e, base_p = int(EXT.network_address) + 10, int(PRIV.network_address) + 10
    return str(ipaddress.ip_address(base_e + n + 100)), str(ipaddress.ip_address(base_p + n + 100))


def topology(p: str, backend: str, pairs: list[tuple[str, str]]) -> dict:
    r = f"{p}r"
    return {
        "name": p, "backend": backend,
        "internet": {"namespace": f"{p}i", "address": "100.64.0.1/17"},
        "routers": [{"name": r, "external": {"address": "100.64.0.2/17"}, "isolation": False}],
        "networks": [{"name": "big", "router": r, "cidr": str(PRIV), "gateway": "100.64.128.1",
                      "hosts": [{"namespace": f"{p}h", "address": HOST}]}],
        "floating_ips": [{"router": r, "address": a, "host": h} for a, h in pairs],
    }


def converge(lab: Lab) -> dict:
    """`up`, step by step, timing its parts: seconds for plan (read + diff), firewall, the rest."""
    t0 = time.perf_counter()
    plan = lab.plan()
    t1 = time.perf_counter()
    fw = other = 0.0
    with Handles() as h:
        for step in plan.steps:
            dt, _ = timed(lambda: run_step(step, h))
            if isinstance(step, FIREWALL_STEPS):
                fw += dt
            else:
                other += dt
    total = time.perf_counter() - t0
    return {"total": total, "plan": t1 - t0, "firewall": fw, "other": other, "steps": len(plan.steps)}


class Server:
    """A TCP listener in a namespace that accepts and drops connections, until closed."""

    def __init__(self, ns: str, addr: str, port: int):
        self.sock = nsexec.call_in(ns, lambda: socket.create_server((addr, port), backlog=4096))
        self.sock.settimeout(0.5)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                c.close()
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.sock.close()
        self.thread.join(timeout=2)


_LINGER0 = struct.pack("ii", 1, 0)


def connect_loop(ns: str, addr: str, port: int, seconds: float, limit: int) -> tuple[float, list[float]]:
    """Open and reset TCP connections from `ns` for `seconds` (at most `limit`): (rate/s, connect times)."""

    def go():
        lat: list[float] = []
        fails = 0
        t_end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end and len(lat) < limit and fails < 20:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)  # RST: no TIME_WAIT pile-up
            s.settimeout(2)
            try:
                t = time.perf_counter()
                s.connect((addr, port))
                lat.append(time.perf_counter() - t)
            except OSError:
                fails += 1
            finally:
                s.close()
        return len(lat) / (time.perf_counter() - t0), lat

    return nsexec.call_in(ns, go)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    seconds = 0.3 if smoke else 1.0
    with Run(BENCH) as r:
        labs = {b: r.name(b[0]) for b in BACKENDS}
        servers = []
        r.cleanups.append(lambda: [s.close() for s in servers])
        for size in sorted(sizes):
            for b in BACKENDS:
                p = labs[b]
                dt = converge(Lab(parse_topology(topology(p, b, fip_pairs(size)), f"{p}.yaml")))
                res.add("bulk converge to size", "s", dt["total"], backend=b, fips=size)
                if not servers or len(servers) < len(BACKENDS):
                    servers.append(Server(f"{p}h", HOST, PORT))
            if size in UPDATE_SIZES or smoke:
                base = {b: Lab(parse_topology(topology(labs[b], b, fip_pairs(size)), "x.yaml")) for b in BACKENDS}
                grown = {b: Lab(parse_topology(topology(labs[b], b, fip_pairs(size) + [extra_pair(size)]), "x.yaml"))
                         for b in BACKENDS}
                files = {}
                for what, extra in (("remove one", []), ("add one", [extra_pair(size)])):
                    files[what] = r.path(f"{labs[CLI_BACKEND]}-{size}-{what[0]}.yaml")
                    with open(files[what], "w") as fh:
                        yaml.safe_dump(topology(labs[CLI_BACKEND], CLI_BACKEND, fip_pairs(size) + extra), fh,
                                       sort_keys=False)
                for rep in range(reps):
                    for b in (BACKENDS if rep % 2 == 0 else BACKENDS[::-1]):
                        if b == CLI_BACKEND:  # the whole process, as an operator runs it
                            for what in ("add one", "remove one"):
                                dt, _ = natns_cli("up", files[what])
                                res.add(f"{what}: natns up FILE (process)", "s", dt, backend=b, fips=size)
                        for what, lab in (("add one", grown[b]), ("remove one", base[b])):
                            t = converge(lab)
                            res.add(f"{what}: whole up", "ms", t["total"] * 1e3, backend=b, fips=size)
                            res.add(f"{what}: firewall step", "ms", t["firewall"] * 1e3, backend=b, fips=size)
                            res.add(f"{what}: read kernel + plan", "ms", t["plan"] * 1e3, backend=b, fips=size)
                            res.add(f"{what}: other steps", "ms", t["other"] * 1e3, backend=b, fips=size,
                                    note="the /32 address; on removal conntrack -D")
            if size in CONN_SIZES or smoke:
                for rep in range(reps if not smoke else 1):
                    for b in (BACKENDS if rep % 2 == 0 else BACKENDS[::-1]):
                        rate, lat = connect_loop(f"{labs[b]}i", TARGET, PORT, seconds, 20000)
                        if not lat:
                            raise RuntimeError(f"{b}: no connection to floating IP {TARGET} succeeded")
                        res.add("new connections", "conn/s", rate, backend=b, fips=size)
                        res.add("connect p50", "ms", pct(lat, 0.5) * 1e3, backend=b, fips=size)
                        res.add("connect p99", "ms", pct(lat, 0.99) * 1e3, backend=b, fips=size)
        ups, cons = [s for s in UPDATE_SIZES if s in sizes], [s for s in CONN_SIZES if s in sizes]
        for b in BACKENDS:
            for what in ("add one", "remove one"):
                for part in ("firewall step", "whole up"):
                    if len(ups) >= 2:
                        lo, hi = res.get(f"{what}: {part}", backend=b, fips=ups[0]), \
                            res.get(f"{what}: {part}", backend=b, fips=ups[-1])
                        if lo and hi:
                            res.add(f"{what}: {part}, {ups[-1]} / {ups[0]}", "x", hi / lo, backend=b)
            if len(cons) >= 2:
                lo, hi = res.get("new connections", backend=b, fips=cons[0]), \
                    res.get("new connections", backend=b, fips=cons[-1])
                if lo and hi:
                    res.add(f"new connections, {cons[0]} / {cons[-1]}", "x", lo / hi, backend=b)
        if len(ups) >= 2:
            for what in ("add one", "remove one"):
                v = res.get(f"{what}: firewall step, {ups[-1]} / {ups[0]}", backend="nftables")
                res.goal(f"nftables {what}: firewall step flat, {ups[0]} -> {ups[-1]}", v, "<= 2x",
                         lambda x: x <= 2)
                v = res.get(f"{what}: firewall step", backend="nftables", fips=ups[-1])
                res.goal(f"nftables {what} at {ups[-1]}: firewall step < 20 ms", v, "< 20 ms", lambda x: x < 20)
                v = res.get(f"{what}: whole up", backend="nftables", fips=ups[-1])
                res.goal(f"nftables {what} at {ups[-1]}: whole up < 20 ms", v, "< 20 ms", lambda x: x < 20,
                         note="reads the whole table back")
        if len(ups) >= 2:
            for what in ("add one", "remove one"):
                lo = res.get(f"{what}: natns up FILE (process)", backend=CLI_BACKEND, fips=ups[0])
                hi = res.get(f"{what}: natns up FILE (process)", backend=CLI_BACKEND, fips=ups[-1])
                if lo and hi:
                    res.add(f"{what}: natns up FILE (process), {ups[-1]} / {ups[0]}", "x", hi / lo,
                            backend=CLI_BACKEND)
                res.goal(f"natns up FILE, {what} floating IP at {ups[-1]} < 0.2 s", hi, "< 0.2 s",
                         lambda x: x < 0.2)
                res.goal(f"natns up FILE, {what} floating IP: {ups[-1]} / {ups[0]} <= 1.3x",
                         hi / lo if lo and hi else None, "<= 1.3x", lambda x: x <= 1.3)
        if len(cons) >= 2:
            v = res.get(f"new connections, {cons[0]} / {cons[-1]}", backend="nftables")
            res.goal(f"nftables new-connection rate flat, {cons[0]} -> {cons[-1]} fips", v, "<= 1.25x",
                     lambda x: x <= 1.25)
    return res


def main(argv=None) -> Results:
    return main_for(BENCH, run, "10,100,1000,10000", 5, argv)


if __name__ == "__main__":
    main()
