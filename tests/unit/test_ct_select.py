"""Which conntrack entries contradict a router's NAT rules (natns/firewall/ctselect.py),
and when the planner has them checked. No root: entries are built as the kernel's
ctnetlink dump decodes them (natns.kernel.conntrack.Entry)."""

from __future__ import annotations

import dataclasses

import pytest

from natns.firewall import ctselect, get_backend
from natns.kernel.conntrack import CtTuple, Entry, translations
from natns.state import FirewallIntent, FloatingIp, InternalNet, PortForward, SnatRule

EXT = "198.51.100.2"
FIP = "198.51.100.50"
INET = "203.0.113.9"
H1, H2, OTHER = "192.0.2.10", "192.0.2.11", "192.0.3.10"  # tenant, tenant, second network
GW = "192.0.2.1"


def intent(snat="masquerade", floating=(), forwards=()) -> FirewallIntent:
    rules = () if snat == "off" else tuple(
        SnatRule(network=n, source=c, out_iface="eth0", to=None if snat == "masquerade" else snat)
        for n, c in (("tenant", "192.0.2.0/24"), ("other", "192.0.3.0/24")))
    return FirewallIntent(
        lab="l", namespace="r", role="router", snat=rules, external_iface="eth0", external_address=EXT,
        internal=(InternalNet("tenant", "br0", "192.0.2.0/24"), InternalNet("other", "br1", "192.0.3.0/24")),
        floating=tuple(FloatingIp(a, h) for a, h in floating),
        forwards=tuple(PortForward(p, EXT, port, port, to, to_port) for p, port, to, to_port in forwards),
        isolate=True)


def nat(**kw) -> ctselect.NatIntent:
    return ctselect.from_firewall(intent(**kw))


def entry(proto, src, dst, *, sport=None, dport=None, snat_to=None, dnat_to=None, icmp_id=None) -> Entry:
    """An entry of a connection src -> dst, DNATed to `dnat_to` ((addr, port)) and SNATed
    to `snat_to` (the reply comes back to it), as conntrack records it."""
    kind = dict(icmp_type=8, icmp_code=0, icmp_id=icmp_id or 7) if proto == "icmp" else {}
    orig = CtTuple(src, dst, sport, dport, **kind)
    rsrc, rsport = dnat_to if dnat_to else (dst, dport)
    rkind = dict(icmp_type=0, icmp_code=0, icmp_id=kind["icmp_id"]) if kind else {}
    reply = CtTuple(rsrc, snat_to or src, rsport, sport, **rkind)
    status = ["SEEN_REPLY"] + (["SRC_NAT"] if snat_to else []) + (["DST_NAT"] if dnat_to else [])
    state = "ESTABLISHED" if proto == "tcp" else "ASSURED"
    return Entry(proto, orig, reply, translations(orig, reply), state, status, 30)


def ping(src=H1, dst=INET, snat_to=None):
    return entry("icmp", src, dst, snat_to=snat_to)


def udp(src=H1, dst=INET, dport=5000, snat_to=None, dnat_to=None):
    return entry("udp", src, dst, sport=40000, dport=dport, snat_to=snat_to, dnat_to=dnat_to)


def tcp(src=INET, dst=EXT, dport=80, snat_to=None, dnat_to=None):
    return entry("tcp", src, dst, sport=40001, dport=dport, snat_to=snat_to, dnat_to=dnat_to)


def test_snat_switched_on_picks_the_untranslated_flows_out_and_only_those():
    now = nat(snat="masquerade")
    leaking = [ping(), udp(), ping(OTHER)]
    fine = [
        ping(snat_to=EXT), udp(snat_to=EXT),      # already masqueraded
        ping(H1, OTHER), udp(H1, OTHER),          # between the router's own networks
        ping(H1, GW), ping(H1, EXT),              # to the router itself
        entry("proto-2", H1, "224.0.0.22"),       # multicast: not the rules' business
        ping(INET, "203.0.113.10"),               # transit from outside, no mapping
    ]
    assert ctselect.stale(now, leaking + fine) == leaking


def test_snat_moved_to_another_address_or_switched_off():
    fixed = nat(snat="198.51.100.7")
    assert ctselect.stale(fixed, [ping(snat_to=EXT), ping(), ping(snat_to="198.51.100.7")]) == [
        ping(snat_to=EXT), ping()]
    off = nat(snat="off")
    assert ctselect.stale(off, [ping(snat_to=EXT), udp(snat_to="198.51.100.7"), ping(), ping(H1, OTHER)]) == [
        ping(snat_to=EXT), udp(snat_to="198.51.100.7")]


def test_a_floating_ip_given_to_a_host_picks_that_hosts_masqueraded_flows_only():
    now = nat(floating=[(FIP, H1)])
    mine, neighbours = udp(snat_to=EXT), udp(H2, snat_to=EXT)
    translated = udp(snat_to=FIP)
    inbound = tcp(dst=FIP, dnat_to=(H1, 80))
    assert ctselect.stale(now, [mine, neighbours, translated, inbound, ping(H1)]) == [mine, ping(H1)]


def test_open_tcp_connections_keep_a_source_the_router_still_has_and_only_those():
    """Given another source mid-stream, a TCP connection could only be reset by its peer:
    one SNATed to an address of the router's rules keeps it; a leaking one does not."""
    now = nat(floating=[(FIP, H1)])
    kept = tcp(H1, INET, 443, snat_to=EXT)
    opening = dataclasses.replace(kept, state="SYN_SENT")
    gone_address = tcp(H1, INET, 443, snat_to="198.51.100.99")
    assert ctselect.stale(now, [kept, opening, gone_address]) == [opening, gone_address]
    assert ctselect.stale(nat(snat="masquerade"), [tcp(H1, INET, 443)]) == [tcp(H1, INET, 443)]  # leaking
    assert ctselect.kept_tcp(now, kept) and not ctselect.kept_tcp(now, udp(snat_to=EXT))


def test_a_floating_ip_moved_or_removed():
    moved = nat(floating=[(FIP, H2)])
    old_in, old_out = tcp(dst=FIP, dnat_to=(H1, 80)), udp(snat_to=FIP)
    new_in = tcp(dst=FIP, dnat_to=(H2, 80))
    assert ctselect.stale(moved, [old_in, old_out, new_in, udp(H2, snat_to=EXT)]) == [
        old_in, old_out, udp(H2, snat_to=EXT)]
    gone = nat()
    # The host's outbound flows go back to the router's address; inbound ones to the
    # old address are the removal flush's (the address is not the router's any more).
    assert ctselect.stale(gone, [old_out, old_in]) == [old_out]


def test_a_port_forward_added_or_removed():
    now = nat(forwards=[("udp", 5353, H1, 53), ("tcp", 8080, H2, 80)])
    untranslated = udp(INET, EXT, 5353)
    right = udp(INET, EXT, 5353, dnat_to=(H1, 53))
    wrong_port = tcp(dport=8080, dnat_to=(H2, 8080))
    other_port = udp(INET, EXT, 5354)
    assert ctselect.stale(now, [untranslated, right, wrong_port, other_port]) == [untranslated, wrong_port]
    # removed: what its rule DNATed to the router's address is no longer translated
    assert ctselect.stale(nat(), [right, other_port]) == [right]


def test_hairpin_through_a_port_forward_needs_its_snat():
    now = nat(forwards=[("tcp", 8080, H2, 80)])
    ok = tcp(H1, EXT, 8080, dnat_to=(H2, 80), snat_to=EXT)
    no_snat = tcp(H1, EXT, 8080, dnat_to=(H2, 80))
    assert ctselect.stale(now, [ok, no_snat]) == [no_snat]


def test_expectation_is_what_doctor_reports():
    now = nat(floating=[(FIP, H1)])
    assert ctselect.expectation(now, "icmp", H1, INET) == ctselect.Expectation(None, FIP, False)
    assert ctselect.expectation(now, "icmp", H2, INET) == ctselect.Expectation(None, EXT, False)
    assert ctselect.expectation(now, "tcp", INET, FIP, 22) == ctselect.Expectation((H1, None), INET, True)
    assert ctselect.expectation(now, "icmp", INET, "203.0.113.10") is None
    assert ctselect.from_firewall(dataclasses.replace(intent(), role="uplink")) is None


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_when_the_planner_has_the_entries_checked(backend):
    be = get_backend(backend)
    r = be.render
    base = intent(snat="off", floating=[(FIP, H1), ("198.51.100.51", H2)], forwards=[("tcp", 8080, H2, 80)])

    def needed(old_intent, new_intent, existed=True):
        old = r(old_intent) if old_intent is not None else None
        return ctselect.recheck_needed(be, r, old, r(new_intent), new_intent, existed)

    assert not needed(base, base)
    for changed in (dataclasses.replace(base, snat=intent().snat),                       # SNAT on
                    dataclasses.replace(base, floating=base.floating + (FloatingIp("198.51.100.52", OTHER),)),
                    dataclasses.replace(base, floating=(FloatingIp(FIP, H2),)),         # moved (and one gone)
                    dataclasses.replace(base, forwards=base.forwards + (PortForward("udp", EXT, 53, 53, H1, 53),))):
        assert needed(base, changed)
    # Only removals: the removal flush deletes every entry they concern.
    for removed in (dataclasses.replace(base, floating=base.floating[:1]),
                    dataclasses.replace(base, floating=base.floating[1:]),
                    dataclasses.replace(base, forwards=())):
        assert not needed(base, removed)
    # Rules put where there were none while traffic may run; not in a new namespace.
    assert needed(None, base) and not needed(None, base, existed=False)
    # A note in the kernel: checked again; removal notes only going: not.
    noted = dataclasses.replace(base, flush=(ctselect.note(ctselect.from_firewall(base)),))
    assert be.pending_flushes(r(noted)) == {("nat", EXT)}
    assert needed(noted, base)
    flushed = dataclasses.replace(base, flush=(("fip", "198.51.100.53"),))
    assert not needed(flushed, base)
    # Not a router: never.
    host = FirewallIntent(lab="l", namespace="host", role="uplink", scope="natnsup-0123abcd",
                          snat=(SnatRule("uplink r", "198.51.100.0/24", "nu-l-r", out_negate=True),))
    assert ctselect.recheck(be, r, None, r(host), host) is None


def test_the_commands_plan_prints():
    lines = ctselect.commands(nat(snat="198.51.100.7", floating=[(FIP, H1)], forwards=[("udp", 5353, H1, 53)]),
                              "r")
    assert lines[0] == "ip netns exec r conntrack -D -s 192.0.2.0/24 -q 192.0.2.0/24 (leaving by eth0 not SNATed)"
    assert f"ip netns exec r conntrack -D -s {H1} (leaving by eth0 with a source other than {FIP})" in lines
    assert f"ip netns exec r conntrack -D -p udp -d {EXT} --dport 5353 (not DNATed to {H1}:53)" in lines
    assert all(line.startswith("ip netns exec r conntrack -D ") for line in lines)


def test_doctor_names_the_stale_entry_of_a_flow_and_the_command_that_fixes_it():
    now = nat(floating=[(FIP, H1)])
    table = [ping(), udp(snat_to=EXT), udp(H2, snat_to=EXT), tcp(dst=FIP, dnat_to=(H2, 80))]
    found = ctselect.contradiction("r", "udp", H1, INET, nat=now, entries=table)
    assert [c.entry for c in found] == [table[1]]
    assert found[0].fix == f"ip netns exec r conntrack -D -p udp -s {H1} -d {INET} --sport 40000 --dport 5000"
    assert f"is SNATed to {EXT}, the rules SNAT it to {FIP}" in found[0].problem
    (icmp,) = ctselect.contradiction("r", "icmp", H1, INET, nat=now, entries=table)
    assert icmp.fix.endswith("--icmp-id 7") and "is not SNATed" in icmp.problem
    (inbound,) = ctselect.contradiction("r", "tcp", INET, FIP, dport=80, nat=now, entries=table)
    assert f"is DNATed to {H2}:80, the rules DNAT it to {H1}" in inbound.problem
    assert ctselect.contradiction("r", "udp", H2, INET, nat=now, entries=table) == []


def test_the_rules_read_back_for_doctor():
    listed = "\n".join([
        "table ip natns {",
        '\tchain postrouting {',
        '\t\tct status dnat iifname != "eth0" oifname != "eth0" counter packets 3 bytes 180 '
        'snat ip to 198.51.100.2 comment "natns hairpin"',
        '\t\toifname "eth0" snat ip to ip saddr map @fip_snat comment "natns floating ips out"',
        '\t\toifname "eth0" ip saddr 192.0.2.0/24 counter packets 7 bytes 588 masquerade comment "natns snat tenant"',
        '\t\toifname "eth0" ip saddr 192.0.3.0/24 counter packets 0 bytes 0 snat ip to 198.51.100.7 '
        'comment "natns snat other"',
        '\t\toifname != "nu-x" ip saddr 198.51.100.0/24 counter packets 0 bytes 0 masquerade comment "natns snat up"',
        "\t}", "}"])
    assert ctselect.snat_from_nft_text(listed) == (
        [("eth0", "192.0.2.0/24", None), ("eth0", "192.0.3.0/24", "198.51.100.7")], EXT)
    ipt = get_backend("iptables").render(intent(snat="198.51.100.7"))
    assert ctselect.snat_from_iptables_key(ipt.key) == (
        [("eth0", "192.0.2.0/24", "198.51.100.7"), ("eth0", "192.0.3.0/24", "198.51.100.7")], EXT)
