"""The shape of network state: what a topology asks for, and what the kernel holds.

`desired.py` builds a `LabState` of `DesiredNs` from a topology (what should
exist); `observe.py` builds an `ObservedLab` of `ObservedNs` from the kernel
(what does exist); `plan.py` diffs the two. Links, addresses, routes and
sysctls have one shape on both sides (`LinkState`, `RouteState`), so that
part of the diff is a plain comparison; what only one side can know has its
own field there: the firewall *intent* on the desired side, the owner read
from the mark, the firewall rules found and a half-made namespace file on the
observed side.

The ownership marks that make the observed side readable without a state
file are in marks.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from .marks import MARK_PREFIX, RT_PROTO, link_mark, ns_mark, parse_ns_mark  # noqa: F401  (re-exported)


@runtime_checkable
class RulesetKey(Protocol):
    """A backend's canonical content of a Ruleset (a frozen dataclass)."""

    def text(self) -> str:
        """The rules as the backend writes them (or, read back, a summary)."""
        ...


@dataclass(frozen=True)
class Ruleset:
    """natns's rules for one namespace, in one backend's canonical form.

    `key` holds the canonical content only (no handles, no counter values),
    so two Rulesets are equal exactly when the rules are.
    """

    backend: str
    key: RulesetKey
    #: What makes `body`, when the key alone can't say what `load` feeds the tool
    #: (nftables); not part of equality: a Ruleset read back from the kernel has none.
    render_body: Callable[[], str] | None = field(default=None, compare=False, hash=False, repr=False)

    @functools.cached_property
    def body(self) -> str:
        """The text `load` feeds the tool ("" for a Ruleset read back). Made when first
        asked: a plan renders a router's rules several times and loads them at most
        once, and the text of 5,000 floating IPs' map elements takes ~50 ms to write."""
        return self.render_body() if self.render_body is not None else ""

    def text(self) -> str:
        """The rules as the backend writes them (nft syntax, iptables-save lines)."""
        return self.body or self.key.text()


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
class Ingress6:
    """An inbound IPv6 opening: `protocol` to ports `port`..`port_end` of host `to`."""

    protocol: str  # "tcp" | "udp"
    to: str
    port: int
    port_end: int


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
    #: IPv6 (docs/ipv6.md), all empty for a lab without IPv6, whose rules are then those of
    #: before IPv6 byte for byte. `v6`: render IPv6 rules at all; `internal6`: the networks'
    #: prefixes (anti-spoofing, outbound); `snat6`: NAT66 masquerade per network (snat6:
    #: masquerade); `ingress6`: what the outside may open (besides replies).
    v6: bool = False
    external_address6: str | None = None
    internal6: tuple[InternalNet, ...] = ()
    snat6: tuple[SnatRule, ...] = ()
    ingress6: tuple[Ingress6, ...] = ()


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
class _Ns:
    """What both sides say about one network namespace."""

    name: str | None  # None: the namespace natns runs in ("the host")
    mark: str | None  # alias of lo: natns's ownership mark (observed: None or anyone's alias)
    role: str  # "router" | "host" | "internet" (observed: from the mark, "" without one)
    links: dict[str, LinkState] = field(default_factory=dict)
    loopback_addresses: tuple[str, ...] = ()  # "203.0.113.114/32" on lo, sorted
    routes: tuple[RouteState, ...] = ()  # sorted
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass
class DesiredNs(_Ns):
    """One namespace as the topology wants it."""

    firewall: FirewallIntent | None = None


@dataclass
class ObservedNs(_Ns):
    """One namespace as found in the kernel."""

    exists: bool = True
    lo_up: bool = True  # is lo up (natns brings it up with the mark)
    #: (lab, role, name) from its mark, or None: not natns's
    owner: tuple[str, str, str] | None = None
    #: natns's rules found there: backend name -> Ruleset
    firewalls: dict[str, Ruleset] = field(default_factory=dict)
    #: /run/netns/<name> exists but is no namespace and not a file natns (or `ip netns
    #: add`) left half made: someone else's file, which `up` must not replace
    not_a_namespace: bool = False
    #: /run/netns/<name> is a file natns left half made (nothing mounted on it; see
    #: kernel/netns.py): not a namespace, but natns's to replace or remove
    placeholder: bool = False

    def owned_by(self, lab: str) -> bool:
        """Whether this namespace exists and carries `lab`'s mark."""
        return self.exists and self.owner is not None and self.owner[0] == lab


@dataclass
class LabState:
    """A whole lab as the topology wants it: its namespaces by name."""

    lab: str
    backend: str
    namespaces: dict[str, DesiredNs] = field(default_factory=dict)
    #: The namespace natns runs in ("the host"), name None: only what
    #: ``uplink: host`` needs there (uplink veth ends, forwarding, masquerade).
    host: DesiredNs | None = None


#: The desired lab (LabState's other name, next to ObservedLab).
DesiredLab = LabState


@dataclass
class ObservedLab:
    """A whole lab as the kernel holds it: the namespaces looked at, and the host's part."""

    lab: str
    namespaces: dict[str, ObservedNs] = field(default_factory=dict)
    host: ObservedNs | None = None
