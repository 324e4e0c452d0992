"""What trace reads of each traced namespace: base chains, the iptables-save text of
iptables-nft rules, iptables-legacy rules, the route a packet takes, sysctls, the probe's
conntrack entries.

Rules are read through natns.kernel.netfilter (the one rule reader), routes through
natns.kernel.rtnl (the one rtnetlink client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ...kernel import netfilter
from ...kernel.netfilter import Chain, NftRuleset
from .. import path as pathmod
from .result import ConntrackSeen, Probe
from .tables import tracer_chains


def read_chains(ns: str, ruleset: NftRuleset | None = None) -> dict[tuple[str, str, str], Chain]:
    """Base chains of namespace `ns` by (family, table, name), natns's tracer chains included.

    `ruleset` (the namespace's nft ruleset, when the caller has read it) saves reading it.
    """
    out = {c.key: c for c in tracer_chains()}
    if ruleset is None:
        try:
            ruleset = netfilter.read_nft(ns)
        except OSError:
            return out
    out.update(ruleset.base_chains())
    return out


def chain_notes(ns: str, ruleset: NftRuleset | None) -> list[str]:
    """What of `ns`'s nft ruleset trace does not show: dormant tables (the kernel runs none of
    their chains) and ingress/egress chains on devices (outside the IP hooks trace marks packets in)."""
    if ruleset is None:
        return []
    out = [f"{ns}: table {f} {t} is dormant (flags dormant): the kernel runs none of its chains"
           for f, t in sorted(ruleset.dormant_tables())]
    for c in ruleset.chains():
        if c.hook in ("ingress", "egress") and not c.dormant:
            out.append(f"{ns}: table {c.family} {c.table} chain {c.name} (hook {c.hook} device "
                       f"{','.join(c.devices) or '?'}, policy {c.policy or 'accept'}) runs "
                       f"{'before' if c.hook == 'ingress' else 'after'} the IP hooks trace follows: a drop "
                       f"there shows as a packet that is not seen again (`natns doctor` reads ingress chains)")
    return out


def read_iptables_nft(ns: str, ruleset: NftRuleset | None = None) -> dict[tuple[str, str, str, int], str]:
    """iptables-save lines of iptables-nft rules by (family, table, chain, nft handle).

    iptables-nft keeps rules in nftables tables of the same names, in the
    same order, so the k-th rule of a chain in ``nft -j list ruleset`` is
    the k-th ``-A CHAIN`` line of ``iptables-nft-save`` (netfilter.iptables_nft_lines).
    """
    return netfilter.iptables_nft_lines(ns, ruleset)


def read_legacy(ns: str) -> str | None:
    """What iptables-legacy holds in `ns` (a short description), or None if it holds nothing.

    Asks the kernel first which legacy tables exist in the namespace, so that
    iptables-legacy-save (which may load kernel modules) runs only where
    there are some.
    """
    return netfilter.legacy_summary(netfilter.read_legacy(ns))


def route_for(ns: str, daddr: str, saddr: str | None, iif: str | None) -> tuple[str | None, str | None]:
    """(the routing table entry the kernel uses for this packet, error), as
    ``ip route get fibmatch DADDR [from SADDR] [iif IIF]`` shows it (one rtnetlink lookup)."""
    try:
        ipaddress.ip_address(daddr)
    except ValueError:
        return None, f'Error: any valid prefix is expected rather than "{daddr}".'
    try:
        text, err = pathmod.fib_match(ns, daddr, src=saddr, iif=iif, metric=False)
    except OSError as exc:  # the namespace is gone
        return None, str(exc)
    if iif and err == f"no interface {iif} in {ns}":
        err = f'Cannot find device "{iif}"'  # what ip says
    return text, err


def hairpin_port(ns: str, iif: str | None, saddr: str | None, daddr: str | None) -> str | None:
    """The port of bridge `iif` in `ns` a packet from `saddr` came in by, if it is also the port
    to `daddr` (its destination after DNAT), bridge netfilter is on and hairpin off there: the
    bridge switches the DNATed frame and never sends it back out its ingress port (None: not so)."""
    if not (iif and saddr and daddr) or _sysctl(ns, "net.bridge.bridge-nf-call-iptables") != "1":
        return None
    try:
        back, on = pathmod.walk(ns, saddr).hops, pathmod.walk(ns, daddr).hops
        view = pathmod.read_ns(ns)
    except Exception:  # noqa: BLE001 (a namespace gone, an address not walkable: not this case)
        return None
    if not back or not on or back[0].out_iface != iif or on[0].out_iface != iif:
        return None
    port = back[0].out_port
    link = view.by_name(port) if port and port == on[0].out_port else None
    return port if link is not None and link.hairpin is False else None


def link_mtus(ns: str, iface: str) -> tuple[int | None, str | None, str | None, int | None]:
    """(MTU of `iface` in `ns`, its veth peer's namespace, the peer's name, the peer's MTU); the
    peer's (a bridge port's) bridge counts as the receiving end when it is one. Nones where unknown."""
    try:
        views = pathmod._Views()
        view = views.get(ns)
        lk = view.by_name(iface)
        if lk is None:
            return None, None, None, None
        if lk.kind != "veth":
            return lk.mtu, None, None, None
        pns, peer = pathmod.veth_peer(view, lk, views)
    except OSError:
        return None, None, None, None
    if not pns or pns == pathmod.HOST or peer is None:
        return lk.mtu, None, None, None
    return lk.mtu, pns, peer.name, peer.mtu


def _sysctl(ns: str, key: str) -> str | None:
    from ...kernel import sysctl

    try:
        return sysctl.read(ns, [key]).get(key)
    except OSError:
        return None


def _probe_entry(e, probe: Probe) -> bool:
    """Whether conntrack entry `e` is the probe's connection."""
    o = e.original
    if e.protocol != probe.protocol or probe.dst not in (o.dst, e.reply.src):
        return False
    if probe.protocol == "icmp":
        return o.icmp_id == probe.icmp_id
    return o.sport == probe.sport


def _flow_key(t, proto: str, side: str) -> tuple:
    """(address, port or ICMP id) of one end of a conntrack tuple."""
    return (getattr(t, side), t.icmp_id if proto == "icmp" else getattr(t, "sport" if side == "src" else "dport"))


def _rewritten(e) -> set[tuple]:
    """The probe's source as the next namespace sees it, after entry `e`'s source NAT: the
    reply tuple's destination (address, port or ICMP id; ``--random-fully`` changes the port)."""
    return {_flow_key(e.reply, e.protocol, "dst")}


def conntrack_of(probe: Probe, namespaces: Sequence[str], events: Sequence = ()) -> list[ConntrackSeen]:
    """The probe's conntrack entries: in each namespace's table now, else from `events` seen earlier.

    Namespaces are taken in path order; after a namespace whose entry translated the
    probe's source, the next ones' entries are those of the translated source."""
    from ...kernel import conntrack as ct

    out = []
    sources: set[tuple] = set()

    def mine(e) -> bool:
        if _probe_entry(e, probe):
            return True
        return (e.protocol == probe.protocol and probe.dst in (e.original.dst, e.reply.src)
                and _flow_key(e.original, e.protocol, "src") in sources)

    for ns in namespaces:
        live = [e for e in ct.entries(ns) if mine(e)]
        if live:
            out += [ConntrackSeen(ns, e, "table") for e in live]
            for e in live:
                sources |= _rewritten(e)
            continue
        seen = [ev.entry for ev in events if ev.namespace == ns and mine(ev.entry)]
        if seen:
            e = next((e for e in reversed(seen) if e.nat), seen[-1])
            out.append(ConntrackSeen(ns, e, "events"))
            sources |= _rewritten(e)
    return out


def _ct_watch(ns: str):
    from ...kernel import conntrack as ct

    return ct.Watch(ns, ("new", "update", "destroy"))


def _drain(watches: list) -> list:
    from ...kernel import conntrack as ct

    return list(ct.stream(watches, timeout=0.05))
