"""The shape of network state, shared by the desired side and the observed side.

`desired.py` builds a `LabState` from a topology (what should exist);
`observe.py` builds one from the kernel (what does exist); `plan.py` diffs the
two. Both sides use these same classes so the diff is a plain comparison.

Ownership marks: everything natns creates carries a mark the kernel stores
and gives back, so natns never needs a state file:

* a namespace: the alias of its `lo` is ``natns:<lab>:<role>:<name>``;
* a link: its alias is ``natns:<lab>`` followed by what it is for;
* a route: its protocol number is `RT_PROTO` ("proto 233" in `ip route`);
* firewall rules: natns's own nft table / iptables chains (see firewall/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Routing protocol number natns puts on every route it adds (rtm_protocol).
RT_PROTO = 233
#: Every ownership mark starts with this.
MARK_PREFIX = "natns:"


def ns_mark(lab: str, role: str, name: str) -> str:
    """The ownership mark natns writes on a namespace's `lo` alias."""
    return f"{MARK_PREFIX}{lab}:{role}:{name}"


def parse_ns_mark(alias: str | None) -> tuple[str, str, str] | None:
    """(lab, role, name) from a namespace mark, or None if it isn't natns's."""
    if not alias or not alias.startswith(MARK_PREFIX):
        return None
    parts = alias[len(MARK_PREFIX):].split(":", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def link_mark(lab: str, purpose: str) -> str:
    """The ownership mark natns writes on a link's alias."""
    return f"{MARK_PREFIX}{lab}:{purpose}"


@dataclass(frozen=True)
class SnatRule:
    """Translate the source of packets from `source` leaving by `out_iface`.

    `to` is an address (SNAT --to-source) or None for masquerade.
    """

    network: str
    source: str
    out_iface: str
    to: str | None = None
    out_negate: bool = False  # match every interface *but* out_iface (uplink: host)


@dataclass(frozen=True)
class FloatingIp:
    """1:1 NAT: `address` on the external network stands for private `host`."""

    address: str
    host: str


@dataclass(frozen=True)
class PortForward:
    """Inbound `protocol` to `address`:`port`..`port_end` goes to `to`:`to_port`...

    A range maps port by port (`port` -> `to_port`, `port`+1 -> `to_port`+1, ...).
    """

    protocol: str  # "tcp" | "udp"
    address: str
    port: int
    port_end: int
    to: str
    to_port: int

    def pairs(self) -> list[tuple[int, int]]:
        """(external port, internal port) for every port of the range."""
        return [(p, self.to_port + (p - self.port)) for p in range(self.port, self.port_end + 1)]


@dataclass(frozen=True)
class InternalNet:
    """A network behind the router: its bridge and CIDR (for anti-spoofing)."""

    name: str
    iface: str
    cidr: str


@dataclass(frozen=True)
class FirewallIntent:
    """What natns wants from the firewall in one namespace, backend-neutral.

    Backends (firewall/nftables.py, firewall/iptables.py) render this to their
    own rules. Later features add fields here (DNAT maps, filter policy).
    """

    lab: str
    namespace: str
    role: str
    snat: tuple[SnatRule, ...] = ()
    #: What natns owns: "natns" in lab namespaces (nft table ``ip natns``,
    #: iptables chains ``natns-*``); ``natnsup-<hex>`` per lab in the host.
    scope: str = "natns"
    external_iface: str | None = None
    external_address: str | None = None  # for hairpin SNAT
    internal: tuple[InternalNet, ...] = ()
    floating: tuple[FloatingIp, ...] = ()
    forwards: tuple[PortForward, ...] = ()
    #: Router policy: forward drops what isn't outbound, established or DNATed;
    #: anti-spoofing per network; nothing answers on the external interface.
    isolate: bool = False
    #: Mappings just removed whose conntrack entries are still to be deleted:
    #: (kind "fip" | "tcp" | "udp", outside "addr" | "addr:port"). Never desired;
    #: the planner writes them in the same transaction that removes the mapping
    #: and clears them after the flush, so a natns killed in between leaves a
    #: note in the kernel that the next `up` acts on. Kind "nat" (outside: the
    #: external address) notes that the router's entries are still to be checked
    #: against its rules (firewall/ctselect.py).
    flush: tuple[tuple[str, str], ...] = ()


@dataclass
class LinkState:
    """One network interface in one namespace."""

    name: str
    kind: str  # "veth" | "bridge" | other kinds seen on the observed side
    alias: str | None = None
    peer_ns: str | None = None  # veth: namespace of the other end (desired side)
    peer_name: str | None = None  # veth: name of the other end (desired side)
    master: str | None = None  # name of the bridge this link is a port of
    addresses: tuple[str, ...] = ()  # "192.0.2.3/24", sorted
    mtu: int | None = None  # None: leave the kernel's default
    up: bool = True
    index: int | None = None  # observed side only


@dataclass(frozen=True)
class RouteState:
    """A route natns owns (protocol RT_PROTO) in the main table."""

    dst: str  # "0.0.0.0/0" or a CIDR
    gateway: str | None = None
    dev: str | None = None


@dataclass
class NsState:
    """One network namespace and everything natns wants (or found) in it."""

    name: str
    mark: str | None  # alias of lo; None observed means "not natns's"
    role: str  # "router" | "host" | "internet"
    links: dict[str, LinkState] = field(default_factory=dict)
    loopback_addresses: tuple[str, ...] = ()  # "203.0.113.114/32" on lo, sorted
    routes: tuple[RouteState, ...] = ()  # sorted
    sysctls: dict[str, str] = field(default_factory=dict)
    firewall: Any = None  # desired: FirewallIntent | None; observed: backend Ruleset | None
    exists: bool = True
    lo_up: bool = True  # observed: is lo up (natns brings it up with the mark)


@dataclass
class LabState:
    """A whole lab: its namespaces by name."""

    lab: str
    backend: str
    namespaces: dict[str, NsState] = field(default_factory=dict)
    #: The namespace natns runs in ("the host"), name None: only what
    #: ``uplink: host`` needs there (uplink veth ends, forwarding, masquerade).
    host: NsState | None = None
