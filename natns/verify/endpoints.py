"""Where an address lives in a lab, and which interfaces a packet to it crosses.

Read from the topology alone (pure, no kernel access), from the point of view
of the namespace sending: networks behind *different* routers may use the
same addresses, so "who is 192.0.2.10" depends on who asks. A host sees its
own router's networks and, through the router, the external network; the
internet namespace sees the external network only (it has no routes to
private networks).

`locate` answers "which namespace and interface hold this address";
`path_points` lists the (namespace, interface) points a packet passes on its
way there, the default capture points of `natns capture`. `require_up`
checks that a namespace exists and carries this lab's mark.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import UserError
from ..topology import Network, Router, Topology

Point = tuple[str, str]  # (namespace, interface)


@dataclass(frozen=True)
class Endpoint:
    """An address of the lab: the namespace and interface holding it, and what it is.

    `via` names the router namespace that translates the destination (a
    floating IP or a port forward, DNAT) when the address is not the
    endpoint's own; `addr` and `port` are then what the endpoint itself sees
    as destination (its private address and, for a port forward, its port).
    """

    ns: str
    iface: str
    role: str  # "host" | "router" | "internet"
    what: str  # human words: "host tenant1", "router vm's external address", ...
    via: str | None = None
    addr: str | None = None
    port: int | None = None


def role_of(t: Topology, ns: str) -> tuple[str, Router | None, Network | None]:
    """("host"|"router"|"internet", its router, its network) for lab namespace `ns`.

    Raises UserError if `ns` is not a namespace of the lab.
    """
    if t.internet and ns == t.internet.namespace:
        return "internet", None, None
    for r in t.routers:
        if r.ns == ns:
            return "router", r, None
    for n in t.networks:
        for h in n.hosts:
            if h.namespace == ns:
                return "host", t.router(n.router), n
    names = ", ".join(t.namespaces()) or "none"
    raise UserError(f"{ns!r} is not a namespace of lab {t.name} (its namespaces are {names})")


def _host_behind(t: Topology, r: Router, addr) -> tuple[Network, object] | None:
    for n in t.networks:
        if n.router == r.name:
            for h in n.hosts:
                if h.address == addr:
                    return n, h
    return None


def _router_side(t: Topology, r: Router) -> dict[ipaddress.IPv4Address, Endpoint]:
    """Addresses a router and the hosts behind it hold, as seen from behind it."""
    out: dict[ipaddress.IPv4Address, Endpoint] = {}
    out[r.external.address.ip] = Endpoint(r.ns, r.external.interface, "router",
                                          f"router {r.name}'s external address")
    for n in t.networks:
        if n.router != r.name:
            continue
        out[n.gateway] = Endpoint(r.ns, n.router_interface, "router",
                                  f"router {r.name}'s gateway on network {n.name}")
        for h in n.hosts:
            if h.address is not None:
                out[h.address] = Endpoint(h.namespace, h.interface, "host", f"host {h.namespace}")
    _router_side6(t, r, out)
    return out


def _router_side6(t: Topology, r: Router, out: dict) -> None:
    """The IPv6 addresses of router `r` and the hosts behind it (into `out`)."""
    if r.external.address6 is not None:
        out[r.external.address6.ip] = Endpoint(r.ns, r.external.interface, "router",
                                               f"router {r.name}'s external IPv6 address")
    for n in t.networks:
        if n.router != r.name or n.cidr6 is None:
            continue
        if n.gateway6 is not None:
            out[n.gateway6] = Endpoint(r.ns, n.router_interface, "router",
                                       f"router {r.name}'s IPv6 gateway on network {n.name}")
        for h in n.hosts:
            if h.address6 is not None:
                out[h.address6] = Endpoint(h.namespace, h.interface, "host", f"host {h.namespace}")


def _external_side(t: Topology) -> dict[ipaddress.IPv4Address, Endpoint]:
    """Addresses on the emulated internet: its own, its hosts, routers' external addresses."""
    out: dict[ipaddress.IPv4Address, Endpoint] = {}
    if not t.internet:
        return out
    i = t.internet
    out[i.address.ip] = Endpoint(i.namespace, i.interface, "internet", f"internet {i.namespace}")
    if i.address6 is not None:
        out[i.address6.ip] = Endpoint(i.namespace, i.interface, "internet", f"internet {i.namespace}")
    for h in i.hosts:
        out[h] = Endpoint(i.namespace, "lo", "internet", f"internet host {h} in {i.namespace}")
    for r in t.routers:
        if r.external.uplink == "internet":
            out[r.external.address.ip] = Endpoint(r.ns, r.external.interface, "router",
                                                  f"router {r.name}'s external address")
            if r.snat6 == "off":  # routed v6 (as Neutron): the hosts' own addresses are seen outside
                _router_side6(t, r, out)
            elif r.external.address6 is not None:
                out[r.external.address6.ip] = Endpoint(r.ns, r.external.interface, "router",
                                                       f"router {r.name}'s external IPv6 address")
    return out


def _dnat(t: Topology, ip, proto: str | None, port: int | None, routers: list[Router]) -> Endpoint | None:
    """The host a floating IP or port forward of one of `routers` sends `ip`(:`port`) to."""
    for r in routers:
        for f in getattr(t, "floating_ips", []):
            if f.router == r.name and f.address == ip:
                found = _host_behind(t, r, f.host)
                if found:
                    _, h = found
                    return Endpoint(h.namespace, h.interface, "host",
                                    f"host {h.namespace} by floating IP {ip} of router {r.name}",
                                    via=r.ns, addr=str(h.address), port=port)
        if proto in ("tcp", "udp") and port is not None and ip == r.external.address.ip:
            for pf in getattr(t, "port_forwards", []):
                if pf.router == r.name and pf.protocol == proto and pf.port[0] <= port <= pf.port[1]:
                    found = _host_behind(t, r, pf.to[0])
                    if found:
                        _, h = found
                        return Endpoint(h.namespace, h.interface, "host",
                                        f"host {h.namespace} by port forward {proto}/{port} of router {r.name}",
                                        via=r.ns, addr=str(h.address), port=pf.to_port + (port - pf.port[0]))
    return None


def locate(t: Topology, from_ns: str, addr: str, proto: str | None = None,
           port: int | None = None) -> Endpoint | None:
    """The lab endpoint `addr` (and `proto`/`port`) leads to from namespace `from_ns`, or None.

    Floating IPs and port forwards lead to the host behind them (`via` names
    the translating router). None means the address is not in the lab, or
    not reachable by address from there (a private address behind another
    router).
    """
    ip = ipaddress.ip_address(addr)
    role, router, _ = role_of(t, from_ns)
    outside = [r for r in t.routers if r.external.uplink == "internet"]
    if role == "internet":
        return _dnat(t, ip, proto, port, outside) or _external_side(t).get(ip)
    assert router is not None
    mine = [router]
    if router.external.uplink == "internet":
        mine += [r for r in outside if r is not router]
    found = _dnat(t, ip, proto, port, mine)
    if found:
        return found
    found = _router_side(t, router).get(ip)
    if found:
        return found
    if router.external.uplink == "internet":
        return _external_side(t).get(ip)
    return None


def hidden_host(t: Topology, from_ns: str, addr: str) -> str | None:
    """Why `addr` leads nowhere from `from_ns` although the lab holds it, or None.

    A host's private address behind a router is reachable only from behind
    that router; from outside (the internet, another router's network) only
    a floating IP or a port forward of that router leads to it. Says which
    host, behind which router, and how it could be reached.
    """
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    role, mine, _ = role_of(t, from_ns)
    found = []
    for r in t.routers:
        if mine is not None and r is mine:
            continue
        for n in t.networks:
            if n.router != r.name:
                continue
            if n.gateway == ip:
                found.append(f"router {r.name}'s gateway on network {n.name}")
            for h in n.hosts:
                if h.address == ip:
                    found.append(f"lab host {h.namespace} behind router {r.name}")
    if not found:
        return None
    where = "from the internet" if role == "internet" else f"from {from_ns} (behind another router)"
    return (f"{addr} is {' and '.join(found)}: a private address, unreachable {where} "
            "unless a floating IP or port forward maps it")


def path_points(t: Topology, from_ns: str, addr: str | None = None, proto: str | None = None,
                port: int | None = None) -> list[Point]:
    """The (namespace, interface) points a packet from `from_ns` to `addr` passes.

    In order, from the sender's interface to the far end's. With `addr` None
    (or an address the lab does not hold), the path towards the outside: up to
    the internet's bridge, or the router's external interface with
    ``uplink: host`` (natns never captures in the namespace it runs in).
    Networks are seen on their router-side bridge, as in the seed's captures.
    """
    role, router, net = role_of(t, from_ns)
    dest = locate(t, from_ns, addr, proto, port) if addr else None
    if dest is not None and dest.ns == from_ns and dest.via is None:
        return [(from_ns, "lo")]  # a namespace's own addresses are reached over lo
    pts: list[Point] = []

    def add(p: Point) -> None:
        if p not in pts:
            pts.append(p)

    # Where the packet lands: the router it must reach (None: the internet namespace).
    landing: Router | None = None
    if dest is not None:
        if dest.via:
            landing = next(r for r in t.routers if r.ns == dest.via)
        elif dest.role == "router":
            landing = next(r for r in t.routers if r.ns == dest.ns)
        elif dest.role == "host":
            landing = t.router(_network_of(t, dest.ns).router)

    def down(r: Router) -> None:
        """From router `r` to the destination behind it."""
        if dest is not None and dest.role == "host":
            add((r.ns, _network_of(t, dest.ns).router_interface))
            add((dest.ns, dest.iface))

    inet = t.internet
    if role == "internet":
        assert inet is not None
        add((inet.namespace, inet.interface))
    else:
        assert router is not None
        if role == "host":
            assert net is not None
            host = next(h for h in net.hosts if h.namespace == from_ns)
            add((from_ns, host.interface))
            add((router.ns, net.router_interface))
        if landing is router:
            down(router)
            return pts
        add((router.ns, router.external.interface))  # out by the external interface
        if router.external.uplink != "internet" or inet is None:
            return pts
        add((inet.namespace, inet.interface))
    if landing is not None:
        add((landing.ns, landing.external.interface))
        down(landing)
    return pts


def _behind(t: Topology, r: Router) -> set[str]:
    """The router's namespace and its hosts' namespaces."""
    out = {r.ns}
    for n in t.networks:
        if n.router == r.name:
            out.update(h.namespace for h in n.hosts)
    return out


def _network_of(t: Topology, host_ns: str) -> Network:
    for n in t.networks:
        if any(h.namespace == host_ns for h in n.hosts):
            return n
    raise KeyError(host_ns)


def router_by_name(t: Topology, name: str) -> Router:
    """The router called `name` or living in namespace `name`; UserError if none."""
    for r in t.routers:
        if name in (r.name, r.ns):
            return r
    names = ", ".join(r.name for r in t.routers) or "none"
    raise UserError(f"lab {t.name} has no router {name!r} (its routers are {names})")


def require_up(t: Topology, ns: str) -> None:
    """Raise UserError unless namespace `ns` exists and carries lab `t`'s mark."""
    from ..observe import read_mark
    from ..state import parse_ns_mark

    owner = parse_ns_mark(read_mark(ns))
    if owner is None or owner[0] != t.name:
        raise UserError(
            f"namespace {ns!r} of lab {t.name} is not up (run `natns up` on the topology first)"
        )


__all__ = ["Endpoint", "Point", "hidden_host", "locate", "path_points", "require_up", "role_of", "router_by_name"]
