"""natns's table read raw over nfnetlink gives the very key libnftables' JSON listing gives.

`up`, `plan` and `status` read natns's nftables table without libnftables
(kernel/nftread.py) where they can: these tests load tables into a scratch
namespace, natns's own and hand-written ones of many shapes, and compare the
raw reading's key with the JSON reading's, table by table. Tables holding
what the raw reader can't name (intervals, verdict and object maps,
catch-all elements, types of their own) must fall back to libnftables, and still agree.
"""

from __future__ import annotations

import pytest

from natns.firewall import nftables
from natns.firewall.nftables import NftablesBackend, _key_from_raw, _observed_key
from natns.kernel import nftlib, nftread, nsexec
from natns.lab import Lab

from .reliability_tools import ROOT

pytestmark = pytest.mark.root

PROTO = {"ip": nftlib.NFPROTO_IPV4, "ip6": nftlib.NFPROTO_IPV6}

#: tables the raw reader names itself (no fallback)
PLAIN = """
table ip natns {
    comment "a comment"
    set addrs { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.200 }; }
    set ports { type inet_service; elements = { 22, 80, 65535 }; }
    set pairs { type ipv4_addr . inet_service; elements = { 192.0.2.9 . 53 }; }
    set empty { type ipv4_addr; }
    set timed { type ipv4_addr; flags timeout; elements = { 192.0.2.77 timeout 1h }; }
    set dyn { type ipv4_addr; flags dynamic; size 64; }
    map m { type ipv4_addr : ipv4_addr; counter; elements = { 198.51.100.1 : 192.0.2.1, 198.51.100.2 : 192.0.2.2 }; }
    map pm { type ipv4_addr . inet_service : ipv4_addr . inet_service; elements = { 198.51.100.3 . 8080 : 192.0.2.3 . 80 }; }
    map fip_dnat { type ipv4_addr : ipv4_addr; elements = { 203.0.113.5 comment "hand" : 192.0.2.5 }; }
    set flush_fip { type ipv4_addr; elements = { 203.0.113.6 }; }
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        dnat to ip daddr map @m comment "fip in"
        ip daddr { 192.0.2.1, 192.0.2.2 } counter
    }
    chain post {
        type nat hook postrouting priority srcnat + 5; policy accept;
        masquerade comment "snat"
    }
    chain forward_c {
        type filter hook forward priority -7; policy drop;
        ct state established accept comment "ct"
        jump helper
    }
    chain input_c { type filter hook input priority 0; policy accept; }
    chain output_c { type route hook output priority mangle; policy accept; }
    chain helper {
        counter
        ip saddr @addrs accept comment ""
        accept comment "last one"
    }
}
table ip6 natns {
    set v6 { type ipv6_addr; elements = { 2001:db8::1, 2001:db8:0:1::abcd, ::ffff:192.0.2.1 }; }
    map v6p { type ipv6_addr . inet_service : ipv6_addr . inet_service; elements = { 2001:db8::2 . 443 : 2001:db8::3 . 8443 }; }
    chain forward_c { type filter hook forward priority filter; policy drop; comment "chain comment"; }
}
table ip natnsup-00ff {
    flags dormant
    chain c { type filter hook input priority 0; policy accept; }
}
"""

#: tables the raw reader hands to libnftables (each for one reason)
ODD = {
    "ranges": "table ip natns {\n set s { type ipv4_addr; flags interval; elements = { 192.0.2.0/28 }; }\n}",
    "verdicts": "table ip natns {\n map v { type ipv4_addr : verdict; elements = { 192.0.2.1 : accept }; }\n}",
    "catchall": "table ip natns {\n map c { type ipv4_addr : ipv4_addr; elements = { * : 192.0.2.1 }; }\n}",
    "marks": "table ip natns {\n set s { type mark; elements = { 7 }; }\n}",
    "objects": "table ip natns {\n counter c1 { }\n map o { type ipv4_addr : counter; elements = { 192.0.2.1 : \"c1\" }; }\n}",
}


def _compare(ns: str, family: str, table: str) -> tuple[object, object, bool]:
    """(raw key, JSON key, whether the raw reading was used)."""
    present = nftlib.tables_by_family(ns).get(PROTO[family], {})
    raw = _observed_key(ns, table, family, present, raw=True)
    listed = _observed_key(ns, table, family, present, raw=False)
    got = nftread.read_table(ns, PROTO[family], table)
    used = got is not None and _key_from_raw(got, table, present.get(table)) is not None
    return raw, listed, used


@pytest.fixture
def in_process():
    if not nftlib.in_process():
        pytest.skip("libnftables is not loadable here: natns reads through the nft program")


def test_natns_own_tables_read_raw_as_libnftables_lists_them(scratch_ns, in_process):
    """Every router of the mappings and dual-stack examples: floating IPs, port forwards (tcp,
    udp, port ranges), pending conntrack-flush notes, the ip6 table."""
    ns = scratch_ns("own")
    backend = NftablesBackend()
    checked = 0
    for example in ("mappings.yaml", "dual-stack.yaml"):
        desired = Lab.from_file(f"{ROOT}/examples/{example}").desired()
        for name, d in desired.namespaces.items():
            if d.firewall is None or d.firewall.scope != nftables.SCOPE:
                continue
            intent = d.firewall
            if intent.floating:  # a pending flush note too
                from dataclasses import replace
                intent = replace(intent, flush=(("fip", "203.0.113.99"), ("tcp", "203.0.113.98:8080")))
            backend.load(ns, backend.render(intent))
            for family in ("ip", "ip6"):
                if nftables.SCOPE not in nftlib.tables_by_family(ns).get(PROTO[family], {}):
                    continue
                raw, listed, used = _compare(ns, family, nftables.SCOPE)
                assert raw == listed, (example, name, family)
                assert used, (example, name, family)
                checked += 1
            observed = backend.observe(ns)
            assert observed == backend.render(intent), (example, name)  # what `up` compares: no drift
    assert checked >= 5


def test_hand_written_tables_read_raw_as_libnftables_lists_them(scratch_ns, in_process):
    ns = scratch_ns("hand")
    nsexec.run(ns, ["nft", "-f", "-"], input=PLAIN)
    for family, table in (("ip", "natns"), ("ip6", "natns"), ("ip", "natnsup-00ff")):
        raw, listed, used = _compare(ns, family, table)
        assert raw == listed, table
        assert used, table
    raw, _, _ = _compare(ns, "ip", "natns")
    maps = dict(raw.elements)
    assert maps["set ports"] == (("22", ""), ("65535", ""), ("80", ""))
    assert maps["pm"] == (("198.51.100.3 . 8080", "192.0.2.3 . 80"),)
    assert ("fip in" in {c for _, c in raw.rules}) and (None in {c for _, c in raw.rules})


@pytest.mark.parametrize("label", sorted(ODD))
def test_what_the_raw_reader_cannot_name_is_read_through_libnftables(scratch_ns, in_process, label):
    ns = scratch_ns(label[:6])
    nsexec.run(ns, ["nft", "-f", "-"], input=ODD[label] + "\n")
    family = ODD[label].split()[1]
    raw, listed, used = _compare(ns, family, "natns")
    assert not used
    assert raw == listed and raw is not None


def test_a_change_during_the_reading_is_read_again(scratch_ns, in_process, monkeypatch):
    """The generation is asked before and after the dumps: a transaction in between makes
    the reading start over, so the key never mixes two rulesets."""
    ns = scratch_ns("gen")
    nsexec.run(ns, ["nft", "-f", "-"], input="table ip natns {\n set s { type ipv4_addr; elements = { 192.0.2.1 }; }\n}\n")
    real = nftread._read
    calls = []

    def racing(r, table):
        got = real(r, table)
        if not calls:  # someone adds an element after the first reading's dumps
            nsexec.run(ns, ["nft", "add", "element", "ip", "natns", "s", "{ 192.0.2.2 }"])
        calls.append(got)
        return got

    monkeypatch.setattr(nftread, "_read", racing)
    got = nftread.read_table(ns, nftlib.NFPROTO_IPV4, "natns")
    assert len(calls) == 2
    assert len(got.sets[0].elements) == 2
