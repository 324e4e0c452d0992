"""`natns trace` on a real seed lab, both backends: hooks, rules, rewrites, reply, cleanup.

Every lab has unique names and is taken down afterwards, pass or fail. Only
the lab's namespaces are traced or changed (rules added by hand go into the
router namespace); nft never runs in the namespace pytest runs in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from natns import Lab, down_lab, topology
from natns.explain import trace as T
from natns.kernel import netns as kns
from natns.kernel import nsexec

from .labs import SEED_INET, PeerServer, existing, lab_namespaces, seed

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
SNAT_COMMENT = "natns snat tenant"


@pytest.fixture
def seed_lab(uid):
    """Factory: bring up the seed lab with a backend; (tenant, vm, inet). Taken down afterwards."""
    made = []

    def make(backend: str) -> tuple[str, str, str]:
        data = seed(uid, backend)
        lab = Lab(topology.parse(data, "test.yaml"))
        made.append((lab.name, lab_namespaces(data)))
        lab.up()
        return f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"

    yield make
    for name, names in made:
        down_lab(name)
        assert existing(names) == [], f"namespaces left behind: {existing(names)}"


def trace_tables(names) -> list[str]:
    """Namespaces among `names` that still have table ip natns_trace (asks nft in each)."""
    return [ns for ns in names
            if f"table ip {T.TABLE}" in nsexec.run(ns, ["nft", "list", "tables"]).stdout.splitlines()]


def monitors_in(names) -> list[int]:
    """Pids of `nft ... monitor` processes running in one of the namespaces `names`."""
    inodes = {os.stat(os.path.join("/run/netns", n)).st_ino for n in names if kns.exists(n)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if not argv or os.path.basename(argv[0]) != b"nft" or b"monitor" not in argv:
                continue
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                found.append(int(pid))
        except OSError:
            continue
    return found


def assert_clean(names) -> None:
    assert trace_tables(names) == []
    assert monitors_in(names) == []


def hooks(hop) -> list[str]:
    return [h.hook for h in hop.hooks]


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_shows_snat_in_the_router_and_the_reverse_translation(seed_lab, backend):
    tenant, vm, inet = names = seed_lab(backend)
    t = T.trace(tenant, SEED_INET)  # namespaces from the path walker

    assert t.namespaces == [tenant, vm, inet]
    assert t.probe.answered and t.probe.result == "reply" and t.ok
    assert t.probe.src == "192.0.2.2"

    # The request: tenant output/postrouting, the router's prerouting -> forward -> postrouting, inet input.
    req = t.request
    assert req.outcome == "delivered" and req.delivered_to == inet
    assert [h.ns for h in req.hops] == [tenant, vm, inet]
    h_tenant, h_vm, h_inet = req.hops
    assert h_tenant.origin and hooks(h_tenant) == ["output", "postrouting"]
    assert h_tenant.out_iface == "eth0" and h_tenant.route.startswith("default via 192.0.2.3 dev eth0")
    assert hooks(h_vm) == ["prerouting", "forward", "postrouting"]
    assert (h_vm.in_iface, h_vm.out_iface) == ("qr-tenant", "eth0")
    assert h_vm.route.startswith("default via 198.51.100.1 dev eth0")

    post = h_vm.hook("postrouting")
    (rw,) = post.rewrites
    assert (rw.field, rw.before, rw.after, rw.by) == ("saddr", "192.0.2.2", "198.51.100.116", "rule")
    assert post.before["ip saddr"] == "192.0.2.2" and post.after["ip saddr"] == "198.51.100.116"
    rule = rw.rule  # natns's SNAT rule, named
    if backend == "nftables":
        assert (rule.table, rule.chain) == ("natns", "postrouting")
        assert 'oifname "eth0" ip saddr 192.0.2.0/24' in rule.rule and "masquerade" in rule.rule
        assert rule.rule.endswith(f'comment "{SNAT_COMMENT}"')
    else:
        assert (rule.table, rule.chain) == ("nat", "natns-POSTROUTING")
        assert "masquerade" in rule.rule
        assert rule.iptables.startswith("-A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 ")
        assert rule.iptables.endswith(f'--comment "{SNAT_COMMENT}" -j MASQUERADE')
        # The jump into natns's chain is shown too.
        assert any(h.rule == "counter jump natns-POSTROUTING" for c in post.chains for h in c.hits)
    assert rule.verdict == "accept"
    assert h_inet.local and hooks(h_inet) == ["prerouting", "input"] and h_inet.in_iface == "ext"
    assert h_inet.hooks[0].before["ip saddr"] == "198.51.100.116"

    # The reply: back through the router, where conntrack undoes the SNAT.
    rep = t.reply
    assert rep.outcome == "delivered" and rep.delivered_to == tenant
    assert [h.ns for h in rep.hops] == [inet, vm, tenant]
    assert rep.hops[0].origin and hooks(rep.hops[0]) == ["output", "postrouting"]
    r_vm = rep.hop(vm)
    assert hooks(r_vm) == ["prerouting", "forward", "postrouting"]
    (back,) = r_vm.rewrites
    assert (back.hook, back.field, back.before, back.after, back.by) == (
        "prerouting", "daddr", "198.51.100.116", "192.0.2.2", "conntrack")
    assert hooks(rep.hop(tenant)) == ["prerouting", "input"]

    # The conntrack entry that did it, in the router.
    (ct,) = t.conntrack
    e = ct.entry
    assert ct.ns == vm and e.protocol == "icmp" and e.original.icmp_id == t.probe.icmp_id
    assert (e.original.src, e.original.dst) == ("192.0.2.2", SEED_INET)
    assert (e.reply.src, e.reply.dst) == (SEED_INET, "198.51.100.116")
    assert [n.kind for n in e.nat] == ["SNAT"]
    assert back.conntrack == ct.text()

    text = T.render(t)
    assert "rewrite: saddr 192.0.2.2 → 198.51.100.116" in text
    assert "rewrite: daddr 198.51.100.116 → 192.0.2.2" in text
    assert_clean(names)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forward_drop_added_by_hand_is_the_verdict_that_stops_the_packet(seed_lab, uid, backend):
    tenant, vm, inet = names = seed_lab(backend)
    if backend == "nftables":
        nsexec.run(vm, ["nft", "-f", "-"], input=(
            f"table ip t{uid}drop {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            '    ip saddr 192.0.2.0/24 counter drop comment "test forward drop"\n'
            "  }\n"
            "}\n"))
    else:
        # Inserted first: natns's own jump into natns-FORWARD would accept the packet before an appended rule.
        nsexec.run(vm, ["iptables", "-I", "FORWARD", "1", "-s", "192.0.2.0/24",
                        "-m", "comment", "--comment", "test forward drop", "-j", "DROP"])

    t = T.trace(tenant, SEED_INET, timeout=0.5)

    assert not t.ok and not t.probe.answered
    req = t.request
    assert req.outcome == "dropped" and [h.ns for h in req.hops] == [tenant, vm]
    stop = req.stop
    assert (stop.ns, stop.hook, stop.verdict) == (vm, "forward", "drop")
    assert stop.hit.verdict == "drop"
    if backend == "nftables":
        assert (stop.hit.table, stop.hit.chain) == (f"t{uid}drop", "forward")
        assert stop.hit.rule == 'ip saddr 192.0.2.0/24 counter drop comment "test forward drop"'
    else:
        assert (stop.hit.table, stop.hit.chain) == ("filter", "FORWARD")
        assert stop.hit.iptables == '-A FORWARD -s 192.0.2.0/24 -m comment --comment "test forward drop" -j DROP'
    assert "test forward drop" in stop.reason
    assert req.hop(vm).hook("forward").verdict == "drop"
    assert req.hop(vm).hook("postrouting") is None and t.reply is None
    assert "→ DROP" in T.render(t)
    assert_clean(names)


def test_iptables_legacy_rules_are_flagged_as_not_traceable(seed_lab):
    tenant, vm, inet = names = seed_lab("nftables")
    nsexec.run(vm, ["iptables-legacy", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP"])

    t = T.trace(tenant, SEED_INET, timeout=0.5)

    assert vm in t.legacy and "1 rule" in t.legacy[vm]
    assert any("iptables-legacy" in n and vm in n for n in t.notes)
    req = t.request
    assert req.outcome == "lost" and req.stop.ns == vm and req.stop.hook == "forward"
    assert not req.hop(vm).hook("forward").complete  # seen entering forward, never leaving it
    assert "iptables-legacy" in req.stop.reason
    assert req.hop(vm).iptables_legacy
    assert_clean(names)


def test_tcp_trace_to_a_listening_server_shows_ports_and_the_entry(seed_lab):
    tenant, vm, inet = names = seed_lab("nftables")
    with PeerServer(inet, SEED_INET, 8080):
        t = T.trace(tenant, SEED_INET, "tcp", 8080)
    assert t.probe.result == "connected" and t.ok
    first = t.request.hops[0].hooks[0].before
    assert first["tcp dport"] == "8080" and first["tcp flags"] == "syn"
    assert first["tcp sport"] == str(t.probe.sport)
    (rw,) = t.request.hop(vm).rewrites
    assert (rw.field, rw.after) == ("saddr", "198.51.100.116")
    assert T.tcp_flags(t.reply.hops[0].hooks[0].before["tcp flags"]) == "syn|ack"
    (ct,) = t.conntrack
    assert ct.ns == vm and ct.entry.original.sport == t.probe.sport and ct.entry.original.dport == 8080
    assert ct.entry.reply.dst == "198.51.100.116"
    assert_clean(names)


def test_cli_json_and_exit_status(seed_lab):
    tenant, vm, inet = names = seed_lab("iptables")
    proc = subprocess.run([sys.executable, "-m", "natns.cli", "trace", "--from", tenant, "--to", SEED_INET,
                           "--json"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["from"] == tenant and doc["to"] == SEED_INET
    assert doc["namespaces"] == [tenant, vm, inet]
    assert doc["probe"]["protocol"] == "icmp" and doc["probe"]["src"] == "192.0.2.2"
    hop = doc["request"]["hops"][1]
    assert hop["namespace"] == vm and [h["hook"] for h in hop["hooks"]] == ["prerouting", "forward", "postrouting"]
    (rw,) = hop["hooks"][2]["rewrites"]
    assert (rw["field"], rw["before"], rw["after"], rw["by"]) == ("saddr", "192.0.2.2", "198.51.100.116", "rule")
    assert rw["rule"]["iptables"].endswith("-j MASQUERADE")
    (back,) = doc["reply"]["hops"][1]["hooks"][0]["rewrites"]
    assert (back["field"], back["after"], back["by"]) == ("daddr", "192.0.2.2", "conntrack")
    assert doc["conntrack"][0]["namespace"] == vm and doc["conntrack"][0]["nat"][0]["type"] == "SNAT"

    nsexec.run(vm, ["iptables", "-I", "FORWARD", "-j", "DROP"])
    proc = subprocess.run([sys.executable, "-m", "natns.cli", "trace", "--from", tenant, "--to", SEED_INET,
                           "--timeout", "0.3"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "stopped: dropped in" in proc.stdout and "-A FORWARD -j DROP" in proc.stdout

    bad = subprocess.run([sys.executable, "-m", "natns.cli", "trace", "--from", tenant, "--to", SEED_INET,
                          "--tcp", "80", "--udp", "53"], check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert_clean(names)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_trace_removes_its_tables_and_monitors(seed_lab, sig):
    tenant, vm, inet = names = seed_lab("nftables")
    nsexec.run(vm, ["nft", "add", "table", "ip", "tdrop"])
    nsexec.run(vm, ["nft", "add", "chain", "ip", "tdrop", "forward",
                    "{ type filter hook forward priority 0; policy drop; }"])
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "trace", "--from", tenant, "--to", SEED_INET,
                             "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # tracing is on once the monitors run in every namespace
            if len(monitors_in(names)) == 3 and len(trace_tables(names)) == 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("trace did not start")
        time.sleep(0.3)  # the probe is out, waiting for its (dropped) answer
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert_clean(names)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_through_a_port_forward_follows_the_packet_to_the_tenant(uid, backend, make_lab):
    """The path walker alone stops at the router (the external address is its own); the
    trace follows the DNAT (nft map or iptables rule) to the tenant behind it, traces it
    there, and shows the destination and port rewritten in the router."""
    from .labs import mapped

    data = mapped(uid, backend)
    make_lab(data).up()
    t2, vm, inet = f"t{uid}-tenant2", f"t{uid}-vm", f"t{uid}-inet"
    with PeerServer(t2, "192.0.2.4", 80):
        t = T.trace(inet, "198.51.100.116", "tcp", 8080)
    assert t.probe.result == "connected" and t.ok
    assert t2 in t.namespaces
    assert [h.ns for h in t.request.hops][-1] == t2
    rewrites = {(rw.field, rw.before, rw.after) for rw in t.request.hop(vm).rewrites}
    assert {("daddr", "198.51.100.116", "192.0.2.4"), ("dport", "8080", "80")} <= rewrites, rewrites
    assert_clean([inet, vm, t2])
