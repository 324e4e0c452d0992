"""The topology's IPv6 fields: what they accept, and the one-line errors for what they don't."""

from __future__ import annotations

import copy
import ipaddress
import pathlib

import pytest
import yaml

from natns import topology
from natns.errors import TopologyError

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
DUAL = yaml.safe_load((EXAMPLES / "dual-stack.yaml").read_text())
SEED = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())


def test_dual_stack_example_accepted_as_written():
    t = topology.load(str(EXAMPLES / "dual-stack.yaml"))
    i, r, n = t.internet, t.routers[0], t.networks[0]
    assert str(i.address6) == "2001:db8:ff::1/64"
    assert i.hosts == [ipaddress.ip_address("203.0.113.114"), ipaddress.ip_address("2001:db8:ffff::114")]
    assert str(r.external.address6) == "2001:db8:ff::116/64" and str(r.external.gateway6) == "2001:db8:ff::1"
    assert r.snat6 == "off"  # YAML's bare `off` is false: read back as "off"
    assert [(str(g.to), g.protocol, g.port) for g in r.ingress] == [("2001:db8:1::2", "tcp", (80, 80))]
    assert str(n.cidr6) == "2001:db8:1::/64" and str(n.gateway6) == "2001:db8:1::1"
    assert str(n.hosts[0].address6) == "2001:db8:1::2"
    assert t.has_v6


def test_a_lab_without_v6_fields_has_no_v6():
    t = topology.load(str(EXAMPLES / "seed.yaml"))
    assert not t.has_v6 and t.routers[0].snat6 == "off" and t.routers[0].ingress == []


def test_snat6_defaults_to_off_and_takes_masquerade():
    d = copy.deepcopy(DUAL)
    del d["routers"][0]["snat6"]
    assert topology.parse(d, "lab.yaml").routers[0].snat6 == "off"
    d["routers"][0]["snat6"] = "masquerade"
    del d["routers"][0]["ingress"]
    assert topology.parse(d, "lab.yaml").routers[0].snat6 == "masquerade"


def _v6_only() -> dict:
    d = copy.deepcopy(DUAL)
    n = d["networks"][0]
    del n["cidr"], n["gateway"]
    del n["hosts"][0]["address"]
    return d


def test_a_v6_only_network_is_accepted():
    t = topology.parse(_v6_only(), "lab.yaml")
    n = t.networks[0]
    assert n.cidr is None and n.gateway is None and n.hosts[0].address is None
    assert str(n.hosts[0].address6) == "2001:db8:1::2"


def test_a_v6_only_host_on_a_dual_stack_network_is_accepted():
    d = copy.deepcopy(DUAL)
    d["networks"][0]["hosts"].append({"namespace": "dual-t2", "address6": "2001:db8:1::3"})
    assert topology.parse(d, "lab.yaml").networks[0].hosts[1].address is None


def test_any_v6_prefix_is_taken_not_only_documentation_ones():
    d = copy.deepcopy(DUAL)
    d["networks"][0].update(cidr6="fd00:1::/64", gateway6="fd00:1::1")
    d["networks"][0]["hosts"][0]["address6"] = "fd00:1::2"
    d["routers"][0]["ingress"][0]["to"] = "fd00:1::2"
    topology.parse(d, "lab.yaml")


def _err(base, mutate) -> TopologyError:
    data = copy.deepcopy(base)
    mutate(data)
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "lab.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("lab.yaml: ")
    return info.value


def _set(path, value):
    def mutate(d):
        obj = d
        for key in path[:-1]:
            obj = obj[key]
        if value is _DEL:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return mutate


_DEL = object()
R, N, H, I = ["routers", 0], ["networks", 0], ["networks", 0, "hosts", 0], ["internet"]
EXT = R + ["external"]

CASES = [
    # field types
    (_set(I + ["address6"], "198.51.100.1/24"), "internet.address6", "is IPv4; write it in address"),
    (_set(I + ["address6"], "2001:db8:ff::1"), "internet.address6", "prefix length"),
    (_set(I + ["address6"], "2001:db8:ff::/64"), "internet.address6", "subnet-router anycast"),
    (_set(I + ["address6"], "2001:db8:ff::1/127"), "internet.address6", "no room"),
    (_set(I + ["address"], "2001:db8:ff::1/64"), "internet.address", "is IPv6; write it in address6"),
    (_set(EXT + ["gateway6"], "198.51.100.1"), "routers[0].external.gateway6", "is IPv4"),
    (_set(N + ["cidr6"], "2001:db8:1::1/64"), "networks[0].cidr6", "host bits"),
    (_set(N + ["cidr6"], "2001:db8:1::/127"), "networks[0].cidr6", "too small"),
    (_set(N + ["cidr6"], "192.0.2.0/24"), "networks[0].cidr6", "is IPv4; write it in cidr"),
    (_set(N + ["cidr"], "2001:db8:1::/64"), "networks[0].cidr", "is IPv6; write it in cidr6"),
    (_set(H + ["address6"], "192.0.2.2"), "networks[0].hosts[0].address6", "is IPv4"),
    (_set(H + ["address"], "2001:db8:1::2"), "networks[0].hosts[0].address", "write it in address6"),
    (_set(R + ["snat6"], "2001:db8:ff::116"), "routers[0].snat6", "off (routed"),
    (_set(R + ["ingress", 0, "to"], "192.0.2.2"), "routers[0].ingress[0].to", "is IPv4"),
    (_set(R + ["ingress", 0, "protocol"], "icmp"), "routers[0].ingress[0].protocol", "tcp"),
    (_set(R + ["ingress", 0, "port"], 70000), "routers[0].ingress[0].port", "1-65535"),
    (_set(R + ["ingress", 0, "colour"], "red"), "routers[0].ingress[0].colour", "unknown field"),
    # internet
    (_set(I + ["hosts"], ["2001:db8:ff::1"]), "internet.hosts[0]", "already used by internet.address6"),
    (_set(I + ["hosts"], ["2001:db8:ff::9"]), "internet.hosts[0]", "off it"),
    (_set(I + ["hosts"], ["::1"]), "internet.hosts[0]", "loopback"),
    (_set(I + ["hosts"], ["fe80::1"]), "internet.hosts[0]", "link-local"),
    (_set(I + ["hosts"], ["ff02::1"]), "internet.hosts[0]", "multicast"),
    (_set(I + ["hosts"], ["::ffff:203.0.113.5"]), "internet.hosts[0]", "IPv4-mapped"),
    (_set(I + ["hosts"], ["2001:db8:1::9"]), "internet.hosts[0]", "private network"),
    (_set(I + ["hosts"], ["2001:db8:aa::1", "2001:db8:aa::1"]), "internet.hosts[1]", "already used"),
    (lambda d: (d["internet"].pop("address6"), d["internet"]["hosts"].pop()),
     "routers[0].external.address6", "internet has no address6"),
    (_set(I + ["address6"], _DEL), "internet.hosts[1]", "the internet has no address6"),
    # router
    (_set(EXT + ["address6"], "2001:db8:fe::116/64"), "routers[0].external.address6", "not on the internet's"),
    (lambda d: d["routers"].append({"name": "vm2", "external": {"address": "198.51.100.117/24",
                                                                 "address6": "2001:db8:ff::116/64"}}),
     "routers[1].external.address6", "already used by routers[0].external.address6"),
    (_set(EXT + ["gateway6"], "2001:db8:ff::9"), "routers[0].external.gateway6", "not the internet's"),
    (_set(EXT + ["gateway6"], "2001:db8:ff::116"), "routers[0].external.gateway6", "own address"),
    (_set(EXT + ["gateway6"], "2001:db8:fe::1"), "routers[0].external.gateway6", "is not on"),
    (lambda d: (d["routers"][0]["external"].pop("address6"), d["networks"][0].pop("cidr6"),
                d["networks"][0].pop("gateway6"), d["networks"][0]["hosts"][0].pop("address6"),
                d["routers"][0].pop("ingress")),
     "routers[0].external.gateway6", "needs external.address6"),
    (lambda d: (d["routers"][0]["external"].pop("address6"), d["routers"][0]["external"].pop("gateway6"),
                d["routers"][0].update(snat6="masquerade")),
     "routers[0].snat6", "needs external.address6"),
    (lambda d: d["routers"][0]["external"].update(uplink="host", gateway="198.51.100.1", gateway6=None)
     or d["routers"][0]["external"].pop("gateway6"), "routers[0].external.gateway6", "required with uplink: host"),
    (_set(EXT + ["mtu"], 1200), "routers[0].external.mtu", "below 1280"),
    (_set(N + ["mtu"], 1000), "networks[0].mtu", "below 1280"),
    # networks
    (_set(N + ["gateway6"], _DEL), "networks[0].gateway6", "required with cidr6"),
    (_set(N + ["gateway6"], "2001:db8:2::1"), "networks[0].gateway6", "outside 2001:db8:1::/64"),
    (_set(N + ["gateway6"], "2001:db8:1::"), "networks[0].gateway6", "subnet-router anycast"),
    (_set(N + ["cidr6"], "2001:db8:ff::/64"), "networks[0].cidr6", "overlaps the external network"),
    (lambda d: (d["networks"][0].pop("cidr"), d["networks"][0].pop("gateway"), d["networks"][0].pop("cidr6")),
     "networks[0].cidr", "required field is missing"),
    (lambda d: (d["networks"][0].pop("cidr"),), "networks[0].gateway", "needs cidr"),
    (lambda d: d["networks"].append({"name": "t2", "router": "dual-vm", "cidr6": "2001:db8:1:0:8000::/65",
                                     "gateway6": "2001:db8:1:0:8000::1"}), "networks[1].cidr6", "overlaps networks[0]"),
    # hosts
    (_set(H + ["address6"], "2001:db8:2::2"), "networks[0].hosts[0].address6", "outside 2001:db8:1::/64"),
    (_set(H + ["address6"], "2001:db8:1::1"), "networks[0].hosts[0].address6", "already used by networks[0].gateway6"),
    (_set(H + ["address6"], "2001:db8:1::"), "networks[0].hosts[0].address6", "anycast"),
    (lambda d: d["networks"][0]["hosts"].append({"namespace": "t2", "address": "192.0.2.9",
                                                 "address6": "2001:db8:1::2"}),
     "networks[0].hosts[1].address6", "already used by networks[0].hosts[0].address6"),
    (lambda d: d["networks"][0]["hosts"].append({"namespace": "t2"}), "networks[0].hosts[1].address", "missing"),
    # ingress
    (_set(R + ["ingress", 0, "to"], "2001:db8:1::9"), "routers[0].ingress[0].to", "not the address6 of a host"),
    (lambda d: d["routers"][0]["ingress"].append({"to": "2001:db8:1::2", "protocol": "tcp", "port": "70-90"}),
     "routers[0].ingress[1].port", "overlaps routers[0].ingress[0]"),
    (_set(R + ["snat6"], "masquerade"), "routers[0].ingress", "snat6: masquerade"),
]


@pytest.mark.parametrize("mutate,path,words", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_v6_validation_error_names_file_field_and_problem(mutate, path, words):
    e = _err(DUAL, mutate)
    assert e.path == path, str(e)
    assert words in e.problem, str(e)


def test_v6_host_needs_a_network_with_cidr6():
    e = _err(SEED, _set(["networks", 0, "hosts", 0, "address6"], "2001:db8:1::2"))
    assert e.path == "networks[0].hosts[0].address6" and "needs a network with cidr6" in e.problem


def test_v4_address_on_a_v6_only_network_is_refused():
    d = _v6_only()
    d["networks"][0]["hosts"][0]["address"] = "192.0.2.2"
    with pytest.raises(TopologyError, match=r"networks\[0\].hosts\[0\].address: .*IPv6-only"):
        topology.parse(d, "lab.yaml")


def test_v6_network_behind_a_router_without_v6_is_refused():
    d = copy.deepcopy(SEED)
    d["networks"][0].update(cidr6="2001:db8:1::/64", gateway6="2001:db8:1::1")
    with pytest.raises(TopologyError, match=r"networks\[0\].cidr6: .*no external.address6"):
        topology.parse(d, "lab.yaml")


def _second_router(d: dict, snat6: str, snat6_first: str = "off") -> dict:
    d["routers"][0]["snat6"] = snat6_first
    d["routers"][0].pop("ingress")
    d["routers"].append({"name": "vm2", "snat6": snat6, "external": {
        "address": "198.51.100.117/24", "address6": "2001:db8:ff::117/64"}})
    d["networks"].append({"name": "t2", "router": "vm2", "cidr6": "2001:db8:1::/64", "gateway6": "2001:db8:1::1",
                          "hosts": [{"namespace": "t2", "address6": "2001:db8:1::5"}]})
    return d


def test_one_routed_prefix_behind_two_routers_is_refused():
    with pytest.raises(TopologyError, match=r"networks\[1\].cidr6: .*routed by router 'dual-vm'"):
        topology.parse(_second_router(copy.deepcopy(DUAL), "off"), "lab.yaml")


def test_the_same_prefix_behind_nat66_may_repeat():
    topology.parse(_second_router(copy.deepcopy(DUAL), "masquerade", "masquerade"), "lab.yaml")


def test_uplink_host_with_v6():
    d = copy.deepcopy(DUAL)
    del d["internet"]
    d["routers"][0]["external"].update(uplink="host", address="198.51.100.2/30", gateway="198.51.100.1",
                                       address6="2001:db8:ff::2/64", gateway6="2001:db8:ff::1")
    t = topology.parse(d, "lab.yaml")
    assert str(t.routers[0].external.gateway6) == "2001:db8:ff::1"


def test_v6_with_ovn_is_refused_in_one_line():
    ovn = yaml.safe_load((EXAMPLES / "ovn.yaml").read_text())
    ovn["internet"]["address6"] = "2001:db8:ff::1/64"
    with pytest.raises(TopologyError, match=r"internet.address6: IPv6 is not supported yet with engine: ovn"):
        topology.parse(ovn, "lab.yaml")
