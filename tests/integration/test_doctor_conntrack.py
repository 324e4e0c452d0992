"""doctor names a flow whose conntrack entry the rules now translate otherwise (issue 17).

The kernel consults the nat table for a connection's first packet only. A ping
started through a router before its masquerade rule existed keeps leaving with
its private source for as long as it runs, although the rules now say
otherwise: doctor must name that entry as the cause, and the fix it prints,
run exactly as printed, must make the running ping's packets carry the
router's address (seen by tcpdump in the far namespace).

* a plain router built by hand (namespaces, veths, ``ip_forward=1``, a stateful
  forward filter, so that conntrack tracks the ping before any NAT rule exists; a
  router with no rule that uses conntrack has no entry to go stale), the masquerade
  rule added with iptables or with nft while the ping runs: the fix is
  ``conntrack -D`` for exactly that entry;
* a natns lab with ``snat: off``, the file changed to ``masquerade`` and an `up`
  killed before its conntrack step: the fix is ``natns up FILE``.

Addresses (issue 15's plain router): lan 192.0.2.2/24 -- lan0 192.0.2.1/24 router
wan0 198.51.100.2/24 -- 198.51.100.1/24 far, which holds 203.0.113.9/32 on lo and
has no route back to 192.0.2.0/24.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time

import pytest

from natns.explain.doctor import diagnose
from natns.kernel import conntrack, nsexec

from .labs import SEED_INET, seed, write
from .reliability_tools import plan_steps, run_natns
from .verify_tools import PcapCapture

pytestmark = pytest.mark.root

LAN, ROUTER_LAN, ROUTER_WAN, FAR_ADDR, FAR = "192.0.2.2", "192.0.2.1", "198.51.100.2", "198.51.100.1", "203.0.113.9"
_ECHO = re.compile(r"^(\d+\.\d+) IP (\S+) > (\S+): ICMP echo request, id (\d+), seq (\d+)")


def run(ns: str, *argv: str) -> subprocess.CompletedProcess:
    return nsexec.run(ns, list(argv))


def build_router(scratch_ns, firewall: str) -> tuple[str, str, str]:
    """lan -- router -- far, by hand; the router forwards and filters statefully (`firewall`:
    iptables or nft), and has no NAT rule yet."""
    lan, rtr, far = scratch_ns("lan"), scratch_ns("rtr"), scratch_ns("far")
    run(rtr, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", lan)
    run(rtr, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", far)
    for ns, dev, addr in ((lan, "eth0", f"{LAN}/24"), (rtr, "lan0", f"{ROUTER_LAN}/24"),
                          (rtr, "wan0", f"{ROUTER_WAN}/24"), (far, "eth0", f"{FAR_ADDR}/24")):
        run(ns, "ip", "addr", "add", addr, "dev", dev)
        run(ns, "ip", "link", "set", dev, "up")
    for ns in (lan, rtr, far):
        run(ns, "ip", "link", "set", "lo", "up")
    run(far, "ip", "addr", "add", f"{FAR}/32", "dev", "lo")
    run(lan, "ip", "route", "add", "default", "via", ROUTER_LAN)
    run(rtr, "ip", "route", "add", "default", "via", FAR_ADDR)
    run(rtr, "sysctl", "-w", "net.ipv4.ip_forward=1")
    if firewall == "iptables":
        run(rtr, "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
        run(rtr, "iptables", "-A", "FORWARD", "-i", "lan0", "-j", "ACCEPT")
    else:
        run(rtr, "nft", "add", "table", "inet", "filter")
        run(rtr, "nft", "add", "chain", "inet", "filter", "forward",
            "{ type filter hook forward priority 0; policy accept; }")
        run(rtr, "nft", "add", "rule", "inet", "filter", "forward", "ct", "state", "invalid", "drop")
    return lan, rtr, far


def add_masquerade(rtr: str, firewall: str) -> None:
    """The rule a user adds by hand while the ping runs."""
    if firewall == "iptables":
        run(rtr, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
    else:
        # not `table ip nat`: a native table of that name is still read as iptables-nft's
        # (issue 15 item 1, fixed apart from this check)
        run(rtr, "nft", "add", "table", "ip", "masq")
        run(rtr, "nft", "add", "chain", "ip", "masq", "postrouting",
            "{ type nat hook postrouting priority srcnat; policy accept; }")
        run(rtr, "nft", "add", "rule", "ip", "masq", "postrouting", "oifname", "wan0", "masquerade")


class Ping:
    """`ping -i 0.2` from `ns`, as a user has it running; stopped by its PID."""

    def __init__(self, ns: str, dst: str):
        self.proc = nsexec.popen(ns, ["ping", "-n", "-i", "0.2", dst], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


class Capture(PcapCapture):
    """tcpdump of echo requests in `ns` (to a pcap); `stop()` gives (time, src, dst, id)."""

    def __init__(self, ns: str, iface: str, path: str):
        super().__init__(ns, iface, path, "icmp[icmptype] == icmp-echo")

    def stop(self) -> list[tuple[float, str, str, int]]:
        return [(float(m[1]), m[2], m[3], int(m[4])) for m in map(_ECHO.match, self.lines()) if m]


def leaking(rtr: str, src: str, dst: str) -> list:
    """The ping's entries in the router that carry no SNAT."""
    return [e for e in conntrack.entries(rtr) if e.protocol == "icmp" and e.original.src == src
            and e.original.dst == dst and e.reply.dst == src]


def run_printed(command: str, ours: list[str]) -> None:
    """A fix exactly as doctor printed it: split with shlex, no shell; only our namespaces."""
    argv = shlex.split(command)
    assert argv[:3] == ["ip", "netns", "exec"] and argv[3] in ours, command
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("firewall", ["iptables", "nft"])
def test_a_ping_started_before_the_masquerade_rule_is_named_and_the_printed_fix_translates_it(
        scratch_ns, tmp_path, firewall):
    lan, rtr, far = build_router(scratch_ns, firewall)
    ping = Ping(lan, FAR)
    cap = None
    try:
        time.sleep(1.0)  # the ping is tracked, un-NATed (no rule translates yet)
        add_masquerade(rtr, firewall)
        time.sleep(0.6)
        (entry,) = leaking(rtr, LAN, FAR)  # the rule is there, and the running ping still leaks
        ping_id = entry.original.icmp_id

        r = diagnose(lan, FAR)
        assert [(n.ns, n.kind, n.after) for n in r.nat] == [(rtr, "masquerade", ROUTER_WAN)]
        f = r.errors[0]
        assert f.code == "stale-conntrack" and f.namespace == rtr, [(x.code, x.summary) for x in r.findings]
        assert [x.code for x in r.errors] == ["stale-conntrack"]
        assert f.summary.startswith(f"the conntrack entry of this flow in {rtr} was made before the rules changed: "
                                    f"its packets leave un-NATed with the private source {LAN}")
        assert f.fix == [f"ip netns exec {rtr} conntrack -D -p icmp -s {LAN} -d {FAR} --icmp-id {ping_id}"]
        assert r.probe.ok  # doctor's own ping is a new connection: the rules translate it
        assert r.exit_status == 1

        cap = Capture(far, "eth0", str(tmp_path / "far.pcap"))
        time.sleep(0.6)
        fixed_at = time.time()
        for c in f.fix:
            run_printed(c, [lan, rtr, far])
        time.sleep(1.5)
        pkts = [p for p in cap.stop() if p[3] == ping_id]
        cap = None
        before = [p for p in pkts if p[0] < fixed_at]
        after = [p for p in pkts if p[0] > fixed_at + 0.3]
        assert before and {p[1] for p in before} == {LAN}, before  # it leaked until the fix
        assert len(after) >= 3 and {p[1] for p in after} == {ROUTER_WAN}, after  # the same ping, translated

        r = diagnose(lan, FAR)
        assert r.findings == [] and r.exit_status == 0, [(x.code, x.summary) for x in r.findings]
    finally:
        ping.stop()
        if cap is not None:
            cap.stop()


@pytest.mark.parametrize("how", ["killed", "by-hand"])
def test_on_a_natns_lab_doctor_says_up_and_up_fixes_it(make_lab, uid, tmp_path, how):
    """`snat: off`, a ping running, the file changed to masquerade and the new rule loaded by
    an `up` killed before its conntrack step, or by hand into natns's table: doctor says
    `natns up FILE`."""
    data = seed(uid, "nftables")
    data["routers"][0]["snat"] = "off"
    make_lab(data).up()
    vm, t1, inet = f"t{uid}-vm", f"t{uid}-tenant1", f"t{uid}-inet"
    router_addr = "198.51.100.116"
    ping = Ping(t1, SEED_INET)
    cap = None
    try:
        time.sleep(1.0)
        data["routers"][0]["snat"] = "masquerade"
        path = write(tmp_path, data)
        if how == "killed":
            at = [s["action"] for s in plan_steps(path)].index("forget_conntrack") + 1
            killed = run_natns("up", path, kill_at=str(at))
            assert killed.returncode == -signal.SIGKILL, killed.stderr
        else:  # the rule natns would add, added by hand where natns would put it
            run(vm, "nft", "insert", "rule", "ip", "natns", "postrouting", "oifname", "eth0", "ip", "saddr",
                "192.0.2.0/24", "counter", "masquerade", "comment", '"natns snat tenant"')
        (entry,) = leaking(vm, "192.0.2.2", SEED_INET)
        ping_id = entry.original.icmp_id

        r = diagnose(t1, SEED_INET)
        f = r.errors[0]
        assert f.code == "stale-conntrack" and f.namespace == vm, [(x.code, x.summary) for x in r.findings]
        assert f.fix == ["natns up <your topology file>"]
        assert f.alternatives == [f"ip netns exec {vm} conntrack -D -p icmp -s 192.0.2.2 -d {SEED_INET} "
                                  f"--icmp-id {ping_id}"]
        assert f"natns lab {data['name']!r}" in f.note

        cap = Capture(inet, "ext", str(tmp_path / "inet.pcap"))
        time.sleep(0.6)
        argv = shlex.split(f.fix[0].replace("<your topology file>", shlex.quote(path)))
        assert argv == ["natns", "up", path]
        fixed_at = time.time()
        res = run_natns(*argv[1:])
        done = time.time()
        assert res.returncode == 0, res.stderr
        time.sleep(1.5)
        pkts = [p for p in cap.stop() if p[3] == ping_id]
        cap = None
        before = [p for p in pkts if p[0] < fixed_at]
        after = [p for p in pkts if p[0] > done + 0.3]
        assert before and {p[1] for p in before} == {"192.0.2.2"}, before
        assert len(after) >= 3 and {p[1] for p in after} == {router_addr}, after
        assert leaking(vm, "192.0.2.2", SEED_INET) == []
        r = diagnose(t1, SEED_INET)
        assert r.findings == [] and r.exit_status == 0, [(x.code, x.summary) for x in r.findings]
    finally:
        ping.stop()
        if cap is not None:
            cap.stop()
