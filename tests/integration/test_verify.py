"""capture, conntrack, probe, check, status --counters, show: on real labs, real packets.

Every lab is built with unique names and taken down after each test, pass or
fail. Traffic flows only between the lab's own namespaces, in documentation
addresses. Where the result could be read back in a second, independent way
(tcpdump -r on the pcap files, conntrack -L, ss), the tests do so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from natns import Lab, down_lab, topology
from natns.verify import conntrack as ct
from natns.verify.capture import capture
from natns.verify.checks import run_checks
from natns.verify.endpoints import path_points
from natns.verify.probe import probe
from natns.kernel import nsexec, sysctl

from .labs import SEED_INET, existing, lab_namespaces, natns, seed, two_routers, write
from .verify_tools import (
    conntrack_tool,
    json_lines,
    listening,
    processes_in_netns,
    processes_mentioning,
    tcpdump_read,
    tcpdumps_for,
)

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]


@pytest.fixture
def make_lab():
    """Factory: Lab from a topology dict; every lab made is taken down afterwards."""
    made = []

    def make(data: dict) -> Lab:
        lab = Lab(topology.parse(data, "test.yaml"))
        made.append((lab, lab_namespaces(data)))
        return lab

    yield make
    for lab, names in made:
        down_lab(lab.name)
        assert existing(names) == [], f"namespaces left behind: {existing(names)}"


def seed_with_checks(uid: str, backend: str) -> dict:
    """The seed lab with the checks of examples/seed.yaml (namespaces renamed)."""
    data = seed(uid, backend)
    data["checks"] = [
        {"from": f"t{uid}-tenant1", "to": SEED_INET, "source": "198.51.100.116"},
        {"from": f"t{uid}-inet", "to": "192.0.2.2", "expect": "blocked"},
    ]
    return data


def names(uid: str) -> tuple[str, str, str]:
    return f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"


def run_cli(*args) -> subprocess.CompletedProcess:
    res = natns(*args)
    assert "Traceback" not in res.stderr, res.stderr
    return res


# --------------------------------------------------------------------------- capture


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_shows_the_source_rewritten_leaving_the_router_and_the_reply_translated_back(
        make_lab, uid, backend, tmp_path):
    data = seed(uid, backend)
    make_lab(data).up()
    tenant, vm, inet = names(uid)
    path = write(tmp_path, data)
    pcaps = tmp_path / "pcaps"
    res = run_cli("capture", path, "--from", tenant, "--to", SEED_INET, "-w", str(pcaps), "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    points = [f"{tenant}:eth0", f"{vm}:qr-tenant", f"{vm}:eth0", f"{inet}:ext"]
    assert run["points"] == points  # the default: every interface on the probe's path
    assert run["probe"]["ok"] and run["probe"]["source_seen"] == "198.51.100.116"
    icmp_id = run["probe"]["flow"]["icmp_id"]
    mine = [p for p in run["packets"] if p["icmp"] and p["icmp"]["id"] == icmp_id]
    seen = {(p["point"], p["icmp"]["type"]): (p["src"], p["dst"]) for p in mine}
    request, reply = 8, 0
    # The request leaves the tenant with its own address, and the router with its external one.
    assert seen[(f"{tenant}:eth0", request)] == ("192.0.2.2", SEED_INET)
    assert seen[(f"{vm}:qr-tenant", request)] == ("192.0.2.2", SEED_INET)
    assert seen[(f"{vm}:eth0", request)] == ("198.51.100.116", SEED_INET)
    assert seen[(f"{inet}:ext", request)] == ("198.51.100.116", SEED_INET)
    # The reply comes back to the router's address and is translated back to the tenant's.
    assert seen[(f"{vm}:eth0", reply)] == (SEED_INET, "198.51.100.116")
    assert seen[(f"{tenant}:eth0", reply)] == (SEED_INET, "192.0.2.2")
    assert len(mine) == 8
    # The merged view: time order, one number per packet, the rewrite named where it happens.
    times = [p["time"] for p in run["packets"]]
    assert times == sorted(times)
    by_point = {(p["point"], p["icmp"]["type"]): p for p in mine}
    assert "src" in by_point[(f"{vm}:eth0", request)]["changed"]
    assert "dst" not in by_point[(f"{vm}:eth0", request)]["changed"]
    assert by_point[(f"{vm}:eth0", request)]["previous_point"] == f"{vm}:qr-tenant"
    assert "dst" in by_point[(f"{vm}:qr-tenant", reply)]["changed"]
    assert by_point[(f"{tenant}:eth0", request)]["changed"] == []
    assert len({p["n"] for p in mine if p["icmp"]["type"] == request}) == 1
    # One pcap per point, and tcpdump itself reads the same packets from them.
    assert sorted(os.listdir(pcaps)) == sorted(f"{pt.replace(':', '_')}.pcap" for pt in points)
    router_out = tcpdump_read(str(pcaps / f"{vm}_eth0.pcap"))
    tenant_side = tcpdump_read(str(pcaps / f"{tenant}_eth0.pcap"))
    assert any(ln.startswith(f"IP 198.51.100.116 > {SEED_INET}: ICMP echo request, id {icmp_id}")
               for ln in router_out), router_out
    assert any(ln.startswith(f"IP {SEED_INET} > 198.51.100.116: ICMP echo reply, id {icmp_id}")
               for ln in router_out), router_out
    assert any(ln.startswith(f"IP 192.0.2.2 > {SEED_INET}: ICMP echo request, id {icmp_id}")
               for ln in tenant_side), tenant_side
    assert any(ln.startswith(f"IP {SEED_INET} > 192.0.2.2: ICMP echo reply, id {icmp_id}")
               for ln in tenant_side), tenant_side
    assert not any("192.0.2.2" in ln for ln in router_out)
    assert tcpdumps_for(f"t{uid}-") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_a_tcp_probe_keeps_the_port_and_rewrites_the_address(make_lab, uid, backend):
    data = seed(uid, backend)
    lab = make_lab(data)
    lab.up()
    tenant, vm, inet = names(uid)
    run = capture(lab.topology, tenant, to=SEED_INET, proto="tcp", port=8080)
    assert run.probe.ok and run.probe.source_seen == "198.51.100.116"
    sport = run.probe.flow["sport"]
    syn = {p.point: p for p in (r.packet for r in run.rows) if p.tcp_flags == "S"}
    assert syn[f"{tenant}:eth0"].addr("src") == f"192.0.2.2:{sport}"
    assert syn[f"{vm}:eth0"].addr("src") == f"198.51.100.116:{sport}"
    assert syn[f"{inet}:ext"].addr("dst") == f"{SEED_INET}:8080"
    synack = {p.point: p for p in (r.packet for r in run.rows) if p.tcp_flags == "S."}
    assert synack[f"{vm}:eth0"].dst == "198.51.100.116"
    assert synack[f"{tenant}:eth0"].dst == "192.0.2.2"
    assert listening(inet) == []  # the responder is gone
    assert tcpdumps_for(f"t{uid}-") == []


def test_capture_runs_a_command_at_the_points_given(make_lab, uid, tmp_path):
    data = seed(uid)
    make_lab(data).up()
    tenant, vm, _ = names(uid)
    path = write(tmp_path, data)
    res = run_cli("capture", path, f"{tenant}:eth0", f"{vm}:eth0", "--from", tenant, "--json",
                  "--", "ping", "-n", "-c", "2", "-i", "0.2", SEED_INET)
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["points"] == [f"{tenant}:eth0", f"{vm}:eth0"]
    assert run["command"]["exit"] == 0 and "2 received" in run["command"]["output"]
    srcs = {(p["point"], p["summary"].split(",")[0]): p["src"] for p in run["packets"]}
    assert srcs[(f"{tenant}:eth0", "ICMP echo request")] == "192.0.2.2"
    assert srcs[(f"{vm}:eth0", "ICMP echo request")] == "198.51.100.116"
    assert len([p for p in run["packets"] if p["point"] == f"{vm}:eth0"]) == 4
    # A table by default, with the same packets.
    res = run_cli("capture", path, f"{vm}:eth0", "--from", tenant, "--", "ping", "-c", "1", SEED_INET)
    assert res.returncode == 0 and "198.51.100.116" in res.stdout and "echo request" in res.stdout
    bad = run_cli("capture", path, f"{vm}:eth9", "--from", tenant, "--to", SEED_INET)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "eth9" in bad.stderr
    assert tcpdumps_for(f"t{uid}-") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_a_capture_leaves_no_tcpdump_and_no_command(make_lab, uid, tmp_path, sig):
    data = seed(uid)
    make_lab(data).up()
    tenant, vm, _ = names(uid)
    path = write(tmp_path, data)
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "capture", path, "--from", tenant, "--json",
                             "--", "sleep", "37"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sleeping = [pid for pid, cmd in processes_mentioning("sleep 37") if cmd == "sleep 37"]
            if len(tcpdumps_for(f"t{uid}-")) == 4 and set(sleeping) & set(processes_in_netns(tenant)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the capture never started its four tcpdumps and the command")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["command"]["stopped"] == "interrupted"
    assert tcpdumps_for(f"t{uid}-") == []
    assert processes_in_netns(tenant) == [] and processes_in_netns(vm) == []


# --------------------------------------------------------------------------- conntrack


@pytest.mark.parametrize("backend", BACKENDS)
def test_conntrack_lists_the_probes_entry_with_its_tuples_and_translation(make_lab, uid, backend, tmp_path):
    data = seed(uid, backend)
    lab = make_lab(data)
    lab.up()
    tenant, vm, _ = names(uid)
    ping = probe(lab.topology, tenant, SEED_INET)
    conn = probe(lab.topology, tenant, SEED_INET, "tcp", 8081)
    assert ping.ok and conn.ok
    table = ct.table(vm)
    icmp = [e for e in table.entries if e.protocol == "icmp" and e.original.icmp_id == ping.flow["icmp_id"]]
    assert len(icmp) == 1
    e = icmp[0]
    assert (e.original.src, e.original.dst) == ("192.0.2.2", SEED_INET)
    assert (e.reply.src, e.reply.dst) == (SEED_INET, "198.51.100.116")
    assert [(n.kind, n.before, n.after) for n in e.nat] == [("SNAT", "192.0.2.2", "198.51.100.116")]
    assert "SRC_NAT" in e.status and 0 < e.timeout <= 30
    tcp = [e for e in table.entries if e.protocol == "tcp" and e.original.sport == conn.flow["sport"]]
    assert len(tcp) == 1
    t = tcp[0]
    assert t.original.endpoint("dst") == f"{SEED_INET}:8081"
    assert t.reply.endpoint("dst") == f"198.51.100.116:{conn.flow['sport']}"
    assert t.translated("SNAT").after == f"198.51.100.116:{conn.flow['sport']}"
    assert t.translated("DNAT") is None
    assert t.state in ("TIME_WAIT", "CLOSE", "FIN_WAIT", "LAST_ACK", "CLOSE_WAIT", "ESTABLISHED")
    # conntrack-tools, reading the same table, agrees.
    tool = conntrack_tool(vm, "-p", "icmp")
    assert (f"src=192.0.2.2 dst={SEED_INET} type=8 code=0 id={ping.flow['icmp_id']} "
            f"src={SEED_INET} dst=198.51.100.116 type=0 code=0 id={ping.flow['icmp_id']}") in tool
    # The CLI shows the same, for the router by name, and knows accounting is off.
    res = run_cli("conntrack", write(tmp_path, data), f"t{uid}-vm", "--json")
    assert res.returncode == 0, res.stderr
    routers = json.loads(res.stdout)["routers"]
    assert [r["namespace"] for r in routers] == [vm] and routers[0]["accounting"] is False
    cli = [x for x in routers[0]["entries"] if x["original"]["icmp_id"] == ping.flow["icmp_id"]]
    assert cli[0]["nat"] == [{"type": "SNAT", "from": "192.0.2.2", "to": "198.51.100.116"}]
    assert cli[0]["counters"] is None
    text = run_cli("conntrack", write(tmp_path, data))
    assert text.returncode == 0 and "SNAT to 198.51.100.116" in text.stdout


def test_conntrack_counts_packets_and_bytes_when_accounting_is_on(make_lab, uid):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    tenant, vm, _ = names(uid)
    assert ct.accounting(vm) is False
    sysctl.write(vm, {"net.netfilter.nf_conntrack_acct": "1"})  # in the lab's router only
    r = probe(lab.topology, tenant, SEED_INET)
    table = ct.table(vm)
    assert table.accounting is True
    e = next(e for e in table.entries if e.original.icmp_id == r.flow["icmp_id"])
    # One echo request (84 bytes: 20 IP + 8 ICMP + 56 payload) and its reply.
    assert e.counters == {"original": {"packets": 1, "bytes": 84}, "reply": {"packets": 1, "bytes": 84}}


def test_conntrack_watch_streams_new_and_destroyed_entries(make_lab, uid, tmp_path):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    tenant, vm, _ = names(uid)
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "conntrack", write(tmp_path, data),
                             "--watch", "--json", "--count", "2", "--timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching conntrack" in proc.stderr.readline()
        r = probe(lab.topology, tenant, SEED_INET, "udp", 5353)
        assert r.ok
        nsexec.run(vm, ["conntrack", "-D", "-p", "udp", "--sport", str(r.flow["sport"])])
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    events = json_lines(stdout)
    assert [e["event"] for e in events] == ["new", "destroy"]
    for e in events:
        assert e["namespace"] == vm
        assert e["entry"]["original"]["sport"] == r.flow["sport"]
        assert e["entry"]["nat"][0]["to"] == f"198.51.100.116:{r.flow['sport']}"


def test_conntrack_watch_library_stops_at_its_timeout(make_lab, uid):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    tenant, vm, _ = names(uid)
    with ct.Watch(vm) as w:
        assert probe(lab.topology, tenant, SEED_INET).ok
        start = time.monotonic()
        events = [e for e in w.events(timeout=1.5) if e.entry.protocol == "icmp"]
        assert time.monotonic() - start < 3
    assert [e.kind for e in events] == ["new"]
    assert events[0].entry.translated("SNAT").after == "198.51.100.116"


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_reports_the_source_the_far_end_saw(make_lab, uid, backend, tmp_path):
    data = seed(uid, backend)
    make_lab(data).up()
    tenant, vm, inet = names(uid)
    path = write(tmp_path, data)
    for extra in ([], ["--tcp", "8080"], ["--udp", "5353"]):
        res = run_cli("probe", path, "--from", tenant, "--to", SEED_INET, "--json", *extra)
        assert res.returncode == 0, (extra, res.stdout, res.stderr)
        r = json.loads(res.stdout)
        assert r["ok"] and r["latency_ms"] > 0
        assert r["far_end"] == inet and r["source_seen"] == "198.51.100.116"
        assert r["local"].split(":")[0] == "192.0.2.2"
    # To the router's own gateway address: not translated.
    r = json.loads(run_cli("probe", path, "--from", tenant, "--to", "192.0.2.3", "--tcp", "22", "--json").stdout)
    assert r["ok"] and r["far_end"] == vm and r["source_seen"] == "192.0.2.2"
    # From the internet to the private network: no route.
    res = run_cli("probe", path, "--from", inet, "--to", "192.0.2.2", "--json")
    assert res.returncode == 1
    r = json.loads(res.stdout)
    assert not r["ok"] and r["error"] == "Network is unreachable" and r["source_seen"] is None
    # The table form.
    res = run_cli("probe", path, "--from", tenant, "--to", SEED_INET, "--tcp", "443")
    assert res.returncode == 0 and "198.51.100.116" in res.stdout and "reachable" in res.stdout
    # Nothing natns listened with is left, in the far end or anywhere else in the lab.
    for ns in names(uid):
        assert listening(ns) == [], ns
        assert processes_in_netns(ns) == [], ns


def test_probe_refuses_bad_input_with_one_line(make_lab, uid, tmp_path):
    data = seed(uid)
    make_lab(data).up()
    tenant, _, _ = names(uid)
    path = write(tmp_path, data)
    for args, words in [
        (["--from", "nowhere", "--to", SEED_INET], "not a namespace of lab"),
        (["--from", tenant, "--to", "2001:db8::zz"], "not an IP address"),  # IPv6 itself is fine (issue 13)
        (["--from", tenant, "--to", "203.0.113.300"], "not an IP address"),
    ]:
        res = run_cli("probe", path, *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and words in res.stderr, res.stderr
    res = run_cli("probe", path, "--from", tenant, "--to", SEED_INET, "--tcp", "1", "--udp", "2")
    assert res.returncode == 2


def test_probe_from_a_lab_that_is_not_up_says_so(uid, tmp_path):
    res = run_cli("probe", write(tmp_path, seed(uid)), "--from", f"t{uid}-tenant1", "--to", SEED_INET)
    assert res.returncode == 2 and "is not up" in res.stderr


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize("backend", BACKENDS)
def test_checks_hold_on_a_healthy_lab_and_fail_naming_the_check_when_it_breaks(make_lab, uid, backend,
                                                                                tmp_path):
    data = seed_with_checks(uid, backend)
    make_lab(data).up()
    tenant, vm, _ = names(uid)
    path = write(tmp_path, data)
    res = run_cli("check", path, "--json")
    assert res.returncode == 0, res.stdout
    report = json.loads(res.stdout)
    assert report["ok"] and report["failed"] == [] and report["total"] == 2
    assert report["checks"][0]["probe"]["source_seen"] == "198.51.100.116"
    assert report["checks"][1]["probe"]["error"] == "Network is unreachable"
    table = run_cli("check", path)
    assert table.returncode == 0 and "2 of 2 checks hold" in table.stdout

    # The router stops forwarding: the tenant's check fails, by name.
    nsexec.run(vm, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    res = run_cli("check", path)
    assert res.returncode == 1
    assert f"failed: checks[0] t{uid}-tenant1 -> {SEED_INET} icmp reachable" in " ".join(res.stdout.split())
    assert "checks[1]" not in res.stdout.split("failed:", 1)[1]
    report = json.loads(run_cli("check", path, "--json").stdout)
    assert report["failed"] == [0] and "expected reachable" in report["checks"][0]["problem"]
    nsexec.run(vm, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    assert run_cli("check", path).returncode == 0

    # The tenant loses its default route: fails at once, and says why.
    nsexec.run(tenant, ["ip", "route", "del", "default"])
    res = run_cli("check", path, "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["failed"] == [0]
    assert report["checks"][0]["problem"] == "expected reachable: Network is unreachable"


def test_a_check_fails_when_the_far_end_sees_another_source(make_lab, uid):
    data = seed_with_checks(uid, "nftables")
    data["checks"][0]["source"] = "198.51.100.117"
    data["checks"].append({"from": f"t{uid}-tenant1", "to": SEED_INET, "tcp": 8080, "expect": "blocked"})
    lab = make_lab(data)
    lab.up()
    report = run_checks(lab.topology)
    assert [r.holds for r in report.results] == [False, True, False]
    assert report.results[0].problem == (f"expected source 198.51.100.117, but t{uid}-inet saw 198.51.100.116")
    assert report.results[2].problem.startswith("expected blocked, but it was reachable")


def test_check_without_the_lab_up_exits_2(uid, tmp_path):
    res = run_cli("check", write(tmp_path, seed_with_checks(uid, "nftables")))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "is not up" in res.stderr


# --------------------------------------------------------------------------- counters


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_counters_move_when_traffic_passes(make_lab, uid, backend, tmp_path):
    data = seed(uid, backend)
    lab = make_lab(data)
    lab.up()
    tenant, vm, _ = names(uid)
    path = write(tmp_path, data)

    def counters():
        res = run_cli("status", path, "--counters", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        rows = json.loads(res.stdout)["counters"]
        assert [(c["router"], c["namespace"], c["backend"]) for c in rows] == [(vm, vm, backend)]
        by_comment = {r["comment"]: r for r in rows[0]["rules"]}
        snat = by_comment["natns snat tenant"]
        return snat["packets"], snat["bytes"]

    p0, b0 = counters()
    for proto, port in (("icmp", None), ("tcp", 8080), ("udp", 5353)):
        assert probe(lab.topology, tenant, SEED_INET, proto, port).ok
    p1, b1 = counters()
    # A NAT rule sees the first packet of each new connection: three probes, three packets
    # (84-byte echo request, 60-byte SYN, 56-byte datagram: 20 IP + 8 UDP + 28 probe token).
    assert p1 - p0 == 3 and b1 - b0 == 84 + 60 + 56
    # Traffic that does not leave by eth0 is not translated and does not count.
    assert probe(lab.topology, tenant, "192.0.2.3", "tcp", 22).ok
    assert counters()[0] == p1
    table = run_cli("status", path, "--counters")
    assert table.returncode == 0 and "natns snat tenant" in table.stdout


# --------------------------------------------------------------------------- a multi-router lab


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_routers_each_translate_to_their_own_address(make_lab, uid, backend, tmp_path):
    data = two_routers(uid, backend)
    inet = data["internet"]["namespace"]
    b1, g1, r1, r2 = (f"t{uid}b1", f"t{uid}g1", f"t{uid}r1", f"t{uid}r2")
    data["checks"] = [
        {"from": b1, "to": "203.0.113.115", "tcp": 8080, "source": "198.51.100.10"},
        {"from": g1, "to": "203.0.113.115", "udp": 5353, "source": "198.51.100.20"},
        {"from": b1, "to": "192.0.2.130", "source": "192.0.2.10"},  # between networks: not translated
        {"from": inet, "to": "192.0.2.10", "expect": "blocked"},
        {"from": g1, "to": "192.0.2.130", "expect": "blocked"},  # red is behind the other router
    ]
    lab = make_lab(data)
    lab.up()
    path = write(tmp_path, data)
    res = run_cli("check", path, "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0, [c["problem"] for c in report["checks"]]
    assert [c["probe"]["source_seen"] for c in report["checks"][:3]] == [
        "198.51.100.10", "198.51.100.20", "192.0.2.10"]

    # Capture from g1: the path goes through r2, where the source becomes r2's address.
    run = capture(lab.topology, g1, to="203.0.113.115")
    assert run.points == path_points(lab.topology, g1, "203.0.113.115") == [
        (g1, "eth0"), (r2, "qr-green"), (r2, "eth0"), (inet, "ext")]
    req = {r.packet.point: r.packet.src for r in run.rows if r.packet.icmp_type == 8}
    assert req == {f"{g1}:eth0": "192.0.2.10", f"{r2}:qr-green": "192.0.2.10",
                   f"{r2}:eth0": "198.51.100.20", f"{inet}:ext": "198.51.100.20"}

    # Both routers' tables, through the CLI: each holds only its own tenant's flow.
    b1_probe = probe(lab.topology, b1, "203.0.113.114")
    g1_probe = probe(lab.topology, g1, "203.0.113.114")
    tables = {t["router"]: t for t in json.loads(run_cli("conntrack", path, "--json").stdout)["routers"]}
    assert set(tables) == {r1, r2}

    def snat_of(router, flow):
        hits = [e for e in tables[router]["entries"] if e["original"]["icmp_id"] == flow["icmp_id"]
                and e["original"]["src"] == "192.0.2.10"]
        return [n["to"] for e in hits for n in e["nat"]]

    assert snat_of(r1, b1_probe.flow) == ["198.51.100.10"]
    assert snat_of(r2, g1_probe.flow) == ["198.51.100.20"]
    assert snat_of(r1, g1_probe.flow) == [] and snat_of(r2, b1_probe.flow) == []

    # Counters, per router.
    rows = json.loads(run_cli("status", path, "--counters", "--json").stdout)["counters"]
    snat = {c["router"]: {r["comment"]: r["packets"] for r in c["rules"] if r["comment"].startswith("natns snat")}
            for c in rows}
    assert set(snat) == {r1, r2}
    assert set(snat[r1]) == {"natns snat blue", "natns snat red"} and set(snat[r2]) == {"natns snat green"}
    # b1 (blue) made two connections out (the TCP check, a ping), g1 (green) three (UDP, capture, ping).
    assert snat[r1]["natns snat blue"] >= 2 and snat[r2]["natns snat green"] >= 3
    assert tcpdumps_for(f"t{uid}") == []


# --------------------------------------------------------------------------- show


def test_show_svg_is_well_formed_and_names_every_namespace(uid, tmp_path):
    for data in (seed(uid), two_routers(uid)):
        path = write(tmp_path, data)
        out = tmp_path / f"{data['name']}.svg"
        res = run_cli("show", path, "--format", "svg", "-o", str(out))
        assert res.returncode == 0, res.stderr
        root = ET.parse(out).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        for ns in lab_namespaces(data):
            assert ns in text.split(), (ns, text)
    # Nothing was built: show reads the file only.
    assert existing(lab_namespaces(seed(uid))) == []


def test_no_natns_thread_is_left_running_after_probes(make_lab, uid):
    data = seed(uid)
    lab = make_lab(data)
    lab.up()
    tenant, _, _ = names(uid)
    for proto, port in (("icmp", None), ("tcp", 8080), ("udp", 5353)):
        probe(lab.topology, tenant, SEED_INET, proto, port)
    assert [t.name for t in threading.enumerate() if t.name.startswith("natns")] == []


# --------------------------------------------------------------------------- destination NAT


def test_probe_capture_and_conntrack_follow_floating_ips_and_port_forwards(make_lab, uid):
    data = seed(uid)
    tenant, vm, inet = names(uid)
    data["floating_ips"] = [{"router": vm, "address": "198.51.100.50", "host": "192.0.2.2"}]
    data["port_forwards"] = [{"router": vm, "protocol": "tcp", "port": 8080, "to": "192.0.2.2:80"}]
    lab = make_lab(data)
    lab.up()
    t = lab.topology
    # From the internet to the floating IP: the tenant answers, and sees the internet's address.
    r = probe(t, inet, "198.51.100.50", "tcp", 22)
    assert r.ok and r.far_end == tenant and r.far_end_address == "192.0.2.2:22"
    assert r.source_seen == "198.51.100.1"
    # A port forward on the router's own address.
    fwd = probe(t, inet, "198.51.100.116", "tcp", 8080)
    assert fwd.ok and fwd.far_end == tenant and fwd.far_end_address == "192.0.2.2:80"
    assert fwd.source_seen == "198.51.100.1"
    # The tenant's own traffic now leaves with its floating IP.
    assert probe(t, tenant, SEED_INET).source_seen == "198.51.100.50"
    # conntrack names the DNAT and where it goes.
    e = next(e for e in ct.table(vm).entries
             if e.protocol == "tcp" and e.original.sport == fwd.flow["sport"])
    assert e.original.endpoint("dst") == "198.51.100.116:8080"
    assert e.reply.endpoint("src") == "192.0.2.2:80"
    assert [(n.kind, n.before, n.after) for n in e.nat] == [("DNAT", "198.51.100.116:8080", "192.0.2.2:80")]
    # The capture follows the packet to the host and shows where the destination changes.
    run = capture(t, inet, to="198.51.100.50")
    assert run.points == [(inet, "ext"), (vm, "eth0"), (vm, "qr-tenant"), (tenant, "eth0")]
    req = {r.packet.point: r for r in run.rows if r.packet.icmp_type == 8}
    assert req[f"{vm}:eth0"].packet.dst == "198.51.100.50"
    assert req[f"{vm}:qr-tenant"].packet.dst == "192.0.2.2" and "dst" in req[f"{vm}:qr-tenant"].changed
    assert req[f"{tenant}:eth0"].packet.src == "198.51.100.1"
    for ns in names(uid):
        assert listening(ns) == []
