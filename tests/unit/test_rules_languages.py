"""The rule walk on rulesets as the kernel's tools print them (issue 15, items 1-4).

Every ruleset here was loaded into a real namespace and dumped by the tools themselves
(fixtures/rules/capture.sh: CASE.ipt / CASE.nft in, CASE.json = ``nft -j list ruleset``,
CASE.listing = ``nft -a list ruleset``, CASE.save = ``iptables-nft-save`` out), then read
by the rule walk through the fake snapshot as from the kernel. The namespaces are the
plain router: lan 192.0.2.2 -- lan0 192.0.2.1 router wan0 198.51.100.2 -- far
(198.51.100.9, and 203.0.113.9 on lo). tests/integration/test_rule_languages.py runs the
same rulesets on real namespaces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from natns.explain.doctor import diagnose
from natns.explain.rules import AddrTypes, Packet
from natns.testing.fakes import FakeProber, FakeSnapshot

FIX = Path(__file__).parent / "fixtures" / "rules"
FAR = "203.0.113.9"
WAN = "198.51.100.2"


def dumps(case: str) -> dict:
    """The router's rules as a FakeSnapshot namespace description, from the captured dumps."""
    out = {"nft": (FIX / f"{case}.json").read_text(), "nft_text": (FIX / f"{case}.listing").read_text()}
    save = FIX / f"{case}.save"
    if save.exists() and save.read_text().strip():
        out["iptables"] = save.read_text()
    return out


def router(case: str, *, lan_route: bool = True, far_routes: tuple[str, ...] = ()) -> FakeSnapshot:
    return FakeSnapshot({
        "lan": {"links": {"eth0": {"peer": "router:lan0", "addresses": ["192.0.2.2/24"]}},
                "routes": ["default via 192.0.2.1"] if lan_route else []},
        "router": {"links": {"lan0": {"addresses": ["192.0.2.1/24"]},
                             "wan0": {"peer": "far:eth0", "addresses": [f"{WAN}/24"]}},
                   "routes": ["default via 198.51.100.9"],
                   "sysctls": {"net.ipv4.ip_forward": "1"}, **dumps(case)},
        "far": {"links": {"eth0": {"addresses": ["198.51.100.9/24"]}, "lo": {"addresses": [f"{FAR}/32"]}},
                "routes": list(far_routes)},
    })


def codes(r) -> list[str]:
    return [f.code for f in r.findings]


def pkt(saddr="192.0.2.2", daddr=FAR, *, iif="lan0", oif="wan0", state="new", **kw) -> Packet:
    return Packet(saddr, daddr, kw.pop("proto", "icmp"), kw.pop("sport", None), kw.pop("dport", None),
                  kw.pop("icmp_type", "echo-request"), iif, oif, state, **kw)


# -- 1. a native `table ip nat` beside iptables-nft's `ip filter` ---------------------------


def test_native_ip_nat_is_read_as_nft_and_iptables_filter_as_iptables():
    save = (FIX / "native_nat.save").read_text()
    assert "Table `nat' contains incompatible base-chains" in save  # what iptables-nft-save says
    fw = router("native_nat").firewall("router")
    assert fw.iptables_nft_tables == ["ip filter"]
    assert fw.nft_tables == ["ip nat"]
    sn = fw.snat(pkt())
    assert sn.verdict == "masquerade" and sn.rule.source == "nftables"
    assert sn.rule.text == 'oifname "wan0" masquerade'
    # the iptables-nft filter chain is the walk's, with the text iptables-save prints
    assert fw.evaluate("forward", pkt()).verdict == "accept"
    v = fw.evaluate("forward", pkt("198.51.100.9", "192.0.2.2", iif="wan0", oif="lan0"))
    assert v.drops and v.chain.source == "iptables-nft" and v.chain.name == "FORWARD"


def test_native_ip_nat_router_is_healthy():
    r = diagnose("lan", FAR, snapshot=router("native_nat"), prober=FakeProber())
    assert codes(r) == [] and r.exit_status == 0
    assert [(n.kind, n.before, n.after) for n in r.nat] == [("masquerade", "192.0.2.2", WAN)]


def test_no_native_nat_means_no_snat_with_the_nft_fix():
    r = diagnose("lan", FAR, snapshot=router("vmap_no_nat"),
                 prober=FakeProber(ok=False, detail="100% packet loss"))
    assert codes(r)[0] == "no-snat"


# -- 2. ct state vmap --------------------------------------------------------------------------


def test_ct_state_vmap_gives_its_verdict():
    fw = router("vmap").firewall("router")
    rule = fw.chains[("nftables", "inet", "filter", "forward")].rules[0]
    assert rule.verdict == "vmap" and rule.text.startswith("ct state vmap")
    reply = pkt(FAR, "192.0.2.2", iif="wan0", oif="lan0", state="established", icmp_type="echo-reply")
    v = fw.evaluate("forward", reply)
    assert v.verdict == "accept" and v.maybe == []
    assert fw.evaluate("forward", pkt(state="invalid")).verdict == "drop"
    v = fw.evaluate("forward", pkt(state="invalid"))
    assert v.rule is rule  # the vmap's `invalid : drop`, not the policy
    assert fw.evaluate("forward", pkt()).verdict == "accept"  # new: no element, the next rule accepts
    v = fw.evaluate("forward", pkt(FAR, "192.0.2.2", iif="wan0", oif="lan0"))
    assert v.drops and v.rule is None and v.chain.policy == "drop"


def test_ct_state_vmap_router_is_healthy():
    r = diagnose("lan", FAR, snapshot=router("vmap"), prober=FakeProber())
    assert codes(r) == [] and r.reply_complete


# -- 3. anonymous and named sets; what can't be evaluated is unknown ---------------------------


def test_anonymous_ct_state_set_and_named_address_set_match():
    fw = router("sets").firewall("router")
    rules = fw.chains[("nftables", "inet", "filter", "forward")].rules
    assert [r.text for r in rules] == ["ct state { established, related } accept",
                                       'ip saddr @lan_nets oifname "wan0" accept']
    reply = pkt(FAR, "192.0.2.2", iif="wan0", oif="lan0", state="established", icmp_type="echo-reply")
    assert rules[0].match(reply) is True
    assert rules[0].match(pkt()) is False
    assert rules[1].match(pkt()) is True                      # 192.0.2.2 in @lan_nets (an interval set)
    assert rules[1].match(pkt("192.0.3.2")) is False
    r = diagnose("lan", FAR, snapshot=router("sets"), prober=FakeProber())
    assert codes(r) == []


def test_a_named_set_that_could_not_be_read_is_unknown_not_no_match():
    snap = router("sets")
    d = snap._n("router").desc
    import json
    js = json.loads(d["nft"])
    js["nftables"] = [o for o in js["nftables"] if "set" not in o]  # the set's elements unreadable
    d["nft"] = json.dumps(js)
    fw = snap.firewall("router")
    rule = fw.chains[("nftables", "inet", "filter", "forward")].rules[1]
    assert rule.match(pkt()) is None
    assert rule.unknown_parts() == ["the named set @lan_nets (not readable)"]
    v = fw.evaluate("forward", pkt())
    assert v.unknown and v.rule is rule and v.then.drops and not v.drops


def test_unknown_expression_before_a_drop_is_reported_unknown_not_as_the_drop():
    fw = router("unknown_mark").firewall("router")
    rule = fw.chains[("nftables", "inet", "filter", "forward")].rules[1]
    assert rule.text == 'meta mark 0x00000000 iifname "lan0" accept'
    assert rule.match(pkt()) is None and rule.unknown_parts() == ["`meta mark`"]
    assert rule.match(pkt(iif="wan0")) is False  # what it can tell it tells
    v = fw.evaluate("forward", pkt())
    assert v.verdict == "unknown" and not v.drops and v.rule is rule
    assert v.then.chain.policy == "drop"
    assert "cannot be evaluated (`meta mark`)" in v.describe()
    r = diagnose("lan", FAR, snapshot=router("unknown_mark"), prober=FakeProber())
    assert codes(r) == ["firewall-unknown"] and r.exit_status == 0
    f = r.findings[0]
    assert f.evidence["rule"] == rule.text and f.evidence["not evaluated"] == ["`meta mark`"]
    assert "forward-drop" not in codes(r)
    assert f"natns trace --from lan --to {FAR}" in f.note


# -- 4. addrtype / fib daddr type local DNAT, and the forward drop after it -------------------


def test_addrtype_local_is_evaluated_against_the_namespaces_addresses():
    fw = router("addrtype_dnat").firewall("router")
    assert fw.addrs == AddrTypes.of_view(router("addrtype_dnat").get("router"))
    tcp = dict(proto="tcp", sport=40000, icmp_type=None, iif="wan0", oif=None)
    v = fw.dnat(pkt("198.51.100.9", WAN, dport=8080, **tcp))
    assert v.verdict == "dnat" and v.rule.nat_rewrite(pkt()) == ("192.0.2.2", 80) and v.maybe == []
    assert fw.dnat(pkt("198.51.100.9", "198.51.100.77", dport=8080, **tcp)).verdict == "none"  # not local
    assert fw.dnat(pkt("198.51.100.9", WAN, dport=8081, **tcp)).verdict == "none"


def test_addrtype_without_addresses_is_unknown():
    from natns.explain.rules import assemble

    fw = assemble("router", None, (FIX / "addrtype_dnat.save").read_text(), None, None)
    jump = fw.chains[("iptables-nft", "ip", "nat", "PREROUTING")].rules[0]
    assert jump.match(pkt()) is None and "addrtype" in jump.unknown_parts()[0]


@pytest.mark.parametrize("case,fix", [
    ("addrtype_dnat", "ip netns exec router iptables -t filter -I FORWARD -m conntrack --ctstate DNAT -j ACCEPT"),
    ("fib_dnat", "ip netns exec router nft insert rule inet filter forward ct status dnat accept"),
])
def test_dnat_to_local_port_followed_then_forward_drop_named_with_fix(case, fix):
    r = diagnose("far", WAN, proto="tcp", port=8080, snapshot=router(case),
                 prober=FakeProber(ok=False, detail="timed out"))
    assert [(n.kind, n.before, n.after, n.port_after) for n in r.nat][:1] == [("dnat", WAN, "192.0.2.2", 80)]
    first = r.findings[0]
    assert first.code == "forward-drop" and first.namespace == "router", codes(r)
    assert first.fix == [fix]
    assert r.path.hops[-1].ns == "lan"  # the walk went on to the DNAT target


def test_dnat_to_local_port_healthy_once_the_forward_hook_accepts_it():
    r = diagnose("far", WAN, proto="tcp", port=8080, snapshot=router("fib_dnat_ok"), prober=FakeProber())
    assert codes(r) == [] and r.reply_complete


def test_iptables_limit_is_passed_and_mark_is_unknown():
    fw = router("limit_mark").firewall("router")
    rules = fw.chains[("iptables-nft", "ip", "filter", "FORWARD")].rules
    assert rules[1].text == "-A FORWARD -p icmp -m icmp --icmp-type 8 -m limit --limit 5/sec --limit-burst 10 -j ACCEPT"
    assert rules[1].match(pkt()) is True                      # one probe is under any rate
    v = fw.evaluate("forward", pkt(proto="tcp", sport=40000, dport=80, icmp_type=None))
    assert v.unknown and v.rule is rules[2] and rules[2].unknown_parts() == ["`-m mark`"]
    assert v.then.drops and v.then.chain.name == "FORWARD"


def test_a_dnat_the_walk_cannot_evaluate_is_named_for_trace():
    from natns.explain import dnat

    fw = router("unknown_dnat").firewall("router")
    assert dnat.rewrite(fw, False, "198.51.100.9", WAN, "tcp", 8080, "wan0") is None
    assert dnat.unsure(fw, False, "198.51.100.9", WAN, "tcp", 8080, "wan0") == [
        "rule `meta mark 0x00000000 tcp dport 8080 dnat to 192.0.2.2:80` (table ip nat chain prerouting): "
        "`meta mark` not evaluated"]
    assert dnat.unsure(fw, False, "198.51.100.9", WAN, "tcp", 22, "wan0") == []  # tcp dport 22: no match


def test_named_verdict_map_jumps_as_docker_nft_writes_it():
    fw = router("named_vmap").firewall("router")
    rule = fw.chains[("nftables", "inet", "filter", "forward")].rules[1]
    assert rule.text == "iifname vmap @forward_jumps" and rule.verdict == "vmap"
    assert fw.evaluate("forward", pkt()).verdict == "accept"  # the map's `"lan0" : jump from_lan`
    assert fw.evaluate("forward", pkt(oif="eth9")).drops      # from_lan accepts only to wan0
    v = fw.evaluate("forward", pkt(FAR, "192.0.2.2", iif="wan0", oif="lan0"))
    assert v.drops and v.rule is None  # no element for wan0: on to the policy


# -- a dormant table (`flags dormant`): the kernel runs none of its chains ---------------------


def routed(case: str) -> FakeSnapshot:
    """The router of `case` with no NAT: the far end routes the lan back to it."""
    return router(case, far_routes=("192.0.2.0/24 via 198.51.100.2",))


def test_a_dormant_tables_chains_are_not_hooked():
    snap = routed("dormant")
    fw = snap.firewall("router")
    assert fw.dormant_tables == ["ip guard"]
    guard = fw.chains[("nftables", "ip", "guard", "fwd_c")]
    assert guard.dormant and guard.policy == "drop"
    assert guard not in fw.base_chains("forward")
    assert fw.evaluate("forward", pkt()).verdict == "accept"
    # nft 1.0.6's JSON misprints the flag (the table's name); the listing says it
    from natns.kernel import netfilter
    rs = netfilter.parse_nft_json((FIX / "dormant.json").read_text())
    assert rs.dormant_tables() == set() and ("ip", "guard", "fwd_c") in rs.base_chains()
    rs.listing = (FIX / "dormant.listing").read_text()
    assert rs.dormant_tables() == {("ip", "guard")} and ("ip", "guard", "fwd_c") not in rs.base_chains()
    r = diagnose("lan", FAR, snapshot=snap, prober=FakeProber())
    assert codes(r) == [] and r.exit_status == 0


# -- netdev ingress chains on the packet's input device ----------------------------------------


def test_netdev_ingress_chains_run_on_their_device():
    fw = routed("netdev_ingress").firewall("router")
    assert fw.chains[("nftables", "netdev", "edge", "in_c")].devices == ("wan0",)
    assert fw.chains[("nftables", "netdev", "edge", "in_lan")].devices == ("lan0",)
    assert fw.evaluate("ingress", pkt(iif="lan0", oif=None)).verdict == "accept"
    v = fw.evaluate("ingress", pkt("100.64.0.1", iif="lan0", oif=None))
    assert v.drops and v.rule is None and v.describe() == "the drop policy of chain in_lan in table netdev edge"
    syn = pkt("198.51.100.9", "192.0.2.2", iif="wan0", oif=None, proto="tcp", sport=40000, dport=8080,
              icmp_type=None)
    v = fw.evaluate("ingress", syn)
    assert v.drops and v.rule.text == "tcp dport 8080 drop"
    assert fw.evaluate("ingress", syn.__class__(**{**syn.__dict__, "iif": "lan0", "saddr": "192.0.2.9"})
                       ).verdict == "accept"  # in_c is wan0's only
    assert fw.evaluate("forward", syn).verdict == "accept"  # not a forward-hook chain


def test_doctor_names_a_netdev_ingress_drop_on_the_input_device():
    r = diagnose("lan", FAR, snapshot=routed("netdev_ingress"), prober=FakeProber())
    assert codes(r) == [] and r.exit_status == 0  # lan0's chain accepts the lan, wan0's drops only 8080
    r = diagnose("far", "192.0.2.2", proto="tcp", port=8080, snapshot=routed("netdev_ingress"),
                 prober=FakeProber(ok=False, detail="timeout"))
    f = r.errors[0]
    assert (f.code, f.namespace) == ("firewall-drop", "router"), [(x.code, x.summary) for x in r.findings]
    assert f.summary.startswith("the ingress hook of wan0 in router drops the packet: rule `tcp dport 8080 drop`")
    assert f.fix == ["ip netns exec router nft delete rule netdev edge in_c handle 4"]


def test_egress_chains_are_named_as_not_evaluated_and_trace_notes_them():
    from natns.explain.trace.read import chain_notes
    from natns.kernel import netfilter

    fw = routed("netdev_ingress").firewall("router")
    assert fw.not_evaluated() == ["table netdev edge chain out_far (hook egress device wan0, policy accept, 1 rule)"]
    # the walk can evaluate it; doctor's passes do not call it (yet): it is evidence of an unexplained failure
    assert fw.evaluate("egress", pkt(proto="udp", sport=40000, dport=53, icmp_type=None)).drops
    rs = netfilter.parse_nft_json((FIX / "netdev_ingress.json").read_text())
    rs.listing = (FIX / "netdev_ingress.listing").read_text()
    notes = chain_notes("router", rs)
    assert [n.split(" (hook")[0] for n in notes] == [f"router: table netdev edge chain {c}"
                                                    for c in ("in_c", "in_lan", "out_far")]
    assert "runs after the IP hooks trace follows" in notes[2]
    rs.listing = (FIX / "dormant.listing").read_text()
    rs.objs = netfilter.parse_nft_json((FIX / "dormant.json").read_text()).objs
    assert chain_notes("router", rs) == [
        "router: table ip guard is dormant (flags dormant): the kernel runs none of its chains"]


def test_a_failed_neighbour_behind_a_netdev_drop_policy_is_that_chains_arp_drop():
    snap = routed("netdev_ingress")
    snap.set_neighbour("lan", "192.0.2.1", "eth0", "FAILED")  # in_lan's policy drops the lan's ARP
    r = diagnose("lan", FAR, snapshot=snap, prober=FakeProber(ok=False, detail="Destination Host Unreachable"))
    f = r.errors[0]
    assert (f.code, f.namespace) == ("firewall-drop", "router"), [(x.code, x.summary) for x in r.findings]
    assert f.summary == ("the ingress hook of lan0 in router drops ARP, so the neighbour entry on the way there "
                         "fails: the drop policy of chain in_lan in table netdev edge")
    # the packet itself is let in by `ip saddr 192.0.2.0/24 accept`: only ARP needs letting in
    assert f.fix == ["ip netns exec router nft insert rule netdev edge in_lan meta protocol arp accept"]
