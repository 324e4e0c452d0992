"""Planning is pure: desired vs actual state -> ordered steps, without root."""

from __future__ import annotations

import copy
import dataclasses
import pathlib

import pytest

from natns import topology
from natns.desired import desired_state
from natns.errors import ForeignObjectError
from natns.plan import plan_down, plan_up
from natns.steps import PHASE_ORDER, BY_ACTION, ClearFlushNotes, ConfigureLink, FlushConntrack, LoadFirewall, UpdateFirewall
from natns.state import ObservedLab, ObservedNs, RouteState

from planning_helpers import as_observed, other_stand_in, stand_in

SEED = pathlib.Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"



@pytest.fixture
def seed():
    return desired_state(topology.load(str(SEED)))


def test_desired_state_of_the_seed(seed):
    vm = seed.namespaces["vm"]
    assert vm.role == "router"
    assert vm.sysctls == {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "0"}
    assert vm.routes == (RouteState("0.0.0.0/0", "198.51.100.1"),)
    assert vm.links["eth0"].addresses == ("198.51.100.116/24",)
    assert vm.links["qr-tenant"].addresses == ("192.0.2.3/24",)
    assert vm.links["tap-tenant1"].master == "qr-tenant"
    (rule,) = vm.firewall.snat
    assert (rule.source, rule.out_iface, rule.to) == ("192.0.2.0/24", "eth0", None)
    t1 = seed.namespaces["tenant1"]
    assert t1.routes == (RouteState("0.0.0.0/0", "192.0.2.3"),)
    assert t1.links["eth0"].addresses == ("192.0.2.2/24",)
    assert seed.namespaces["inet"].loopback_addresses == ("203.0.113.114/32",)


def test_plan_from_nothing_builds_everything_in_phase_order(seed):
    p = plan_up(seed, ObservedLab("seed"), stand_in)
    actions = [s.action for s in p.steps]
    assert actions.count("create_netns") == 3
    assert actions.count("create_veth") == 2  # vm<->inet, vm<->tenant1: one step per pair
    assert actions.count("create_bridge") == 2
    assert [s.phase for s in p.steps] == sorted(s.phase for s in p.steps)
    assert [PHASE_ORDER.index(BY_ACTION[a]) for a in actions] == [s.phase for s in p.steps]
    assert any(s.action == "set_sysctl" and s.ns == "vm" for s in p.steps)
    assert any(s.action == "load_firewall" and s.ns == "vm" for s in p.steps)
    assert "ip -n vm route replace default via 198.51.100.1 proto 233" in [s.command() for s in p.steps]


def test_plan_against_matching_kernel_is_empty(seed):
    assert plan_up(seed, as_observed(seed), stand_in).empty


BRNF = "net.bridge.bridge-nf-call-iptables"


def test_bridge_netfilter_switched_on_by_hand_is_drift(seed):
    actual = as_observed(seed)
    actual.namespaces["vm"].sysctls[BRNF] = "1"
    p = plan_up(seed, actual, stand_in)
    assert [(s.action, s.ns, s.key, s.value, s.reason) for s in p.steps] == [
        ("set_sysctl", "vm", BRNF, "0", "drift")]
    assert p.steps[0].command() == f"ip netns exec vm sysctl -e -w {BRNF}=0"


def test_bridge_netfilter_absent_without_its_module_is_no_drift(seed):
    actual = as_observed(seed)
    del actual.namespaces["vm"].sysctls[BRNF]  # br_netfilter not loaded: the key doesn't exist
    assert plan_up(seed, actual, stand_in).empty
    # A new router gets the write anyway, as `sysctl -e`: a no-op without the module.
    fresh = [s for s in plan_up(seed, ObservedLab("seed"), stand_in).steps if s.action == "set_sysctl"]
    assert [(s.ns, s.key, s.value) for s in fresh if s.key == BRNF] == [("vm", BRNF, "0")]


def test_ip_forward_drift_is_planned_as_one_sysctl(seed):
    actual = as_observed(seed)
    actual.namespaces["vm"].sysctls["net.ipv4.ip_forward"] = "0"
    p = plan_up(seed, actual, stand_in)
    assert [(s.action, s.ns, s.target, s.reason) for s in p.steps] == [
        ("set_sysctl", "vm", "net.ipv4.ip_forward", "drift")]


def test_missing_default_route_and_firewall(seed):
    actual = as_observed(seed)
    actual.namespaces["tenant1"].routes = ()
    actual.namespaces["vm"].firewalls = {}
    p = plan_up(seed, actual, stand_in)
    # Rules restored in a router that may carry traffic: its conntrack entries are then
    # checked against them (noted by the load, cleared after; firewall/ctselect.py).
    assert [(s.action, s.ns) for s in p.steps] == [
        ("add_route", "tenant1"), ("load_firewall", "vm"), ("forget_conntrack", "vm"), ("clear_flush_notes", "vm")]
    assert p.steps[1].ruleset.flush == (("nat", "198.51.100.116"),)
    assert p.steps[3].inner.ruleset.flush == ()


def test_one_veth_end_gone_recreates_the_pair(seed):
    actual = as_observed(seed)
    del actual.namespaces["tenant1"].links["eth0"]
    p = plan_up(seed, actual, stand_in)
    acts = [(s.action, s.ns, s.target) for s in p.steps]
    assert ("delete_link", "vm", "tap-tenant1") in acts
    assert ("create_veth", "tenant1", "eth0") in acts or ("create_veth", "vm", "tap-tenant1") in acts
    # both ends configured and addressed again
    assert ("configure_link", "vm", "tap-tenant1") in acts
    assert ("add_address", "tenant1", "eth0") in acts


def test_stale_namespace_and_link_are_removed(seed):
    actual = as_observed(seed)
    old = ObservedNs(name="tenant9", mark="natns:seed:host:tenant9", role="host",
                     owner=("seed", "host", "tenant9"))
    actual.namespaces["tenant9"] = old
    extra = copy.copy(actual.namespaces["vm"].links["qr-tenant"])
    extra.name = "qr-gone"
    extra.alias = "natns:seed:network gone"
    actual.namespaces["vm"].links["qr-gone"] = extra
    p = plan_up(seed, actual, stand_in)
    assert {(s.action, s.target, s.reason) for s in p.steps} == {
        ("delete_netns", "tenant9", "stale"), ("delete_link", "qr-gone", "stale")}


def test_foreign_link_in_lab_namespace_is_left_alone(seed):
    actual = as_observed(seed)
    foreign = copy.copy(actual.namespaces["vm"].links["qr-tenant"])
    foreign.name, foreign.alias = "dummy0", None
    actual.namespaces["vm"].links["dummy0"] = foreign
    assert plan_up(seed, actual, stand_in).empty


def test_foreign_namespace_is_refused(seed):
    actual = ObservedLab("seed")
    actual.namespaces["vm"] = ObservedNs(name="vm", mark=None, role="", owner=None)
    with pytest.raises(ForeignObjectError, match="not created by natns"):
        plan_up(seed, actual, stand_in)


def test_namespace_of_another_lab_is_refused(seed):
    actual = ObservedLab("seed")
    actual.namespaces["vm"] = ObservedNs(name="vm", mark="natns:other:router:vm", role="router",
                                         owner=("other", "router", "vm"))
    with pytest.raises(ForeignObjectError, match="lab 'other'"):
        plan_up(seed, actual, stand_in)


def test_switching_backend_removes_the_old_rules(seed):
    actual = as_observed(seed)
    fw = actual.namespaces["vm"].firewalls.pop("nftables")
    actual.namespaces["vm"].firewalls["iptables"] = fw
    p = plan_up(seed, actual, stand_in, others=[other_stand_in])
    assert [(s.action, s.target) for s in p.steps] == [
        ("remove_firewall", "iptables"), ("load_firewall", "nftables"), ("forget_conntrack", "eth0"),
        ("clear_flush_notes", "nftables")]
    assert p.steps[0].backend is other_stand_in and p.steps[1].backend is stand_in
    # Rules of a backend the planner was not given can't be read: an error, not a guess.
    with pytest.raises(ValueError, match="iptables"):
        plan_up(seed, actual, stand_in)


def test_plan_down_deletes_only_the_given_namespaces():
    p = plan_down("seed", ["inet", "vm"])
    assert [(s.action, s.target) for s in p.steps] == [("delete_netns", "inet"), ("delete_netns", "vm")]


UPLINK = pathlib.Path(__file__).resolve().parents[2] / "examples" / "uplink.yaml"


def _host(links=(), forward="0"):

    h = ObservedNs(name=None, mark=None, role="host")
    h.links = {ln.name: ln for ln in links}
    h.sysctls = {"net.ipv4.ip_forward": forward}
    return h


def test_uplink_host_plan_saves_forwarding_in_the_alias():
    desired = desired_state(topology.load(str(UPLINK)))
    (name, link), = desired.host.links.items()
    assert name.startswith("nu-") and link.peer_ns == "up-vm"
    (rule,) = desired.host.firewall.snat
    assert rule.out_negate and rule.out_iface == name and rule.source == "198.51.100.0/30"
    actual = ObservedLab("uplink")
    actual.host = _host(forward="0")
    p = plan_up(desired, actual, stand_in)
    acts = [(s.action, s.ns, s.target) for s in p.steps]
    assert ("create_veth", "up-vm", "eth0") in acts
    cfg = next(s for s in p.steps if s.action == "configure_link" and s.ns is None)
    assert cfg.options()["alias"] == "natns:uplink:uplink up-vm saved:ip_forward=0"
    assert ("set_sysctl", None, "net.ipv4.ip_forward") in acts
    assert ("load_firewall", None, "nftables") in acts


def test_down_restores_forwarding_only_when_the_last_uplink_goes():
    from natns.state import LinkState

    mine = LinkState(name="nu-uplink-up-vm", kind="veth", alias="natns:uplink:uplink up-vm saved:ip_forward=0")
    other = LinkState(name="nu-other-r", kind="veth", alias="natns:other:uplink r saved:ip_forward=0")
    p = plan_down("uplink", ["up-vm"], _host([mine], forward="1"))
    assert [(s.action, s.target, getattr(s, "value", None)) for s in p.steps] == [
        ("delete_link", "nu-uplink-up-vm", None),
        ("set_sysctl", "net.ipv4.ip_forward", "0"),
        ("delete_netns", "up-vm", None),
    ]
    p = plan_down("uplink", ["up-vm"], _host([mine, other], forward="1"))
    assert "set_sysctl" not in [s.action for s in p.steps]


def test_nftables_element_changes_are_incremental_and_mappings_are_tracked():
    from natns.firewall import get_backend
    from natns.state import FirewallIntent, FloatingIp, InternalNet

    be = get_backend("nftables")
    base = dict(lab="l", namespace="vm", role="router", external_iface="eth0", external_address="198.51.100.116",
                internal=(InternalNet("t", "qr-t", "192.0.2.0/24"),), isolate=True)
    one = be.render(FirewallIntent(**base, floating=(FloatingIp("198.51.100.50", "192.0.2.2"),)))
    two = be.render(FirewallIntent(**base, floating=(FloatingIp("198.51.100.50", "192.0.2.9"),
                                                     FloatingIp("198.51.100.51", "192.0.2.3"))))
    changes = be.element_changes(one, two)
    assert changes["fip_dnat"] == ((("198.51.100.50", "192.0.2.9"), ("198.51.100.51", "192.0.2.3")),
                                   (("198.51.100.50", "192.0.2.2"),))
    assert be.mappings(one) - be.mappings(two) == {("fip", "198.51.100.50", "192.0.2.2")}
    # A new network changes the rules: not incremental.
    other = be.render(FirewallIntent(**{**base, "internal": ()}))
    assert be.element_changes(one, other) is None
    # iptables has no maps: always a reload, but the mappings are read from its rules.
    ipt = get_backend("iptables")
    i1 = ipt.render(FirewallIntent(**base, floating=(FloatingIp("198.51.100.50", "192.0.2.2"),)))
    assert ipt.element_changes(i1, i1) is None
    assert ipt.mappings(i1) == {("fip", "198.51.100.50", "192.0.2.2")}


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_removed_mapping_is_noted_in_the_rules_until_its_conntrack_flush_is_done(backend):
    """Removing a floating IP: the transaction that removes it also notes the flush due;
    the flush; then the note goes. Killed after the first step, the note is in the kernel
    and the next plan flushes and clears it; after that, nothing to do."""
    from natns.firewall import get_backend

    be = get_backend(backend)
    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mappings.yaml"
    import yaml

    data = yaml.safe_load(path.read_text())
    data["backend"] = backend
    before = desired_state(topology.parse(data, "t.yaml"))
    actual = as_observed(before, be.render)
    data["floating_ips"] = [f for f in data["floating_ips"] if f["address"] != "198.51.100.51"]
    after = desired_state(topology.parse(data, "t.yaml"))
    steps = plan_up(after, actual, be).steps
    assert {s.ns for s in steps} == {"mp-r1"} and steps[0].command() == "ip -n mp-r1 addr del 198.51.100.51/32 dev eth0"
    steps = steps[1:]
    assert [s.action for s in steps][1:] == ["flush_conntrack", "clear_flush_notes"]
    assert isinstance(steps[1], FlushConntrack) and (steps[1].kind, steps[1].outside) == ("fip", "198.51.100.51")
    first, last = steps[0], steps[-1]
    assert isinstance(last, ClearFlushNotes)
    if backend == "nftables":
        assert isinstance(first, UpdateFirewall) and isinstance(last.inner, UpdateFirewall)
        assert first.changes["flush_fip"] == ((("198.51.100.51", ""),), ())
        assert first.changes["fip_dnat"] == ((), (("198.51.100.51", "192.0.2.10"),))
        assert last.inner.changes == {"flush_fip": ((), (("198.51.100.51", ""),))}
        assert "flush_fip +0 -1" in last.command()
    else:
        assert isinstance(first, LoadFirewall) and isinstance(last.inner, LoadFirewall)
    # killed after the first step: the kernel holds the rules with the note
    noted_intent = dataclasses.replace(after.namespaces["mp-r1"].firewall, flush=(("fip", "198.51.100.51"),))
    noted = be.render(noted_intent)
    assert be.pending_flushes(noted) == {("fip", "198.51.100.51")}
    assert be.mappings(noted) == be.mappings(be.render(after.namespaces["mp-r1"].firewall))
    crashed = copy.deepcopy(actual)
    for name, d in after.namespaces.items():
        if d.firewall is not None:
            crashed.namespaces[name].firewalls = {backend: be.render(d.firewall)}
    crashed.namespaces["mp-r1"].firewalls = {backend: noted}
    crashed.namespaces["mp-r1"].links["eth0"] = after.namespaces["mp-r1"].links["eth0"]  # address gone
    again = plan_up(after, crashed, be).steps
    assert [(s.action, s.ns) for s in again] == [("flush_conntrack", "mp-r1"), (last.action, "mp-r1")]
    done = copy.deepcopy(crashed)
    done.namespaces["mp-r1"].firewalls = {backend: be.render(after.namespaces["mp-r1"].firewall)}
    assert plan_up(after, done, be).empty


# ----------------------------------------------------------------------------- noting, not refusing (status)


def test_noting_mode_reports_a_hand_made_namespace_and_plans_its_adoption(seed):
    actual = ObservedLab("seed")
    actual.namespaces["vm"] = ObservedNs(name="vm", mark=None, role="", owner=None)
    found = []
    plan = plan_up(seed, actual, stand_in, foreign=found)
    assert [(f.kind, f.name, f.adoptable, f.owner) for f in found] == [("namespace", "vm", True, None)]
    assert found[0].message == str(pytest.raises(ForeignObjectError, plan_up, seed, actual, stand_in).value)
    assert plan.steps == plan_up(seed, actual, stand_in, adopt=True).steps  # what up --adopt would run
    assert plan_up(seed, actual, stand_in, adopt=True, foreign=(again := [])).steps == plan.steps
    assert again == []  # with --adopt, nothing in the way


def test_noting_mode_leaves_another_labs_namespace_and_its_pairs_alone(seed):
    actual = as_observed(seed)
    vm = actual.namespaces["vm"]
    vm.mark, vm.owner = "natns:other:router:vm", ("other", "router", "vm")
    found = []
    plan = plan_up(seed, actual, stand_in, foreign=found)
    assert [(f.kind, f.name, f.adoptable, f.owner) for f in found] == [("namespace", "vm", False, "other")]
    assert plan.empty  # nothing planned in vm, nor for the pairs into it
    with pytest.raises(ForeignObjectError, match="belongs to natns lab 'other'"):
        plan_up(seed, actual, stand_in, adopt=True)


def test_noting_mode_reports_a_file_in_the_way(seed):
    actual = ObservedLab("seed")
    actual.namespaces["tenant1"] = ObservedNs(name="tenant1", mark=None, role="", exists=False,
                                              not_a_namespace=True)
    found = []
    plan = plan_up(seed, actual, stand_in, foreign=found)
    assert [(f.kind, f.name) for f in found] == [("file", "tenant1")]
    assert not [s for s in plan.steps if "tenant1" in (s.ns, s.target)]


def test_noting_mode_reports_an_edited_link_alias_and_leaves_the_link_alone(seed):
    actual = as_observed(seed)
    tap = actual.namespaces["vm"].links["tap-tenant1"]
    actual.namespaces["vm"].links["tap-tenant1"] = dataclasses.replace(tap, alias="mine", addresses=())
    with pytest.raises(ForeignObjectError, match="link tap-tenant1 in namespace vm exists and was not created"):
        plan_up(seed, actual, stand_in)
    found = []
    plan = plan_up(seed, actual, stand_in, foreign=found)
    (f,) = found
    assert (f.kind, f.namespace, f.name, f.alias, f.mark, f.same_kind) == (
        "link", "vm", "tap-tenant1", "mine", "natns:seed:port tenant1", True)
    assert plan.empty  # its alias, master and (here: missing) address are not natns's to set


def test_noting_mode_reports_a_stranger_at_one_end_of_a_pair_once(seed):
    actual = as_observed(seed)
    del actual.namespaces["tenant1"].links["eth0"]  # one end gone: up would make the pair again...
    tap = actual.namespaces["vm"].links["tap-tenant1"]
    actual.namespaces["vm"].links["tap-tenant1"] = dataclasses.replace(tap, alias="natns:other:port x")
    with pytest.raises(ForeignObjectError, match="link tap-tenant1"):  # ...but the survivor isn't its
        plan_up(seed, actual, stand_in)
    found = []
    plan = plan_up(seed, actual, stand_in, foreign=found)
    assert [(f.kind, f.name, f.owner) for f in found] == [("link", "tap-tenant1", "other")]
    assert not [s for s in plan.steps if s.action in ("delete_link", "create_veth")]
