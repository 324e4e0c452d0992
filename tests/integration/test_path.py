"""The path walker, on namespaces made by hand and on a natns lab with bridges.

The walker reads the kernel only: each test checks the hops against what was
built, and one test checks that walking (and doctor without its probe)
changes nothing in any namespace.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from natns import Lab, down_lab, topology
from natns.errors import UserError
from natns.explain.doctor import diagnose
from natns.explain.path import find_namespace_owning, segment, walk

from .labs import existing, kernel_dump, lab_namespaces, seed
from .test_doctor import INET, build_seed, run

pytestmark = pytest.mark.root


def test_seed_path_tenant_router_inet(scratch_ns):
    s = build_seed(scratch_ns)
    p = walk(s.tenant, INET)
    assert p.complete and p.stop is None
    assert [h.ns for h in p.hops] == [s.tenant, s.vm, s.inet]
    t, vm, inet = p.hops
    assert (t.in_iface, t.out_iface, t.gateway, t.src) == (None, "veth1", "192.0.2.3", "192.0.2.2")
    assert t.route == "default via 192.0.2.3 dev veth1"
    assert not t.local and not t.forwards
    assert (vm.in_iface, vm.out_iface, vm.gateway) == ("veth0", "eth0", "198.51.100.1")
    assert vm.route == "default via 198.51.100.1 dev eth0"
    assert vm.forwards and not vm.local and vm.src is None
    assert (inet.in_iface, inet.out_iface, inet.gateway) == ("eth0", None, None)
    assert inet.local and not inet.forwards
    assert inet.route == f"local {INET} dev lo proto kernel scope host src {INET}"
    # the way back to the router's own address
    back = walk(s.inet, "198.51.100.116")
    assert [(h.ns, h.in_iface, h.out_iface) for h in back.hops] == [(s.inet, None, "eth0"), (s.vm, "eth0", None)]
    assert back.hops[0].route == "198.51.100.0/24 dev eth0 proto kernel scope link src 198.51.100.1"
    assert back.hops[0].gateway is None and back.complete


def test_path_while_forwarding_is_off_still_shows_the_route(scratch_ns):
    """The walker does not model drops: with ip_forward=0 the router's input lookup refuses, the path goes on."""
    s = build_seed(scratch_ns, forward=False)
    p = walk(s.tenant, INET)
    assert p.complete and [h.ns for h in p.hops] == [s.tenant, s.vm, s.inet]
    assert p.hops[1].lookup == "output" and p.hops[1].lookup_error == "No route to host"


def test_stops_no_route_wrong_gateway_loop(scratch_ns):
    s = build_seed(scratch_ns, default_route=False)
    p = walk(s.tenant, INET)
    assert not p.complete and p.stop_code == "no-route" and p.stop == f"no route to {INET} in {s.tenant}"
    assert [h.ns for h in p.hops] == [s.tenant] and p.hops[0].out_iface is None

    run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.9")
    p = walk(s.tenant, INET)
    assert p.stop_code == "no-neighbour" and "192.0.2.9" in p.stop and s.vm in p.stop
    assert [h.out_iface for h in p.hops] == ["veth1"]

    run(s.tenant, "ip", "route", "replace", "default", "via", "192.0.2.3")
    run(s.vm, "ip", "route", "replace", "default", "via", "192.0.2.2")  # back where it came from
    p = walk(s.tenant, INET)
    assert p.stop_code == "loop" and not p.complete
    assert [h.ns for h in p.hops] == [s.tenant, s.vm, s.tenant]


def test_policy_routing_by_incoming_interface(scratch_ns):
    """The router's main table has no default route; a rule for traffic from veth0 picks table 100."""
    s = build_seed(scratch_ns)
    run(s.vm, "ip", "route", "del", "default")
    run(s.vm, "ip", "route", "add", "default", "via", "198.51.100.1", "dev", "eth0", "table", "100")
    run(s.vm, "ip", "rule", "add", "iif", "veth0", "lookup", "100")
    p = walk(s.tenant, INET)
    assert p.complete
    vm = p.hops[1]
    assert vm.lookup == "input" and vm.table == 100
    assert vm.route == "default via 198.51.100.1 dev eth0 table 100"
    assert walk(s.vm, INET).stop_code == "no-route"  # its own packets have no route


def test_owner_and_segment_lookups(scratch_ns):
    s = build_seed(scratch_ns)
    assert find_namespace_owning(INET, among=s.names) == [s.inet]
    assert find_namespace_owning("192.0.2.3", among=s.names) == [s.vm]
    assert find_namespace_owning("198.51.100.200", among=s.names) == []
    assert sorted((ns, lk.name) for ns, lk in segment(s.tenant, "veth1")) == sorted(
        [(s.tenant, "veth1"), (s.vm, "veth0")])


def test_bad_arguments(scratch_ns):
    ns = scratch_ns("a")
    # an IPv6 address is a destination like any since issue 13 (tests/integration/test_doctor6.py)
    for args in [(f"{ns}x", INET), (ns, "2001:db8::zz"), (ns, "203.0.113.300"), ("../etc", INET)]:
        with pytest.raises(UserError):
            walk(*args)


def test_walking_and_doctor_change_nothing(scratch_ns):
    s = build_seed(scratch_ns, snat=False, forward=False)
    run(s.vm, "nft", "add", "table", "inet", "guard")
    run(s.vm, "iptables-legacy", "-A", "FORWARD", "-j", "ACCEPT")
    before = {ns: kernel_dump(ns) for ns in s.names}
    walk(s.tenant, INET)
    walk(s.inet, "192.0.2.2")
    r = diagnose(s.tenant, INET, probe=False)
    assert r.probe is None and r.findings
    assert {ns: kernel_dump(ns) for ns in s.names} == before


def test_natns_lab_through_bridges(uid):
    """natns's seed lab: the tenant network and the external network are bridges."""
    data = seed(uid)
    data["networks"][0]["hosts"].append({"namespace": f"t{uid}-tenant2", "address": "192.0.2.5"})
    lab = Lab(topology.parse(data, "test.yaml"))
    inet, vm = data["internet"]["namespace"], data["routers"][0]["name"]
    t1, t2 = (h["namespace"] for h in data["networks"][0]["hosts"])
    try:
        lab.up()
        p = walk(t1, INET)
        assert p.complete and [h.ns for h in p.hops] == [t1, vm, inet]
        h1, hv, hi = p.hops
        assert (h1.out_iface, h1.gateway, h1.src) == ("eth0", "192.0.2.3", "192.0.2.2")
        assert h1.route == "default via 192.0.2.3 dev eth0 proto 233"
        # arrives on the bridge (its port named), leaves by eth0 ...
        assert hv.in_iface == "qr-tenant" and hv.in_port.startswith("tap-") and hv.out_iface == "eth0"
        assert hv.forwards and hv.route == "default via 198.51.100.1 dev eth0 proto 233"
        # ... and reaches the internet's bridge through the router's port on it
        assert hi.in_iface == "ext" and hi.in_port == f"e-{vm}"[:15] or hi.in_port.startswith("e-")
        assert hi.local

        # host to host on one network: the router's namespace only bridges
        p = walk(t1, "192.0.2.5")
        assert p.complete and [h.ns for h in p.hops] == [t1, vm, t2]
        l2 = p.hops[1]
        assert l2.bridge == "qr-tenant" and l2.route is None and not l2.forwards and not l2.local
        assert l2.in_iface.startswith("tap-") and l2.out_iface.startswith("tap-") and l2.in_iface != l2.out_iface
        assert p.hops[2].in_iface == "eth0" and p.hops[2].local

        # from the internet to the router: out by the bridge, through the router's port
        p = walk(inet, "198.51.100.116")
        assert p.hops[0].out_iface == "ext" and p.hops[0].out_port.startswith("e-")
        assert [h.ns for h in p.hops] == [inet, vm] and p.hops[1].in_iface == "eth0"

        # the router reaching a host: out by its bridge, the port that leads to the host
        p = walk(vm, "192.0.2.5")
        assert p.hops[0].out_iface == "qr-tenant" and p.hops[0].out_port.startswith("tap-")
        assert p.hops[-1].ns == t2
    finally:
        down_lab(lab.name)
    assert existing(lab_namespaces(data)) == []


def test_peer_in_a_namespace_outside_run_netns_is_not_entered(scratch_ns):
    """A veth whose peer lives in a namespace with no /run/netns name (a process's own): the walk stops."""
    ns = scratch_ns("a")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        for _ in range(100):  # until the child has entered its own namespace
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        run(ns, "ip", "link", "add", "out0", "type", "veth", "peer", "name", "in0", "netns", str(holder.pid))
        run(ns, "ip", "addr", "add", "192.0.2.2/24", "dev", "out0")
        run(ns, "ip", "link", "set", "out0", "up")
        p = walk(ns, "192.0.2.9")
        assert not p.complete and p.stop_code == "no-peer" and "not under /run/netns" in p.stop
        assert [h.ns for h in p.hops] == [ns] and p.hops[0].out_iface == "out0"
    finally:
        holder.kill()
        holder.wait()


def _ip_fibmatch(ns: str, *args: str) -> tuple[str | None, str | None]:
    """What `ip route get fibmatch ARGS` prints in `ns`: (the route line, None) or (None, its error)."""
    proc = subprocess.run(["ip", "-n", ns, "route", "get", "fibmatch", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1].removeprefix("RTNETLINK answers: ")
    return " ".join(proc.stdout.split()), None


def test_route_lookups_through_rtnl_are_what_ip_route_get_says(scratch_ns):
    """path.fib_match and trace's hop routes (one rtnetlink lookup each, no `ip` run) give the
    route `ip route get fibmatch` prints, and its refusals in the same words; RtnlError is
    a NetlinkError with named errnos."""
    from pyroute2.netlink.exceptions import NetlinkError

    from natns.explain import path as P
    from natns.explain import trace as T
    from natns.kernel import rtnl

    s = build_seed(scratch_ns)
    run(s.vm, "ip", "route", "add", "unreachable", "203.0.113.128/25")
    run(s.vm, "ip", "route", "add", "198.51.100.128/25", "via", "198.51.100.1", "proto", "static", "metric", "7")
    cases = [
        (s.tenant, INET, "192.0.2.2", None),            # sent from the tenant
        (s.vm, INET, "192.0.2.2", "veth0"),             # forwarded by the router
        (s.vm, "198.51.100.116", "192.0.2.2", "veth0"),  # delivered to the router
        (s.vm, "203.0.113.200", "192.0.2.2", "veth0"),  # an unreachable route
        (s.vm, "198.51.100.200", None, None),           # proto and metric
    ]
    seen = []
    for ns, dst, src, iif in cases:
        args = [dst] + (["from", src] if src else []) + (["iif", iif] if iif else [])
        want = _ip_fibmatch(ns, *args)
        seen.append(want)
        if want[0] is not None:
            want = (want[0].replace(" metric 7", ""), None)  # trace leaves the metric out
        assert T.route_for(ns, dst, src, iif) == want, (ns, args)
        assert P.fib_match(ns, dst, src=src, iif=iif, metric=False) == want, (ns, args)
    assert seen[0] == ("default via 192.0.2.3 dev veth1", None)
    assert seen[1] == ("default via 198.51.100.1 dev eth0", None)
    assert seen[2][0].startswith("local 198.51.100.116 ") and seen[3] == (None, "No route to host")
    assert P.fib_match_text(s.vm, "198.51.100.200") == "198.51.100.128/25 via 198.51.100.1 dev eth0 proto static metric 7"
    with pytest.raises(NetlinkError) as exc:
        P.route_get(s.vm, "203.0.113.200")
    assert exc.value.code == rtnl.EHOSTUNREACH and P.err_text(exc.value) == "No route to host"
    assert isinstance(exc.value, rtnl.RtnlError) and isinstance(exc.value, OSError)
    run(s.vm, "ip", "route", "del", "default")
    with pytest.raises(rtnl.RtnlError) as exc:
        P.route_get(s.vm, INET)
    assert exc.value.code == rtnl.ENETUNREACH
