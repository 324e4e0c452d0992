"""What the planner's unit tests share: a stand-in render and "the kernel after a perfect up"."""

from __future__ import annotations

import dataclasses

from natns.observe import ObservedNs
from natns.state import LabState, parse_ns_mark


def render(intent):
    """Stand-in for a backend's render: the intent itself is comparable."""
    return intent


def as_observed(desired: LabState, render=render) -> LabState:
    """What the kernel would show after a perfect `up` of `desired` (firewalls as `render` makes them)."""
    out = LabState(desired.lab, desired.backend)
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
