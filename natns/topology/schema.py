"""The topology file's schema: one pydantic model per section, fields checked alone.

What a field must be is said once, as an annotated type (`NsName`,
`IfName`, `Address`, ...), and the models are written in those types.
Checks that span fields (names, addresses, references) are in
natns.topology.checks; reading a file is natns.topology.loader. Nothing
here touches the kernel. Every field is documented in docs/topology.md.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from ..addresses import ip_address, ipv4_address, ipv4_interface, ipv4_network, ipv6_address, ipv6_interface, ipv6_network
from .names import IFNAMSIZ, bridge_name, short_ifname  # noqa: F401  (short_ifname: re-exported)

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Interface names the kernel keeps for itself in every namespace ("lo") or
#: refuses (EINVAL: they would clash with /proc/sys/net/ipv4/conf/{all,default}).
RESERVED_IFNAMES = ("lo", "all", "default")
MAX_PORT_RANGE = 1024  # ports one port forward may span


def _check_name(value: str, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value.encode()) > limit:
        raise ValueError(
            f"{what} {value!r} is {len(value.encode())} bytes; the kernel takes at most {limit}"
        )
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} may hold only letters, digits, '_', '.', '-' "
            "and must start with a letter or digit"
        )
    return value


def check_ifname(value: str) -> str:
    """An interface name the kernel will take (1-15 bytes, no '/', ':' or space)."""
    _check_name(value, "interface name", IFNAMSIZ)
    if value in RESERVED_IFNAMES:
        raise ValueError(f"interface name {value!r} is reserved by the kernel")
    return value


def check_nsname(value: str) -> str:
    """A namespace name that is a plain file name under /run/netns."""
    return _check_name(value, "namespace name", 64)


def _port(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be a port number 1-65535, not {v!r}")
    if not 1 <= v <= 65535:
        raise ValueError(f"{what} port {v} is not in 1-65535")
    return v


# --------------------------------------------------------------------------- field types
# Each says what one kind of field must be, once; `what` is the word its error uses.

NsName = Annotated[str, AfterValidator(check_nsname)]
IfName = Annotated[str, AfterValidator(check_ifname), Field(json_schema_extra={"format": "ifname"})]


def _named(what: str) -> Any:
    """A router's or a network's name: like a namespace name, called `what` in errors."""
    return Annotated[str, AfterValidator(lambda v: _check_name(v, what, 64))]


def _address(what: str, v6: str | None = None) -> Any:
    """An IPv4 address written as a string; `what` names it when it is not a string, `v6`
    the field an IPv6 address belongs in."""
    return Annotated[ipaddress.IPv4Address, BeforeValidator(lambda v: ipv4_address(v, what, v6))]


def _address6(what: str, v4: str | None = None) -> Any:
    """An IPv6 address written as a string; `v4` names the field an IPv4 address belongs in."""
    return Annotated[ipaddress.IPv6Address, BeforeValidator(lambda v: ipv6_address(v, what, v4))]


def _tcp_udp_port(what: str) -> Any:
    return Annotated[int, BeforeValidator(lambda v: _port(v, what))]


RouterName = _named("router name")
NetworkName = _named("network name")
Address = _address("address")
HostAddress4 = _address("address", "address6")
Gateway = _address("gateway", "gateway6")
Address6 = _address6("address6", "address")
Gateway6 = _address6("gateway6", "gateway")
HostAddress = _address("host")
To = _address("to")
To6 = _address6("to")
Source = _address("source")
#: A check's destination and source: IPv4 or IPv6 (one family; topology.checks.checks).
CheckAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address, BeforeValidator(lambda v: ip_address(v, "to"))]
CheckSource = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address,
                        BeforeValidator(lambda v: ip_address(v, "source"))]
TcpPort = _tcp_udp_port("tcp")
UdpPort = _tcp_udp_port("udp")
Interface = Annotated[ipaddress.IPv4Interface, BeforeValidator(lambda v: ipv4_interface(v, "address", "address6"))]
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(lambda v: ipv4_network(v, "cidr", "cidr6"))]
Interface6 = Annotated[ipaddress.IPv6Interface, BeforeValidator(lambda v: ipv6_interface(v, "address6", "address"))]
Cidr6 = Annotated[ipaddress.IPv6Network, BeforeValidator(lambda v: ipv6_network(v, "cidr6", "cidr"))]
Mtu = Annotated[int, Field(ge=576, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _one_of_required(data: Any, handler, keys: tuple[str, ...], title: str):
    """Validate `data` with `handler`; if it holds none of `keys` (each optional alone, one
    required), the first of them is reported missing, before any other problem of the
    mapping, as a required field is."""
    if not isinstance(data, dict) or any(k in data for k in keys):
        return handler(data)
    errs: list = []
    try:
        handler(data)
    except ValidationError as exc:
        errs = exc.errors(include_url=False)
    details = [InitErrorDetails(type="missing", loc=(keys[0],), input=data)]
    details += [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {})) for e in errs]
    raise ValidationError.from_exception_data(title, details)


class Internet(_Strict):
    """An emulated outside world: one namespace on the external network."""

    namespace: NsName = "inet"
    address: Interface
    address6: Interface6 | None = None
    interface: IfName = "ext"
    #: IPv4 and IPv6 addresses, on `lo` of the internet namespace.
    hosts: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = Field(default_factory=list)

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, v):
        if not isinstance(v, list):
            raise ValueError("hosts must be a list of addresses, like [203.0.113.114, 2001:db8:ffff::114]")
        return [ip_address(h, "host") for h in v]


class External(_Strict):
    """A router's side of the external network."""

    interface: IfName = "eth0"
    address: Interface
    gateway: Gateway | None = None
    address6: Interface6 | None = None
    gateway6: Gateway6 | None = None
    uplink: Literal["internet", "host"] = "internet"
    mtu: Mtu | None = None


class Ingress(_Strict):
    """An inbound IPv6 opening: `protocol` to `port` (or a range) of lab host `to`."""

    to: To6
    protocol: Literal["tcp", "udp"]
    port: Annotated[tuple[int, int], BeforeValidator(lambda v: _port_range(v))]


class Router(_Strict):
    """A gateway namespace: external interface, SNAT, forwarding on."""

    name: RouterName
    namespace: NsName | None = None
    external: External
    snat: Union[Literal["masquerade", "off"], ipaddress.IPv4Address] = "masquerade"
    #: IPv6: off routes the networks' prefixes (as Neutron); masquerade is NAT66 (as Docker).
    snat6: Literal["off", "masquerade"] = "off"
    ingress: list[Ingress] = Field(default_factory=list)
    isolation: bool = True
    gateway_chassis: list[str] = Field(default_factory=list)  # OVN only: see checks.ovn

    @field_validator("snat", "snat6", mode="before")
    @classmethod
    def _snat(cls, v, info):
        if v is False:  # YAML reads a bare `off` as false
            return "off"
        if v in ("masquerade", "off"):
            return v
        if info.field_name == "snat6":
            raise ValueError("snat6 must be off (routed, the default) or masquerade (NAT66)")
        if isinstance(v, str):
            try:
                return ipv4_address(v, "snat")
            except ValueError:
                raise ValueError(
                    f"{v!r} is not masquerade, off, or an IPv4 address to SNAT to"
                ) from None
        raise ValueError("snat must be masquerade, off, or an address")

    @property
    def ns(self) -> str:
        """The router's namespace name (defaults to its name)."""
        return self.namespace or self.name


class Host(_Strict):
    """A host on a network: its own namespace, one interface, a default route."""

    namespace: NsName
    address: HostAddress4 | None = None  # required on a network with a cidr (checks.hosts)
    address6: Address6 | None = None
    interface: IfName = "eth0"
    chassis: str | None = None  # OVN only: see checks.ovn

    @model_validator(mode="wrap")
    @classmethod
    def _an_address(cls, data, handler):
        return _one_of_required(data, handler, ("address", "address6"), "Host")


class Network(_Strict):
    """A private network behind one router: one L2 segment (a bridge in the router)."""

    name: NetworkName
    router: str
    cidr: Cidr | None = None  # None: an IPv6-only network (then cidr6 is required)
    gateway: Gateway | None = None  # required with cidr (checks.networks)
    cidr6: Cidr6 | None = None
    gateway6: Gateway6 | None = None  # required with cidr6
    interface: IfName | None = None
    mtu: Mtu | None = None
    hosts: list[Host] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _a_prefix(cls, data, handler):
        return _one_of_required(data, handler, ("cidr", "cidr6"), "Network")

    @property
    def has_v6(self) -> bool:
        """Whether the network has an IPv6 prefix."""
        return self.cidr6 is not None

    @property
    def router_interface(self) -> str:
        """The router-side bridge of this network (default ``qr-<name>``)."""
        return bridge_name(self.name, self.interface)


class Check(_Strict):
    """A reachability check `natns check` runs: one probe and what it must show.

    ``from`` is a namespace of the lab, ``to`` an IPv4 or IPv6 address; ``tcp`` or
    ``udp`` names a port (ICMP echo otherwise); ``expect`` is ``reachable``
    (default) or ``blocked``; ``source``, for a reachable check, is the source
    address the far end must see (the router's SNAT address, say).
    """

    model_config = ConfigDict(populate_by_name=True)

    from_: NsName = Field(alias="from")
    to: CheckAddress
    tcp: TcpPort | None = None
    udp: UdpPort | None = None
    expect: Literal["reachable", "blocked"] = "reachable"
    source: CheckSource | None = None

    @property
    def protocol(self) -> str:
        """``tcp``, ``udp`` or ``icmp``."""
        return "tcp" if self.tcp is not None else "udp" if self.udp is not None else "icmp"

    @property
    def port(self) -> int | None:
        """The TCP or UDP port, None for ICMP."""
        return self.tcp if self.tcp is not None else self.udp

    def describe(self) -> str:
        """One line naming the check: ``tenant1 -> 203.0.113.114 icmp reachable``."""
        proto = self.protocol + (f"/{self.port}" if self.port is not None else "")
        src = f" (source {self.source})" if self.source else ""
        return f"{self.from_} -> {self.to} {proto} {self.expect}{src}"


class FloatingIpSpec(_Strict):
    """A floating IP: 1:1 NAT between an external address and a private host."""

    router: str
    address: Address
    host: HostAddress


def _port_range(v: Any) -> tuple[int, int]:
    if isinstance(v, bool):
        raise ValueError("port must be a number or a range like 8000-8010")
    if isinstance(v, int):
        lo = hi = v
    elif isinstance(v, str) and re.fullmatch(r"[0-9]{1,5}(-[0-9]{1,5})?", v.strip()):
        parts = v.strip().split("-")
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        raise ValueError(f"{v!r} is not a port or a range like 8000-8010")
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            raise ValueError(f"port {p} is not in 1-65535")
    if hi < lo:
        raise ValueError(f"range {lo}-{hi} ends before it starts")
    if hi - lo + 1 > MAX_PORT_RANGE:
        raise ValueError(f"range {lo}-{hi} spans more than {MAX_PORT_RANGE} ports")
    return (lo, hi)


def _forward_target(v: Any) -> tuple[ipaddress.IPv4Address, int | None]:
    if not isinstance(v, str):
        raise ValueError("to must look like 192.0.2.2:80 (or 192.0.2.2 to keep the port)")
    addr, _, port = v.partition(":")
    ip = ipv4_address(addr, "to")
    if not port:
        return (ip, None)
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{port!r} in {v!r} is not a port 1-65535")
    return (ip, int(port))


class PortForwardSpec(_Strict):
    """A port forward: TCP/UDP to the router's external address, on to a private host."""

    router: str
    protocol: Literal["tcp", "udp"]
    port: Annotated[tuple[int, int], BeforeValidator(_port_range)]
    to: Annotated[tuple[ipaddress.IPv4Address, int | None], BeforeValidator(_forward_target)]

    @property
    def to_port(self) -> int:
        """First internal port (the external one when `to` names none)."""
        return self.to[1] if self.to[1] is not None else self.port[0]

    @property
    def to_ports(self) -> tuple[int, int]:
        """The internal ports, first and last (a range maps onto a range of the same size)."""
        return (self.to_port, self.to_port + self.port[1] - self.port[0])


def _lab_name(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", v):
        raise ValueError(
            "name must be 1-32 letters, digits, '_', '.', '-' starting with a letter or digit"
        )
    return v


# --------------------------------------------------------------------------- OVN
# The OVN engine's part of the schema: `engine`, `ovn`, `routers[].gateway_chassis`,
# `hosts[].chassis`; their cross-checks are checks.ovn.


ChassisName = _named("chassis name")


class OvnChassis(_Strict):
    """A chassis of the OVN sandbox: one namespace with ovsdb-server, ovs-vswitchd, ovn-controller."""

    name: ChassisName
    gateway: bool = False
    namespace: NsName | None = None

    @property
    def ns(self) -> str:
        """The chassis' namespace name (defaults to its name)."""
        return self.namespace or self.name


class OvnSandbox(_Strict):
    """OVN run by natns on this machine: a central namespace and one namespace per chassis."""

    underlay: Annotated[ipaddress.IPv4Network, BeforeValidator(lambda v: ipv4_network(v, "underlay"))]
    chassis: list[OvnChassis]
    namespace: NsName | None = None  # of the central part (NB, SB, northd); default <lab>-ovn


_NB_RE = re.compile(r"(tcp|ssl):[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}|unix:/[^\s]*")


def _nb_address(v: Any) -> str:
    if not isinstance(v, str) or not _NB_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not an OVSDB address like tcp:192.0.2.10:6641")
    return v


class Ovn(_Strict):
    """Where OVN runs: a `sandbox` natns runs, or an existing deployment's NB DB (`nb`)."""

    sandbox: OvnSandbox | None = None
    nb: Annotated[str, BeforeValidator(_nb_address)] | None = None


class Topology(_Strict):
    """A whole lab, as written in a topology file."""

    name: Annotated[str, AfterValidator(_lab_name)]
    backend: Literal["nftables", "iptables"] = "nftables"
    engine: Literal["kernel", "ovn"] = "kernel"  # OVN: see checks.ovn
    ovn: Ovn | None = None
    internet: Internet | None = None
    routers: list[Router] = Field(default_factory=list)
    networks: list[Network] = Field(default_factory=list)
    floating_ips: list[FloatingIpSpec] = Field(default_factory=list)
    port_forwards: list[PortForwardSpec] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)

    @property
    def has_v6(self) -> bool:
        """Whether any part of the lab is IPv6 (without, natns makes exactly what it did
        before IPv6: the same links, routes, sysctls and rules, byte for byte)."""
        i = self.internet
        return bool(i and (i.address6 or any(h.version == 6 for h in i.hosts))) \
            or any(r.external.address6 or r.ingress or r.snat6 != "off" for r in self.routers) \
            or any(n.cidr6 for n in self.networks)

    def router(self, name: str) -> Router:
        """The router called `name`."""
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(name)

    def namespaces(self) -> list[str]:
        """Every namespace name the lab uses."""
        out = [self.internet.namespace] if self.internet else []
        out += [r.ns for r in self.routers]
        out += [h.namespace for n in self.networks for h in n.hosts]
        return out


def ovn_central_ns(t: Topology) -> str:
    """The namespace of the OVN sandbox's central part (NB, SB, northd)."""
    sb = t.ovn.sandbox if t.ovn else None
    return (sb.namespace if sb and sb.namespace else None) or f"{t.name}-ovn"
