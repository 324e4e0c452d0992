"""Bring-up and teardown of N tenant routers: natns vs a shell script vs ip -batch + nft -f.

Each router is what the seed builds by hand, N times over: a router namespace
with an external veth into the internet namespace's bridge, a default route,
forwarding and SNAT (masquerade), plus a tenant namespace with one host on a
bridge behind it. Every tenant network is 192.0.2.0/24 (each behind its own
router); the external network is 198.51.100.0/24, or 100.64.0.0/16 past 250
routers.

Three ways to build the same thing, side by side in one run:

* natns: `Lab.up()` / `down_lab()` (the library the CLI calls; the CLI's own
  start-up is measured separately for the no-op `up`);
* shell: a generated bash script of `ip` commands and `ip netns exec ...
  iptables`, one command per change, the way the seed does it by hand;
* batch: a generated bash script that does the same with one `ip -batch` for
  the namespaces and veth pairs, one `ip -n NS -batch` per namespace, and one
  `nsenter ... nft -f` per router for forwarding and SNAT.

Next to them, the kernel's own cost of creating and deleting one namespace
(unshare + bind mount, in-process; measured in the same run), the kernel
floor (benchmarks/floor.py: the same objects, built by the leanest builder),
and for the no-op `up` the read floor (`floor.read`: the requests natns's
reading makes, nothing decoded). Run alone:
``python -m benchmarks.bringup [--sizes 10,100,500] [--reps 3]``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

import yaml

from natns import Lab
from natns.topology import parse as parse_topology
from natns.firewall import nftables
from natns.kernel import netns
from natns.marks import NFT_TABLE

from . import floor
from .common import Results, Run, main_for, natns_cli, netns_alive, run_script, settle, timed

BENCH = "bringup"
INET_HOST = "203.0.113.1"
VARIANTS = ("natns", "shell", "batch", "floor")


def external(n: int) -> tuple[str, list[str], int]:
    """(internet address, router addresses, prefix length) for n routers."""
    net = ipaddress.ip_network("100.64.0.0/16" if n > 250 else "198.51.100.0/24")
    hosts = net.hosts()
    inet = str(next(hosts))
    return inet, [str(next(hosts)) for _ in range(n)], net.prefixlen


def names(p: str, n: int) -> tuple[str, list[str], list[str]]:
    """(internet namespace, router namespaces, host namespaces) for prefix p."""
    return f"{p}i", [f"{p}r{i}" for i in range(n)], [f"{p}h{i}" for i in range(n)]


def topology(p: str, n: int) -> dict:
    """The natns topology: n routers, each with one tenant host, SNAT by masquerade."""
    inet_addr, addrs, plen = external(n)
    inet, routers, hosts = names(p, n)
    return {
        "name": p,
        "internet": {"namespace": inet, "address": f"{inet_addr}/{plen}", "hosts": [INET_HOST]},
        # isolation off: the shell scripts build NAT only (the seed's rules); see docs/performance.md
        "routers": [{"name": r, "external": {"address": f"{a}/{plen}"}, "snat": "masquerade", "isolation": False}
                    for r, a in zip(routers, addrs)],
        "networks": [{"name": f"n{i}", "router": r, "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": h, "address": "192.0.2.2"}]}
                     for i, (r, h) in enumerate(zip(routers, hosts))],
    }


def shell_up(p: str, n: int) -> str:
    """The seed's way: one `ip` / `iptables` command per change."""
    inet_addr, addrs, plen = external(n)
    inet, routers, hosts = names(p, n)
    out = ["set -e",
           f"ip netns add {inet}",
           f"ip -n {inet} link set lo up",
           f"ip -n {inet} addr add {INET_HOST}/32 dev lo",
           f"ip -n {inet} link add ext type bridge",
           f"ip -n {inet} addr add {inet_addr}/{plen} dev ext",
           f"ip -n {inet} link set ext up"]
    for r, h, a in zip(routers, hosts, addrs):
        out += [
            f"ip netns add {r}",
            f"ip netns add {h}",
            f"ip -n {r} link set lo up",
            f"ip -n {h} link set lo up",
            f"ip -n {r} link add eth0 type veth peer name e-{r} netns {inet}",
            f"ip -n {inet} link set e-{r} master ext up",
            f"ip -n {r} addr add {a}/{plen} dev eth0",
            f"ip -n {r} link set eth0 up",
            f"ip -n {r} route add default via {inet_addr}",
            f"ip -n {r} link add qr-n type bridge",
            f"ip -n {r} addr add 192.0.2.1/24 dev qr-n",
            f"ip -n {r} link set qr-n up",
            f"ip -n {r} link add tap-{h} type veth peer name eth0 netns {h}",
            f"ip -n {r} link set tap-{h} master qr-n up",
            f"ip -n {h} addr add 192.0.2.2/24 dev eth0",
            f"ip -n {h} link set eth0 up",
            f"ip -n {h} route add default via 192.0.2.1",
            f"ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1",
            f"ip netns exec {r} iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -o eth0 -j MASQUERADE",
        ]
    return "\n".join(out) + "\n"


def shell_down(p: str, n: int) -> str:
    inet, routers, hosts = names(p, n)
    return "\n".join(f"ip netns del {x}" for x in [*routers, *hosts, inet]) + "\n"


def batch_up(p: str, n: int, d: str) -> str:
    """The same with batches: one `ip -batch` for namespaces and veths, one per namespace, one nft per router."""
    inet_addr, addrs, plen = external(n)
    inet, routers, hosts = names(p, n)

    def write(name: str, lines: list[str]) -> str:
        path = os.path.join(d, name)
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    top = [f"netns add {x}" for x in [inet, *routers, *hosts]]
    top += [f"link add eth0 netns {r} type veth peer name e-{r} netns {inet}" for r in routers]
    top += [f"link add tap-{h} netns {r} type veth peer name eth0 netns {h}" for r, h in zip(routers, hosts)]
    script = ["set -e", f"ip -batch {write('top.ip', top)}"]
    inet_lines = ["link set lo up", f"addr add {INET_HOST}/32 dev lo", "link add ext type bridge",
                  f"addr add {inet_addr}/{plen} dev ext", "link set ext up"]
    inet_lines += [f"link set e-{r} master ext up" for r in routers]
    script.append(f"ip -n {inet} -batch {write(f'{inet}.ip', inet_lines)}")
    nft = write("snat.nft", [
        "table ip nat {",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        '\t\toifname "eth0" ip saddr 192.0.2.0/24 masquerade',
        "\t}",
        "}",
    ])
    for r, h, a in zip(routers, hosts, addrs):
        rl = ["link set lo up", f"addr add {a}/{plen} dev eth0", "link set eth0 up",
              f"route add default via {inet_addr}", "link add qr-n type bridge",
              "addr add 192.0.2.1/24 dev qr-n", "link set qr-n up", f"link set tap-{h} master qr-n up"]
        hl = ["link set lo up", "addr add 192.0.2.2/24 dev eth0", "link set eth0 up",
              "route add default via 192.0.2.1"]
        script.append(f"ip -n {r} -batch {write(f'{r}.ip', rl)}")
        script.append(f"ip -n {h} -batch {write(f'{h}.ip', hl)}")
        # one process: nsenter execs sh, sh writes the sysctl and execs nft
        script.append(f"nsenter --net=/run/netns/{r} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward && exec nft -f {nft}'")
    return "\n".join(script) + "\n"


def batch_down(p: str, n: int, d: str) -> str:
    inet, routers, hosts = names(p, n)
    path = os.path.join(d, f"{p}-down.ip")
    with open(path, "w") as fh:
        fh.write("\n".join(f"netns del {x}" for x in [*routers, *hosts, inet]) + "\n")
    return f"ip -batch {path}\n"


def works(p: str, n: int) -> bool:
    """The first and last tenant reach the internet host, with their router's address as source."""
    from natns.verify.probe import ping

    _, routers, hosts = names(p, n)
    return all(ping(h, INET_HOST, timeout=2).ok for h in (hosts[0], hosts[-1]))


def kernel_netns_cost(run: Run, k: int) -> tuple[float, float]:
    """Seconds per namespace to create and to delete one (unshare + bind mount; umount + unlink)."""
    made = [run.name(f"k{i}") for i in range(k)]
    t0 = time.perf_counter()
    for name in made:
        netns.create(name)
    t1 = time.perf_counter()
    for name in made:
        netns.remove(name)
    t2 = time.perf_counter()
    return (t1 - t0) / k, (t2 - t1) / k


def floor_up(p: str, n: int, lab: Lab) -> float:
    """Seconds for the kernel floor (benchmarks.floor) to make the same objects as `natns up`."""
    from natns.steps import LoadFirewall

    rulesets = {s.ns: s.ruleset.text() for s in lab.plan().steps if isinstance(s, LoadFirewall)}
    inet_addr, addrs, plen = external(n)
    inet, routers, hosts = names(p, n)
    spec = [(r, h, a, f"n{i}") for i, (r, h, a) in enumerate(zip(routers, hosts, addrs))]
    netns._share_dir()
    t0 = time.perf_counter()
    floor.build(p, (inet, inet_addr, INET_HOST, plen), spec, rulesets)
    return time.perf_counter() - t0


def floor_down(p: str, n: int) -> float:
    inet, routers, hosts = names(p, n)
    t0 = time.perf_counter()
    floor.teardown([*routers, *hosts, inet])
    return time.perf_counter() - t0


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    res.info["variants"] = {"natns": "natns up FILE / natns down FILE (processes)",
                            "shell": "bash: ip + ip netns exec iptables, one command per change",
                            "batch": "bash: ip -batch + ip -n NS -batch + nsenter nft -f",
                            "floor": "benchmarks.floor: one process, netlink + libnftables, no planning"}
    with Run(BENCH) as r:
        base = netns_alive()
        res.info["net_namespace slab objects at start"] = base
        for n in sizes:
            for rep in range(reps):
                k = rep % len(VARIANTS)
                order = VARIANTS[k:] + VARIANTS[:k]  # each variant goes first in turn
                settle(base)
                kc, kd = kernel_netns_cost(r, min(n, 100))
                res.add("kernel: create one namespace", "ms", kc * 1e3, n=n)
                res.add("kernel: delete one namespace", "ms", kd * 1e3, n=n)
                up, down = {}, {}
                for v in order:
                    waited = settle(base)
                    res.add("kernel: settle before variant", "s", waited, variant=v, n=n,
                            note="until /proc/slabinfo net_namespace is back at its baseline (bounded)")
                    p = r.name(v[0])
                    topo = topology(p, n)
                    if v in ("natns", "floor"):
                        lab = Lab(parse_topology(topo, f"{p}.yaml"))
                    if v == "natns":
                        path = r.path(f"{p}.yaml")
                        with open(path, "w") as fh:
                            yaml.safe_dump(topo, fh, sort_keys=False)
                        up[v], rss = natns_cli("up", path)
                        res.add("natns up: peak memory (ru_maxrss)", "MB", rss / 1024, n=n,
                                note="wait4's ru_maxrss of the `natns up FILE` process")
                        if rep == 0 and not works(p, n):
                            raise RuntimeError(f"natns lab {p}: tenants can't reach {INET_HOST}")
                        for _ in range(3):
                            dt, _ = natns_cli("up", path, expect="no changes")
                            res.add("natns no-op up (CLI process)", "s", dt, n=n)
                        dt, again = timed(lab.up)
                        if not again.empty:
                            raise RuntimeError(f"second up of {p} was not a no-op: {again.steps[:3]}")
                        res.add("natns no-op up (library)", "s", dt, n=n)
                        names = list(lab.topology.namespaces())
                        routers = {x.name for x in lab.topology.routers}
                        t0 = time.perf_counter()
                        asked = floor.read(names, routers, NFT_TABLE, [*nftables.MAPS, *nftables.SETS])
                        floor_read = time.perf_counter() - t0
                        res.add("kernel floor: no-op read", "s", floor_read, n=n,
                                note=f"{asked} requests in {len(names)} namespaces, nothing decoded (floor.read)")
                        res.add("natns no-op up (library) / read floor", "x", dt / floor_read, n=n)
                        down[v], _ = natns_cli("down", path)
                    elif v == "floor":
                        up[v] = floor_up(p, n, lab)
                        if rep == 0:
                            if not works(p, n):
                                raise RuntimeError(f"floor lab {p}: tenants can't reach {INET_HOST}")
                            st = lab.status()  # natns itself says the floor made exactly its objects
                            if not st.ok:
                                raise RuntimeError(f"floor lab {p} differs from natns's: "
                                                   f"{[(x.name, x.problems) for x in st.namespaces if x.state != 'ok'][:3]}")
                        down[v] = floor_down(p, n)
                    else:
                        d = r.path(f"{p}-{rep}")
                        os.makedirs(d, exist_ok=True)
                        upf, downf = os.path.join(d, "up.sh"), os.path.join(d, "down.sh")
                        with open(upf, "w") as fh:
                            fh.write(shell_up(p, n) if v == "shell" else batch_up(p, n, d))
                        with open(downf, "w") as fh:
                            fh.write(shell_down(p, n) if v == "shell" else batch_down(p, n, d))
                        up[v] = run_script(upf)
                        if rep == 0 and not works(p, n):
                            raise RuntimeError(f"{v} lab {p}: tenants can't reach {INET_HOST}")
                        down[v] = run_script(downf)
                    left = [x for x in netns.list_names() if x.startswith(p)]
                    if left:
                        raise RuntimeError(f"{v} teardown left {len(left)} namespaces")
                for v in VARIANTS:
                    res.add("up, per router", "ms", up[v] / n * 1e3, variant=v, n=n)
                    res.add("down, per router", "ms", down[v] / n * 1e3, variant=v, n=n)
                for v in ("shell", "batch"):
                    res.add(f"up: {v} / natns", "x", up[v] / up["natns"], n=n)
                    res.add(f"down: {v} / natns", "x", down[v] / down["natns"], n=n)
                    res.add(f"up+down: {v} / natns", "x", (up[v] + down[v]) / (up["natns"] + down["natns"]), n=n)
                res.add("up: natns / floor", "x", up["natns"] / up["floor"], n=n)
                res.add("down: natns / floor", "x", down["natns"] / down["floor"], n=n)
                res.add("natns up per router / kernel namespace create", "x",
                        up["natns"] / n / kc, n=n, note="a router is two namespaces and more")
        big = max(sizes)
        res.goal(f"natns up >= 6x faster than the shell script at N={big}", res.get("up: shell / natns", n=big),
                 ">= 6", lambda v: v >= 6)
        res.goal(f"natns up within 1.3x of the kernel floor at N={big}", res.get("up: natns / floor", n=big),
                 "<= 1.3", lambda v: v <= 1.3)
        res.goal(f"no-op up of {big} routers (CLI process) < 1 s", res.get("natns no-op up (CLI process)", n=big),
                 "< 1 s", lambda v: v < 1, note="includes Python start, imports, YAML parse; the kernel's "
                 "share is `kernel floor: no-op read`, the imports' `natns up's imports` (startup)")
        res.goal(f"peak memory of natns up at N={big} < 150 MB",
                 res.get("natns up: peak memory (ru_maxrss)", n=big), "< 150 MB", lambda v: v < 150)
    return res


def main(argv=None) -> Results:
    return main_for(BENCH, run, "10,100,500", 3, argv)


if __name__ == "__main__":
    main()
