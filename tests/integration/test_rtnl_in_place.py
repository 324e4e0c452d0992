"""Rtnl's links, addresses and routes, read in place, are what pyroute2's own decoding reads.

natns.kernel.rtnl reads the few fields of a link, an address and a route
straight from the kernel's messages (docs/performance.md) instead of through
pyroute2's message classes. This test builds a namespace with bridges, veths,
aliases, masters, MTUs, IPv4 and IPv6 addresses and routes in several tables
and of several protocols, and compares every field with what pyroute2's
IPRoute decodes from the same kernel.
"""

from __future__ import annotations

import socket

import pytest

from natns.kernel import nsexec, rtnl

pytestmark = pytest.mark.root

SETUP = [
    "link add br0 type bridge", "link set br0 mtu 1400", "link set br0 alias natns:test-bridge",
    "link add va type veth peer name vb", "link set va master br0", "link set va up", "link set vb up",
    "link set br0 up", "link set lo up",
    "addr add 192.0.2.1/24 dev br0", "addr add 192.0.2.77/32 dev br0", "addr add 198.51.100.1/32 peer 198.51.100.2 dev vb",
    "-6 addr add 2001:db8::1/64 dev br0 nodad", "-6 addr add 2001:db8:1::1/128 dev vb nodad",
    "route add default via 192.0.2.254 proto 233", "route add 203.0.113.0/24 dev vb proto 233",
    "route add 203.0.113.128/25 via 192.0.2.9 table 1000 proto 233", "route add 100.64.0.0/16 via 192.0.2.8 table 7",
    "-6 route add default via 2001:db8::fe proto 233", "-6 route add 2001:db8:9::/48 dev vb proto 233 table 1000",
]


@pytest.fixture
def ns(scratch_ns):
    name = scratch_ns("inplace")
    for cmd in SETUP:
        nsexec.run(name, ["ip", *cmd.split()])
    return name


def _theirs(name: str):
    from pyroute2 import IPRoute

    def go():
        with IPRoute() as ipr:
            return list(ipr.get_links()), list(ipr.get_addr()), list(ipr.route("dump", family=socket.AF_INET)) + \
                list(ipr.route("dump", family=socket.AF_INET6))

    return nsexec.call_in(name, go)


def test_links_addresses_and_routes_read_in_place_match_pyroute2(ns):
    links, addrs, routes = _theirs(ns)
    with rtnl.open_in(ns) as h:
        mine_links = {ln.index: ln for ln in h.links()}
        mine_addrs = h.addrs(family=rtnl.AF_UNSPEC)
        mine_routes = {rtnl.AF_INET: h.routes(), rtnl.AF_INET6: h.routes(family=rtnl.AF_INET6)}
        by_table = h.routes(table=1000, protocol=233, family=rtnl.AF_UNSPEC)

    assert len(mine_links) == len(links) >= 4
    for m in links:
        got = mine_links[m["index"]]
        info = m.get_attr("IFLA_LINKINFO")
        assert (got.name, got.flags, got.alias, got.master, got.mtu) == (
            m.get_attr("IFLA_IFNAME"), m["flags"], m.get_attr("IFLA_IFALIAS"), m.get_attr("IFLA_MASTER"),
            m.get_attr("IFLA_MTU")), got.name
        assert got.kind == (info.get_attr("IFLA_INFO_KIND") if info is not None else None), got.name

    want_addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"], a.get_attr("IFA_LOCAL"),
                         a["family"]) for a in addrs if a["family"] == socket.AF_INET or a["scope"] != 253)
    got_addrs = sorted((a.index, a.address, a.prefixlen, a.local, a.family) for a in mine_addrs)
    assert got_addrs == want_addrs and len(got_addrs) >= 6
    want_v4 = [r for r in routes if r["family"] == socket.AF_INET]
    assert len(mine_routes[rtnl.AF_INET]) == len(want_v4)
    for family, mine in mine_routes.items():
        want = sorted(((r.get_attr("RTA_TABLE"), r["proto"], r.get_attr("RTA_DST"), r["dst_len"],
                        r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"), r["family"])
                       for r in routes if r["family"] == family), key=repr)
        got = sorted(((r.table, r.protocol, r.dst, r.dst_len, r.gateway, r.oif, r.family) for r in mine), key=repr)
        if family == rtnl.AF_INET6:  # routes() filters IPv6 dumps by table in the kernel: main table only
            want = [w for w in want if w[0] == 254]
            got = [g for g in got if g[0] == 254]
        assert got == want, family
    assert sorted((r.dst, r.dst_len, r.family) for r in by_table) == [
        ("2001:db8:9::", 48, rtnl.AF_INET6), ("203.0.113.128", 25, rtnl.AF_INET)]
