"""Links (interfaces) over netlink: read, create veth pairs and bridges, configure, delete.

Every function takes an open netlink handle for the namespace it works in:
an `rtnl.Rtnl` (see rtnl.open_in; what observe and apply use), or a pyroute2
IPRoute, whose socket is then borrowed (see rtnl.wrap). Veth pairs are created with both ends directly in
their namespaces: no end ever appears in the namespace natns runs in unless
it is meant to (``uplink: host``).
"""

from __future__ import annotations

import os

from ..errors import KernelError
from ..state import LinkState
from . import rtnl
from .nsexec import ns_path
from .rtnl import EADDRNOTAVAIL, EEXIST, ENODEV, RtnlError

IFF_UP = 0x1


def dump(ipr) -> dict[str, LinkState]:
    """All links of the namespace with their IPv4 and (global) IPv6 addresses, by name (lo included).

    `ipr` is an `rtnl.Rtnl` (or a pyroute2 IPRoute) for the namespace.
    """
    h, close = rtnl.wrap(ipr)
    try:
        links = h.links()
        addrs: dict[int, list[str]] = {}
        for a in h.addrs(rtnl.AF_UNSPEC):
            addrs.setdefault(a.index, []).append(f"{a.address}/{a.prefixlen}")
    finally:
        if close:
            h.close()
    by_index = {m.index: m.name for m in links}
    out: dict[str, LinkState] = {}
    for m in links:
        out[m.name] = LinkState(
            name=m.name,
            kind=m.kind or ("loopback" if m.name == "lo" else "unknown"),
            alias=m.alias,
            master=by_index.get(m.master) if m.master else None,
            addresses=tuple(sorted(addrs.get(m.index, []))),
            mtu=m.mtu,
            up=bool(m.flags & IFF_UP),
            index=m.index,
            peer_name=None,
        )
    return out


def _why(exc: RtnlError) -> str:
    return exc.strerror or str(exc)


def _index(h: rtnl.Rtnl, name: str) -> int:
    found = h.index(name)
    if found is None:
        raise KernelError(f"link {name} not found")
    return found


class _Handle:
    """`with _Handle(ipr) as h`: an Rtnl for `ipr`, closed after if it was made for the call."""

    def __init__(self, ipr):
        self.h, self.close = rtnl.wrap(ipr)

    def __enter__(self) -> rtnl.Rtnl:
        return self.h

    def __exit__(self, *exc) -> None:
        if self.close:
            self.h.close()


def create_bridge(ipr, name: str) -> None:
    """Create bridge `name` (like `ip link add NAME type bridge`)."""
    with _Handle(ipr) as h:
        try:
            h.add_bridge(name)
        except RtnlError as exc:
            raise KernelError(f"ip link add {name} type bridge: {_why(exc)}") from None


def create_veth(ipr, name: str, peer_ns: str | None, peer_name: str) -> None:
    """Create veth `name` here with its peer `peer_name` directly in `peer_ns`.

    `peer_ns` None puts the peer in the namespace natns runs in.
    """
    fd = os.open(ns_path(peer_ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _Handle(ipr) as h:
            h.add_veth(name, peer_name, fd)
    except RtnlError as exc:
        raise KernelError(
            f"ip link add {name} type veth peer name {peer_name} netns {peer_ns or '(self)'}: {_why(exc)}"
        ) from None
    finally:
        os.close(fd)


def configure(ipr, name: str, *, alias: str | None = None, master: str | None | bool = False,
              mtu: int | None = None, up: bool | None = None) -> None:
    """Set alias, bridge master (None: no master; False: leave), MTU and state of `name`."""
    if alias is None and master is False and mtu is None and up is None:
        return
    with _Handle(ipr) as h:
        idx = _index(h, name)
        kw: dict = {}
        if alias is not None:
            kw["alias"] = alias
        if master is None:
            kw["master"] = 0
        elif master:
            kw["master"] = _index(h, master)
        if mtu is not None:
            kw["mtu"] = mtu
        if up is not None:
            kw["up"] = up
        try:
            h.set_link(idx, **kw)
        except RtnlError as exc:
            raise KernelError(f"ip link set {name} {kw}: {_why(exc)}") from None


def delete(ipr, name: str) -> None:
    """Delete link `name` (a veth takes its peer with it); no error if it is gone."""
    with _Handle(ipr) as h:
        found = h.index(name)
        if found is None:
            return
        try:
            h.del_link(found)
        except RtnlError as exc:
            if exc.code != ENODEV:  # already gone
                raise KernelError(f"ip link del {name}: {exc}") from None


def add_address(ipr, name: str, cidr: str) -> None:
    """Add address `cidr` (192.0.2.3/24) to link `name`."""
    ip, plen = cidr.split("/")
    with _Handle(ipr) as h:
        try:
            h.add_addr(_index(h, name), ip, int(plen))
        except RtnlError as exc:
            if exc.code != EEXIST:  # already there
                raise KernelError(f"ip addr add {cidr} dev {name}: {exc}") from None


def del_address(ipr, name: str, cidr: str) -> None:
    """Remove address `cidr` from link `name`; no error if it is gone."""
    ip, plen = cidr.split("/")
    with _Handle(ipr) as h:
        try:
            h.del_addr(_index(h, name), ip, int(plen))
        except RtnlError as exc:
            if exc.code not in (EADDRNOTAVAIL, ENODEV):  # gone already, with its link or alone
                raise KernelError(f"ip addr del {cidr} dev {name}: {exc}") from None
