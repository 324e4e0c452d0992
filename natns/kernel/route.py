"""Routes natns owns: marked with protocol RT_PROTO so they are found again."""

from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelError
from ..state import RT_PROTO, RouteState

MAIN_TABLE = 254


def dump_owned(ipr: IPRoute) -> tuple[RouteState, ...]:
    """natns's routes in the main table of this namespace, sorted."""
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
    out = []
    for r in ipr.get_routes(family=2, table=MAIN_TABLE):
        if r["proto"] != RT_PROTO:
            continue
        dst = r.get_attr("RTA_DST") or "0.0.0.0"
        out.append(RouteState(
            dst=f"{dst}/{r['dst_len']}",
            gateway=r.get_attr("RTA_GATEWAY"),
            dev=None if r.get_attr("RTA_GATEWAY") else names.get(r.get_attr("RTA_OIF")),
        ))
    return tuple(sorted(out, key=lambda x: (x.dst, x.gateway or "", x.dev or "")))


def _kw(ipr: IPRoute, route: RouteState) -> dict:
    kw: dict = {"dst": route.dst, "proto": RT_PROTO, "table": MAIN_TABLE}
    if route.gateway:
        kw["gateway"] = route.gateway
    if route.dev:
        kw["oif"] = ipr.link_lookup(ifname=route.dev)[0]
    return kw


def add(ipr: IPRoute, route: RouteState) -> None:
    """Add (or replace) `route`, marked as natns's."""
    try:
        ipr.route("replace", **_kw(ipr, route))
    except NetlinkError as exc:
        raise KernelError(f"ip route replace {route.dst} via {route.gateway}: {exc}") from None


def delete(ipr: IPRoute, route: RouteState) -> None:
    """Delete natns's `route`; no error if it is gone."""
    try:
        ipr.route("del", **_kw(ipr, route))
    except NetlinkError as exc:
        if exc.code != 3:  # ESRCH
            raise KernelError(f"ip route del {route.dst}: {exc}") from None
