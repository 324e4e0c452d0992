"""SNAT: new-connection rate, conntrack insert failures, and how many connections fit.

One tenant (192.0.2.2) behind one router, one destination (203.0.113.1:80 in
the internet namespace). natns builds the lab with `snat: off` and no policy;
the benchmark then puts its own nft table ``ip bench`` in its own router
namespace with the SNAT variant under test, so variants differ in one rule:

* rate (connect + reset, as fast as one Python client goes, for a second):
  routing (no NAT; a route back in the internet namespace), masquerade (what
  natns writes), masquerade random-fully;
* capacity (connections opened and held until the next one fails): SNAT to
  one address, or to 4 (198.51.100.2-5), each with a port range of P ports
  (1,000; 100 in the smoke run) so the range fills in seconds; with and
  without random-fully. A connection whose SYN can't get a free tuple is
  dropped by NAT; the count stops after 5 consecutive connect timeouts.
  The full default range holds 64,512 ports per address: scale by P.

Conntrack insert failures are read from ``conntrack -S`` in the router
(insert_failed + drop, summed over CPUs) before and after each test.
Run alone: ``python -m benchmarks.snat [--sizes 1000] [--reps 3]`` (size: P).
"""

from __future__ import annotations

import re
import socket
import threading
import time

from natns import Lab, down_lab
from natns.topology import parse as parse_topology
from natns.kernel import link, nftlib, nsexec, route, rtnl
from natns.state import RouteState

from .common import Results, Run, main_for
from .fip import _LINGER0, Server, connect_loop, pct

BENCH = "snat"
DST = "203.0.113.1"
PORT = 80
EXTRA = ("198.51.100.3", "198.51.100.4", "198.51.100.5")


def topology(p: str) -> dict:
    return {
        "name": p,
        "internet": {"namespace": f"{p}i", "address": "198.51.100.1/24", "hosts": [DST]},
        "routers": [{"name": f"{p}r", "external": {"address": "198.51.100.2/24"}, "snat": "off",
                     "isolation": False}],
        "networks": [{"name": "t", "router": f"{p}r", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"{p}h", "address": "192.0.2.2"}]}],
    }


def rule_for(variant: str, ports: int) -> str | None:
    lo, hi = 20000, 20000 + ports - 1
    return {
        "routing": None,
        "masquerade": "masquerade",
        "masquerade random-fully": "masquerade fully-random",  # nft's name for iptables' --random-fully
        "1 address": f"snat to 198.51.100.2:{lo}-{hi}",
        "1 address random-fully": f"snat to 198.51.100.2:{lo}-{hi} fully-random",
        "4 addresses": f"snat to 198.51.100.2-198.51.100.5:{lo}-{hi}",
        "4 addresses random-fully": f"snat to 198.51.100.2-198.51.100.5:{lo}-{hi} fully-random",
    }[variant]


def set_rule(router: str, action: str | None) -> None:
    """Replace table ip bench in the router with one SNAT rule (or none), and forget old connections."""
    text = "add table ip bench\ndelete table ip bench\n"
    if action:
        text += ("table ip bench {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
                 f'\t\toifname "eth0" ip saddr 192.0.2.0/24 meta l4proto tcp {action}\n\t}}\n}}\n')
    nftlib.run(router, ["nft", "-f", "-"], input=text)
    nsexec.run(router, ["conntrack", "-F"], check=False)


def ct_failures(router: str) -> int:
    """insert_failed + drop over all CPUs of the router's conntrack."""
    out = nsexec.run(router, ["conntrack", "-S"], check=False).stdout
    return sum(int(n) for n in re.findall(r"\b(?:insert_failed|drop)=(\d+)", out))


class HoldServer(Server):
    """A listener that accepts and keeps every connection open until closed."""

    def __init__(self, ns, addr, port):
        self.held: list[socket.socket] = []
        super().__init__(ns, addr, port)

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.held.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def drop_all(self):
        for c in self.held:
            c.close()
        self.held.clear()

    def close(self):
        super().close()
        self.drop_all()


def capacity(ns: str, addr: str, port: int, limit: int) -> tuple[int, int]:
    """Open and hold connections from `ns` until 5 in a row fail: (held, failed attempts)."""

    def go():
        held, failed, in_a_row = [], 0, 0
        try:
            while len(held) + failed < limit and in_a_row < 5:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                s.settimeout(0.25)
                try:
                    s.connect((addr, port))
                    held.append(s)
                    in_a_row = 0
                except OSError:
                    s.close()
                    failed += 1
                    in_a_row += 1
            return len(held), failed
        finally:
            for s in held:
                s.close()

    return nsexec.call_in(ns, go)


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    ports = sizes[0]
    res.info["port_range"] = ports
    seconds = 0.3 if smoke else 1.0
    with Run(BENCH) as r:
        p = r.name("s")
        router, inet, host = f"{p}r", f"{p}i", f"{p}h"
        r.cleanups.append(lambda: down_lab(p))
        Lab(parse_topology(topology(p), "x.yaml")).up()
        with rtnl.open_in(router) as h:
            for a in EXTRA:  # the router answers ARP for the extra SNAT addresses
                link.add_address(h, "eth0", f"{a}/32")
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

        # rate
        srv = Server(inet, DST, PORT)
        r.cleanups.append(srv.close)
        for rep in range(reps):
            rates = {}
            for v in ("routing", "masquerade", "masquerade random-fully"):
                set_rule(router, rule_for(v, ports))
                with rtnl.open_in(inet) as h:  # the way back without NAT exists only for "routing"
                    rt = RouteState(dst="192.0.2.0/24", gateway="198.51.100.2")
                    (route.add if v == "routing" else route.delete)(h, rt)
                before = ct_failures(router)
                rate, lat = connect_loop(host, DST, PORT, seconds, 50000)
                if not lat:
                    raise RuntimeError(f"{v}: no connection from the tenant succeeded")
                rates[v] = rate
                res.add("new connections", "conn/s", rate, variant=v)
                res.add("connect p50", "ms", pct(lat, 0.5) * 1e3, variant=v)
                res.add("connect p99", "ms", pct(lat, 0.99) * 1e3, variant=v)
                res.add("conntrack insert failures", "count", ct_failures(router) - before, variant=v)
            res.add("new connections masquerade / routing", "x", rates["masquerade"] / rates["routing"])
        srv.close()

        # capacity
        hold = HoldServer(inet, DST, PORT)
        r.cleanups.append(hold.close)
        with rtnl.open_in(inet) as h:
            route.delete(h, RouteState(dst="192.0.2.0/24", gateway="198.51.100.2"))
        for rep in range(reps):
            for v in ("1 address", "1 address random-fully", "4 addresses", "4 addresses random-fully"):
                set_rule(router, rule_for(v, ports))
                before = ct_failures(router)
                n, failed = capacity(host, DST, PORT, 4 * ports + 50)
                res.add("concurrent connections that fit", "conn", n, variant=v, ports=ports)
                res.add("fill of the port range", "x", n / ports, variant=v, ports=ports)
                res.add("failed connects before stopping", "count", failed, variant=v)
                res.add("conntrack insert failures", "count", ct_failures(router) - before, variant=v)
                hold.drop_all()
                time.sleep(0.2)
        set_rule(router, None)
    return res


def main(argv=None) -> Results:
    return main_for(BENCH, run, "1000", 3, argv)


if __name__ == "__main__":
    main()
