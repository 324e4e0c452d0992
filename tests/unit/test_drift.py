"""describe_drift: what differs between natns's rules as found and as wanted, per backend (pure).

`natns status` prints these sentences for a router whose rules drifted (issue 16,
item 6): which chain, rule, jump or map element is missing, extra or changed.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from natns import firewall, topology
from natns.desired import desired_state
from natns.firewall import iptables, nftables
from natns.firewall.base import Ruleset, multiset_diff

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def router():
    """The first router of examples/mappings.yaml: isolation, floating IPs, port forwards."""
    d = desired_state(topology.load(str(EXAMPLES / "mappings.yaml")))
    return next(n for n in d.namespaces.values() if n.role == "router" and n.firewall is not None)


def _nft(router) -> Ruleset:
    return nftables.BACKEND.render(router.firewall)


def _ipt(router) -> Ruleset:
    return iptables.BACKEND.render(router.firewall)


def _with(rs: Ruleset, **key) -> Ruleset:
    """`rs` as read back from the kernel (no body), its key changed."""
    return Ruleset(rs.backend, dataclasses.replace(rs.key, **key))


def test_multiset_diff_keeps_order_and_repeats():
    assert multiset_diff(["a", "b", "b", "c"], ["b", "c", "c", "d"]) == (["c", "d"], ["a", "b"])
    assert multiset_diff([1, 2], [2, 1]) == ([], [])


@pytest.mark.parametrize("backend", firewall.backends(), ids=lambda b: b.name)
def test_equal_rulesets_have_no_drift(router, backend):
    want = backend.render(router.firewall)
    assert backend.describe_drift(want, want) == []
    assert backend.describe_drift(None, None) == []


@pytest.mark.parametrize("backend", firewall.backends(), ids=lambda b: b.name)
def test_no_rules_at_all_and_rules_not_wanted(router, backend):
    want = backend.render(router.firewall)
    (missing,) = backend.describe_drift(None, want)
    assert "missing" in missing
    (extra,) = backend.describe_drift(want, None)
    assert "wants no natns rules" in extra


@pytest.mark.parametrize("backend", firewall.backends(), ids=lambda b: b.name)
def test_a_ruleset_of_the_other_backend_is_refused(router, backend):
    other = next(b for b in firewall.backends() if b.name != backend.name)
    with pytest.raises(ValueError):
        backend.describe_drift(other.render(router.firewall), backend.render(router.firewall))


# ----------------------------------------------------------------------------- nftables


def test_nft_a_rule_deleted_by_hand(router):
    want = _nft(router)
    gone = ("postrouting", "natns floating ips out")
    assert gone in want.key.rules
    have = _with(want, rules=tuple(r for r in want.key.rules if r != gone))
    assert nftables.BACKEND.describe_drift(have, want) == [
        'rule "natns floating ips out" is missing from chain postrouting']


def test_nft_a_rule_added_by_hand_and_rules_reordered(router):
    want = _nft(router)
    added = _with(want, rules=want.key.rules + (("input", None), ("input", "natns hairpin")))
    assert nftables.BACKEND.describe_drift(added, want) == [
        "chain input has a rule natns didn't write (one without a comment)",
        'rule "natns hairpin" in chain input is extra']
    fwd = [r for r in want.key.rules if r[0] == "forward"]
    rest = [r for r in want.key.rules if r[0] != "forward"]
    swapped = _with(want, rules=tuple([fwd[1], fwd[0], *fwd[2:], *rest]))
    assert nftables.BACKEND.describe_drift(swapped, want) == ["the rules of chain forward are in another order"]


def test_nft_chains_missing_extra_and_changed(router):
    want = _nft(router)
    chains = {c.name: c for c in want.key.chains}
    fwd = dataclasses.replace(chains["forward"], policy="accept")
    extra = nftables.NftChain("mine", None, None, None, None)
    have = _with(want, chains=tuple(sorted([c for n, c in chains.items() if n not in ("forward", "input")]
                                           + [fwd, extra])),
                 rules=tuple(r for r in want.key.rules if r[0] != "input"))
    lines = nftables.BACKEND.describe_drift(have, want)
    n_input = sum(1 for r in want.key.rules if r[0] == "input")
    assert lines == [
        "chain forward: policy is accept, want drop",
        f"chain input is missing (type filter hook input, policy accept) with its {n_input} rule(s)",
        "chain mine is extra (the file has no such chain), with 0 rule(s)",
    ]


def test_nft_map_elements_missing_extra_and_changed(router):
    want = _nft(router)
    elements = dict(want.key.elements)
    (k1, v1), (k2, v2) = elements["fip_dnat"][:2]
    elements["fip_dnat"] = ((k1, "192.0.2.99"), ("198.51.100.99", "192.0.2.98"))  # k2 gone, one extra
    elements["flush_fip"] = (("198.51.100.77", ""),)
    have = _with(want, elements=tuple(sorted(elements.items())))
    lines = nftables.BACKEND.describe_drift(have, want)
    assert len(lines) == 4 and set(lines) == {
        "element 198.51.100.99 : 192.0.2.98 in map fip_dnat is extra",
        f"element {k2} : {v2} is missing from map fip_dnat",
        f"element {k1} of map fip_dnat maps to 192.0.2.99, want {v1}",
        "set flush_fip notes a conntrack flush still due for 198.51.100.77 (an `up` was interrupted before "
        "it finished)",
    }


def test_nft_a_changed_rule_body_shows_as_the_digest(router):
    want = _nft(router)
    moved = nftables.BACKEND.render(dataclasses.replace(router.firewall, external_address="198.51.100.200"))
    (line,) = nftables.BACKEND.describe_drift(_with(moved), want)
    assert line.startswith("the table's comment is ") and "written for another file" in line


def test_nft_a_set_someone_added_is_extra(router):
    want = _nft(router)
    have = _with(want, elements=tuple(sorted(want.key.elements + (("set mine", ()),))))
    assert nftables.BACKEND.describe_drift(have, want) == ["set mine is extra (the file has no such set)"]


# ----------------------------------------------------------------------------- iptables


def _snat(key: iptables.IptKey):
    return next(r for r in key.rules if iptables._comment_of(r[2]) == "natns floating ips and port forwards")


def test_ipt_a_rule_deleted_by_hand(router):
    want = _ipt(router)
    gone = _snat(want.key)
    have = _with(want, rules=tuple(r for r in want.key.rules if r != gone))
    line = iptables._line("-A", gone[1], gone[2])
    assert iptables.BACKEND.describe_drift(have, want) == [
        f'rule "natns floating ips and port forwards" is missing from filter natns-FORWARD (`{line}`)']


def test_ipt_a_rule_changed_in_place(router):
    want = _ipt(router)
    t, c, args = _snat(want.key)
    edited = tuple("DROP" if a == "ACCEPT" else a for a in args)
    have = _with(want, rules=tuple((t, c, edited) if r == (t, c, args) else r for r in want.key.rules))
    assert iptables.BACKEND.describe_drift(have, want) == [
        f'rule "natns floating ips and port forwards" in filter natns-FORWARD changed: it is '
        f'`{iptables._line("-A", c, edited)}`, want `{iptables._line("-A", c, args)}`']


def test_ipt_extra_rules_order_and_flush_notes(router):
    want = _ipt(router)
    fwd = [r for r in want.key.rules if r[1] == "natns-FORWARD"]
    rest = [r for r in want.key.rules if r[1] != "natns-FORWARD"]
    swapped = _with(want, rules=tuple([fwd[1], fwd[0], *fwd[2:], *rest]))
    assert iptables.BACKEND.describe_drift(swapped, want) == ["the rules of filter natns-FORWARD are in another order"]
    hand = ("nat", "natns-PREROUTING", ("-d", "198.51.100.9/32", "-j", "DNAT", "--to-destination", "192.0.2.9"))
    note = ("nat", "natns-PREROUTING", ("-d", "198.51.100.50/32", "-m", "comment", "--comment",
                                        "natns flush fip 198.51.100.50"))
    have = _with(want, rules=want.key.rules + (hand, note))
    assert iptables.BACKEND.describe_drift(have, want) == [
        "nat natns-PREROUTING has a rule natns didn't write: "
        "`-A natns-PREROUTING -d 198.51.100.9/32 -j DNAT --to-destination 192.0.2.9`",
        "nat natns-PREROUTING notes a conntrack flush still due for 198.51.100.50 (an `up` was interrupted "
        "before it finished)",
    ]


def test_ipt_chains_and_jumps(router):
    want = _ipt(router)
    jump = next(j for j in want.key.jumps if j[1] == "INPUT")
    have = _with(want,
                 chains=tuple(c for c in want.key.chains if c != ("filter", "natns-INPUT")) + (("nat", "natns-OLD"),),
                 rules=tuple(r for r in want.key.rules if r[1] != "natns-INPUT"),
                 jumps=tuple(j for j in want.key.jumps if j != jump))
    n_input = sum(1 for r in want.key.rules if r[1] == "natns-INPUT")
    assert iptables.BACKEND.describe_drift(have, want) == [
        f"chain natns-INPUT (table filter) is missing with its {n_input} rule(s)",
        "chain natns-OLD (table nat) is extra (the file has no such chain), with 0 rule(s)",
        "the jump from filter INPUT into natns-INPUT is missing "
        "(`-A INPUT -m comment --comment natns -j natns-INPUT`)",
    ]
