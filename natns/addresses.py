"""IPv4 and IPv6 checking, written once: the topology's fields, the commands' arguments,
the firewall's SNAT addresses and the explain tools use it.

The ``ipv4_*`` functions take what a v4 field holds, the ``ipv6_*`` ones what a
v6 field (``address6``, ``cidr6``, ...) holds; `ip_address` takes either.

Each function takes what a user wrote and returns the `ipaddress` object, or
raises ValueError with a message that quotes the value (callers prefix it
with what the value was: ``probe destination '::1' is IPv6; ...``). Pure:
imports nothing of natns.
"""

from __future__ import annotations

import ipaddress
from typing import Any

V4_ONLY = "natns handles IPv4 only"


def _wrong_family(value: str, v6: str | None) -> str:
    """The problem of an IPv6 value in an IPv4 field: `v6` names the field it belongs in."""
    return f"{value!r} is IPv6; " + (f"write it in {v6}" if v6 else V4_ONLY)


def ipv4_address(value: Any, what: str = "address", v6: str | None = None) -> ipaddress.IPv4Address:
    """An IPv4 address written as a string (``192.0.2.1``); `what` names it if it is no string,
    `v6` the field an IPv6 value belongs in (if there is one)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 192.0.2.1, not {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if addr.version != 4:
        raise ValueError(_wrong_family(value, v6))
    return addr


def ipv4_interface(value: Any, what: str = "address", v6: str | None = None) -> ipaddress.IPv4Interface:
    """An address with its prefix length (``198.51.100.116/24``) that leaves room for a peer."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must be an address with a prefix length, like 198.51.100.116/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address/prefix") from None
    if iface.version != 4:
        raise ValueError(_wrong_family(value, v6))
    if iface.network.prefixlen > 30:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for a peer")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return iface


def ipv4_network(value: Any, what: str = "cidr", v6: str | None = None) -> ipaddress.IPv4Network:
    """A network written without host bits (``192.0.2.0/24``), room for a gateway and a host."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must look like 192.0.2.0/24")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR") from None
    if net.version != 4:
        raise ValueError(_wrong_family(value, v6))
    if str(net) != value.strip():
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    if net.prefixlen > 30:
        raise ValueError(f"{value!r} is too small for a gateway and a host")
    return net


#: The longest IPv6 prefix natns takes for a link: a /127 or /128 leaves no room
#: for a gateway and a host besides the subnet-router anycast address.
V6_MAX_PREFIX = 126


def _v4_given(value: str, v4: str | None) -> str:
    return f"{value!r} is IPv4; " + (f"write it in {v4}" if v4 else "this field takes an IPv6 address")


def ipv6_address(value: Any, what: str = "address6", v4: str | None = None) -> ipaddress.IPv6Address:
    """An IPv6 address written as a string (``2001:db8:1::2``), a unicast one a host can
    have; `v4` names the field an IPv4 value belongs in."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 2001:db8:1::2, not {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if addr.version != 6:
        raise ValueError(_v4_given(value, v4))
    return addr


def ipv6_interface(value: Any, what: str = "address6", v4: str | None = None) -> ipaddress.IPv6Interface:
    """An IPv6 address with its prefix length (``2001:db8:ff::116/64``), room for a peer."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must be an address with a prefix length, like 2001:db8:ff::116/64")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address/prefix") from None
    if iface.version != 6:
        raise ValueError(_v4_given(value, v4))
    if iface.network.prefixlen > V6_MAX_PREFIX:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for a peer")
    if iface.ip == iface.network.network_address:
        raise ValueError(f"{value!r} is the subnet-router anycast address (all host bits zero) of its prefix")
    return iface


def ipv6_network(value: Any, what: str = "cidr6", v4: str | None = None) -> ipaddress.IPv6Network:
    """An IPv6 prefix written without host bits (``2001:db8:1::/64``), room for a gateway and a host."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must look like 2001:db8:1::/64")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR") from None
    if net.version != 6:
        raise ValueError(_v4_given(value, v4))
    if ipaddress.ip_interface(value).ip != net.network_address:
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    if net.prefixlen > V6_MAX_PREFIX:
        raise ValueError(f"{value!r} is too small for a gateway and a host")
    return net


def ip_address(value: Any, what: str = "address") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address written as a string."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 192.0.2.1 or 2001:db8::1, not {type(value).__name__}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def not_routable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `addr` can't be a host's own unicast address (loopback, multicast, ...), or None."""
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return "an IPv4-mapped address"
        if addr.is_link_local:
            return "a link-local address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        return "the limited broadcast address"
    return None
