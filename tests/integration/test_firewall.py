"""The firewall backends against the real kernel, in scratch namespaces.

Every test runs once per backend. Nothing here touches the namespace pytest
runs in: every call names a scratch namespace, and only documentation
addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are used.
"""

from __future__ import annotations

import pytest

from natns import firewall
from natns.kernel import nsexec
from natns.state import FirewallIntent, SnatRule

pytestmark = pytest.mark.root

BACKENDS = pytest.mark.parametrize("backend", firewall.BACKENDS)

FOREIGN_NFT = """\
table ip foreign {
	chain post {
		type nat hook postrouting priority srcnat + 10; policy accept;
		oifname "eth9" ip saddr 203.0.113.0/24 counter masquerade comment "not natns"
	}
}
"""
FOREIGN_IPT = ["-s", "203.0.113.0/24", "-j", "MASQUERADE"]


def intent(ns: str, *snat: SnatRule) -> FirewallIntent:
    return FirewallIntent(lab="fwtest", namespace=ns, role="router", snat=tuple(snat))


LAN = SnatRule(network="lan", source="192.0.2.0/24", out_iface="eth0")
DMZ = SnatRule(network="dmz", source="198.51.100.64/26", out_iface="eth0", to="203.0.113.5")
LAN_SNAT = SnatRule(network="lan", source="192.0.2.0/24", out_iface="eth0", to="203.0.113.7")
HOST = SnatRule(network="host", source="192.0.2.9/32", out_iface="wan1", to="203.0.113.9")


def nft_tables(ns: str) -> list[str]:
    return nsexec.run(ns, ["nft", "list", "tables"]).stdout.splitlines()


def ipt_nat(ns: str) -> list[str]:
    """iptables-save -t nat without its timestamp comments."""
    out = nsexec.run(ns, ["iptables-save", "-t", "nat"]).stdout
    return [l for l in out.splitlines() if not l.startswith("#")]


def not_natns(lines: list[str]) -> list[str]:
    return [l for l in lines if "natns" not in l]


@BACKENDS
def test_load_then_observe_is_render(scratch_ns, backend):
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    want = be.render(intent(ns, LAN, DMZ, HOST))

    be.load(ns, want)
    got = be.observe(ns)
    assert got == want
    if backend == "iptables":
        assert got.text() == want.text()

    be.load(ns, want)  # again: same state, nothing duplicated
    assert be.observe(ns) == want
    if backend == "iptables":
        jumps = [l for l in ipt_nat(ns) if l.endswith("-j natns-POSTROUTING")]
        assert jumps == ["-A POSTROUTING -m comment --comment natns -j natns-POSTROUTING"]
        assert "-A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment " \
               '"natns snat lan" -j MASQUERADE' in ipt_nat(ns)
    else:
        assert nft_tables(ns).count("table ip natns") == 1
        text = nsexec.run(ns, ["nft", "list", "table", "ip", "natns"]).stdout
        assert f'comment "natns:fwtest:{ns} rules:' in text
        assert 'oifname "wan1" ip saddr 192.0.2.9 counter packets 0 bytes 0 ' \
               'snat to 203.0.113.9 comment "natns snat host"' in text


@BACKENDS
def test_changed_intent_replaces_rules(scratch_ns, backend):
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    old = be.render(intent(ns, LAN))
    be.load(ns, old)
    assert be.observe(ns) == old

    new = be.render(intent(ns, LAN_SNAT, DMZ))  # masquerade -> snat, one network more
    assert new != old
    be.load(ns, new)
    got = be.observe(ns)
    assert got == new
    rules = [c["rule"] for c in be.counters(ns)]
    assert len(rules) == 2
    assert not any("asquerade" in r.lower() for r in rules)  # the old rule is gone

    empty = be.render(intent(ns))  # no networks: natns's table/chain stays, empty
    be.load(ns, empty)
    assert be.observe(ns) == empty
    assert be.counters(ns) == []


@BACKENDS
def test_drift_is_seen_and_repaired(scratch_ns, backend):
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    want = be.render(intent(ns, LAN))
    be.load(ns, want)

    if backend == "nftables":
        nsexec.run(ns, ["nft", "add", "rule", "ip", "natns", "postrouting",
                        "ip", "saddr", "203.0.113.0/24", "accept"])
    else:
        nsexec.run(ns, ["iptables", "-t", "nat", "-D", "POSTROUTING",
                        "-m", "comment", "--comment", "natns", "-j", "natns-POSTROUTING"])
    drifted = be.observe(ns)
    assert drifted is not None and drifted != want

    be.load(ns, want)
    assert be.observe(ns) == want


@BACKENDS
def test_foreign_rules_survive(scratch_ns, backend):
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    nsexec.run(ns, ["nft", "-f", "-"], input=FOREIGN_NFT)
    nsexec.run(ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", *FOREIGN_IPT])
    foreign_nft = nsexec.run(ns, ["nft", "list", "table", "ip", "foreign"]).stdout
    foreign_ipt = ipt_nat(ns)
    assert "-A POSTROUTING -s 203.0.113.0/24 -j MASQUERADE" in foreign_ipt

    be.load(ns, be.render(intent(ns, LAN, DMZ)))
    be.load(ns, be.render(intent(ns, LAN_SNAT)))
    assert nsexec.run(ns, ["nft", "list", "table", "ip", "foreign"]).stdout == foreign_nft
    assert not_natns(ipt_nat(ns)) == foreign_ipt

    be.remove(ns)
    assert nsexec.run(ns, ["nft", "list", "table", "ip", "foreign"]).stdout == foreign_nft
    assert ipt_nat(ns) == foreign_ipt  # natns's chain and jump gone, the rest untouched
    assert "table ip natns" not in nft_tables(ns)
    assert "table ip foreign" in nft_tables(ns)
    assert be.observe(ns) is None
    be.remove(ns)  # twice is fine


@BACKENDS
def test_fresh_namespace(scratch_ns, backend):
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    assert be.observe(ns) is None
    assert be.counters(ns) == []
    be.remove(ns)
    assert be.observe(ns) is None
    assert "natns" not in "\n".join(nft_tables(ns))


def _veth(ns: str, name: str, peer_ns: str, peer: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})


def _addr_up(ns: str, ifname: str, cidr: str, gateway: str | None = None) -> None:
    from pyroute2 import IPRoute

    addr, plen = cidr.split("/")
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=idx, address=addr, prefixlen=int(plen))
        ipr.link("set", index=idx, state="up")
        if gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


@BACKENDS
@pytest.mark.parametrize("to", [None, "198.51.100.1"], ids=["masquerade", "snat"])
def test_counters_count_translated_packets(scratch_ns, backend, to):
    a, r, b = scratch_ns("a"), scratch_ns("r"), scratch_ns("b")
    _veth(r, "ra", a, "ar")
    _veth(r, "rb", b, "br")
    _addr_up(a, "ar", "192.0.2.2/24", gateway="192.0.2.1")
    _addr_up(r, "ra", "192.0.2.1/24")
    _addr_up(r, "rb", "198.51.100.1/24")
    _addr_up(b, "br", "198.51.100.2/24")  # no route back to 192.0.2.0/24
    nsexec.run(r, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    be = firewall.get_backend(backend)
    lan = SnatRule(network="lan", source="192.0.2.0/24", out_iface="rb", to=to)
    decoy = SnatRule(network="decoy", source="192.0.2.0/24", out_iface="ra")
    be.load(r, be.render(intent(r, lan, decoy)))

    # b can only answer 198.51.100.1, so a reply proves the source was rewritten.
    for _ in range(3):
        if nsexec.run(a, ["ping", "-c1", "-W1", "198.51.100.2"], check=False).returncode == 0:
            break
    else:
        pytest.fail("ping through the NAT gateway failed")

    by_comment = {c["comment"]: c for c in be.counters(r)}
    assert set(by_comment) == {"natns snat lan", "natns snat decoy"}
    assert by_comment["natns snat lan"]["packets"] >= 1
    assert by_comment["natns snat lan"]["bytes"] > 0
    assert by_comment["natns snat decoy"]["packets"] == 0
    assert by_comment["natns snat lan"]["chain"] in ("postrouting", "natns-POSTROUTING")
    assert "192.0.2.0/24" in by_comment["natns snat lan"]["rule"]

    be.remove(r)
    assert be.counters(r) == []
