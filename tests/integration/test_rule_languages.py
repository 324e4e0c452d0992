"""Issue 15 items 1-4 on real namespaces: the rulesets of tests/unit/fixtures/rules (the very
files tests/unit/test_rules_languages.py reads the tools' dumps of) loaded into the plain
router (corpus/builder.py), doctor's verdict and trace's path checked against real packets."""

from __future__ import annotations

from pathlib import Path

import pytest

from .corpus import builder as B
from .corpus.builder import FAR, LAN, WAN

pytestmark = pytest.mark.root

FIX = Path(__file__).parent.parent / "unit" / "fixtures" / "rules"


shared, net = B.fixtures()


def load(net: B.Net, case: str) -> None:
    if (FIX / f"{case}.ipt").exists():
        net.ipt((FIX / f"{case}.ipt").read_text())
    if (FIX / f"{case}.nft").exists():
        net.nft((FIX / f"{case}.nft").read_text())


@pytest.mark.parametrize("case", ["native_nat", "vmap", "sets"])
def test_working_router_is_healthy_and_traced(net, case):
    """1: native `table ip nat` beside iptables-nft's filter; 2: ct state vmap; 3: sets."""
    load(net, case)
    r = B.assert_working(net, net.lan, FAR)
    assert [(n.kind, n.before, n.after) for n in r.nat] == [("masquerade", LAN, WAN)]


def test_native_nat_removed_is_no_snat_and_the_fix_works(net):
    load(net, "vmap_no_nat")
    f = B.assert_first_error_then_fix(net, net.lan, FAR, "no-snat", says="no source NAT")
    assert all(" nft " in c for c in f.fix)  # in the tool the router already uses
    net.forget()
    B.assert_healthy(net, net.lan, FAR)


def test_unknown_rule_is_named_not_a_false_drop(net):
    load(net, "unknown_mark")
    assert net.ping(net.lan, FAR)  # `meta mark 0x00000000` matches: the kernel accepts
    r = net.doctor(net.lan, FAR)
    assert B.codes(r) == ["firewall-unknown"] and r.exit_status == 0 and r.probe.ok
    f = r.findings[0]
    assert f.evidence["rule"] == 'meta mark 0x00000000 iifname "lan0" accept'
    assert f"natns trace --from {net.lan} --to {FAR}" in f.note
    B.assert_traced_there_and_back(net, net.lan, FAR)


@pytest.mark.parametrize("case", ["addrtype_dnat", "fib_dnat"])
def test_local_dnat_followed_and_the_forward_drop_named_and_fixed(net, case):
    """4: Docker-style `-m addrtype --dst-type LOCAL` / `fib daddr type local` DNAT of wan0:8080
    to the lan's server; the forward hook drops it until doctor's fix is run."""
    load(net, case)
    t = net.trace(net.far, WAN, "tcp", 8080)
    assert t.namespaces == [net.far, net.router, net.lan]  # the walk followed the DNAT
    req = t.request
    assert req.outcome == "dropped" and req.stop.ns == net.router and req.stop.hook == "forward"
    pre = req.hop(net.router).hook("prerouting")
    assert [(w.field, w.before, w.after) for w in pre.rewrites if w.field == "daddr"] == [("daddr", WAN, LAN)]
    f = B.assert_first_error_then_fix(net, net.far, WAN, "forward-drop", proto="tcp", port=8080,
                                      says="forward hook")
    assert "dnat" in f.fix[0].lower()
    net.forget()
    r = B.assert_healthy(net, net.far, WAN, "tcp", 8080)
    assert [(n.kind, n.before, n.after, n.port_after) for n in r.nat] == [("dnat", WAN, LAN, 80)]


def test_local_dnat_traced_to_the_server_and_back(net):
    load(net, "fib_dnat_ok")
    assert net.connect(net.far, WAN, 8080)
    B.assert_traced_there_and_back(net, net.far, WAN, "tcp", 8080, to=net.lan)


def test_trace_says_which_dnat_rule_the_walk_could_not_evaluate(net):
    load(net, "unknown_dnat")
    t = net.trace(net.far, WAN, "tcp", 8080)
    assert t.namespaces == [net.far, net.router]  # not followed: the walk cannot tell
    assert any("meta mark 0x00000000 tcp dport 8080 dnat to 192.0.2.2:80" in n and "`meta mark` not evaluated" in n
               for n in t.notes), t.notes
    r = net.doctor(net.far, WAN, "tcp", 8080)
    assert not any(f.code in ("forward-drop", "firewall-drop") for f in r.findings)
