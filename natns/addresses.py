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
import re
import socket
from typing import Any

V4_ONLY = "natns handles IPv4 only"
#: The longest prefix natns takes for a link, per IP version: a longer one leaves no
#: room for a gateway and a host (and, in IPv6, the subnet-router anycast address).
MAX_PREFIX = {4: 30, 6: 126}
V6_MAX_PREFIX = MAX_PREFIX[6]
_EXAMPLE = {4: ("192.0.2.1", "198.51.100.116/24", "192.0.2.0/24"),
            6: ("2001:db8:1::2", "2001:db8:ff::116/64", "2001:db8:1::/64")}


def _wrong_family(value: str, version: int, other: str | None) -> str:
    """The problem of a value of the other IP version: `other` names the field it belongs in."""
    if version == 4:
        return f"{value!r} is IPv6; " + (f"write it in {other}" if other else V4_ONLY)
    return f"{value!r} is IPv4; " + (f"write it in {other}" if other else "this field takes an IPv6 address")


#: An IPv4 address written canonically: four decimal octets without leading zeros
CANONICAL_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                          r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


def _address(value: Any, what: str, version: int, other: str | None):
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like {_EXAMPLE[version][0]}, not {type(value).__name__}")
    if version == 4 and CANONICAL_V4.fullmatch(value):
        # the common case, ~5x cheaper than ipaddress's parser (a file of 5,000 floating IPs)
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if addr.version != version:
        raise ValueError(_wrong_family(value, version, other))
    return addr


def _interface(value: Any, what: str, version: int, other: str | None):
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must be an address with a prefix length, like {_EXAMPLE[version][1]}")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address/prefix") from None
    if iface.version != version:
        raise ValueError(_wrong_family(value, version, other))
    if iface.network.prefixlen > MAX_PREFIX[version]:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for a peer")
    return iface


def _network(value: Any, what: str, version: int, other: str | None):
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must look like {_EXAMPLE[version][2]}")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR") from None
    if net.version != version:
        raise ValueError(_wrong_family(value, version, other))
    return net


def ipv4_address(value: Any, what: str = "address", v6: str | None = None) -> ipaddress.IPv4Address:
    """An IPv4 address written as a string (``192.0.2.1``); `what` names it if it is no string,
    `v6` the field an IPv6 value belongs in (if there is one)."""
    return _address(value, what, 4, v6)


def ipv4_interface(value: Any, what: str = "address", v6: str | None = None) -> ipaddress.IPv4Interface:
    """An address with its prefix length (``198.51.100.116/24``) that leaves room for a peer."""
    iface = _interface(value, what, 4, v6)
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return iface


def ipv4_network(value: Any, what: str = "cidr", v6: str | None = None) -> ipaddress.IPv4Network:
    """A network written without host bits (``192.0.2.0/24``), room for a gateway and a host."""
    net = _network(value, what, 4, v6)
    if str(net) != value.strip():
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    if net.prefixlen > MAX_PREFIX[4]:
        raise ValueError(f"{value!r} is too small for a gateway and a host")
    return net


def ipv6_address(value: Any, what: str = "address6", v4: str | None = None) -> ipaddress.IPv6Address:
    """An IPv6 address written as a string (``2001:db8:1::2``); `v4` names the field an
    IPv4 value belongs in."""
    return _address(value, what, 6, v4)


def ipv6_interface(value: Any, what: str = "address6", v4: str | None = None) -> ipaddress.IPv6Interface:
    """An IPv6 address with its prefix length (``2001:db8:ff::116/64``), room for a peer."""
    iface = _interface(value, what, 6, v4)
    if iface.ip == iface.network.network_address:
        raise ValueError(f"{value!r} is the subnet-router anycast address (all host bits zero) of its prefix")
    return iface


def ipv6_network(value: Any, what: str = "cidr6", v4: str | None = None) -> ipaddress.IPv6Network:
    """An IPv6 prefix written without host bits (``2001:db8:1::/64``), room for a gateway and a host."""
    net = _network(value, what, 6, v4)
    if ipaddress.ip_interface(value).ip != net.network_address:
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    if net.prefixlen > MAX_PREFIX[6]:
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
