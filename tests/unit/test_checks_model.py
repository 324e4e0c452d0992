"""The `checks:` list of a topology: what it accepts, and the one-line errors for what it doesn't."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from natns import topology
from natns.errors import TopologyError

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SEED = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())


def with_checks(*checks) -> dict:
    data = copy.deepcopy(SEED)
    data["checks"] = list(checks)
    return data


def error(*checks) -> str:
    with pytest.raises(TopologyError) as info:
        topology.parse(with_checks(*checks), "lab.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_seed_example_carries_its_two_checks():
    t = topology.load(str(EXAMPLES / "seed.yaml"))
    assert [(c.from_, str(c.to), c.protocol, c.expect, str(c.source) if c.source else None)
            for c in t.checks] == [
        ("tenant1", "203.0.113.114", "icmp", "reachable", "198.51.100.116"),
        ("inet", "192.0.2.2", "icmp", "blocked", None),
    ]
    assert t.checks[0].describe() == "tenant1 -> 203.0.113.114 icmp reachable (source 198.51.100.116)"


def test_defaults_and_ports():
    t = topology.parse(with_checks({"from": "tenant1", "to": "203.0.113.114"},
                                {"from": "vm", "to": "198.51.100.1", "tcp": 443},
                                {"from": "inet", "to": "198.51.100.116", "udp": 53, "expect": "blocked"}))
    a, b, c = t.checks
    assert (a.expect, a.protocol, a.port, a.source) == ("reachable", "icmp", None, None)
    assert (b.protocol, b.port) == ("tcp", 443)
    assert (c.protocol, c.port, c.expect) == ("udp", 53, "blocked")
    assert b.describe() == "vm -> 198.51.100.1 tcp/443 reachable"


def test_a_topology_without_checks_has_none():
    data = copy.deepcopy(SEED)
    data.pop("checks", None)
    assert topology.parse(data).checks == []


@pytest.mark.parametrize("check, expected", [
    ({"from": "nowhere", "to": "192.0.2.2"},
     "lab.yaml: checks[0].from: 'nowhere' is not a namespace of this lab; namespaces are inet, vm, tenant1"),
    ({"from": "a/b", "to": "192.0.2.2"},
     ("lab.yaml: checks[0].from: namespace name 'a/b' may hold only letters, digits, '_', '.', '-' "
      "and must start with a letter or digit")),
    ({"to": "192.0.2.2"}, "lab.yaml: checks[0].from: required field is missing"),
    ({"from": "tenant1"}, "lab.yaml: checks[0].to: required field is missing"),
    ({"from": "tenant1", "to": "192.0.2.300"}, "lab.yaml: checks[0].to: '192.0.2.300' is not an IP address"),
    # a check may go to IPv6 (issue 13), its source of the same family
    ({"from": "tenant1", "to": "2001:db8::1", "source": "198.51.100.116"},
     "lab.yaml: checks[0].source: 198.51.100.116 is IPv4 but the check goes to IPv6 address 2001:db8::1; "
     "the far end sees a source of the same family"),
    ({"from": "tenant1", "to": "2001:db8::zz"}, "lab.yaml: checks[0].to: '2001:db8::zz' is not an IP address"),
    ({"from": "tenant1", "to": "192.0.2.0/24"}, "lab.yaml: checks[0].to: '192.0.2.0/24' is not an IP address"),
    ({"from": "tenant1", "to": "203.0.113.114", "tcp": 0},
     "lab.yaml: checks[0].tcp: tcp port 0 is not in 1-65535"),
    ({"from": "tenant1", "to": "203.0.113.114", "udp": 65536},
     "lab.yaml: checks[0].udp: udp port 65536 is not in 1-65535"),
    ({"from": "tenant1", "to": "203.0.113.114", "tcp": "http"},
     "lab.yaml: checks[0].tcp: tcp must be a port number 1-65535, not 'http'"),
    ({"from": "tenant1", "to": "203.0.113.114", "tcp": True},
     "lab.yaml: checks[0].tcp: tcp must be a port number 1-65535, not True"),
    ({"from": "tenant1", "to": "203.0.113.114", "tcp": 80, "udp": 53},
     "lab.yaml: checks[0].udp: a check probes one of tcp and udp, not both"),
    ({"from": "tenant1", "to": "203.0.113.114", "expect": "maybe"},
     "lab.yaml: checks[0].expect: Input should be 'reachable' or 'blocked'"),
    ({"from": "tenant1", "to": "203.0.113.114", "source": "198.51.100.300"},
     "lab.yaml: checks[0].source: '198.51.100.300' is not an IP address"),
    ({"from": "inet", "to": "192.0.2.2", "expect": "blocked", "source": "198.51.100.1"},
     "lab.yaml: checks[0].source: only a reachable check can name the source the far end sees"),
    ({"from": "tenant1", "to": "203.0.113.114", "icmp": True}, "lab.yaml: checks[0].icmp: unknown field"),
])
def test_invalid_checks_are_named_in_one_line(check, expected):
    assert error(check) == expected


def test_the_failing_check_is_the_one_named():
    msg = error({"from": "tenant1", "to": "203.0.113.114"}, {"from": "tenant1", "to": "203.0.113.114", "udp": 0})
    assert msg.startswith("lab.yaml: checks[1].udp: ")


def test_checks_must_be_a_list_of_mappings():
    data = copy.deepcopy(SEED)
    data["checks"] = "tenant1 -> 203.0.113.114"
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "lab.yaml")
    assert str(info.value).startswith("lab.yaml: checks: ")
