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


def conntrack_of(probe: Probe, namespaces: Sequence[str], events: Sequence = ()) -> list[ConntrackSeen]:
    """The probe's conntrack entries: in each namespace's table now, else from `events` seen earlier."""
    from ...kernel import conntrack as ct

    out = []
    for ns in namespaces:
        live = [e for e in ct.entries(ns) if _probe_entry(e, probe)]
        if live:
            out += [ConntrackSeen(ns, e, "table") for e in live]
            continue
        seen = [ev.entry for ev in events if ev.namespace == ns and _probe_entry(ev.entry, probe)]
        if seen:
            out.append(ConntrackSeen(ns, next((e for e in reversed(seen) if e.nat), seen[-1]), "events"))
    return out


def _ct_watch(ns: str):
    from ...kernel import conntrack as ct

    return ct.Watch(ns, ("new", "update", "destroy"))


def _drain(watches: list) -> list:
    from ...kernel import conntrack as ct

    return list(ct.stream(watches, timeout=0.05))
