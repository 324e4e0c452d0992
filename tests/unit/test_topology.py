"""The topology model: what it accepts, and the one-line errors for what it doesn't."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from natns import topology
from natns.errors import TopologyError

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SEED = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())


def test_seed_example_accepted_exactly_as_written():
    t = topology.load(str(EXAMPLES / "seed.yaml"))
    assert t.name == "seed" and t.backend == "nftables"
    assert str(t.routers[0].external.address) == "198.51.100.116/24"
    assert t.routers[0].snat == "masquerade"
    assert t.networks[0].hosts[0].namespace == "tenant1"
    assert t.namespaces() == ["inet", "vm", "tenant1"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(path):
    topology.load(str(path))


def _err(mutate) -> TopologyError:
    data = copy.deepcopy(SEED)
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
        obj[path[-1]] = value
    return mutate


CASES = [
    # (mutation, field path, words the problem must contain)
    (_set(["networks", 0, "cidr"], "192.0.2.0/33"), "networks[0].cidr", "not a CIDR"),
    (_set(["networks", 0, "cidr"], "192.0.2.1/24"), "networks[0].cidr", "host bits"),
    (_set(["routers", 0, "external", "address"], "198.51.100.300/24"), "routers[0].external.address", "not an address"),
    (_set(["networks", 0, "gateway"], "192.0.3.3"), "networks[0].gateway", "outside 192.0.2.0/24"),
    (_set(["networks", 0, "hosts", 0, "address"], "192.0.3.3"), "networks[0].hosts[0].address", "outside"),
    (_set(["networks", 0, "hosts", 0, "address"], "192.0.2.3"), "networks[0].hosts[0].address", "already used"),
    (_set(["networks", 0, "router"], "nope"), "networks[0].router", "unknown router 'nope'"),
    (_set(["routers", 0, "external", "interface"], "eth0-far-too-long"), "routers[0].external.interface", "at most 15"),
    (_set(["networks", 0, "interface"], "qr-0123456789abc"), "networks[0].interface", "at most 15"),
    (_set(["routers", 0, "snat"], "198.51.100.5"), "routers[0].snat", "not an address of this router"),
    (_set(["routers", 0, "snat"], "bogus"), "routers[0].snat", "masquerade"),
    (_set(["routers", 0, "colour"], "red"), "routers[0].colour", "unknown field"),
    (_set(["colour"], "red"), "colour", "unknown field"),
    (_set(["backend"], "pf"), "backend", "nftables"),
    (lambda d: d["routers"].append(copy.deepcopy(d["routers"][0])), "routers[1].name", "duplicate router"),
    (lambda d: d["networks"].append(copy.deepcopy(d["networks"][0])), "networks[1].name", "duplicate network"),
    (lambda d: d["networks"][0]["hosts"].append({"namespace": "vm", "address": "192.0.2.9"}),
     "networks[0].hosts[1].namespace", "already used"),
    (_set(["networks", 0, "hosts", 0, "namespace"], "a;rm -rf /"), "networks[0].hosts[0].namespace", "only letters"),
    (_set(["networks", 0, "hosts", 0, "address"], 5), "networks[0].hosts[0].address", "must be a string"),
    (_set(["internet", "hosts"], ["2001:db8::1"]), "internet.hosts[0]", "IPv6"),
    (_set(["routers", 0, "external", "gateway"], "198.51.100.9"), "routers[0].external.gateway", "not the internet"),
    (_set(["routers", 0, "external", "address"], "203.0.113.5/24"), "routers[0].external.address", "not on the internet"),
    (lambda d: d.pop("internet"), "routers[0].external.uplink", "no internet section"),
    (lambda d: d["routers"][0]["external"].pop("address"), "routers[0].external.address", "missing"),
    (_set(["name"], "bad name"), "name", "letters"),
]


@pytest.mark.parametrize("mutate,path,words", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_validation_error_names_file_field_and_problem(mutate, path, words):
    e = _err(mutate)
    assert e.path == path
    assert words in e.problem


def test_yaml_syntax_error_is_one_line():
    with pytest.raises(TopologyError) as info:
        topology.loads("name: [unclosed", "x.yaml")
    assert str(info.value).startswith("x.yaml: line ")
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(TopologyError, match="cannot read"):
        topology.load("/nonexistent/lab.yaml")


def test_same_cidr_behind_different_routers_is_allowed():
    d = copy.deepcopy(SEED)
    d["routers"].append({"name": "vm2", "external": {"address": "198.51.100.117/24"}})
    d["networks"].append({"name": "tenant-b", "router": "vm2", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                          "hosts": [{"namespace": "tenant2", "address": "192.0.2.2"}]})
    topology.parse(d, "lab.yaml")


def test_same_cidr_behind_one_router_is_refused():
    d = copy.deepcopy(SEED)
    d["networks"].append({"name": "tenant-b", "router": "vm", "cidr": "192.0.2.0/25", "gateway": "192.0.2.1"})
    with pytest.raises(TopologyError, match="overlaps"):
        topology.parse(d, "lab.yaml")


def test_long_network_name_gets_a_short_bridge_name():
    d = copy.deepcopy(SEED)
    d["networks"][0]["name"] = "a-rather-long-network-name"
    t = topology.parse(d, "lab.yaml")
    br = t.networks[0].router_interface
    assert br.startswith("qr-") and len(br) <= 15


MAPPED = {
    **copy.deepcopy(SEED),
    "floating_ips": [{"router": "vm", "address": "198.51.100.50", "host": "192.0.2.2"}],
    "port_forwards": [{"router": "vm", "protocol": "tcp", "port": 8080, "to": "192.0.2.2:80"},
                      {"router": "vm", "protocol": "tcp", "port": "9000-9010", "to": "192.0.2.2"}],
}


def _merr(mutate) -> TopologyError:
    data = copy.deepcopy(MAPPED)
    mutate(data)
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "lab.yaml")
    return info.value


MAPPING_CASES = [
    (_set(["floating_ips", 0, "address"], "203.0.113.50"), "floating_ips[0].address", "external network"),
    (_set(["floating_ips", 0, "address"], "198.51.100.116"), "floating_ips[0].address", "own external address"),
    (_set(["floating_ips", 0, "address"], "198.51.100.1"), "floating_ips[0].address", "already used"),
    (lambda d: d["floating_ips"].append({"router": "vm", "address": "198.51.100.50", "host": "192.0.2.9"}),
     "floating_ips[1].address", "already used"),
    (lambda d: d["floating_ips"].append({"router": "vm", "address": "198.51.100.51", "host": "192.0.2.2"}),
     "floating_ips[1].host", "already has a floating IP"),
    (_set(["floating_ips", 0, "host"], "203.0.113.9"), "floating_ips[0].host", "not on a network behind"),
    (_set(["floating_ips", 0, "host"], "192.0.2.3"), "floating_ips[0].host", "gateway"),
    (_set(["floating_ips", 0, "router"], "nope"), "floating_ips[0].router", "unknown router"),
    (_set(["port_forwards", 0, "port"], 70000), "port_forwards[0].port", "not in 1-65535"),
    (_set(["port_forwards", 0, "port"], "9000-8000"), "port_forwards[0].port", "ends before it starts"),
    (_set(["port_forwards", 0, "port"], "1000-5000"), "port_forwards[0].port", "more than 1024"),
    (_set(["port_forwards", 0, "port"], 9005), "port_forwards[1].port", "clashes with port_forwards[0]"),
    (_set(["port_forwards", 0, "to"], "192.0.2.2:0"), "port_forwards[0].to", "not a port"),
    (_set(["port_forwards", 0, "to"], "203.0.113.5:80"), "port_forwards[0].to", "not on a network behind"),
    (_set(["port_forwards", 0, "protocol"], "sctp"), "port_forwards[0].protocol", "tcp"),
    (_set(["port_forwards", 1, "to"], "192.0.2.2:65530"), "port_forwards[1].to", "past 65535"),
]


@pytest.mark.parametrize("mutate,path,words", MAPPING_CASES, ids=[c[1] + ":" + c[2] for c in MAPPING_CASES])
def test_mapping_validation(mutate, path, words):
    e = _merr(mutate)
    assert (e.path, words in e.problem) == (path, True), str(e)


def test_mappings_become_firewall_intent_and_addresses():
    from natns.desired import desired_state

    t = topology.parse(copy.deepcopy(MAPPED), "lab.yaml")
    vm = desired_state(t).namespaces["vm"]
    assert vm.links["eth0"].addresses == ("198.51.100.116/24", "198.51.100.50/32")
    fw = vm.firewall
    assert [(f.address, f.host) for f in fw.floating] == [("198.51.100.50", "192.0.2.2")]
    a, b = fw.forwards
    assert a.pairs() == [(8080, 80)]
    assert b.pairs()[:2] == [(9000, 9000), (9001, 9001)] and len(b.pairs()) == 11
    assert fw.isolate and fw.external_iface == "eth0"
    # The same port on udp doesn't clash with tcp.
    d = copy.deepcopy(MAPPED)
    d["port_forwards"].append({"router": "vm", "protocol": "udp", "port": 8080, "to": "192.0.2.2:80"})
    topology.parse(d, "lab.yaml")


# --------------------------------------------------------------------------- mistakes a user makes


SEED_TEXT = (EXAMPLES / "seed.yaml").read_text()


def _loads_err(text: str) -> str:
    with pytest.raises(TopologyError) as info:
        topology.loads(text, "lab.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("lab.yaml: "), msg
    return msg


def test_a_key_written_twice_is_refused_with_both_lines():
    text = "name: a\ninternet:\n  address: 198.51.100.1/24\n  namespace: inet\n  address: 198.51.100.2/24\n"
    assert _loads_err(text) == ("lab.yaml: line 5: not valid YAML: key 'address' appears twice in one mapping "
                                "(lines 3 and 5)")
    # In a flow mapping, in a list item, at the top: the same.
    assert "key 'address' appears twice in one mapping (lines 3 and 3)" in _loads_err(
        "name: a\nrouters:\n- {name: r, external: {address: 198.51.100.2/24, address: 198.51.100.3/24}}\n")
    assert "(lines 1 and 3)" in _loads_err("name: a\nbackend: iptables\nname: b\n")
    # The seed with its router's address written twice: PyYAML alone keeps the last one silently.
    lines = SEED_TEXT.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("address: 198.51.100.116/24"))
    doubled = "\n".join(lines[:at + 1] + [lines[at].replace("116", "117")] + lines[at + 1:]) + "\n"
    assert yaml.safe_load(doubled)["routers"][0]["external"]["address"] == "198.51.100.117/24"
    assert f"(lines {at + 1} and {at + 2})" in _loads_err(doubled)


def test_a_merge_key_may_still_be_overridden():
    text = ("name: a\ninternet: {address: 198.51.100.1/24}\n"
            "base: &ext {address: 198.51.100.2/24, interface: eth0}\n")
    # `<<` merges, then the mapping's own key wins: that is what a merge is for, not a duplicate.
    data = topology.loader.read_yaml(text + "other: {<<: *ext, address: 198.51.100.3/24}\n")
    assert data["other"] == {"address": "198.51.100.3/24", "interface": "eth0"}


@pytest.mark.parametrize("path,typo,right", [
    (["networks", 0, "hosts", 0], "adress", "address"),
    (["routers", 0, "external"], "adress", "address"),
    (["routers", 0, "external"], "gatway", "gateway"),  # optional: no "missing" error to hide it
    (["networks", 0], "cidrr", "cidr"),
    ([], "nmae", "name"),
    (["internet"], "hostss", "hosts"),
])
def test_a_misspelt_key_is_named_with_the_nearest_known_one(path, typo, right):
    def mutate(d):
        obj = d
        for k in path:
            obj = obj[k]
        obj[typo] = obj.pop(right) if right in obj else "198.51.100.1"
    e = _err(mutate)
    assert e.path == ".".join(str(p) for p in path).replace(".0", "[0]") + ("." if path else "") + typo
    assert e.problem == f"unknown field; did you mean {right!r}?"


def test_an_unknown_key_like_no_known_one_is_just_unknown_and_a_missing_one_still_missing():
    e = _err(_set(["routers", 0, "colour"], "red"))
    assert (e.path, e.problem) == ("routers[0].colour", "unknown field")

    def drop_and_add(d):
        del d["networks"][0]["hosts"][0]["address"]
        d["networks"][0]["hosts"][0]["colour"] = "red"
    e = _err(drop_and_add)
    assert (e.path, e.problem) == ("networks[0].hosts[0].address", "required field is missing")


@pytest.mark.parametrize("host,words", [
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("127.1.2.3", "is a loopback address"),
    ("224.0.0.1", "224.0.0.1 is a multicast address"),
    ("239.255.255.250", "is a multicast address"),
    ("0.0.0.0", "is the unspecified address"),
    ("255.255.255.255", "is the limited broadcast address"),
    ("192.0.2.2", "192.0.2.2 is in networks[0] (192.0.2.0/24), a private network of the lab"),
    ("192.0.2.200", "is in networks[0] (192.0.2.0/24)"),
])
def test_an_internet_host_must_be_a_unicast_address_outside_the_lab(host, words):
    e = _err(lambda d: d["internet"].__setitem__("hosts", ["203.0.113.114", host]))
    assert e.path == "internet.hosts[1]" and words in e.problem, str(e)


def test_topology_errors_end_the_cli_with_status_2_and_one_line(tmp_path):
    from click.testing import CliRunner

    from natns.cli import main

    path = tmp_path / "lab.yaml"
    for text, words in [("name: a\nname: b\n", "appears twice"), (SEED_TEXT.replace("address: 192.0.2.2", "adress: 192.0.2.2"),
                        "did you mean 'address'?"), (SEED_TEXT.replace("hosts: [203.0.113.114]", "hosts: [127.0.0.1]"),
                                                     "loopback")]:
        assert text != SEED_TEXT
        path.write_text(text)
        res = CliRunner().invoke(main, ["show", str(path)])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and words in res.output, res.output


@pytest.mark.parametrize("ports, clash", [
    (["10-20", "30-40", "5-35"], "tcp 5-35 clashes with port_forwards[0] (10-20)"),
    (["30-40", "10-20", "15-35"], "tcp 15-35 clashes with port_forwards[0] (30-40)"),
    (["50", "40-45", "46-49", "45-50"], "tcp 45-50 clashes with port_forwards[0] (50-50)"),
    (["1-9", "11-19", "10"], None),
])
def test_a_port_clash_names_the_first_forward_it_overlaps(ports, clash):
    """The overlap check looks only at neighbouring ranges (bisect), and still names the
    earliest entry in the file that the new range overlaps."""
    data = copy.deepcopy(MAPPED)
    data["port_forwards"] = [{"router": "vm", "protocol": "tcp", "port": p, "to": "192.0.2.2"} for p in ports]
    data["port_forwards"].append({"router": "vm", "protocol": "udp", "port": ports[-1], "to": "192.0.2.2"})
    if clash is None:
        topology.parse(data, "lab.yaml")
        return
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "lab.yaml")
    assert str(info.value) == f"lab.yaml: port_forwards[{len(ports) - 1}].port: {clash}"
