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

from .errors import TopologyError

IFNAMSIZ = 15  # bytes an interface name may have (IFNAMSIZ - 1)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_name(value: str, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value.encode()) > limit:
        raise ValueError(
            f"{what} {value!r} is {len(value.encode())} bytes; the kernel takes at most {limit}"
        )
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} may hold only letters, digits, '_', '.', '-' "
            "and must start with a letter or digit"
        )
    return value


def check_ifname(value: str) -> str:
    """An interface name the kernel will take (1-15 bytes, no '/', ':' or space)."""
    return _check_name(value, "interface name", IFNAMSIZ)


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


class Topology(_Strict):
    """A whole lab, as written in a topology file."""

    name: str
    backend: Literal["nftables", "iptables"] = "nftables"
    internet: Internet | None = None
    routers: list[Router] = Field(default_factory=list)
    networks: list[Network] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", v):
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


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap", "literal['masquerade','off']"):
            continue
        elif isinstance(part, str) and (part.startswith("function-") or part.startswith("literal[")
                                         or part in ("IPv4Address", "IPv4Interface", "IPv4Network", "str", "int")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(exc: ValidationError) -> tuple[str, str]:
    errs = exc.errors(include_url=False)
    # Prefer errors that aren't union-branch noise.
    err = errs[0]
    path = _loc(err["loc"])
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
        path, msg = _first_error(exc)
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
    return parse(data, file)


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
            if h.address not in n.cidr:
                fail(f"{hp}.address", f"{h.address} is outside {n.cidr}")
            if h.address in (n.cidr.network_address, n.cidr.broadcast_address):
                fail(f"{hp}.address", f"{h.address} is the network or broadcast address of {n.cidr}")
            if h.address in used:
                fail(f"{hp}.address", f"address {h.address} is already used by {used[h.address]}")
            used[h.address] = f"{hp}.address"
