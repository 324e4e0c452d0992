"""natns doctor on setups broken by hand, the way the seed built its own.

Every setup here is made with plain `ip`, `iptables`, `nft` and `sysctl`
commands (argument lists, run in the test's own namespaces; no `natns up`),
so doctor is shown to work on namespaces natns did not build. Each test
breaks one thing, asserts that doctor names that cause first with the
evidence and a fix, runs the fix commands doctor printed, and asserts that
doctor then finds nothing and a real probe passes.

Addresses: the seed's, in documentation ranges. tenant 192.0.2.2/24 -- veth --
192.0.2.3/24 router (vm) 198.51.100.116/24 -- veth -- 198.51.100.1/24 inet,
which also holds 203.0.113.114/32 on lo (the seed's 114.114.114.114).
"""

from __future__ import annotations

import json
import shlex
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

import pytest

from natns import Lab, down_lab, topology
from natns.errors import UserError
from natns.verify import probe
from natns.explain.doctor import diagnose
from natns.kernel import nsexec

from .labs import PeerServer, existing, lab_namespaces, natns, seed, write

pytestmark = pytest.mark.root

INET = "203.0.113.114"


def run(ns: str, *argv: str) -> subprocess.CompletedProcess:
    return nsexec.run(ns, list(argv))


@dataclass
class Seed:
    tenant: str
    vm: str
    inet: str

    @property
    def names(self) -> list[str]:
        return [self.tenant, self.vm, self.inet]


def build_seed(scratch_ns, *, default_route: bool = True, snat: bool = True, forward: bool = True) -> Seed:
    """The seed's setup, by the seed's own commands (in documentation addresses).

    The VM of the seed is the namespace `vm`; its outside (eth0, and the
    internet behind it) is a veth to the namespace `inet`.
    """
    s = Seed(scratch_ns("tenant"), scratch_ns("vm"), scratch_ns("inet"))
    # ip link add veth0 type veth peer name veth1; ip link set veth1 netns lihui_namespace
    run(s.vm, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
    run(s.vm, "ip", "link", "set", "veth1", "netns", s.tenant)
    # ifconfig veth1 1.1.1.2 netmask 255.255.255.0 up (inside the namespace)
    run(s.tenant, "ip", "addr", "add", "192.0.2.2/24", "dev", "veth1")
    run(s.tenant, "ip", "link", "set", "veth1", "up")
    run(s.tenant, "ip", "link", "set", "lo", "up")
    # ifconfig veth0 1.1.1.3 netmask 255.255.255.0 up (on the VM)
    run(s.vm, "ip", "addr", "add", "192.0.2.3/24", "dev", "veth0")
    run(s.vm, "ip", "link", "set", "veth0", "up")
    run(s.vm, "ip", "link", "set", "lo", "up")
    # the VM's eth0 and the world behind it
    run(s.vm, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s.inet)
    run(s.vm, "ip", "addr", "add", "198.51.100.116/24", "dev", "eth0")
    run(s.vm, "ip", "link", "set", "eth0", "up")
    run(s.vm, "ip", "route", "add", "default", "via", "198.51.100.1")
    run(s.inet, "ip", "addr", "add", "198.51.100.1/24", "dev", "eth0")
    run(s.inet, "ip", "link", "set", "eth0", "up")
    run(s.inet, "ip", "link", "set", "lo", "up")
    run(s.inet, "ip", "addr", "add", f"{INET}/32", "dev", "lo")
    run(s.vm, "sysctl", "-w", "net.ipv4.ip_forward=0")
    if default_route:  # route add default gw 1.1.1.3
        run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.3")
    if snat:  # iptables -t nat -A POSTROUTING -s 1.1.1.0/24 -j SNAT --to-source 192.168.38.116
        run(s.vm, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "SNAT",
            "--to-source", "198.51.100.116")
    if forward:  # echo 1 > /proc/sys/net/ipv4/ip_forward
        run(s.vm, "sysctl", "-w", "net.ipv4.ip_forward=1")
    return s


def apply_fixes(commands: list[str], ours: list[str]) -> None:
    """Run doctor's fix commands as argument lists, only against the test's own namespaces."""
    assert commands, "doctor printed no fix"
    for c in commands:
        argv = shlex.split(c)
        if argv[:2] == ["ip", "-n"]:
            assert argv[2] in ours, c
        else:
            assert argv[:3] == ["ip", "netns", "exec"] and argv[3] in ours, c
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def assert_healthy(ns: str, dst: str = INET, allow: tuple[str, ...] = (), **kw) -> None:
    r = diagnose(ns, dst, **kw)
    left = [f for f in r.findings if f.code not in allow]
    assert left == [], [(f.code, f.summary) for f in left]
    assert r.probe.ok, r.probe.detail
    assert r.exit_status == 0
    assert r.path.complete and r.reply_complete


def codes(r) -> list[str]:
    return [f.code for f in r.findings]


# --------------------------------------------------------------------------
# The seed, step by step


def test_seed_steps_each_cause_first_then_fixed(scratch_ns):
    s = build_seed(scratch_ns, default_route=False, snat=False, forward=False)

    # (1) ping: connect: Network is unreachable -- no default route in the tenant
    r = diagnose(s.tenant, INET)
    first = r.findings[0]
    assert first.code == "no-route" and first.severity == "error" and first.namespace == s.tenant
    assert "Network is unreachable" in first.evidence["ip route get"]
    assert first.evidence["routes"] == ["192.0.2.0/24 dev veth1 proto kernel scope link src 192.0.2.2"]
    assert first.fix == [f"ip -n {s.tenant} route add default via 192.0.2.3"]
    assert not r.probe.ok and "Network is unreachable" in r.probe.detail
    assert r.exit_status == 1
    assert not r.path.complete and r.path.stop == f"no route to {INET} in {s.tenant}"
    apply_fixes(first.fix, s.names)  # the seed's own step: route add default gw 1.1.1.3

    # (2) 100% loss: ip_forward is 0 in the VM (the packet dies there first), and no SNAT
    r = diagnose(s.tenant, INET)
    assert codes(r)[:2] == ["ip-forward-off", "no-snat"], codes(r)
    fwd, nosnat = r.findings[:2]
    assert fwd.namespace == s.vm and fwd.evidence["net.ipv4.ip_forward"] == "0"
    assert fwd.fix == [f"ip netns exec {s.vm} sysctl -w net.ipv4.ip_forward=1"]
    assert nosnat.namespace == s.vm and nosnat.severity == "error"
    assert nosnat.evidence["source as it arrives"] == "192.0.2.2"
    assert nosnat.fix == [f"ip netns exec {s.vm} iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -o eth0 -j MASQUERADE"]
    assert not r.probe.ok and r.exit_status == 1
    # the seed adds SNAT next, in its own words
    run(s.vm, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "SNAT",
        "--to-source", "198.51.100.116")

    # (3) still 100% loss: ip_forward; SNAT is now seen on the path
    r = diagnose(s.tenant, INET)
    assert codes(r) == ["ip-forward-off"], codes(r)
    assert [(n.ns, n.before, n.after) for n in r.nat] == [(s.vm, "192.0.2.2", "198.51.100.116")]
    assert not r.probe.ok and r.exit_status == 1
    apply_fixes(r.findings[0].fix, s.names)

    # (4) it works: doctor is quiet and a real ping passes
    assert_healthy(s.tenant)
    assert probe.ping(s.tenant, INET, count=3).received == 3


def test_seed_step2_fixes_as_printed(scratch_ns):
    """Both fixes doctor prints at step 2 (MASQUERADE and ip_forward) make the seed work."""
    s = build_seed(scratch_ns, snat=False, forward=False)
    r = diagnose(s.tenant, INET)
    apply_fixes([c for f in r.findings for c in f.fix], s.names)
    assert_healthy(s.tenant)
    out = run(s.vm, "iptables-save", "-t", "nat").stdout
    assert "-A POSTROUTING -s 192.0.2.0/24 -o eth0 -j MASQUERADE" in out


def test_healthy_seed_has_no_finding_for_icmp_tcp_udp(scratch_ns):
    s = build_seed(scratch_ns)
    assert_healthy(s.tenant)
    with PeerServer(s.inet, INET, 8080) as srv:
        r = diagnose(s.tenant, INET, proto="tcp", port=8080)
        assert r.findings == [] and r.probe.ok and r.probe.detail.startswith("connected")
        for _ in range(40):
            if srv.seen:
                break
            time.sleep(0.05)
        assert srv.seen == ["198.51.100.116"]  # a real connection, from the translated source
    r = diagnose(s.tenant, INET, proto="udp", port=9)
    assert r.findings == [] and r.probe.ok is True and "port unreachable" in r.probe.detail
    assert r.exit_status == 0


# --------------------------------------------------------------------------
# One test per other finding


def test_forward_drop_rule_is_named(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-p", "icmp", "-j", "DROP")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "forward-drop" and f.namespace == s.vm and f.severity == "error"
    assert f.evidence["table"] == "filter" and f.evidence["chain"] == "FORWARD"
    assert f.evidence["rule"] == "-A FORWARD -s 192.0.2.0/24 -p icmp -j DROP"
    assert f.fix == [f"ip netns exec {s.vm} iptables -t filter -D FORWARD -s 192.0.2.0/24 -p icmp -j DROP"]
    assert not r.probe.ok and r.exit_status == 1
    # only ICMP is dropped: doctor's TCP check does not blame the rule
    assert "forward-drop" not in codes(diagnose(s.tenant, INET, proto="tcp", port=80, probe=False))
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


def test_forward_policy_drop_in_nftables_both_directions(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "nft", "add", "table", "inet", "guard")
    run(s.vm, "nft", "add", "chain", "inet", "guard", "fwd_filter",
        "{ type filter hook forward priority filter; policy drop; }")
    r = diagnose(s.tenant, INET)
    drops = [f for f in r.findings if f.code == "forward-drop"]
    assert r.findings[0] is drops[0]
    assert [f.direction for f in drops] == ["forward", "reply"]
    assert drops[0].evidence["policy"] == "drop" and drops[0].evidence["chain"] == "fwd_filter"
    assert drops[0].evidence["table"] == "inet guard"
    assert drops[0].fix == [(f"ip netns exec {s.vm} nft insert rule inet guard fwd_filter ip saddr 192.0.2.2 "
                             f"ip daddr {INET} icmp type echo-request accept")]
    assert drops[1].fix == [(f"ip netns exec {s.vm} nft insert rule inet guard fwd_filter ct state "
                             "established,related accept")]
    apply_fixes(drops[0].fix, s.names)
    r = diagnose(s.tenant, INET)
    assert codes(r) == ["forward-drop"] and r.findings[0].direction == "reply" and not r.probe.ok
    apply_fixes(r.findings[0].fix, s.names)
    assert_healthy(s.tenant)


def test_nft_drop_rule_named_by_handle(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "nft", "add", "table", "ip", "guard")
    run(s.vm, "nft", "add", "chain", "ip", "guard", "c", "{ type filter hook forward priority 0; }")
    run(s.vm, "nft", "add", "rule", "ip", "guard", "c", "ip", "daddr", "203.0.113.0/24", "counter", "drop")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "forward-drop" and f.evidence["rule"] == "ip daddr 203.0.113.0/24 counter drop"
    assert f.fix[0].startswith(f"ip netns exec {s.vm} nft delete rule ip guard c handle ")
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


def test_rp_filter_strict_with_asymmetric_source(scratch_ns):
    """The tenant sends from the address of its second link, out of the first: strict rp_filter drops it."""
    s = Seed(scratch_ns("tenant"), scratch_ns("vm"), scratch_ns("inet"))
    for ns in s.names:
        run(ns, "ip", "link", "set", "lo", "up")
    run(s.vm, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", s.tenant)
    run(s.vm, "ip", "link", "add", "veth2", "type", "veth", "peer", "name", "veth3", "netns", s.tenant)
    run(s.vm, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s.inet)
    for ns, dev, addr in [(s.tenant, "veth1", "192.0.2.2/26"), (s.tenant, "veth3", "192.0.2.66/26"),
                          (s.vm, "veth0", "192.0.2.3/26"), (s.vm, "veth2", "192.0.2.67/26"),
                          (s.vm, "eth0", "198.51.100.116/24"), (s.inet, "eth0", "198.51.100.1/24")]:
        run(ns, "ip", "addr", "add", addr, "dev", dev)
        run(ns, "ip", "link", "set", dev, "up")
    run(s.inet, "ip", "addr", "add", f"{INET}/32", "dev", "lo")
    run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.3", "dev", "veth1", "src", "192.0.2.66")
    run(s.vm, "ip", "route", "add", "default", "via", "198.51.100.1")
    run(s.vm, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-o", "eth0", "-j", "MASQUERADE")
    run(s.vm, "sysctl", "-w", "net.ipv4.ip_forward=1")
    run(s.vm, "sysctl", "-w", "net.ipv4.conf.all.rp_filter=1")
    assert not probe.ping(s.tenant, INET).ok

    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "rp-filter" and f.namespace == s.vm
    assert f.evidence["net.ipv4.conf.all.rp_filter"] == 1 and f.evidence["effective"] == 1
    assert f.evidence["packet source"] == "192.0.2.66" and f.evidence["arrives on"] == "veth0"
    assert f.evidence["reverse route leaves by"] == "veth2"
    assert f.fix == [f"ip netns exec {s.vm} sysctl -w net.ipv4.conf.all.rp_filter=2"]
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


def test_mtu_mismatch_on_one_link(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "ip", "link", "set", "veth0", "mtu", "1400")
    # a full-size frame with DF really is lost; small ones pass
    big = nsexec.run(s.tenant, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", INET], check=False)
    assert big.returncode != 0

    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "mtu-mismatch" and f.severity == "error"  # confirmed by doctor's DF probe
    assert f.evidence[f"{s.tenant} veth1 mtu"] == 1500 and f.evidence[f"{s.vm} veth0 mtu"] == 1400
    # dropped silently by the router's smaller end: nothing comes back
    assert f.evidence["ping -M do -s 1472 (DF, 1500 bytes)"] == "timeout: no reply within 1 s"
    assert "dropped silently" in f.summary
    assert f.fix == [f"ip -n {s.tenant} link set veth1 mtu 1400"]
    assert r.probe.ok and r.exit_status == 1
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)
    ok = nsexec.run(s.tenant, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1372", INET], check=False)
    assert ok.returncode == 0


def test_no_return_route_for_translated_source(scratch_ns):
    """SNAT to an address the far side has no route to: the reply has nowhere to go."""
    s = build_seed(scratch_ns, snat=False)
    run(s.vm, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-o", "eth0", "-j", "SNAT",
        "--to-source", "203.0.113.50")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "no-return-route" and f.namespace == s.inet and f.direction == "reply"
    assert [(n.ns, n.after) for n in r.nat] == [(s.vm, "203.0.113.50")]
    assert f.fix == [f"ip -n {s.inet} route add 203.0.113.50 via 198.51.100.116"]
    assert not r.probe.ok
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


def test_iptables_legacy_and_nftables_in_one_namespace(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "iptables-legacy", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT")
    run(s.vm, "nft", "add", "table", "inet", "guard")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert codes(r) == ["legacy-and-nft"] and f.namespace == s.vm and f.severity == "warning"
    assert f.evidence["iptables-legacy tables with rules"] == ["filter"]
    assert f.evidence["nftables tables (not iptables-nft)"] == ["inet guard"]
    assert r.exit_status == 0  # a warning: the path works
    apply_fixes(f.fix, s.names)
    assert "-A FORWARD" not in run(s.vm, "iptables-legacy-save").stdout
    assert "-A FORWARD -s 192.0.2.0/24 -j ACCEPT" in run(s.vm, "iptables-nft-save").stdout
    assert_healthy(s.tenant)


def test_duplicate_address_on_a_segment(scratch_ns):
    """A switch namespace bridges tenant, router and a rogue that also holds the gateway's address."""
    s = Seed(scratch_ns("tenant"), scratch_ns("vm"), scratch_ns("inet"))
    sw, rogue = scratch_ns("sw"), scratch_ns("rogue")
    ours = s.names + [sw, rogue]
    for ns in ours:
        run(ns, "ip", "link", "set", "lo", "up")
    run(sw, "ip", "link", "add", "br0", "type", "bridge")
    run(sw, "ip", "link", "set", "br0", "up")
    for port, ns, dev in [("p-tenant", s.tenant, "veth1"), ("p-vm", s.vm, "veth0"), ("p-rogue", rogue, "eth0")]:
        run(sw, "ip", "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
        run(sw, "ip", "link", "set", port, "master", "br0")
        run(sw, "ip", "link", "set", port, "up")
    run(s.vm, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s.inet)
    for ns, dev, addr in [(s.tenant, "veth1", "192.0.2.2/24"), (s.vm, "veth0", "192.0.2.3/24"),
                          (rogue, "eth0", "192.0.2.3/24"),
                          (s.vm, "eth0", "198.51.100.116/24"), (s.inet, "eth0", "198.51.100.1/24")]:
        run(ns, "ip", "addr", "add", addr, "dev", dev)
        run(ns, "ip", "link", "set", dev, "up")
    run(s.inet, "ip", "addr", "add", f"{INET}/32", "dev", "lo")
    run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.3")
    run(s.vm, "ip", "route", "add", "default", "via", "198.51.100.1")
    run(s.vm, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-o", "eth0", "-j", "MASQUERADE")
    run(s.vm, "sysctl", "-w", "net.ipv4.ip_forward=1")

    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "duplicate-address" and f.severity == "error" and f.namespace == rogue
    assert "next hop" in f.summary
    assert sorted(h.split()[0] for h in f.evidence["holders"]) == sorted([s.vm, rogue])
    assert f.fix[0] == f"ip -n {rogue} addr del 192.0.2.3/24 dev eth0"
    assert f"ip -n {s.tenant} neigh flush to 192.0.2.3 dev veth1" in f.fix
    assert r.exit_status == 1
    apply_fixes(f.fix, ours)
    assert_healthy(s.tenant)


def _ct_msg(seq: int, src: str, sport: int) -> bytes:
    """ctnetlink IPCTNL_MSG_CT_NEW for an assured UDP flow src:sport -> 203.0.113.200:9."""
    def nla(t, payload, nested=False):
        ln = 4 + len(payload)
        return struct.pack("=HH", ln, t | (0x8000 if nested else 0)) + payload + b"\0" * ((4 - ln % 4) % 4)

    def tup(a, b, pa, pb):
        ip = nla(1, nla(1, socket.inet_aton(a)) + nla(2, socket.inet_aton(b)), True)
        pr = nla(2, nla(1, b"\x11") + nla(2, struct.pack(">H", pa)) + nla(3, struct.pack(">H", pb)), True)
        return ip + pr

    dst = "203.0.113.200"
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + nla(1, tup(src, dst, sport, 9), True) \
        + nla(2, tup(dst, src, 9, sport), True) + nla(7, struct.pack(">I", 600)) \
        + nla(3, struct.pack(">I", 0x0C))  # IPS_ASSURED | IPS_CONFIRMED: early_drop may not evict them
    flags = 0x1 | 0x4 | 0x200 | 0x400  # REQUEST | ACK | EXCL | CREATE
    return struct.pack("=IHHII", 16 + len(body), 0x100, flags, seq, 0) + body


def fill_conntrack(ns: str, n: int) -> int:
    """Insert `n` assured UDP entries into `ns`'s conntrack table; returns how many the kernel refused."""
    def go() -> int:
        refused = 0
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as s:  # NETLINK_NETFILTER
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind((0, 0))
            for start in range(0, n, 500):
                k = min(500, n - start)
                s.send(b"".join(_ct_msg(i + 1, f"192.0.2.{i % 256}", 1024 + i // 256)
                                for i in range(start, start + k)))
                acks = 0
                while acks < k:
                    data = s.recv(1 << 20)
                    off = 0
                    while off < len(data):
                        ln, typ = struct.unpack_from("=IH", data, off)
                        if typ == 2:  # NLMSG_ERROR (an ack when 0)
                            acks += 1
                            refused += struct.unpack_from("=i", data, off + 16)[0] != 0
                        off += (ln + 3) & ~3
        return refused
    return nsexec.call_in(ns, go)


def test_conntrack_table_full(scratch_ns):
    """nf_conntrack_max is read-only outside the initial namespace, so the router's table is filled up to it."""
    s = build_seed(scratch_ns)
    cmax = int(run(s.vm, "sysctl", "-n", "net.netfilter.nf_conntrack_max").stdout)
    if cmax > 1_100_000:
        pytest.skip(f"nf_conntrack_max is {cmax}; filling it would take too long")
    refused = fill_conntrack(s.vm, cmax + 10)
    assert refused >= 10
    assert int(run(s.vm, "sysctl", "-n", "net.netfilter.nf_conntrack_count").stdout) == cmax
    assert not probe.ping(s.tenant, INET).ok

    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "conntrack-full" and f.namespace == s.vm and f.severity == "error"
    assert f.evidence["net.netfilter.nf_conntrack_count"] == cmax
    assert f.evidence["net.netfilter.nf_conntrack_max"] == cmax
    assert f.fix == [f"ip netns exec {s.vm} conntrack -F"]
    assert not r.probe.ok and r.exit_status == 1
    apply_fixes(f.fix, s.names)  # never the alternative: that one is host-wide
    assert_healthy(s.tenant, allow=("conntrack-drops",))


def test_peer_link_down(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.vm, "ip", "link", "set", "veth0", "down")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "link-down" and f.namespace == s.vm and f.evidence["link"] == "veth0"
    assert f.fix == [f"ip -n {s.vm} link set veth0 up"]
    assert not r.probe.ok and r.exit_status == 1
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


def test_own_link_down_is_named_before_the_route_it_took(scratch_ns):
    s = build_seed(scratch_ns)
    run(s.tenant, "ip", "link", "set", "veth1", "down")  # takes the default route with it
    r = diagnose(s.tenant, INET)
    assert codes(r)[:2] == ["link-down", "no-route"], codes(r)
    assert r.findings[0].fix == [f"ip -n {s.tenant} link set veth1 up"]
    apply_fixes(r.findings[0].fix, s.names)
    r = diagnose(s.tenant, INET)
    assert codes(r) == ["no-route"]
    assert r.findings[0].fix == [f"ip -n {s.tenant} route add default via 192.0.2.3"]
    apply_fixes(r.findings[0].fix, s.names)
    assert_healthy(s.tenant)


def test_wrong_gateway_next_hop_unreachable(scratch_ns):
    s = build_seed(scratch_ns, default_route=False)
    run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.9")
    r = diagnose(s.tenant, INET)
    f = r.findings[0]
    assert f.code == "next-hop-unreachable" and f.namespace == s.tenant
    assert f.fix == [f"ip -n {s.tenant} route replace default via 192.0.2.3 dev veth1"]
    apply_fixes(f.fix, s.names)
    assert_healthy(s.tenant)


# --------------------------------------------------------------------------
# natns's own labs, both backends, and the command line


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_healthy_natns_lab_through_bridges(uid, backend):
    data = seed(uid, backend)
    lab = Lab(topology.parse(data, "test.yaml"))
    try:
        lab.up()
        tenant = data["networks"][0]["hosts"][0]["namespace"]
        r = diagnose(tenant, INET)
        assert r.findings == [], [(f.code, f.summary) for f in r.findings]
        assert r.probe.ok and r.exit_status == 0
        assert [n.after for n in r.nat] == ["198.51.100.116"]
        assert [h.ns for h in r.reply_hops] == [data["internet"]["namespace"], data["routers"][0]["name"], tenant]
    finally:
        down_lab(lab.name)
    assert existing(lab_namespaces(data)) == []


def test_cli_exit_status_and_json(scratch_ns):
    s = build_seed(scratch_ns, default_route=False)
    p = natns("doctor", "--from", s.tenant, "--to", INET, "--json")
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    assert data["healthy"] is False and data["exit_status"] == 1
    assert data["findings"][0]["code"] == "no-route"
    assert data["findings"][0]["fix"] == [f"ip -n {s.tenant} route add default via 192.0.2.3"]
    assert data["probe"]["ok"] is False and data["path"]["complete"] is False
    p = natns("doctor", "--from", s.tenant, "--to", INET)
    assert p.returncode == 1 and f"fix: ip -n {s.tenant} route add default via 192.0.2.3" in p.stdout
    run(s.tenant, "ip", "route", "add", "default", "via", "192.0.2.3")
    p = natns("doctor", "--from", s.tenant, "--to", INET)
    assert p.returncode == 0 and "findings: none" in p.stdout and "healthy" in p.stdout
    for args in (["--from", f"{s.tenant}-nope", "--to", INET], ["--from", s.tenant, "--to", "203.0.113.300"],
                 ["--from", s.tenant, "--to", "2001:db8::zz"], ["--from", s.tenant, "--to", INET, "--tcp", "0"],
                 ["--from", s.tenant, "--to", INET, "--tcp", "80", "--udp", "53"]):
        p = natns("doctor", *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_bad_arguments_raise_user_error(scratch_ns):
    ns = scratch_ns("a")
    with pytest.raises(UserError):
        diagnose(f"{ns}-missing", INET)
    with pytest.raises(UserError):
        diagnose(ns, "not-an-address")
    with pytest.raises(UserError):
        diagnose(ns, INET, proto="tcp", port=70000)


# --------------------------------------------------------------------------
# Destination NAT: floating IPs and port forwards


def _delete_rule_with_comment(ns: str, backend: str, comment: str) -> None:
    """Delete natns's rule carrying `comment` from the router, by the tool's own commands."""
    if backend == "nftables":
        listing = run(ns, "nft", "-a", "list", "table", "ip", "natns").stdout
        line = next(ln for ln in listing.splitlines() if f'comment "{comment}"' in ln)
        chain = None
        for ln in listing.splitlines():
            if ln.strip().startswith("chain "):
                chain = ln.split()[1]
            if ln == line:
                break
        run(ns, "nft", "delete", "rule", "ip", "natns", chain, "handle", line.rsplit("# handle ", 1)[1].strip())
    else:
        rules = run(ns, "iptables", "-w", "-S").stdout
        line = next(ln for ln in rules.splitlines() if f'"{comment}"' in ln)
        run(ns, "iptables", "-w", "-D", *shlex.split(line)[1:])


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_floating_ip_and_port_forward_followed_through_dnat(uid, backend, make_lab, tmp_path):
    """Inbound to a floating IP and to a port forward: doctor follows the DNAT (nft maps or
    iptables DNAT rules) to the tenant, checks the forward hook with the connection's DNAT
    status, and names the cause when the router stops letting translated packets through
    (natns's own rule, removed by hand: the fix is natns's, `natns up` with the lab's file)."""
    from .labs import mapped

    data = mapped(uid, backend)
    make_lab(data).up()
    inet, vm = data["internet"]["namespace"], data["routers"][0]["name"]
    t1, t2 = (h["namespace"] for h in data["networks"][0]["hosts"])
    with PeerServer(t2, "192.0.2.4", 80), PeerServer(t2, "192.0.2.4", 9101):
        r = diagnose(inet, "198.51.100.50")
        assert r.findings == [] and r.probe.ok, [(f.code, f.summary) for f in r.findings]
        assert [h.ns for h in r.path.hops if not h.bridge][-1] == t1
        assert [(n.kind, n.ns, n.before, n.after) for n in r.nat] == [("dnat", vm, "198.51.100.50", "192.0.2.2")]
        assert [h.ns for h in r.reply_hops if not h.bridge] == [t1, vm, inet]

        for port, inner in ((8080, 80), (9001, 9101)):
            r = diagnose(inet, "198.51.100.116", proto="tcp", port=port)
            assert r.findings == [] and r.probe.ok, [(f.code, f.summary) for f in r.findings]
            assert [h.ns for h in r.path.hops if not h.bridge][-1] == t2
            assert [(n.kind, n.after, n.port_before, n.port_after) for n in r.nat] == \
                [("dnat", "192.0.2.4", port, inner)]
        # a port nothing forwards still stops at the router's own input hook (as configured)
        r = diagnose(inet, "198.51.100.116", proto="tcp", port=8081, probe=False)
        assert r.nat == [] and r.findings[0].code == "firewall-drop" and r.findings[0].namespace == vm

        _delete_rule_with_comment(vm, backend, "natns floating ips and port forwards")
        r = diagnose(inet, "198.51.100.116", proto="tcp", port=8080)
        assert r.probe.ok is False
        first = r.findings[0]
        assert (first.code, first.namespace, first.direction) == ("forward-drop", vm, "forward"), first
        assert first.evidence["conntrack status"] == "dnat" and "192.0.2.4" in first.evidence["packet"]
        assert first.fix == ["natns up <your topology file>"] and first.alternatives, first
        path = write(tmp_path, data)
        for c in first.fix:
            res = natns(*shlex.split(c.replace("<your topology file>", shlex.quote(path)))[1:])
            assert res.returncode == 0, res.stdout + res.stderr
        for dst, proto, port in (("198.51.100.116", "tcp", 8080), ("198.51.100.50", "icmp", None)):
            r = diagnose(inet, dst, proto=proto, port=port)
            assert r.findings == [] and r.probe.ok, [(f.code, f.summary) for f in r.findings]


# --------------------------------------------------------------------------
# The fake kernel of the unit tests answers as this kernel does


def _seed_description(s: Seed, *, snat: bool = True, forward: bool = True) -> dict:
    """What build_seed made, as natns.testing.fakes.FakeSnapshot takes it (rules as iptables-save
    prints them in the real vm)."""
    vm_rules = run(s.vm, "iptables-save").stdout if snat else ""
    return {
        s.tenant: {"links": {"veth1": {"peer": f"{s.vm}:veth0", "addresses": ["192.0.2.2/24"]}},
                   "routes": ["default via 192.0.2.3"]},
        s.vm: {"links": {"veth0": {"addresses": ["192.0.2.3/24"]},
                         "eth0": {"peer": f"{s.inet}:eth0", "addresses": ["198.51.100.116/24"]}},
               "routes": ["default via 198.51.100.1"],
               "sysctls": {"net.ipv4.ip_forward": "1" if forward else "0"},
               "iptables": vm_rules},
        s.inet: {"links": {"eth0": {"addresses": ["198.51.100.1/24"]}, "lo": {"addresses": [f"{INET}/32"]}}},
    }


def _comparable(r) -> dict:
    """A report's JSON without what only the real kernel has (ifindex-free already; the
    conntrack counters, which a fresh namespace may show and the description leaves out)."""
    d = r.to_json()
    d["findings"] = [f for f in d["findings"] if not f["code"].startswith("conntrack-")]
    return d


def _break(s: Seed, desc: dict, broken: str) -> None:
    """Break the real seed and its description the same way."""
    if broken == "link-down":
        run(s.vm, "ip", "link", "set", "veth0", "down")
        desc[s.vm]["links"]["veth0"]["up"] = False
    elif broken == "mtu-mismatch":
        run(s.vm, "ip", "link", "set", "veth0", "mtu", "1400")
        desc[s.vm]["links"]["veth0"]["mtu"] = 1400
    elif broken == "forward-drop":
        run(s.vm, "iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-d", INET, "-j", "DROP")
        desc[s.vm]["iptables"] = run(s.vm, "iptables-save").stdout
    elif broken == "rp-filter":
        run(s.vm, "sysctl", "-w", "net.ipv4.conf.veth0.rp_filter=1")
        run(s.vm, "ip", "route", "add", "192.0.2.2/32", "via", "198.51.100.1")
        desc[s.vm]["sysctls"]["net.ipv4.conf.veth0.rp_filter"] = "1"
        desc[s.vm]["routes"].append("192.0.2.2 via 198.51.100.1")


@pytest.mark.parametrize("broken", ["healthy", "no-snat", "ip-forward-off", "no-route", "link-down",
                                    "mtu-mismatch", "forward-drop", "rp-filter"])
def test_fake_snapshot_gives_the_kernels_diagnosis(scratch_ns, broken):
    """The same seed, broken the same way, on real namespaces and described to the fake of the
    unit tests (tests/unit/test_doctor_checks.py): doctor's reports are identical."""
    from natns.testing.fakes import FakeSnapshot

    s = build_seed(scratch_ns, snat=broken != "no-snat", forward=broken != "ip-forward-off",
                   default_route=broken != "no-route")
    desc = _seed_description(s, snat=broken != "no-snat", forward=broken != "ip-forward-off")
    if broken == "no-route":
        desc[s.tenant]["routes"] = []
    _break(s, desc, broken)
    for proto, port in (("icmp", None), ("tcp", 8080)):
        real = diagnose(s.tenant, INET, proto=proto, port=port, probe=False)
        fake = diagnose(s.tenant, INET, proto=proto, port=port, probe=False, snapshot=FakeSnapshot(desc))
        assert _comparable(fake) == _comparable(real)
        if broken != "healthy":
            assert real.findings[0].code == broken, [f.code for f in real.findings]
