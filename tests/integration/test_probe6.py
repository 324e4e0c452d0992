"""The one probe sender over IPv6 on real namespaces (issue 13): ICMPv6 echo,
TCP and UDP with the source the far end saw, and each outcome the kernel or
a router hands back -- refused (TCP RST, ICMPv6 port unreachable),
unreachable (ICMPv6 no route), too-big (a router's packet too big, with its
MTU, whether DF was asked or not: v6 routers never fragment).
"""

from __future__ import annotations

import pytest

from natns.verify.probe import Responder, Sender, ping, send

from .v6_tools import FAR6, HOST6, chain6, ip

pytestmark = pytest.mark.root


@pytest.mark.parametrize("proto", ["icmp", "tcp", "udp"])
def test_a_v6_probe_gets_a_reply_and_the_far_end_sees_the_hosts_own_source(uid, proto):
    port = None if proto == "icmp" else 8080
    with chain6(uid) as c:
        with Sender(c.host, FAR6, proto, port) as sender, Responder(c.inet, proto, FAR6, port) as responder:
            r = sender.send(2.0, responder)
        assert r.outcome == "reply", r
        assert r.source_seen == HOST6  # routed: no translation
        if proto != "icmp":
            assert r.local == f"[{HOST6}]:{sender.sport}"
        assert send(c.host, FAR6, "icmp", count=2).received == 2


def test_v6_refusals_tcp_rst_and_icmpv6_port_unreachable(uid):
    with chain6(uid) as c:
        t = send(c.host, FAR6, "tcp", 8081, timeout=2.0)
        u = send(c.host, FAR6, "udp", 8081, timeout=2.0)
    assert t.outcome == "refused" and t.answered, t
    assert u.outcome == "refused" and u.sender_saw() == "refused (ICMPv6 port unreachable)", u


def test_a_v6_router_without_a_route_answers_unreachable(uid):
    with chain6(uid) as c:
        ip(c.router, "-6", "route", "del", "default")
        ip(c.router, "-6", "route", "add", "unreachable", "2001:db8:ffff::/48")
        r = send(c.host, FAR6, "icmp", timeout=2.0)
        t = send(c.host, FAR6, "tcp", 80, timeout=2.0)
    assert r.outcome == "unreachable" and r.error_from == "2001:db8:1::1", r
    assert r.icmp_error == (1, 0) and r.sender_saw() == (
        "ICMPv6 destination unreachable (no route to destination) from 2001:db8:1::1")
    assert t.outcome == "unreachable", t


@pytest.mark.parametrize("df", [True, False])
def test_a_v6_packet_bigger_than_a_link_comes_back_too_big_with_its_mtu(uid, df):
    with chain6(uid) as c:
        ip(c.router, "link", "set", "eth0", "mtu", "1280")
        ip(c.inet, "link", "set", "eth0", "mtu", "1280")
        first = send(c.host, FAR6, "icmp", size=1400, df=df, timeout=2.0)
        again = send(c.host, FAR6, "icmp", size=1400, df=df, timeout=2.0)
        small = ping(c.host, FAR6, size=1200, df=True)
    # the router does not fragment, DF or not: ICMPv6 packet too big with the link's MTU
    assert first.outcome == "too-big" and first.mtu == 1280 and first.error_from == "2001:db8:1::1", first
    assert "packet too big (mtu = 1280)" in first.error
    if df:  # the path MTU is now known: refused locally, before anything is sent
        assert again.outcome == "too-big" and again.mtu == 1280 and again.sent == 0, again
    else:  # the sender's kernel fragments at the source (the one place v6 fragments)
        assert again.outcome == "reply", again
    assert small.ok

