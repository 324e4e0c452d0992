"""Corpus: a Neutron legacy router (L3 agent, iptables), as neutron-l3-agent writes it.

The qrouter namespace has the internal port qr-… (192.0.2.1/24, the tenant network) and the
gateway port qg-… (198.51.100.2/24, plus the floating IP 198.51.100.20/32 the agent adds to
it) for a VM 192.0.2.2 with that floating IP. The rules, from openstack/neutron:

* neutron/agent/linux/iptables_manager.py: every chain wrapped as ``neutron-l3-agent-NAME``
  and jumped to from the builtin chain; ``neutron-filter-top`` (with ``-local``) and
  ``neutron-postrouting-bottom``, whose rule ("Perform source NAT on outgoing traffic.")
  jumps to ``-snat``, which jumps to ``-float-snat`` first; ``--random-fully`` on every SNAT
  when iptables supports it (the agent's default);
* neutron/agent/l3/router_info.py: floating_forward_rules (PREROUTING and OUTPUT ``-d FIP/32
  -j DNAT --to-destination FIXED``, float-snat ``-s FIXED/32 -j SNAT --to-source FIP``),
  external_gateway_nat_snat_rules (``-o qg-… -j SNAT --to-source GW``),
  external_gateway_nat_fip_rules (``! -i qg-… ! -o qg-… -m conntrack ! --ctstate DNAT -j
  ACCEPT`` in POSTROUTING, ``-m mark ! --mark 0x2/0xffff -m conntrack --ctstate DNAT -j SNAT
  --to-source GW``), external_gateway_mangle_rules (``-i qg-… -j MARK --set-xmark
  0x2/0xffff`` in mangle ``-mark``), the metadata proxy's REDIRECT and INPUT rules.

The marks (``-m mark``, ``-m connmark``) are not evaluated by doctor (docs/explain.md): here
they never decide the flows checked, so doctor must still say healthy.
"""

from __future__ import annotations

import pytest

from . import builder as B
from .builder import FAR, LAN, WAN

pytestmark = pytest.mark.root

QR, QG = "qr-5c0e1a7b-3d", "qg-9b4d2f60-1e"
FIP = "198.51.100.20"

L3_AGENT_RULES = f"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-INPUT - [0:0]
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-l3-agent-POSTROUTING - [0:0]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-float-snat - [0:0]
:neutron-l3-agent-floatingip - [0:0]
:neutron-l3-agent-mark - [0:0]
:neutron-l3-agent-scope - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A INPUT -j neutron-l3-agent-INPUT
-A FORWARD -j neutron-l3-agent-FORWARD
-A OUTPUT -j neutron-l3-agent-OUTPUT
-A POSTROUTING -j neutron-l3-agent-POSTROUTING
-A neutron-l3-agent-FORWARD -s {LAN}/32 -j neutron-l3-agent-float-snat
-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-mark
-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-scope
-A neutron-l3-agent-PREROUTING -m connmark ! --mark 0x0/0xffff0000 -j CONNMARK --restore-mark --nfmask 0xffff0000 --ctmask 0xffff0000
-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-floatingip
-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff
-A neutron-l3-agent-mark -i {QG} -j MARK --set-xmark 0x2/0xffff
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-l3-agent-POSTROUTING - [0:0]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-float-snat - [0:0]
:neutron-l3-agent-snat - [0:0]
:neutron-postrouting-bottom - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A OUTPUT -j neutron-l3-agent-OUTPUT
-A POSTROUTING -j neutron-l3-agent-POSTROUTING
-A POSTROUTING -j neutron-postrouting-bottom
-A neutron-l3-agent-OUTPUT -d {FIP}/32 -j DNAT --to-destination {LAN}
-A neutron-l3-agent-POSTROUTING ! -i {QG} ! -o {QG} -m conntrack ! --ctstate DNAT -j ACCEPT
-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697
-A neutron-l3-agent-PREROUTING -d {FIP}/32 -j DNAT --to-destination {LAN}
-A neutron-l3-agent-float-snat -s {LAN}/32 -j SNAT --to-source {FIP} --random-fully
-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat
-A neutron-l3-agent-snat -o {QG} -j SNAT --to-source {WAN} --random-fully
-A neutron-l3-agent-snat -m mark ! --mark 0x2/0xffff -m conntrack --ctstate DNAT -j SNAT --to-source {WAN} --random-fully
-A neutron-postrouting-bottom -m comment --comment "Perform source NAT on outgoing traffic." -j neutron-l3-agent-snat
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:neutron-filter-top - [0:0]
:neutron-l3-agent-FORWARD - [0:0]
:neutron-l3-agent-INPUT - [0:0]
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-l3-agent-local - [0:0]
:neutron-l3-agent-scope - [0:0]
-A INPUT -j neutron-l3-agent-INPUT
-A FORWARD -j neutron-filter-top
-A FORWARD -j neutron-l3-agent-FORWARD
-A OUTPUT -j neutron-filter-top
-A OUTPUT -j neutron-l3-agent-OUTPUT
-A neutron-filter-top -j neutron-l3-agent-local
-A neutron-l3-agent-FORWARD -j neutron-l3-agent-scope
-A neutron-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT
-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP
COMMIT
"""


def _fip_on_qg(net: B.Net) -> None:
    net.x(net.router, "ip", "addr", "add", f"{FIP}/32", "dev", QG)  # the agent puts the FIP on qg


shared, net = B.fixtures(lambda n: n.ipt(L3_AGENT_RULES), prepare=_fip_on_qg, lan_if=QR, wan_if=QG,
                         router_name="qrouter")


def test_vm_reaches_out_through_its_floating_ip_and_is_reached_on_it(net):
    r = B.assert_healthy(net, net.lan, FAR)
    assert [(n.kind, n.before, n.after) for n in r.nat] == [("snat", LAN, FIP)]
    assert "--random-fully" in r.nat[0].rule
    r = B.assert_working(net, net.far, FIP, to=net.lan)
    assert [(n.kind, n.before, n.after) for n in r.nat] == [("dnat", FIP, LAN)]


def test_trace_follows_the_random_fully_snat_out_and_back(net):
    B.assert_traced_there_and_back(net, net.lan, FAR)


def test_snat_chain_emptied_is_no_snat(net):
    """A failed agent sync left neutron-l3-agent-snat (and float-snat) empty."""
    net.x(net.router, "iptables", "-t", "nat", "-F", "neutron-l3-agent-snat")
    net.x(net.router, "iptables", "-t", "nat", "-F", "neutron-l3-agent-float-snat")
    f = B.assert_first_error_then_fix(net, net.lan, FAR, "no-snat", says="no source NAT")
    assert f.fix == [f"ip netns exec {net.router} iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -o {QG} "
                     f"-j MASQUERADE"]


@pytest.mark.parametrize("src", ["lan", "far"])
def test_forwarding_off_in_the_qrouter(net, src):
    net.x(net.router, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    ns, dst = (net.lan, FAR) if src == "lan" else (net.far, FIP)
    f = B.assert_first_error_then_fix(net, ns, dst, "ip-forward-off", says="IP forwarding is off")
    assert f.fix == [f"ip netns exec {net.router} sysctl -w net.ipv4.ip_forward=1"]
