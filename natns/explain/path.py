"""Work out the path a packet takes, from the kernel's state alone.

`walk(ns, addr)` starts in namespace `ns` and asks the kernel, namespace by
namespace, what it would do with a packet for `addr`: the route lookup
(`ip route get`, over netlink), the interface the packet leaves by, and where
that interface leads. No topology file is read, so it works on any namespaces
under /run/netns: natns's own labs, ones made by hand with `ip netns add`,
Docker's or Neutron's once they are linked there.

How the next namespace is found:

* a veth leads to its peer: the peer's ifindex is IFLA_LINK, its namespace
  IFLA_LINK_NETNSID, which is mapped to a name by asking, inside the
  namespace, for the netns id of each /run/netns entry (RTM_GETNSID; this
  never assigns an id);
* a bridge (on either side) leads to the port whose veth peer sits in the
  namespace that owns the next-hop address; the packet crosses the bridge's
  namespace at layer 2 only, recorded as a hop with `bridge` set;
* a veth whose peer is in the namespace natns runs in ends the walk at a hop
  named "(host)", which is never looked into.

Netfilter is not modelled here (that is `doctor`'s job): the route used is
the one the kernel's input lookup gives (so policy routing by incoming
interface counts) and, where that lookup refuses (forwarding off, rp_filter,
martian source), the plain output lookup.

Everything here only reads; the module never changes kernel state.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, field

from ..addresses import ip_address
from ..errors import UserError
from ..kernel import netns, rtnl
from ..kernel.nsexec import NETNS_DIR, ns_path
from ..kernel.rtnl import RtnlError

#: What route lookups raise (the kernel's refusal; `.code` is the errno). Also a
#: pyroute2 NetlinkError, which callers written against IPRoute catch.
NetlinkError = RtnlError

#: Name of the hop that stands for the namespace natns runs in.
HOST = "(host)"

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RTM_F_LOOKUP_TABLE = rtnl.RTM_F_LOOKUP_TABLE  # report the table the lookup used (as `ip route get` asks)
RTM_F_FIB_MATCH = rtnl.RTM_F_FIB_MATCH
NSID_NOT_ASSIGNED = rtnl.NSID_NOT_ASSIGNED

RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST = 1, 2, 3
RTN_NAMES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
             6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
PROTO_NAMES = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 16: "dhcp"}
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}


@dataclass
class Hop:
    """One namespace the packet passes."""

    ns: str                 # namespace name as under /run/netns ("(host)" for natns's own)
    in_iface: str | None    # interface the packet arrives on (None at the source)
    out_iface: str | None   # interface it leaves by (None when delivered locally / dropped)
    route: str | None       # the route used, in `ip route` words
    gateway: str | None     # next-hop address (None: directly connected)
    src: str | None         # source address the kernel chooses (first hop)
    local: bool             # the destination is an address of this namespace: delivered here
    forwards: bool          # the packet is forwarded here (neither originated nor delivered)
    # Additions (all optional):
    in_port: str | None = None    # bridge port it arrived by, when in_iface is a bridge
    out_port: str | None = None   # bridge port it leaves by, when out_iface is a bridge
    bridge: str | None = None     # set on a hop crossed at layer 2 only: the bridge it crossed
    table: int | None = None      # routing table of the route used
    lookup: str | None = None     # "input" or "output": which route lookup gave `route`
    lookup_error: str | None = None  # why the input lookup refused, e.g. "No route to host"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Path:
    """The walk from `src_ns` towards `dst`."""

    src_ns: str
    dst: str
    hops: list[Hop]
    complete: bool          # reached a namespace that owns dst
    stop: str | None        # why the walk stopped early
    stop_code: str | None = None  # machine form of `stop`, see STOP_CODES

    @property
    def last(self) -> Hop | None:
        return self.hops[-1] if self.hops else None

    def namespaces(self) -> list[str]:
        """Namespaces on the path, in order, without repeats and without "(host)"."""
        return list(dict.fromkeys(h.ns for h in self.hops if h.ns != HOST))

    def to_json(self) -> dict:
        return {"src_ns": self.src_ns, "dst": self.dst, "complete": self.complete, "stop": self.stop,
                "stop_code": self.stop_code, "hops": [h.to_json() for h in self.hops]}


#: Values of Path.stop_code.
STOP_CODES = {
    "no-route": "no route to the destination in the last namespace",
    "unreachable-route": "the route found is unreachable/prohibit/blackhole",
    "no-neighbour": "nothing on the out interface's link owns the next-hop address",
    "no-peer": "the out interface is a veth whose peer is not in a namespace under /run/netns",
    "host": "a veth leads to the namespace natns runs in, which is not inspected",
    "unsupported-link": "the out interface is neither a veth nor a bridge",
    "loop": "the packet comes back to a namespace and interface it passed",
    "max-hops": "more than max_hops hops",
    "broadcast": "the destination is a broadcast address here",
}


# --------------------------------------------------------------------------
# Reading one namespace


@dataclass
class LinkInfo:
    """One interface of a namespace, as read over netlink."""

    index: int
    name: str
    kind: str
    up: bool            # administratively up (IFF_UP)
    lower_up: bool      # carrier (IFF_LOWER_UP)
    operstate: str
    mtu: int | None
    master: int | None  # ifindex of the bridge it is a port of
    peer_index: int | None   # IFLA_LINK (veth: the peer's ifindex)
    peer_nsid: int | None    # IFLA_LINK_NETNSID (None: same namespace)
    mac: str | None
    addresses: list[tuple[str, int]] = field(default_factory=list)  # (ip, prefixlen): IPv4, then IPv6
    conf: dict = field(default_factory=dict)  # per-interface IPv4 devconf (forwarding, rp_filter, ...)
    hairpin: bool | None = None  # a bridge port's hairpin mode (None: not a bridge port)
    #: IPv6 address -> its ifa_flags (rtnl.IFA_F_DADFAILED: duplicate address detection failed)
    addr_flags: dict = field(default_factory=dict)

    def networks(self, version: int | None = None) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The link's addresses with their prefixes (of IP `version` 4 or 6 only, when given)."""
        out = [ipaddress.ip_interface(f"{a}/{p}") for a, p in self.addresses]
        return [n for n in out if version is None or n.version == version]


@dataclass
class NsView:
    """Links and IPv4 addresses of one namespace."""

    name: str
    links: dict[int, LinkInfo]
    inode: int | None = None
    _nsids: dict[int, str] | None = None

    def by_name(self, name: str | None) -> LinkInfo | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None

    def owns(self, addr: str) -> LinkInfo | None:
        """The link holding address `addr`, or None."""
        for link in self.links.values():
            if any(a == addr for a, _ in link.addresses):
                return link
        return None

    def addresses(self) -> set[str]:
        return {a for link in self.links.values() for a, _ in link.addresses}

    def ports(self, bridge: LinkInfo) -> list[LinkInfo]:
        """The ports of `bridge`, by ifindex."""
        return sorted((lk for lk in self.links.values() if lk.master == bridge.index), key=lambda x: x.index)

    def link_for(self, addr: str) -> LinkInfo | None:
        """The link with a connected subnet containing `addr` (longest prefix)."""
        ip = ipaddress.ip_address(addr)
        best = None
        for link in self.links.values():
            for net in link.networks(ip.version):
                if ip in net.network and (best is None or net.network.prefixlen > best[1]):
                    best = (link, net.network.prefixlen)
        return best[0] if best else None

    def nsid_names(self) -> dict[int, str]:
        """netns id (as seen from this namespace) -> namespace name; HOST for natns's own."""
        if self._nsids is None:
            self._nsids = _nsid_map(self.name)
        return self._nsids


def _kind(link: rtnl.LinkDetail) -> str:
    if not link.kind:
        return "loopback" if link.name == "lo" else "unknown"
    return link.kind


def read_ns(ns: str) -> NsView:
    """Links, addresses and per-interface settings of namespace `ns` (one socket, two dumps)."""
    with rtnl.open_in(ns) as h:
        details = h.link_details()
        addrs = h.addrs(rtnl.AF_UNSPEC)  # IPv4 and global IPv6 (a v4-only namespace: as before)
    links: dict[int, LinkInfo] = {}
    for m in details:
        links[m.index] = LinkInfo(
            index=m.index,
            name=m.name,
            kind=_kind(m),
            up=bool(m.flags & IFF_UP),
            lower_up=bool(m.flags & IFF_LOWER_UP),
            operstate=m.operstate or "UNKNOWN",
            mtu=m.mtu,
            master=m.master or None,
            peer_index=m.peer_index,
            peer_nsid=m.peer_nsid,
            mac=m.mac,
            conf=m.inet_conf,
            hairpin=m.hairpin,
        )
    for a in sorted(addrs, key=lambda a: a.family):  # IPv4 first
        link = links.get(a.index)
        if link is not None:
            link.addresses.append((a.local or a.address, a.prefixlen))
            if a.family == rtnl.AF_INET6:
                link.addr_flags[a.address] = a.flags
    try:
        inode = os.stat(ns_path(ns)).st_ino
    except OSError:
        inode = None
    return NsView(ns, links, inode)


def _nsid_map(ns: str) -> dict[int, str]:
    """Inside `ns`, the netns id of every /run/netns entry and of natns's own namespace."""
    out: dict[int, str] = {}
    candidates = [(HOST, ns_path(None))] + [(n, os.path.join(NETNS_DIR, n)) for n in netns.list_names()]
    with rtnl.open_in(ns) as h:
        for name, path in candidates:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                nsid = h.nsid_of(fd)
            finally:
                os.close(fd)
            if nsid is None:
                continue
            out.setdefault(nsid, name)  # the host first: a /run/netns alias of it stays "(host)"
    return out


class _Views:
    """A cache of NsView per namespace for one walk (or one doctor run)."""

    def __init__(self):
        self._views: dict[str, NsView] = {}

    def get(self, ns: str) -> NsView:
        if ns not in self._views:
            self._views[ns] = read_ns(ns)
        return self._views[ns]


def veth_peer(view: NsView, link: LinkInfo, views: _Views | None = None) -> tuple[str | None, LinkInfo | None]:
    """(namespace, link) of the other end of veth `link`.

    The namespace is HOST when the peer is in the namespace natns runs in (its
    link is then not read: None), and None when the peer's namespace is not
    under /run/netns.
    """
    if link.kind != "veth" or not link.peer_index:
        return None, None
    if link.peer_nsid is None:
        peer_ns = view.name
    else:
        peer_ns = view.nsid_names().get(link.peer_nsid)
    if peer_ns is None:
        return None, None
    if peer_ns == HOST:
        return HOST, None
    pview = (views or _Views()).get(peer_ns)
    return peer_ns, pview.links.get(link.peer_index)


def _host_link_name(index: int | None) -> str | None:
    """The name of link `index` in the namespace natns runs in (read-only), or None."""
    iface, port = _host_link(index)
    return port or iface


def _host_link(index: int | None) -> tuple[str | None, str | None]:
    """(the interface the IP layer sees, the bridge port) for link `index` in the namespace natns
    runs in: a bridge port's packets are the bridge's at the IP layer (``-i br0``, not the port)."""
    if not index:
        return None, None
    try:
        with rtnl.open_in(None) as h:
            links = {ln.index: ln for ln in h.links()}
    except OSError:  # rtnl.RtnlError too
        return None, None
    ln = links.get(index)
    if ln is None:
        return None, None
    if ln.master and ln.master in links:
        return links[ln.master].name, ln.name
    return ln.name, None


def _named_host_link(host_link_name, host_link_master=None):
    """A `_host_link` from a snapshot's `host_link_name` (and `host_link_master`, when it has one)."""

    def get(index: int | None) -> tuple[str | None, str | None]:
        name = host_link_name(index)
        master = host_link_master(index) if host_link_master else None
        return (master, name) if master else (name, None)

    return get


def segment(ns: str, iface: str, views: _Views | None = None) -> list[tuple[str, LinkInfo]]:
    """Every (namespace, L3 interface) on the layer-2 segment of `iface` in `ns`.

    A veth reaches its peer; a bridge (or a bridge port) reaches the bridge
    itself and the peers of all its veth ports. Bridges inside bridges are
    followed. The namespace natns runs in is not entered.
    """
    views = views or _Views()
    seen: set[tuple[str, int]] = set()
    out: list[tuple[str, LinkInfo]] = []

    def visit(ns: str, link: LinkInfo | None) -> None:
        if link is None or (ns, link.index) in seen:
            return
        seen.add((ns, link.index))
        view = views.get(ns)
        if link.master and link.master in view.links:
            visit(ns, view.links[link.master])
            if link.kind == "veth":
                pns, plink = veth_peer(view, link, views)
                if pns and pns != HOST:
                    visit(pns, plink)
            return
        out.append((ns, link))
        if link.kind == "bridge":
            for port in view.ports(link):
                visit(ns, port)
        elif link.kind == "veth":
            pns, plink = veth_peer(view, link, views)
            if pns and pns != HOST:
                visit(pns, plink)

    view = views.get(ns)
    visit(ns, view.by_name(iface))
    return out


def find_namespace_owning(addr: str, among: list[str] | None = None) -> list[str]:
    """Namespaces under /run/netns (or `among`) that hold `addr` on an interface."""
    found = []
    for ns in among if among is not None else netns.list_names():
        try:
            if read_ns(ns).owns(addr):
                found.append(ns)
        except (FileNotFoundError, OSError):
            continue
    return found


# --------------------------------------------------------------------------
# Route lookups


@dataclass
class RouteLookup:
    """The answer to one `ip route get`."""

    type: int
    oif: int | None
    gateway: str | None
    prefsrc: str | None
    table: int | None
    text: str | None  # the matched FIB entry in `ip route` words


def _err_text(exc) -> str:
    """What the kernel said about a refused lookup: "No route to host" (or its extended ack)."""
    if isinstance(exc, RtnlError):
        return exc.reason
    return exc.args[1] if len(exc.args) > 1 else os.strerror(exc.code)


def err_text(exc) -> str:
    """What the kernel said about a refused lookup: "No route to host" (or its extended ack)."""
    return _err_text(exc)


def route_text(msg, names: dict[int, str], *, metric: bool = True) -> str:
    """A route message (pyroute2's rtmsg) as `ip route` prints it: "default via 192.0.2.3 dev eth0".

    Without `metric`, the route's metric is left out."""
    parts = []
    rtype = msg["type"]
    if rtype != RTN_UNICAST:
        parts.append(RTN_NAMES.get(rtype, str(rtype)))
    dst = msg.get_attr("RTA_DST")
    full = 128 if msg["family"] == rtnl.AF_INET6 else 32
    parts.append(f"{dst}/{msg['dst_len']}" if dst and msg["dst_len"] < full else (dst or "default"))
    gw = msg.get_attr("RTA_GATEWAY")
    if gw:
        parts += ["via", gw]
    oif = msg.get_attr("RTA_OIF")
    if oif:
        parts += ["dev", names.get(oif, f"if{oif}")]
    mp = msg.get_attr("RTA_MULTIPATH")
    if mp:
        for nh in mp:
            parts.append("nexthop")
            if nh.get_attr("RTA_GATEWAY"):
                parts += ["via", nh.get_attr("RTA_GATEWAY")]
            parts += ["dev", names.get(nh["oif"], f"if{nh['oif']}")]
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    if table != 254:  # as `ip route` does (the kernel reports local routes in 254 too, while tables are merged)
        parts += ["table", TABLE_NAMES.get(table, str(table))]
    proto = msg["proto"]
    if proto not in (3,):
        parts += ["proto", PROTO_NAMES.get(proto, str(proto))]
    if msg["scope"] == 253:
        parts += ["scope", "link"]
    elif msg["scope"] == 254:
        parts += ["scope", "host"]
    src = msg.get_attr("RTA_PREFSRC")
    if src:
        parts += ["src", src]
    prio = msg.get_attr("RTA_PRIORITY")
    if prio and metric:
        parts += ["metric", str(prio)]
    return " ".join(parts)


def _names(h: rtnl.Rtnl, msgs, names: dict[int, str] | None) -> dict[int, str]:
    """Names of the links the route messages `msgs` name (their oif, their nexthops'):
    from `names` when the caller has them, else asked for by index, one by one."""
    if names is not None:
        return names
    wanted = set()
    for m in msgs:
        if m.get_attr("RTA_OIF"):
            wanted.add(m.get_attr("RTA_OIF"))
        for nh in m.get_attr("RTA_MULTIPATH") or ():
            wanted.add(nh["oif"])
    out = {}
    for i in wanted:
        link = h.link_by_index(i)
        if link is not None:
            out[i] = link.name
    return out


def _iif_index(h: rtnl.Rtnl, ns: str, iif: str, names: dict[int, str] | None) -> int:
    if names is not None:
        found = next((i for i, n in names.items() if n == iif), None)
    else:
        found = h.index(iif)
    if found is None:
        raise RtnlError(rtnl.ENODEV, f"no interface {iif} in {ns}")
    return found


def route_get(ns: str, dst: str, *, src: str | None = None, iif: str | None = None,
              names: dict[int, str] | None = None) -> RouteLookup:
    """`ip route get DST [from SRC iif IIF]` in `ns`, with the matched route's text.

    `names` (ifindex -> name, e.g. from a NsView the caller has) saves asking
    for the names of the links the answer names. Raises RtnlError (a
    NetlinkError) as the kernel answers (ENETUNREACH: no route;
    EHOSTUNREACH: forwarding off or an unreachable route; EXDEV: rp_filter;
    EINVAL: martian source; EACCES: prohibit).
    """
    with rtnl.open_in(ns) as h:
        kw: dict = {}
        if iif is not None:
            kw["iif"] = _iif_index(h, ns, iif, names)
            if src:
                kw["src"] = src
        res = h.route_get(dst, **kw)
        text = None
        try:
            fib = h.route_get(dst, fibmatch=True, **kw)
            text = route_text(fib, _names(h, [fib], names))
        except RtnlError:
            pass
    return RouteLookup(
        type=res["type"],
        oif=res.get_attr("RTA_OIF"),
        gateway=res.get_attr("RTA_GATEWAY"),
        prefsrc=res.get_attr("RTA_PREFSRC"),
        table=res.get_attr("RTA_TABLE") or res["table"],
        text=text,
    )


def fib_match(ns: str, dst: str, *, src: str | None = None, iif: str | None = None,
              metric: bool = True) -> tuple[str | None, str | None]:
    """(the route `ip route get fibmatch DST [from SRC] [iif IIF]` shows in `ns`, None) or
    (None, why the kernel refused: "No route to host", ...). One lookup."""
    try:
        with rtnl.open_in(ns) as h:
            kw: dict = {}
            if iif is not None:
                kw["iif"] = _iif_index(h, ns, iif, None)
            if src:
                kw["src"] = src
            fib = h.route_get(dst, fibmatch=True, **kw)
            return route_text(fib, _names(h, [fib], None), metric=metric), None
    except RtnlError as exc:
        return None, _err_text(exc)


def fib_match_text(ns: str, dst: str) -> str | None:
    """The route `ip route get fibmatch DST` shows in `ns` (also for unreachable routes), or None."""
    return fib_match(ns, dst)[0]


def routes_text(ns: str, table: int = 254, family: int = rtnl.AF_INET) -> list[str]:
    """The routes of `table` (main) in `ns` as `ip route` prints them (`ip -6 route` with
    `family` AF_INET6)."""
    with rtnl.open_in(ns) as h:
        msgs = h.route_dump(table=table, family=family)
        names = {ln.index: ln.name for ln in h.links()}
    return [route_text(m, names) for m in msgs]


# --------------------------------------------------------------------------
# The walk


def check_address(addr: str) -> str:
    """`addr` as a canonical IPv4 or IPv6 address, or UserError."""
    try:
        return str(ip_address(str(addr).strip()))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_namespace(ns: str) -> str:
    """`ns` if it names a namespace under /run/netns, or UserError."""
    if not ns or "/" in ns or ns in (".", "..") or not netns.exists(ns):
        raise UserError(f"no network namespace {ns!r} under {NETNS_DIR} (see `ip netns list`)")
    return ns


def _cross(views: _Views, ns: str, link: LinkInfo, nh: str, hops: list[Hop], depth: int = 0,
           host_link=_host_link) -> tuple[str, str, str | None] | tuple[None, str, str]:
    """Follow `link` (a veth, in `ns`) to the namespace that receives a frame for `nh`.

    Returns (next_ns, in_iface, in_port) or (None, stop_code, stop_text).
    Layer-2 hops through bridges are appended to `hops`.
    """
    view = views.get(ns)
    if link.kind != "veth":
        return None, "unsupported-link", (
            f"{link.name} in {ns} is a {link.kind} interface; the walk follows veth pairs and bridges only")
    pns, plink = veth_peer(view, link, views)
    if pns == HOST:
        iface, port = host_link(link.peer_index)
        hops.append(Hop(HOST, iface, None, None, None, None, False, False, in_port=port))
        return None, "host", (f"{link.name} in {ns} leads to the namespace natns runs in "
                              f"(peer ifindex {link.peer_index}); it is not inspected")
    if pns is None or plink is None:
        return None, "no-peer", (f"the peer of {link.name} in {ns} is in a namespace not under {NETNS_DIR} "
                                 f"(netnsid {link.peer_nsid}, ifindex {link.peer_index})")
    pview = views.get(pns)
    if plink.master and plink.master in pview.links:
        bridge = pview.links[plink.master]
        if pview.owns(nh):
            return pns, bridge.name, plink.name
        if depth > 4:
            return None, "loop", f"bridges nested too deep at {bridge.name} in {pns}"
        port = bridge_port_to(views, pns, bridge, nh, exclude=plink.index)
        if port is None:
            return None, "no-neighbour", (
                f"next hop {nh} is not an address of {pns} nor of any namespace behind "
                f"a port of bridge {bridge.name} there")
        hops.append(Hop(pns, plink.name, port.name, None, None, None, False, False, bridge=bridge.name))
        return _cross(views, pns, port, nh, hops, depth + 1, host_link)
    if pview.owns(nh):
        return pns, plink.name, None
    have = ", ".join(f"{a}/{p}" for a, p in plink.addresses) or "no address"
    return None, "no-neighbour", (
        f"next hop {nh} is not an address of {pns}, at the other end of {link.name} "
        f"({plink.name} there has {have})")


def _owner_behind(views: _Views, ns: str, link: LinkInfo, nh: str, depth: int = 0) -> bool:
    """True if the namespace reached through veth port `link` (maybe via more bridges) owns `nh`."""
    view = views.get(ns)
    pns, plink = veth_peer(view, link, views)
    if not pns or pns == HOST or plink is None:
        return False
    pview = views.get(pns)
    if pview.owns(nh):
        return True
    if plink.master and plink.master in pview.links and depth < 4:
        bridge = pview.links[plink.master]
        return any(_owner_behind(views, pns, p, nh, depth + 1)
                   for p in pview.ports(bridge) if p.index != plink.index and p.kind == "veth")
    return False


def bridge_port_to(views: _Views, ns: str, bridge: LinkInfo, nh: str, exclude: int | None = None,
                   mac: str | None = None) -> LinkInfo | None:
    """The port of `bridge` (in `ns`) that leads to a namespace owning `nh`.

    With several candidates (a duplicate address), the one whose far end has
    MAC `mac` (the neighbour entry's) wins, else the lowest ifindex.
    """
    view = views.get(ns)
    cands = [p for p in view.ports(bridge)
             if p.index != exclude and p.kind == "veth" and _owner_behind(views, ns, p, nh)]
    if mac and len(cands) > 1:
        for p in cands:
            _, plink = veth_peer(view, p, views)
            if plink is not None and plink.mac == mac:
                return p
    return cands[0] if cands else None


def neighbour(ns: str, addr: str, iface: str | None = None) -> dict | None:
    """The neighbour entry for `addr` in `ns`: {"state", "lladdr", "dev"}, or None."""
    states = rtnl.NUD_NAMES
    with rtnl.open_in(ns) as h:
        for n in h.neighbours(rtnl.AF_INET6 if ":" in addr else rtnl.AF_INET):
            if n.dst != addr:
                continue
            link = h.link_by_index(n.index)
            dev = link.name if link else None
            if iface and dev != iface:
                continue
            return {"state": states.get(n.state, str(n.state)), "lladdr": n.lladdr, "dev": dev}
    return None


def walk(src_ns: str, dst: str, *, max_hops: int = 16, in_iface: str | None = None,
         src: str | None = None, snapshot=None) -> Path:
    """The path a packet from namespace `src_ns` to address `dst` takes.

    Read-only. With `in_iface` (and optionally `src`, the packet's source),
    the walk starts as if the packet had arrived in `src_ns` on `in_iface`
    and is forwarded there (used for the reply path after a NAT router).
    Raises UserError if `src_ns` does not exist or `dst` is no IP address (IPv4 or IPv6).
    With `snapshot` (an explain.snapshot.Snapshot), everything is read from it
    instead of the kernel.
    """
    if snapshot is None:
        check_namespace(src_ns)
        views, route_get_, fib_match_text_, neighbour_ = _Views(), route_get, fib_match_text, neighbour
        host_link = _host_link
    else:
        if not snapshot.has_namespace(src_ns):
            raise UserError(f"no network namespace {src_ns!r} under {NETNS_DIR} (see `ip netns list`)")
        views, route_get_, fib_match_text_, neighbour_ = (snapshot, snapshot.route_get, snapshot.fib_match_text,
                                                          snapshot.neighbour)
        host_link = _named_host_link(snapshot.host_link_name, getattr(snapshot, "host_link_master", None))
    dst = check_address(dst)
    hops: list[Hop] = []
    path = Path(src_ns, dst, hops, complete=False, stop=None)
    ns, iif, in_port, pkt_src = src_ns, in_iface, None, src
    seen: set[tuple[str, str | None]] = set()
    originated = in_iface is None

    def stop(code: str, text: str) -> Path:
        path.stop_code, path.stop = code, text
        return path

    for _ in range(max_hops):
        if (ns, iif) in seen:
            return stop("loop", f"routing loop: the packet comes back to {ns} on {iif}")
        seen.add((ns, iif))
        view = views.get(ns)
        first = originated and not hops
        lookup_error = None
        how = "output"
        try:
            # the kernel's lookup takes the names of links the walk already read
            named = {"names": {i: lk.name for i, lk in view.links.items()}} if snapshot is None else {}
            if first:
                res = route_get_(ns, dst, **named)
            else:
                try:
                    res = route_get_(ns, dst, src=pkt_src, iif=iif, **named)
                    how = "input"
                except RtnlError as exc:
                    lookup_error = _err_text(exc)
                    res = route_get_(ns, dst, **named)
        except RtnlError as exc:
            text = fib_match_text_(ns, dst)
            hops.append(Hop(ns, iif, None, text, None, None, False, not first, in_port=in_port,
                            lookup=how, lookup_error=lookup_error))
            if exc.code == rtnl.ENETUNREACH or text is None:
                return stop("no-route", f"no route to {dst} in {ns}")
            return stop("unreachable-route", f"the route to {dst} in {ns} is `{text}`: {_err_text(exc)}")
        if res.type == RTN_LOCAL or view.owns(dst):
            hops.append(Hop(ns, iif, None, res.text, None, None, True, False, in_port=in_port,
                            table=res.table, lookup=how, lookup_error=lookup_error))
            path.complete = True
            return path
        if res.type == RTN_BROADCAST:
            hops.append(Hop(ns, iif, None, res.text, None, None, False, False, in_port=in_port,
                            table=res.table, lookup=how))
            return stop("broadcast", f"{dst} is a broadcast address in {ns}")
        if res.type != RTN_UNICAST or not res.oif:
            hops.append(Hop(ns, iif, None, res.text, None, None, False, not first, in_port=in_port,
                            table=res.table, lookup=how))
            return stop("unreachable-route",
                        f"the route to {dst} in {ns} is `{res.text}` ({RTN_NAMES.get(res.type, res.type)})")
        out = view.links.get(res.oif)
        nh = res.gateway or dst
        if first and pkt_src is None:
            pkt_src = res.prefsrc
        hop = Hop(ns, iif, out.name if out else f"if{res.oif}", res.text, res.gateway,
                  res.prefsrc if first else None, False, not first, in_port=in_port,
                  table=res.table, lookup=how, lookup_error=lookup_error)
        hops.append(hop)
        if out is None:
            return stop("unsupported-link", f"interface {res.oif} in {ns} not found")
        link = out
        if out.kind == "bridge":
            nmac = None
            try:
                ne = neighbour_(ns, nh, out.name)
                nmac = ne["lladdr"] if ne else None
            except RtnlError:
                pass
            port = bridge_port_to(views, ns, out, nh, mac=nmac)
            if port is None:
                return stop("no-neighbour", f"next hop {nh} is not an address of any namespace behind a port "
                                            f"of bridge {out.name} in {ns}")
            hop.out_port = port.name
            link = port
        nxt = _cross(views, ns, link, nh, hops, host_link=host_link)
        if nxt[0] is None:
            return stop(nxt[1], nxt[2])
        ns, iif, in_port = nxt
    return stop("max-hops", f"more than {max_hops} hops; stopped in {ns}")


__all__ = [
    "HOST",
    "Hop",
    "LinkInfo",
    "NsView",
    "Path",
    "check_address",
    "check_namespace",
    "find_namespace_owning",
    "neighbour",
    "read_ns",
    "fib_match",
    "route_get",
    "routes_text",
    "segment",
    "veth_peer",
    "walk",
]
