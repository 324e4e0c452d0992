"""natns trace on IPv6 paths, real namespaces (issue 13): the probe (ICMPv6 echo, TCP) and
its reply followed through every namespace with an ``ip6 natns_trace`` table, NAT66's
rewrite shown before → after, IPv6 forwarding off named where the packet stopped, the
inbound policy's drop named by its rule (both backends), and no tracing table left.
"""

from __future__ import annotations

import pytest

from natns import down_lab
from natns.explain.trace import render, trace
from natns.kernel import nsexec

from .v6_tools import EXT6_LAB, FAR6, HOST6, INET_HOST6, TENANT6, chain6, dual, sysctl

pytestmark = pytest.mark.root


def no_trace_table(namespaces) -> None:
    for ns in namespaces:
        out = nsexec.run(ns, ["nft", "list", "tables"]).stdout
        assert "natns_trace" not in out, (ns, out)


@pytest.mark.parametrize("proto,port", [("icmp", None), ("tcp", 9)])
def test_a_v6_probe_and_its_reply_are_followed_through_every_namespace(uid, proto, port):
    with chain6(uid) as c:
        t = trace(c.host, FAR6, proto, port)
        assert t.request.outcome == "delivered" and t.request.delivered_to == c.inet, render(t)
        assert [h.ns for h in t.request.hops] == [c.host, c.router, c.inet]
        assert t.reply is not None and [h.ns for h in t.reply.hops] == [c.inet, c.router, c.host]
        text = render(t)
        if proto == "icmp":
            assert f"{HOST6} → {FAR6} icmpv6 echo-request id {t.probe.icmp_id} seq 1" in text
        else:
            assert f"[{HOST6}]:{t.probe.sport} → [{FAR6}]:9 tcp [syn]" in text
            assert t.probe.result == "refused (TCP RST)"
        no_trace_table([c.host, c.router, c.inet])


def test_v6_forwarding_off_is_where_the_trace_stops(uid):
    with chain6(uid) as c:
        sysctl(c.router, "net.ipv6.conf.all.forwarding", "0")
        t = trace(c.host, FAR6)
        assert t.reply is None and t.request.stop is not None
        assert t.request.stop.ns == c.router and "net.ipv6.conf.all.forwarding=0" in t.request.stop.reason




@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_nat66_is_shown_as_a_rewrite_and_the_inbound_policy_drop_by_its_rule(make_up_lab, uid, backend):
    data = dual(uid, backend, snat6="masquerade")
    make_up_lab(data)
    tenant, vm, inet = f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"
    t = trace(tenant, INET_HOST6)
    assert t.request.outcome == "delivered", render(t)
    rewrites = [(r.field, r.before, r.after) for h in t.request.hops if h.ns == vm for hk in h.hooks
                for r in hk.rewrites]
    assert ("saddr", TENANT6, EXT6_LAB) in rewrites, render(t)
    # unsolicited from outside, routed lab: the forward chain's default-deny drops it
    down_lab(data["name"])
    routed = dual(uid, backend)
    make_up_lab(routed)
    t = trace(inet, TENANT6, "tcp", 22)
    assert t.request.stop is not None and t.request.stop.ns == vm and "forward" in t.request.stop.hook, render(t)
    assert "dropped" in t.request.stop.reason
    no_trace_table([tenant, vm, inet])
