"""A small synchronous rtnetlink client: pyroute2's messages over a plain socket.

Every message's bytes are made and read by pyroute2's own netlink classes
(`ifinfmsg`, `ifaddrmsg`, `rtmsg`, and `nlmsgerr` for ACKs and errors), with
the attribute shapes pyroute2's IPRoute uses (a veth's peer is
`IFLA_LINKINFO` → `IFLA_INFO_DATA` → `VETH_INFO_PEER`, carrying its own
`IFLA_IFNAME` and `IFLA_NET_NS_FD`). Written here by hand is only the
transport: one blocking netlink socket made inside the namespace, a sequence
number per request, reading until the request's `NLMSG_DONE`, ACK or error.

Why not IPRoute itself: pyroute2 0.9 runs every request through an asyncio
loop, ~2.5-4 ms each, and natns's hot paths (observe and apply, once per
namespace of a lab with hundreds of routers) make several requests per
namespace. pyroute2's pure-Python codec still costs far more than the kernel
for most requests (~0.1-0.25 ms to encode one, ~0.35-0.4 ms to decode one
link's ~40 attributes), so:

* each distinct request is encoded once by pyroute2 and kept; sending it
  again only sets its sequence number (the three dumps of every namespace,
  `lo`/`eth0` lookups and the same address or route in every router repeat);
* a name → index lookup decodes the reply's header and fixed fields only
  (pyroute2's `ifinfmsg` without its attribute table), and asks for no ACK;
* a route dump decodes each route's fixed part first and the whole route
  only if it is one asked for (natns's own, in the main table);
* attributes are decoded lazily by pyroute2 and only the few natns reads are
  looked at; link requests ask the kernel to skip the per-link IPv6
  statistics (`RTEXT_FILTER_SKIP_STATS`).

docs/performance.md has the numbers. Only what natns uses is here: dump
links / IPv4 addresses / routes / neighbours, add a bridge or a veth pair
(peer straight into another namespace), set a link's alias, master, MTU and
state, add and delete addresses and routes, delete a link; and for the
read-only explainers (path, trace, doctor, capture): links with the details
they follow (veth peer and its netns id, MAC, operstate, IPv4 devconf), a
link's index or name, the netns id of a namespace, and route lookups
(`ip route get [fibmatch]`, one request each).

This is the only rtnetlink client in natns: nothing else opens an IPRoute or
runs `ip -j` to read.

Errors are `RtnlError` (an OSError, and a pyroute2 NetlinkError for code that
catches those: `.code` is the errno; the kernel's extended-ack text, when it
sends one, is in the message and in `.extack`), raised on the caller's
thread. Compare `.code` with the named constants below (`ENODEV`, `EEXIST`,
...), never with numbers.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import struct
import types
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Self

from pyroute2.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_MULTI,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nla_slot,
    nlmsgerr,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETNSID,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWNSID,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.nsidmsg import nsidmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .nsexec import call_in

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

IFF_UP = 0x1
AF_INET = 2
AF_INET6 = 10
AF_UNSPEC = 0
#: ifa_flags: add an IPv6 address without duplicate address detection (usable at once).
IFA_F_NODAD = 0x02
#: ifa_flags of an IPv6 address whose duplicate address detection found another holder
#: (the kernel never uses it), and of one still being checked.
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
#: IFLA_EXT_MASK bit (linux/rtnetlink.h; not among pyroute2's constants): skip
#: the statistics the kernel may leave out (IPv6's, ~370 bytes a link).
RTEXT_FILTER_SKIP_STATS = 1 << 3

#: rtm_flags of a route lookup: report the table used (as `ip route get` asks),
#: and answer with the matching FIB entry instead of the route (`fibmatch`).
RTM_F_LOOKUP_TABLE = 0x1000
RTM_F_FIB_MATCH = 0x2000
#: A netns id the kernel has not assigned (RTM_GETNSID's answer then).
NSID_NOT_ASSIGNED = 0xFFFFFFFF

# The errnos natns's callers tell apart (compare `RtnlError.code` with these).
EEXIST = _errno.EEXIST                # 17: the link / address / route is there already
ENODEV = _errno.ENODEV                # 19: no such link
ESRCH = _errno.ESRCH                  # 3: no such route (delete)
EADDRNOTAVAIL = _errno.EADDRNOTAVAIL  # 99: no such address (delete)
EINVAL = _errno.EINVAL
ENETUNREACH = _errno.ENETUNREACH      # route lookup: no route
EHOSTUNREACH = _errno.EHOSTUNREACH    # route lookup: forwarding off, or an unreachable route
EXDEV = _errno.EXDEV                  # route lookup: rp_filter
EACCES = _errno.EACCES                # route lookup: a prohibit route

# The netlink message header, read only to split a received buffer into
# messages and route each one (the messages themselves are pyroute2's).
_NLMSGHDR = struct.Struct("=LHHL")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index (linux/if_addr.h)
IFA_ADDRESS, IFA_LOCAL = 1, 2
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change (linux/rtnetlink.h)
_U32 = struct.Struct("=I")
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 3, 4, 10, 18, 20  # linux/if_link.h
IFLA_INFO_KIND = 1
_LINK_IN_PLACE = frozenset((IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS))
_ADDR_IN_PLACE = frozenset((IFA_ADDRESS, IFA_LOCAL))
_RTM_NEWNETCONF, _RTM_GETNETCONF = 80, 82
_NETCONFA_IFINDEX, _NETCONFA_FORWARDING, _NETCONFA_IFINDEX_ALL = 1, 2, -1
_NLMSGHDR_LEN = 16

#: The pyroute2 class for each reply natns asks for.
_REPLY_CLASS = {RTM_NEWLINK: ifinfmsg, RTM_NEWADDR: ifaddrmsg, RTM_NEWROUTE: rtmsg,
                RTM_NEWNEIGH: ndmsg, RTM_NEWNSID: nsidmsg}


class RtnlError(OSError, NetlinkError):
    """A request the kernel refused; `.code` is the (positive) errno, `.extack` the
    kernel's extended-ack text ("" when it sent none).

    Also a pyroute2 NetlinkError, so code written against IPRoute's errors
    (`except NetlinkError`) keeps catching it.
    """

    def __init__(self, code: int, what: str = ""):
        super().__init__(code, f"{os.strerror(code)}" + (f" ({what})" if what else ""))
        self.code = code
        self.extack = what
        self.extra_code = 0

    @property
    def reason(self) -> str:
        """What the kernel said, as pyroute2's NetlinkError has it: the extended-ack text,
        else the errno's text ("No route to host")."""
        return self.extack or os.strerror(self.code)

    def __str__(self) -> str:
        return f"({self.code}, '{self.strerror}')"


_RTA = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF


def parse_attrs(data: bytes | memoryview, offset: int, end: int) -> dict[int, memoryview]:
    """Attributes in data[offset:end] by type (the last one wins; nested flag dropped).

    Used for the nf_tables table dump (`nftlib.tables`), the netconf answer of
    `Rtnl.forwarding`, and the link and address dumps (`Rtnl.links`, `Rtnl.addrs`:
    the few attributes natns reads, which pyroute2 decodes ~20x slower); other
    rtnetlink messages go through pyroute2's classes.
    """
    return _pick_attrs(data, offset, end, None)


def _pick_attrs(data, offset: int, end: int, wanted: frozenset | None) -> dict[int, memoryview]:
    """parse_attrs, keeping only the attribute types in `wanted` (None: all). A link message
    holds ~50 attributes, of which a Link reads five: the others are stepped over, not sliced."""
    out: dict[int, memoryview] = {}
    mv = memoryview(data)
    unpack = _RTA.unpack_from
    while offset + 4 <= end:
        n, kind = unpack(data, offset)
        if n < 4:
            break
        kind &= NLA_TYPE_MASK
        if wanted is None or kind in wanted:
            out[kind] = mv[offset + 4:offset + n]
        offset += (n + 3) & ~3
    return out


@dataclass
class Link:
    """One link as RTM_NEWLINK describes it: the fields natns reads."""

    index: int
    name: str
    flags: int
    kind: str | None = None
    alias: str | None = None
    master: int | None = None
    mtu: int | None = None


@dataclass
class LinkDetail(Link):
    """A link with what the read-only explainers follow (see `Rtnl.link_details`)."""

    operstate: str | None = None
    peer_index: int | None = None   # IFLA_LINK (a veth's peer's ifindex)
    peer_nsid: int | None = None    # IFLA_LINK_NETNSID (None: the same namespace)
    mac: str | None = None
    inet_conf: dict = field(default_factory=dict)  # the IPv4 devconf (forwarding, rp_filter, ...)
    hairpin: bool | None = None     # a bridge port's IFLA_BRPORT_MODE (None: not a bridge port)


@dataclass
class Addr:
    index: int
    address: str
    prefixlen: int
    local: str | None = None  # IFA_LOCAL (differs from `address` on point-to-point links only)
    family: int = AF_INET
    flags: int = 0  # ifa_flags: IFA_F_DADFAILED, IFA_F_TENTATIVE, IFA_F_NODAD, ...


@dataclass
class Neighbour:
    """One neighbour entry: IPv4 (ARP) or IPv6 (neighbour discovery)."""

    index: int
    dst: str | None
    lladdr: str | None
    state: int  # NUD_* bits; see NUD_NAMES


#: NUD_* state bits, as `ip neigh` names them.
NUD_NAMES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
             0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}


@dataclass
class Route:
    table: int
    protocol: int
    dst: str | None
    dst_len: int
    gateway: str | None
    oif: int | None
    extra: dict = field(default_factory=dict)
    family: int = AF_INET


def _attrs(msg, wanted: frozenset) -> dict:
    """The values of the attributes of `msg` named in `wanted` (the first of each wins).

    One pass over pyroute2's attribute slots; only the wanted ones are decoded.
    """
    out: dict = {}
    for slot in msg["attrs"]:
        name = slot.name
        if name in wanted and name not in out:
            out[name] = slot.value
    return out


_LINK_ATTRS = frozenset(("IFLA_IFNAME", "IFLA_LINKINFO", "IFLA_IFALIAS", "IFLA_MASTER", "IFLA_MTU"))
_DETAIL_ATTRS = _LINK_ATTRS | frozenset(("IFLA_OPERSTATE", "IFLA_LINK", "IFLA_LINK_NETNSID", "IFLA_ADDRESS",
                                         "IFLA_AF_SPEC"))
_ADDR_ATTRS = frozenset(("IFA_ADDRESS", "IFA_LOCAL"))
_NEIGH_ATTRS = frozenset(("NDA_DST", "NDA_LLADDR"))


def _cstr(value) -> str:
    """A netlink string attribute (NUL-terminated) as text."""
    return bytes(value).split(b"\0", 1)[0].decode(errors="replace")


def _link_in_place(data: bytes, at: int) -> Link:
    """The Link of the RTM_NEWLINK message at data[at:], read in place: its ifinfomsg and
    the five attributes a Link holds. What `_link` makes from pyroute2's ifinfmsg, ~20x
    cheaper (pyroute2 makes an object per attribute and per nested attribute: a link
    dump of every namespace is most of what a no-op `up` reads; docs/performance.md)."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, at + _NLMSGHDR_LEN)
    a = _pick_attrs(data, at + _NLMSGHDR_LEN + _IFINFOMSG.size, at + _NLMSGHDR.unpack_from(data, at)[0], _LINK_IN_PLACE)
    kind = None
    info = a.get(IFLA_LINKINFO)
    if info is not None:
        k = parse_attrs(info, 0, len(info)).get(IFLA_INFO_KIND)
        kind = _cstr(k) if k is not None else None
    name, alias, master, mtu = a.get(IFLA_IFNAME), a.get(IFLA_IFALIAS), a.get(IFLA_MASTER), a.get(IFLA_MTU)
    return Link(
        index=index, name=_cstr(name) if name is not None else "", flags=flags, kind=kind,
        alias=_cstr(alias) if alias is not None else None,
        master=_U32.unpack_from(master)[0] if master is not None and len(master) >= 4 else None,
        mtu=_U32.unpack_from(mtu)[0] if mtu is not None and len(mtu) >= 4 else None,
    )


RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
_ROUTE_IN_PLACE = frozenset((RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE))
_RTMSG_LEN = 12  # family, dst_len, src_len, tos, table, protocol, scope, type; flags (u32)


def _route_in_place(data: bytes, at: int) -> Route:
    """The Route of the RTM_NEWROUTE message at data[at:], read in place (its rtmsg and
    the four attributes a Route holds), as `_link_in_place` reads a link."""
    base = at + _NLMSGHDR_LEN
    fam, dst_len, rtable, proto = data[base], data[base + 1], data[base + 4], data[base + 5]
    a = _pick_attrs(data, base + _RTMSG_LEN, at + _NLMSGHDR.unpack_from(data, at)[0], _ROUTE_IN_PLACE)
    af = socket.AF_INET6 if fam == AF_INET6 else socket.AF_INET
    dst, gw, oif, t = a.get(RTA_DST), a.get(RTA_GATEWAY), a.get(RTA_OIF), a.get(RTA_TABLE)
    return Route(
        table=_U32.unpack_from(t)[0] if t is not None and len(t) >= 4 else rtable,
        protocol=proto, dst=socket.inet_ntop(af, bytes(dst)) if dst is not None else None, dst_len=dst_len,
        gateway=socket.inet_ntop(af, bytes(gw)) if gw is not None else None,
        oif=_U32.unpack_from(oif)[0] if oif is not None and len(oif) >= 4 else None, family=fam,
    )


def _link_detail(msg: ifinfmsg) -> LinkDetail:
    a = _attrs(msg, _DETAIL_ATTRS)
    info = a.get("IFLA_LINKINFO")
    spec = a.get("IFLA_AF_SPEC")
    conf = spec.get_attr("AF_INET") if spec is not None else None
    port = info.get_attr("IFLA_INFO_SLAVE_DATA") if info is not None \
        and info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge" else None
    mode = port.get_attr("IFLA_BRPORT_MODE") if port is not None else None
    return LinkDetail(
        index=msg["index"], name=a.get("IFLA_IFNAME") or "", flags=msg["flags"],
        kind=info.get_attr("IFLA_INFO_KIND") if info is not None else None,
        alias=a.get("IFLA_IFALIAS"), master=a.get("IFLA_MASTER"), mtu=a.get("IFLA_MTU"),
        operstate=a.get("IFLA_OPERSTATE"), peer_index=a.get("IFLA_LINK"), peer_nsid=a.get("IFLA_LINK_NETNSID"),
        mac=a.get("IFLA_ADDRESS"), inet_conf=dict(conf) if conf else {},
        hairpin=bool(mode) if mode is not None else None,
    )


def _decode(cls, data: bytes, at: int):
    """The message at data[at:], decoded with pyroute2 class `cls`."""
    m = cls(data, offset=at)
    m.decode()
    return m


class _ifinfmsg_head(ifinfmsg):
    """pyroute2's ifinfmsg with its attribute table left out: decodes the netlink
    header and the ifinfomsg fields only (what an index lookup needs), ~15x
    cheaper than decoding a link's ~40 attributes."""

    nla_map = ()


def _decode_only(msg, offset: int, keep: frozenset) -> None:
    """pyroute2's attribute loop (nlmsg_base.decode_nlas), for the attribute types in
    `keep` only: the others are stepped over without making an object for each. Each
    kept attribute is made and decoded by pyroute2's own class for it, as pyroute2 does."""
    table = type(msg)._nlmsg_base__t_nla_map
    data, end = msg.data, msg.offset + msg.length
    while offset <= end - 4:
        length, kind = struct.unpack_from("HH", data, offset)
        length = min(max(length, 4), end - offset)
        kind &= ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
        if kind in keep and kind in table:
            prime = table[kind]
            cls = prime["class"]
            if isinstance(cls, types.FunctionType):
                cls = cls(msg, data=data, offset=offset)
            nla = cls(data=data, offset=offset, parent=msg, length=length, init=prime["init"])
            nla._nla_array = prime["nla_array"]
            msg["attrs"].append(nla_slot(prime["name"], nla))
        offset += (length + 3) & ~3


def _types_of(cls, names) -> frozenset:
    """The attribute type numbers of pyroute2 message class `cls` called `names`."""
    cls()  # compiles the class's attribute table
    table = cls._nlmsg_base__r_nla_map
    return frozenset(table[n]["type"] for n in names)


class _ifinfmsg_detail(ifinfmsg):
    """pyroute2's ifinfmsg decoding the attributes of a LinkDetail only (the per-link
    statistics and IPv6 configuration, most of a link's bytes, are stepped over)."""

    def decode_nlas(self, offset):
        _decode_only(self, offset, _DETAIL_TYPES)


_DETAIL_TYPES = _types_of(ifinfmsg, _DETAIL_ATTRS)


class _rtmsg_head(rtmsg):
    """pyroute2's rtmsg, header and rtmsg fields only: enough to skip a route."""

    nla_map = ()


# -- request bodies: pyroute2 messages, attributes as pyroute2's IPRoute shapes them


def _ifinfmsg(index: int = 0, flags: int = 0, change: int = 0, attrs: list | None = None) -> ifinfmsg:
    m = ifinfmsg()
    m["family"] = socket.AF_UNSPEC
    m["ifi_type"] = 0
    m["index"] = index
    m["flags"] = flags
    m["change"] = change
    m["attrs"] = attrs or []
    return m


def _ifaddrmsg(index: int = 0, prefixlen: int = 0, attrs: list | None = None, family: int = AF_INET,
              flags: int = 0) -> ifaddrmsg:
    m = ifaddrmsg()
    m["family"] = family
    m["prefixlen"] = prefixlen
    m["flags"] = flags
    m["scope"] = 0
    m["index"] = index
    m["attrs"] = attrs or []
    return m


def _rtmsg(dst_len: int = 0, table: int = 0, proto: int = 0, rtype: int = 0,
           attrs: list | None = None, family: int = AF_INET) -> rtmsg:
    m = rtmsg()
    m["family"] = family
    m["dst_len"] = dst_len
    m["src_len"] = 0
    m["tos"] = 0
    m["table"] = table if table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE has the real one
    m["proto"] = proto
    m["scope"] = RT_SCOPE_UNIVERSE
    m["type"] = rtype
    m["flags"] = 0
    m["attrs"] = attrs or []
    return m


def _linkinfo(kind: str, data: list | None = None) -> tuple:
    info: list = [("IFLA_INFO_KIND", kind)]
    if data:
        info.append(("IFLA_INFO_DATA", {"attrs": data}))
    return ("IFLA_LINKINFO", {"attrs": info})


#: Requests as pyroute2 encoded them (sequence number 0), by (type, flags,
#: what the message was made from); see the module docstring. Bounded: a
#: full cache is emptied.
_ENCODED: dict[tuple, bytes] = {}
_ENCODED_MAX = 4096
_SEQ = struct.Struct("=L")
_SEQ_OFFSET = 8  # nlmsg_seq in struct nlmsghdr


class Rtnl:
    """One rtnetlink socket (in the namespace it was made in); close it when done."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.seq = 0
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:  # pragma: no cover - old kernels
            pass
        sock.bind((0, 0))

    # -- lifecycle

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport

    def _send(self, kind: int, flags: int, build: Callable[[], object], key: Hashable = None) -> int:
        """Send request `kind` whose body is the pyroute2 message `build()`; its sequence number.

        `key` (everything the message is made from) lets the encoded bytes be
        reused; None encodes afresh.
        """
        self.seq += 1
        flags |= NLM_F_REQUEST
        ck = None if key is None else (kind, flags, key)
        data = _ENCODED.get(ck) if ck is not None else None
        if data is None:
            msg = build()
            hdr = msg["header"]
            hdr["type"] = kind
            hdr["flags"] = flags
            hdr["sequence_number"] = 0
            hdr["pid"] = 0
            msg.encode()
            data = bytes(msg.data)
            if ck is not None:
                if len(_ENCODED) >= _ENCODED_MAX:
                    _ENCODED.clear()
                _ENCODED[ck] = data
        buf = bytearray(data)
        _SEQ.pack_into(buf, _SEQ_OFFSET, self.seq)
        self.sock.send(buf)
        return self.seq

    def _replies(self, seq: int, single: bool = False):
        """Yield (type, buffer, offset) of each reply to request `seq` until its DONE or ACK.

        With `single` (a request without NLM_F_ACK that is not a dump), the
        first answer ends it. NLMSG_ERROR (and a dump's NLMSG_DONE, which
        carries the dump's error code) are decoded with pyroute2's
        `nlmsgerr`; a refusal raises RtnlError.
        """
        while True:
            data = self.sock.recv(1 << 17)
            off, end = 0, len(data)
            while off + _NLMSGHDR_LEN <= end:
                n, kind, mflags, mseq = _NLMSGHDR.unpack_from(data, off)
                if n < _NLMSGHDR_LEN:
                    break
                at = off
                off += (n + 3) & ~3
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if kind == NLMSG_ERROR or kind == NLMSG_DONE:
                    if kind == NLMSG_DONE and n < _NLMSGHDR_LEN + 4:
                        return
                    err = nlmsgerr(data, offset=at)
                    err.decode()
                    if err["error"]:
                        raise RtnlError(-err["error"], err.get_attr("NLMSGERR_ATTR_MSG") or "")
                    return  # the ACK, or the end of the dump
                yield kind, data, at
                if single and not mflags & NLM_F_MULTI:
                    return

    def _decoded(self, replies, cls=None) -> list:
        """`replies`, each decoded with its pyroute2 class (or `cls`)."""
        out = []
        for kind, data, at in replies:
            c = cls or _REPLY_CLASS.get(kind)
            if c is not None:  # nothing else is asked for
                out.append(_decode(c, data, at))
        return out

    def dump(self, kind: int, msg, cls=None) -> list:
        """The messages (pyroute2's, decoded) of dump request `kind` with body `msg` (a pyroute2 message)."""
        return self._decoded(self._replies(self._send(kind, NLM_F_DUMP, lambda: msg)), cls)

    def do(self, kind: int, flags: int, msg, cls=None) -> list:
        """A request that the kernel acknowledges (or answers); RtnlError on refusal."""
        return self._decoded(self._replies(self._send(kind, flags | NLM_F_ACK, lambda: msg)), cls)

    def _ack(self, kind: int, flags: int, build: Callable[[], object], key: Hashable) -> None:
        """A change the kernel acknowledges; RtnlError on refusal."""
        for _ in self._replies(self._send(kind, flags | NLM_F_ACK, build, key)):
            pass

    def _dump(self, kind: int, build: Callable[[], object], key: Hashable):
        return self._replies(self._send(kind, NLM_F_DUMP, build, key))

    # -- links

    def links(self) -> list[Link]:
        replies = self._dump(RTM_GETLINK, lambda: _ifinfmsg(attrs=[("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]),
                             ("dump",))
        return [_link_in_place(data, at) for kind, data, at in replies if kind == RTM_NEWLINK]

    def link_details(self) -> list[LinkDetail]:
        """Every link with its veth peer, netns id of the peer, MAC, operstate and IPv4 devconf."""
        replies = self._dump(RTM_GETLINK, lambda: _ifinfmsg(attrs=[("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]),
                             ("dump",))
        return [_link_detail(m) for m in self._decoded(replies, _ifinfmsg_detail)]

    def _get_link(self, name: str | None, cls, index: int = 0):
        """The link called `name` (or with `index`) decoded with `cls` (None: a Link read in
        place), or None (asked without an ACK: the answer is enough)."""
        if name is not None:
            build = lambda: _ifinfmsg(attrs=[("IFLA_IFNAME", name), ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])
            key: tuple = ("get", name)
        else:
            build = lambda: _ifinfmsg(index, attrs=[("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])
            key = ("get#", index)
        try:
            replies = self._replies(self._send(RTM_GETLINK, 0, build, key), single=True)
            if cls is None:  # a Link, read in place
                msgs = [_link_in_place(data, at) for kind, data, at in replies if kind == RTM_NEWLINK]
            else:
                msgs = self._decoded(replies, cls)
        except RtnlError as exc:
            if exc.code in (ENODEV, EINVAL):
                return None
            raise
        return msgs[0] if msgs else None

    def link_by_index(self, index: int) -> Link | None:
        """The link with ifindex `index`, or None."""
        return self._get_link(None, None, index)

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        return self._get_link(name, None)

    def index(self, name: str) -> int | None:
        """The index of the link called `name`, or None (its attributes are not decoded)."""
        m = self._get_link(name, _ifinfmsg_head)
        return m["index"] if m is not None else None

    def add_bridge(self, name: str) -> None:
        self._ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                  lambda: _ifinfmsg(attrs=[("IFLA_IFNAME", name), _linkinfo("bridge")]), ("bridge", name))

    def add_veth(self, name: str, peer: str, peer_ns_fd: int) -> None:
        """Veth `name` here, its peer `peer` in the namespace open at fd `peer_ns_fd`."""
        def build():
            peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_ns_fd)]
            return _ifinfmsg(attrs=[
                ("IFLA_IFNAME", name),
                _linkinfo("veth", [("VETH_INFO_PEER", {"attrs": peer_attrs})]),
            ])
        # The fd is part of the key: the same bytes name the same fd, which the
        # kernel resolves when it gets the request.
        self._ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, build, ("veth", name, peer, peer_ns_fd))

    def set_link(self, index: int, *, alias: str | None = None, master: int | None = None,
                 mtu: int | None = None, up: bool | None = None) -> None:
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        attrs: list = []
        if alias is not None:
            attrs.append(("IFLA_IFALIAS", alias))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        if mtu is not None:
            attrs.append(("IFLA_MTU", mtu))
        self._ack(RTM_NEWLINK, 0, lambda: _ifinfmsg(index, flags, change, attrs),
                  ("set", index, flags, change, tuple(attrs)))

    def del_link(self, index: int) -> None:
        self._ack(RTM_DELLINK, 0, lambda: _ifinfmsg(index), ("del", index))

    # -- addresses

    def addrs(self, family: int = AF_INET) -> list[Addr]:
        """The addresses of `family` (AF_INET; AF_INET6; AF_UNSPEC: both). IPv6 addresses of
        link scope (the kernel's own fe80::/64 on every link) are left out, undecoded."""
        out = []
        replies = self._dump(RTM_GETADDR, lambda: _ifaddrmsg(family=family), ("dump", family))
        for _, data, at in replies:
            # Read in place, not through pyroute2's ifaddrmsg: the fixed fields (linux/if_addr.h)
            # and the two address attributes are all an Addr holds, and pyroute2 makes an object
            # for each of a message's ~6 attributes: 69 -> 3 us per address (a router with 5,000
            # floating IPs holds 5,000 /32s: 343 -> 15 ms per read; docs/performance.md).
            fam, prefixlen, aflags, scope, index = _IFADDRMSG.unpack_from(data, at + _NLMSGHDR_LEN)
            if fam != AF_INET and (fam != AF_INET6 or family == AF_INET or scope == RT_SCOPE_LINK):
                continue
            if fam != family and family != AF_UNSPEC:
                continue
            a = _pick_attrs(data, at + _NLMSGHDR_LEN + _IFADDRMSG.size, at + _NLMSGHDR.unpack_from(data, at)[0],
                            _ADDR_IN_PLACE)
            raw = a.get(IFA_ADDRESS) or a.get(IFA_LOCAL)
            if raw is None:
                continue
            local = a.get(IFA_LOCAL)
            out.append(Addr(index, socket.inet_ntop(fam, raw), prefixlen,
                            socket.inet_ntop(fam, local) if local is not None else None, fam, aflags))
        return out

    def _addr(self, kind: int, flags: int, index: int, address: str, prefixlen: int) -> None:
        if ":" in address:  # IPv6: no IFA_LOCAL, and no duplicate address detection (usable at once)
            self._ack(kind, flags,
                      lambda: _ifaddrmsg(index, prefixlen, [("IFA_ADDRESS", address)], AF_INET6, IFA_F_NODAD),
                      ("addr6", index, address, prefixlen))
            return
        self._ack(kind, flags,
                  lambda: _ifaddrmsg(index, prefixlen, [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]),
                  ("addr", index, address, prefixlen))

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        self._addr(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, address, prefixlen)

    def del_addr(self, index: int, address: str, prefixlen: int) -> None:
        self._addr(RTM_DELADDR, 0, index, address, prefixlen)

    # -- routes

    def routes(self, *, table: int | None = None, protocol: int | None = None,
               family: int = AF_INET) -> list[Route]:
        """The IPv4 routes (of `table`, with `protocol`, when given); `family` AF_INET6 or
        AF_UNSPEC (both) for IPv6 ones.

        Each route's fixed part is decoded first; only the routes asked for
        are decoded whole (a namespace's local table alone has a few routes
        per address).
        """
        out = []
        compat = None if table is None else (table if table < 256 else 252)  # rtm_table of `table`
        families = (AF_INET, AF_INET6) if family == AF_UNSPEC else (family,)
        if family == AF_INET:
            replies = self._dump(RTM_GETROUTE, _rtmsg, ("dump",))
        else:
            # a table past 255 is rtm_table 252 (RT_TABLE_COMPAT) in replies, but a request for
            # 252 asks the kernel for table 252 itself: such tables are filtered here only
            replies = self._filtered_route_dump(family, compat if compat != 252 else None, protocol)
        for _, data, at in replies:
            # rtmsg's fixed fields, read in place: family, ..., table, protocol (linux/rtnetlink.h)
            fam, rtable, rproto = data[at + _NLMSGHDR_LEN], data[at + _NLMSGHDR_LEN + 4], data[at + _NLMSGHDR_LEN + 5]
            if fam not in families or (protocol is not None and rproto != protocol) \
                    or (compat is not None and rtable != compat):
                continue
            route = _route_in_place(data, at)
            if table is not None and route.table != table:
                continue
            out.append(route)
        return out

    def _filtered_route_dump(self, family: int, table: int | None, protocol: int | None):
        """A route dump (for IPv6, or both families) that the kernel filters by table and
        protocol itself (NETLINK_GET_STRICT_CHK, set for this request only): a namespace
        has a few IPv6 routes of its own per link (fe80::/64, multicast, local), which are
        then never sent. The replies still pass `routes`' own filter."""
        def build():
            return _rtmsg(0, table or 0, protocol or 0, 0, [], family)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:  # pragma: no cover - kernels before 4.20: an unfiltered dump
            return self._dump(RTM_GETROUTE, lambda: _rtmsg(family=family), ("dump", family))
        try:
            seq = self._send(RTM_GETROUTE, NLM_F_DUMP, build, ("dumpf", family, table, protocol))
        finally:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)
        return self._replies(seq)

    def _route(self, kind: int, flags: int, dst: str, *, proto: int, table: int = RT_TABLE_MAIN,
               gateway: str | None = None, oif: int | None = None) -> None:
        v6 = ":" in dst
        net, plen = dst.split("/") if "/" in dst else (dst, "128" if v6 else "32")
        plen_i = int(plen)
        attrs: list = [("RTA_TABLE", table)]
        if plen_i:
            attrs.append(("RTA_DST", net))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        if oif is not None:
            attrs.append(("RTA_OIF", oif))
        self._ack(kind, flags, lambda: _rtmsg(plen_i, table, proto, RTN_UNICAST, attrs, AF_INET6 if v6 else AF_INET),
                  ("route", plen_i, table, proto, tuple(attrs)))

    def route_get(self, dst: str, *, src: str | None = None, iif: int | None = None,
                  fibmatch: bool = False):
        """`ip route get [fibmatch] DST [from SRC] [iif IIF]`: the kernel's answer, one request.

        Returns pyroute2's decoded `rtmsg` (read it with `get_attr`, e.g.
        `RTA_OIF`, `RTA_GATEWAY`, `RTA_PREFSRC`, `RTA_TABLE`, `RTA_MULTIPATH`);
        `iif` is an ifindex (see `index`). The kernel's refusals are RtnlError
        (ENETUNREACH: no route; EHOSTUNREACH: forwarding off or an
        unreachable route; EXDEV: rp_filter; EINVAL: martian source; EACCES:
        prohibit).
        """
        attrs: list = [("RTA_DST", dst)]
        if src:
            attrs.append(("RTA_SRC", src))
        if iif is not None:
            attrs.append(("RTA_IIF", iif))
        flags = RTM_F_LOOKUP_TABLE | (RTM_F_FIB_MATCH if fibmatch else 0)
        v6 = ":" in dst  # an IPv6 lookup (`ip -6 route get`)
        full = 128 if v6 else 32

        v6 = ":" in dst
        full = 128 if v6 else 32

        def build():
            m = _rtmsg(full, 0, 0, 0, attrs, AF_INET6 if v6 else AF_INET)
            m["src_len"] = full if src else 0
            m["scope"] = 0
            m["flags"] = flags
            return m
        key = ("get", dst, src, iif, flags)
        msgs = self._decoded(self._replies(self._send(RTM_GETROUTE, 0, build, key), single=True), rtmsg)
        if not msgs:  # pragma: no cover - the kernel always answers
            raise RtnlError(ENETUNREACH)
        return msgs[0]

    def route_dump(self, *, table: int | None = None, family: int = AF_INET) -> list:
        """The IPv4 routes (`family` AF_INET6: the IPv6 ones) of `table` as pyroute2's decoded
        `rtmsg`s, for callers that print them whole (`ip route` words); `routes` is the
        fast, typed reader."""
        out = []
        key = ("dump",) if family == AF_INET else ("dump", family)
        for m in self._decoded(self._dump(RTM_GETROUTE, lambda: _rtmsg(family=family), key), rtmsg):
            if m["family"] != family:
                continue
            t = m.get_attr("RTA_TABLE")
            if table is not None and (t if t is not None else m["table"]) != table:
                continue
            out.append(m)
        return out

    # -- neighbours

    def neighbours(self, family: int = AF_INET) -> list[Neighbour]:
        """The IPv4 neighbour (ARP) entries; `family` AF_INET6: the IPv6 ones (neighbour discovery)."""
        def build():
            m = ndmsg()
            m["family"] = family
            m["ifindex"] = 0
            m["state"] = 0
            m["flags"] = 0
            m["ndm_type"] = 0
            return m
        out = []
        key = ("dump",) if family == AF_INET else ("dump", family)
        for m in self._decoded(self._dump(RTM_GETNEIGH, build, key), ndmsg):
            if m["family"] != family:
                continue
            a = _attrs(m, _NEIGH_ATTRS)
            out.append(Neighbour(m["ifindex"], a.get("NDA_DST"), a.get("NDA_LLADDR"), m["state"]))
        return out

    # -- netns ids

    def nsid_of(self, fd: int) -> int | None:
        """The id this namespace gives the namespace open at `fd`; None when it has given
        it none (this never assigns one) or the kernel refuses."""
        def build():
            m = nsidmsg()
            m["rtgen_family"] = socket.AF_UNSPEC
            m["attrs"] = [("NETNSA_FD", fd)]
            return m
        try:
            msgs = self._decoded(self._replies(self._send(RTM_GETNSID, 0, build, None), single=True), nsidmsg)
        except RtnlError:
            return None
        nsid = msgs[0].get_attr("NETNSA_NSID") if msgs else None
        if nsid is None or nsid < 0 or nsid == NSID_NOT_ASSIGNED:
            return None
        return nsid

    def forwarding(self, family: int = AF_INET) -> int | None:
        """The "all" forwarding switch of `family` (net.ipv4.ip_forward; AF_INET6:
        net.ipv6.conf.all.forwarding) as RTM_GETNETCONF reports it; None if the kernel
        gives no answer.

        One netlink request on the socket already open, where reading the sysctl under
        /proc/sys costs an open(2) of ~0.4 ms in every namespace (docs/performance.md).
        pyroute2 has no class for netconf messages, so this one request (a 4-byte
        `netconfmsg` and NETCONFA_IFINDEX) is packed here and its answer read with
        `parse_attrs`.
        """
        self.seq += 1
        body = struct.pack("=B3x", family) + struct.pack("=HHi", 8, _NETCONFA_IFINDEX, _NETCONFA_IFINDEX_ALL)
        self.sock.send(struct.pack("=LHHLL", _NLMSGHDR_LEN + len(body), _RTM_GETNETCONF, NLM_F_REQUEST,
                                   self.seq, 0) + body)
        for kind, data, at in self._replies(self.seq, single=True):
            if kind != _RTM_NEWNETCONF:
                continue
            n = _NLMSGHDR.unpack_from(data, at)[0]
            v = parse_attrs(data, at + _NLMSGHDR_LEN + 4, at + n).get(_NETCONFA_FORWARDING)
            return struct.unpack("=i", v[:4])[0] if v is not None and len(v) >= 4 else None
        return None

    def replace_route(self, dst: str, **kw) -> None:
        self._route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, dst, **kw)

    def del_route(self, dst: str, **kw) -> None:
        self._route(RTM_DELROUTE, 0, dst, **kw)


def open_in(ns: str | None) -> Rtnl:
    """An Rtnl whose socket lives in namespace `ns` (None: our own); the caller closes it.

    Raises FileNotFoundError if the namespace is gone.
    """
    sock = call_in(ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                             NETLINK_ROUTE))
    return Rtnl(sock)


def here() -> Rtnl:
    """An Rtnl for the namespace of the calling thread."""
    return Rtnl(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE))


def wrap(handle) -> tuple[Rtnl, bool]:
    """(Rtnl, must_close) for `handle`: an Rtnl as is, or a pyroute2 IPRoute's socket (dup'ed).

    Lets link.py and route.py keep taking the pyroute2 handles they took before.
    """
    if isinstance(handle, Rtnl):
        return handle, False
    fd = os.dup(handle.fileno())
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE, fileno=fd)
    r = Rtnl.__new__(Rtnl)
    r.sock, r.seq = sock, 1 << 24  # already bound by pyroute2; seq far from its own
    return r, True
