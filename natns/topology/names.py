"""Every interface name natns derives from a topology, computed in one place.

The model's cross-checks (natns.topology.checks), the desired state
(natns.desired) and the drawing (natns.topology.drawing) all name links
with these functions, so that what the file is checked against is exactly
what `up` creates. Pure: no kernel access, nothing of natns imported.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15  # bytes an interface name may have (IFNAMSIZ - 1)

#: Prefixes of the names natns derives: a router's port on the internet's
#: bridge, a host's port on its network's bridge (in the router), a
#: network's bridge in its router, the host-side end of an ``uplink: host`` veth.
ROUTER_PORT_PREFIX = "e-"
HOST_PORT_PREFIX = "tap-"
BRIDGE_PREFIX = "qr-"
UPLINK_PREFIX = "nu-"


def short_ifname(prefix: str, name: str) -> str:
    """``prefix + name`` if it fits IFNAMSIZ, else prefix + a stable hex digest filling 15 bytes."""
    full = prefix + name
    if len(full.encode()) <= IFNAMSIZ:
        return full
    return prefix + hashlib.sha1(name.encode()).hexdigest()[: IFNAMSIZ - len(prefix)]


def router_port_name(router: str) -> str:
    """Name of a router's port on the internet's bridge."""
    return short_ifname(ROUTER_PORT_PREFIX, router)


def host_port_name(host_ns: str) -> str:
    """Name of a host's port on its network's bridge, in the router namespace."""
    return short_ifname(HOST_PORT_PREFIX, host_ns)


def bridge_name(network: str, interface: str | None = None) -> str:
    """The router-side bridge of a network: its ``interface:``, default ``qr-<name>``."""
    return interface or short_ifname(BRIDGE_PREFIX, network)


def uplink_name(lab: str, router: str) -> str:
    """Name of the host-side end of a router's ``uplink: host`` veth."""
    return short_ifname(UPLINK_PREFIX, f"{lab}-{router}")
