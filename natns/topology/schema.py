"""The topology file: its schema, loading and complete validation.

`load(path)` returns a validated `Topology` or raises `TopologyError` naming the
file, the field path (``routers[0].external.address``) and the problem. Nothing
here touches the kernel: a topology is validated completely before anything
is created. Every field is documented in docs/topology.md.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from ..errors import TopologyError

IFNAMSIZ = 15  # bytes an interface name may have (IFNAMSIZ - 1)

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Interface names the kernel keeps for itself in every namespace ("lo") or
#: refuses (EINVAL: they would clash with /proc/sys/net/ipv4/conf/{all,default}).
RESERVED_IFNAMES = ("lo", "all", "default")


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


IfName = Annotated[str, Field(json_schema_extra={"format": "ifname"})]


def _ipv4(value: Any, what: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like 192.0.2.1, not {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if addr.version != 4:
        raise ValueError(f"{value!r} is IPv6; natns handles IPv4 only")
    return addr


def _ipv4_iface(value: Any, what: str) -> ipaddress.IPv4Interface:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} must be an address with a prefix length, like 198.51.100.116/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address/prefix") from None
    if iface.version != 4:
        raise ValueError(f"{value!r} is IPv6; natns handles IPv4 only")
    if iface.network.prefixlen > 30:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for a peer")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return iface


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Internet(_Strict):
    """An emulated outside world: one namespace on the external network."""

    namespace: str = "inet"
    address: ipaddress.IPv4Interface
    interface: str = "ext"
    hosts: list[ipaddress.IPv4Address] = Field(default_factory=list)

    _ns = field_validator("namespace")(classmethod(lambda cls, v: check_nsname(v)))
    _if = field_validator("interface")(classmethod(lambda cls, v: check_ifname(v)))

    @field_validator("address", mode="before")
    @classmethod
    def _addr(cls, v):
        return _ipv4_iface(v, "address")

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, v):
        if not isinstance(v, list):
            raise ValueError("hosts must be a list of addresses, like [203.0.113.114]")
        return [_ipv4(h, "host") for h in v]


class External(_Strict):
    """A router's side of the external network."""

    interface: str = "eth0"
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    uplink: Literal["internet", "host"] = "internet"
    mtu: int | None = Field(default=None, ge=576, le=65535)

    _if = field_validator("interface")(classmethod(lambda cls, v: check_ifname(v)))

    @field_validator("address", mode="before")
    @classmethod
    def _addr(cls, v):
        return _ipv4_iface(v, "address")

    @field_validator("gateway", mode="before")
    @classmethod
    def _gw(cls, v):
        return None if v is None else _ipv4(v, "gateway")


class Router(_Strict):
    """A gateway namespace: external interface, SNAT, forwarding on."""

    name: str
    namespace: str | None = None
    external: External
    snat: Union[Literal["masquerade", "off"], ipaddress.IPv4Address] = "masquerade"
    isolation: bool = True
    gateway_chassis: list[str] = Field(default_factory=list)  # OVN only: see _check_ovn

    _nm = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "router name", 64)))

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v):
        return None if v is None else check_nsname(v)

    @field_validator("snat", mode="before")
    @classmethod
    def _snat(cls, v):
        if v is False:  # YAML reads a bare `off` as false
            return "off"
        if v in ("masquerade", "off"):
            return v
        if isinstance(v, str):
            try:
                return _ipv4(v, "snat")
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

    namespace: str
    address: ipaddress.IPv4Address
    interface: str = "eth0"
    chassis: str | None = None  # OVN only: see _check_ovn

    _ns = field_validator("namespace")(classmethod(lambda cls, v: check_nsname(v)))
    _if = field_validator("interface")(classmethod(lambda cls, v: check_ifname(v)))

    @field_validator("address", mode="before")
    @classmethod
    def _addr(cls, v):
        return _ipv4(v, "address")


class Network(_Strict):
    """A private network behind one router: one L2 segment (a bridge in the router)."""

    name: str
    router: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    interface: str | None = None
    mtu: int | None = Field(default=None, ge=576, le=65535)
    hosts: list[Host] = Field(default_factory=list)

    _nm = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "network name", 64)))

    @field_validator("interface")
    @classmethod
    def _if(cls, v):
        return None if v is None else check_ifname(v)

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, v):
        if not isinstance(v, str) or "/" not in v:
            raise ValueError("cidr must look like 192.0.2.0/24")
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a CIDR") from None
        if net.version != 4:
            raise ValueError(f"{v!r} is IPv6; natns handles IPv4 only")
        if str(net) != v.strip():
            raise ValueError(f"{v!r} has host bits set; did you mean {net}?")
        if net.prefixlen > 30:
            raise ValueError(f"{v!r} is too small for a gateway and a host")
        return net

    @field_validator("gateway", mode="before")
    @classmethod
    def _gw(cls, v):
        return _ipv4(v, "gateway")

    @property
    def router_interface(self) -> str:
        """The router-side bridge of this network (default ``qr-<name>``)."""
        return self.interface or short_ifname("qr-", self.name)


def _port(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be a port number 1-65535, not {v!r}")
    if not 1 <= v <= 65535:
        raise ValueError(f"{what} port {v} is not in 1-65535")
    return v


class Check(_Strict):
    """A reachability check `natns check` runs: one probe and what it must show.

    ``from`` is a namespace of the lab, ``to`` an IPv4 address; ``tcp`` or
    ``udp`` names a port (ICMP echo otherwise); ``expect`` is ``reachable``
    (default) or ``blocked``; ``source``, for a reachable check, is the source
    address the far end must see (the router's SNAT address, say).
    """

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: ipaddress.IPv4Address
    tcp: int | None = None
    udp: int | None = None
    expect: Literal["reachable", "blocked"] = "reachable"
    source: ipaddress.IPv4Address | None = None

    _ns = field_validator("from_")(classmethod(lambda cls, v: check_nsname(v)))

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v):
        return _ipv4(v, "to")

    @field_validator("source", mode="before")
    @classmethod
    def _src(cls, v):
        return None if v is None else _ipv4(v, "source")

    @field_validator("tcp", "udp", mode="before")
    @classmethod
    def _ports(cls, v, info):
        return None if v is None else _port(v, info.field_name)

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


MAX_PORT_RANGE = 1024  # ports one port forward may span


class FloatingIpSpec(_Strict):
    """A floating IP: 1:1 NAT between an external address and a private host."""

    router: str
    address: ipaddress.IPv4Address
    host: ipaddress.IPv4Address

    @field_validator("address", "host", mode="before")
    @classmethod
    def _addr(cls, v, info):
        return _ipv4(v, info.field_name)


class PortForwardSpec(_Strict):
    """A port forward: TCP/UDP to the router's external address, on to a private host."""

    router: str
    protocol: Literal["tcp", "udp"]
    port: tuple[int, int]
    to: tuple[ipaddress.IPv4Address, int | None]

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, v):
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

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v):
        if not isinstance(v, str):
            raise ValueError("to must look like 192.0.2.2:80 (or 192.0.2.2 to keep the port)")
        addr, _, port = v.partition(":")
        ip = _ipv4(addr, "to")
        if not port:
            return (ip, None)
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
            raise ValueError(f"{port!r} in {v!r} is not a port 1-65535")
        return (ip, int(port))

    @property
    def to_port(self) -> int:
        """First internal port (the external one when `to` names none)."""
        return self.to[1] if self.to[1] is not None else self.port[0]


# --------------------------------------------------------------------------- OVN (issue 12)
# The OVN engine's part of the schema: `engine`, `ovn`, `routers[].gateway_chassis`,
# `hosts[].chassis`, and their cross-checks in `_check_ovn`. Kept apart from the
# kernel engine's fields and checks.


class OvnChassis(_Strict):
    """A chassis of the OVN sandbox: one namespace with ovsdb-server, ovs-vswitchd, ovn-controller."""

    name: str
    gateway: bool = False
    namespace: str | None = None

    _nm = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "chassis name", 64)))

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v):
        return None if v is None else check_nsname(v)

    @property
    def ns(self) -> str:
        """The chassis' namespace name (defaults to its name)."""
        return self.namespace or self.name


class OvnSandbox(_Strict):
    """OVN run by natns on this machine: a central namespace and one namespace per chassis."""

    underlay: ipaddress.IPv4Network
    chassis: list[OvnChassis]
    namespace: str | None = None  # of the central part (NB, SB, northd); default <lab>-ovn

    @field_validator("underlay", mode="before")
    @classmethod
    def _underlay(cls, v):
        if not isinstance(v, str) or "/" not in v:
            raise ValueError("underlay must look like 100.64.0.0/24")
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a CIDR") from None
        if net.version != 4:
            raise ValueError(f"{v!r} is IPv6; natns handles IPv4 only")
        if str(net) != v.strip():
            raise ValueError(f"{v!r} has host bits set; did you mean {net}?")
        return net

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v):
        return None if v is None else check_nsname(v)


_NB_RE = re.compile(r"(tcp|ssl):[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}|unix:/[^\s]*")


class Ovn(_Strict):
    """Where OVN runs: a `sandbox` natns runs, or an existing deployment's NB DB (`nb`)."""

    sandbox: OvnSandbox | None = None
    nb: str | None = None

    @field_validator("nb")
    @classmethod
    def _nb(cls, v):
        if v is not None and (not isinstance(v, str) or not _NB_RE.fullmatch(v)):
            raise ValueError(f"{v!r} is not an OVSDB address like tcp:192.0.2.10:6641")
        return v


class Topology(_Strict):
    """A whole lab, as written in a topology file."""

    name: str
    backend: Literal["nftables", "iptables"] = "nftables"
    engine: Literal["kernel", "ovn"] = "kernel"  # OVN: see _check_ovn
    ovn: Ovn | None = None
    internet: Internet | None = None
    routers: list[Router] = Field(default_factory=list)
    networks: list[Network] = Field(default_factory=list)
    floating_ips: list[FloatingIpSpec] = Field(default_factory=list)
    port_forwards: list[PortForwardSpec] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", v):
            raise ValueError(
                "name must be 1-32 letters, digits, '_', '.', '-' starting with a letter or digit"
            )
        return v

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


def short_ifname(prefix: str, name: str) -> str:
    """``prefix + name`` if it fits IFNAMSIZ, else prefix + a stable hex digest filling 15 bytes."""
    full = prefix + name
    if len(full.encode()) <= IFNAMSIZ:
        return full
    import hashlib

    return prefix + hashlib.sha1(name.encode()).hexdigest()[: IFNAMSIZ - len(prefix)]


# --------------------------------------------------------------------------- loading


_TAGS = ("IPv4Address", "IPv4Interface", "IPv4Network", "str", "int")


def _loc(loc: tuple, data: Any = None) -> str:
    """A pydantic error location as a field path (``routers[0].external.address``).

    pydantic puts the names of union members and validators into locations
    too; they are left out, unless the input has a key of that name (a user
    may well write a field called ``str``). A key that isn't a plain name
    (empty, with dots, spaces or newlines) is shown quoted, so the path
    stays one line and names the key exactly.
    """
    out = ""
    cur = data
    for part in loc:
        if isinstance(part, int) and not (isinstance(cur, dict) and part in cur):
            out += f"[{part}]"
            cur = cur[part] if isinstance(cur, (list, tuple)) and -len(cur) <= part < len(cur) else None
            continue
        present = isinstance(cur, dict) and part in cur
        if not present and isinstance(part, str) and (
                part.startswith(("function-", "literal[", "is-instance[", "lax-or-strict[", "json-or-python["))
                or part in _TAGS):
            continue
        if isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += ("." if out else "") + part
        else:
            out += f"[{part!r}]"
        cur = cur[part] if present else None
    return out


def _first_error(exc: ValidationError, data: Any = None) -> tuple[str, str]:
    errs = exc.errors(include_url=False)
    # Prefer errors that aren't union-branch noise.
    err = errs[0]
    path = _loc(err["loc"], data)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    msg = msg.removeprefix("Value error, ")
    return path, msg


def parse(data: Any, file: str = "<topology>") -> Topology:
    """Validate already-parsed YAML data; raise TopologyError on the first problem."""
    if not isinstance(data, dict):
        raise TopologyError(file, "", "a topology must be a mapping with name, routers, networks")
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        path, msg = _first_error(exc, data)
        raise TopologyError(file, path, msg) from None
    _cross_check(topo, file)
    return topo


def load(path: str) -> Topology:
    """Read and validate the topology file at `path`."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TopologyError(path, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TopologyError(path, "", f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    return loads(text, path)


def loads(text: str, file: str = "<topology>") -> Topology:
    """Validate a topology given as YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(file, where, f"not valid YAML: {problem}") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise TopologyError(file, "", "not valid YAML: nested too deeply") from None
    except Exception as exc:  # `!!int x`, `!!bool maybe`: PyYAML's constructors raise plain errors
        problem = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TopologyError(file, "", f"not valid YAML: a value cannot be read ({problem})") from None
    return parse(data, file)


def _check_mappings(t: Topology, file: str, ext_addrs: dict) -> None:
    """Floating IPs and port forwards: on the right router, unique, not clashing."""

    def fail(path: str, problem: str):
        raise TopologyError(file, path, problem)

    routers = {r.name: r for r in t.routers}
    nets_of = {r.name: [n for n in t.networks if n.router == r.name] for r in t.routers}

    def behind(router: str, addr, path: str):
        nets = [n for n in nets_of[router] if addr in n.cidr]
        if not nets:
            fail(path, f"{addr} is not on a network behind router {router!r}")
        n = nets[0]
        if addr in (n.gateway, n.cidr.network_address, n.cidr.broadcast_address):
            fail(path, f"{addr} is the gateway, network or broadcast address of {n.name}")

    used_float: dict = {}
    used_host: dict = {}
    for i, f in enumerate(t.floating_ips):
        p = f"floating_ips[{i}]"
        if f.router not in routers:
            fail(f"{p}.router", f"unknown router {f.router!r}")
        r = routers[f.router]
        if f.address not in r.external.address.network:
            fail(f"{p}.address", f"{f.address} is not on router {r.name!r}'s external network "
                 f"{r.external.address.network}")
        if f.address in (r.external.address.network.network_address, r.external.address.network.broadcast_address):
            fail(f"{p}.address", f"{f.address} is the network or broadcast address of the external network")
        if f.address == r.external.address.ip:
            fail(f"{p}.address", f"{f.address} is the router's own external address; use a port forward")
        if f.address in ext_addrs:
            fail(f"{p}.address", f"address {f.address} is already used by {ext_addrs[f.address]}")
        if f.address in used_float:
            fail(f"{p}.address", f"address {f.address} is already used by {used_float[f.address]}")
        used_float[f.address] = p
        behind(f.router, f.host, f"{p}.host")
        if (f.router, f.host) in used_host:
            fail(f"{p}.host", f"{f.host} already has a floating IP ({used_host[(f.router, f.host)]})")
        used_host[(f.router, f.host)] = p
    taken: list[tuple[str, str, int, int, str]] = []
    for i, pf in enumerate(t.port_forwards):
        p = f"port_forwards[{i}]"
        if pf.router not in routers:
            fail(f"{p}.router", f"unknown router {pf.router!r}")
        behind(pf.router, pf.to[0], f"{p}.to")
        lo, hi = pf.port
        if pf.to_port + (hi - lo) > 65535:
            fail(f"{p}.to", f"ports {pf.to_port}-{pf.to_port + hi - lo} run past 65535")
        for router, proto, olo, ohi, where in taken:
            if router == pf.router and proto == pf.protocol and lo <= ohi and olo <= hi:
                fail(f"{p}.port", f"{pf.protocol} {lo}-{hi} clashes with {where} ({olo}-{ohi})")
        taken.append((pf.router, pf.protocol, lo, hi, p))


def _cross_check(t: Topology, file: str) -> None:
    """Checks that span fields: names, addresses, references."""

    def fail(path: str, problem: str):
        raise TopologyError(file, path, problem)

    # Namespace names are global: one /run/netns.
    seen_ns: dict[str, str] = {}

    def claim_ns(name: str, path: str):
        if name in seen_ns:
            fail(path, f"namespace {name!r} is already used by {seen_ns[name]}")
        seen_ns[name] = path

    if t.internet:
        claim_ns(t.internet.namespace, "internet.namespace")
    router_names: dict[str, int] = {}
    for i, r in enumerate(t.routers):
        if r.name in router_names:
            fail(f"routers[{i}].name", f"duplicate router name {r.name!r}")
        router_names[r.name] = i
        claim_ns(r.ns, f"routers[{i}].{'namespace' if r.namespace else 'name'}")

    ext_addrs: dict[ipaddress.IPv4Address, str] = {}
    ext_ifaces: dict[str, str] = {}
    if t.internet:
        ext_addrs[t.internet.address.ip] = "internet.address"
        for j, h in enumerate(t.internet.hosts):
            if h in ext_addrs:
                fail(f"internet.hosts[{j}]", f"address {h} is already used by {ext_addrs[h]}")
            ext_addrs[h] = f"internet.hosts[{j}]"
    for i, r in enumerate(t.routers):
        p = f"routers[{i}].external"
        ext = r.external
        if ext.uplink == "internet":
            if not t.internet:
                fail(f"{p}.uplink", "there is no internet section to connect to; add one or set uplink: host")
            if ext.address.network != t.internet.address.network:
                fail(f"{p}.address", f"{ext.address} is not on the internet's network {t.internet.address.network}")
            gw_default = t.internet.address.ip
            port = short_ifname("e-", r.name)
            if port in ext_ifaces:
                fail(f"routers[{i}].name", f"its port name {port!r} on the internet clashes with {ext_ifaces[port]}")
            if port == t.internet.interface:
                fail(f"routers[{i}].name", f"its port name {port!r} clashes with internet.interface")
            ext_ifaces[port] = f"routers[{i}]"
        else:
            gw_default = None
        if ext.gateway is None and gw_default is None:
            fail(f"{p}.gateway", "required with uplink: host (the host's address on the uplink)")
        gw = ext.gateway or gw_default
        if gw not in ext.address.network:
            fail(f"{p}.gateway", f"{gw} is not on {ext.address.network}")
        if gw == ext.address.ip:
            fail(f"{p}.gateway", f"{gw} is the router's own address")
        if ext.uplink == "internet" and gw != t.internet.address.ip:
            fail(f"{p}.gateway", f"{gw} is not the internet's address {t.internet.address.ip}")
        if ext.uplink == "internet":
            if ext.address.ip in ext_addrs:
                fail(f"{p}.address", f"address {ext.address.ip} is already used by {ext_addrs[ext.address.ip]}")
            ext_addrs[ext.address.ip] = f"{p}.address"
        if not isinstance(r.snat, str) and r.snat != ext.address.ip:
            fail(f"routers[{i}].snat", f"{r.snat} is not an address of this router (its external address is {ext.address.ip})")

    net_names: dict[str, int] = {}
    bridges: dict[tuple[str, str], str] = {}
    cidrs: dict[str, list[tuple[ipaddress.IPv4Network, int]]] = {}
    for i, n in enumerate(t.networks):
        p = f"networks[{i}]"
        if n.name in net_names:
            fail(f"{p}.name", f"duplicate network name {n.name!r}")
        net_names[n.name] = i
        if n.router not in router_names:
            fail(f"{p}.router", f"unknown router {n.router!r}" + (
                f"; routers are {', '.join(sorted(router_names))}" if router_names else "; there are no routers"))
        r = t.routers[router_names[n.router]]
        br = n.router_interface
        if n.interface is None and br != "qr-" + n.name:
            pass  # long names get a digest; fine, it is shown by `plan`
        key = (r.ns, br)
        if key in bridges or br == r.external.interface:
            fail(f"{p}.interface", f"interface {br!r} in router {r.name!r} is already used by "
                 f"{bridges.get(key, f'routers[{router_names[n.router]}].external.interface')}")
        bridges[key] = p
        for other, j in cidrs.get(n.router, []):
            if other.overlaps(n.cidr):
                fail(f"{p}.cidr", f"{n.cidr} overlaps networks[{j}] ({other}) behind the same router")
        if n.cidr.overlaps(r.external.address.network):
            fail(f"{p}.cidr", f"{n.cidr} overlaps router {r.name!r}'s external network {r.external.address.network}")
        cidrs.setdefault(n.router, []).append((n.cidr, i))
        if n.gateway not in n.cidr:
            fail(f"{p}.gateway", f"{n.gateway} is outside {n.cidr}")
        if n.gateway in (n.cidr.network_address, n.cidr.broadcast_address):
            fail(f"{p}.gateway", f"{n.gateway} is the network or broadcast address of {n.cidr}")
        used: dict[ipaddress.IPv4Address, str] = {n.gateway: f"{p}.gateway"}
        for k, h in enumerate(n.hosts):
            hp = f"{p}.hosts[{k}]"
            claim_ns(h.namespace, f"{hp}.namespace")
            # The host's port on the bridge lives in the router too (desired.host_port_name).
            tap = short_ifname("tap-", h.namespace)
            if (r.ns, tap) in bridges or tap == r.external.interface:
                fail(f"{hp}.namespace", f"its port {tap!r} in router {r.name!r} clashes with interface "
                     f"{tap!r} of " + bridges.get((r.ns, tap), f"routers[{router_names[n.router]}].external"))
            bridges[(r.ns, tap)] = f"{hp} (its port)"
            if h.address not in n.cidr:
                fail(f"{hp}.address", f"{h.address} is outside {n.cidr}")
            if h.address in (n.cidr.network_address, n.cidr.broadcast_address):
                fail(f"{hp}.address", f"{h.address} is the network or broadcast address of {n.cidr}")
            if h.address in used:
                fail(f"{hp}.address", f"address {h.address} is already used by {used[h.address]}")
            used[h.address] = f"{hp}.address"

    _check_mappings(t, file, ext_addrs)
    _check_ovn(t, file, seen_ns)

    namespaces = t.namespaces()
    for i, c in enumerate(t.checks):
        p = f"checks[{i}]"
        if c.from_ not in namespaces:
            fail(f"{p}.from", f"{c.from_!r} is not a namespace of this lab"
                 + (f"; namespaces are {', '.join(namespaces)}" if namespaces else ""))
        if c.tcp is not None and c.udp is not None:
            fail(f"{p}.udp", "a check probes one of tcp and udp, not both")
        if c.source is not None and c.expect == "blocked":
            fail(f"{p}.source", "only a reachable check can name the source the far end sees")


def ovn_central_ns(t: Topology) -> str:
    """The namespace of the OVN sandbox's central part (NB, SB, northd)."""
    sb = t.ovn.sandbox if t.ovn else None
    return (sb.namespace if sb and sb.namespace else None) or f"{t.name}-ovn"


def _check_ovn(t: Topology, file: str, seen_ns: dict[str, str]) -> None:
    """The OVN engine's cross-checks (issue 12); `seen_ns`: namespace -> field path so far."""

    def fail(path: str, problem: str):
        raise TopologyError(file, path, problem)

    if t.engine == "kernel":
        if t.ovn is not None:
            fail("ovn", "is for engine: ovn; add `engine: ovn` or remove this section")
        for i, r in enumerate(t.routers):
            if r.gateway_chassis:
                fail(f"routers[{i}].gateway_chassis", "is for engine: ovn")
        for i, n in enumerate(t.networks):
            for k, h in enumerate(n.hosts):
                if h.chassis is not None:
                    fail(f"networks[{i}].hosts[{k}].chassis", "is for engine: ovn")
        return

    o = t.ovn
    if o is None:
        fail("ovn", "required with engine: ovn (sandbox: to run OVN here, or nb: an existing NB DB)")
    if (o.sandbox is None) == (o.nb is None):
        fail("ovn", "give exactly one of sandbox (natns runs OVN here) and nb (an existing NB DB)")
    if not t.internet:
        fail("internet", "required with engine: ovn (the external network the gateway chassis reach)")
    for i, pf in enumerate(t.port_forwards):
        fail(f"port_forwards[{i}]", "not supported yet with engine: ovn")
    for i, r in enumerate(t.routers):
        if r.external.uplink != "internet":
            fail(f"routers[{i}].external.uplink", "only uplink: internet works with engine: ovn")

    chassis: dict[str, object] = {}
    sb = o.sandbox
    if sb is not None:
        if not sb.chassis:
            fail("ovn.sandbox.chassis", "needs at least one chassis")
        central = ovn_central_ns(t)
        if central in seen_ns:
            fail("ovn.sandbox.namespace" if sb.namespace else "name",
                 f"the OVN central namespace {central!r} is already used by {seen_ns[central]}")
        seen_ns[central] = "ovn.sandbox.namespace"
        for j, c in enumerate(sb.chassis):
            p = f"ovn.sandbox.chassis[{j}]"
            if c.name in chassis:
                fail(f"{p}.name", f"duplicate chassis name {c.name!r}")
            chassis[c.name] = c
            if c.ns in seen_ns:
                fail(f"{p}.{'namespace' if c.namespace else 'name'}",
                     f"namespace {c.ns!r} is already used by {seen_ns[c.ns]}")
            seen_ns[c.ns] = p
        ul = sb.underlay
        if ul.num_addresses - 2 < len(sb.chassis) + 1:
            fail("ovn.sandbox.underlay", f"{ul} has too few addresses for the central "
                 f"namespace and {len(sb.chassis)} chassis")
        others = [(t.internet.address.network, "internet.address")]
        others += [(n.cidr, f"networks[{i}].cidr") for i, n in enumerate(t.networks)]
        for net, where in others:
            if ul.overlaps(net):
                fail("ovn.sandbox.underlay", f"{ul} overlaps {where} ({net})")

    for i, n in enumerate(t.networks):
        for k, h in enumerate(n.hosts):
            p = f"networks[{i}].hosts[{k}].chassis"
            if sb is None:
                continue  # an existing deployment: the chassis is named at `natns attach`
            if h.chassis is None:
                fail(p, "required with an OVN sandbox (the chassis the host runs on; chassis are "
                     + ", ".join(chassis) + ")")
            if h.chassis not in chassis:
                fail(p, f"unknown chassis {h.chassis!r}; chassis are " + ", ".join(chassis))

    fip_routers = {f.router for f in t.floating_ips}
    for i, r in enumerate(t.routers):
        p = f"routers[{i}].gateway_chassis"
        seen: set[str] = set()
        for j, name in enumerate(r.gateway_chassis):
            if name in seen:
                fail(f"{p}[{j}]", f"chassis {name!r} is listed twice")
            seen.add(name)
            if sb is None:
                continue
            if name not in chassis:
                fail(f"{p}[{j}]", f"unknown chassis {name!r}; chassis are " + ", ".join(chassis))
            if not chassis[name].gateway:
                fail(f"{p}[{j}]", f"chassis {name!r} is not a gateway chassis (set gateway: true on it)")
        needs = r.snat != "off" or r.name in fip_routers
        if needs and not r.gateway_chassis:
            what = "SNAT" if r.snat != "off" else "floating IPs"
            fail(p, f"router {r.name!r} has {what}: name at least one chassis with gateway: true")
        if sb is not None and len(r.gateway_chassis) >= 2 and len(sb.chassis) < 3:
            fail(p, f"HA with {len(r.gateway_chassis)} gateway chassis needs a third chassis in "
                 "ovn.sandbox.chassis: BFD needs a peer to tell a dead gateway from a lost link")
