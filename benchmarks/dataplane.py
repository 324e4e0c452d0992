"""Data plane: TCP throughput through the router, with and without NAT, vs a bare veth pair.

iperf3 from a tenant host (192.0.2.2) to an internet host (203.0.113.1 on the
internet namespace's loopback), through the path natns builds:

* nat: the router masquerades (natns, isolation off: NAT rules only);
* nat+policy: the same with natns's default router policy (isolation on);
* routing: the same path with `snat: off`, and a route back to 192.0.2.0/24 in
  the internet namespace (added by the benchmark in its own namespace): plain
  forwarding, no conntrack, no NAT;
* veth: one veth pair between two namespaces (192.0.2.1 -> 192.0.2.2), no router.

Variants take turns in every repetition. Goal: nat >= 0.9 x routing. The
new-connection rate with 10 / 1,000 / 10,000 floating IPs is measured by
benchmarks.fip (it shares that benchmark's labs). Run alone:
``python -m benchmarks.dataplane [--reps 3]`` (``--sizes`` is the iperf3 duration in seconds).
"""

from __future__ import annotations

import json
import socket
import time

from natns import Lab, down_lab
from natns.topology import parse as parse_topology
from natns.kernel import link, netns, nsexec, rtnl

from .common import Results, Run, main_for

BENCH = "dataplane"
INET_HOST = "203.0.113.1"
VARIANTS = ("nat", "nat+policy", "routing", "veth")


def topology(p: str, snat: str, isolation: bool) -> dict:
    return {
        "name": p,
        "internet": {"namespace": f"{p}i", "address": "198.51.100.1/24", "hosts": [INET_HOST]},
        "routers": [{"name": f"{p}r", "external": {"address": "198.51.100.2/24"}, "snat": snat,
                     "isolation": isolation}],
        "networks": [{"name": "t", "router": f"{p}r", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"{p}h", "address": "192.0.2.2"}]}],
    }


def veth_pair(a: str, b: str) -> None:
    """Namespaces a and b joined by one veth pair: a 192.0.2.1/24, b 192.0.2.2/24."""
    for ns, addr in ((a, "192.0.2.1/24"), (b, "192.0.2.2/24")):
        with netns.create_open(ns) as h:
            link.configure(h, "lo", up=True)
    with rtnl.open_in(a) as h:
        link.create_veth(h, "eth0", b, "eth0")
        link.add_address(h, "eth0", "192.0.2.1/24")
        link.configure(h, "eth0", up=True)
    with rtnl.open_in(b) as h:
        link.add_address(h, "eth0", "192.0.2.2/24")
        link.configure(h, "eth0", up=True)


def wait_port(ns: str, addr: str, port: int, timeout: float = 5.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            nsexec.call_in(ns, lambda: socket.create_connection((addr, port), timeout=0.5).close())
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"iperf3 server on {addr}:{port} in {ns} did not come up")


def iperf(run: Run, server_ns: str, client_ns: str, addr: str, seconds: float, port: int = 5201) -> float:
    """Gbit/s of one iperf3 TCP test from client_ns to addr (served in server_ns)."""
    import subprocess

    srv = nsexec.popen(server_ns, ["iperf3", "-s", "-1", "-B", addr, "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # iperf3 -1 serves one test; a probe connection would use it up, so just wait for the socket.
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end:
            out = nsexec.run(server_ns, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                break
            time.sleep(0.05)
        proc = nsexec.run(client_ns, ["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-J"],
                          check=False, timeout=seconds + 30)
        data = json.loads(proc.stdout or "{}")
        if "error" in data or proc.returncode != 0:
            raise RuntimeError(f"iperf3 {client_ns} -> {addr}: {data.get('error') or proc.stderr[-300:]}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait(timeout=5)


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    seconds = 1 if smoke else max(1, sizes[0])
    res.info["iperf3_seconds"] = seconds
    with Run(BENCH) as r:
        p = {v: r.name(v[0] if v != "nat+policy" else "p") for v in VARIANTS}
        for v, snat, iso in (("nat", "masquerade", False), ("nat+policy", "masquerade", True),
                             ("routing", "off", False)):
            lab = Lab(parse_topology(topology(p[v], snat, iso), "x.yaml"))
            r.cleanups.append(lambda name=p[v]: down_lab(name))
            lab.up()
        with rtnl.open_in(f"{p['routing']}i") as h:  # the way back, in the benchmark's own namespace
            from natns.kernel import route
            from natns.state import RouteState

            route.add(h, RouteState(dst="192.0.2.0/24", gateway="198.51.100.2"))
        veth_pair(f"{p['veth']}a", f"{p['veth']}b")
        paths = {v: (f"{p[v]}i", f"{p[v]}h", INET_HOST) for v in ("nat", "nat+policy", "routing")}
        paths["veth"] = (f"{p['veth']}a", f"{p['veth']}b", "192.0.2.1")
        for rep in range(reps):
            got = {}
            order = VARIANTS[rep % 4:] + VARIANTS[:rep % 4]
            for v in order:
                srv, cli, addr = paths[v]
                got[v] = iperf(r, srv, cli, addr, seconds)
                res.add("TCP throughput", "Gbit/s", got[v], path=v)
            for v in ("nat", "nat+policy", "veth"):
                res.add(f"throughput {v} / routing", "x", got[v] / got["routing"])
        res.goal("NAT throughput >= 0.9 x plain routing", res.get("throughput nat / routing"), ">= 0.9",
                 lambda x: x >= 0.9)
        res.goal("NAT + router policy >= 0.9 x plain routing", res.get("throughput nat+policy / routing"),
                 ">= 0.9", lambda x: x >= 0.9, note="not a goal of the issue; shown for the default")
    return res


def main(argv=None) -> Results:
    return main_for(BENCH, run, "4", 3, argv)


if __name__ == "__main__":
    main()
