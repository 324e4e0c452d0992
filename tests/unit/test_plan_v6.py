"""IPv6 in the pure layers: desired state, plan, steps' commands, rendered rules and the
rtnetlink requests (no root): a lab without IPv6 is untouched by all of it."""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import socket

import pytest
import yaml
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from natns import topology
from natns.desired import routed_via_host
from natns.desired import desired_state
from natns.firewall import get_backend
from natns.kernel import rtnl
from natns.plan import plan_up
from natns.state import ObservedLab, ObservedNs
from natns.steps import AddAddress, AddRoute, CreateNetns, SetSysctl

from planning_helpers import as_observed, stand_in

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
DUAL = yaml.safe_load((EXAMPLES / "dual-stack.yaml").read_text())
V4_EXAMPLES = [p for p in sorted(EXAMPLES.glob("*.yaml")) if p.name != "dual-stack.yaml"
               and "engine: ovn" not in p.read_text()]
DAD = "net.ipv6.conf.default.accept_dad"
FWD6 = "net.ipv6.conf.all.forwarding"


def dual(**changes) -> topology.Topology:
    d = copy.deepcopy(DUAL)
    for k, v in changes.items():
        d["routers"][0][k] = v
    return topology.parse(d, "lab.yaml")


@pytest.mark.parametrize("path", V4_EXAMPLES, ids=lambda p: p.name)
def test_a_lab_without_v6_wants_nothing_of_v6(path):
    desired = desired_state(topology.load(str(path)))
    spaces = list(desired.namespaces.values()) + ([desired.host] if desired.host else [])
    for ns in spaces:
        assert not any(".ipv6." in k for k in ns.sysctls), ns.name
        assert not any(":" in a for ln in ns.links.values() for a in ln.addresses)
        assert not any(":" in r.dst for r in ns.routes)
        if ns.firewall:
            assert not ns.firewall.v6 and not ns.firewall.internal6 and not ns.firewall.ingress6
    plan = plan_up(desired, ObservedLab(desired.lab), stand_in)
    assert all(s.sysctls == () for s in plan.steps if isinstance(s, CreateNetns))


def test_dual_stack_desired_state():
    d = desired_state(dual())
    inet, vm, t1 = d.namespaces["dual-inet"], d.namespaces["dual-vm"], d.namespaces["dual-tenant1"]
    assert inet.links["ext"].addresses == ("198.51.100.1/24", "2001:db8:ff::1/64")
    assert "2001:db8:ffff::114/128" in inet.loopback_addresses
    assert [(r.dst, r.gateway) for r in inet.routes] == [("2001:db8:1::/64", "2001:db8:ff::116")]  # routed
    assert [(r.dst, r.gateway) for r in vm.routes] == [("0.0.0.0/0", "198.51.100.1"), ("::/0", "2001:db8:ff::1")]
    assert vm.sysctls[FWD6] == "1" and vm.sysctls[DAD] == "0"
    assert set(t1.links["eth0"].addresses) == {"192.0.2.2/24", "2001:db8:1::2/64"}
    assert [(r.dst, r.gateway) for r in t1.routes] == [("0.0.0.0/0", "192.0.2.3"), ("::/0", "2001:db8:1::1")]
    fw = vm.firewall
    assert fw.v6 and fw.external_address6 == "2001:db8:ff::116" and fw.snat6 == ()
    assert [(g.protocol, g.to, g.port) for g in fw.ingress6] == [("tcp", "2001:db8:1::2", 80)]


def test_nat66_gives_no_internet_route_and_a_masquerade_rule():
    d = desired_state(dual(snat6="masquerade", ingress=[]))
    assert d.namespaces["dual-inet"].routes == ()
    assert [(r.source, r.out_iface) for r in d.namespaces["dual-vm"].firewall.snat6] == [("2001:db8:1::/64", "eth0")]


def test_v6_only_network_has_no_v4_address_route_or_snat():
    d = copy.deepcopy(DUAL)
    n = d["networks"][0]
    del n["cidr"], n["gateway"], n["hosts"][0]["address"]
    desired = desired_state(topology.parse(d, "lab.yaml"))
    assert desired.namespaces["dual-vm"].links["qr-tenant"].addresses == ("2001:db8:1::1/64",)
    assert [r.dst for r in desired.namespaces["dual-tenant1"].routes] == ["::/0"]
    fw = desired.namespaces["dual-vm"].firewall
    assert fw.snat == () and fw.internal == () and [n.cidr for n in fw.internal6] == ["2001:db8:1::/64"]


def test_plan_from_nothing_sets_accept_dad_at_creation_and_adds_nodad_addresses():
    desired = desired_state(dual())
    plan = plan_up(desired, ObservedLab(desired.lab), stand_in)
    creates = [s for s in plan.steps if isinstance(s, CreateNetns)]
    assert creates and all(s.sysctls == ((DAD, "0"),) for s in creates)
    assert "sysctl -qw net.ipv6.conf.default.accept_dad=0" in creates[0].command()
    assert not any(isinstance(s, SetSysctl) and s.key == DAD for s in plan.steps)  # not twice
    cmds = [s.command() for s in plan.steps]
    assert "ip -n dual-tenant1 addr add 2001:db8:1::2/64 dev eth0 nodad" in cmds
    assert "ip -n dual-tenant1 addr add 192.0.2.2/24 dev eth0" in cmds
    assert "ip -6 -n dual-tenant1 route replace default via 2001:db8:1::1 proto 233" in cmds
    assert "ip -6 -n dual-inet route replace 2001:db8:1::/64 via 2001:db8:ff::116 proto 233" in cmds
    assert plan.steps.index(next(s for s in plan.steps if isinstance(s, AddAddress))) < \
        plan.steps.index(next(s for s in plan.steps if isinstance(s, AddRoute)))


def test_after_a_perfect_up_nothing_is_planned_and_drift_of_v6_is_seen():
    desired = desired_state(dual())
    actual = as_observed(desired)
    assert plan_up(desired, actual, stand_in).empty
    t1 = actual.namespaces["dual-tenant1"]
    t1.routes = tuple(r for r in t1.routes if r.dst != "::/0")
    actual.namespaces["dual-vm"].sysctls[FWD6] = "0"
    cmds = [s.command() for s in plan_up(desired, actual, stand_in).steps]
    assert "ip -6 -n dual-tenant1 route replace default via 2001:db8:1::1 proto 233" in cmds
    assert "ip netns exec dual-vm sysctl -w net.ipv6.conf.all.forwarding=1" in cmds


def test_a_lab_that_drops_v6_removes_its_v6_addresses_and_routes():
    desired = desired_state(dual())
    actual = as_observed(desired)
    d = copy.deepcopy(DUAL)
    del d["internet"]["address6"], d["internet"]["hosts"][1]
    for f in ("address6", "gateway6"):
        del d["routers"][0]["external"][f]
    del d["routers"][0]["ingress"], d["networks"][0]["cidr6"], d["networks"][0]["gateway6"]
    del d["networks"][0]["hosts"][0]["address6"]
    v4 = desired_state(topology.parse(d, "lab.yaml"))
    cmds = [s.command() for s in plan_up(v4, actual, stand_in).steps]
    assert "ip -n dual-tenant1 addr del 2001:db8:1::2/64 dev eth0" in cmds
    assert "ip -6 -n dual-tenant1 route del default via 2001:db8:1::1 proto 233" in cmds
    assert "ip -6 -n dual-inet route del 2001:db8:1::/64 via 2001:db8:ff::116 proto 233" in cmds


# --------------------------------------------------------------------------- uplink: host


def uplink6(snat6="off") -> topology.Topology:
    d = yaml.safe_load((EXAMPLES / "uplink.yaml").read_text())
    d["routers"][0]["snat6"] = snat6
    d["routers"][0]["external"].update(address6="2001:db8:fe::2/64", gateway6="2001:db8:fe::1")
    d["networks"][0].update(cidr6="2001:db8:1::/64", gateway6="2001:db8:1::1")
    d["networks"][0]["hosts"][0]["address6"] = "2001:db8:1::10"
    return topology.parse(d, "lab.yaml")


def _host_plan(desired, host: ObservedNs):
    actual = as_observed(desired)
    actual.host = host
    return plan_up(desired, actual, stand_in)


def test_a_v6_uplink_notes_the_hosts_v6_forwarding_and_routes_the_prefix_to_the_router():
    t = uplink6()
    assert routed_via_host(t) == [("up-vm", "2001:db8:1::/64", "2001:db8:fe::2")]
    desired = desired_state(t)
    host = ObservedNs(name=None, mark=None, role="host", sysctls={"net.ipv4.ip_forward": "0", FWD6: "0"})
    cmds = [s.command() for s in _host_plan(desired, host).steps if s.ns is None]
    alias = desired.host.links["nu-uplink-up-vm"].alias
    assert any(f"alias '{alias} saved:ipv6_forwarding=0 saved:ip_forward=0'" in c for c in cmds), cmds
    assert "sysctl -w net.ipv6.conf.all.forwarding=1" in cmds
    assert "ip -6 route replace 2001:db8:1::/64 via 2001:db8:fe::2 proto 233" in cmds
    assert "ip addr add 2001:db8:fe::1/64 dev nu-uplink-up-vm nodad" in cmds
    assert routed_via_host(uplink6("masquerade")) == []


def _uplink(lab: str, router: str, v6: str | None, v4: str = "0"):
    from natns.state import LinkState

    six = f" saved:ipv6_forwarding={v6}" if v6 is not None else ""
    name = f"nu-{lab}-{router}"
    return name, LinkState(name=name, kind="veth", alias=f"natns:{lab}:uplink {router}{six} saved:ip_forward={v4}")


@pytest.mark.parametrize("others,restored", [((), True), ((("other", "r", "0"),), False), ((("other", "r", None),), True)])
def test_down_restores_v6_forwarding_unless_another_v6_uplink_stays(others, restored):
    from natns.plan import plan_down

    links = dict([_uplink("uplink", "up-vm", "0")] + [_uplink(*o) for o in others])
    host = ObservedNs(name=None, mark=None, role="host", links=links,
                      sysctls={"net.ipv4.ip_forward": "1", FWD6: "1"})
    steps = plan_down("uplink", [], host, backends=[stand_in]).steps
    restore = [s for s in steps if isinstance(s, SetSysctl) and s.key == FWD6]
    assert [(s.value, s.reason) for s in restore] == ([("0", "restore")] if restored else [])


def test_an_uplink_made_before_its_lab_had_v6_gets_the_note_before_forwarding_changes():
    desired = desired_state(uplink6())
    name, ln = _uplink("uplink", "up-vm", None)
    ln = dataclasses.replace(ln, addresses=("198.51.100.1/30",), peer_name=None)
    host = ObservedNs(name=None, mark=None, role="host", links={name: ln},
                      sysctls={"net.ipv4.ip_forward": "1", FWD6: "0"})
    steps = [s for s in _host_plan(desired, host).steps if s.ns is None]
    alias = next(s for s in steps if getattr(s, "alias", None))
    assert "saved:ipv6_forwarding=0 saved:ip_forward=0" in alias.alias
    assert steps.index(alias) < steps.index(next(s for s in steps if isinstance(s, SetSysctl)))


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_v6_rules_are_there_only_for_a_v6_lab_and_drift_names_them(backend):
    be = get_backend(backend)
    fw = desired_state(dual()).namespaces["dual-vm"].firewall
    rs = be.render(fw)
    v4 = be.render(dataclasses.replace(fw, v6=False, internal6=(), ingress6=(), external_address6=None))
    assert rs.key.v6 is not None and v4.key.v6 is None
    assert rs.text().startswith(v4.text().rstrip("\n")) or backend == "iptables"
    text = rs.text()
    for words in ("anti-spoofing6 tenant", "natns ingress tcp 2001:db8:1::2 80", "neighbour discovery",
                  "packet too big"):
        assert words in text, words
    lines = be.describe_drift(v4, rs)
    assert lines and all("ip6" in ln for ln in lines), lines


# --------------------------------------------------------------------------- rtnetlink requests


class Sent:
    """A netlink socket that keeps what is sent and acknowledges it."""

    def __init__(self):
        self.sent: list[bytes] = []

    def setsockopt(self, *a):
        pass

    def bind(self, a):
        pass

    def send(self, data):
        import struct

        self.sent.append(bytes(data))
        n, kind, flags, seq, pid = struct.unpack_from("=LHHLL", data)
        self.ack = struct.pack("=LHHLL", 36, 2, 0, seq, 0) + struct.pack("=i", 0) + bytes(data[:16])
        return len(data)

    def recv(self, n):
        return self.ack


def test_v6_address_and_route_requests_are_ipv6_and_without_dad():
    sock = Sent()
    h = rtnl.Rtnl(sock)
    h.add_addr(7, "2001:db8:1::2", 64)
    h.add_addr(7, "192.0.2.2", 24)
    h.replace_route("::/0", proto=233, gateway="2001:db8:1::1")
    a6, a4 = ifaddrmsg(sock.sent[0]), ifaddrmsg(sock.sent[1])
    a6.decode()
    a4.decode()
    assert (a6["family"], a6["prefixlen"], a6["flags"] & rtnl.IFA_F_NODAD) == (socket.AF_INET6, 64, rtnl.IFA_F_NODAD)
    assert a6.get_attr("IFA_ADDRESS") == "2001:db8:1::2" and a6.get_attr("IFA_LOCAL") is None
    assert (a4["family"], a4["flags"], a4.get_attr("IFA_LOCAL")) == (socket.AF_INET, 0, "192.0.2.2")
    r = rtmsg(sock.sent[2])
    r.decode()
    assert (r["family"], r["dst_len"], r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_DST")) == \
        (socket.AF_INET6, 0, "2001:db8:1::1", None)
