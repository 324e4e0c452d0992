"""The trace event parser and the packet follower, on real captured `nft monitor` output.

`data/trace_seed_iptables.json` holds the trace lines `natns trace` collected
in the seed lab (iptables backend, one extra FORWARD accept rule) for one
ICMP echo from tenant1 to 203.0.113.114, per namespace. No root needed.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

from natns.explain import trace as T

DATA = Path(__file__).parent / "data"

# iptables-nft chains of the router, as `nft -j list chains` and iptables-save show them.
VM_CHAINS = {
    ("ip", "filter", "FORWARD"): T.ChainInfo("ip", "filter", "FORWARD", "forward", 0, "filter", "accept"),
    ("ip", "nat", "POSTROUTING"): T.ChainInfo("ip", "nat", "POSTROUTING", "postrouting", 100, "nat", "accept"),
}
VM_IPTABLES = {
    ("ip", "filter", "FORWARD", 2): '-A FORWARD -s 192.0.2.0/24 -m comment --comment "test drop" -j ACCEPT',
    ("ip", "nat", "POSTROUTING", 4): "-A POSTROUTING -m comment --comment natns -j natns-POSTROUTING",
    ("ip", "nat", "natns-POSTROUTING", 2):
        '-A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment "natns snat tenant" -j MASQUERADE',
}

DROP_SAMPLE = r"""
trace id e603b3b1 ip natns_trace prerouting_first packet: iif "qr-tenant" ether saddr 92:16:e0:8c:2b:90 ether daddr 8a:89:04:6e:da:7d ip saddr 192.0.2.2 ip daddr 203.0.113.114 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 31334 ip length 39 icmp type echo-request icmp code net-unreachable icmp id 47374 icmp sequence 1 @th,64,88 0x6e61746e73207472616365 
trace id e603b3b1 ip natns_trace prerouting_first rule icmp type { echo-reply, echo-request } icmp id 47374 meta nftrace set 1 # handle 12 (verdict continue)
trace id e603b3b1 ip natns_trace prerouting_first policy accept 
add chain ip natns_trace ready1
# new generation 7 by process 18437 (nft)
trace id e603b3b1 ip natns_trace prerouting_last packet: iif "qr-tenant" ether saddr 92:16:e0:8c:2b:90 ether daddr 8a:89:04:6e:da:7d ip saddr 192.0.2.2 ip daddr 203.0.113.114 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 31334 ip length 39 icmp type echo-request icmp code net-unreachable icmp id 47374 icmp sequence 1 @th,64,88 0x6e61746e73207472616365 
trace id e603b3b1 ip natns_trace prerouting_last policy accept 
trace id 743e849f ip natns_trace forward_first packet: iif "qr-tenant" oif "eth0" ether saddr 92:16:e0:8c:2b:90 ether daddr 8a:89:04:6e:da:7d ip saddr 192.0.2.2 ip daddr 203.0.113.114 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 31334 ip length 39 icmp type echo-request icmp code net-unreachable icmp id 47374 icmp sequence 1 @th,64,88 0x6e61746e73207472616365 
trace id 743e849f ip natns_trace forward_first policy accept 
trace id 743e849f ip ttest forward packet: iif "qr-tenant" oif "eth0" ether saddr 92:16:e0:8c:2b:90 ether daddr 8a:89:04:6e:da:7d ip saddr 192.0.2.2 ip daddr 203.0.113.114 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 31334 ip length 39 icmp type echo-request icmp code net-unreachable icmp id 47374 icmp sequence 1 @th,64,88 0x6e61746e73207472616365 
trace id 743e849f ip ttest forward rule ip saddr 192.0.2.0/24 jump check # handle 3 (verdict jump check)
trace id 743e849f ip ttest check rule ip daddr 203.0.113.114 counter packets 0 bytes 0 drop comment "test forward drop" # handle 4 (verdict drop)
"""


def seed_sample() -> dict[str, list[str]]:
    return json.loads((DATA / "trace_seed_iptables.json").read_text())


def passes_of(lines_by_ns: dict[str, list[str]]) -> dict[str, list[T.ChainPass]]:
    base = {(c.family, c.table, c.name): c for c in T.tracer_chains()}
    out = {}
    for ns, lines in lines_by_ns.items():
        chains = {**base, **VM_CHAINS} if ns == "vm" else base
        out[ns] = T.group_passes(ns, T.parse_monitor_output(lines), chains, VM_IPTABLES if ns == "vm" else {})
    return out


def test_packet_line_headers():
    ev = T.parse_line(seed_sample()["vm"][0])
    assert ev.kind == "packet"
    assert (ev.trace_id, ev.family, ev.table, ev.chain) == ("ce3843d2", "ip", "natns_trace", "prerouting_first")
    h = ev.headers
    assert h["iif"] == "qr-tenant"
    assert h["ip saddr"] == "192.0.2.2" and h["ip daddr"] == "203.0.113.114"
    assert h["ip id"] == "23235" and h["ip length"] == "39" and h["ip ttl"] == "64"
    assert h["icmp type"] == "echo-request" and h["icmp id"] == "52997" and h["icmp sequence"] == "1"
    assert h["@th,64,88"] == "0x6e61746e73207472616365"


def test_tcp_and_udp_headers():
    syn = T.parse_headers('oif "eth0" ip saddr 192.0.2.2 ip daddr 203.0.113.114 ip id 55290 ip length 60 '
                          "tcp sport 40123 tcp dport 80 tcp flags == syn tcp window 64240")
    assert syn["tcp sport"] == "40123" and syn["tcp dport"] == "80" and syn["tcp flags"] == "syn"
    rst = T.parse_headers("tcp sport 80 tcp dport 40123 tcp flags == 0x14 tcp window 0")
    assert T.tcp_flags(rst["tcp flags"]) == "rst|ack"
    udp = T.parse_headers("ip saddr 198.51.100.116 udp sport 40123 udp dport 53 udp length 13 @th,64,40 0x6e61746e73")
    assert udp["udp length"] == "13" and udp["udp dport"] == "53"


def test_rule_policy_and_other_lines():
    rule = T.parse_line('trace id 15572495 ip nat natns-POSTROUTING rule oifname "eth0" ip saddr 192.0.2.0/24  '
                        "counter packets 7 bytes 330 masquerade # handle 2 (verdict accept)")
    assert rule.kind == "rule" and rule.chain == "natns-POSTROUTING"
    assert rule.rule == 'oifname "eth0" ip saddr 192.0.2.0/24 counter masquerade'  # counters dropped
    assert rule.handle == 2 and rule.verdict == "accept"
    jump = T.parse_line("trace id 15572495 ip nat POSTROUTING rule  counter packets 8 bytes 370 "
                        "jump natns-POSTROUTING # handle 4 (verdict jump natns-POSTROUTING)")
    assert jump.rule == "counter jump natns-POSTROUTING" and jump.verdict == "jump natns-POSTROUTING"
    pol = T.parse_line("trace id 4ab0c926 ip filter FORWARD policy drop ")
    assert pol.kind == "policy" and pol.verdict == "drop"
    assert T.parse_line("add chain ip natns_trace ready1") is None
    assert T.parse_line("# new generation 7 by process 1 (nft)") is None


def test_passes_group_events_by_base_chain_and_jump():
    passes = passes_of(seed_sample())["vm"]
    request = [p for p in passes if p.headers.get("icmp type") == "echo-request"]
    assert [(p.table, p.chain, p.hook) for p in request] == [
        ("natns_trace", "prerouting_first", "prerouting"),
        ("natns_trace", "prerouting_last", "prerouting"),
        ("natns_trace", "forward_first", "forward"),
        ("filter", "FORWARD", "forward"),
        ("natns_trace", "forward_last", "forward"),
        ("natns_trace", "postrouting_first", "postrouting"),
        ("nat", "POSTROUTING", "postrouting"),
        ("natns_trace", "postrouting_last", "postrouting"),
    ]
    nat = request[6]
    assert [h.chain for h in nat.hits] == ["POSTROUTING", "natns-POSTROUTING"]  # the jump stays in the pass
    assert nat.hits[1].nat and nat.verdict == "accept"
    assert "--comment \"natns snat tenant\" -j MASQUERADE" in nat.hits[1].iptables


def test_follow_request_and_reply_across_namespaces():
    request, reply = T.follow(passes_of(seed_sample()), ["tenant1", "vm", "inet"], "tenant1")
    assert request.outcome == "delivered" and request.delivered_to == "inet"
    assert [h.ns for h in request.hops] == ["tenant1", "vm", "inet"]
    tenant, vm, inet = request.hops
    assert tenant.origin and [h.hook for h in tenant.hooks] == ["output", "postrouting"]
    assert tenant.out_iface == "eth0"
    assert [h.hook for h in vm.hooks] == ["prerouting", "forward", "postrouting"]
    assert (vm.in_iface, vm.out_iface) == ("qr-tenant", "eth0")
    (rw,) = vm.rewrites
    assert (rw.hook, rw.field, rw.before, rw.after, rw.by) == (
        "postrouting", "saddr", "192.0.2.2", "198.51.100.116", "rule")
    assert rw.rule.chain == "natns-POSTROUTING" and "masquerade" in rw.rule.rule
    assert inet.local and [h.hook for h in inet.hooks] == ["prerouting", "input"]

    assert reply.outcome == "delivered" and reply.delivered_to == "tenant1"
    assert [h.ns for h in reply.hops] == ["inet", "vm", "tenant1"]
    (back,) = reply.hop("vm").rewrites
    assert (back.hook, back.field, back.before, back.after, back.by) == (
        "prerouting", "daddr", "198.51.100.116", "192.0.2.2", "conntrack")
    assert reply.summary() == "203.0.113.114 → 198.51.100.116 icmp echo-reply id 52997 seq 1"


def test_forward_drop_in_a_jumped_to_chain_names_the_rule():
    chains = {(c.family, c.table, c.name): c for c in T.tracer_chains()}
    chains[("ip", "ttest", "forward")] = T.ChainInfo("ip", "ttest", "forward", "forward", 0)
    passes = {"vm": T.group_passes("vm", T.parse_monitor_output(DROP_SAMPLE.splitlines()), chains)}
    request, reply = T.follow(passes, ["tenant1", "vm"], "vm")  # vm stands in as the sender here
    assert reply is None
    assert request.outcome == "dropped"
    stop = request.stop
    assert (stop.ns, stop.hook, stop.verdict) == ("vm", "forward", "drop")
    assert (stop.hit.table, stop.hit.chain) == ("ttest", "check")
    assert stop.hit.rule == 'ip daddr 203.0.113.114 counter drop comment "test forward drop"'


def test_nothing_traced_means_not_sent():
    request, reply = T.follow({"tenant1": []}, ["tenant1"], "tenant1")
    assert request.outcome == "not sent" and reply is None


def test_table_script_sets_nftrace_only_in_the_first_chains():
    script = T.table_script(["icmp type { echo-request, echo-reply } icmp id 4242"])
    assert script.startswith("add table ip natns_trace\ndelete table ip natns_trace\n")
    assert script.count("meta nftrace set 1") == 2
    for hook in T.HOOKS:
        assert f"type filter hook {hook} priority {T.FIRST};" in script
        assert f"type filter hook {hook} priority {T.LAST};" in script
    assert T.REMOVE_SCRIPT == "add table ip natns_trace\ndelete table ip natns_trace\n"


def _rtmsg(rtype: int, dst: str | None, dst_len: int, proto: int, scope: int, attrs: list):
    """A route message as the kernel sends it (encoded and decoded again by pyroute2)."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    m = rtmsg()
    m["family"], m["dst_len"], m["src_len"], m["tos"], m["table"] = 2, dst_len, 0, 0, 254
    m["proto"], m["scope"], m["type"], m["flags"] = proto, scope, rtype, 0
    m["attrs"] = ([("RTA_DST", dst)] if dst else []) + [("RTA_TABLE", 254)] + attrs
    m.encode()
    out = rtmsg(m.data)
    out.decode()
    return out


def test_route_text():
    """What trace prints as a hop's routing entry: `ip route get fibmatch` words, metric left out."""
    from natns.explain.path import route_text

    names = {2: "eth0", 1: "lo"}
    default = _rtmsg(1, None, 0, 233, 0, [("RTA_GATEWAY", "198.51.100.1"), ("RTA_OIF", 2), ("RTA_PRIORITY", 100)])
    assert route_text(default, names, metric=False) == "default via 198.51.100.1 dev eth0 proto 233"
    assert route_text(default, names) == "default via 198.51.100.1 dev eth0 proto 233 metric 100"
    local = _rtmsg(2, "203.0.113.114", 32, 2, 254, [("RTA_OIF", 1), ("RTA_PREFSRC", "203.0.113.114")])
    assert route_text(local, names, metric=False) == \
        "local 203.0.113.114 dev lo proto kernel scope host src 203.0.113.114"
    unreachable = _rtmsg(7, "198.51.100.0", 24, 3, 0, [])
    assert route_text(unreachable, names) == "unreachable 198.51.100.0/24"


def test_route_for_refuses_what_ip_refuses():
    assert T.route_for("no-such-ns", "", None, None) == \
        (None, 'Error: any valid prefix is expected rather than "".')


# -- issue 15 item 5: source NAT that rewrites the ICMP id (masquerade random,fully-random) ----


def _random_fully() -> tuple[dict, dict[str, list[T.ChainPass]]]:
    """Real `nft monitor` lines of one ICMP echo lan -> router (masquerade random,fully-random) -> far."""
    data = json.loads((DATA / "trace_random_fully.json").read_text())
    chains = {role: {(c[0], c[1], c[2]): T.ChainInfo(*c) for c in cs} for role, cs in data["chains"].items()}
    passes = {}
    for role, lines in data["lines"].items():
        known = {c.key: c for c in T.tracer_chains()} | chains[role]
        passes[role] = T.group_passes(role, T.parse_monitor_output(lines), known)
    return data, passes


def test_follow_through_a_rewritten_icmp_id_to_the_end_and_back():
    data, passes = _random_fully()
    req, rep = T.follow(passes, ["lan", "router", "far"], "lan")
    assert req.outcome == "delivered" and req.delivered_to == "far"
    rw = {r.field: (r.before, r.after) for r in req.hop("router").rewrites}
    assert rw["icmp id"][0] == str(data["icmp_id"]) and rw["icmp id"][1] != rw["icmp id"][0]
    assert rw["saddr"] == ("192.0.2.2", "198.51.100.2")
    assert req.hop("far").hooks[0].before["icmp id"] == rw["icmp id"][1]
    assert rep is not None and rep.outcome == "delivered" and rep.delivered_to == "lan"
    assert [h.ns for h in rep.hops] == ["far", "router", "lan"]
    assert rep.hop("lan").hooks[0].before["icmp id"] == str(data["icmp_id"])


def test_a_traced_packet_that_does_not_answer_the_request_is_not_its_reply():
    """Matching by what NAT keeps picks out other flows too (another echo to the same host):
    the reply is the packet whose tuple is the request's reversed, as that namespace saw it."""
    data, passes = _random_fully()
    real = [p for p in passes["far"] if p.hook in ("output", "postrouting")]
    decoys = []
    for p in real:  # the same reply, sent to someone else, with another IP id, traced first
        d = T.ChainPass(p.ns, p.family, p.table, p.chain, p.hook, p.priority,
                        dict(p.headers, **{"ip daddr": "198.51.100.77", "ip id": "4242"}), list(p.hits))
        decoys.append(d)
    passes["far"] = [p for p in passes["far"] if p not in real] + decoys + real
    req, rep = T.follow(passes, ["lan", "router", "far"], "lan")
    assert rep is not None and rep.hops[0].hooks[0].before["ip daddr"] == "198.51.100.2"
    assert rep.delivered_to == "lan"
    assert not T.answers(decoys[0].headers, [h.before for h in req.hop("far").hooks])


def test_answers_compares_the_reversed_tuple():
    req = {"ip saddr": "198.51.100.2", "ip daddr": "203.0.113.9", "tcp sport": "61000", "tcp dport": "80"}
    assert T.answers({"ip saddr": "203.0.113.9", "ip daddr": "198.51.100.2", "tcp sport": "80",
                      "tcp dport": "61000"}, [req])
    assert not T.answers({"ip saddr": "203.0.113.9", "ip daddr": "198.51.100.2", "tcp sport": "80",
                          "tcp dport": "40000"}, [req])
    err = {"ip saddr": "192.0.2.1", "ip daddr": "198.51.100.2", "icmp type": "destination-unreachable"}
    assert T.answers(err, [req]) and not T.answers(dict(err, **{"ip daddr": "192.0.2.9"}), [req])
    assert T.answers({"ip saddr": "x"}, [])  # nothing to compare with


def test_probe_rules_match_what_source_nat_keeps():
    from natns.explain.trace.sender import _Sender

    s = _Sender.__new__(_Sender)
    s.proto, s.dst, s.port, s.sport, s.icmp_id, s.size = "tcp", "203.0.113.9", 80, 45000, None, None
    rules = s.match_rules()
    assert "meta l4proto tcp ip daddr 203.0.113.9 th dport 80" in rules
    assert "meta l4proto tcp ip saddr 203.0.113.9 th sport 80" in rules
    assert "meta l4proto tcp th sport 45000" in rules


def test_an_ipv6_packet_line_is_read_with_ipv4s_names_too():
    from natns.explain.trace import parse_headers
    h = parse_headers('iif "eth1" ip6 saddr 2001:db8:1::2 ip6 daddr 2001:db8:ffff::114 ip6 hoplimit 63 '
                      'ip6 length 64 icmpv6 type echo-request icmpv6 code no-route '
                      'icmpv6 parameter-problem 1769668609 @th,64,96 0x6e61')
    assert (h["ip saddr"], h["ip daddr"], h["ip ttl"], h["ip length"]) == (
        "2001:db8:1::2", "2001:db8:ffff::114", "63", "64")
    assert (h["icmp type"], h["icmp id"], h["icmp sequence"]) == ("echo-request", str(0x697B), "1")
    assert h["ip6 saddr"] == "2001:db8:1::2"  # the v6 names stay


def test_the_v6_tracing_table_is_ip6_and_matches_icmpv6_and_its_errors():
    from natns.explain.trace import table_script
    from natns.explain.trace.sender import _Sender
    script = table_script(["icmpv6 type { echo-request, echo-reply } icmpv6 id 7"], "ip6")
    assert script.startswith("add table ip6 natns_trace\ndelete table ip6 natns_trace\ntable ip6 natns_trace {")
    s = _Sender.__new__(_Sender)
    s.dst, s.proto, s.icmp_id, s.sport, s.size = "2001:db8::1", "icmp", 7, None, None
    s._sender = types.SimpleNamespace(token=bytes(range(32)))
    rules = s.match_rules()
    assert rules[:2] == [
        "icmpv6 type { echo-request, echo-reply } icmpv6 id 7",
        "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } "
        "@th,112,8 58 @th,416,16 7"]
    # the token (data bytes 12..19), in the echo and quoted in an ICMPv6 error (8 + 40 + 8 + 12 bytes in)
    assert rules[2] == "icmpv6 type { echo-request, echo-reply } @th,160,64 0x0c0d0e0f10111213"
    assert rules[3].endswith("@th,112,8 58 @th,544,64 0x0c0d0e0f10111213")
    s.proto, s.sport, s.port = "udp", 40000, 53
    rules = s.match_rules()
    assert rules[2].endswith("@th,112,8 17 @th,384,16 40000")
    assert "meta l4proto udp ip6 daddr 2001:db8::1 th dport 53" in rules
