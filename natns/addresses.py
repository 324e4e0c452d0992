"""IPv4 checking, written once: the topology's fields, the commands' arguments, the
firewall's SNAT addresses and the explain tools use it.

Each function takes what a user wrote and returns the `ipaddress` object, or
raises ValueError with a message that quotes the value (callers prefix it
with what the value was: ``probe destination '::1' is IPv6; ...``). Pure:
imports nothing of natns.
"""

from __future__ import annotations

import ipaddress
from typing import Any

V4_ONLY = "natns handles IPv4 only"


def ipv4_address(value: Any, what: str = "address") -> ipaddress.IPv4Address:
    """An IPv4 address written as a string (``192.0.2.1``); `what` names it if it is no string."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 192.0.2.1, not {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if addr.version != 4:
        raise ValueError(f"{value!r} is IPv6; {V4_ONLY}")
    return addr


def ip_address(value: Any, what: str = "address") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address written as a string (``192.0.2.1``, ``2001:db8::1``): what
    the verify and explain commands take as a destination; `what` names it if it is no string."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 192.0.2.1 or 2001:db8::1, not {type(value).__name__}")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def ipv4_interface(value: Any, what: str = "address") -> ipaddress.IPv4Interface:
    """An address with its prefix length (``198.51.100.116/24``) that leaves room for a peer."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must be an address with a prefix length, like 198.51.100.116/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address/prefix") from None
    if iface.version != 4:
        raise ValueError(f"{value!r} is IPv6; {V4_ONLY}")
    if iface.network.prefixlen > 30:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for a peer")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return iface


def ipv4_network(value: Any, what: str = "cidr") -> ipaddress.IPv4Network:
    """A network written without host bits (``192.0.2.0/24``), room for a gateway and a host."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must look like 192.0.2.0/24")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR") from None
    if net.version != 4:
        raise ValueError(f"{value!r} is IPv6; {V4_ONLY}")
    if str(net) != value.strip():
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    if net.prefixlen > 30:
        raise ValueError(f"{value!r} is too small for a gateway and a host")
    return net


def not_routable(addr: ipaddress.IPv4Address) -> str | None:
    """Why `addr` can't be a host's own unicast address (loopback, multicast, ...), or None."""
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        return "the limited broadcast address"
    return None
