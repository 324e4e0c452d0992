"""The pure part of the OVN NB mapping (natns.engines.ovn.nb): rows from a topology."""

from __future__ import annotations

import pathlib

from natns import topology
from natns.engines.ovn import nb

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ovn.yaml"


def _rows():
    t = topology.load(str(EXAMPLE))
    return t, {(r.table, r.key): r for root in nb.wanted_rows(t) for r in root.walk()}


def test_example_maps_as_neutron_does():
    t, rows = _rows()
    ls = rows[("Logical_Switch", "ls:tenant")]
    assert ls.columns["name"] == "natns-ovnseed-tenant"
    ports = {p.key: p.columns for p in ls.children["ports"]}
    vm1 = ports["lsp:host:vm1"]
    assert vm1["name"] == nb.host_port("ovnseed", "vm1")
    assert vm1["addresses"] == [f"{nb.host_mac('ovnseed', 'vm1')} 192.0.2.2"] == vm1["port_security"]
    assert ports["lsp:rtr:tenant"]["type"] == "router"
    ext = {p.key: p.columns for p in rows[("Logical_Switch", "ls:ext")].children["ports"]}
    assert ext["lsp:localnet"]["type"] == "localnet"
    assert ext["lsp:localnet"]["options"] == {"network_name": nb.PHYSNET}
    assert ext["lsp:gw:r1"]["options"]["nat-addresses"] == "router"
    lr = rows[("Logical_Router", "lr:r1")]
    gw = rows[("Logical_Router_Port", "lrp:gw:r1")]
    assert gw.columns["networks"] == ["198.51.100.116/24"]
    prio = {g.columns["chassis_name"]: g.columns["priority"] for g in gw.children["gateway_chassis"]}
    assert prio["ch1"] > prio["ch2"]  # the first listed is active
    assert rows[("Logical_Router_Port", "lrp:tenant")].columns["networks"] == ["192.0.2.1/24"]
    nat = {(n.columns["type"], n.columns["external_ip"], n.columns["logical_ip"]) for n in lr.children["nat"]}
    assert nat == {("snat", "198.51.100.116", "192.0.2.0/24"),
                   ("dnat_and_snat", "198.51.100.50", "192.0.2.3")}
    assert [(s.columns["ip_prefix"], s.columns["nexthop"]) for s in lr.children["static_routes"]] == [
        ("0.0.0.0/0", "198.51.100.1")]


def test_keys_unique_and_router_children_always_present():
    t = topology.load(str(EXAMPLE))
    keys = [(r.table, r.key) for root in nb.wanted_rows(t) for r in root.walk()]
    assert len(keys) == len(set(keys))
    data = topology.load(str(EXAMPLE)).model_dump(mode="json", by_alias=True)
    data["routers"][0]["snat"] = "off"
    data["floating_ips"] = []
    t2 = topology.parse(data, "x.yaml")
    lr = [r for r in nb.wanted_rows(t2) if r.table == "Logical_Router"][0]
    assert lr.children["nat"] == []  # an explicit empty set (ovn-notes pitfall 5)


def test_masquerade_snats_to_the_router_address():
    data = topology.load(str(EXAMPLE)).model_dump(mode="json", by_alias=True)
    data["routers"][0]["snat"] = "masquerade"
    t = topology.parse(data, "x.yaml")
    lr = [r for r in nb.wanted_rows(t) if r.table == "Logical_Router"][0]
    assert {n.columns["external_ip"] for n in lr.children["nat"] if n.columns["type"] == "snat"} == {"198.51.100.116"}


def test_nbctl_commands_are_argument_lists():
    t = topology.load(str(EXAMPLE))
    cmds = nb.nbctl_commands(nb.wanted_rows(t))
    assert ["ovn-nbctl", "lr-add", "natns-ovnseed-r1"] in cmds
    assert ["ovn-nbctl", "lrp-set-gateway-chassis", "natns-ovnseed-gw-r1", "ch1", "2"] in cmds
    assert ["ovn-nbctl", "lr-nat-add", "natns-ovnseed-r1", "dnat_and_snat", "198.51.100.50", "192.0.2.3"] in cmds
    assert all(isinstance(a, str) for c in cmds for a in c)
