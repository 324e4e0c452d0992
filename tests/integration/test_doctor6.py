"""natns doctor on broken IPv6 paths, on real namespaces (issue 13).

The hand-made routed path of v6_tools (host - router - inet, 2001:db8:1::/64
routed; no natns), broken one way per test: IPv6 forwarding off in the router,
the upstream's route back to the routed prefix gone, the host's address left
DAD-failed by a duplicate since gone. Each test asserts that doctor names the
cause with its fix, runs the printed fix exactly as printed (shlex, no shell,
only the test's own namespaces), and checks that v6 reachability is back and
doctor is quiet. Then the same missing return route on a natns lab (the
dual-stack example), where the fix is `natns up <your topology file>`, and the inbound policy
of a lab dropping an unsolicited v6 connection.
"""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from natns.explain.doctor import diagnose, render
from natns.kernel import nsexec
from natns.verify.probe import ping

from .labs import natns, write
from .v6_tools import FAR6, HOST6, INET_HOST6, PREFIX6, chain6, dual, ip, sysctl

pytestmark = pytest.mark.root


def run_printed(command: str, ours: list[str]) -> None:
    """A fix exactly as doctor printed it: split with shlex, no shell; only our namespaces."""
    argv = shlex.split(command)
    if argv[:3] == ["ip", "-6", "-n"]:
        assert argv[3] in ours, command
    else:
        assert argv[:3] == ["ip", "netns", "exec"] and argv[3] in ours, command
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def quiet(ns: str, dst: str = FAR6) -> None:
    r = diagnose(ns, dst)
    assert r.findings == [], [(f.code, f.summary) for f in r.findings]
    assert r.probe.ok and r.exit_status == 0, r.probe.detail


def test_v6_forwarding_off_is_named_and_its_printed_fix_restores_the_path(uid):
    with chain6(uid) as c:
        ours = [c.host, c.router, c.inet]
        sysctl(c.router, "net.ipv6.conf.all.forwarding", "0")
        assert not ping(c.host, FAR6).ok
        r = diagnose(c.host, FAR6)
        assert r.exit_status == 1 and [f.code for f in r.findings] == ["ip6-forward-off"], render(r)
        f = r.findings[0]
        assert f.namespace == c.router and f.evidence == {"net.ipv6.conf.all.forwarding": "0"}
        assert f.fix == [f"ip netns exec {c.router} sysctl -w net.ipv6.conf.all.forwarding=1"]
        assert "IPv6 forwarding is off here" in render(r)
        for cmd in f.fix:
            run_printed(cmd, ours)
        assert ping(c.host, FAR6).ok
        quiet(c.host)


@pytest.mark.parametrize("proto,port", [("icmp", None), ("tcp", 9)])
def test_a_missing_upstream_route_to_the_routed_prefix_is_named_with_the_ip6_route_to_add(uid, proto, port):
    with chain6(uid) as c:
        ours = [c.host, c.router, c.inet]
        ip(c.inet, "-6", "route", "del", PREFIX6)
        r = diagnose(c.host, FAR6, proto=proto, port=port)
        assert r.exit_status == 1 and not r.reply_complete
        f = next(f for f in r.findings if f.code == "no-return-route")
        assert f.namespace == c.inet and f.direction == "reply"
        assert "the return path is missing" in f.summary and PREFIX6 in f.summary
        assert f.fix == [f"ip -6 -n {c.inet} route add {PREFIX6} via 2001:db8:ff::116"]
        run_printed(f.fix[0], ours)
        assert ping(c.host, FAR6).ok
        quiet(c.host)


def test_a_dad_failed_source_address_is_named_and_added_again(uid):
    with chain6(uid) as c:
        ours = [c.host, c.router, c.inet]
        # a duplicate of the host's address on the router, then the host's address checked again
        ip(c.router, "addr", "add", f"{HOST6}/64", "dev", "eth1", "nodad")
        ip(c.host, "addr", "del", f"{HOST6}/64", "dev", "eth0")
        sysctl(c.host, "net.ipv6.conf.eth0.accept_dad", "1")
        ip(c.host, "addr", "add", f"{HOST6}/64", "dev", "eth0")
        for _ in range(50):  # DAD takes a second or so
            out = subprocess.run(["ip", "-n", c.host, "-6", "addr", "show", "dev", "eth0"],
                                 capture_output=True, text=True).stdout
            if "dadfailed" in out:
                break
            time.sleep(0.1)
        assert "dadfailed" in out, out
        ip(c.router, "addr", "del", f"{HOST6}/64", "dev", "eth1")  # the duplicate is gone; the failure stays
        ip(c.host, "-6", "route", "replace", "default", "via", "2001:db8:1::1", "dev", "eth0")
        assert not ping(c.host, FAR6).ok
        r = diagnose(c.host, FAR6)
        f = next(f for f in r.findings if f.code == "dad-failed")
        assert f.namespace == c.host and f.severity == "error" and "the source" in f.summary
        assert f.fix == [f"ip -6 -n {c.host} addr del {HOST6}/64 dev eth0",
                         f"ip -6 -n {c.host} addr add {HOST6}/64 dev eth0 nodad"]
        for cmd in f.fix:
            run_printed(cmd, ours)
        ip(c.host, "-6", "route", "replace", "default", "via", "2001:db8:1::1", "dev", "eth0")
        assert ping(c.host, FAR6).ok
        quiet(c.host)




@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_on_a_lab_the_missing_return_route_is_fixed_by_natns_up(make_up_lab, uid, backend, tmp_path):
    data = dual(uid, backend)
    make_up_lab(data)
    tenant, inet = f"t{uid}-tenant1", f"t{uid}-inet"
    nsexec.run(inet, ["ip", "-6", "route", "del", "2001:db8:1::/64"])
    r = diagnose(tenant, INET_HOST6)
    f = next(f for f in r.findings if f.code == "no-return-route")
    assert f.namespace == inet and f.fix == ["natns up <your topology file>"]
    assert f.alternatives == [f"ip -6 -n {inet} route add 2001:db8:1::/64 via 2001:db8:ff::116"]
    path = write(tmp_path, data)
    argv = shlex.split(f.fix[0])
    res = natns(*argv[1:2], path)  # the printed fix, with the lab's file for "<your topology file>"
    assert res.returncode == 0, res.stdout + res.stderr
    assert ping(tenant, INET_HOST6).ok
    assert [x.code for x in diagnose(tenant, INET_HOST6).findings] == []


def test_the_inbound_policy_dropping_unsolicited_v6_is_named(make_up_lab, uid):
    data = dual(uid, "nftables")
    make_up_lab(data)
    inet = f"t{uid}-inet"
    # the ingress opening (tcp/80) passes; port 22 is dropped by the forward policy
    opened = diagnose(inet, "2001:db8:1::2", proto="tcp", port=80)
    assert not [f for f in opened.findings if f.code == "forward-drop"], render(opened)
    r = diagnose(inet, "2001:db8:1::2", proto="tcp", port=22)
    f = next(f for f in r.findings if f.code == "forward-drop")
    assert f.namespace == f"t{uid}-vm" and "ip6" in f.summary, f.summary


def test_the_ip6tables_policy_drop_is_named_with_the_ip6tables_rule(make_up_lab, uid):
    data = dual(uid, "iptables")
    make_up_lab(data)
    r = diagnose(f"t{uid}-inet", "2001:db8:1::2", proto="tcp", port=22)
    f = next(f for f in r.findings if f.code == "forward-drop")
    assert f.namespace == f"t{uid}-vm" and "natns dropped by policy" in f.summary
    # a drop by natns's own rules in a natns lab: natns up first (the topology asks for it), the
    # direct edit in ip6tables' own words (ip6tables' rule, deleted by ip6tables) the alternative
    assert f.fix == ["natns up <your topology file>"]
    assert f.alternatives[0].startswith(f"ip netns exec t{uid}-vm ip6tables"), f.alternatives
    assert [x.code for x in diagnose(f"t{uid}-inet", "2001:db8:1::2", proto="tcp", port=80).findings
            if x.code == "forward-drop"] == []  # the ingress entry passes


def test_packet_too_big_dropped_on_the_way_back_is_named_and_its_fix_lets_big_packets_through(uid, scratch_ns):
    with chain6(uid) as c:
        # a fourth namespace beyond inet, on a 1280-byte link: inet must send packet too big back
        far = scratch_ns("f6")
        ours = [c.host, c.router, c.inet, far]
        sysctl(far, "net.ipv6.conf.all.accept_dad", "0")
        sysctl(far, "net.ipv6.conf.default.accept_dad", "0")
        sysctl(c.inet, "net.ipv6.conf.all.forwarding", "1")
        ip(c.inet, "link", "add", "eth1", "mtu", "1280", "type", "veth", "peer", "name", "eth0", "netns", far)
        ip(far, "link", "set", "eth0", "mtu", "1280")
        ip(c.inet, "addr", "add", "2001:db8:fe::1/64", "dev", "eth1", "nodad")
        ip(far, "addr", "add", "2001:db8:fe::2/64", "dev", "eth0", "nodad")
        for ns, dev in ((c.inet, "eth1"), (far, "eth0"), (far, "lo")):
            ip(ns, "link", "set", dev, "up")
        ip(far, "-6", "route", "add", "default", "via", "2001:db8:fe::1")
        ip(c.router, "-6", "route", "replace", "default", "via", "2001:db8:ff::1", "dev", "eth0")
        dst = "2001:db8:fe::2"
        assert any(ping(c.host, dst).ok for _ in range(10))
        for rule in (["-P", "FORWARD", "DROP"],
                     ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT"],
                     ["-A", "FORWARD", "-i", "eth1", "-j", "ACCEPT"]):
            nsexec.run(c.router, ["ip6tables", "-w", *rule])
        assert ping(c.host, dst).ok  # small packets pass
        assert [ping(c.host, dst, size=1400, timeout=0.5).ok for _ in range(2)] == [False, False]
        r = diagnose(c.host, dst)
        f = next(f for f in r.findings if f.code == "ptb-dropped")
        assert f.namespace == c.router and f.fix == [
            f"ip netns exec {c.router} ip6tables -t filter -I FORWARD -p ipv6-icmp -m icmp6 "
            "--icmpv6-type packet-too-big -j ACCEPT"]
        for cmd in f.fix:
            run_printed(cmd, ours)
        # the first big ping brings packet too big back; the sender then fragments at the source
        assert [ping(c.host, dst, size=1400, timeout=0.5).ok for _ in range(3)][1:] == [True, True]
        # the 1280-byte link is still there and doctor names it, as a warning: its packet too big
        # now comes back, which is path MTU discovery working
        r = diagnose(c.host, dst)
        assert [(f.code, f.severity) for f in r.findings] == [("path-mtu", "warning")], render(r)
        assert r.probe.ok and r.exit_status == 0, r.probe.detail


def test_neighbour_discovery_dropped_by_the_router_is_named_and_its_printed_fix_restores_the_path(uid):
    with chain6(uid) as c:
        ours = [c.host, c.router, c.inet]
        nsexec.run(c.router, ["ip6tables", "-w", "-P", "INPUT", "DROP"])  # no neighbour discovery answered
        ip(c.host, "neigh", "flush", "dev", "eth0")
        assert not ping(c.host, FAR6).ok
        r = diagnose(c.host, FAR6)
        f = next(f for f in r.findings if f.code == "firewall-drop")
        assert f.namespace == c.router and "drops neighbour discovery for 2001:db8:1::1" in f.summary, render(r)
        for cmd in f.fix:
            run_printed(cmd, ours)
        assert any(ping(c.host, FAR6).ok for _ in range(3))
        quiet(c.host)
