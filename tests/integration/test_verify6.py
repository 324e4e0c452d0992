"""The verify tools on the dual-stack lab (examples/dual-stack.yaml), both backends
(issue 13): `natns check` passes with v4 and v6 checks, `natns probe` to a v6 address
reports the source the far end saw, `natns capture` shows the v6 probe at every point
with ICMPv6 in its default filter, `natns conntrack` shows the v6 entries (and --family
filters them) as conntrack-tools does, and `status --counters` counts the v6 rules.
"""

from __future__ import annotations

import json

import pytest

from natns.verify import conntrack as ct
from natns.verify.capture import capture
from natns.verify.probe import probe

from .labs import natns, write
from .v6_tools import EXT6_LAB, INET_HOST6, TENANT6, dual
from .verify_tools import conntrack_tool

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]




def run_cli(*args):
    res = natns(*args)
    assert "Traceback" not in res.stderr, res.stderr
    return res


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_passes_with_v4_and_v6_checks_and_fails_naming_a_broken_v6_path(make_up_lab, uid, backend, tmp_path):
    data = dual(uid, backend)
    data["checks"] = [
        {"from": f"t{uid}-tenant1", "to": "203.0.113.114", "source": "198.51.100.116"},
        {"from": f"t{uid}-tenant1", "to": INET_HOST6, "source": TENANT6},  # routed: its own source
        {"from": f"t{uid}-tenant1", "to": INET_HOST6, "tcp": 8080, "source": TENANT6},
    ]
    make_up_lab(data)
    path = write(tmp_path, data)
    res = run_cli("check", path, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and report["total"] == 3
    assert [c["probe"]["source_seen"] for c in report["checks"]] == ["198.51.100.116", TENANT6, TENANT6]
    # the default set (no checks: in the file) has the v6 check too, and it holds
    del data["checks"]
    res = run_cli("check", write(tmp_path, data, "nochecks.yaml"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    got = [(c["to"], c["source"], c["holds"]) for c in json.loads(res.stdout)["checks"]]
    assert got == [("203.0.113.114", None, True), (INET_HOST6, TENANT6, True)]
    # the v6 default route gone in the tenant: the v6 check fails, naming itself; v4 holds
    from natns.kernel import nsexec
    nsexec.run(f"t{uid}-tenant1", ["ip", "-6", "route", "del", "default"])
    res = run_cli("check", write(tmp_path, data, "nochecks.yaml"))
    assert res.returncode == 1
    assert f"failed: default[1] t{uid}-tenant1 -> {INET_HOST6} icmp reachable (source {TENANT6})" in res.stdout
    assert "default[0]" not in res.stdout.split("failed:", 1)[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_to_v6_reports_the_source_the_far_end_saw_routed_and_nat66(make_up_lab, uid, backend, tmp_path):
    data = dual(uid, backend, snat6="masquerade")
    make_up_lab(data)
    res = run_cli("probe", write(tmp_path, data), "--from", f"t{uid}-tenant1", "--to", INET_HOST6,
                  "--tcp", "8080", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and out["far_end"] == f"t{uid}-inet" and out["source_seen"] == EXT6_LAB  # NAT66
    assert out["local"].startswith(f"[{TENANT6}]:")


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_follows_a_v6_probe_at_every_point_with_its_own_source(make_up_lab, uid, backend, tmp_path):
    lab = make_up_lab(dual(uid, backend))
    run = capture(lab.topology, f"t{uid}-tenant1", to=INET_HOST6, proto="icmp", pcap_dir=str(tmp_path / "p"))
    assert run.bpf == "icmp6" and run.probe.ok
    points = [f"{ns}:{i}" for ns, i in run.points]
    assert points == [f"t{uid}-tenant1:eth0", f"t{uid}-vm:qr-tenant", f"t{uid}-vm:eth0", f"t{uid}-inet:ext"]
    ident = run.probe.flow["icmp_id"]
    for point in points:
        reqs = [p for p in run.seen(point) if p.icmp_type == 128 and p.icmp_id == ident]
        reps = [p for p in run.seen(point) if p.icmp_type == 129 and p.icmp_id == ident]
        assert len(reqs) == 1 and len(reps) == 1, (point, [p.info for p in run.seen(point)])
        assert reqs[0].src == TENANT6 and reps[0].dst == TENANT6  # routed: never rewritten
    numbered = {r.number for r in run.rows if r.packet.icmp_type == 128 and r.packet.icmp_id == ident}
    assert len(numbered) == 1  # one packet followed across the four points
    # a command's default filter takes v6 too
    cmd = capture(lab.topology, f"t{uid}-tenant1", argv=["ping", "-c1", "-W1", INET_HOST6],
                  points=[(f"t{uid}-tenant1", "eth0")])
    assert cmd.command.returncode == 0 and any(p.family == 6 and p.icmp_type == 129 for p in cmd.seen(
        f"t{uid}-tenant1:eth0"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_conntrack_shows_v6_entries_as_conntrack_tools_does_and_filters_by_family(make_up_lab, uid, backend, tmp_path):
    data = dual(uid, backend, snat6="masquerade")
    lab = make_up_lab(data)
    tenant, vm = f"t{uid}-tenant1", f"t{uid}-vm"
    ping6 = probe(lab.topology, tenant, INET_HOST6)
    tcp6 = probe(lab.topology, tenant, INET_HOST6, "tcp", 8081)
    ping4 = probe(lab.topology, tenant, "203.0.113.114")
    assert ping6.ok and tcp6.ok and ping4.ok
    table = ct.table(vm)
    icmp6 = [e for e in table.entries if e.protocol == "icmpv6" and e.original.icmp_id == ping6.flow["icmp_id"]]
    assert len(icmp6) == 1 and icmp6[0].family == 6
    e = icmp6[0]
    assert (e.original.src, e.original.dst, e.reply.dst) == (TENANT6, INET_HOST6, EXT6_LAB)
    assert [n.kind for n in e.nat] == ["SNAT"] and "SRC_NAT" in e.status
    t = next(e for e in table.entries if e.protocol == "tcp" and e.original.sport == tcp6.flow["sport"])
    assert t.original.endpoint("dst") == f"[{INET_HOST6}]:8081" and t.translated("SNAT").after.startswith(f"[{EXT6_LAB}]:")
    # conntrack-tools reads the same v6 entry
    tool = conntrack_tool(vm, "-f", "ipv6", "-p", "icmpv6")
    assert f"src={TENANT6} dst={INET_HOST6} type=128 code=0 id={ping6.flow['icmp_id']}" in tool
    # the CLI: both families by default, one with --family
    path = write(tmp_path, data)
    both = json.loads(run_cli("conntrack", path, vm, "--json").stdout)["routers"][0]["entries"]
    assert {x["family"] for x in both} == {4, 6}
    only6 = json.loads(run_cli("conntrack", path, vm, "--family", "6", "--json").stdout)["routers"][0]["entries"]
    assert only6 and {x["family"] for x in only6} == {6}
    assert any(x["original"]["icmp_id"] == ping6.flow["icmp_id"] for x in only6)
    text = run_cli("conntrack", path, vm, "--family", "6")
    assert text.returncode == 0 and f"SNAT to {EXT6_LAB}" in text.stdout and "203.0.113.114" not in text.stdout
    # ctselect's v4 bookkeeping still reads IPv4 only
    assert {e.family for e in ct.entries(vm)} == {4}


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_counters_count_the_v6_rules(make_up_lab, uid, backend, tmp_path):
    data = dual(uid, backend, snat6="masquerade")
    lab = make_up_lab(data)
    path = write(tmp_path, data)

    def rows6():
        res = run_cli("status", path, "--counters", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        rules = json.loads(res.stdout)["counters"][0]["rules"]
        assert any(r.get("family") is None for r in rules)  # the v4 rules, as before
        return {r["comment"]: r for r in rules if r.get("family") == 6}

    before = rows6()
    nat66 = "natns snat6 tenant"
    for proto, port in (("icmp", None), ("tcp", 8080), ("udp", 5353)):
        assert probe(lab.topology, f"t{uid}-tenant1", INET_HOST6, proto, port).ok
    after = rows6()
    # NAT66 sees the first packet of each of the three connections
    assert after[nat66]["packets"] - before[nat66]["packets"] == 3
    table = run_cli("status", path, "--counters")
    assert table.returncode == 0 and "(ip6)" in table.stdout and nat66 in table.stdout
