"""The checks of a topology that span fields: names, addresses, references.

`cross_check(t, file)` runs them section by section (internet, routers,
networks and their hosts, floating IPs and port forwards, checks) and raises
TopologyError on the first problem. Every derived interface name is the one natns.topology.names gives,
which is the one `up` creates. IPv6 fields are checked by the same rules as
their IPv4 twins (in the prefix, unique, not overlapping), next to them.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass, field

from ..errors import TopologyError
from ..addresses import not_routable
from .names import host_port_name, router_port_name
from .schema import Network, Router, Topology, ovn_central_ns


#: RFC 8200: every link carrying IPv6 has an MTU of at least 1280.
IPV6_MIN_MTU = 1280


@dataclass
class _Seen:
    """What the sections checked so far have claimed, and where (a field path)."""

    t: Topology
    file: str
    namespaces: dict[str, str] = field(default_factory=dict)  # one /run/netns: global
    routers: dict[str, int] = field(default_factory=dict)  # name -> index
    ext_addrs: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)  # on the internet's network
    ext_ifaces: dict[str, str] = field(default_factory=dict)  # ports on the internet's bridge
    ifaces: dict[tuple[str, str], str] = field(default_factory=dict)  # (router ns, name) -> owner
    #: IPv6 prefixes of the networks: prefix -> (field path, router, its snat6)
    prefixes6: dict[ipaddress.IPv6Network, tuple[str, str, str]] = field(default_factory=dict)

    def fail(self, path: str, problem: str):
        raise TopologyError(self.file, path, problem)

    def claim_ns(self, name: str, path: str) -> None:
        if name in self.namespaces:
            self.fail(path, f"namespace {name!r} is already used by {self.namespaces[name]}")
        self.namespaces[name] = path


def cross_check(t: Topology, file: str) -> None:
    """Raise TopologyError on the first problem that spans fields.

    The order is the file's (the first problem of a file with several stays
    the one natns has always named): every namespace and router name is
    claimed before the addresses on the internet's network are.
    """
    seen = _Seen(t, file)
    internet_namespace(seen)
    router_names(seen)
    internet_hosts(seen)
    router_externals(seen)
    networks(seen)
    internet_outside_the_lab(seen)
    mappings(seen)
    ovn(seen)
    checks(seen)


def internet_namespace(s: _Seen) -> None:
    """The internet's namespace is claimed first."""
    if s.t.internet:
        s.claim_ns(s.t.internet.namespace, "internet.namespace")


def internet_hosts(s: _Seen) -> None:
    """The internet's address and hosts: unique, and unicast addresses a host can have."""
    i = s.t.internet
    if not i:
        return
    s.ext_addrs[i.address.ip] = "internet.address"
    if i.address6 is not None:
        s.ext_addrs[i.address6.ip] = "internet.address6"
    for j, h in enumerate(i.hosts):
        p = f"internet.hosts[{j}]"
        if h in s.ext_addrs:
            s.fail(p, f"address {h} is already used by {s.ext_addrs[h]}")
        why = not_routable(h)
        if why:
            s.fail(p, f"{h} is {why}; an internet host needs a unicast address the lab can route to")
        if h.version == 6:
            if i.address6 is None:
                s.fail(p, f"{h} is IPv6 and the internet has no address6; add one (like 2001:db8:ff::1/64)")
            if h in i.address6.network:
                s.fail(p, f"{h} is on the internet's external network {i.address6.network}; an internet "
                       "host must be off it (it is an address on lo, reached through the internet's address6)")
        s.ext_addrs[h] = p


def internet_outside_the_lab(s: _Seen) -> None:
    """No internet host has an address of a network behind a router (its hosts could not reach it)."""
    i = s.t.internet
    if not i:
        return
    for j, h in enumerate(i.hosts):
        for k, n in enumerate(s.t.networks):
            cidr = n.cidr if h.version == 4 else n.cidr6
            if cidr is not None and h in cidr:
                s.fail(f"internet.hosts[{j}]", f"{h} is in networks[{k}] ({cidr}), a private network of the "
                       "lab; an internet host must be outside it")


def router_names(s: _Seen) -> None:
    """Router names unique; their namespaces claimed."""
    for i, r in enumerate(s.t.routers):
        if r.name in s.routers:
            s.fail(f"routers[{i}].name", f"duplicate router name {r.name!r}")
        s.routers[r.name] = i
        s.claim_ns(r.ns, f"routers[{i}].{'namespace' if r.namespace else 'name'}")


def router_externals(s: _Seen) -> None:
    """Each router's external side on its uplink, its gateway there, SNAT to its own address."""
    for i, r in enumerate(s.t.routers):
        _external(s, i, r)


def _external(s: _Seen, i: int, r: Router) -> None:
    t = s.t
    p = f"routers[{i}].external"
    ext = r.external
    if ext.uplink == "internet":
        if not t.internet:
            s.fail(f"{p}.uplink", "there is no internet section to connect to; add one or set uplink: host")
        if ext.address.network != t.internet.address.network:
            s.fail(f"{p}.address", f"{ext.address} is not on the internet's network {t.internet.address.network}")
        gw_default = t.internet.address.ip
        port = router_port_name(r.name)
        if port in s.ext_ifaces:
            s.fail(f"routers[{i}].name", f"its port name {port!r} on the internet clashes with {s.ext_ifaces[port]}")
        if port == t.internet.interface:
            s.fail(f"routers[{i}].name", f"its port name {port!r} clashes with internet.interface")
        s.ext_ifaces[port] = f"routers[{i}]"
    else:
        gw_default = None
    if ext.gateway is None and gw_default is None:
        s.fail(f"{p}.gateway", "required with uplink: host (the host's address on the uplink)")
    gw = ext.gateway or gw_default
    _gateway_on(s, f"{p}.gateway", gw, ext.address)
    if ext.uplink == "internet" and gw != t.internet.address.ip:
        s.fail(f"{p}.gateway", f"{gw} is not the internet's address {t.internet.address.ip}")
    if ext.uplink == "internet":
        if ext.address.ip in s.ext_addrs:
            s.fail(f"{p}.address", f"address {ext.address.ip} is already used by {s.ext_addrs[ext.address.ip]}")
        s.ext_addrs[ext.address.ip] = f"{p}.address"
    if not isinstance(r.snat, str) and r.snat != ext.address.ip:
        s.fail(f"routers[{i}].snat",
               f"{r.snat} is not an address of this router (its external address is {ext.address.ip})")
    _external6(s, i, r)


def _gateway_on(s: _Seen, path: str, gw, iface) -> None:
    """A router's external gateway: on its external network, not its own address."""
    if gw not in iface.network:
        s.fail(path, f"{gw} is not on {iface.network}")
    if gw == iface.ip:
        s.fail(path, f"{gw} is the router's own address")


def _external6(s: _Seen, i: int, r: Router) -> None:
    """The router's IPv6 side: address6 on the internet's v6 network (or the host's uplink),
    gateway6 there, and what needs it (snat6: masquerade, ingress)."""
    t = s.t
    p = f"routers[{i}].external"
    ext = r.external
    if ext.address6 is None:
        if ext.gateway6 is not None:
            s.fail(f"{p}.gateway6", "needs external.address6 (the router's own IPv6 address on that network)")
        if r.snat6 == "masquerade":
            s.fail(f"routers[{i}].snat6", "masquerade needs external.address6 (the address NAT66 translates to)")
        return
    if ext.mtu is not None and ext.mtu < IPV6_MIN_MTU:
        s.fail(f"{p}.mtu", f"{ext.mtu} is below {IPV6_MIN_MTU}, the least MTU IPv6 works with (address6 is set)")
    gw_default = None
    if ext.uplink == "internet":
        i6 = t.internet.address6
        if i6 is None:
            s.fail(f"{p}.address6", "the internet has no address6; add internet.address6 on the same network")
        if ext.address6.network != i6.network:
            s.fail(f"{p}.address6", f"{ext.address6} is not on the internet's network {i6.network}")
        gw_default = i6.ip
    elif ext.gateway6 is None:
        s.fail(f"{p}.gateway6", "required with uplink: host and address6 (the host's IPv6 address on the uplink)")
    gw = ext.gateway6 or gw_default
    _gateway_on(s, f"{p}.gateway6", gw, ext.address6)
    if gw == ext.address6.network.network_address:
        s.fail(f"{p}.gateway6", f"{gw} is the subnet-router anycast address of {ext.address6.network}")
    if ext.uplink == "internet" and gw != gw_default:
        s.fail(f"{p}.gateway6", f"{gw} is not the internet's address {gw_default}")
    if ext.uplink == "internet":
        if ext.address6.ip in s.ext_addrs:
            s.fail(f"{p}.address6", f"address {ext.address6.ip} is already used by {s.ext_addrs[ext.address6.ip]}")
        s.ext_addrs[ext.address6.ip] = f"{p}.address6"


def networks(s: _Seen) -> None:
    """Network names unique; each behind a known router, its bridge and CIDR not clashing; its hosts."""
    t = s.t
    names: dict[str, int] = {}
    cidrs: dict[str, list[tuple[ipaddress.IPv4Network, int]]] = {}
    cidrs6: dict[str, list[tuple[ipaddress.IPv6Network, int]]] = {}
    for i, n in enumerate(t.networks):
        p = f"networks[{i}]"
        if n.name in names:
            s.fail(f"{p}.name", f"duplicate network name {n.name!r}")
        names[n.name] = i
        if n.router not in s.routers:
            s.fail(f"{p}.router", f"unknown router {n.router!r}" + (
                f"; routers are {', '.join(sorted(s.routers))}" if s.routers else "; there are no routers"))
        ri = s.routers[n.router]
        r = t.routers[ri]
        br = n.router_interface  # long names get a digest; fine, it is shown by `plan`
        key = (r.ns, br)
        if key in s.ifaces or br == r.external.interface:
            s.fail(f"{p}.interface", f"interface {br!r} in router {r.name!r} is already used by "
                   f"{s.ifaces.get(key, f'routers[{ri}].external.interface')}")
        s.ifaces[key] = p
        if n.cidr is None and n.cidr6 is None:
            s.fail(f"{p}.cidr", "required field is missing (or cidr6, for an IPv6-only network)")
        if n.cidr is not None:
            if n.gateway is None:
                s.fail(f"{p}.gateway", "required field is missing")
            _no_overlap(s, f"{p}.cidr", n.cidr, cidrs.get(n.router, []), r.external.address.network, r.name)
            cidrs.setdefault(n.router, []).append((n.cidr, i))
            if n.gateway not in n.cidr:
                s.fail(f"{p}.gateway", f"{n.gateway} is outside {n.cidr}")
            if n.gateway in (n.cidr.network_address, n.cidr.broadcast_address):
                s.fail(f"{p}.gateway", f"{n.gateway} is the network or broadcast address of {n.cidr}")
        elif n.gateway is not None:
            s.fail(f"{p}.gateway", "needs cidr (an IPv6-only network has gateway6 only)")
        _network6(s, i, n, r, cidrs6)
        hosts(s, i, n, ri)


def _no_overlap(s: _Seen, path: str, cidr, taken: list, external, router: str) -> None:
    """A network's prefix (either family) overlaps no other behind its router (`taken`:
    (prefix, index)), nor the router's external network."""
    for other, j in taken:
        if other.overlaps(cidr):
            s.fail(path, f"{cidr} overlaps networks[{j}] ({other}) behind the same router")
    if cidr.overlaps(external):
        s.fail(path, f"{cidr} overlaps the external network {external} of router {router!r}")


def _network6(s: _Seen, i: int, n: Network, r: Router, cidrs6: dict) -> None:
    """A network's IPv6 prefix: the same rules as its IPv4 one, and a router with IPv6 outside."""
    p = f"networks[{i}]"
    if n.cidr6 is None:
        if n.gateway6 is not None:
            s.fail(f"{p}.gateway6", "needs cidr6 (the network's IPv6 prefix)")
        return
    if n.gateway6 is None:
        s.fail(f"{p}.gateway6", "required with cidr6 (the router's address on the network, like 2001:db8:1::1)")
    if n.mtu is not None and n.mtu < IPV6_MIN_MTU:
        s.fail(f"{p}.mtu", f"{n.mtu} is below {IPV6_MIN_MTU}, the least MTU IPv6 works with (cidr6 is set)")
    if r.external.address6 is None:
        s.fail(f"{p}.cidr6", f"router {r.name!r} has no external.address6; IPv6 hosts behind it could reach "
               "nothing (add address6 to its external side)")
    _no_overlap(s, f"{p}.cidr6", n.cidr6, cidrs6.get(n.router, []), r.external.address6.network, r.name)
    i6 = s.t.internet.address6 if s.t.internet else None
    if i6 is not None and n.cidr6.overlaps(i6.network):
        s.fail(f"{p}.cidr6", f"{n.cidr6} overlaps the internet's network {i6.network}")
    # A routed prefix is routed to by the internet (or the host's upstream): two routers
    # can't both own one. Behind NAT66, as behind IPv4 SNAT, the same prefix may repeat.
    for other, where in s.prefixes6.items():
        if r.snat6 == "off" and other.overlaps(n.cidr6) and where[1] != n.router and where[2] == "off":
            s.fail(f"{p}.cidr6", f"{n.cidr6} overlaps {where[0]} ({other}), routed by router {where[1]!r}: "
                   "the internet can route a prefix to one router only (or set snat6: masquerade)")
    s.prefixes6[n.cidr6] = (f"{p}.cidr6", n.router, r.snat6)
    cidrs6.setdefault(n.router, []).append((n.cidr6, i))
    if n.gateway6 not in n.cidr6:
        s.fail(f"{p}.gateway6", f"{n.gateway6} is outside {n.cidr6}")
    if n.gateway6 == n.cidr6.network_address:
        s.fail(f"{p}.gateway6", f"{n.gateway6} is the subnet-router anycast address of {n.cidr6}")


def hosts(s: _Seen, i: int, n: Network, ri: int) -> None:
    """A network's hosts: namespaces unique, ports in the router not clashing, addresses in the CIDR."""
    r = s.t.routers[ri]
    p = f"networks[{i}]"
    used: dict = {a: f"{p}.{f}" for a, f in ((n.gateway, "gateway"), (n.gateway6, "gateway6")) if a is not None}
    for k, h in enumerate(n.hosts):
        hp = f"{p}.hosts[{k}]"
        s.claim_ns(h.namespace, f"{hp}.namespace")
        tap = host_port_name(h.namespace)  # the host's port on the bridge lives in the router too
        if (r.ns, tap) in s.ifaces or tap == r.external.interface:
            s.fail(f"{hp}.namespace", f"its port {tap!r} in router {r.name!r} clashes with interface "
                   f"{tap!r} of " + s.ifaces.get((r.ns, tap), f"routers[{ri}].external"))
        s.ifaces[(r.ns, tap)] = f"{hp} (its port)"
        if h.address is None and h.address6 is None:
            s.fail(f"{hp}.address", "required field is missing" + (" (or address6)" if n.cidr6 else ""))
        if h.address is not None:
            if n.cidr is None:
                s.fail(f"{hp}.address", f"{n.name} is an IPv6-only network (no cidr); give the host address6")
            if h.address not in n.cidr:
                s.fail(f"{hp}.address", f"{h.address} is outside {n.cidr}")
            if h.address in (n.cidr.network_address, n.cidr.broadcast_address):
                s.fail(f"{hp}.address", f"{h.address} is the network or broadcast address of {n.cidr}")
            if h.address in used:
                s.fail(f"{hp}.address", f"address {h.address} is already used by {used[h.address]}")
            used[h.address] = f"{hp}.address"
        if h.address6 is not None:
            if n.cidr6 is None:
                s.fail(f"{hp}.address6", f"an IPv6 host needs a network with cidr6; {n.name} has none")
            if h.address6 not in n.cidr6:
                s.fail(f"{hp}.address6", f"{h.address6} is outside {n.cidr6}")
            if h.address6 == n.cidr6.network_address:
                s.fail(f"{hp}.address6", f"{h.address6} is the subnet-router anycast address of {n.cidr6}")
            if h.address6 in used:
                s.fail(f"{hp}.address6", f"address {h.address6} is already used by {used[h.address6]}")
            used[h.address6] = f"{hp}.address6"


def mappings(s: _Seen) -> None:
    """Floating IPs and port forwards: on the right router, unique, not clashing."""
    t = s.t
    fail = s.fail
    routers_ = {r.name: r for r in t.routers}
    nets_of: dict[str, list] = {r.name: [] for r in t.routers}  # grouped once: per router, quadratic
    for n in t.networks:
        if n.router in nets_of:
            nets_of[n.router].append(n)

    def behind(router: str, addr, path: str):
        nets = [n for n in nets_of[router] if n.cidr is not None and addr in n.cidr]
        if not nets:
            fail(path, f"{addr} is not on a network behind router {router!r}")
        n = nets[0]
        if addr in (n.gateway, n.cidr.network_address, n.cidr.broadcast_address):
            fail(path, f"{addr} is the gateway, network or broadcast address of {n.name}")

    used_float: dict = {}
    used_host: dict = {}
    for i, f in enumerate(t.floating_ips):
        p = f"floating_ips[{i}]"
        if f.router not in routers_:
            fail(f"{p}.router", f"unknown router {f.router!r}")
        r = routers_[f.router]
        ext_net = r.external.address.network
        if f.address not in ext_net:
            fail(f"{p}.address", f"{f.address} is not on the external network {ext_net} of router {r.name!r}")
        if f.address in (ext_net.network_address, ext_net.broadcast_address):
            fail(f"{p}.address", f"{f.address} is the network or broadcast address of the external network")
        if f.address == r.external.address.ip:
            fail(f"{p}.address", f"{f.address} is the router's own external address; use a port forward")
        if f.address in s.ext_addrs:
            fail(f"{p}.address", f"address {f.address} is already used by {s.ext_addrs[f.address]}")
        if f.address in used_float:
            fail(f"{p}.address", f"address {f.address} is already used by {used_float[f.address]}")
        used_float[f.address] = p
        behind(f.router, f.host, f"{p}.host")
        if (f.router, f.host) in used_host:
            fail(f"{p}.host", f"{f.host} already has a floating IP ({used_host[(f.router, f.host)]})")
        used_host[(f.router, f.host)] = p
    # per router and protocol, the port ranges taken so far, sorted: they are disjoint (a
    # clash fails at once), so the ones a new range overlaps sit side by side (bisect),
    # and the first of them in the file is named, as a scan of all would name it
    taken: dict[tuple[str, str], tuple[list[int], list[tuple[int, int, int, str]]]] = {}
    for i, pf in enumerate(t.port_forwards):
        p = f"port_forwards[{i}]"
        if pf.router not in routers_:
            fail(f"{p}.router", f"unknown router {pf.router!r}")
        behind(pf.router, pf.to[0], f"{p}.to")
        lo, hi = pf.port
        if pf.to_ports[1] > 65535:
            fail(f"{p}.to", f"ports {pf.to_port}-{pf.to_ports[1]} run past 65535")
        starts, spans = taken.setdefault((pf.router, pf.protocol), ([], []))
        k = bisect.bisect_right(starts, hi) - 1
        clashes = []
        while k >= 0 and spans[k][1] >= lo:
            clashes.append(spans[k])
            k -= 1
        if clashes:
            olo, ohi, _, where = min(clashes, key=lambda c: c[2])
            fail(f"{p}.port", f"{pf.protocol} {lo}-{hi} clashes with {where} ({olo}-{ohi})")
        at = bisect.bisect_right(starts, lo)
        starts.insert(at, lo)
        spans.insert(at, (lo, hi, i, p))
    ingress(s)


def ingress(s: _Seen) -> None:
    """Each router's ingress entries: to an IPv6 host of the lab behind it, not overlapping."""
    for i, r in enumerate(s.t.routers):
        mine = {h.address6: h for n in s.t.networks if n.router == r.name for h in n.hosts
                if h.address6 is not None}
        taken: list[tuple] = []
        if r.ingress and r.snat6 == "masquerade":
            s.fail(f"routers[{i}].ingress", "opens routed IPv6 hosts to the outside; with snat6: masquerade "
                   "nothing outside can address them (set snat6: off, or remove ingress)")
        for j, g in enumerate(r.ingress):
            p = f"routers[{i}].ingress[{j}]"
            if g.to not in mine:
                s.fail(f"{p}.to", f"{g.to} is not the address6 of a host on a network behind router {r.name!r}"
                       + (f"; they are {', '.join(str(a) for a in mine)}" if mine else ""))
            lo, hi = g.port
            for to, proto, olo, ohi, where in taken:
                if to == g.to and proto == g.protocol and lo <= ohi and olo <= hi:
                    s.fail(f"{p}.port", f"{g.protocol} {lo}-{hi} to {g.to} overlaps {where} ({olo}-{ohi})")
            taken.append((g.to, g.protocol, lo, hi, p))


def ovn(s: _Seen) -> None:
    """The OVN engine's fields: only with `engine: ovn`, and then consistent (chassis that
    exist, gateway chassis for SNAT and floating IPs, a third chassis for HA)."""
    t, fail, seen_ns = s.t, s.fail, s.namespaces

    if t.engine == "kernel":
        if t.ovn is not None:
            fail("ovn", "is for engine: ovn; add `engine: ovn` or remove this section")
        for i, r in enumerate(t.routers):
            if r.gateway_chassis:
                fail(f"routers[{i}].gateway_chassis", "is for engine: ovn")
        for i, n in enumerate(t.networks):
            for k, h in enumerate(n.hosts):
                if h.chassis is not None:
                    fail(f"networks[{i}].hosts[{k}].chassis", "is for engine: ovn")
        return

    o = t.ovn
    if o is None:
        fail("ovn", "required with engine: ovn (sandbox: to run OVN here, or nb: an existing NB DB)")
    if (o.sandbox is None) == (o.nb is None):
        fail("ovn", "give exactly one of sandbox (natns runs OVN here) and nb (an existing NB DB)")
    if not t.internet:
        fail("internet", "required with engine: ovn (the external network the gateway chassis reach)")
    _no_v6_with_ovn(s)
    for i, r in enumerate(t.routers):
        if r.external.uplink != "internet":
            fail(f"routers[{i}].external.uplink", "only uplink: internet works with engine: ovn")

    chassis: dict[str, object] = {}
    sb = o.sandbox
    if sb is not None:
        if not sb.chassis:
            fail("ovn.sandbox.chassis", "needs at least one chassis")
        central = ovn_central_ns(t)
        if central in seen_ns:
            fail("ovn.sandbox.namespace" if sb.namespace else "name",
                 f"the OVN central namespace {central!r} is already used by {seen_ns[central]}")
        seen_ns[central] = "ovn.sandbox.namespace"
        for j, c in enumerate(sb.chassis):
            p = f"ovn.sandbox.chassis[{j}]"
            if c.name in chassis:
                fail(f"{p}.name", f"duplicate chassis name {c.name!r}")
            chassis[c.name] = c
            if c.ns in seen_ns:
                fail(f"{p}.{'namespace' if c.namespace else 'name'}",
                     f"namespace {c.ns!r} is already used by {seen_ns[c.ns]}")
            seen_ns[c.ns] = p
        ul = sb.underlay
        if ul.num_addresses - 2 < len(sb.chassis) + 1:
            fail("ovn.sandbox.underlay", f"{ul} has too few addresses for the central "
                 f"namespace and {len(sb.chassis)} chassis")
        others = [(t.internet.address.network, "internet.address")]
        others += [(n.cidr, f"networks[{i}].cidr") for i, n in enumerate(t.networks)]
        for net, where in others:
            if ul.overlaps(net):
                fail("ovn.sandbox.underlay", f"{ul} overlaps {where} ({net})")

    for i, n in enumerate(t.networks):
        for k, h in enumerate(n.hosts):
            p = f"networks[{i}].hosts[{k}].chassis"
            if sb is None:
                continue  # an existing deployment: the chassis is named at `natns attach`
            if h.chassis is None:
                fail(p, "required with an OVN sandbox (the chassis the host runs on; chassis are "
                     + ", ".join(chassis) + ")")
            if h.chassis not in chassis:
                fail(p, f"unknown chassis {h.chassis!r}; chassis are " + ", ".join(chassis))

    fip_routers = {f.router for f in t.floating_ips}
    for i, r in enumerate(t.routers):
        p = f"routers[{i}].gateway_chassis"
        seen: set[str] = set()
        for j, name in enumerate(r.gateway_chassis):
            if name in seen:
                fail(f"{p}[{j}]", f"chassis {name!r} is listed twice")
            seen.add(name)
            if sb is None:
                continue
            if name not in chassis:
                fail(f"{p}[{j}]", f"unknown chassis {name!r}; chassis are " + ", ".join(chassis))
            if not chassis[name].gateway:
                fail(f"{p}[{j}]", f"chassis {name!r} is not a gateway chassis (set gateway: true on it)")
        needs = r.snat != "off" or r.name in fip_routers
        if needs and not r.gateway_chassis:
            what = "SNAT" if r.snat != "off" else "floating IPs"
            fail(p, f"router {r.name!r} has {what}: name at least one chassis with gateway: true")
        if sb is not None and len(r.gateway_chassis) >= 2 and len(sb.chassis) < 3:
            fail(p, f"HA with {len(r.gateway_chassis)} gateway chassis needs a third chassis in "
                 "ovn.sandbox.chassis: BFD needs a peer to tell a dead gateway from a lost link")


def _no_v6_with_ovn(s: _Seen) -> None:
    """IPv6 is the kernel engine's for now: name the first v6 field of an OVN lab."""
    t = s.t
    why = "IPv6 is not supported yet with engine: ovn"
    if t.internet and t.internet.address6 is not None:
        s.fail("internet.address6", why)
    for i, r in enumerate(t.routers):
        for f in ("address6", "gateway6"):
            if getattr(r.external, f) is not None:
                s.fail(f"routers[{i}].external.{f}", why)
        if r.snat6 != "off":
            s.fail(f"routers[{i}].snat6", why)
        if r.ingress:
            s.fail(f"routers[{i}].ingress", why)
    for i, n in enumerate(t.networks):
        if n.cidr6 is not None or n.cidr is None:
            s.fail(f"networks[{i}].cidr6" if n.cidr6 is not None else f"networks[{i}].cidr", why)


def checks(s: _Seen) -> None:
    """Each check starts in a namespace of the lab and asks one coherent thing."""
    namespaces = s.t.namespaces()
    for i, c in enumerate(s.t.checks):
        p = f"checks[{i}]"
        if c.from_ not in namespaces:
            s.fail(f"{p}.from", f"{c.from_!r} is not a namespace of this lab"
                   + (f"; namespaces are {', '.join(namespaces)}" if namespaces else ""))
        if c.tcp is not None and c.udp is not None:
            s.fail(f"{p}.udp", "a check probes one of tcp and udp, not both")
        if c.source is not None and c.expect == "blocked":
            s.fail(f"{p}.source", "only a reachable check can name the source the far end sees")
        if c.source is not None and c.source.version != c.to.version:
            s.fail(f"{p}.source", f"{c.source} is IPv{c.source.version} but the check goes to "
                   f"IPv{c.to.version} address {c.to}; the far end sees a source of the same family")
