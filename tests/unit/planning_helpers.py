"""What the planner's unit tests share: a stand-in backend and "the kernel after a perfect up"."""

from __future__ import annotations

import dataclasses

from natns.state import LabState, ObservedLab, ObservedNs, parse_ns_mark


class StandIn:
    """Stand-in for a firewall backend: its "rules" are the intent itself (comparable), with
    no maps (every change a load) and no mappings. The planner calls only what the contract
    (natns.firewall.base.FirewallBackend) has; this has only the planner's pure part."""

    def __init__(self, name: str = "nftables"):
        self.name = name

    def render(self, intent):
        return intent

    def element_changes(self, old, new):
        return None

    def mappings(self, ruleset):
        return set()

    def pending_flushes(self, ruleset):
        return set()


#: The stand-in for the seed's backend, and for the other one (rules found after a switch).
stand_in = StandIn("nftables")
other_stand_in = StandIn("iptables")


def render(intent):
    """The stand-in's render: the intent itself."""
    return intent


def as_observed(desired: LabState, render=render) -> ObservedLab:
    """What the kernel would show after a perfect `up` of `desired` (firewalls as `render` makes them)."""
    out = ObservedLab(desired.lab)
    for name, d in desired.namespaces.items():
        o = ObservedNs(name=name, mark=d.mark, role=d.role, owner=parse_ns_mark(d.mark))
        o.links = {k: dataclasses.replace(v, peer_ns=None, peer_name=None) for k, v in d.links.items()}
        o.loopback_addresses = d.loopback_addresses
        o.routes = d.routes
        o.sysctls = dict(d.sysctls)
        o.lo_up = True
        if d.firewall is not None:
            o.firewalls = {desired.backend: render(d.firewall)}
        out.namespaces[name] = o
    return out
