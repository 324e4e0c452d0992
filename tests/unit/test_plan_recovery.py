"""Planning after a crash, and taking over namespaces (`--adopt`), without root.

natns gives a link its mark (the alias) in a request after the one that
creates it; killed in between, it leaves an unmarked link. `up` must
converge from there, yet never take over a link it didn't make.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from natns import topology
from natns.desired import desired_state, uplink_name
from natns.errors import ForeignObjectError
from natns.plan import plan_up
from natns.state import ObservedLab, ObservedNs, parse_ns_mark
from natns.steps import ConfigureLink

from planning_helpers import as_observed, other_stand_in, stand_in

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"



@pytest.fixture
def seed():
    return desired_state(topology.load(str(EXAMPLES / "seed.yaml")))


def unconfigured(actual: ObservedLab, ns: str, link: str) -> None:
    """Make `link` in `ns` look as the kernel made it: no alias, down, no address, no bridge."""
    ln = actual.namespaces[ns].links[link]
    actual.namespaces[ns].links[link] = dataclasses.replace(ln, alias=None, up=False, addresses=(), master=None)


def test_links_made_but_not_configured_before_a_kill_are_configured(seed):
    actual = as_observed(seed)
    for ns, link in (("vm", "tap-tenant1"), ("tenant1", "eth0"), ("vm", "qr-tenant"), ("inet", "ext")):
        unconfigured(actual, ns, link)
    plan = plan_up(seed, actual, stand_in)
    configured = {(s.ns, s.target): s.options() for s in plan.steps if isinstance(s, ConfigureLink)}
    assert configured[("vm", "tap-tenant1")]["alias"] == "natns:seed:port tenant1"
    assert configured[("vm", "tap-tenant1")]["master"] == "qr-tenant"
    assert configured[("inet", "ext")]["alias"] == "natns:seed:internet"
    assert not [s for s in plan.steps if s.action in ("delete_link", "create_veth", "create_bridge")]


@pytest.mark.parametrize("change", [
    {"up": True},                          # someone brought it up
    {"addresses": ("203.0.113.9/32",)},    # or gave it an address
    {"alias": "mine"},                     # or their own alias
    {"kind": "dummy"},                     # or it is another kind of link
])
def test_an_unmarked_link_that_natns_would_not_have_left_is_refused(seed, change):
    actual = as_observed(seed)
    unconfigured(actual, "vm", "qr-tenant")
    ln = actual.namespaces["vm"].links["qr-tenant"]
    actual.namespaces["vm"].links["qr-tenant"] = dataclasses.replace(ln, **change)
    with pytest.raises(ForeignObjectError, match="link qr-tenant in namespace vm exists and was not created"):
        plan_up(seed, actual, stand_in)


def test_unmarked_links_in_a_namespace_that_is_not_the_labs_are_refused(seed):
    actual = as_observed(seed)
    unconfigured(actual, "vm", "qr-tenant")
    vm = actual.namespaces["vm"]
    vm.mark, vm.owner = "natns:other:router:vm", ("other", "router", "vm")
    with pytest.raises(ForeignObjectError):
        plan_up(seed, actual, stand_in)


def test_adopt_marks_an_unmarked_namespace_and_nothing_else(seed):
    actual = ObservedLab("seed")
    actual.namespaces["vm"] = ObservedNs(name="vm", mark=None, role="", owner=None)
    with pytest.raises(ForeignObjectError, match="--adopt"):
        plan_up(seed, actual, stand_in)
    plan = plan_up(seed, actual, stand_in, adopt=True)
    marks = [s for s in plan.steps if s.action == "set_mark"]
    assert [(s.ns, s.mark, s.reason) for s in marks] == [("vm", "natns:seed:router:vm", "adopt")]
    assert "create_netns" not in [s.action for s in plan.steps if s.target == "vm"]
    # Links in an adopted namespace are still only natns's if marked.
    actual.namespaces["vm"].links["qr-tenant"] = dataclasses.replace(
        seed.namespaces["vm"].links["qr-tenant"], alias=None, up=False, addresses=())
    with pytest.raises(ForeignObjectError, match="link qr-tenant"):
        plan_up(seed, actual, stand_in, adopt=True)


def test_adopt_never_takes_another_labs_namespace(seed):
    actual = ObservedLab("seed")
    actual.namespaces["vm"] = ObservedNs(name="vm", mark="natns:other:router:vm", role="router",
                                         owner=parse_ns_mark("natns:other:router:vm"))
    with pytest.raises(ForeignObjectError, match="belongs to natns lab 'other'"):
        plan_up(seed, actual, stand_in, adopt=True)


def test_uplink_pair_made_but_not_configured_is_configured_but_a_lone_host_link_is_not():
    topo = topology.load(str(EXAMPLES / "uplink.yaml"))
    desired = desired_state(topo)
    actual = as_observed(desired)
    router = topo.routers[0]
    up = uplink_name(topo.name, router.name)
    host = ObservedNs(name=None, mark=None, role="host")
    host.links = {up: dataclasses.replace(desired.host.links[up], alias=None, up=False, addresses=(),
                                          peer_ns=None, peer_name=None)}
    host.sysctls = {"net.ipv4.ip_forward": "0"}
    actual.host = host
    unconfigured(actual, router.ns, router.external.interface)
    plan = plan_up(desired, actual, stand_in)
    assert (None, up) in {(s.ns, s.target) for s in plan.steps if s.action == "configure_link"}
    # The router's end configured already (so not just made): the host's unmarked link is someone's.
    actual.namespaces[router.ns].links[router.external.interface] = desired.namespaces[router.ns].links[
        router.external.interface]
    with pytest.raises(ForeignObjectError, match=f"link {up} in the namespace natns runs in"):
        plan_up(desired, actual, stand_in)


def test_a_pair_made_again_gets_its_routes_back(seed):
    """Found by the crash tests: `down` killed after deleting the internet namespace, whose
    teardown the kernel finishes later. `up` saw the router's eth0 still there (its peer
    gone) and its default route with it, so it deleted eth0 to make the pair again, which
    took the route along, and did not add it back: the next `up` had to."""
    actual = as_observed(seed)
    del actual.namespaces["inet"]
    plan = plan_up(seed, actual, stand_in)
    steps = [(s.action, s.ns, s.target) for s in plan.steps]
    assert ("delete_link", "vm", "eth0") in steps and ("create_veth", "inet", "e-vm") in steps
    assert ("add_route", "vm", "0.0.0.0/0") in steps
    assert steps.index(("delete_link", "vm", "eth0")) < steps.index(("add_route", "vm", "0.0.0.0/0"))
    # A link going for good (not made again) leaves the other routes alone.
    actual = as_observed(seed)
    extra = dataclasses.replace(actual.namespaces["vm"].links["qr-tenant"], name="qr-gone",
                                alias="natns:seed:network gone")
    actual.namespaces["vm"].links["qr-gone"] = extra
    assert "add_route" not in [s.action for s in plan_up(seed, actual, stand_in).steps]
