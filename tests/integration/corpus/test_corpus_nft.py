"""Corpus: native nftables, in the idioms people write it.

A `flush ruleset` script (as /etc/nftables.conf is written) with an `inet filter` table: a
`ct state vmap` first, a named interval set of the networks let out, and a port forward
in `table ip nat` (prerouting DNAT of wan0:8080 to the lan's server, `ct status dnat
accept` in forward), masquerade on the way out. The plain router of builder.py.

Each break is how such a ruleset goes wrong by hand; doctor's first error must name it,
and its fix, run as printed, must make real packets get through again.
"""

from __future__ import annotations

import pytest

from . import builder as B
from .builder import FAR, LAN, WAN

pytestmark = pytest.mark.root

RULESET = """flush ruleset

define LAN_IF = "lan0"
define WAN_IF = "wan0"

table inet filter {
	set lan_nets {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.0/24 }
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state vmap { established : accept, related : accept, invalid : drop }
		iif "lo" accept
		ip protocol icmp accept
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state vmap { established : accept, related : accept, invalid : drop }
		ct status dnat accept
		iifname $LAN_IF oifname $WAN_IF ip saddr @lan_nets accept
	}

	chain output {
		type filter hook output priority filter; policy accept;
	}
}

table ip nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname $WAN_IF tcp dport 8080 dnat to 192.0.2.2:80
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname $WAN_IF masquerade
	}
}
"""


shared, net = B.fixtures(lambda n: n.nft(RULESET))


def test_working_out_and_port_forward_in(net):
    B.assert_working(net, net.lan, FAR)
    r = B.assert_working(net, net.far, WAN, "tcp", 8080, to=net.lan)
    assert [(n.kind, n.after, n.port_after) for n in r.nat] == [("dnat", LAN, 80)]


def test_masquerade_lost_is_no_snat(net):
    net.x(net.router, "nft", "flush", "chain", "ip", "nat", "postrouting")
    f = B.assert_first_error_then_fix(net, net.lan, FAR, "no-snat", says="no source NAT")
    assert f.fix[0].split()[4:8] == ["nft", "add", "rule", "ip"]  # into the router's own nat chain
    net.forget()
    B.assert_healthy(net, net.lan, FAR)


def test_lan_network_missing_from_the_named_set_is_the_forward_drop(net):
    net.x(net.router, "nft", "delete", "element", "inet", "filter", "lan_nets", "{ 192.0.2.0/24 }")
    f = B.assert_first_error_then_fix(net, net.lan, FAR, "forward-drop", says="forward hook")
    assert "the drop policy of chain forward in table inet filter" in f.summary


def test_port_forward_without_its_forward_accept_is_the_forward_drop(net):
    listing = net.x(net.router, "nft", "-a", "list", "chain", "inet", "filter", "forward").stdout
    handle = next(ln.split("# handle ")[1] for ln in listing.splitlines() if "ct status dnat accept" in ln)
    net.x(net.router, "nft", "delete", "rule", "inet", "filter", "forward", "handle", handle.strip())
    f = B.assert_first_error_then_fix(net, net.far, WAN, "forward-drop", proto="tcp", port=8080,
                                      says="forward hook")
    assert f.fix == [f"ip netns exec {net.router} nft insert rule inet filter forward ct status dnat accept"]
