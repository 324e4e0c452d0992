"""Links (interfaces) over netlink: read, create veth pairs and bridges, configure, delete.

Every function takes an open IPRoute handle for the namespace it works in
(see netns.open_rtnl). Veth pairs are created with both ends directly in
their namespaces: no end ever appears in the namespace natns runs in unless
it is meant to (``uplink: host``).
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelError
from ..state import LinkState
from .nsexec import ns_path

IFF_UP = 0x1


def _kind(msg) -> str:
    info = msg.get_attr("IFLA_LINKINFO")
    if not info:
        return "loopback" if msg.get_attr("IFLA_IFNAME") == "lo" else "unknown"
    return info.get_attr("IFLA_INFO_KIND") or "unknown"


def dump(ipr: IPRoute) -> dict[str, LinkState]:
    """All links of the namespace with their IPv4 addresses, by name (lo included)."""
    msgs = list(ipr.get_links())
    by_index = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr(family=2):
        addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    out: dict[str, LinkState] = {}
    for m in msgs:
        name = m.get_attr("IFLA_IFNAME")
        master = m.get_attr("IFLA_MASTER")
        out[name] = LinkState(
            name=name,
            kind=_kind(m),
            alias=m.get_attr("IFLA_IFALIAS"),
            master=by_index.get(master) if master else None,
            addresses=tuple(sorted(addrs.get(m["index"], []))),
            mtu=m.get_attr("IFLA_MTU"),
            up=bool(m["flags"] & IFF_UP),
            index=m["index"],
            peer_name=None,
        )
    return out


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise KernelError(f"link {name} not found")
    return found[0]


def create_bridge(ipr: IPRoute, name: str) -> None:
    """Create bridge `name` (like `ip link add NAME type bridge`)."""
    try:
        ipr.link("add", ifname=name, kind="bridge")
    except NetlinkError as exc:
        raise KernelError(f"ip link add {name} type bridge: {exc.args[1] if len(exc.args) > 1 else exc}") from None


def create_veth(ipr: IPRoute, name: str, peer_ns: str | None, peer_name: str) -> None:
    """Create veth `name` here with its peer `peer_name` directly in `peer_ns`.

    `peer_ns` None puts the peer in the namespace natns runs in.
    """
    fd = os.open(ns_path(peer_ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer_name, "net_ns_fd": fd})
    except NetlinkError as exc:
        raise KernelError(
            f"ip link add {name} type veth peer name {peer_name} netns {peer_ns or '(self)'}: "
            f"{exc.args[1] if len(exc.args) > 1 else exc}"
        ) from None
    finally:
        os.close(fd)


def configure(ipr: IPRoute, name: str, *, alias: str | None = None, master: str | None | bool = False,
              mtu: int | None = None, up: bool | None = None) -> None:
    """Set alias, bridge master (None: no master; False: leave), MTU and state of `name`."""
    idx = _index(ipr, name)
    kw: dict = {}
    if alias is not None:
        kw["ifalias"] = alias
    if master is None:
        kw["master"] = 0
    elif master:
        kw["master"] = _index(ipr, master)
    if mtu is not None:
        kw["mtu"] = mtu
    if up is not None:
        kw["state"] = "up" if up else "down"
    if not kw:
        return
    try:
        ipr.link("set", index=idx, **kw)
    except NetlinkError as exc:
        raise KernelError(f"ip link set {name} {kw}: {exc.args[1] if len(exc.args) > 1 else exc}") from None


def delete(ipr: IPRoute, name: str) -> None:
    """Delete link `name` (a veth takes its peer with it); no error if it is gone."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: already gone
            raise KernelError(f"ip link del {name}: {exc}") from None


def add_address(ipr: IPRoute, name: str, cidr: str) -> None:
    """Add address `cidr` (192.0.2.3/24) to link `name`."""
    ip, plen = cidr.split("/")
    try:
        ipr.addr("add", index=_index(ipr, name), address=ip, prefixlen=int(plen))
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: already there
            raise KernelError(f"ip addr add {cidr} dev {name}: {exc}") from None


def del_address(ipr: IPRoute, name: str, cidr: str) -> None:
    """Remove address `cidr` from link `name`; no error if it is gone."""
    ip, plen = cidr.split("/")
    try:
        ipr.addr("del", index=_index(ipr, name), address=ip, prefixlen=int(plen))
    except NetlinkError as exc:
        if exc.code not in (99, 19):  # EADDRNOTAVAIL, ENODEV
            raise KernelError(f"ip addr del {cidr} dev {name}: {exc}") from None
