"""Coexistence: what natns didn't create stays byte-identical; what it would collide with, it refuses.

"The host" is a scratch namespace natns is run in (nsenter), as in
test_uplink.py: this machine's own namespace is only ever read. It gets a
Docker-like setup (iptables-nft chains DOCKER / DOCKER-USER in nat and
filter, which are nft tables ``ip nat`` and ``ip filter`` with a forward
chain; the same in iptables-legacy), a native nft table, a foreign link;
natns brings up a lab with ``uplink: host`` there, so it really writes into
that namespace. Foreign rules, links and routes inside a lab's router are
added after `up` and must survive later `up`s that reload natns's rules.
"""

from __future__ import annotations

import json
import re

import pytest

from natns import Lab, topology
from natns.kernel import nsexec

from .labs import _stable, existing, kernel_dump, lab_namespaces, mapped, natns, seed, write
from .test_uplink import natns_in, play_host, uplink_topology  # noqa: F401  (play_host is a fixture)

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]

DOCKER_LIKE = [
    ["iptables", "-t", "nat", "-N", "DOCKER"],
    ["iptables", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
    ["iptables", "-t", "nat", "-A", "OUTPUT", "!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL",
     "-j", "DOCKER"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.128/25", "!", "-o", "docker0", "-j", "MASQUERADE"],
    ["iptables", "-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
    ["iptables", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "--dport", "8443", "-j", "DNAT",
     "--to-destination", "203.0.113.130:443"],
    ["iptables", "-N", "DOCKER-USER"],
    ["iptables", "-A", "FORWARD", "-j", "DOCKER-USER"],
    ["iptables", "-A", "FORWARD", "-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
     "-j", "ACCEPT"],
    ["iptables", "-A", "DOCKER-USER", "-j", "RETURN"],
    ["iptables", "-P", "FORWARD", "DROP"],
    ["iptables-legacy", "-t", "nat", "-N", "LEGACY-DOCKER"],
    ["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.128/25", "-j", "LEGACY-DOCKER"],
    ["iptables-legacy", "-t", "nat", "-A", "LEGACY-DOCKER", "-j", "RETURN"],
    ["nft", "add table inet mine { comment \"not natns\"; }"],
    ["nft", "add set inet mine blocked { type ipv4_addr; elements = { 192.0.2.66, 203.0.113.66 }; }"],
    ["nft", "add chain inet mine input { type filter hook input priority -5; policy accept; }"],
    ["nft", "add rule inet mine input ip saddr @blocked counter drop"],
    ["nft", "add table ip natnsfake"],  # a name like natns's, not natns's
    ["nft", "add chain ip natnsfake postrouting { type nat hook postrouting priority 50; }"],
    ["ip", "link", "add", "docker0", "type", "bridge"],
    ["ip", "addr", "add", "203.0.113.129/25", "dev", "docker0"],
    ["ip", "link", "set", "docker0", "up"],
    ["ip", "route", "add", "192.0.2.64/26", "via", "203.0.113.1", "proto", "static"],
]


def add_foreign(ns: str, commands=DOCKER_LIKE) -> None:
    for argv in commands:
        if argv[0] == "nft" and len(argv) == 2:
            nsexec.run(ns, ["nft", argv[1]])
        else:
            nsexec.run(ns, argv)


def foreign_view(ns: str) -> dict:
    """Everything in `ns` that isn't natns's, as the tools print it (counters left out)."""
    def strip(text: str) -> list[str]:
        return [re.sub(r"\[\d+:\d+\]", "[]", ln) for ln in text.splitlines() if not ln.startswith("#")]

    ipt = [ln for ln in strip(nsexec.run(ns, ["iptables-save"]).stdout)
           if not re.search(r"natns(up-[0-9a-f]+)?-|--comment natns", ln)]
    legacy = strip(nsexec.run(ns, ["iptables-legacy-save"]).stdout)
    tables = [ln.split()[-2:] for ln in nsexec.run(ns, ["nft", "list", "tables"]).stdout.splitlines()]
    nft = {f"{fam} {name}": re.sub(r"counter packets \d+ bytes \d+", "counter",
                                  nsexec.run(ns, ["nft", "list", "table", fam, name]).stdout)
           for fam, name in tables if not re.fullmatch(r"natns(up-[0-9a-f]+)?", name)}
    # iptables-nft's own tables hold natns's chains too (iptables backend): compare them
    # through iptables-save above, not as nft text.
    for t in ("ip nat", "ip filter"):
        nft.pop(t, None)
    links = json.loads(nsexec.run(ns, ["ip", "-d", "-j", "link", "show"]).stdout)
    foreign_links = _stable([ln for ln in links if not (ln.get("ifalias") or "").startswith("natns:")])
    mine = {ln["ifname"] for ln in links if (ln.get("ifalias") or "").startswith("natns:") and ln["ifname"] != "lo"}
    routes = [r for r in nsexec.run(ns, ["ip", "route", "show", "table", "all"]).stdout.splitlines()
              if "proto 233" not in r and not any(f"dev {m} " in r + " " for m in mine)]
    addrs = [a for a in nsexec.run(ns, ["ip", "-4", "-o", "addr", "show"]).stdout.splitlines()
             if a.split()[1] not in mine]
    return {"iptables": ipt, "legacy": legacy, "nft": nft, "links": foreign_links, "routes": routes,
            "addrs": addrs}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_docker_like_host_is_byte_identical_through_up_and_down(play_host, scratch_ns, uid, backend,  # noqa: F811
                                                                     tmp_path):
    host, _ = play_host
    other = scratch_ns("foreign")
    add_foreign(host)
    add_foreign(other, DOCKER_LIKE[:6] + DOCKER_LIKE[14:18])
    data = uplink_topology(uid, backend)
    path = write(tmp_path, data)
    before = kernel_dump(host)
    foreign_before = foreign_view(host)
    other_before = kernel_dump(other)
    try:
        res = natns_in(host, "up", path)
        assert res.returncode == 0, res.stderr
        # natns did write into this host: its uplink, its own table or chains...
        assert kernel_dump(host) != before
        # ...and nothing else there changed.
        assert foreign_view(host) == foreign_before
        assert natns_in(host, "up", path).stdout.strip().endswith("no changes")
        assert foreign_view(host) == foreign_before
        res = natns_in(host, "down", path)
        assert res.returncode == 0, res.stderr
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert existing(lab_namespaces({**data, "internet": None})) == []
    assert kernel_dump(host) == before
    assert kernel_dump(other) == other_before


ROUTER_FOREIGN = [
    ["nft", "add table inet mine"],
    ["nft", "add chain inet mine forward_mine { type filter hook forward priority 10; policy accept; }"],
    ["nft", "add rule inet mine forward_mine ip saddr 203.0.113.7 counter drop"],
    ["nft", "add table ip natnsx"],
    ["iptables", "-t", "filter", "-N", "MINE"],
    ["iptables", "-t", "filter", "-A", "INPUT", "-s", "203.0.113.7", "-j", "MINE"],
    ["iptables", "-t", "filter", "-A", "MINE", "-j", "DROP"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-d", "203.0.113.8", "-j", "RETURN"],
    ["iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-d", "203.0.113.9", "-j", "RETURN"],
    ["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-d", "203.0.113.9", "-j", "RETURN"],
    ["ip", "link", "add", "mine0", "type", "bridge"],
    ["ip", "addr", "add", "203.0.113.200/32", "dev", "mine0"],
    ["ip", "link", "set", "mine0", "up"],
    ["ip", "route", "add", "203.0.113.64/26", "dev", "mine0", "proto", "static"],
    ["ip", "rule", "add", "from", "203.0.113.200", "table", "100", "priority", "1000"],
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_foreign_rules_links_and_routes_in_a_router_survive_every_up(make_lab, uid, backend):
    data = mapped(uid, backend)
    lab = make_lab(data)
    lab.up()
    vm = f"t{uid}-vm"
    add_foreign(vm, ROUTER_FOREIGN)
    before = foreign_view(vm)
    rules_before = nsexec.run(vm, ["ip", "rule"]).stdout
    # An up that reloads natns's rules (a new network: new chains' rules), one that only
    # changes map elements or rules (a floating IP), and one with nothing to do.
    data["networks"].append({"name": "more", "router": vm, "cidr": "192.0.2.128/25", "gateway": "192.0.2.129",
                             "hosts": [{"namespace": f"t{uid}-m1", "address": "192.0.2.130"}]})
    data["networks"][0]["cidr"] = "192.0.2.0/25"
    steps = Lab(topology.parse(data, "test.yaml")).up().steps
    assert "load_firewall" in [s.action for s in steps]
    data["floating_ips"].append({"router": vm, "address": "198.51.100.51", "host": "192.0.2.130"})
    assert not Lab(topology.parse(data, "test.yaml")).up().empty
    assert Lab(topology.parse(data, "test.yaml")).up().empty
    assert foreign_view(vm) == before
    assert nsexec.run(vm, ["ip", "rule"]).stdout == rules_before
    # natns's own rules are still whole and first where they must be.
    assert Lab(topology.parse(data, "test.yaml")).status().ok


def test_foreign_namespace_refused_unless_adopted_and_another_labs_never(scratch_ns, uid, tmp_path):
    data = seed(uid)
    foreign = scratch_ns("x")
    nsexec.run(foreign, ["ip", "link", "add", "keep0", "type", "bridge"])
    data["networks"][0]["hosts"][0]["namespace"] = foreign
    path = write(tmp_path, data)
    before = kernel_dump(foreign)
    try:
        res = natns("up", path)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"namespace {foreign} exists and was not created by natns" in res.stderr
        assert "--adopt" in res.stderr
        assert kernel_dump(foreign) == before
        assert existing(lab_namespaces(data)) == [foreign]  # nothing else was made either
        res = natns("up", "--adopt", path)
        assert res.returncode == 0, res.stderr
        mark = nsexec.run(foreign, ["ip", "-j", "link", "show", "lo"]).stdout
        assert f"natns:{data['name']}:host:{foreign}" in mark
        assert "keep0" in nsexec.run(foreign, ["ip", "-o", "link"]).stdout  # left alone
        again = natns("up", path)
        assert again.returncode == 0 and "no changes" in again.stdout
        assert Lab(topology.parse(data, "test.yaml")).status().ok
        # Another lab can't take it, adopt or not.
        other = seed(uid + "o")
        other["networks"][0]["hosts"][0]["namespace"] = foreign
        opath = write(tmp_path, other, "other.yaml")
        for args in (["up", opath], ["up", "--adopt", opath]):
            res = natns(*args)
            assert res.returncode == 2 and f"belongs to natns lab {data['name']!r}" in res.stderr, res.stderr
        assert existing(lab_namespaces(other)) == [foreign]
        # Adopted means the lab's: `down` removes it like the others.
        assert natns("down", path).returncode == 0
        assert existing(lab_namespaces(data)) == []
    finally:
        natns("down", "--lab", data["name"])
        natns("down", "--lab", seed(uid + "o")["name"])


def test_foreign_link_with_a_name_natns_wants_is_refused_and_untouched(make_lab, uid, play_host,  # noqa: F811
                                                                        tmp_path):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    vm = f"t{uid}-vm"
    # Someone's link in the router, named like the bridge of a network about to be added.
    nsexec.run(vm, ["ip", "link", "add", "qr-more", "type", "bridge"])
    nsexec.run(vm, ["ip", "link", "set", "qr-more", "up"])
    data["networks"].append({"name": "more", "router": vm, "cidr": "192.0.2.128/25", "gateway": "192.0.2.129"})
    data["networks"][0]["cidr"] = "192.0.2.0/25"
    path = write(tmp_path, data)
    before = {ns: kernel_dump(ns) for ns in lab_namespaces(data)}
    res = natns("up", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"link qr-more in namespace {vm} exists and was not created by natns" in res.stderr
    assert {ns: kernel_dump(ns) for ns in lab_namespaces(data)} == before  # nothing was applied
    # Unmarked but not as natns leaves a link it made (this one is up): never taken over.
    nsexec.run(vm, ["ip", "link", "set", "qr-more", "down"])
    nsexec.run(vm, ["ip", "addr", "add", "203.0.113.5/32", "dev", "qr-more"])
    assert natns("up", path).returncode == 2
    # In the host too: a link named like a lab's uplink.
    host, _ = play_host
    up_data = uplink_topology(uid + "u", "nftables")
    from natns.desired import uplink_name

    name = uplink_name(up_data["name"], up_data["routers"][0]["name"])
    nsexec.run(host, ["ip", "link", "add", name, "type", "bridge"])
    up_path = write(tmp_path, up_data, "uplink.yaml")
    host_before = kernel_dump(host)
    try:
        res = natns_in(host, "up", up_path)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"link {name} in the namespace natns runs in exists and was not created by natns" in res.stderr
        assert kernel_dump(host) == host_before
    finally:
        natns_in(host, "down", "--lab", up_data["name"])
    assert existing(lab_namespaces({**up_data, "internet": None})) == []
