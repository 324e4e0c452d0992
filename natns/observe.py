"""Read the actual state of a lab from the kernel, and nothing else.

No state file: a namespace belongs to lab L when the alias of its `lo` is
natns's mark for L; links, routes and firewall rules are recognised by their
own marks (see state.py). `observe_lab` reads every namespace the topology
names plus every namespace marked for the lab, so leftovers are found too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from . import firewall
from .kernel import link, netns, route, sysctl
from .state import LabState, NsState, parse_ns_mark

#: sysctls natns reads back in every namespace it owns (drift detection).
WATCHED_SYSCTLS = ["net.ipv4.ip_forward"]


@dataclass
class ObservedNs(NsState):
    """A namespace as found: `owner` is (lab, role, name) from its mark, or None."""

    owner: tuple[str, str, str] | None = None
    firewalls: dict = field(default_factory=dict)  # backend name -> Ruleset


def read_mark(ns: str) -> str | None:
    """The alias of `lo` in namespace `ns` (natns's ownership mark), or None."""
    try:
        with netns.open_rtnl(ns) as ipr:
            lo = ipr.get_links(ifname="lo")
            return lo[0].get_attr("IFLA_IFALIAS") if lo else None
    except (FileNotFoundError, OSError):
        return None


def marked_namespaces(lab: str | None = None) -> dict[str, tuple[str, str, str]]:
    """Namespaces carrying a natns mark (for `lab`, or any lab): name -> (lab, role, name)."""
    out = {}
    for name in netns.list_names():
        owner = parse_ns_mark(read_mark(name))
        if owner and (lab is None or owner[0] == lab):
            out[name] = owner
    return out


def observe_ns(name: str, *, with_firewall: bool = True) -> ObservedNs:
    """Everything natns cares about in namespace `name`, as the kernel has it."""
    if not netns.exists(name):
        return ObservedNs(name=name, mark=None, role="", exists=False)
    try:
        ipr = netns.open_rtnl(name)
    except (FileNotFoundError, OSError):
        return ObservedNs(name=name, mark=None, role="", exists=False)
    with ipr:
        links = link.dump(ipr)
        routes = route.dump_owned(ipr)
    lo = links.pop("lo", None)
    mark = lo.alias if lo else None
    owner = parse_ns_mark(mark)
    st = ObservedNs(
        name=name,
        mark=mark,
        role=owner[1] if owner else "",
        links=links,
        loopback_addresses=tuple(a for a in (lo.addresses if lo else ()) if not a.startswith("127.")),
        routes=routes,
        owner=owner,
    )
    st.sysctls = {k: v for k, v in sysctl.read(name, WATCHED_SYSCTLS).items() if v is not None}
    st.lo_up = bool(lo and lo.up)
    if with_firewall and owner:
        for b in firewall.BACKENDS:
            rs = firewall.get_backend(b).observe(name)
            if rs is not None:
                st.firewalls[b] = rs
    return st


def observe_lab(lab: str, backend: str, names: Iterable[str] = ()) -> LabState:
    """The lab as the kernel holds it: the named namespaces and all marked for `lab`."""
    wanted = list(dict.fromkeys(names))
    known = set(wanted)
    for name in netns.list_names():
        if name not in known:
            owner = parse_ns_mark(read_mark(name))
            if owner and owner[0] == lab:
                wanted.append(name)
    state = LabState(lab=lab, backend=backend)
    for name in wanted:
        state.namespaces[name] = observe_ns(name)
    return state
