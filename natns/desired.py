"""From a validated topology to the desired kernel state (pure, no kernel access).

The wiring, per lab:

* internet namespace: a bridge (``internet.interface``, default ``ext``) with
  the internet's address, one port per router (``e-<router>``), and the
  internet hosts as /32 addresses on ``lo``;
* router namespace: the external interface (a veth whose other end is that
  port, or, with ``uplink: host``, a veth into the namespace natns runs in),
  a default route via the external gateway, ``net.ipv4.ip_forward=1``, one
  bridge per network holding the network's gateway address, one port per
  host on it (``tap-<host namespace>``), and SNAT per network on the
  external interface; ``net.bridge.bridge-nf-call-iptables=0`` (when
  br_netfilter is loaded): the bridges switch, the router routes, and a
  host reaches its own floating IP or port forward (docs/topology.md,
  "Routers and bridge netfilter");
* with ``uplink: host``, in the namespace natns runs in: the other end of
  the router's external veth (``nu-<lab>-<router>``) holding the gateway
  address, ``net.ipv4.ip_forward=1`` (the old value is kept in that link's
  alias and restored when the last uplink goes), and masquerade of the
  router's external network out of every other interface;
* host namespace: ``eth0`` (``hosts[].interface``) with the host's address
  and a default route via its network's gateway.
"""

from __future__ import annotations

from .marks import UPLINK, link_mark, ns_mark, uplink_mark, uplink_scope  # noqa: F401  (UPLINK, uplink_scope: re-exported)
from .topology import Topology
from .topology.names import host_port_name, router_port_name, uplink_name  # noqa: F401  (they live there now)
from .state import (
    DesiredNs,
    FirewallIntent,
    FloatingIp,
    Ingress6,
    InternalNet,
    PortForward,
    LabState,
    LinkState,
    RouteState,
    SnatRule,
)

DEFAULT = "0.0.0.0/0"
#: Off in routers: with it on, a packet DNATed back to the host it came from would be
#: switched out the bridge port it came in by (hairpin off) instead of routed.
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
DEFAULT6 = "::/0"
FORWARDING6 = "net.ipv6.conf.all.forwarding"
ACCEPT_DAD = "net.ipv6.conf.default.accept_dad"


def desired_state(t: Topology) -> LabState:
    """The complete state `natns up` converges to for topology `t`."""
    lab = LabState(lab=t.name, backend=t.backend)
    # Asked once, and each router's networks, floating IPs and port forwards grouped once:
    # asked per router they made this quadratic (0.4 s of a no-op `up` at 500 routers).
    lab_v6 = t.has_v6
    networks_of: dict[str, list] = {}
    for n in t.networks:
        networks_of.setdefault(n.router, []).append(n)
    floating_of: dict[str, list] = {}
    for f in t.floating_ips:
        floating_of.setdefault(f.router, []).append(f)
    forwards_of: dict[str, list] = {}
    for pf in t.port_forwards:
        forwards_of.setdefault(pf.router, []).append(pf)

    def ns(name: str, role: str) -> DesiredNs:
        st = DesiredNs(name=name, mark=ns_mark(t.name, role, name), role=role)
        if lab_v6:  # links made without duplicate address detection: usable at once
            st.sysctls[ACCEPT_DAD] = "0"
        lab.namespaces[name] = st
        return st

    inet = None
    if t.internet:
        i = t.internet
        inet = ns(i.namespace, "internet")
        inet.links[i.interface] = LinkState(
            name=i.interface, kind="bridge", alias=link_mark(t.name, "internet"),
            addresses=tuple(str(a) for a in (i.address, i.address6) if a is not None),
        )
        inet.loopback_addresses = tuple(sorted(f"{h}/{h.max_prefixlen}" for h in i.hosts))

    for r in t.routers:
        rt = ns(r.ns, "router")
        ext = r.external
        gw = ext.gateway or (t.internet.address.ip if t.internet else None)
        gw6 = ext.gateway6 or (t.internet.address6.ip if t.internet and t.internet.address6 else None)
        ext_addrs = tuple(str(a) for a in (ext.address, ext.address6) if a is not None)
        if ext.uplink == "internet":
            port = router_port_name(r.name)
            rt.links[ext.interface] = LinkState(
                name=ext.interface, kind="veth", alias=link_mark(t.name, f"external {r.name}"),
                peer_ns=inet.name, peer_name=port, addresses=ext_addrs, mtu=ext.mtu,
            )
            inet.links[port] = LinkState(
                name=port, kind="veth", alias=link_mark(t.name, f"port {r.name}"),
                peer_ns=rt.name, peer_name=ext.interface, master=t.internet.interface, mtu=ext.mtu,
            )
        else:
            up = uplink_name(t.name, r.name)
            rt.links[ext.interface] = LinkState(
                name=ext.interface, kind="veth", alias=link_mark(t.name, f"external {r.name}"),
                peer_ns=None, peer_name=up, addresses=ext_addrs, mtu=ext.mtu,
            )
            host = lab.host or DesiredNs(name=None, mark=None, role="host")
            lab.host = host
            up_addrs = (f"{gw}/{ext.address.network.prefixlen}",)
            if ext.address6 is not None:
                up_addrs += (f"{gw6}/{ext.address6.network.prefixlen}",)
            host.links[up] = LinkState(
                name=up, kind="veth", alias=uplink_mark(t.name, r.name),
                peer_ns=rt.name, peer_name=ext.interface,
                addresses=up_addrs, mtu=ext.mtu,
            )
            host.sysctls["net.ipv4.ip_forward"] = "1"
            rules = host.firewall.snat if host.firewall else ()
            rules6 = host.firewall.snat6 if host.firewall else ()
            if ext.address6 is not None:
                # IPv6 through the host: forwarding on (restored as ip_forward is); a routed
                # prefix is routed to the router here (the upstream must route it to the
                # host: see routed_via_host); NAT66 is masqueraded again out of the host.
                host.sysctls[FORWARDING6] = "1"
                if r.snat6 == "masquerade":
                    rules6 += (SnatRule(network=f"uplink {r.name}", source=str(ext.address6.network),
                                        out_iface=up, out_negate=True),)
                else:
                    host.routes = tuple(sorted(host.routes + tuple(
                        RouteState(dst=str(n.cidr6), gateway=str(ext.address6.ip))
                        for n in networks_of.get(r.name, ()) if n.cidr6 is not None),
                        key=lambda x: (x.dst, x.gateway or "")))
            host.firewall = FirewallIntent(
                lab=t.name, namespace="host", role="uplink", scope=uplink_scope(t.name),
                snat=rules + (SnatRule(network=f"uplink {r.name}", source=str(ext.address.network),
                                       out_iface=up, out_negate=True),),
                v6=bool(rules6), snat6=rules6,
            )
        rt.routes = (RouteState(dst=DEFAULT, gateway=str(gw)),)
        rt.sysctls["net.ipv4.ip_forward"] = "1"
        rt.sysctls[BRIDGE_NF] = "0"
        if ext.address6 is not None:
            rt.routes = tuple(sorted(rt.routes + (RouteState(dst=DEFAULT6, gateway=str(gw6)),),
                                     key=lambda x: (x.dst, x.gateway or "", x.dev or "")))
            rt.sysctls[FORWARDING6] = "1"
        snat = []
        snat6 = []
        for n in networks_of.get(r.name, ()):
            br = n.router_interface
            gws = ((f"{n.gateway}/{n.cidr.prefixlen}",) if n.cidr is not None else ()) \
                + ((f"{n.gateway6}/{n.cidr6.prefixlen}",) if n.cidr6 is not None else ())
            rt.links[br] = LinkState(
                name=br, kind="bridge", alias=link_mark(t.name, f"network {n.name}"),
                addresses=gws, mtu=n.mtu,
            )
            for h in n.hosts:
                hs = ns(h.namespace, "host")
                port = host_port_name(h.namespace)
                rt.links[port] = LinkState(
                    name=port, kind="veth", alias=link_mark(t.name, f"port {h.namespace}"),
                    peer_ns=hs.name, peer_name=h.interface, master=br, mtu=n.mtu,
                )
                addrs, routes = [], []
                if h.address is not None:
                    addrs.append(f"{h.address}/{n.cidr.prefixlen}")
                    routes.append(RouteState(dst=DEFAULT, gateway=str(n.gateway)))
                if h.address6 is not None:
                    addrs.append(f"{h.address6}/{n.cidr6.prefixlen}")
                    routes.append(RouteState(dst=DEFAULT6, gateway=str(n.gateway6)))
                hs.links[h.interface] = LinkState(
                    name=h.interface, kind="veth", alias=link_mark(t.name, f"host {n.name}"),
                    peer_ns=rt.name, peer_name=port,
                    addresses=tuple(addrs), mtu=n.mtu,
                )
                hs.routes = tuple(sorted(routes, key=lambda x: x.dst))
            if n.cidr6 is not None and r.snat6 == "masquerade":
                snat6.append(SnatRule(network=n.name, source=str(n.cidr6), out_iface=ext.interface))
            elif n.cidr6 is not None and inet is not None and ext.uplink == "internet":
                # Routed (as Neutron): the emulated internet routes the prefix to the router.
                inet.routes = tuple(sorted(inet.routes + (RouteState(dst=str(n.cidr6), gateway=str(ext.address6.ip)),),
                                           key=lambda x: (x.dst, x.gateway or "")))
            if n.cidr is None:
                continue
            if r.snat != "off":
                snat.append(SnatRule(
                    network=n.name, source=str(n.cidr), out_iface=ext.interface,
                    to=None if r.snat == "masquerade" else str(r.snat),
                ))
        floating = tuple(FloatingIp(str(f.address), str(f.host)) for f in floating_of.get(r.name, ()))
        ext_link = rt.links[ext.interface]
        # Floating IPs are /32s on the external interface, as in Neutron: the
        # router answers ARP for them and owns them for SNAT.
        ext_link.addresses = tuple(sorted(ext_link.addresses + tuple(f"{f.address}/32" for f in floating)))
        forwards = tuple(
            PortForward(pf.protocol, str(ext.address.ip), pf.port[0], pf.port[1], str(pf.to[0]), pf.to_port)
            for pf in forwards_of.get(r.name, ())
        )
        internal = tuple(InternalNet(n.name, n.router_interface, str(n.cidr))
                         for n in networks_of.get(r.name, ()) if n.cidr is not None)
        v6: dict = {}
        if lab_v6:
            v6 = dict(
                v6=True, external_address6=str(ext.address6.ip) if ext.address6 else None,
                internal6=tuple(InternalNet(n.name, n.router_interface, str(n.cidr6))
                                for n in networks_of.get(r.name, ()) if n.cidr6 is not None),
                snat6=tuple(snat6),
                ingress6=tuple(Ingress6(g.protocol, str(g.to), g.port[0], g.port[1]) for g in r.ingress),
            )
        rt.firewall = FirewallIntent(
            lab=t.name, namespace=rt.name, role="router", snat=tuple(snat),
            external_iface=ext.interface, external_address=str(ext.address.ip),
            internal=internal, floating=floating, forwards=forwards, isolate=r.isolation, **v6,
        )
    return lab




def routed_via_host(t: Topology) -> list[tuple[str, str, str]]:
    """The IPv6 prefixes that leave through the host untranslated (``uplink: host`` and
    ``snat6: off``): (router, prefix, router's external address6). The host routes each
    to its router; the host's upstream must route it to the host (see docs/ipv6.md)."""
    return [(r.name, str(n.cidr6), str(r.external.address6.ip))
            for r in t.routers if r.external.uplink == "host" and r.external.address6 is not None
            and r.snat6 == "off"
            for n in t.networks if n.router == r.name and n.cidr6 is not None]
