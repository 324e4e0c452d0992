"""The OVN engine's part of the topology schema (issue 12): engine, ovn, gateway_chassis, chassis."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from natns import topology
from natns.errors import TopologyError
from natns.topology.schema import ovn_central_ns

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
OVN = yaml.safe_load((EXAMPLES / "ovn.yaml").read_text())
SEED = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())


def test_issue_example_parses_exactly_as_written():
    t = topology.load(str(EXAMPLES / "ovn.yaml"))
    assert t.engine == "ovn"
    sb = t.ovn.sandbox
    assert str(sb.underlay) == "100.64.0.0/24"
    assert [(c.name, c.gateway, c.ns) for c in sb.chassis] == [
        ("ch1", True, "ch1"), ("ch2", True, "ch2"), ("ch3", False, "ch3")]
    assert t.routers[0].gateway_chassis == ["ch1", "ch2"]
    assert [h.chassis for h in t.networks[0].hosts] == ["ch3", "ch1"]
    assert ovn_central_ns(t) == "ovnseed-ovn"


def test_kernel_is_the_default_engine():
    t = topology.parse(copy.deepcopy(SEED), "seed.yaml")
    assert t.engine == "kernel" and t.ovn is None


def _err(mutate, base=OVN) -> str:
    data = copy.deepcopy(base)
    mutate(data)
    with pytest.raises(TopologyError) as e:
        topology.parse(data, "t.yaml")
    return str(e.value)


def _ok(mutate, base=OVN):
    data = copy.deepcopy(base)
    mutate(data)
    return topology.parse(data, "t.yaml")


def test_unknown_engine():
    assert _err(lambda d: d.update(engine="ovs")).startswith("t.yaml: engine: ")


def test_ovn_section_needs_engine_ovn():
    assert _err(lambda d: d.pop("engine")) == (
        "t.yaml: ovn: is for engine: ovn; add `engine: ovn` or remove this section")


def test_ovn_fields_refused_on_the_kernel_engine():
    def m(d):
        d["networks"][0]["hosts"][0]["chassis"] = "ch1"
    assert _err(m, SEED) == "t.yaml: networks[0].hosts[0].chassis: is for engine: ovn"

    def m2(d):
        d["routers"][0]["gateway_chassis"] = ["ch1"]
    assert _err(m2, SEED) == "t.yaml: routers[0].gateway_chassis: is for engine: ovn"


def test_engine_ovn_needs_ovn_section():
    assert _err(lambda d: d.pop("ovn")).startswith("t.yaml: ovn: required with engine: ovn")


def test_sandbox_or_nb_not_both():
    assert "exactly one of sandbox" in _err(lambda d: d["ovn"].update(nb="tcp:192.0.2.10:6641"))
    assert "exactly one of sandbox" in _err(lambda d: d.update(ovn={}))


def test_nb_address_form():
    def ext(d):
        d["ovn"] = {"nb": "tcp:192.0.2.10:6641"}
    t = _ok(ext)
    assert t.ovn.nb == "tcp:192.0.2.10:6641" and t.ovn.sandbox is None

    def bad(d):
        d["ovn"] = {"nb": "192.0.2.10"}
    assert _err(bad) == "t.yaml: ovn.nb: '192.0.2.10' is not an OVSDB address like tcp:192.0.2.10:6641"


def test_nb_mode_needs_no_chassis_on_hosts_and_names_chassis_freely():
    def m(d):
        d["ovn"] = {"nb": "tcp:192.0.2.10:6641"}
        del d["networks"][0]["hosts"][0]["chassis"]
        d["routers"][0]["gateway_chassis"] = ["gw-a", "gw-b"]
    t = _ok(m)
    assert t.networks[0].hosts[0].chassis is None


def test_host_chassis_must_exist():
    def m(d):
        d["networks"][0]["hosts"][1]["chassis"] = "ch9"
    assert _err(m) == "t.yaml: networks[0].hosts[1].chassis: unknown chassis 'ch9'; chassis are ch1, ch2, ch3"


def test_host_chassis_required_in_sandbox():
    def m(d):
        del d["networks"][0]["hosts"][0]["chassis"]
    assert _err(m).startswith("t.yaml: networks[0].hosts[0].chassis: required with an OVN sandbox")


def test_snat_router_needs_gateway_chassis():
    def m(d):
        del d["routers"][0]["gateway_chassis"]
    assert _err(m) == ("t.yaml: routers[0].gateway_chassis: router 'r1' has SNAT: "
                       "name at least one chassis with gateway: true")


def test_floating_ips_need_gateway_chassis_even_without_snat():
    def m(d):
        del d["routers"][0]["gateway_chassis"]
        d["routers"][0]["snat"] = "off"
    assert "has floating IPs" in _err(m)

    def m2(d):
        del d["routers"][0]["gateway_chassis"]
        d["routers"][0]["snat"] = "off"
        d["floating_ips"] = []
    assert _ok(m2).routers[0].gateway_chassis == []


def test_gateway_chassis_must_be_a_gateway():
    def m(d):
        d["routers"][0]["gateway_chassis"] = ["ch3"]
    assert _err(m) == ("t.yaml: routers[0].gateway_chassis[0]: chassis 'ch3' is not a gateway "
                       "chassis (set gateway: true on it)")


def test_gateway_chassis_unknown_or_twice():
    def m(d):
        d["routers"][0]["gateway_chassis"] = ["ch1", "nope"]
    assert "gateway_chassis[1]: unknown chassis 'nope'" in _err(m)

    def m2(d):
        d["routers"][0]["gateway_chassis"] = ["ch1", "ch1"]
    assert "gateway_chassis[1]: chassis 'ch1' is listed twice" in _err(m2)


def test_ha_needs_a_third_chassis():
    def m(d):
        d["ovn"]["sandbox"]["chassis"] = d["ovn"]["sandbox"]["chassis"][:2]
        for h in d["networks"][0]["hosts"]:
            h["chassis"] = "ch2"
    e = _err(m)
    assert e.startswith("t.yaml: routers[0].gateway_chassis: HA with 2 gateway chassis needs a third chassis")
    assert "BFD needs a peer" in e

    def single(d):
        m(d)
        d["routers"][0]["gateway_chassis"] = ["ch1"]
    assert _ok(single).routers[0].gateway_chassis == ["ch1"]


def test_chassis_names_and_namespaces_unique():
    def dup(d):
        d["ovn"]["sandbox"]["chassis"].append({"name": "ch1"})
    assert _err(dup) == "t.yaml: ovn.sandbox.chassis[3].name: duplicate chassis name 'ch1'"

    def clash(d):
        d["ovn"]["sandbox"]["chassis"][2]["namespace"] = "vm1"
    e = _err(clash)
    assert e.startswith("t.yaml: ")
    assert "namespace 'vm1' is already used by" in e

    def inet(d):
        d["ovn"]["sandbox"]["chassis"][2]["namespace"] = "inet"
    assert _err(inet) == ("t.yaml: ovn.sandbox.chassis[2].namespace: namespace 'inet' is already "
                          "used by internet.namespace")


def test_central_namespace_clash():
    def m(d):
        d["ovn"]["sandbox"]["namespace"] = "inet"
    assert _err(m) == ("t.yaml: ovn.sandbox.namespace: the OVN central namespace 'inet' is already "
                       "used by internet.namespace")


def test_underlay_checks():
    assert _err(lambda d: d["ovn"]["sandbox"].update(underlay="100.64.0.1/24")) == (
        "t.yaml: ovn.sandbox.underlay: '100.64.0.1/24' has host bits set; did you mean 100.64.0.0/24?")
    assert "too few addresses" in _err(lambda d: d["ovn"]["sandbox"].update(underlay="100.64.0.0/30"))
    assert _err(lambda d: d["ovn"]["sandbox"].update(underlay="192.0.2.0/25")) == (
        "t.yaml: ovn.sandbox.underlay: 192.0.2.0/25 overlaps networks[0].cidr (192.0.2.0/24)")


def test_port_forwards_on_ovn_are_checked_as_on_the_kernel_engine():
    def m(d):
        d["port_forwards"] = [{"router": "r1", "protocol": "tcp", "port": 80, "to": "192.0.2.2:80"}]
    _ok(m)

    def bad(d):
        d["port_forwards"] = [{"router": "r1", "protocol": "tcp", "port": 80, "to": "203.0.113.5:80"}]
    assert "port_forwards[0].to" in _err(bad)


def test_unknown_chassis_field():
    def m(d):
        d["ovn"]["sandbox"]["chassis"][0]["gw"] = True
    assert _err(m) == "t.yaml: ovn.sandbox.chassis[0].gw: unknown field"


def test_kernel_engine_error_messages_unchanged_on_ovn():
    def m(d):
        d["networks"][0]["hosts"][1]["address"] = "192.0.2.2"
    assert _err(m) == ("t.yaml: networks[0].hosts[1].address: address 192.0.2.2 is already used "
                       "by networks[0].hosts[0].address")
