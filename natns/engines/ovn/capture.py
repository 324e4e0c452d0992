"""`natns capture` on an OVN lab: capture points along a packet's path, the underlay included.

On OVN a packet between two chassis crosses the underlay inside Geneve (UDP 6081): the
default points of a capture are then the sender's interface, its chassis' underlay veth
(``phy0``), the underlay switch in the central namespace (``ul``), and either the
active gateway chassis' uplink (``ex0``) and the internet's bridge, or the far host's
chassis' ``phy0`` and the far host. natns/verify/capture.py decodes the Geneve header
(VNI, options) and the inner packet, so the same packet is numbered alike on every point.

`points` returns (namespace, interface) pairs; `expand` turns the word ``underlay`` in a
user's point list into the central namespace's underlay bridge; `bpf` is the default
filter (the probe's protocol, or Geneve).
"""

from __future__ import annotations

import ipaddress

from ...errors import KernelError, UserError
from ...topology.schema import Topology
from . import live, sandbox
from .conntrack import active_chassis

UNDERLAY = "underlay"
GENEVE_PORT = 6081


def namespaces(t: Topology) -> frozenset[str]:
    """The sandbox's own namespaces (chassis, central): capture points beside the lab's hosts."""
    lo = sandbox.layout(t)
    return frozenset([lo.central_ns, *(c.ns for c in lo.chassis)])


def expand(t: Topology, points: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`points` with ``underlay`` (given as ``underlay:`` or ``underlay:ul``) as the central underlay bridge."""
    lo = sandbox.layout(t)
    return [(lo.central_ns, iface or "ul") if ns == UNDERLAY else (ns, iface) for ns, iface in points]


def _host(t: Topology, ns: str):
    for n in t.networks:
        for h in n.hosts:
            if h.namespace == ns:
                return n, h
    return None


def _target(t: Topology, to: str):
    """("internet", None) or ("host", host) for address `to`."""
    ip = ipaddress.ip_address(to)
    for f in getattr(t, "floating_ips", []) or []:
        if f.address == ip:
            for n in t.networks:
                if n.router == f.router:
                    for h in n.hosts:
                        if h.address == f.host:
                            return "host", h
    for n in t.networks:
        for h in n.hosts:
            if h.address == ip:
                return "host", h
    return "internet", None


def points(t: Topology, from_ns: str, to: str | None) -> list[tuple[str, str]]:
    """The capture points of a packet from lab host `from_ns` to `to` on OVN lab `t`."""
    lo = sandbox.layout(t)
    found = _host(t, from_ns)
    if found is None:
        raise UserError(f"{from_ns!r} is not a host of OVN lab {t.name} (capture --from takes a host namespace)")
    net, host = found
    src_ch = lo.place(host.chassis)
    pts = [(from_ns, host.interface)]
    kind, far = _target(t, to) if to else ("internet", None)
    fip = to is not None and any(f.address == ipaddress.ip_address(to) for f in t.floating_ips or [])
    if kind == "host" and far.chassis == host.chassis and not fip:
        return pts + [(far.namespace, far.interface)]  # the same chassis, no gateway: no tunnel
    router = next(r for r in t.routers if r.name == net.router)
    try:
        gw = active_chassis(live.find(t.name), router.name)
    except KernelError:
        gw = None
    gw_ch = lo.place(gw) if gw in {c.name for c in lo.chassis} else None
    if gw_ch is None or gw_ch.name != src_ch.name or kind == "host":
        pts += [(src_ch.ns, "phy0"), (lo.central_ns, "ul")]
    if kind == "internet":
        if gw_ch is not None:
            if gw_ch.name != src_ch.name:
                pts.append((gw_ch.ns, "phy0"))
            pts.append((gw_ch.ns, "ex0"))
        pts.append((t.internet.namespace, t.internet.interface))
        return pts
    far_ch = lo.place(far.chassis)
    if far_ch.name != src_ch.name:
        pts.append((far_ch.ns, "phy0"))
    pts.append((far.namespace, far.interface))
    return list(dict.fromkeys(pts))


def bpf(proto: str | None, port: int | None) -> str:
    """The default filter: the probe's packets, plain or inside Geneve (BFD is left out after decoding)."""
    if proto is None:
        return "ip and not igmp"
    base = "icmp" if proto == "icmp" else f"{proto} port {port} or icmp"
    return f"ip and ({base} or udp port {GENEVE_PORT})"
