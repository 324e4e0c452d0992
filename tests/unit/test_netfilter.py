"""natns.kernel.netfilter, the one rule reader, on what the tools really print.

The inputs in data/netfilter_* were captured from a real namespace by
data/capture_netfilter.sh (iptables-nft 1.8.9 and nft 1.0.6): iptables-nft
rules in filter and nat (an owned ``natns-`` chain, Docker's DOCKER-USER, a
quoted comment, a DNAT with a port), a native ``inet`` table with a set and a
map, and iptables-legacy rules beside them. No root needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from natns.errors import KernelError
from natns.explain import rules as R
from natns.kernel import netfilter as nf

DATA = Path(__file__).parent / "data"


def text(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture
def save() -> nf.Save:
    return nf.parse_save(text("netfilter_iptables_nft_save.txt"))


@pytest.fixture
def ruleset() -> nf.NftRuleset:
    rs = nf.parse_nft_json(text("netfilter_nft_ruleset.json"))
    rs.listing = text("netfilter_nft_ruleset.txt")
    return rs


def test_save_tables_chains_policies(save):
    assert save.tables == ["filter", "nat"]
    assert save.chains[("filter", "FORWARD")].policy == "DROP"
    assert save.chains[("filter", "DOCKER-USER")].policy is None  # "-": a user chain
    assert save.chains[("nat", "natns-POSTROUTING")].policy is None
    assert [c.name for c in save.chains.values() if c.table == "nat"] == \
        ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "natns-POSTROUTING"]
    assert save.problems == []


def test_save_rules_are_unquoted_words_with_positions(save):
    fwd = save.rules_of("filter", "FORWARD")
    assert [r.position for r in fwd] == [1, 2]
    assert fwd[0].args == ("-j", "DOCKER-USER") and fwd[0].target == "DOCKER-USER"
    (drop,) = save.rules_of("filter", "DOCKER-USER")
    assert drop.args == ("-s", "203.0.113.0/24", "-m", "comment", "--comment", 'say "no"', "-j", "DROP")
    assert drop.line == '-A DOCKER-USER -s 203.0.113.0/24 -m comment --comment "say \\"no\\"" -j DROP'
    (dnat,) = save.rules_of("nat", "PREROUTING")
    assert dnat.args[-2:] == ("--to-destination", "192.0.2.11:80")
    assert dnat.packets is None  # no -c


def test_save_with_counters_reads_the_counters_and_the_same_rules(save):
    counted = nf.parse_save(text("netfilter_iptables_nft_save_counters.txt"))
    assert [(r.table, r.chain, r.args, r.line) for r in counted.rules] == \
        [(r.table, r.chain, r.args, r.line) for r in save.rules]
    assert all((r.packets, r.bytes) == (0, 0) for r in counted.rules)
    assert counted.chains[("filter", "FORWARD")].policy == "DROP"
    assert (counted.chains[("filter", "FORWARD")].packets, counted.chains[("filter", "FORWARD")].bytes) == (0, 0)


def test_save_line_that_cannot_be_unquoted():
    bad = '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "open -j ACCEPT\nCOMMIT\n'
    loose = nf.parse_save(bad)
    assert loose.rules == [] and len(loose.problems) == 1 and "cannot parse" in loose.problems[0]
    with pytest.raises(KernelError, match="unreadable line"):
        nf.parse_save(bad, strict=True)


def test_save_tables_filter(save):
    only_nat = nf.parse_save(text("netfilter_iptables_nft_save.txt"), tables=("nat",))
    assert only_nat.tables == ["nat"] and {r.table for r in only_nat.rules} == {"nat"}


class _Saved:
    def __init__(self):
        self.chains, self.rules, self.rule_counters, self.jumps = [], [], [], []


def test_take_owned_picks_the_owners_chains_rules_and_jumps_to_them():
    into = _Saved()
    nf.take_owned(text("netfilter_iptables_nft_save_counters.txt"), "natns-", into, tables=("nat", "filter"))
    assert into.chains == [("nat", "natns-POSTROUTING")]
    assert into.rules == [("nat", "natns-POSTROUTING",
                           ("-s", "192.0.2.0/24", "-o", "eth0", "-m", "comment", "--comment", "natns snat tenant",
                            "-j", "MASQUERADE"))]
    assert into.rule_counters == [(0, 0)]
    assert into.jumps == [("nat", "POSTROUTING", ("-m", "comment", "--comment", "natns", "-j", "natns-POSTROUTING"))]


def test_nft_ruleset_tables_base_chains_handles(ruleset):
    assert ruleset.tables() == [("ip", "nat"), ("ip", "filter"), ("inet", "mine")]
    base = ruleset.base_chains()
    assert base[("ip", "filter", "FORWARD")] == nf.Chain("ip", "filter", "FORWARD", "forward", 0, "filter", "drop")
    assert base[("inet", "mine", "input")].prio == 5 and base[("inet", "mine", "input")].priority == 5
    assert ("ip", "nat", "natns-POSTROUTING") not in base  # a regular chain
    assert ruleset.handles("ip")[("ip", "filter", "FORWARD")] == [3, 5]
    assert ruleset.hook_info("ip")[("nat", "PREROUTING")] == ("prerouting", -100, "nat")


def test_nft_sets_maps_and_rule_texts(ruleset):
    assert ruleset.sets()[("inet", "mine")]["blocked"] == ["203.0.113.7", "203.0.113.8"]
    assert ruleset.sets("map")[("inet", "mine")]["portmap"] == [("198.51.100.20", "192.0.2.20")]
    texts = ruleset.rule_texts()
    assert texts[("inet mine", "input", 5)] == "ip saddr @blocked counter drop"
    assert texts[("ip filter", "FORWARD", 5)] == "ct state related,established counter accept"


def test_nft_json_that_is_not_nfts():
    with pytest.raises(ValueError):
        nf.parse_nft_json("{not json")
    with pytest.raises(ValueError):
        nf.parse_nft_json('{"nftables": 3}')
    assert nf.parse_nft_json("").objs == []


def test_iptables_nft_rules_get_their_nft_handles(save, ruleset):
    nf.match_nft_handles(save, ruleset)
    by = {(r.table, r.chain, r.position): r.handle for r in save.rules}
    assert by[("filter", "FORWARD", 1)] == 3 and by[("filter", "FORWARD", 2)] == 5
    assert by[("nat", "natns-POSTROUTING", 1)] == 4
    assert by[("nat", "PREROUTING", 1)] == 6


def test_a_chain_that_changed_between_the_reads_gets_no_handles(save, ruleset):
    save.rules = [r for r in save.rules if not (r.chain == "FORWARD" and r.position == 2)]
    nf.match_nft_handles(save, ruleset)
    assert [r.handle for r in save.rules_of("filter", "FORWARD")] == [None]
    assert save.rules_of("nat", "PREROUTING")[0].handle == 6


def test_legacy_summary():
    legacy = nf.parse_save(text("netfilter_iptables_legacy_save.txt"))
    assert nf.legacy_summary(legacy) == "1 rule and policy OUTPUT DROP in table filter"
    empty = nf.parse_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    assert nf.legacy_summary(empty) is None and nf.legacy_summary(None) is None


def test_rule_walk_reads_the_same_text_through_netfilter(ruleset):
    """rules.read_iptables_save / read_nft build the walk's chains from netfilter's parse."""
    fw = R.Firewall("x")
    names = R.read_iptables_save(fw, text("netfilter_iptables_nft_save.txt"), "iptables-nft", ruleset.hook_info())
    R.read_nft(fw, text("netfilter_nft_ruleset.json"), text("netfilter_nft_ruleset.txt"),
               {("ip", t) for t in names})
    assert names == ["filter", "nat"] and fw.nft_tables == ["inet mine"]
    fwd = fw.chains[("iptables-nft", "ip", "filter", "FORWARD")]
    assert isinstance(fwd, nf.Chain) and (fwd.hook, fwd.prio, fwd.policy) == ("forward", 0, "drop")
    assert fwd.rules[0].verdict == "jump" and fwd.rules[0].target == "DOCKER-USER"
    blocked = R.Packet("203.0.113.7", "192.0.2.1", iif="eth0")
    v = fw.evaluate("input", blocked)
    assert v.verdict == "drop" and v.rule.text == "ip saddr @blocked counter drop"
    v = fw.evaluate("forward", R.Packet("203.0.113.5", "192.0.2.2", iif="eth0", oif="lan0"))
    assert v.verdict == "drop" and "say" in v.rule.text
    d = fw.dnat(R.Packet("192.0.2.50", "198.51.100.10", "tcp", 40000, 8080, None, iif="eth0"))
    assert d.verdict == "dnat" and d.rule.nat_rewrite(R.Packet("x", "198.51.100.10", "tcp", 1, 8080)) == \
        ("192.0.2.11", 80)


@pytest.mark.parametrize("name", ["netfilter_iptables_nft_save.txt", "netfilter_iptables_nft_save_counters.txt"])
@pytest.mark.parametrize("prefix", ["natns-", "DOCKER-", "nope-"])
def test_take_owned_is_what_the_iptables_backend_reads(name, prefix):
    """The iptables backend's observe reads through take_owned: exactly one owner's chains,
    their rules (with counters, one pair per rule) and the jumps to them from elsewhere."""
    from natns.firewall import iptables as ipt

    got = ipt._Saved()
    nf.take_owned(text(name), prefix, got, tables=ipt.TABLES)
    assert (got.chains or prefix == "nope-")
    assert all(t in ipt.TABLES and c.startswith(prefix) for t, c in got.chains)
    assert all((t, c) in got.chains for t, c, _ in got.rules)
    assert len(got.rule_counters) == len(got.rules)
    assert all(not c.startswith(prefix) and nf.jump_target(a).startswith(prefix) for _, c, a in got.jumps)
