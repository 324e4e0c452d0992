"""`uplink: host`, exercised only inside a throwaway namespace that plays the host.

natns is run with its network namespace set to the play-host (nsenter), so
"the namespace natns runs in" is that namespace, never this machine's own.
A second namespace plays the world beyond the host.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from natns.verify.probe import ping, tcp_connect
from natns.kernel import nsexec

from .labs import PeerServer, existing, kernel_dump, write

pytestmark = pytest.mark.root


def uplink_topology(uid: str, backend: str) -> dict:
    return {
        "name": f"up{uid}",
        "backend": backend,
        "routers": [{"name": f"t{uid}-vm",
                     "external": {"interface": "eth0", "address": "198.51.100.2/30",
                                  "gateway": "198.51.100.1", "uplink": "host"}}],
        "networks": [{"name": "tenant", "router": f"t{uid}-vm", "cidr": "192.0.2.0/24",
                      "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"t{uid}-tenant1", "address": "192.0.2.10"}]}],
    }


def natns_in(host_ns: str, *args) -> subprocess.CompletedProcess:
    argv = ["nsenter", f"--net=/run/netns/{host_ns}", "--", sys.executable, "-m", "natns.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture
def play_host(scratch_ns):
    """(host, world): the host reaches the world over wan0 (203.0.113.2 -> .1)."""
    host, world = scratch_ns("host"), scratch_ns("world")
    for ns in (host, world):
        # No IPv6 autoconfiguration: its DAD timers would make before/after dumps differ.
        nsexec.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"])
    nsexec.run(host, ["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns", world])
    nsexec.run(host, ["ip", "addr", "add", "203.0.113.2/24", "dev", "wan0"])
    nsexec.run(world, ["ip", "addr", "add", "203.0.113.1/24", "dev", "wan0"])
    for ns in (host, world):
        nsexec.run(ns, ["ip", "link", "set", "wan0", "up"])
        nsexec.run(ns, ["ip", "link", "set", "lo", "up"])
    nsexec.run(host, ["ip", "route", "add", "default", "via", "203.0.113.1"])
    return host, world


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_uplink_host_reaches_beyond_the_host_and_down_restores_it(play_host, uid, backend, tmp_path):
    host, world = play_host
    data = uplink_topology(uid, backend)
    path = write(tmp_path, data)
    fwd = ["sysctl", "-n", "net.ipv4.ip_forward"]
    assert nsexec.run(host, fwd).stdout.strip() == "0"
    before = kernel_dump(host)
    try:
        res = natns_in(host, "up", path)
        assert res.returncode == 0, res.stderr
        assert nsexec.run(host, fwd).stdout.strip() == "1"
        tenant = f"t{uid}-tenant1"
        assert ping(tenant, "203.0.113.1").ok
        with PeerServer(world, "203.0.113.1", 8080):
            # Translated twice: by the router to 198.51.100.2, by the host to 203.0.113.2.
            assert tcp_connect(tenant, "203.0.113.1", 8080) == b"203.0.113.2"
        again = natns_in(host, "up", path)
        assert again.returncode == 0 and "no changes" in again.stdout
        st = natns_in(host, "status", path)
        assert st.returncode == 0, st.stdout
        # Drift in the host is seen and repaired.
        nsexec.run(host, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        assert natns_in(host, "status", path).returncode == 1
        assert natns_in(host, "up", path).returncode == 0
        assert nsexec.run(host, fwd).stdout.strip() == "1"
        down = natns_in(host, "down", path)
        assert down.returncode == 0, down.stderr
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert existing([f"t{uid}-vm", f"t{uid}-tenant1"]) == []
    assert nsexec.run(host, fwd).stdout.strip() == "0"
    assert kernel_dump(host) == before


def test_uplink_host_keeps_forwarding_that_was_already_on(play_host, uid, tmp_path):
    host, _ = play_host
    nsexec.run(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    data = uplink_topology(uid, "nftables")
    path = write(tmp_path, data)
    try:
        assert natns_in(host, "up", path).returncode == 0
        assert natns_in(host, "down", path).returncode == 0
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert nsexec.run(host, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"


@pytest.mark.parametrize("backend,host_fw", [("nftables", "docker"), ("iptables", "docker"), ("nftables", "nft")])
def test_a_host_whose_forward_policy_drops_gets_a_warning_with_the_fix(play_host, uid, backend, host_fw, tmp_path):
    """On a Docker-like host (filter FORWARD policy DROP, a DOCKER-USER chain) or one with
    its own nft forward chain dropping by policy, natns's forward scope can't let the
    uplink's traffic through and natns touches no foreign rule: `up` succeeds and warns,
    naming the policy and the commands that allow it; run in the host, they do. Nothing is
    said on a host that forwards."""
    import json
    import shlex

    host, world = play_host
    data = uplink_topology(uid, backend)
    path = write(tmp_path, data)
    tenant = f"t{uid}-tenant1"
    try:
        res = natns_in(host, "up", path)
        assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
        assert ping(tenant, "203.0.113.1").ok
        if host_fw == "docker":
            cmds = [["iptables", "-N", "DOCKER-USER"], ["iptables", "-A", "FORWARD", "-j", "DOCKER-USER"],
                    ["iptables", "-P", "FORWARD", "DROP"]]
            policy, chain = "DROP policy of iptables-nft chain FORWARD", " DOCKER-USER "
        else:
            cmds = [["nft", "add", "table", "inet", "mine"],
                    ["nft", "add", "chain", "inet", "mine", "guard",
                     "{ type filter hook forward priority 0; policy drop; }"]]
            policy, chain = "drop policy of chain guard in table inet mine", "nft insert rule inet mine guard "
        for cmd in cmds:
            nsexec.run(host, cmd)
        assert not ping(tenant, "203.0.113.1").ok
        res = natns_in(host, "up", path)
        assert res.returncode == 0 and "no changes" in res.stdout, res.stderr
        warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 2, res.stderr  # new connections out, and their replies
        assert all(policy in w for w in warnings), warnings
        js = json.loads(natns_in(host, "up", path, "--json").stdout)
        fixes = [c for w in js["warnings"] for c in w["fix"]]
        assert [w["direction"] for w in js["warnings"]] == ["out", "reply"]
        assert all(chain in c for c in fixes), fixes
        # doctor, asked from the tenant, names the same cause in the host, with the same fix
        doc = json.loads(natns_in(host, "doctor", "--from", tenant, "--to", "203.0.113.1", "--json").stdout)
        errors = [f for f in doc["findings"] if f["severity"] == "error"]
        assert [(f["code"], f["namespace"]) for f in errors] == [("forward-drop", "(host)")] * 2, errors
        assert sorted(c for f in errors for c in f["fix"]) == sorted(fixes)
        assert doc["probe"]["ok"] is False
        for c in fixes:
            nsexec.run(host, shlex.split(c))
        assert ping(tenant, "203.0.113.1").ok
        doc = natns_in(host, "doctor", "--from", tenant, "--to", "203.0.113.1")
        assert doc.returncode == 0, doc.stdout
        res = natns_in(host, "up", path)
        assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert existing([f"t{uid}-vm", tenant]) == []


def test_under_ip_netns_exec_natns_refuses_to_make_namespaces_that_would_vanish(play_host, uid, tmp_path):
    """`ip netns exec` gives its command a mount namespace whose mounts don't propagate back:
    namespaces natns made there would be gone, leaving empty files, when it exits. natns
    refuses before any change (exit 2, one line pointing to nsenter); with nsenter it works,
    and `down` says what it undid in the host apart from the namespaces it removed."""
    host, _ = play_host
    data = uplink_topology(uid, "nftables")
    path = write(tmp_path, data)
    names = [f"t{uid}-vm", f"t{uid}-tenant1"]
    before = kernel_dump(host)
    try:
        res = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m", "natns.cli", "up", path],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "nsenter --net=" in res.stderr, res.stderr
        assert existing(names) == [] and kernel_dump(host) == before  # nothing made, not even a file
        assert natns_in(host, "up", path).returncode == 0
        down = natns_in(host, "down", path)
        assert down.returncode == 0, down.stderr
        text = " ".join(down.stdout.split())
        assert f"removed namespaces {names[1]}, {names[0]};" in text, text
        assert "undid 3 change(s) in the namespace natns runs in" in text and "sysctl -w net.ipv4.ip_forward=0" in text
    finally:
        natns_in(host, "down", "--lab", data["name"])
    assert existing(names) == []
