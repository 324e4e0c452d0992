"""Routes natns owns: marked with protocol RT_PROTO so they are found again."""

from __future__ import annotations

from ..errors import KernelError
from ..state import RT_PROTO, RouteState
from . import rtnl
from .rtnl import ESRCH, RtnlError

MAIN_TABLE = 254


def dump_owned(ipr, links: dict[int, str] | None = None) -> tuple[RouteState, ...]:
    """natns's routes in the main table of this namespace, sorted.

    `ipr` is an `rtnl.Rtnl` (or a pyroute2 IPRoute); `links` (index -> name),
    when the caller has dumped them already, saves dumping them again.
    """
    h, close = rtnl.wrap(ipr)
    try:
        # Both families: only natns's routes are decoded whole.
        routes = h.routes(table=MAIN_TABLE, protocol=RT_PROTO, family=rtnl.AF_UNSPEC)
        if links is None and any(r.gateway is None for r in routes):
            links = {m.index: m.name for m in h.links()}
    finally:
        if close:
            h.close()
    out = []
    for r in routes:
        out.append(RouteState(
            dst=f"{r.dst or ('::' if r.family == rtnl.AF_INET6 else '0.0.0.0')}/{r.dst_len}",
            gateway=r.gateway,
            dev=None if r.gateway else (links or {}).get(r.oif),
        ))
    return tuple(sorted(out, key=lambda x: (x.dst, x.gateway or "", x.dev or "")))


def _kw(h: rtnl.Rtnl, route: RouteState) -> dict:
    kw: dict = {"proto": RT_PROTO, "table": MAIN_TABLE}
    if route.gateway:
        kw["gateway"] = route.gateway
    if route.dev:
        idx = h.index(route.dev)
        if idx is None:
            raise KernelError(f"link {route.dev} not found")
        kw["oif"] = idx
    return kw


def add(ipr, route: RouteState) -> None:
    """Add (or replace) `route`, marked as natns's."""
    h, close = rtnl.wrap(ipr)
    try:
        h.replace_route(route.dst, **_kw(h, route))
    except RtnlError as exc:
        raise KernelError(f"ip route replace {route.dst} via {route.gateway}: {exc}") from None
    finally:
        if close:
            h.close()


def delete(ipr, route: RouteState) -> None:
    """Delete natns's `route`; no error if it is gone."""
    h, close = rtnl.wrap(ipr)
    try:
        h.del_route(route.dst, **_kw(h, route))
    except RtnlError as exc:
        if exc.code != ESRCH:  # no such route: gone already
            raise KernelError(f"ip route del {route.dst}: {exc}") from None
    finally:
        if close:
            h.close()
