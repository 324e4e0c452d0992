"""doctor's checks: each a function of the flow (and its read-only Snapshot) to findings.

A check reads; it never adds to the report itself: the passes (passes.py) call
the checks in the order the kernel processes a packet and collect what they
return. Every code a check returns is registered in findings.CODES.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shlex
from dataclasses import dataclass, field, replace

from .. import path as pathmod
from ..path import HOST, Hop, LinkInfo, Path, segment, veth_peer
from ...kernel import conntrack
from ...marks import IPTABLES_PREFIX, RT_PROTO, is_scope, parse_ns_mark
from ..rules import Packet, Rule, Verdict
from ..snapshot import RouteLookupError
from ...kernel.rtnl import IFA_F_DADFAILED
from ..uplink import accept_cmds
from .context import Flow
from .findings import (
    ST_CONNTRACK, ST_FILTER, ST_FORWARDING, ST_LINK, ST_LINK_GONE, ST_MTU, ST_NEIGH, ST_PREROUTING, ST_ROUTE,
    ST_RPFILTER, ST_TOOLS, Finding, cmd, finding,
)


#: The fix that brings a natns lab back to its topology. natns keeps no state file, so the
#: file the lab was brought up from is not known: the user names it.
UP_COMMAND = "natns up <your topology file>"


def lab_of(fl: Flow, ns: str) -> str | None:
    """The natns lab that owns namespace `ns` (the mark on its lo), or None."""
    if ns == HOST:
        return None
    owner = parse_ns_mark(fl.snap.ns_mark(ns))
    return owner[0] if owner else None


def natns_route_fixes(fl: Flow, f: Finding) -> None:
    """In a namespace of a natns lab, the routes doctor adds carry natns's mark (proto 233),
    as natns's own do, so `natns status` counts them as the lab's; `natns up` is the other way."""
    changed = False
    for cmds in (f.fix, f.alternatives):
        for k, c in enumerate(cmds):
            argv = shlex.split(c)
            if (argv[:2] == ["ip", "-n"] and len(argv) > 4 and argv[3] == "route" and argv[4] in ("add", "replace")
                    and "proto" not in argv and lab_of(fl, argv[2])):
                cmds[k] = cmd(*argv, "proto", str(RT_PROTO))
                changed = True
    if changed and UP_COMMAND not in f.fix + f.alternatives:
        lab = next(filter(None, (lab_of(fl, shlex.split(c)[2]) for c in f.fix + f.alternatives
                                 if shlex.split(c)[:2] == ["ip", "-n"])), None)
        f.alternatives.append(UP_COMMAND)
        extra = (f"{f.namespace if lab_of(fl, f.namespace) else 'the namespace'} belongs to natns lab {lab!r}: "
                 f"the route carries natns's mark (proto {RT_PROTO}) so that `natns status` counts it as the "
                 f"lab's; `natns up` with the lab's topology file restores every route the topology asks for")
        f.note = f"{f.note}; {extra}" if f.note else extra


def _sysctl_name(iface: str) -> str:
    return iface.replace(".", "/")


def _err_text(exc: Exception) -> str:
    return pathmod._err_text(exc)


# -- firewall tools and conntrack ---------------------------------------------


def check_tools(fl: Flow, ns: str, hop: int, direction: str) -> list[Finding]:
    """iptables-legacy next to nftables (both filter, neither shows the other); unreadable dumps."""
    fw = fl.snap.firewall(ns)
    out: list[Finding] = []
    if (fw.legacy_rules or fw.legacy_tables) and fw.nft_tables:
        fix = [cmd("ip", "netns", "exec", ns, "sh", "-c", "iptables-legacy-save | iptables-nft-restore --noflush")]
        for t in fw.legacy_tables:
            fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", t, "-F"))
            fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", t, "-X"))
        for c in fw.chains.values():
            if c.source == "iptables-legacy" and c.hook and c.policy not in (None, "accept"):
                fix.append(cmd("ip", "netns", "exec", ns, "iptables-legacy", "-t", c.table, "-P", c.name, "ACCEPT"))
        out.append(finding(
            "legacy-and-nft", ns,
            f"{ns} has iptables-legacy rules and nftables tables at the same time: both filter every "
            f"packet, and neither tool shows the other's rules",
            {"iptables-legacy tables with rules": fw.legacy_tables,
             "iptables-legacy rules": fw.legacy_rules,
             "nftables tables (not iptables-nft)": fw.nft_tables,
             "iptables-nft tables": fw.iptables_nft_tables},
            fix, note="the fix moves the legacy rules into iptables-nft (nftables underneath), then "
                      "empties the legacy tables",
            direction=direction, hop=hop, stage=ST_TOOLS, key=("legacy-and-nft", ns)))
    for p in fw.problems:
        out.append(finding("firewall-unreadable", ns, f"could not read all rules in {ns}: {p}",
                           {"problem": p}, direction=direction, hop=hop, stage=ST_TOOLS))
    return out


def check_conntrack(fl: Flow, ns: str, hop: int, direction: str) -> list[Finding]:
    """The conntrack table's fill and its failure counters."""
    count = fl.snap.sysctl(ns, "net.netfilter.nf_conntrack_count")
    cmax = fl.snap.sysctl(ns, "net.netfilter.nf_conntrack_max")
    if count is None or cmax is None:
        return []
    count_i, max_i = int(count), int(cmax)
    stats = fl.snap.conntrack_stats(ns)
    ev = {"net.netfilter.nf_conntrack_count": count_i, "net.netfilter.nf_conntrack_max": max_i}
    for k in ("insert_failed", "drop", "early_drop"):
        if k in stats:
            ev[f"/proc/net/stat/nf_conntrack {k}"] = stats[k]
    alt = [cmd("sysctl", "-w", f"net.netfilter.nf_conntrack_max={max(max_i * 2, 65536)}")]
    alt_note = ("the limit applies to each namespace but can only be set in the initial one (host-wide): "
                "the alternative raises it for every namespace")
    key = ("conntrack", ns)
    if max_i and count_i >= max_i:
        return [finding(
            "conntrack-full", ns,
            f"conntrack table in {ns} is full ({count_i} of {max_i}): new connections are dropped",
            ev, [cmd("ip", "netns", "exec", ns, "conntrack", "-F")], alt,
            note="conntrack -F forgets every tracked connection in " + ns + "; " + alt_note,
            direction=direction, hop=hop, stage=ST_CONNTRACK, key=key)]
    if max_i and count_i >= 0.9 * max_i:
        return [finding(
            "conntrack-nearly-full", ns,
            f"conntrack table in {ns} is nearly full ({count_i} of {max_i})",
            ev, [cmd("ip", "netns", "exec", ns, "conntrack", "-F")], alt, note=alt_note,
            direction=direction, hop=hop, stage=ST_CONNTRACK, key=key)]
    if stats.get("insert_failed"):
        return [finding(
            "conntrack-insert-failed", ns,
            f"conntrack in {ns} failed to insert {stats['insert_failed']} entries (packets dropped)",
            ev, note="counters since the namespace was made; races of parallel first packets (UDP) cause it",
            direction=direction, hop=hop, stage=ST_CONNTRACK, key=key)]
    if stats.get("drop") or stats.get("early_drop"):
        return [finding(
            "conntrack-drops", ns,
            f"conntrack in {ns} has dropped packets before (drop {stats.get('drop', 0)}, "
            f"early_drop {stats.get('early_drop', 0)}); the table is not full now",
            ev, direction=direction, hop=hop, stage=ST_CONNTRACK, key=key)]
    return []


# -- netfilter hooks -----------------------------------------------------------


def check_hook(fl: Flow, ns: str, hook: str, pkt: Packet, hop: int, direction: str, stage: int) -> list[Finding]:
    """Does `hook` in `ns` drop `pkt` (a rule or a policy), or may it (a rule doctor can't evaluate)?"""
    fw = fl.snap.firewall(ns)
    v = fw.evaluate(hook, pkt)
    if v.drops:
        return [_drop_finding(fl, ns, hook, pkt, v, hop, direction, stage)]
    if v.unknown and v.rule is not None:
        r = v.rule
        proto = f" --{fl.proto} {fl.fport}" if fl.proto != "icmp" else ""
        return [finding(
            "firewall-unknown", ns,
            f"the {hook} hook in {ns}: doctor cannot evaluate rule `{r.text}` ({r.where()}) for the "
            f"{'reply' if direction == 'reply' else 'packet'}; if it does not match, "
            f"{v.then.describe() if v.then else 'a later rule'} drops it",
            {"hook": hook, "rule": r.text, "not evaluated": r.unknown_parts(), "packet": fl.flow_text(pkt),
             "otherwise": v.then.describe() if v.then else "?"},
            note=f"run `natns trace --from {fl.src_ns} --to {fl.dst}{proto}` to see what the kernel does",
            direction=direction, hop=hop, stage=stage)]
    if v.maybe:
        r = v.maybe[0]
        return [finding(
            "firewall-maybe-drop", ns,
            f"{r.where()} in {ns} has a rule that drops and that doctor cannot evaluate for this packet",
            {"hook": hook, "rule": r.text, "packet": fl.flow_text(pkt)},
            direction=direction, hop=hop, stage=stage)]
    return []


def check_ingress(fl: Flow, ns: str, pkt: Packet, hop: Hop, i: int, direction: str) -> list[Finding]:
    """Do the netdev (or inet) ingress chains on the device(s) `pkt` arrives by drop it? They run
    before conntrack (its ``ct state`` is "invalid" there) and before the IP layer; a packet that
    came in by a bridge port passes that port's chains and the bridge's."""
    out: list[Finding] = []
    for dev in dict.fromkeys(d for d in (hop.in_port, hop.in_iface) if d):
        out += check_hook(fl, ns, "ingress", replace(pkt, iif=dev, oif=None, ct_state="invalid"), i,
                          direction, ST_PREROUTING)
    return out[:1]


def check_arp_ingress(fl: Flow, nxt: Hop, i: int, direction: str, pkt: Packet | None, entry: str
                      ) -> list[Finding]:
    """A failed neighbour entry explained by the next hop's netdev ingress chains: a drop policy no
    rule mentioning ARP accepts before, or a rule mentioning ARP that drops. The fix lets ARP in,
    and (for a policy) the packet itself when the policy drops it too."""
    fw = fl.snap.firewall(nxt.ns)
    for dev in dict.fromkeys(d for d in (nxt.in_port, nxt.in_iface) if d):
        for c in fw.base_chains("ingress", device=dev):
            arp = [r for r in c.rules if "arp" in r.text.split() and r.verdict in ("accept", "drop", "reject")]
            if c.family != "netdev" or (arp and arp[0].verdict == "accept") or (not arp and c.policy != "drop"):
                continue
            ev = {"hook": "ingress", "device": dev, "neighbour entry": entry, "tool": "nftables",
                  "table": f"netdev {c.table}", "chain": c.name}
            if arp:
                ev["rule"] = arp[0].text
                what = f"rule `{arp[0].text}` ({arp[0].where()})"
                fix = [cmd("ip", "netns", "exec", nxt.ns, "nft", "delete", "rule", "netdev", c.table, c.name,
                           "handle", str(arp[0].handle))]
            else:
                ev["policy"] = "drop"
                what = f"the drop policy of chain {c.name} in table netdev {c.table}"
                fix = [cmd("ip", "netns", "exec", nxt.ns, "nft", "insert", "rule", "netdev", c.table, c.name,
                           "meta", "protocol", "arp", "accept")]
                if pkt is not None:
                    ip = replace(pkt, iif=dev, oif=None, ct_state="invalid")
                    if fw.evaluate("ingress", ip).drops:
                        fix.insert(0, _accept_cmd(fl, nxt.ns, c, ip))
            return [finding("firewall-drop", nxt.ns, f"the ingress hook of {dev} in {nxt.ns} drops ARP, so the "
                            f"neighbour entry on the way there fails: {what}", ev, fix,
                            direction=direction, hop=i, stage=ST_NEIGH)]
    return []


def _drop_finding(fl: Flow, ns: str, hook: str, pkt: Packet, v: Verdict, hop: int, direction: str,
                  stage: int) -> Finding:
    c = v.chain
    ev = {"hook": hook, "packet": fl.flow_text(pkt)}
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
            fix = [cmd("ip", "netns", "exec", ns, _ipt(fl, r.source, r.family), "-t", r.table, "-D", r.chain,
                       *(r.argv or []))]
        what = f"rule `{r.text}` ({r.where()})"
    else:
        ev.update({"tool": c.source, "table": f"{c.family} {c.table}" if c.source == "nftables" else c.table,
                   "chain": c.name, "policy": "drop"})
        fix = [_accept_cmd(fl, ns, c, pkt)]
        if c.family == "netdev":  # the policy drops ARP too: the neighbours could not resolve
            fix.append(cmd("ip", "netns", "exec", ns, "nft", "insert", "rule", "netdev", c.table, c.name,
                           "meta", "protocol", "arp", "accept"))
        if "dnat" in pkt.ct_status and pkt.ct_state == "new":
            # the packet was sent to a floating IP or forwarded port: accepting what the
            # nat table translated is the usual rule (the DNAT rules say what is let in)
            alts = fix
            fix = [_accept_cmd(fl, ns, c, pkt, dnat=True)]
        what = v.describe()
    code = "forward-drop" if hook == "forward" else "firewall-drop"
    where = {"ingress": f"the ingress hook of {pkt.iif}", "forward": "the forward hook", "input": "the input hook",
             "output": "the output hook", "prerouting": "the prerouting hook",
             "postrouting": "the postrouting hook"}[hook]
    note = None
    lab = lab_of(fl, ns)
    natns_own = (_natns_rule(v.rule) if v.rule is not None
                 else c.source == "nftables" and is_scope(c.table))
    if lab and natns_own:
        # natns's own rules: an edit by hand is drift to `natns status`, undone by the next `up`
        fix, alts = [UP_COMMAND], fix + alts
        note = (f"the drop is natns's own ({ev.get('table')} {ev.get('chain')}) in a namespace of natns lab "
                f"{lab!r}: if its rules were changed by hand, `natns up` with the lab's topology file puts them "
                f"back; if the topology asks for this drop, change the topology, then `natns up`. The "
                f"alternative edits natns's rules directly, which `natns status` reports as drift")
    return finding(code, ns, f"{where} in {ns} drops the {'reply' if direction == 'reply' else 'packet'}: {what}",
                   ev, fix, alts, note, direction=direction, hop=hop, stage=stage)


def _ipt(fl: Flow, source: str, family: str) -> str:
    """The iptables command that edits `source`'s rules of `family` (ip6: ip6tables)."""
    tool = fl.snap.ipt_tool(source)
    return tool.replace("iptables", "ip6tables", 1) if family == "ip6" else tool


def _accept_cmd(fl: Flow, ns: str, chain, pkt: Packet, *, dnat: bool = False) -> str:
    reply = pkt.ct_state == "established"
    if chain.source == "nftables":
        if chain.family == "netdev" or chain.hook == "ingress":  # no conntrack before the IP layer
            words = ["ip", "saddr", pkt.saddr, "ip", "daddr", pkt.daddr, "accept"]
        elif dnat:
            words = ["ct", "status", "dnat", "accept"]
        elif reply:
            words = ["ct", "state", "established,related", "accept"]
        else:
            ip = "ip6" if pkt.v6 else "ip"
            words = [ip, "saddr", pkt.saddr, ip, "daddr", pkt.daddr]
            if pkt.proto in ("tcp", "udp"):
                words += [pkt.proto, "dport", str(pkt.dport)]
            elif pkt.proto == "icmp":
                words += ["icmpv6" if pkt.v6 else "icmp", "type", "echo-request"]
            words.append("accept")
        return cmd("ip", "netns", "exec", ns, "nft", "insert", "rule", chain.family, chain.table, chain.name,
                   *words)
    tool = _ipt(fl, chain.source, chain.family)
    if dnat:
        words = ["-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]
    elif reply:
        words = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
    else:
        words = ["-s", pkt.saddr, "-d", pkt.daddr, "-p", "ipv6-icmp" if pkt.v6 and pkt.proto == "icmp" else pkt.proto]
        if pkt.proto in ("tcp", "udp"):
            words += ["--dport", str(pkt.dport)]
        words += ["-j", "ACCEPT"]
    return cmd("ip", "netns", "exec", ns, tool, "-t", chain.table, "-I", chain.name, *words)


# -- bridge netfilter and hairpin -----------------------------------------------------

BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"


def check_bridge_hairpin(fl: Flow, hop: Hop, i: int, direction: str) -> list[Finding]:
    """A DNATed packet sent back out the bridge port it came in by: with br_netfilter on
    (bridge-nf-call-iptables=1) the nat hook runs while the bridge switches the frame, the
    bridge then switches it to the new destination, and a port without hairpin mode never
    sends a frame back out itself. (Routed, with the sysctl off, it would leave by the
    bridge device, which delivers to any port.)"""
    if not hop.in_port or hop.in_port != hop.out_port or hop.in_iface != hop.out_iface:
        return []
    port = fl.link(hop.ns, hop.in_port)
    if fl.snap.sysctl(hop.ns, BRIDGE_NF) != "1" or port is None or port.hairpin is not False:
        return []
    off = cmd("ip", "netns", "exec", hop.ns, "sysctl", "-w", f"{BRIDGE_NF}=0")
    on = cmd("ip", "-n", hop.ns, "link", "set", hop.in_port, "type", "bridge_slave", "hairpin", "on")
    mine = parse_ns_mark(fl.snap.ns_mark(hop.ns)) is not None
    # natns's routers route (the sysctl off is what `natns up` sets); elsewhere the bridge's
    # filtering may be wanted (a CNI or Docker host): hairpin on the one port changes less.
    fix, alt = ([off], [on]) if mine else ([on], [off])
    return [finding(
        "bridge-hairpin", hop.ns,
        f"destination NAT in {hop.ns} sends the packet back out {hop.in_port}, the port of bridge "
        f"{hop.in_iface} it came in by; with {BRIDGE_NF}=1 the bridge switches it there and, with hairpin "
        f"off on {hop.in_port}, drops it",
        {BRIDGE_NF: "1", f"{hop.in_port} hairpin": "off", "bridge": hop.in_iface,
         "in port": hop.in_port, "out port": hop.out_port, "destination after NAT": fl.fdst},
        fix, alt, note=("natns's routers switch bridge netfilter off, so they route the packet"
                        if mine else "the alternative stops the bridge calling iptables/nftables for "
                                     "every bridged frame in this namespace"),
        direction=direction, hop=i, stage=ST_FORWARDING, key=("bridge-hairpin", hop.ns, hop.in_port))]


# -- forwarding and rp_filter ------------------------------------------------------


def check_forwarding(fl: Flow, ns: str, in_iface: str, hop: int, direction: str) -> list[Finding]:
    """ip_forward (and the incoming interface's forwarding) where the packet is forwarded;
    for IPv6, net.ipv6.conf.all.forwarding (what the kernel's ip6_forward asks)."""
    if fl.v6:
        key = fl.forwarding_key
        v = fl.snap.sysctl(ns, key)
        if v == "1":
            return []
        return [finding(
            "ip6-forward-off", ns,
            f"IPv6 forwarding is off in {ns}, which must forward the packet (in {in_iface}): "
            f"the kernel drops it",
            {key: v}, [cmd("ip", "netns", "exec", ns, "sysctl", "-w", f"{key}=1")],
            direction=direction, hop=hop, stage=ST_FORWARDING, key=("ip6-forward-off", ns))]
    ipf = fl.snap.sysctl(ns, "net.ipv4.ip_forward")
    link = fl.link(ns, in_iface)
    dev = link.conf.get("forwarding") if link else None
    ev = {"net.ipv4.ip_forward": ipf}
    if link is not None:
        ev[f"net.ipv4.conf.{_sysctl_name(in_iface)}.forwarding"] = str(dev)
    if ipf != "1":
        return [finding(
            "ip-forward-off", ns,
            f"IP forwarding is off in {ns}, which must forward the packet (in {in_iface}): "
            f"the kernel drops it",
            ev, [cmd("ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.ip_forward=1")],
            direction=direction, hop=hop, stage=ST_FORWARDING, key=("ip-forward-off", ns))]
    if dev == 0:
        return [finding(
            "ip-forward-off", ns,
            f"forwarding is off on {in_iface} in {ns}, where the packet arrives: the kernel drops it",
            ev, [cmd("ip", "netns", "exec", ns, "sysctl", "-w",
                     f"net.ipv4.conf.{_sysctl_name(in_iface)}.forwarding=1")],
            direction=direction, hop=hop, stage=ST_FORWARDING, key=("ip-forward-off", ns, in_iface))]
    return []


def check_rp_filter(fl: Flow, ns: str, in_iface: str, saddr: str, hop: int, direction: str, *,
                    arp: bool = False, stage: int = ST_RPFILTER) -> list[Finding]:
    """Would rp_filter in `ns` drop a packet from `saddr` arriving on `in_iface`? (also ARP requests)"""
    link = fl.link(ns, in_iface)
    if link is None:
        return []
    all_v = int(fl.snap.sysctl(ns, "net.ipv4.conf.all.rp_filter") or 0)
    dev_v = int(link.conf.get("rp_filter", 0) or 0)
    mode = max(all_v, dev_v)
    if mode == 0:
        return []
    dev_key = f"net.ipv4.conf.{_sysctl_name(in_iface)}.rp_filter"
    ev = {"net.ipv4.conf.all.rp_filter": all_v, dev_key: dev_v, "effective": mode,
          "packet source": saddr, "arrives on": in_iface}
    view = fl.snap.get(ns)
    try:
        rev = fl.snap.route_get(ns, saddr)
        ev["reverse route"] = rev.text
        rev_if = view.links.get(rev.oif).name if rev.oif in view.links else None
        ev["reverse route leaves by"] = rev_if
        if rev.type == pathmod.RTN_LOCAL:
            return []  # a martian, not rp_filter's business here
    except RouteLookupError as exc:
        rev, rev_if = None, None
        ev["reverse route"] = f"none ({_err_text(exc)})"
    if mode == 1 and rev is not None and rev_if == in_iface:
        return []
    if mode == 2 and rev is not None:
        return []
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
    return [finding("rp-filter", ns, summary, ev, fix, alts, note,
                    direction=direction, hop=hop, stage=stage, key=("rp-filter", ns, in_iface, saddr))]


# -- links, MTU, neighbours, duplicates -------------------------------------------------


def _crossed(fl: Flow, hops: list[Hop], i: int) -> list[tuple[str, LinkInfo]]:
    """The links the packet crosses from hops[i] to the next namespace, in order, as (namespace, link)."""
    hop = hops[i]
    names = [hop.out_port or hop.out_iface] if hop.bridge else [hop.out_iface, hop.out_port]
    crossed: list[tuple[str, LinkInfo]] = []
    for n in names:
        lk = fl.link(hop.ns, n)
        if lk is not None:
            crossed.append((hop.ns, lk))
    if hop.bridge:
        br = fl.link(hop.ns, hop.bridge)
        inport = fl.link(hop.ns, hop.in_iface)
        crossed = ([(hop.ns, inport)] if inport else []) + ([(hop.ns, br)] if br else []) + crossed
    last = crossed[-1] if crossed else None
    if last and last[1].kind == "veth":
        pns, plink = veth_peer(fl.snap.get(last[0]), last[1], fl.snap)
        if pns and pns != HOST and plink is not None:
            crossed.append((pns, plink))
            pview = fl.snap.get(pns)
            if plink.master and plink.master in pview.links:
                crossed.append((pns, pview.links[plink.master]))
    return crossed


@dataclass
class PathMtu:
    """The MTUs along the forward path: the source's out link, and the smallest link after it."""

    src_ns: str
    src_link: str
    src_mtu: int
    mtu: int             # the smallest MTU of a link the packet is sent out of after the source
    ns: str | None       # where: the namespace that sends out of that link, and the link
    link: str | None
    router_ns: str | None = None   # the namespace that answers "frag needed" for it (it forwards there)
    router_in: str | None = None


def path_mtu(fl: Flow, hops: list[Hop]) -> PathMtu | None:
    """The source's link MTU and the smallest MTU a forwarding namespace sends out of on the way."""
    if not hops or not hops[0].out_iface:
        return None
    src = fl.link(hops[0].ns, hops[0].out_iface)
    if src is None or not src.mtu:
        return None
    pm = PathMtu(hops[0].ns, src.name, src.mtu, src.mtu, None, None)
    for i, hop in enumerate(hops[1:], 1):
        if hop.ns == HOST or hop.bridge or not hop.forwards or not hop.out_iface:
            continue
        lk = fl.link(hop.ns, hop.out_iface)
        if lk is not None and lk.mtu and lk.mtu < pm.mtu:
            pm.mtu, pm.ns, pm.link, pm.router_ns, pm.router_in = lk.mtu, hop.ns, lk.name, hop.ns, hop.in_iface
    return pm


def _mtu_fixes(fl: Flow, pm: PathMtu | None, small: int, router: str | None, out_link: str | None
               ) -> tuple[list[str], list[str]]:
    """(fix, alternatives) that let the source's full-size DF packets through: the source's link
    MTU lowered to the path's; for TCP, an MSS clamp where the path narrows."""
    fix: list[str] = []
    alts: list[str] = []
    if pm is not None and pm.src_mtu > small:
        fix.append(cmd("ip", "-n", pm.src_ns, "link", "set", pm.src_link, "mtu", str(small)))
        # and the other end of the source's link, so that the link's two ends agree (a bridge
        # port stays: the segment's other hosts send on it)
        lk = fl.link(pm.src_ns, pm.src_link)
        if lk is not None and lk.kind == "veth":
            pns, peer = veth_peer(fl.snap.get(pm.src_ns), lk, fl.snap)
            if pns and pns != HOST and peer is not None and not peer.master and peer.mtu > small:
                fix.append(cmd("ip", "-n", pns, "link", "set", peer.name, "mtu", str(small)))
    if fl.proto == "tcp" and router and out_link:
        fw = fl.snap.firewall(router)
        if fw.nft_tables and not fw.iptables_nft_tables and not fw.legacy_tables:
            alts += [cmd("ip", "netns", "exec", router, "nft", "add", "table", "ip", "mss"),
                     cmd("ip", "netns", "exec", router, "nft", "add", "chain", "ip", "mss", "forward",
                         "{ type filter hook forward priority mangle; policy accept; }"),
                     cmd("ip", "netns", "exec", router, "nft", "add", "rule", "ip", "mss", "forward", "oifname",
                         out_link, "tcp", "flags", "syn", "tcp", "option", "maxseg", "size", "set", "rt", "mtu")]
        else:
            alts.append(cmd("ip", "netns", "exec", router, fl.snap.ipt_tool("iptables-nft"), "-t", "mangle", "-A",
                            "FORWARD", "-o", out_link, "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j",
                            "TCPMSS", "--clamp-mss-to-pmtu"))
    return fix, alts


def check_links(fl: Flow, hops: list[Hop], i: int, direction: str, pm: PathMtu | None = None) -> list[Finding]:
    """Every link the packet crosses from hops[i] to the next namespace is up, and the MTUs agree.

    `pm` (the forward path's MTUs) lets an MTU fix restore the source's full-size packets."""
    crossed = _crossed(fl, hops, i)
    out: list[Finding] = []
    for ns, lk in crossed:
        if not lk.up:
            out.append(finding(
                "link-down", ns,
                f"{lk.name} in {ns} is down: the packet cannot cross it",
                {"link": lk.name, "namespace": ns, "state": lk.operstate, "flags": "DOWN (no IFF_UP)"},
                [cmd("ip", "-n", ns, "link", "set", lk.name, "up")],
                direction=direction, hop=i, stage=ST_LINK, key=("link-down", ns, lk.name)))
    # MTU: the two ends of each veth pair crossed (`a` sends, `b` receives)
    for (ans, a), (bns, b) in itertools.pairwise(crossed):
        if a.kind != "veth" or b.kind != "veth" or a.peer_index != b.index:
            continue
        if a.mtu and b.mtu and a.mtu != b.mtu:
            small, (big_ns, big) = min(a.mtu, b.mtu), ((ans, a) if a.mtu > b.mtu else (bns, b))
            if a.mtu > b.mtu:
                what = (f"frames over {small} bytes from {ans} are dropped silently by {b.name} in {bns} "
                        f"(no ICMP error comes back)")
            else:
                what = (f"{ans} answers bigger packets with ICMP frag needed (mtu {a.mtu}); frames over {small} "
                        f"bytes sent the other way, from {bns}, are dropped silently by {a.name}")
            lower_big = cmd("ip", "-n", big_ns, "link", "set", big.name, "mtu", str(small))
            fix, alts = ([], [])
            if direction == "forward":
                fix, alts = _mtu_fixes(fl, pm, min(small, pm.mtu if pm else small), ans if i > 0 else None,
                                       a.name)
            if lower_big not in fix:
                (alts if fix else fix).insert(0, lower_big)
            note = None
            if fix and fix[0] != lower_big:
                note = (f"lowering the source's link MTU lets its full-size (DF) packets through; the alternative "
                        f"lowers {big.name} in {big_ns} so that nothing is dropped silently on this link (what "
                        f"is bigger is then answered with frag needed)")
            out.append(finding(
                "mtu-mismatch", ans,
                f"the two ends of one link disagree on the MTU: {a.name} in {ans} has {a.mtu}, "
                f"its peer {b.name} in {bns} has {b.mtu}: {what}",
                {f"{ans} {a.name} mtu": a.mtu, f"{bns} {b.name} mtu": b.mtu},
                fix, alts, note,
                direction=direction, hop=i, stage=ST_MTU, key=("mtu", tuple(sorted([(ans, a.name), (bns, b.name)])))))
    return out


def check_path_mtu(fl: Flow, hops: list[Hop], pm: PathMtu | None) -> list[Finding]:
    """A forwarding namespace on the way sends out of a link with a smaller MTU than the source's:
    it answers the source's full-size packets with DF set (TCP's, ``ping -M do``) with ICMP frag
    needed. A warning; an error once doctor's DF probe at the source's MTU fails."""
    if pm is None or pm.ns is None or pm.mtu >= pm.src_mtu:
        return []
    lk = fl.link(pm.ns, pm.link)
    if lk is not None and lk.kind == "veth":
        _, peer = veth_peer(fl.snap.get(pm.ns), lk, fl.snap)
        if peer is not None and peer.mtu != lk.mtu:
            return []  # the two ends disagree: mtu-mismatch says it, with this fix
    i = next((k for k, h in enumerate(hops) if h.ns == pm.ns and not h.bridge), 0)
    fix, alts = _mtu_fixes(fl, pm, pm.mtu, pm.ns, pm.link)
    return [finding(
        "path-mtu", pm.ns,
        f"{pm.link} in {pm.ns} has MTU {pm.mtu}, smaller than the source's {pm.src_link} ({pm.src_mtu}): "
        f"{pm.ns} answers packets over {pm.mtu} bytes with DF set with ICMP frag needed (mtu {pm.mtu})",
        {f"{pm.src_ns} {pm.src_link} mtu": pm.src_mtu, f"{pm.ns} {pm.link} mtu": pm.mtu},
        fix, alts,
        note=(f"path MTU discovery lowers TCP's packets when that ICMP error gets back; a sender that must "
              f"send {pm.src_mtu}-byte packets with DF fails. Lowering the source's link MTU to {pm.mtu} makes "
              f"its packets fit" + ("; the alternative clamps TCP's MSS to the route's MTU in " + pm.ns
                                     if alts else "")),
        direction="forward", hop=i, stage=ST_MTU, key=("path-mtu", pm.ns, pm.link))]


def _neigh_text(ne: dict | None, nh: str) -> str | None:
    if not ne:
        return None
    return f"{nh} dev {ne['dev']} {('lladdr ' + ne['lladdr'] + ' ') if ne['lladdr'] else ''}{ne['state']}"


def check_neighbour(fl: Flow, hops: list[Hop], i: int, nh: str, direction: str, stopped: Path | None,
                    pkt: Packet | None = None) -> list[Finding]:
    """The next hop answers ARP: the walk found its owner, and its neighbour entry has not failed."""
    hop = hops[i]
    if hop.bridge or not hop.out_iface:
        return []
    if stopped is not None and stopped.stop_code == "no-neighbour":
        ev = {"route": hop.route, "next hop": nh, "out": hop.out_iface, "why": stopped.stop}
        try:
            ne = fl.snap.neighbour(hop.ns, nh, hop.out_iface)
        except RouteLookupError:
            ne = None
        if ne:
            ev["neighbour entry"] = _neigh_text(ne, nh)
        fix: list[str] = []
        note = None
        if hop.gateway:
            cands = fl.gateway_candidates(hop.ns, fl.fdst if direction == "forward" else nh)
            cands = [c for c in cands if c[1] == hop.out_iface] or cands
            if cands:
                dst_words = (hop.route or "default").split()
                rdst = dst_words[0] if dst_words and dst_words[0] not in pathmod.RTN_NAMES.values() else "default"
                fix = [cmd("ip", "-n", hop.ns, "route", "replace", rdst, "via", cands[0][0], "dev", cands[0][1])]
                note = f"{cands[0][0]} ({cands[0][2]}) is on the same link and has a route onwards"
        else:
            note = f"no namespace on {hop.out_iface}'s link holds {nh}"
        return [finding(
            "next-hop-unreachable", hop.ns,
            f"next hop {nh} does not answer on {hop.out_iface} in {hop.ns}: {stopped.stop}",
            ev, fix, note=note, direction=direction, hop=i, stage=ST_NEIGH)]
    try:
        ne = fl.snap.neighbour(hop.ns, nh, hop.out_iface)
    except RouteLookupError:
        ne = None
    if ne and ne["state"] in ("FAILED", "INCOMPLETE"):
        nxt = next((h for h in hops[i + 1:] if not h.bridge), None)
        sender = hop.src or fl.address_towards(hop.ns, hop.out_iface, nh)
        if nxt is not None and not nxt.bridge and nxt.ns != HOST and nxt.in_iface and sender:
            found = (check_nd_input(fl, nxt.ns, nxt.in_iface, sender, nh, i, direction) if fl.v6 else
                     check_rp_filter(fl, nxt.ns, nxt.in_iface, sender, i, direction, arp=True, stage=ST_NEIGH))
            if found:
                return found
            arp = check_arp_ingress(fl, nxt, i, direction, pkt, f"{nh} dev {ne['dev']} {ne['state']}")
            if arp:
                return arp
        return [finding(
            "neighbour-failed", hop.ns,
            f"the neighbour entry for next hop {nh} on {hop.out_iface} in {hop.ns} is {ne['state']}: "
            f"{'neighbour discovery' if fl.v6 else 'ARP'} got no answer (recently)",
            {"next hop": nh, "out": hop.out_iface, "neighbour entry": f"{nh} dev {ne['dev']} {ne['state']}"},
            [], note="checked again after the probe: an entry that answers then is dropped from the report",
            direction=direction, hop=i, stage=ST_NEIGH)]
    return []


def check_nd_input(fl: Flow, ns: str, in_iface: str, sender: str, nh: str, hop: int, direction: str
                   ) -> list[Finding]:
    """IPv6: does the next hop's input hook drop the neighbour solicitation for `nh` (so
    neighbour discovery never answers)? Its fix lets neighbour discovery in: solicitations
    and advertisements, as natns's own ip6 rules do."""
    pkt = Packet(sender, nh, "icmp", None, None, "nd-neighbor-solicit", in_iface, None, "untracked")
    v = fl.snap.firewall(ns).evaluate("input", pkt)
    if not v.drops:
        return []
    f = _drop_finding(fl, ns, "input", pkt, v, hop, direction, ST_NEIGH)
    if v.rule is None:  # a drop policy: accept neighbour discovery at the head of that chain
        c = v.chain
        if c.source == "nftables":
            f.fix = [cmd("ip", "netns", "exec", ns, "nft", "insert", "rule", c.family, c.table, c.name, "icmpv6",
                         "type", "{ nd-neighbor-solicit, nd-neighbor-advert }", "accept")]
        else:
            f.fix = [cmd("ip", "netns", "exec", ns, _ipt(fl, c.source, c.family), "-t", c.table, "-I", c.name,
                         "-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", str(t), "-j", "ACCEPT")
                     for t in ("neighbour-advertisement", "neighbour-solicitation")]
    f.summary = (f"the input hook in {ns} drops neighbour discovery for {nh} (a solicitation from {sender}): "
                 f"{v.describe()}; the next hop never answers")
    return [f]


def check_duplicates(fl: Flow, hops: list[Hop], i: int, relevant: dict[str, str], direction: str
                     ) -> list[Finding]:
    """No address is held by two namespaces on the segment hops[i] sends on."""
    hop = hops[i]
    if hop.bridge or not hop.out_iface:
        return []
    seg = segment(hop.ns, hop.out_iface, fl.snap)
    owners: dict[str, list[tuple[str, LinkInfo, int]]] = {}
    for ns, lk in seg:
        for a, plen in lk.addresses:
            owners.setdefault(a, []).append((ns, lk, plen))
    out: list[Finding] = []
    for addr, lst in owners.items():
        nss = list(dict.fromkeys(ns for ns, _, _ in lst))
        if len(nss) < 2:
            continue
        role = relevant.get(addr)
        ranked = sorted(lst, key=lambda t: _owner_rank(fl, t[0], role))
        keep = ranked[0]
        fix = [cmd("ip", "-n", ns, "addr", "del", f"{addr}/{plen}", "dev", lk.name)
               for ns, lk, plen in ranked[1:] if ns != keep[0]]
        for ns, lk in seg:
            if ns not in nss:
                fix.append(cmd("ip", "-n", ns, "neigh", "flush", "to", addr, "dev", lk.name))
        out.append(finding(
            "duplicate-address", nss[0] if nss[0] != keep[0] else nss[1],
            f"{addr} is held by {len(nss)} namespaces on one segment ({', '.join(nss)})"
            + (f"; it is the {role}" if role else ""),
            {"segment": f"{hop.out_iface} in {hop.ns}",
             "holders": [f"{ns} {lk.name} {addr}/{plen} lladdr {lk.mac}" for ns, lk, plen in lst]},
            fix, note=f"keeps it on {keep[0]} ({keep[1].name}); the neighbour flushes drop cached answers "
                      f"from the other holder",
            severity="error" if role else "warning",
            direction=direction, hop=i, stage=ST_NEIGH, key=("dup", addr, tuple(sorted(nss)))))
    return out


def check_ptb(fl: Flow, hops: list[Hop], i: int, src: str) -> list[Finding]:
    """IPv6: does the forward hook of hops[i] (a router) let ICMPv6 packet too big back to the
    source? A router further on that cannot forward a big packet sends one (IPv6 routers never
    fragment); dropped here, the sender never learns the path MTU."""
    hop = hops[i]
    if not fl.v6 or not hop.in_iface or not hop.out_iface:
        return []
    towards = hop.gateway or fl.fdst
    pkt = Packet(towards, src, "icmp", None, None, "packet-too-big", hop.out_iface, hop.in_iface, "related")
    v = fl.snap.firewall(hop.ns).evaluate("forward", pkt)
    if not v.drops:
        return []
    chain = v.rule.chain if v.rule is not None else v.chain.name
    c = v.chain if v.rule is None else fl.snap.firewall(hop.ns).chains.get(
        (v.rule.source, v.rule.family, v.rule.table, v.rule.chain), v.chain)
    if c.source == "nftables":
        fix = [cmd("ip", "netns", "exec", hop.ns, "nft", "insert", "rule", c.family, c.table, chain,
                   "icmpv6", "type", "packet-too-big", "accept")]
    else:
        fix = [cmd("ip", "netns", "exec", hop.ns, _ipt(fl, c.source, c.family), "-t", c.table, "-I", chain,
                   "-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "packet-too-big", "-j", "ACCEPT")]
    return [finding(
        "ptb-dropped", hop.ns,
        f"the forward hook in {hop.ns} drops ICMPv6 packet too big back to {src}: {v.describe()}; IPv6 routers "
        f"never fragment, so packets bigger than a smaller link beyond are lost without a word",
        {"hook": "forward", "packet": fl.flow_text(pkt)}, fix,
        direction="reply", hop=i, stage=ST_MTU, key=("ptb-dropped", hop.ns))]


def check_dad(fl: Flow, hops: list[Hop], i: int, relevant: dict[str, str], direction: str) -> list[Finding]:
    """No IPv6 address on the segment hops[i] sends on failed duplicate address detection
    (IFA_F_DADFAILED: the kernel never uses it, as source nor to answer neighbour discovery).

    An error for the flow's source (any failed address of the sending interface: the one
    it would have used), next hop or destination; a warning for another. The fix adds the
    address again without DAD, once the other holder is gone (duplicate-address says so
    when it is still there)."""
    hop = hops[i]
    if hop.bridge or not hop.out_iface:
        return []
    out: list[Finding] = []
    for ns, lk in segment(hop.ns, hop.out_iface, fl.snap):
        for a, plen in lk.addresses:
            if not fl.snap_flags(lk, a) & IFA_F_DADFAILED:
                continue
            role = relevant.get(a) or ("source" if i == 0 and ns == hop.ns and lk.name == hop.out_iface
                                       and direction == "forward" else None)
            holders = [f"{ons} {olk.name}" for ons, olk in segment(hop.ns, hop.out_iface, fl.snap)
                       if ons != ns and any(x == a for x, _ in olk.addresses)]
            out.append(finding(
                "dad-failed", ns,
                f"{a} on {lk.name} in {ns} failed duplicate address detection: the kernel does not use it"
                + (f"; it is the {role}" if role else ""),
                {"address": f"{a}/{plen} dev {lk.name} dadfailed tentative",
                 "other holders on the segment": holders or "none now"},
                [fl.ip(ns, "addr", "del", f"{a}/{plen}", "dev", lk.name),
                 fl.ip(ns, "addr", "add", f"{a}/{plen}", "dev", lk.name, "nodad")],
                note=("another namespace on the segment still holds it: remove it there first (duplicate-address)"
                      if holders else "the other holder is gone; the address stays failed until added again"),
                severity="error" if role else "warning",
                direction=direction, hop=i, stage=ST_NEIGH, key=("dad-failed", ns, a)))
    return out


def _owner_rank(fl: Flow, ns: str, role: str | None) -> tuple:
    if role == "source":
        return (0 if ns == fl.src_ns else 1, ns)
    fwd = fl.forwards(ns)
    onward = fl.routes_ok(ns, fl.fdst)
    return (0 if ns == fl.src_ns else 1, 0 if (fwd and onward) else (1 if onward else 2), ns)


# -- routes --------------------------------------------------------------------


def check_no_route(fl: Flow, hop: Hop, i: int, target: str, direction: str, code: str, prev_gw: str | None,
                   p: Path) -> list[Finding]:
    """Why `hop.ns` has no (usable) route to `target`: a down link, or a missing or rejecting route."""
    ns = hop.ns
    view = fl.snap.get(ns)
    down = [lk for lk in view.links.values() if not lk.up and lk.addresses and lk.kind != "loopback"]
    tip = ipaddress.ip_address(target)
    covered = [lk for lk in down if any(tip in n.network for n in lk.networks())]
    out: list[Finding] = []
    for lk in down:
        out.append(finding(
            "link-down", ns,
            f"{lk.name} in {ns} is down, so the routes through it are gone",
            {"link": lk.name, "addresses": [f"{a}/{pl}" for a, pl in lk.addresses], "state": lk.operstate},
            [cmd("ip", "-n", ns, "link", "set", lk.name, "up")],
            direction=direction, hop=i, stage=ST_LINK_GONE, key=("link-down", ns, lk.name)))
    if covered:
        return out  # the connected route to `target` comes back with the link
    err = "Network is unreachable"
    try:
        fl.snap.route_get(ns, target)
    except RouteLookupError as exc:
        err = _err_text(exc)
    ev = {"ip route get": f"{target}: {err}", "routes": fl.routes(ns)}
    if p.stop_code == "unreachable-route":
        ev["route"] = hop.route
    fix: list[str] = []
    alts: list[str] = []
    cands = fl.gateway_candidates(ns, target)
    if prev_gw:
        cands = [c for c in cands if c[0] != prev_gw] + [c for c in cands if c[0] == prev_gw]
        if code == "no-return-route":
            cands = [c for c in cands if c[0] == prev_gw] + [c for c in cands if c[0] != prev_gw]
    has_default = any(r.startswith("default") for r in ev["routes"])
    if cands and cands[0][0] == target:
        fix = [fl.ip(ns, "route", "add", target, "dev", cands[0][1])]
    elif cands:
        gw = cands[0][0]
        rdst = target if (code == "no-return-route" or has_default) else "default"
        fix = [fl.ip(ns, "route", "add", rdst, "via", gw)]
        if rdst == "default":
            alts = [fl.ip(ns, "route", "add", target, "via", gw)]
    elif prev_gw and code == "no-return-route":
        fix = [fl.ip(ns, "route", "add", target, "via", prev_gw)]
    if code == "no-route":
        summary = f"no route to {target} in {ns} ({err})"
    elif code == "unreachable-route":
        summary = f"the route to {target} in {ns} rejects it: `{hop.route}` ({err})"
        if cands:
            fix = [fl.ip(ns, "route", "del", *(hop.route or "").split()[:2])] + fix
    else:
        summary = f"no route back to {target} in {ns}: the reply cannot leave ({err})"
    out.append(finding(code if code != "unreachable-route" else "no-route", ns, summary, ev, fix, alts,
                       note=None if fix else "no namespace on this namespace's links can route onwards; "
                                             "add a route to a gateway that can",
                       direction=direction, hop=i, stage=ST_ROUTE))
    return out


def snat_cmds(fl: Flow, ns: str, net: str, oif: str) -> list[str]:
    """Commands that masquerade `net` leaving `ns` by `oif`, in the tool `ns` already uses."""
    fw = fl.snap.firewall(ns)
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
    tool = fl.snap.ipt_tool("iptables-legacy" if fw.legacy_tables and not fw.iptables_nft_tables else "iptables-nft")
    return [cmd("ip", "netns", "exec", ns, tool, "-t", "nat", "-A", "POSTROUTING", "-s", net, "-o", oif,
                "-j", "MASQUERADE")]


def check_no_return_route6(fl: Flow, p: Path, dest_hop: Hop, src: str) -> list[Finding]:
    """IPv6 is routed, not translated (as Neutron): the destination side has no route back to
    the source's prefix. The return path is missing there: a route to the prefix via the
    router that forwarded the packet. On a natns lab (the namespace carries natns's mark),
    `natns up <your topology file>` adds it; elsewhere, the `ip -6 route add` command."""
    ns = dest_hop.ns
    first = fl.link(fl.src_ns, p.hops[0].out_iface)
    tip = ipaddress.ip_address(src)
    net = next((str(n.network) for n in (first.networks(6) if first else []) if tip in n.network), f"{src}/128")
    prev = fl.prev_hop_address(p.hops, len(p.hops) - 1, 6)
    via = next((h.ns for h in reversed(p.hops[:-1]) if not h.bridge and h.ns != HOST), None)
    add = fl.ip(ns, "route", "add", net, "via", prev) if prev else None
    ev = {f"ip -6 route get {src} in {ns}": "Network is unreachable", f"routes in {ns}": fl.routes(ns),
          "source as it arrives": src, "the source's prefix": net}
    mark = fl.snap.ns_mark(ns)
    fix, alts, note = ([add] if add else []), [], None
    if mark and mark.startswith("natns:"):
        fix, alts = [UP_COMMAND], ([add] if add else [])
        note = (f"{ns} is natns's (lab {mark.split(':')[1]}): `natns up` on the lab's topology file adds the "
                f"route to every routed prefix (snat6: off)")
    elif not add:
        note = f"add a route to {net} in {ns} via the router that forwards it"
    where = f" via {prev} ({via})" if prev else ""
    return [finding(
        "no-return-route", ns,
        f"the return path is missing: {ns} has no route back to {net} (IPv6 is routed, not translated), "
        f"so replies to {src} cannot return; add the route in {ns}{where}",
        ev, fix, alts, note=note, direction="reply", hop=0, stage=ST_ROUTE, key=("no-return-route6", ns, net))]


def check_no_snat(fl: Flow, p: Path, dest_hop: Hop, src: str) -> list[Finding]:
    """The destination has no route back to the untranslated private source: SNAT is missing."""
    fwd = [(i, h) for i, h in enumerate(p.hops) if h.forwards and not h.bridge and h.ns != HOST]
    err = "Network is unreachable"
    ev = {f"ip route get {src} in {dest_hop.ns}": err, f"routes in {dest_hop.ns}": fl.snap.routes_text(dest_hop.ns),
          "source as it arrives": src, "source NAT on the path": "none"}
    if not fwd:
        return check_no_route(fl, dest_hop, 0, src, "reply", "no-return-route", None, p)
    _, gw = fwd[-1]
    inl = fl.link(gw.ns, gw.in_iface)
    net = None
    if inl is not None:
        for n in inl.networks():
            if ipaddress.ip_address(src) in n.network:
                net = str(n.network)
    if net is None:
        firstl = fl.link(fl.src_ns, p.hops[0].out_iface)
        for n in (firstl.networks() if firstl else []):
            if ipaddress.ip_address(src) in n.network:
                net = str(n.network)
    net = net or f"{src}/32"
    fix = snat_cmds(fl, gw.ns, net, gw.out_iface)
    ev["SNAT rules in " + gw.ns] = [r.text for r in fl.snap.firewall(gw.ns).snat_rules()] or "none"
    prev = fl.prev_hop_address(p.hops, len(p.hops) - 1)
    alts = [cmd("ip", "-n", dest_hop.ns, "route", "add", net, "via", prev)] if prev else []
    return [finding(
        "no-snat", gw.ns,
        f"no source NAT for {src} leaving {gw.ns} by {gw.out_iface}, and {dest_hop.ns} has no route back to "
        f"{src}: replies cannot return",
        ev, fix, alts,
        note=f"the fix translates {net} to {gw.out_iface}'s address as the packet leaves {gw.ns} "
             f"(the alternative routes the private network instead)",
        direction="reply", hop=0, stage=ST_ROUTE, key=("no-snat", gw.ns))]


# -- the namespace natns runs in ---------------------------------------------------


def check_host(fl: Flow, i: int, hop: Hop, src: str) -> list[Finding]:
    """The packet leaves the lab into the namespace natns runs in (`uplink: host`), which
    must forward it out by its default route: is forwarding on there, and does its
    forward hook let the packet and its replies through? (Read-only; the walk itself
    stops here: beyond is the host's real network.)"""
    where = "the namespace natns runs in"
    out: list[Finding] = []
    ipf = fl.snap.sysctl(None, fl.forwarding_key)
    if ipf != "1" and fl.v6:
        out.append(finding(
            "ip6-forward-off", HOST,
            f"IPv6 forwarding is off in {where}, which must forward the packet (in {hop.in_iface}): "
            f"the kernel drops it", {fl.forwarding_key: ipf},
            [cmd("sysctl", "-w", f"{fl.forwarding_key}=1")],
            direction="forward", hop=i, stage=ST_FORWARDING))
    elif ipf != "1":
        out.append(finding(
            "ip-forward-off", HOST,
            f"IP forwarding is off in {where}, which must forward the packet (in {hop.in_iface}): "
            f"the kernel drops it", {"net.ipv4.ip_forward": ipf},
            [cmd("sysctl", "-w", "net.ipv4.ip_forward=1")],
            direction="forward", hop=i, stage=ST_FORWARDING))
    if not hop.in_iface:
        return out
    fw = fl.snap.firewall(None)
    dev = fl.snap.default_dev()
    for way, pkt in (("out", fl.packet(src, fl.fdst, hop.in_iface, dev, False)),
                     ("reply", fl.packet(fl.fdst, src, dev, hop.in_iface, True))):
        v = fw.evaluate("forward", pkt)
        if not v.drops:
            continue
        out.append(finding(
            "forward-drop", HOST,
            f"the forward hook of {where} drops the {'packet' if way == 'out' else 'reply'}: {v.describe()}",
            {"hook": "forward", "packet": fl.flow_text(pkt), "host's default route": dev or "none"},
            accept_cmds(fw, v, hop.in_iface, way),
            note="natns doesn't add rules to the host's own chains; these accept the uplink's traffic",
            direction="forward", hop=i, stage=ST_FILTER))
    return out


# -- conntrack entries the rules now translate otherwise ------------------------------


@dataclass
class NatWant:
    """How the rules of one namespace translate a new packet of the flow (the rule walk's
    answer), against which the flow's conntrack entry there is judged.

    `src`, `dst`, `dport`: the original tuple as the packet arrives (dport None: ICMP).
    `dnat`: (address, port) the prerouting nat chains send it to, None for no DNAT.
    `snat`: the addresses its source may become (masquerade: the out interface's), None
    for no SNAT. `*_known` False: a NAT rule doctor cannot evaluate comes first, or SNAT
    is not judged here (a namespace that delivers the packet). `*_rule`: the deciding rule.
    """

    src: str
    dst: str
    dport: int | None
    dnat: tuple[str, int | None] | None = None
    dnat_rule: Rule | None = None
    dnat_known: bool = True
    dnat_unsure: list[Rule] = field(default_factory=list)
    snat: tuple[str, ...] | None = None
    snat_kind: str | None = None   # masquerade | snat
    snat_rule: Rule | None = None
    snat_known: bool = True
    snat_unsure: list[Rule] = field(default_factory=list)


def snat_want(fl: Flow, ns: str, pkt: Packet, v: Verdict, out_iface: str | None, towards: str
              ) -> tuple[tuple[str, ...] | None, bool]:
    """(addresses the source may become, certain?) for the SNAT verdict `v` of `pkt`."""
    if v.verdict == "masquerade":
        lk = fl.link(ns, out_iface)
        picked = fl.address_towards(ns, out_iface, towards)
        addrs = [picked] if picked else []
        addrs += [a for a, _ in (lk.addresses if lk else []) if a not in addrs]
        return tuple(addrs), bool(addrs) and not v.maybe
    if v.verdict == "snat" and v.rule is not None:
        rng = _snat_range(v.rule)
        if rng is not None:
            lo, hi = (ipaddress.ip_address(x) for x in rng)
            if int(hi) - int(lo) > 255:
                return (rng[0],), False
            return tuple(str(ipaddress.ip_address(n)) for n in range(int(lo), int(hi) + 1)), not v.maybe
        to = v.rule.nat_target(pkt)
        return ((to,), not v.maybe) if to else ((), False)
    return None, not v.maybe


_NFT_RANGE = re.compile(r"\bsnat (?:ip )?to (\d+\.\d+\.\d+\.\d+)-(\d+\.\d+\.\d+\.\d+)")


def _snat_range(rule: Rule) -> tuple[str, str] | None:
    """The address range of `snat to A-B` / `--to-source A-B`, or None for one address."""
    if rule.argv and "--to-source" in rule.argv:
        i = rule.argv.index("--to-source")
        spec = rule.argv[i + 1].split(":")[0] if i + 1 < len(rule.argv) else ""
        a, _, b = spec.partition("-")
        return (a, b) if b else None
    m = _NFT_RANGE.search(rule.text or "")
    return (m[1], m[2]) if m else None


def dnat_unsure(fw, src: str, dst: str, proto: str, port: int | None, in_iface: str | None) -> list[Rule]:
    """The DNAT rules (and jumps) of prerouting doctor cannot evaluate for a new packet of the
    flow (as explain.dnat.rewrite builds it)."""
    pkt = Packet(src, dst, proto, 40000 if proto != "icmp" else None, port,
                 "echo-request" if proto == "icmp" else None, in_iface, None, "new")
    return fw.dnat(pkt, "prerouting").maybe


def _natns_rule(rule: Rule | None) -> bool:
    if rule is None:
        return True
    if rule.source == "nftables":
        return is_scope(rule.table)
    return rule.chain.startswith(IPTABLES_PREFIX)


def _entry_text(e) -> str:
    flags = "" if "SEEN_REPLY" in e.status else " [UNREPLIED]"
    return f"{e.protocol} {e.original.text()}, reply {e.reply.text()}{flags}"


def _problems(fl: Flow, e, want: NatWant) -> tuple[list[str], bool]:
    """What contradicts the rules in entry `e` (in words), and whether all of it is certain."""
    o, r = e.original, e.reply
    out: list[str] = []
    certain = True
    icmp = e.protocol == "icmp"
    # DNAT: the reply's source is where the packets really go
    has_dnat = r.src != o.dst or (not icmp and r.sport != o.dport)
    actual_d = r.endpoint("src") if has_dnat else None
    if want.dnat is None:
        if has_dnat:
            out.append(f"its packets are sent on to {actual_d} (DNATed), the rules no longer translate its "
                       f"destination")
            certain = certain and want.dnat_known
    else:
        addr, port = want.dnat
        wtext = addr if port is None or icmp else f"{addr}:{port}"
        if not has_dnat:
            out.append(f"its packets go to {o.endpoint('dst')} untranslated, the rules now DNAT it to {wtext}")
            certain = certain and want.dnat_known
        elif r.src != addr or (port is not None and not icmp and r.sport != port):
            out.append(f"its packets are DNATed to {actual_d}, the rules now DNAT it to {wtext}")
            certain = certain and want.dnat_known
    if want.snat is not None or want.snat_known:
        has_snat = r.dst != o.src
        if want.snat is None:
            if has_snat:
                out.append(f"its packets leave SNATed to {r.dst}, the rules no longer translate its source")
                certain = certain and want.snat_known
        elif not has_snat:
            priv = "private " if ipaddress.ip_address(o.src).is_private else ""
            verb = "masquerade" if want.snat_kind == "masquerade" else "SNAT"
            out.append(f"its packets leave un-NATed with the {priv}source {o.src}, the rules now {verb} it "
                       f"to {want.snat[0] if want.snat else '?'}")
            certain = certain and want.snat_known
        elif r.dst not in want.snat:
            out.append(f"its packets leave SNATed to {r.dst}, the rules now SNAT it to "
                       f"{want.snat[0] if want.snat else '?'}")
            certain = certain and want.snat_known and bool(want.snat)
    return out, certain


def fix_conntrack_delete(ns: str, e) -> str:
    """`conntrack -D` selecting exactly entry `e` (by its original tuple)."""
    return cmd(*conntrack.delete_argv(ns, e))


def _rule_text(kind: str, want: NatWant) -> str:
    if kind == "dnat":
        if want.dnat is None:
            return "none"
        a, p = want.dnat
        return f"{a}:{p}" if p is not None and want.dport is not None else a
    if want.snat is None:
        return "none"
    what = "masquerade" if want.snat_kind == "masquerade" else "snat"
    return f"{what} to {want.snat[0]}" if want.snat else what


def check_stale_conntrack(fl: Flow, ns: str, hop: int, want: NatWant, stage: int) -> list[Finding]:
    """Is the conntrack entry of this flow in `ns` translated as the rules now say?

    The kernel consults the nat table for a connection's first packet only, and
    translates the rest from the entry it made then: a ping started before a masquerade
    rule keeps leaving with its private source for as long as it runs. The flow's entries
    are those whose original tuple is the packet as it arrives here (protocol, source,
    destination, and the destination port when doctor was given one; any ICMP id and
    source port: a user's running ping or connection)."""
    try:
        entries = fl.snap.conntrack_entries(ns)
    except OSError:
        return []
    mine = [e for e in entries if e.protocol == fl.proto and e.original.src == want.src
            and e.original.dst == want.dst and (want.dport is None or e.original.dport == want.dport)]
    bad = []
    for e in mine:
        problems, certain = _problems(fl, e, want)
        if problems:
            bad.append((e, problems, certain))
    if not bad:
        return []
    e0, problems, certain = bad[0]
    kept = (e0.protocol == "tcp" and e0.state == "ESTABLISHED" and e0.reply.dst != e0.original.src
            and fl.snap.get(ns).owns(e0.reply.dst) is not None
            and all("SNAT" in p and "un-NATed" not in p for p in problems))
    sev = "error" if certain else "warning"
    if kept:
        sev = "info"
    n = len(bad)
    what = "the conntrack entry of this flow" if n == 1 else f"{n} conntrack entries of this flow"
    summary = (f"{what} in {ns} {'was' if n == 1 else 'were'} made before the rules changed: "
               f"{'; '.join(problems)}; the kernel consults the nat table only for a connection's first packet")
    if not certain:
        summary += " (doctor cannot evaluate every NAT rule for this flow: the rules may translate it so)"
    ev: dict = {"conntrack entry" if n == 1 else "conntrack entries": [_entry_text(e) for e, _, _ in bad],
                "its translation": "; ".join(t.text() for t in e0.nat) or "none",
                "source NAT of the rules now": _rule_text("snat", want) if want.snat_known or want.snat else
                "not judged",
                "destination NAT of the rules now": _rule_text("dnat", want)}
    if want.snat_rule is not None:
        ev["source NAT rule"] = want.snat_rule.text
    if want.dnat_rule is not None:
        ev["destination NAT rule"] = want.dnat_rule.text
    unsure = want.snat_unsure + want.dnat_unsure
    if unsure:
        ev["NAT rules doctor cannot evaluate"] = [r.text for r in unsure]
    deletes = [fix_conntrack_delete(ns, e) for e, _, _ in bad]
    owner = parse_ns_mark(fl.snap.ns_mark(ns))
    note = ("deleting the entry makes the flow's next packet a new connection, which the rules translate; "
            "doctor's own probe is such a new connection, so it can pass while this flow does not")
    fix, alts = deletes, []
    if owner and _natns_rule(want.snat_rule) and _natns_rule(want.dnat_rule):
        fix, alts = [UP_COMMAND], deletes
        note = (f"{ns} is a router of natns lab {owner[0]!r} (natns records no file: give `natns up` the lab's "
                f"topology file): `natns up` deletes "
                f"exactly the entries its rules translate otherwise (the alternative deletes this flow's); "
                + note)
    if kept:
        note = ("an open TCP connection keeps the address it started with (a new source mid-stream could only "
                "get it reset by its peer); new connections get the rules' address. " + note)
        fix, alts = [], deletes
    return [finding("stale-conntrack", ns, summary, ev, fix, alts, note, severity=sev, direction="forward",
                    hop=hop, stage=stage, key=("stale-conntrack", ns))]
