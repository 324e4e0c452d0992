"""Packet and byte counters of natns's own firewall rules, per router.

The seed read them with ``iptables -t nat -vnL``. Both backends report the
counters of natns's rules only (nftables: table ``ip natns``; iptables: the
``natns-*`` chains), through `Backend.counters`. A NAT rule is evaluated for
the first packet of each connection only (conntrack translates the rest), so
its counter counts connections translated, not every packet sent. IPv6 labs:
the rules of natns's ``ip6`` table (nftables) or ip6tables chains follow, each
row marked ``"family": 6`` (NAT66 masquerade, the inbound policy, anti-spoofing).

`mappings` are the same per floating IP (in: connections to it; out:
connections its host opened) and per forwarded port: nftables counts each map
element, iptables has one rule per mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import firewall
from ..topology import Topology
from .endpoints import require_up


@dataclass
class RouterCounters:
    """natns's rules in one router and their counters."""

    router: str
    namespace: str
    backend: str
    rules: list[dict] = field(default_factory=list)  # {"chain", "rule", "comment", "packets", "bytes"}
    mappings: list[dict] = field(default_factory=list)  # {"kind", "outside", "inside", "packets", "bytes"}

    def to_json(self) -> dict:
        return {"router": self.router, "namespace": self.namespace, "backend": self.backend,
                "rules": self.rules, "mappings": self.mappings}


def rule_counters(t: Topology, namespaces: list[str] | None = None) -> list[RouterCounters]:
    """Counters of natns's rules in every router of `t`.

    With `namespaces`, only routers living in one of them (`status` passes
    the ones that exist); otherwise every router, and each must be up
    (UserError if not).
    """
    backend = firewall.get_backend(t.backend)
    out = []
    for r in t.routers:
        if namespaces is not None and r.ns not in namespaces:
            continue
        if namespaces is None:
            require_up(t, r.ns)
        out.append(RouterCounters(r.name, r.ns, t.backend, backend.counters(r.ns), backend.mapping_counters(r.ns)))
    return out
