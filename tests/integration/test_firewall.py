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


# ----------------------------------------------------------------------------- plan --check

EXAMPLES = sorted(p for p in (__import__("pathlib").Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
                  if "engine: ovn" not in p.read_text())  # the kernel engine's examples


def _example(path, backend: str, uid: str, tmp_path):
    """`path` with `backend`, under a lab name of this test's own (its namespaces never exist)."""
    import yaml

    data = yaml.safe_load(path.read_text())
    data["backend"] = backend
    data["name"] = f"ck{uid}"
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _check_cli(file) -> "object":
    from click.testing import CliRunner

    from natns.cli import main

    return CliRunner().invoke(main, ["plan", "--check", "--json", str(file)])


def _scratch_left() -> list[str]:
    from natns.kernel import netns

    return [n for n in netns.list_names() if n.startswith("natnsck-")]


@BACKENDS
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_plan_check_passes_on_every_example(example, backend, uid, tmp_path):
    import json

    before = set(_scratch_left())
    res = _check_cli(_example(example, backend, uid, tmp_path))
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] and data["backend"] == backend
    assert data["checks"] and all(c["ok"] and c["error"] is None for c in data["checks"])
    routers = {r["name"] for r in __import__("yaml").safe_load(example.read_text())["routers"]}
    assert {c["namespace"] for c in data["checks"]} >= routers
    assert set(_scratch_left()) <= before, "the scratch namespace was not removed"
    from natns.lab import LOCK_DIR

    # a lab that isn't up keeps no lock file after its check (they would pile up)
    assert not (__import__("pathlib").Path(LOCK_DIR) / f"ck{uid}.lock").exists()


@BACKENDS
def test_plan_check_fails_with_the_checkers_message_on_a_broken_render(backend, uid, tmp_path, monkeypatch):
    """A render that emits a rule the kernel refuses: exit 1, and the checker's own words."""
    import dataclasses
    import json

    from natns.firewall import get_backend
    from natns.firewall.base import Ruleset

    be = get_backend(backend)
    real = type(be).render

    def broken(self, intent):
        rs = real(self, intent)
        if backend == "nftables":
            # a jump to a chain that does not exist: nft parses it, the kernel refuses it
            bad = rs.body.replace('counter masquerade comment "natns snat tenant"',
                                  'counter jump natns_nosuch comment "natns snat tenant"')
            assert bad != rs.body
            return Ruleset(rs.backend, rs.key, lambda: bad)
        rules = tuple((t, c, a + ("--no-such-option",)) if "natns snat tenant" in a else (t, c, a)
                      for t, c, a in rs.key.rules)
        assert rules != rs.key.rules
        return Ruleset(rs.backend, dataclasses.replace(rs.key, rules=rules))

    monkeypatch.setattr(type(be), "render", broken)
    before = set(_scratch_left())
    res = _check_cli(_example(EXAMPLES[[p.stem for p in EXAMPLES].index("seed")], backend, uid, tmp_path))
    assert res.exit_code == 1, res.output
    data = json.loads(res.output)
    assert not data["ok"]
    (vm,) = [c for c in data["checks"] if c["namespace"] == "vm"]
    assert not vm["ok"]
    assert ("natns_nosuch" in vm["error"] or "No such file" in vm["error"]) if backend == "nftables" \
        else "no-such-option" in vm["error"]
    assert set(_scratch_left()) <= before


@BACKENDS
def test_check_in_a_namespace_with_rules_changes_nothing(scratch_ns, backend):
    """The checker runs where natns's rules (and someone else's) already are: nothing changes."""
    ns = scratch_ns("fw")
    be = firewall.get_backend(backend)
    if backend == "nftables":
        nsexec.run(ns, ["nft", "-f", "-"], input=FOREIGN_NFT)
    else:
        nsexec.run(ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", *FOREIGN_IPT])
    be.load(ns, be.render(intent(ns, LAN)))

    def dump() -> str:
        out = nsexec.run(ns, ["nft", "list", "ruleset"]).stdout
        return out + "\n".join(ipt_nat(ns))

    before = dump()
    assert be.check(ns, be.render(intent(ns, LAN, DMZ, HOST))) is None
    assert dump() == before
    assert be.observe(ns) == be.render(intent(ns, LAN))
