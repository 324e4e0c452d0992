"""The typed steps (natns/steps.py), without root: their order, their commands, what they run.

`run` is checked against recording stand-ins of the kernel modules it calls,
so each step's effect (which netlink call, which backend method, with what)
is pinned here; the integration tests check the kernel's side.
"""

from __future__ import annotations

import inspect
import json

import pytest

from natns import steps as S
from natns.firewall.ctselect import NatIntent
from natns.state import RouteState

from planning_helpers import StandIn


def _concrete() -> list[type]:
    return [c for _, c in inspect.getmembers(S, inspect.isclass)
            if issubclass(c, S.Step) and c.__module__ == S.__name__ and c.action]


def test_every_kind_of_step_has_one_place_in_the_order_and_its_own_action():
    kinds = _concrete()
    assert sorted(kinds, key=lambda c: c.__name__) == sorted(S.PHASE_ORDER, key=lambda c: c.__name__)
    assert len({c.action for c in kinds}) == len(kinds)
    assert [c.action for c in S.PHASE_ORDER] == [
        "delete_netns", "create_netns", "set_mark", "delete_link", "create_bridge", "create_veth",
        "configure_link", "del_address", "add_address", "del_route", "add_route", "set_sysctl",
        "remove_firewall", "load_firewall", "update_firewall", "flush_conntrack", "forget_conntrack",
        "clear_flush_notes",
    ]


class Ruleset:
    backend = "iptables"

    def text(self):
        return "*nat\nCOMMIT\n"


NFT, IPT = StandIn("nftables"), StandIn("iptables")
R = RouteState("0.0.0.0/0", "198.51.100.1")
NAT = NatIntent(namespace="vm", external_iface="eth0", external_address="198.51.100.2",
                internal=("192.0.2.0/24",), snat=(("192.0.2.0/24", "198.51.100.2"),))
UPDATE = S.UpdateFirewall("vm", NFT, "natns", {"fip_dnat": ((("198.51.100.9", "192.0.2.9"),), ()),
                                                "flush_fip": ((), (("198.51.100.8", ""),))}, reason="mapping")

COMMANDS = [
    (S.DeleteNetns("vm", reason="stale"), "ip netns del vm"),
    (S.CreateNetns("vm", "natns:l:router:vm"), "ip netns add vm && ip -n vm link set lo alias natns:l:router:vm up"),
    (S.SetMark("vm", "natns:l:router:vm"), "ip -n vm link set lo alias natns:l:router:vm up"),
    (S.DeleteLink(None, "nu-l-vm"), "ip link del nu-l-vm"),
    (S.CreateBridge("vm", "qr-t"), "ip -n vm link add qr-t type bridge"),
    (S.CreateVeth("vm", "eth0", "inet", "e-vm"), "ip -n vm link add eth0 type veth peer name e-vm netns inet"),
    (S.CreateVeth("vm", "eth0", None, "nu-l-vm"), "ip -n vm link add eth0 type veth peer name nu-l-vm"),
    (S.ConfigureLink("vm", "tap-t1", alias="natns:l:port t1", master="qr-t", mtu=1400, up=True),
     "ip -n vm link set tap-t1 alias 'natns:l:port t1' master qr-t mtu 1400 up"),
    (S.ConfigureLink("vm", "tap-t1", master=None, up=False), "ip -n vm link set tap-t1 nomaster down"),
    (S.AddAddress("vm", "eth0", "198.51.100.2/24"), "ip -n vm addr add 198.51.100.2/24 dev eth0"),
    (S.DelAddress("inet", "lo", "203.0.113.1/32"), "ip -n inet addr del 203.0.113.1/32 dev lo"),
    (S.AddRoute("vm", R), "ip -n vm route replace default via 198.51.100.1 proto 233"),
    (S.DelRoute("vm", RouteState("192.0.2.0/24", None, "qr-t")), "ip -n vm route del 192.0.2.0/24 dev qr-t proto 233"),
    (S.SetSysctl("vm", "net.ipv4.ip_forward", "1"), "ip netns exec vm sysctl -w net.ipv4.ip_forward=1"),
    (S.SetSysctl(None, "net.ipv4.ip_forward", "0"), "sysctl -w net.ipv4.ip_forward=0"),
    (S.RemoveFirewall("vm", NFT, "natns"), "ip netns exec vm nft delete table ip natns"),
    (S.RemoveFirewall(None, IPT, "natnsup-0123abcd"),
     "iptables-restore --noflush  # delete chains natnsup-0123abcd-*"),
    (S.LoadFirewall("vm", NFT, Ruleset()), "ip netns exec vm nft -f -  # nftables"),
    (S.LoadFirewall("vm", IPT, Ruleset()), "ip netns exec vm iptables-restore --noflush  # iptables"),
    (UPDATE, "ip netns exec vm nft -f -  # add/delete elements: fip_dnat +1 -0, flush_fip +0 -1"),
    (S.FlushConntrack("vm", "fip", "198.51.100.8"),
     "ip netns exec vm conntrack -D --orig-dst 198.51.100.8; ip netns exec vm conntrack -D --reply-dst 198.51.100.8"),
    (S.FlushConntrack("vm", "tcp", "198.51.100.2:8080"),
     "ip netns exec vm conntrack -D -p tcp --orig-dst 198.51.100.2 --dport 8080"),
    (S.ForgetConntrack("vm", NAT, reason="nat"),
     "ip netns exec vm conntrack -D -s 192.0.2.0/24 -q 192.0.2.0/24 (leaving by eth0 not SNATed); "
     "ip netns exec vm conntrack -D -s 192.0.2.0/24 --src-nat (leaving by eth0 SNATed to other than 198.51.100.2); "
     "ip netns exec vm conntrack -D -d 198.51.100.2 --dst-nat (DNATed otherwise than its port forwards say)"),
    (S.ClearFlushNotes(UPDATE, reason="mapping"), "ip netns exec vm nft -f -  # add/delete elements: "
     "fip_dnat +1 -0, flush_fip +0 -1 (the flushes are done: remove their notes)"),
]


@pytest.mark.parametrize("step,command", COMMANDS, ids=lambda x: x.action if isinstance(x, S.Step) else "")
def test_command_is_what_plan_prints(step, command):
    assert step.command() == command
    data = step.to_json()
    assert data == {"action": step.action, "namespace": step.ns, "target": step.target,
                    "reason": step.reason, "command": command}
    json.dumps(data)


def test_the_kinds_of_step_seen_in_the_commands_are_all_of_them():
    assert {type(s) for s, _ in COMMANDS} == set(S.PHASE_ORDER)


def test_targets_and_namespaces():
    assert (S.CreateNetns("vm", "m").ns, S.CreateNetns("vm", "m").target) == (None, "vm")
    assert (S.SetMark("vm", "m").ns, S.SetMark("vm", "m").target) == ("vm", "lo")
    assert S.AddRoute("vm", R).target == "0.0.0.0/0"
    assert S.FlushConntrack("vm", "fip", "198.51.100.8").target == "198.51.100.8"
    clear = S.ClearFlushNotes(UPDATE)
    assert (clear.ns, clear.target, clear.phase) == ("vm", "nftables", len(S.PHASE_ORDER) - 1)
    assert S.ConfigureLink("vm", "x", up=False).options() == {"up": False}
    assert S.ConfigureLink("vm", "x", master=None).options() == {"master": None}
    assert S.ConfigureLink("vm", "x").options() == {}


class Recorder:
    """Stands in for a kernel module: records every call as (function, args, kwargs)."""

    def __init__(self, log: list, module: str):
        self.log, self.module = log, module

    def __getattr__(self, fn):
        def call(*args, **kwargs):
            self.log.append((f"{self.module}.{fn}", args, kwargs))
        return call


class Handles:
    def __init__(self, log):
        self.log = log

    def __getitem__(self, ns):
        return f"h[{ns}]"

    def create_netns(self, ns, mark):
        self.log.append(("create_netns", (ns, mark), {}))
        return f"h[{ns}]"

    def drop(self, ns):
        self.log.append(("drop", (ns,), {}))


class Backend:
    name = "nftables"

    def __init__(self, log):
        self.log = log

    def __getattr__(self, fn):
        def call(*args):
            self.log.append((f"backend.{fn}", args, {}))
        return call


@pytest.fixture
def kernel(monkeypatch):
    log: list = []
    for mod in ("link", "netns", "procs", "route", "sysctl"):
        monkeypatch.setattr(S, mod, Recorder(log, mod))

    class Proc:
        returncode = 1  # nothing matched
        stderr = ""

    def run(ns, argv, check=True):
        log.append(("nsexec.run", (ns, argv), {}))
        return Proc()

    monkeypatch.setattr(S.nsexec, "run", run)
    monkeypatch.setattr(S, "forget_stale", lambda ns, nat: log.append(("forget_stale", (ns, nat), {})))
    return log


def test_run_does_what_apply_did_for_each_kind(kernel):
    log = kernel
    h = Handles(log)
    be = Backend(log)
    rs = object()
    runs = [
        (S.CreateNetns("vm", "M"), [("create_netns", ("vm", "M"), {}),
                                    ("link.configure", ("h[vm]", "lo"), {"alias": "M", "up": True})]),
        (S.DeleteNetns("vm"), [("procs.stop_in_netns", ("vm",), {}), ("drop", ("vm",), {}),
                               ("netns.remove", ("vm",), {})]),
        (S.SetMark("vm", "M"), [("link.configure", ("h[vm]", "lo"), {"alias": "M", "up": True})]),
        (S.CreateBridge("vm", "br"), [("link.create_bridge", ("h[vm]", "br"), {})]),
        (S.CreateVeth("vm", "a", None, "b"), [("link.create_veth", ("h[vm]", "a", None, "b"), {})]),
        (S.ConfigureLink("vm", "a", master=None, up=True),
         [("link.configure", ("h[vm]", "a"), {"alias": None, "master": None, "mtu": None, "up": True})]),
        (S.ConfigureLink("vm", "a", alias="x"),
         [("link.configure", ("h[vm]", "a"), {"alias": "x", "master": False, "mtu": None, "up": None})]),
        (S.DeleteLink(None, "a"), [("link.delete", ("h[None]", "a"), {})]),
        (S.AddAddress("vm", "a", "192.0.2.1/24"), [("link.add_address", ("h[vm]", "a", "192.0.2.1/24"), {})]),
        (S.DelAddress("vm", "a", "192.0.2.1/24"), [("link.del_address", ("h[vm]", "a", "192.0.2.1/24"), {})]),
        (S.AddRoute("vm", R), [("route.add", ("h[vm]", R), {})]),
        (S.DelRoute("vm", R), [("route.delete", ("h[vm]", R), {})]),
        (S.SetSysctl("vm", "k", "1"), [("sysctl.write", ("vm", {"k": "1"}), {})]),
        (S.LoadFirewall("vm", be, rs), [("backend.load", ("vm", rs), {})]),
        (S.UpdateFirewall("vm", be, "natns", {"m": ((), ())}),
         [("backend.update_elements", ("vm", "natns", {"m": ((), ())}), {})]),
        (S.RemoveFirewall(None, be, "natnsup-00"), [("backend.remove", (None, "natnsup-00"), {})]),
        (S.ClearFlushNotes(S.LoadFirewall("vm", be, rs)), [("backend.load", ("vm", rs), {})]),
        (S.FlushConntrack("vm", "fip", "198.51.100.8"),
         [("nsexec.run", ("vm", ["conntrack", "-D", "--orig-dst", "198.51.100.8"]), {}),
          ("nsexec.run", ("vm", ["conntrack", "-D", "--reply-dst", "198.51.100.8"]), {})]),
        (S.FlushConntrack("vm", "udp", "198.51.100.2:53"),
         [("nsexec.run", ("vm", ["conntrack", "-D", "-p", "udp", "--orig-dst", "198.51.100.2", "--dport", "53"]),
           {})]),
        (S.ForgetConntrack("vm", NAT), [("forget_stale", ("vm", NAT), {})]),
    ]
    assert {type(s) for s, _ in runs} == set(S.PHASE_ORDER)
    for step, want in runs:
        log.clear()
        step.run(h)
        assert log == want, step


def test_a_module_sysctl_the_kernel_lacks_is_skipped_any_other_is_an_error(monkeypatch, tmp_path):
    """br_netfilter not loaded: /proc/sys/net/bridge does not exist, and there is nothing to switch off."""
    from natns.kernel import sysctl

    monkeypatch.setattr(sysctl, "call_in", lambda ns, fn: fn())
    monkeypatch.setattr(sysctl, "_path", lambda key: str(tmp_path / "absent" / key))
    sysctl.write("r", {"net.bridge.bridge-nf-call-iptables": "0"})
    with pytest.raises(FileNotFoundError):
        sysctl.write("r", {"net.ipv4.ip_forward": "1"})
    assert sysctl.read("r", ["net.bridge.bridge-nf-call-iptables"]) == {"net.bridge.bridge-nf-call-iptables": None}
