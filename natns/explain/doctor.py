"""Say why namespace NS cannot reach address ADDR, and how to fix it.

`diagnose(ns, addr)` first reads the configuration along the path a packet
takes (see path.walk), so it finds causes even when nothing gets through:
routes, neighbours, links and their peers, MTUs, sysctls (ip_forward,
rp_filter), the netfilter rules of every tool (nftables, iptables-nft,
iptables-legacy), source NAT, conntrack's table, duplicate addresses. It then
follows the reply back (through the NAT points it found) and checks the same
there. Last, it confirms with a real probe from NS (ping, a TCP connect or a
UDP datagram).

Each `Finding` has a severity, the namespace it is in, the evidence read (the
exact values) and the commands that fix it. Findings are ordered by where the
packet meets them: the forward path hop by hop (in each namespace in the
order the kernel works: conntrack, prerouting, routing, forwarding,
rp_filter, filter hooks, postrouting, MTU, link, neighbour), then the reply.

Only the probe sends anything; nothing is changed.
"""

from __future__ import annotations

import ipaddress
import itertools
import shlex
import socket
from dataclasses import asdict, dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from ..privileges import require_root
from ..errors import UserError
from ..kernel import netns, nsexec, sysctl
from . import dnat
from . import path as pathmod
from ..verify import probe as probemod
from .path import (
    HOST,
    Hop,
    LinkInfo,
    Path,
    _Views,
    check_address,
    check_namespace,
    route_get,
    segment,
    veth_peer,
)
from .rules import Firewall, Packet, Verdict, ipt_tool, read_firewall
from .uplink import accept_cmds, default_dev

SEVERITIES = ("error", "warning", "info")

# Stages: where in one namespace's processing a finding applies (sort order).
ST_TOOLS, ST_CONNTRACK, ST_PREROUTING, ST_LINK_GONE, ST_ROUTE, ST_FORWARDING, ST_RPFILTER = 0, 5, 10, 19, 20, 30, 35
ST_FILTER, ST_POSTROUTING, ST_MTU, ST_LINK, ST_NEIGH, ST_END = 40, 50, 60, 70, 80, 90


def cmd(*argv: str) -> str:
    """A command line a user can paste; shlex.split gives `argv` back."""
    return shlex.join([str(a) for a in argv])


def _sysctl_name(iface: str) -> str:
    return iface.replace(".", "/")


@dataclass
class Finding:
    """One thing found wrong (or worth knowing) along the path."""

    code: str
    severity: str           # error | warning | info
    namespace: str
    summary: str
    evidence: dict = field(default_factory=dict)
    fix: list[str] = field(default_factory=list)           # commands to run, in order
    alternatives: list[str] = field(default_factory=list)  # other commands that also fix it
    note: str | None = None
    direction: str = "forward"  # forward | reply
    hop: int = 0                # index in the forward path's (or reply path's) hops
    stage: int = 0

    def sort_key(self) -> tuple:
        return (0 if self.direction == "forward" else 1, self.hop, self.stage)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("stage")
        return d


@dataclass
class ProbeResult:
    kind: str               # icmp | tcp | udp
    ok: bool | None         # None: inconclusive (UDP without an answer)
    detail: str
    command: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class NatPoint:
    ns: str
    hop: int
    kind: str       # masquerade | snat (the source changes) | dnat (the destination changes)
    before: str     # address before -> after
    after: str
    rule: str
    port_before: int | None = None  # dnat of TCP/UDP: the destination port before -> after
    port_after: int | None = None

    def to_json(self) -> dict:
        d = {"namespace": self.ns, "hop": self.hop, "kind": self.kind, "before": self.before,
             "after": self.after, "rule": self.rule}
        if self.port_before is not None:
            d["port_before"], d["port_after"] = self.port_before, self.port_after
        return d

    def text(self) -> str:
        if self.kind != "dnat":
            return f"{self.kind} in {self.ns}: source {self.before} -> {self.after}  ({self.rule})"
        pb = f":{self.port_before}" if self.port_before is not None else ""
        pa = f":{self.port_after}" if self.port_after is not None else ""
        return f"dnat in {self.ns}: destination {self.before}{pb} -> {self.after}{pa}  ({self.rule})"


@dataclass
class Report:
    src_ns: str
    dst: str
    proto: str
    port: int | None
    path: Path
    reply_hops: list[Hop] = field(default_factory=list)
    reply_complete: bool = False
    reply_stop: str | None = None
    nat: list[NatPoint] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    probe: ProbeResult | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def healthy(self) -> bool:
        return not self.errors and (self.probe is None or self.probe.ok is not False)

    @property
    def exit_status(self) -> int:
        return 0 if self.healthy else 1

    def to_json(self) -> dict:
        return {
            "from": self.src_ns, "to": self.dst, "protocol": self.proto, "port": self.port,
            "healthy": self.healthy, "exit_status": self.exit_status,
            "path": self.path.to_json(),
            "reply_path": {"complete": self.reply_complete, "stop": self.reply_stop,
                           "hops": [h.to_json() for h in self.reply_hops]},
            "nat": [n.to_json() for n in self.nat],
            "findings": [f.to_json() for f in self.findings],
            "probe": self.probe.to_json() if self.probe else None,
        }


# --------------------------------------------------------------------------
# Reading, cached per run


class _Kernel:
    """What doctor reads, each thing once per run."""

    def __init__(self, home: str):
        self.home = home  # a namespace of the path, where tool versions are asked (not natns's own)
        self.views = _Views()
        self._fw: dict[str, Firewall] = {}
        self._sysctl: dict[tuple[str, str], str | None] = {}

    def view(self, ns: str):
        return self.views.get(ns)

    def fw(self, ns: str) -> Firewall:
        if ns not in self._fw:
            self._fw[ns] = read_firewall(ns)
        return self._fw[ns]

    def sysctl(self, ns: str, key: str) -> str | None:
        if (ns, key) not in self._sysctl:
            self._sysctl[(ns, key)] = sysctl.read(ns, [key])[key]
        return self._sysctl[(ns, key)]

def _conntrack_stats(ns: str) -> dict[str, int]:
    def go() -> dict[str, int]:
        try:
            with open("/proc/thread-self/net/stat/nf_conntrack") as fh:
                lines = fh.read().split("\n")
        except OSError:
            return {}
        head = lines[0].split()
        total: dict[str, int] = {}
        for ln in lines[1:]:
            vals = ln.split()
            if len(vals) != len(head):
                continue
            for k, v in zip(head, vals):
                total[k] = total.get(k, 0) + int(v, 16)
        return total
    return nsexec.call_in(ns, go)


def routes_text(ns: str) -> list[str]:
    """The main table of `ns` as `ip route` prints it."""
    try:
        with netns.open_rtnl(ns) as ipr:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            return [pathmod.route_text(r, names) for r in ipr.get_routes(family=2, table=254)]
    except (NetlinkError, OSError):
        return []


def _routes_ok(ns: str, dst: str) -> bool:
    try:
        res = route_get(ns, dst)
    except (NetlinkError, OSError):
        return False
    return res.type in (pathmod.RTN_UNICAST, pathmod.RTN_LOCAL)


# --------------------------------------------------------------------------
# The diagnosis


class _Doctor:
    def __init__(self, src_ns: str, dst: str, proto: str, port: int | None):
        self.src_ns, self.dst, self.proto, self.port = src_ns, dst, proto, port
        # the destination (and port) as the forward packet carries it now: a DNAT on the way
        # (floating IP, port forward) changes them from the next hop on
        self.fdst, self.fport = dst, port
        self.k = _Kernel(src_ns)
        self.findings: list[Finding] = []
        self._seen: set[tuple] = set()

    # -- helpers ---------------------------------------------------------

    def add(self, f: Finding, key: tuple | None = None) -> None:
        key = key or (f.code, f.namespace, f.summary)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(f)

    def packet(self, saddr: str, daddr: str, iif, oif, reply: bool, port: int | None = None,
               ct_status: frozenset = frozenset()) -> Packet:
        port = self.fport if port is None else port
        if self.proto == "icmp":
            return Packet(saddr, daddr, "icmp", None, None, "echo-reply" if reply else "echo-request", iif, oif,
                          "established" if reply else "new", ct_status)
        if reply:
            return Packet(saddr, daddr, self.proto, port, 40000, None, iif, oif, "established", ct_status)
        return Packet(saddr, daddr, self.proto, 40000, port, None, iif, oif, "new", ct_status)

    def flow_text(self, pkt: Packet) -> str:
        ports = f" dport {pkt.dport}" if pkt.dport else (f" sport {pkt.sport}" if pkt.sport and pkt.proto != "icmp" else "")
        t = f" {pkt.icmp_type}" if pkt.proto == "icmp" else ""
        return (f"{pkt.proto}{t} {pkt.saddr} > {pkt.daddr}{ports} in {pkt.iif or '-'} out {pkt.oif or '-'} "
                f"ct state {pkt.ct_state}")

    def link(self, ns: str, name: str | None) -> LinkInfo | None:
        if not name or ns == HOST:
            return None
        return self.k.view(ns).by_name(name)

    def gateway_candidates(self, ns: str, target: str, exclude_ns: set[str] = frozenset()) -> list[tuple[str, str, str]]:
        """(gateway address, our interface, their namespace) on our segments that can route to `target`."""
        view = self.k.view(ns)
        out = []
        for link in view.links.values():
            if link.kind == "loopback" or not link.addresses or link.master or not link.up:
                continue
            ours = link.networks()
            for pns, plink in segment(ns, link.name, self.k.views):
                if pns == ns or pns in exclude_ns:
                    continue
                for a, plen in plink.addresses:
                    ip = ipaddress.ip_address(a)
                    if not any(ip in n.network for n in ours):
                        continue
                    owns = self.k.view(pns).owns(target) is not None
                    if not owns and not _routes_ok(pns, target):
                        continue
                    fwd = self.k.sysctl(pns, "net.ipv4.ip_forward") == "1"
                    out.append((0 if owns else (1 if fwd else 2), a, link.name, pns))
        out.sort()
        return [(a, ifn, pns) for _, a, ifn, pns in out]

    def prev_hop_address(self, hops: list[Hop], i: int) -> str | None:
        """The address of the namespace before hops[i] on the link the packet came by."""
        here = hops[i]
        inl = self.link(here.ns, here.in_iface)
        if inl is None:
            return None
        nets = inl.networks()
        for j in range(i - 1, -1, -1):
            h = hops[j]
            if h.bridge or h.ns == HOST:
                continue
            outl = self.link(h.ns, h.out_iface)
            if outl is None:
                return None
            for a, _ in outl.addresses:
                if any(ipaddress.ip_address(a) in n.network for n in nets):
                    return a
            return outl.addresses[0][0] if outl.addresses else None
        return None

    # -- per-namespace checks -------------------------------------------

    def check_tools(self, ns: str, hop: int, direction: str) -> None:
        fw = self.k.fw(ns)
        if (fw.legacy_rules or fw.legacy_tables) and fw.nft_tables:
            fix = [cmd("ip", "netns", "exec", ns, "sh", "-c", "iptables-legacy-save | iptables-nft-restore --noflush")]
            for t in fw.legacy_tables:
                fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", t, "-F"))
                fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", t, "-X"))
            for c in fw.chains.values():
                if c.source == "iptables-legacy" and c.hook and c.policy not in (None, "accept"):
                    fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", c.table, "-P", c.name, "ACCEPT"))
            self.add(Finding(
                "legacy-and-nft", "warning", ns,
                f"{ns} has iptables-legacy rules and nftables tables at the same time: both filter every "
                f"packet, and neither tool shows the other's rules",
                {"iptables-legacy tables with rules": fw.legacy_tables,
                 "iptables-legacy rules": fw.legacy_rules,
                 "nftables tables (not iptables-nft)": fw.nft_tables,
                 "iptables-nft tables": fw.iptables_nft_tables},
                fix, note="the fix moves the legacy rules into iptables-nft (nftables underneath), then "
                          "empties the legacy tables",
                direction=direction, hop=hop, stage=ST_TOOLS), key=("legacy-and-nft", ns))
        for p in fw.problems:
            self.add(Finding("firewall-unreadable", "warning", ns, f"could not read all rules in {ns}: {p}",
                             {"problem": p}, direction=direction, hop=hop, stage=ST_TOOLS))

    def check_conntrack(self, ns: str, hop: int, direction: str) -> None:
        count = self.k.sysctl(ns, "net.netfilter.nf_conntrack_count")
        cmax = self.k.sysctl(ns, "net.netfilter.nf_conntrack_max")
        if count is None or cmax is None:
            return
        count_i, max_i = int(count), int(cmax)
        stats = _conntrack_stats(ns)
        ev = {"net.netfilter.nf_conntrack_count": count_i, "net.netfilter.nf_conntrack_max": max_i}
        for k in ("insert_failed", "drop", "early_drop"):
            if k in stats:
                ev[f"/proc/net/stat/nf_conntrack {k}"] = stats[k]
        alt = [cmd("sysctl", "-w", f"net.netfilter.nf_conntrack_max={max(max_i * 2, 65536)}")]
        alt_note = ("the limit applies to each namespace but can only be set in the initial one (host-wide): "
                    "the alternative raises it for every namespace")
        if max_i and count_i >= max_i:
            self.add(Finding(
                "conntrack-full", "error", ns,
                f"conntrack table in {ns} is full ({count_i} of {max_i}): new connections are dropped",
                ev, [cmd("ip", "netns", "exec", ns, "conntrack", "-F")], alt,
                note="conntrack -F forgets every tracked connection in " + ns + "; " + alt_note,
                direction=direction, hop=hop, stage=ST_CONNTRACK), key=("conntrack", ns))
        elif max_i and count_i >= 0.9 * max_i:
            self.add(Finding(
                "conntrack-nearly-full", "warning", ns,
                f"conntrack table in {ns} is nearly full ({count_i} of {max_i})",
                ev, [cmd("ip", "netns", "exec", ns, "conntrack", "-F")], alt, note=alt_note,
                direction=direction, hop=hop, stage=ST_CONNTRACK), key=("conntrack", ns))
        elif stats.get("insert_failed"):
            self.add(Finding(
                "conntrack-insert-failed", "warning", ns,
                f"conntrack in {ns} failed to insert {stats['insert_failed']} entries (packets dropped)",
                ev, note="counters since the namespace was made; races of parallel first packets (UDP) cause it",
                direction=direction, hop=hop, stage=ST_CONNTRACK), key=("conntrack", ns))
        elif stats.get("drop") or stats.get("early_drop"):
            self.add(Finding(
                "conntrack-drops", "info", ns,
                f"conntrack in {ns} has dropped packets before (drop {stats.get('drop', 0)}, "
                f"early_drop {stats.get('early_drop', 0)}); the table is not full now",
                ev, direction=direction, hop=hop, stage=ST_CONNTRACK), key=("conntrack", ns))

    def check_hook(self, ns: str, hook: str, pkt: Packet, hop: int, direction: str, stage: int) -> None:
        fw = self.k.fw(ns)
        v = fw.evaluate(hook, pkt)
        if v.drops:
            self.add(self._drop_finding(ns, hook, pkt, v, hop, direction, stage))
        elif v.maybe:
            r = v.maybe[0]
            self.add(Finding(
                "firewall-maybe-drop", "warning", ns,
                f"{r.where()} in {ns} has a rule that drops and that doctor cannot evaluate for this packet",
                {"hook": hook, "rule": r.text, "packet": self.flow_text(pkt)},
                direction=direction, hop=hop, stage=stage))

    def _drop_finding(self, ns: str, hook: str, pkt: Packet, v: Verdict, hop: int, direction: str,
                      stage: int) -> Finding:
        c = v.chain
        ev = {"hook": hook, "packet": self.flow_text(pkt)}
        alts: list[str] = []
        if pkt.ct_status:
            ev["conntrack status"] = ",".join(sorted(pkt.ct_status))
        if v.rule is not None:
            r = v.rule
            ev.update({"tool": r.source, "table": f"{r.family} {r.table}" if r.source == "nftables" else r.table,
                       "chain": r.chain, "rule": r.text})
            if r.source == "nftables":
                fix = [cmd("ip", "netns", "exec", ns, "nft", "delete", "rule", r.family, r.table, r.chain,
                           "handle", str(r.handle))]
            else:
                fix = [cmd("ip", "netns", "exec", ns, ipt_tool(r.source), "-t", r.table, "-D", r.chain,
                           *(r.argv or []))]
            what = f"rule `{r.text}` ({r.where()})"
        else:
            ev.update({"tool": c.source, "table": f"{c.family} {c.table}" if c.source == "nftables" else c.table,
                       "chain": c.name, "policy": "drop"})
            fix = [self._accept_cmd(ns, c, pkt)]
            if "dnat" in pkt.ct_status and pkt.ct_state == "new":
                # the packet was sent to a floating IP or forwarded port: accepting what the
                # nat table translated is the usual rule (the DNAT rules say what is let in)
                alts = fix
                fix = [self._accept_cmd(ns, c, pkt, dnat=True)]
            what = v.describe()
        code = "forward-drop" if hook == "forward" else "firewall-drop"
        where = {"forward": "the forward hook", "input": "the input hook", "output": "the output hook",
                 "prerouting": "the prerouting hook", "postrouting": "the postrouting hook"}[hook]
        return Finding(code, "error", ns, f"{where} in {ns} drops the {'reply' if direction == 'reply' else 'packet'}: {what}",
                       ev, fix, alts, direction=direction, hop=hop, stage=stage)

    def _accept_cmd(self, ns: str, chain, pkt: Packet, *, dnat: bool = False) -> str:
        reply = pkt.ct_state == "established"
        if chain.source == "nftables":
            if dnat:
                words = ["ct", "status", "dnat", "accept"]
            elif reply:
                words = ["ct", "state", "established,related", "accept"]
            else:
                words = ["ip", "saddr", pkt.saddr, "ip", "daddr", pkt.daddr]
                if pkt.proto in ("tcp", "udp"):
                    words += [pkt.proto, "dport", str(pkt.dport)]
                elif pkt.proto == "icmp":
                    words += ["icmp", "type", "echo-request"]
                words.append("accept")
            return cmd("ip", "netns", "exec", ns, "nft", "insert", "rule", chain.family, chain.table, chain.name,
                       *words)
        tool = ipt_tool(chain.source)
        if dnat:
            words = ["-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]
        elif reply:
            words = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        else:
            words = ["-s", pkt.saddr, "-d", pkt.daddr, "-p", pkt.proto]
            if pkt.proto in ("tcp", "udp"):
                words += ["--dport", str(pkt.dport)]
            words += ["-j", "ACCEPT"]
        return cmd("ip", "netns", "exec", ns, tool, "-t", chain.table, "-I", chain.name, *words)

    def check_forwarding(self, ns: str, in_iface: str, hop: int, direction: str) -> None:
        ipf = self.k.sysctl(ns, "net.ipv4.ip_forward")
        link = self.link(ns, in_iface)
        dev = link.conf.get("forwarding") if link else None
        ev = {"net.ipv4.ip_forward": ipf}
        if link is not None:
            ev[f"net.ipv4.conf.{_sysctl_name(in_iface)}.forwarding"] = str(dev)
        if ipf != "1":
            self.add(Finding(
                "ip-forward-off", "error", ns,
                f"IP forwarding is off in {ns}, which must forward the packet (in {in_iface}): "
                f"the kernel drops it",
                ev, [cmd("ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.ip_forward=1")],
                direction=direction, hop=hop, stage=ST_FORWARDING), key=("ip-forward-off", ns))
        elif dev == 0:
            self.add(Finding(
                "ip-forward-off", "error", ns,
                f"forwarding is off on {in_iface} in {ns}, where the packet arrives: the kernel drops it",
                ev, [cmd("ip", "netns", "exec", ns, "sysctl", "-w",
                         f"net.ipv4.conf.{_sysctl_name(in_iface)}.forwarding=1")],
                direction=direction, hop=hop, stage=ST_FORWARDING), key=("ip-forward-off", ns, in_iface))

    def check_rp_filter(self, ns: str, in_iface: str, saddr: str, hop: int, direction: str, *,
                        arp: bool = False, stage: int = ST_RPFILTER) -> bool:
        """Would rp_filter in `ns` drop a packet from `saddr` arriving on `in_iface`? (also ARP requests)"""
        link = self.link(ns, in_iface)
        if link is None:
            return False
        all_v = int(self.k.sysctl(ns, "net.ipv4.conf.all.rp_filter") or 0)
        dev_v = int(link.conf.get("rp_filter", 0) or 0)
        mode = max(all_v, dev_v)
        if mode == 0:
            return False
        dev_key = f"net.ipv4.conf.{_sysctl_name(in_iface)}.rp_filter"
        ev = {"net.ipv4.conf.all.rp_filter": all_v, dev_key: dev_v, "effective": mode,
              "packet source": saddr, "arrives on": in_iface}
        try:
            rev = route_get(ns, saddr)
            ev["reverse route"] = rev.text
            rev_if = self.k.view(ns).links.get(rev.oif).name if rev.oif in self.k.view(ns).links else None
            ev["reverse route leaves by"] = rev_if
            if rev.type == pathmod.RTN_LOCAL:
                return False  # a martian, not rp_filter's business here
        except NetlinkError as exc:
            rev, rev_if = None, None
            ev["reverse route"] = f"none ({pathmod._err_text(exc)})"
        if mode == 1 and rev is not None and rev_if == in_iface:
            return False
        if mode == 2 and rev is not None:
            return False
        what = ("ARP requests" if arp else "the reply" if direction == "reply" else "the packet")
        if arp:
            ev["ARP request"] = f"who-has on {in_iface} from {saddr}"
        if mode == 1:
            key = dev_key if dev_v == 1 else "net.ipv4.conf.all.rp_filter"
            fix = [cmd("ip", "netns", "exec", ns, "sysctl", "-w", f"{key}=2")]
            alts = [cmd("ip", "-n", ns, "route", "add", saddr, "dev", in_iface)]
            summary = (f"strict rp_filter in {ns} drops {what} "
                       f"from {saddr} arriving on {in_iface}: the route back to {saddr} "
                       + (f"leaves by {rev_if}" if rev_if else "does not exist"))
            note = "loose mode (2) accepts a source reachable by any interface; the alternative makes the route back symmetric"
        else:
            fix = [cmd("ip", "-n", ns, "route", "add", saddr, "dev", in_iface)]
            alts = [cmd("ip", "netns", "exec", ns, "sysctl", "-w", f"{dev_key}=0"),
                    cmd("ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.conf.all.rp_filter=0")]
            summary = f"loose rp_filter in {ns} drops {what} from {saddr}: there is no route back to it at all"
            note = None
        if arp:
            note = (f"{ns} does not answer ARP for its own address when rp_filter rejects the asker's source; " + note
                    if note else None)
        self.add(Finding("rp-filter", "error", ns, summary, ev, fix, alts, note,
                         direction=direction, hop=hop, stage=stage), key=("rp-filter", ns, in_iface, saddr))
        return True

    def check_links(self, hops: list[Hop], i: int, direction: str) -> None:
        """Every link the packet crosses from hops[i] to the next namespace is up, and the MTUs agree."""
        hop = hops[i]
        names = [hop.out_port or hop.out_iface] if hop.bridge else [hop.out_iface, hop.out_port]
        crossed: list[tuple[str, LinkInfo]] = []
        for n in names:
            lk = self.link(hop.ns, n)
            if lk is not None:
                crossed.append((hop.ns, lk))
        if hop.bridge:
            br = self.link(hop.ns, hop.bridge)
            inport = self.link(hop.ns, hop.in_iface)
            crossed = ([(hop.ns, inport)] if inport else []) + ([(hop.ns, br)] if br else []) + crossed
        last = crossed[-1] if crossed else None
        if last and last[1].kind == "veth":
            pns, plink = veth_peer(self.k.view(last[0]), last[1], self.k.views)
            if pns and pns != HOST and plink is not None:
                crossed.append((pns, plink))
                pview = self.k.view(pns)
                if plink.master and plink.master in pview.links:
                    crossed.append((pns, pview.links[plink.master]))
        for ns, lk in crossed:
            if not lk.up:
                self.add(Finding(
                    "link-down", "error", ns,
                    f"{lk.name} in {ns} is down: the packet cannot cross it",
                    {"link": lk.name, "namespace": ns, "state": lk.operstate, "flags": "DOWN (no IFF_UP)"},
                    [cmd("ip", "-n", ns, "link", "set", lk.name, "up")],
                    direction=direction, hop=i, stage=ST_LINK), key=("link-down", ns, lk.name))
        # MTU: the two ends of each veth pair crossed
        for (ans, a), (bns, b) in itertools.pairwise(crossed):
            if a.kind != "veth" or b.kind != "veth" or a.peer_index != b.index:
                continue
            if a.mtu and b.mtu and a.mtu != b.mtu:
                small, (big_ns, big) = min(a.mtu, b.mtu), ((ans, a) if a.mtu > b.mtu else (bns, b))
                self.add(Finding(
                    "mtu-mismatch", "warning", ans,
                    f"the two ends of one link disagree on the MTU: {a.name} in {ans} has {a.mtu}, "
                    f"its peer {b.name} in {bns} has {b.mtu}; frames over {small} bytes are dropped silently",
                    {f"{ans} {a.name} mtu": a.mtu, f"{bns} {b.name} mtu": b.mtu},
                    [cmd("ip", "-n", big_ns, "link", "set", big.name, "mtu", str(small))],
                    direction=direction, hop=i, stage=ST_MTU), key=("mtu", tuple(sorted([(ans, a.name), (bns, b.name)]))))

    def check_neighbour(self, hops: list[Hop], i: int, nh: str, direction: str, stopped: Path | None) -> None:
        hop = hops[i]
        if hop.bridge or not hop.out_iface:
            return
        if stopped is not None and stopped.stop_code == "no-neighbour":
            ev = {"route": hop.route, "next hop": nh, "out": hop.out_iface, "why": stopped.stop}
            try:
                ne = pathmod.neighbour(hop.ns, nh, hop.out_iface)
            except NetlinkError:
                ne = None
            if ne:
                ev["neighbour entry"] = f"{nh} dev {ne['dev']} {('lladdr ' + ne['lladdr'] + ' ') if ne['lladdr'] else ''}{ne['state']}"
            fix: list[str] = []
            note = None
            if hop.gateway:
                cands = self.gateway_candidates(hop.ns, self.fdst if direction == "forward" else nh)
                cands = [c for c in cands if c[1] == hop.out_iface] or cands
                if cands:
                    dst_words = (hop.route or "default").split()
                    rdst = dst_words[0] if dst_words and dst_words[0] not in pathmod.RTN_NAMES.values() else "default"
                    fix = [cmd("ip", "-n", hop.ns, "route", "replace", rdst, "via", cands[0][0], "dev", cands[0][1])]
                    note = f"{cands[0][0]} ({cands[0][2]}) is on the same link and has a route onwards"
            else:
                note = f"no namespace on {hop.out_iface}'s link holds {nh}"
            self.add(Finding(
                "next-hop-unreachable", "error", hop.ns,
                f"next hop {nh} does not answer on {hop.out_iface} in {hop.ns}: {stopped.stop}",
                ev, fix, note=note, direction=direction, hop=i, stage=ST_NEIGH))
            return
        try:
            ne = pathmod.neighbour(hop.ns, nh, hop.out_iface)
        except NetlinkError:
            ne = None
        if ne and ne["state"] in ("FAILED", "INCOMPLETE"):
            nxt = next((h for h in hops[i + 1:] if not h.bridge), None)
            sender = hop.src or self._arp_sender(hop, nh)
            if (nxt is not None and not nxt.bridge and nxt.ns != HOST and nxt.in_iface and sender
                    and self.check_rp_filter(nxt.ns, nxt.in_iface, sender, i, direction, arp=True, stage=ST_NEIGH)):
                return
            self.add(Finding(
                "neighbour-failed", "warning", hop.ns,
                f"the neighbour entry for next hop {nh} on {hop.out_iface} in {hop.ns} is {ne['state']}: "
                f"ARP got no answer (recently)",
                {"next hop": nh, "out": hop.out_iface, "neighbour entry": f"{nh} dev {ne['dev']} {ne['state']}"},
                [], note="checked again after the probe: an entry that answers then is dropped from the report",
                direction=direction, hop=i, stage=ST_NEIGH))

    def _arp_sender(self, hop: Hop, nh: str) -> str | None:
        out = self.link(hop.ns, hop.out_iface)
        if out is None:
            return None
        for a, plen in out.addresses:
            if ipaddress.ip_address(nh) in ipaddress.ip_network(f"{a}/{plen}", strict=False):
                return a
        return out.addresses[0][0] if out.addresses else None

    def check_duplicates(self, hops: list[Hop], i: int, relevant: dict[str, str], direction: str) -> None:
        hop = hops[i]
        if hop.bridge or not hop.out_iface:
            return
        seg = segment(hop.ns, hop.out_iface, self.k.views)
        owners: dict[str, list[tuple[str, LinkInfo, int]]] = {}
        for ns, lk in seg:
            for a, plen in lk.addresses:
                owners.setdefault(a, []).append((ns, lk, plen))
        for addr, lst in owners.items():
            nss = list(dict.fromkeys(ns for ns, _, _ in lst))
            if len(nss) < 2:
                continue
            role = relevant.get(addr)
            ranked = sorted(lst, key=lambda t: self._owner_rank(t[0], addr, role))
            keep = ranked[0]
            fix = [cmd("ip", "-n", ns, "addr", "del", f"{addr}/{plen}", "dev", lk.name)
                   for ns, lk, plen in ranked[1:] if ns != keep[0]]
            for ns, lk in seg:
                if ns not in nss:
                    fix.append(cmd("ip", "-n", ns, "neigh", "flush", "to", addr, "dev", lk.name))
            self.add(Finding(
                "duplicate-address", "error" if role else "warning", nss[0] if nss[0] != keep[0] else nss[1],
                f"{addr} is held by {len(nss)} namespaces on one segment ({', '.join(nss)})"
                + (f"; it is the {role}" if role else ""),
                {"segment": f"{hop.out_iface} in {hop.ns}",
                 "holders": [f"{ns} {lk.name} {addr}/{plen} lladdr {lk.mac}" for ns, lk, plen in lst]},
                fix, note=f"keeps it on {keep[0]} ({keep[1].name}); the neighbour flushes drop cached answers "
                          f"from the other holder",
                direction=direction, hop=i, stage=ST_NEIGH), key=("dup", addr, tuple(sorted(nss))))

    def _owner_rank(self, ns: str, addr: str, role: str | None) -> tuple:
        if role == "source":
            return (0 if ns == self.src_ns else 1, ns)
        fwd = self.k.sysctl(ns, "net.ipv4.ip_forward") == "1"
        onward = _routes_ok(ns, self.fdst)
        return (0 if ns == self.src_ns else 1, 0 if (fwd and onward) else (1 if onward else 2), ns)

    def check_no_route(self, hop: Hop, i: int, target: str, direction: str, code: str, prev_gw: str | None,
                       p: Path) -> None:
        ns = hop.ns
        view = self.k.view(ns)
        down = [lk for lk in view.links.values() if not lk.up and lk.addresses and lk.kind != "loopback"]
        tip = ipaddress.ip_address(target)
        covered = [lk for lk in down if any(tip in n.network for n in lk.networks())]
        for lk in down:
            self.add(Finding(
                "link-down", "error", ns,
                f"{lk.name} in {ns} is down, so the routes through it are gone",
                {"link": lk.name, "addresses": [f"{a}/{pl}" for a, pl in lk.addresses], "state": lk.operstate},
                [cmd("ip", "-n", ns, "link", "set", lk.name, "up")],
                direction=direction, hop=i, stage=ST_LINK_GONE), key=("link-down", ns, lk.name))
        if covered:
            return  # the connected route to `target` comes back with the link
        err = "Network is unreachable"
        try:
            route_get(ns, target)
        except NetlinkError as exc:
            err = pathmod._err_text(exc)
        ev = {"ip route get": f"{target}: {err}", "routes": routes_text(ns)}
        if p.stop_code == "unreachable-route":
            ev["route"] = hop.route
        fix: list[str] = []
        alts: list[str] = []
        cands = self.gateway_candidates(ns, target)
        if prev_gw:
            cands = [c for c in cands if c[0] != prev_gw] + [c for c in cands if c[0] == prev_gw]
            if code == "no-return-route":
                cands = [c for c in cands if c[0] == prev_gw] + [c for c in cands if c[0] != prev_gw]
        has_default = any(r.startswith("default") for r in ev["routes"])
        if cands and cands[0][0] == target:
            fix = [cmd("ip", "-n", ns, "route", "add", target, "dev", cands[0][1])]
        elif cands:
            gw = cands[0][0]
            rdst = target if (code == "no-return-route" or has_default) else "default"
            fix = [cmd("ip", "-n", ns, "route", "add", rdst, "via", gw)]
            if rdst == "default":
                alts = [cmd("ip", "-n", ns, "route", "add", target, "via", gw)]
        elif prev_gw and code == "no-return-route":
            fix = [cmd("ip", "-n", ns, "route", "add", target, "via", prev_gw)]
        if code == "no-route":
            summary = f"no route to {target} in {ns} ({err})"
        elif code == "unreachable-route":
            summary = f"the route to {target} in {ns} rejects it: `{hop.route}` ({err})"
            if cands:
                fix = [cmd("ip", "-n", ns, "route", "del", *(hop.route or "").split()[:2])] + fix
        else:
            summary = f"no route back to {target} in {ns}: the reply cannot leave ({err})"
        self.add(Finding(code if code != "unreachable-route" else "no-route", "error", ns, summary, ev, fix, alts,
                         note=None if fix else "no namespace on this namespace's links can route onwards; "
                                               "add a route to a gateway that can",
                         direction=direction, hop=i, stage=ST_ROUTE))

    # -- the passes ------------------------------------------------------

    def forward(self, p: Path) -> tuple[str, list[NatPoint]]:
        """Check every hop of the forward path; returns the source as it arrives and the NAT points.

        A destination NAT on the way (a floating IP, a port forward) changes where the packet
        goes: the rest of `p` is walked again from that namespace towards the new destination.
        """
        hops = p.hops
        cur_src = hops[0].src if hops and hops[0].src else None
        nat: list[NatPoint] = []
        if cur_src is None:
            cur_src = "0.0.0.0"
        i = -1
        while i + 1 < len(hops):
            i += 1
            hop = hops[i]
            if hop.ns == HOST:
                continue
            last = i == len(hops) - 1
            nh = hop.gateway or self.fdst
            if hop.bridge:
                self.check_links(hops, i, "forward")
                self.check_duplicates(hops, i, {nh: "next hop", self.fdst: "destination", cur_src: "source"},
                                      "forward")
                continue
            self.check_tools(hop.ns, i, "forward")
            self.check_conntrack(hop.ns, i, "forward")
            ct: frozenset = frozenset()
            if i > 0:
                self.check_hook(hop.ns, "prerouting", self.packet(cur_src, self.fdst, hop.in_iface, None, False),
                                i, "forward", ST_PREROUTING)
            rw = dnat.rewrite(self.k.fw(hop.ns), i == 0, cur_src, self.fdst, self.proto, self.fport, hop.in_iface)
            if rw is not None:
                nat.append(NatPoint(hop.ns, i, "dnat", self.fdst, rw.addr, rw.rule, self.fport, rw.port))
                self.fdst, self.fport = rw.addr, rw.port
                ct = frozenset({"dnat"})
                dnat.splice(p, i, rw.addr, cur_src)
                hops = p.hops
                hop = hops[i]
                last = i == len(hops) - 1
                nh = hop.gateway or self.fdst
            role = "source" if i == 0 else ("dest" if hop.local else "forward")
            if last and not p.complete and p.stop_code in ("no-route", "unreachable-route"):
                prev = self.prev_hop_address(hops, i) if i > 0 else None
                self.check_no_route(hop, i, self.fdst, "forward", p.stop_code, prev, p)
                if role == "forward":
                    self.check_forwarding(hop.ns, hop.in_iface, i, "forward")
                break
            if role == "forward":
                self.check_forwarding(hop.ns, hop.in_iface, i, "forward")
            if role != "source":
                self.check_rp_filter(hop.ns, hop.in_iface, cur_src, i, "forward")
            pkt = self.packet(cur_src, self.fdst, hop.in_iface, hop.out_iface, False, ct_status=ct)
            if role == "dest":
                self.check_hook(hop.ns, "input", pkt, i, "forward", ST_FILTER)
                continue
            self.check_hook(hop.ns, "forward" if role == "forward" else "output", pkt, i, "forward", ST_FILTER)
            self.check_hook(hop.ns, "postrouting", pkt, i, "forward", ST_POSTROUTING)
            sn = self.k.fw(hop.ns).snat(pkt)
            if sn.verdict in ("masquerade", "snat"):
                after = sn.rule.nat_target(pkt) if sn.verdict == "snat" else self._masq_address(hop)
                if after and after != cur_src:
                    nat.append(NatPoint(hop.ns, i, sn.verdict, cur_src, after, sn.rule.text))
                    cur_src = after
            self.check_links(hops, i, "forward")
            self.check_neighbour(hops, i, nh, "forward", p if last and not p.complete else None)
            self.check_duplicates(hops, i, {nh: "next hop", self.fdst: "destination", cur_src: "source"}, "forward")
        if p.stop_code == "host" and hops and hops[-1].ns == HOST:
            self.check_host(len(hops) - 1, hops[-1], cur_src)
        if not p.complete and p.stop_code not in ("no-route", "unreachable-route", "no-neighbour"):
            last_ns = next((h.ns for h in reversed(hops) if h.ns != HOST), self.src_ns)
            sev = "error" if p.stop_code in ("loop", "max-hops") else "warning"
            self.add(Finding("path-" + (p.stop_code or "unknown"), sev, last_ns,
                             f"the path cannot be followed further: {p.stop}", {"stop": p.stop},
                             direction="forward", hop=len(hops) - 1, stage=ST_END))
        return cur_src, nat

    def check_host(self, i: int, hop: Hop, src: str) -> None:
        """The packet leaves the lab into the namespace natns runs in (`uplink: host`), which
        must forward it out by its default route: is forwarding on there, and does its
        forward hook let the packet and its replies through? (Read-only; the walk itself
        stops here: beyond is the host's real network.)"""
        where = "the namespace natns runs in"
        ipf = self.k.sysctl(None, "net.ipv4.ip_forward")
        if ipf != "1":
            self.add(Finding(
                "ip-forward-off", "error", HOST,
                f"IP forwarding is off in {where}, which must forward the packet (in {hop.in_iface}): "
                f"the kernel drops it", {"net.ipv4.ip_forward": ipf},
                [cmd("sysctl", "-w", "net.ipv4.ip_forward=1")],
                direction="forward", hop=i, stage=ST_FORWARDING))
        if not hop.in_iface:
            return
        fw = self.k.fw(None)
        out = default_dev()
        for way, pkt in (("out", self.packet(src, self.fdst, hop.in_iface, out, False)),
                         ("reply", self.packet(self.fdst, src, out, hop.in_iface, True))):
            v = fw.evaluate("forward", pkt)
            if not v.drops:
                continue
            self.add(Finding(
                "forward-drop", "error", HOST,
                f"the forward hook of {where} drops the {'packet' if way == 'out' else 'reply'}: {v.describe()}",
                {"hook": "forward", "packet": self.flow_text(pkt), "host's default route": out or "none"},
                accept_cmds(fw, v, hop.in_iface, way),
                note="natns doesn't add rules to the host's own chains; these accept the uplink's traffic",
                direction="forward", hop=i, stage=ST_FILTER))

    def _masq_address(self, hop: Hop) -> str | None:
        out = self.link(hop.ns, hop.out_iface)
        if out is None or not out.addresses:
            return None
        nh = ipaddress.ip_address(hop.gateway or self.fdst)
        for a, plen in out.addresses:
            if nh in ipaddress.ip_network(f"{a}/{plen}", strict=False):
                return a
        return out.addresses[0][0]

    def reply(self, p: Path, arriving_src: str, nat: list[NatPoint]) -> tuple[list[Hop], bool, str | None]:
        """Follow and check the reply from the destination back to the source."""
        dest = p.hops[-1]
        hops: list[Hop] = []
        # source NAT changes where the reply goes (back to the address before it); destination
        # NAT changes only the reply's source (back to the address the packet was sent to)
        stack = [pt for pt in nat if pt.kind != "dnat"]
        start_ns, start_iif, target = dest.ns, None, arriving_src
        final: Path | None = None
        for _ in range(len(stack) + 1):
            rp = pathmod.walk(start_ns, target, in_iface=start_iif, src=self.fdst if start_iif else None)
            k = None
            if stack:
                for j, h in enumerate(rp.hops):
                    if h.ns == stack[-1].ns and h.in_iface is not None and not (j == 0 and start_iif):
                        k = j
                        break
            if k is not None:
                hops += rp.hops[:k]
                pt = stack.pop()
                start_ns, start_iif, target = pt.ns, rp.hops[k].in_iface, pt.before
                continue
            hops += rp.hops
            final = rp
            break
        if final is None:
            return hops, False, "reply path too long"
        # checks along the reply
        nat_before = {pt.ns: pt for pt in nat if pt.kind != "dnat"}
        dnat_at = {pt.ns: pt for pt in nat if pt.kind == "dnat"}
        cur_dst = arriving_src
        cur_src, cur_port = self.fdst, self.fport
        for i, hop in enumerate(hops):
            if hop.ns == HOST:
                continue
            if hop.ns in nat_before and i > 0 and not hop.bridge:
                cur_dst = nat_before[hop.ns].before
            last = i == len(hops) - 1
            nh = hop.gateway or cur_dst
            if hop.bridge:
                self.check_links(hops, i, "reply")
                continue
            self.check_tools(hop.ns, i, "reply")
            self.check_conntrack(hop.ns, i, "reply")
            role = "source" if i == 0 else ("dest" if hop.local else "forward")
            if last and not final.complete and final.stop_code in ("no-route", "unreachable-route"):
                code = "no-return-route"
                if i == 0 and not nat and len(p.hops) > 1:
                    self._no_snat(p, hop, cur_dst)
                else:
                    fwd_i = next((j for j, h in enumerate(p.hops) if h.ns == hop.ns and not h.bridge), None)
                    prev = self.prev_hop_address(p.hops, fwd_i) if fwd_i else None
                    self.check_no_route(hop, i, cur_dst, "reply", code, prev, final)
                break
            if role == "forward":
                self.check_forwarding(hop.ns, hop.in_iface, i, "reply")
            if role != "source":
                self.check_rp_filter(hop.ns, hop.in_iface, cur_src, i, "reply")
            status = {"snat"} if hop.ns in nat_before else set()
            if hop.ns in dnat_at and not hop.bridge:
                status.add("dnat")
            pkt = self.packet(cur_src, cur_dst, hop.in_iface, hop.out_iface, True, port=cur_port,
                              ct_status=frozenset(status))
            if hop.ns in dnat_at and not hop.bridge:
                # leaving the namespace that translated the destination, the reply's source is
                # the address (and port) the packet was sent to
                pt = dnat_at.pop(hop.ns)
                cur_src, cur_port = pt.before, pt.port_before
            if role == "dest":
                self.check_hook(hop.ns, "input", pkt, i, "reply", ST_FILTER)
                continue
            self.check_hook(hop.ns, "forward" if role == "forward" else "output", pkt, i, "reply", ST_FILTER)
            self.check_links(hops, i, "reply")
            self.check_neighbour(hops, i, nh, "reply", final if last and not final.complete else None)
        complete = final.complete and bool(hops) and hops[-1].ns == self.src_ns
        stop = final.stop
        if final.complete and hops and hops[-1].ns != self.src_ns:
            stop = f"the reply is delivered to {hops[-1].ns}, not {self.src_ns}"
            self.add(Finding(
                "reply-misdelivered", "error", hops[-1].ns,
                f"the reply to {cur_dst} goes to {hops[-1].ns}, which also holds {cur_dst}, instead of {self.src_ns}",
                {"reply path": " > ".join(h.ns for h in hops)},
                direction="reply", hop=len(hops) - 1, stage=ST_ROUTE))
        return hops, complete, stop

    def _no_snat(self, p: Path, dest_hop: Hop, src: str) -> None:
        """The destination has no route back to the untranslated private source: SNAT is missing."""
        fwd = [(i, h) for i, h in enumerate(p.hops) if h.forwards and not h.bridge and h.ns != HOST]
        err = "Network is unreachable"
        ev = {f"ip route get {src} in {dest_hop.ns}": err, f"routes in {dest_hop.ns}": routes_text(dest_hop.ns),
              "source as it arrives": src, "source NAT on the path": "none"}
        if not fwd:
            self.check_no_route(dest_hop, 0, src, "reply", "no-return-route", None, p)
            return
        _, gw = fwd[-1]
        inl = self.link(gw.ns, gw.in_iface)
        net = None
        if inl is not None:
            for n in inl.networks():
                if ipaddress.ip_address(src) in n.network:
                    net = str(n.network)
        if net is None:
            firstl = self.link(self.src_ns, p.hops[0].out_iface)
            for n in (firstl.networks() if firstl else []):
                if ipaddress.ip_address(src) in n.network:
                    net = str(n.network)
        net = net or f"{src}/32"
        fix = self._snat_cmds(gw.ns, net, gw.out_iface)
        ev["SNAT rules in " + gw.ns] = [r.text for r in self.k.fw(gw.ns).snat_rules()] or "none"
        prev = self.prev_hop_address(p.hops, len(p.hops) - 1)
        alts = [cmd("ip", "-n", dest_hop.ns, "route", "add", net, "via", prev)] if prev else []
        self.add(Finding(
            "no-snat", "error", gw.ns,
            f"no source NAT for {src} leaving {gw.ns} by {gw.out_iface}, and {dest_hop.ns} has no route back to "
            f"{src}: replies cannot return",
            ev, fix, alts,
            note=f"the fix translates {net} to {gw.out_iface}'s address as the packet leaves {gw.ns} "
                 f"(the alternative routes the private network instead)",
            direction="reply", hop=0, stage=ST_ROUTE), key=("no-snat", gw.ns))

    def _snat_cmds(self, ns: str, net: str, oif: str) -> list[str]:
        fw = self.k.fw(ns)
        native_nat = [c for c in fw.chains.values() if c.source == "nftables" and c.hook == "postrouting"
                      and c.type == "nat" and c.family in ("ip", "inet")]
        if native_nat:
            c = native_nat[0]
            return [cmd("ip", "netns", "exec", ns, "nft", "add", "rule", c.family, c.table, c.name,
                        "ip", "saddr", net, "oifname", oif, "masquerade")]
        if fw.nft_tables and not fw.iptables_nft_tables and not fw.legacy_tables:
            return [cmd("ip", "netns", "exec", ns, "nft", "add", "table", "ip", "nat"),
                    cmd("ip", "netns", "exec", ns, "nft", "add", "chain", "ip", "nat", "postrouting",
                        "{ type nat hook postrouting priority srcnat; policy accept; }"),
                    cmd("ip", "netns", "exec", ns, "nft", "add", "rule", "ip", "nat", "postrouting",
                        "ip", "saddr", net, "oifname", oif, "masquerade")]
        tool = ipt_tool("iptables-legacy" if fw.legacy_tables and not fw.iptables_nft_tables else "iptables-nft")
        return [cmd("ip", "netns", "exec", ns, tool, "-t", "nat", "-A", "POSTROUTING", "-s", net, "-o", oif,
                    "-j", "MASQUERADE")]

    # -- the probe -------------------------------------------------------

    def probe(self) -> ProbeResult:
        if self.proto == "icmp":
            # three pings 0.3 s apart, waiting 1 s after the last: outlasts one ARP retransmit (1 s), so a
            # neighbour entry left INCOMPLETE by earlier traffic resolves within the probe
            r = probemod.ping(self.src_ns, self.dst, count=3, timeout=1.0, interval=0.3)
            return ProbeResult("icmp", r.ok, r.summary(),
                               cmd("ip", "netns", "exec", self.src_ns, "ping", "-c", "3", self.dst))
        return (self._tcp() if self.proto == "tcp" else self._udp())

    def _tcp(self) -> ProbeResult:
        dst, port = self.dst, self.port

        def go() -> tuple[bool | None, str]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2.0)
            try:
                s.connect((dst, port))
                return True, f"connected to {dst}:{port}"
            except ConnectionRefusedError:
                return True, f"{dst}:{port} refused the connection (the path works; nothing listens there)"
            except TimeoutError:
                return False, f"no answer from {dst}:{port} within 2 s"
            except OSError as exc:
                return False, f"connect to {dst}:{port}: {exc.strerror or exc}"
            finally:
                s.close()

        ok, detail = nsexec.call_in(self.src_ns, go)
        return ProbeResult("tcp", ok, detail, cmd("ip", "netns", "exec", self.src_ns, "nc", "-z", "-w", "2", dst, str(port)))

    def _udp(self) -> ProbeResult:
        dst, port = self.dst, self.port

        def go() -> tuple[bool | None, str]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.5)
            try:
                s.connect((dst, port))
                s.send(b"natns doctor\n")
                s.recv(2048)
                return True, f"{dst}:{port} answered"
            except ConnectionRefusedError:
                return True, f"{dst}:{port}: port unreachable came back (the path works; nothing listens there)"
            except TimeoutError:
                return None, f"no answer from {dst}:{port} (UDP: inconclusive, many services stay silent)"
            except OSError as exc:
                return False, f"send to {dst}:{port}: {exc.strerror or exc}"
            finally:
                s.close()

        ok, detail = nsexec.call_in(self.src_ns, go)
        return ProbeResult("udp", ok, detail, cmd("ip", "netns", "exec", self.src_ns, "nc", "-u", "-w", "2", dst, str(port)))

    def df_probe(self, size: int) -> tuple[bool, str]:
        """A ping of `size` bytes (IP) with DF set: do frames of the source's MTU get through?"""
        argv = ["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size - 28), self.dst]
        proc = nsexec.run(self.src_ns, argv, check=False, timeout=10)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        return proc.returncode == 0, (text[-2] if len(text) >= 2 else (text[-1] if text else ""))


def diagnose(src_ns: str, dst: str, *, proto: str = "icmp", port: int | None = None, probe: bool = True) -> Report:
    """Why `src_ns` can (not) reach `dst`: the path, the reply path, findings and a probe.

    Raises UserError for an unknown namespace, a bad address or a bad port.
    """
    require_root("doctor")
    check_namespace(src_ns)
    dst = check_address(dst)
    if proto not in ("icmp", "tcp", "udp"):
        raise UserError(f"unknown protocol {proto!r}: use icmp, tcp or udp")
    if proto == "icmp":
        port = None
    elif port is None or not (1 <= int(port) <= 65535):
        raise UserError(f"--{proto} needs a port number 1-65535, not {port!r}")
    d = _Doctor(src_ns, dst, proto, port)
    p = pathmod.walk(src_ns, dst)
    report = Report(src_ns, dst, proto, port, p)
    arriving, nat = d.forward(p)
    report.nat = nat
    if p.complete and len(p.hops) > 1:
        report.reply_hops, report.reply_complete, report.reply_stop = d.reply(p, arriving, nat)
    elif p.complete:
        report.reply_complete = True
    if probe:
        report.probe = d.probe()
        mism = [f for f in d.findings if f.code == "mtu-mismatch" and f.direction == "forward"]
        if mism and p.hops and p.hops[0].out_iface:
            lk = d.link(src_ns, p.hops[0].out_iface)
            if lk and lk.mtu and report.probe.ok:
                ok, line = d.df_probe(lk.mtu)
                for f in mism:
                    f.evidence[f"ping -M do -s {lk.mtu - 28} (DF, {lk.mtu} bytes)"] = "ok" if ok else f"lost: {line}"
                    if not ok:
                        f.severity = "error"
        for f in [f for f in d.findings if f.code == "neighbour-failed"]:
            # the probe has just asked again: keep the finding only if ARP still gets no answer
            ns, nh, dev = f.namespace, f.evidence["next hop"], f.evidence["out"]
            try:
                ne = pathmod.neighbour(ns, nh, dev)
            except NetlinkError:
                ne = None
            if report.probe.ok or not ne or ne["state"] not in ("FAILED", "INCOMPLETE"):
                d.findings.remove(f)
            else:
                f.evidence["neighbour entry after the probe"] = f"{nh} dev {dev} {ne['state']}"
                f.severity = "error"
        if report.probe.ok is False and not [f for f in d.findings if f.severity == "error"]:
            d.add(Finding("unexplained-failure", "error", src_ns,
                          f"the probe failed but the configuration along the path looks right: {report.probe.detail}",
                          {"probe": report.probe.detail},
                          note=f"run `natns trace --from {src_ns} --to {dst}` to see where the packet goes",
                          direction="reply", hop=999, stage=ST_END))
    d.findings.sort(key=Finding.sort_key)
    report.findings = d.findings
    return report



# --------------------------------------------------------------------------
# Text output


def _hop_line(i: int, h: Hop) -> str:
    if h.ns == HOST:
        where = f"in {h.in_iface}  " if h.in_iface else ""
        return (f"  {i + 1:>2}  {HOST}  {where}the namespace natns runs in: its forwarding and forward hook "
                f"are checked, the walk stops here")
    if h.bridge:
        return f"  {i + 1:>2}  {h.ns}  bridged by {h.bridge}: in {h.in_iface}, out {h.out_iface}"
    parts = [f"  {i + 1:>2}  {h.ns}"]
    if h.in_iface:
        parts.append(f"in {h.in_iface}" + (f" (port {h.in_port})" if h.in_port else ""))
    if h.out_iface:
        parts.append(f"out {h.out_iface}" + (f" (port {h.out_port})" if h.out_port else ""))
    if h.local:
        parts.append("delivered")
    elif h.forwards:
        parts.append("forwards")
    if h.route:
        parts.append(f"route: {h.route}")
    if h.src:
        parts.append(f"src {h.src}")
    return "  ".join(parts)


def render(r: Report) -> str:
    """The report as text for a terminal."""
    what = r.proto if r.proto == "icmp" else f"{r.proto} port {r.port}"
    lines = [f"doctor: {r.src_ns} -> {r.dst} ({what})", "", "path:"]
    lines += [_hop_line(i, h) for i, h in enumerate(r.path.hops)]
    if not r.path.complete:
        lines.append(f"      stops: {r.path.stop}")
    for n in r.nat:
        lines.append(f"      {n.text()}")
    if r.reply_hops:
        lines.append("reply:")
        lines += [_hop_line(i, h) for i, h in enumerate(r.reply_hops)]
        if not r.reply_complete and r.reply_stop:
            lines.append(f"      stops: {r.reply_stop}")
    lines.append("")
    if r.findings:
        lines.append("findings, in the order the packet meets them:")
        for f in r.findings:
            lines.append(f"  {f.severity.upper():<7} {f.namespace}: {f.summary}"
                         + ("  [reply]" if f.direction == "reply" else ""))
            for k, v in f.evidence.items():
                if isinstance(v, list):
                    v = "; ".join(str(x) for x in v) or "(none)"
                lines.append(f"          {k}: {v}")
            for c in f.fix:
                lines.append(f"          fix: {c}")
            for c in f.alternatives:
                lines.append(f"          or:  {c}")
            if f.note:
                lines.append(f"          note: {f.note}")
    else:
        lines.append("findings: none")
    if r.probe:
        verdict = {True: "ok", False: "FAILED", None: "inconclusive"}[r.probe.ok]
        lines += ["", f"probe: {verdict}: {r.probe.detail}", f"       ({r.probe.command})"]
    nerr = len(r.errors)
    nwarn = len([f for f in r.findings if f.severity == "warning"])
    lines += ["", f"{'healthy' if r.healthy else 'NOT healthy'}: {nerr} error(s), {nwarn} warning(s)"]
    return "\n".join(lines)


__all__ = ["SEVERITIES", "Finding", "NatPoint", "ProbeResult", "Report", "cmd", "diagnose", "render"]
