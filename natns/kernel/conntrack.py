"""Connection tracking over ctnetlink: read, watch and delete a namespace's entries.

Conntrack is where NAT lives after the first packet: the SNAT rule is
evaluated once per connection, and the kernel then rewrites every packet of
it (and the replies, back) from the entry it keeps. Each entry has an
*original* tuple (the packet as the sender sent it) and a *reply* tuple (what
a reply must look like when it arrives); where the two are not mirror images,
the router translates:

* reply destination != original source: SNAT (the source was rewritten to
  the reply's destination, e.g. 192.0.2.2 -> 198.51.100.116);
* reply source != original destination: DNAT.

`entries(ns)` dumps the table of one namespace (pyroute2's NFCTSocket, made on
a thread that entered the namespace, so the socket is that namespace's);
`delete(ns, entries)` deletes entries by their original tuple; `Watch(ns)`
subscribes to new and destroyed entries (NFNLGRP_CONNTRACK_NEW / _DESTROY).
Packet and byte counts are there only when accounting is on in the namespace
(``net.netfilter.nf_conntrack_acct=1``); natns reads that setting and never
changes it. The view of a lab's routers (`natns conntrack`) is
natns/verify/conntrack.py; which entries contradict natns's NAT rules is
natns/firewall/ctselect.py.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyroute2.netlink.nfnetlink.nfctsocket import (
    IPSBIT_TO_NAME,
    TCP_CONNTRACK_TO_NAME,
    nfct_msg,
)

from . import nsexec, sysctl

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_DELETE = 2
NLM_F_CREATE = 0x400
#: Multicast groups (bit n-1 for group n): NFNLGRP_CONNTRACK_NEW=1, _UPDATE=2, _DESTROY=3.
GROUPS = {"new": 1 << 0, "update": 1 << 1, "destroy": 1 << 2}
ACCT_SYSCTL = "net.netfilter.nf_conntrack_acct"

_PROTO = {socket.IPPROTO_ICMP: "icmp", socket.IPPROTO_IGMP: "igmp", socket.IPPROTO_TCP: "tcp",
          socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMPV6: "icmpv6"}
#: natns's family numbers (4, 6) -> the kernel's (what a ctnetlink message's nfgen_family says).
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2


@dataclass(frozen=True)
class CtTuple:
    """One direction of a connection: addresses, and ports or the ICMP type/id."""

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    family: int = 4  # 6: an IPv6 connection (AF_INET6; ICMPv6 type/code/id in the icmp fields)

    def endpoint(self, which: str) -> str:
        """``src`` or ``dst`` as ``addr`` or ``addr:port`` (IPv6 with a port: ``[addr]:port``)."""
        ip, port = (self.src, self.sport) if which == "src" else (self.dst, self.dport)
        if port is None:
            return ip
        return f"[{ip}]:{port}" if self.family == 6 else f"{ip}:{port}"

    def text(self) -> str:
        """``192.0.2.2:40000 > 203.0.113.114:80`` (ICMP: ``... id 7``)."""
        out = f"{self.endpoint('src')} > {self.endpoint('dst')}"
        if self.icmp_id is not None:
            out += f" id {self.icmp_id}"
        return out

    def to_json(self) -> dict:
        return {"src": self.src, "dst": self.dst, "sport": self.sport, "dport": self.dport,
                "icmp_type": self.icmp_type, "icmp_code": self.icmp_code, "icmp_id": self.icmp_id}


@dataclass(frozen=True)
class Translation:
    """What the router rewrites: SNAT (the source) or DNAT (the destination)."""

    kind: str  # "SNAT" | "DNAT"
    before: str  # addr or addr:port as the sender wrote it
    after: str  # what it becomes

    def text(self) -> str:
        return f"{self.kind} {self.before} -> {self.after}"

    def to_json(self) -> dict:
        return {"type": self.kind, "from": self.before, "to": self.after}


@dataclass
class Entry:
    """One conntrack entry."""

    protocol: str  # "icmp" | "tcp" | "udp" | "proto-N"
    original: CtTuple
    reply: CtTuple
    nat: list[Translation]
    state: str  # TCP: ESTABLISHED, TIME_WAIT, ...; others: UNREPLIED | REPLIED | ASSURED
    status: list[str]  # the kernel's status bits: SEEN_REPLY, ASSURED, SRC_NAT, ...
    timeout: int | None  # seconds left
    counters: dict | None = None  # {"original": {"packets", "bytes"}, "reply": {...}}; None: acct off
    mark: int | None = None
    id: int | None = None
    zone: int | None = None

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.original.family

    def translated(self, kind: str) -> Translation | None:
        """The SNAT or DNAT translation of this entry, if any."""
        return next((n for n in self.nat if n.kind == kind), None)

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol, "original": self.original.to_json(), "reply": self.reply.to_json(),
            "nat": [n.to_json() for n in self.nat], "state": self.state, "status": self.status,
            "timeout": self.timeout, "counters": self.counters, "mark": self.mark, "id": self.id,
            "zone": self.zone, "family": self.family,
        }


@dataclass
class Event:
    """A change in a conntrack table: ``new`` or ``destroy`` (or ``update``)."""

    kind: str
    time: float
    entry: Entry
    namespace: str

    def to_json(self) -> dict:
        return {"event": self.kind, "time": self.time, "namespace": self.namespace,
                "entry": self.entry.to_json()}


# --------------------------------------------------------------------------- decoding


def _tuple(nla) -> tuple[int | None, CtTuple]:
    ip = nla.get_attr("CTA_TUPLE_IP")
    pr = nla.get_attr("CTA_TUPLE_PROTO")
    num = pr.get_attr("CTA_PROTO_NUM") if pr is not None else None
    v6 = ip is not None and ip.get_attr("CTA_IP_V4_SRC") is None and ip.get_attr("CTA_IP_V6_SRC") is not None
    key = "CTA_IP_V6" if v6 else "CTA_IP_V4"
    fam = 6 if v6 else 4
    t = CtTuple(
        src=ip.get_attr(f"{key}_SRC") if ip is not None else "?",
        dst=ip.get_attr(f"{key}_DST") if ip is not None else "?",
        family=fam,
    )
    if pr is None:
        return num, t
    if num in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        t = CtTuple(t.src, t.dst, pr.get_attr("CTA_PROTO_SRC_PORT"), pr.get_attr("CTA_PROTO_DST_PORT"),
                    family=fam)
    elif num in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
        k = "CTA_PROTO_ICMPV6" if num == socket.IPPROTO_ICMPV6 else "CTA_PROTO_ICMP"
        t = CtTuple(t.src, t.dst, icmp_type=pr.get_attr(f"{k}_TYPE"), icmp_code=pr.get_attr(f"{k}_CODE"),
                    icmp_id=pr.get_attr(f"{k}_ID"), family=fam)
    return num, t


def translations(orig: CtTuple, reply: CtTuple) -> list[Translation]:
    """SNAT/DNAT read off the two tuples (where they are not mirror images)."""
    out = []
    if (reply.dst, reply.dport) != (orig.src, orig.sport) or reply.icmp_id != orig.icmp_id:
        before, after = orig.endpoint("src"), reply.endpoint("dst")
        if reply.icmp_id != orig.icmp_id:
            before, after = f"{before} id {orig.icmp_id}", f"{after} id {reply.icmp_id}"
        out.append(Translation("SNAT", before, after))
    if (reply.src, reply.sport) != (orig.dst, orig.dport):
        out.append(Translation("DNAT", orig.endpoint("dst"), reply.endpoint("src")))
    return out


def _counters(msg) -> dict | None:
    out = {}
    for key, name in (("CTA_COUNTERS_ORIG", "original"), ("CTA_COUNTERS_REPLY", "reply")):
        c = msg.get_attr(key)
        if c is None:
            return None
        packets = c.get_attr("CTA_COUNTERS_PACKETS")
        byts = c.get_attr("CTA_COUNTERS_BYTES")
        if packets is None:
            packets, byts = c.get_attr("CTA_COUNTERS32_PACKETS"), c.get_attr("CTA_COUNTERS32_BYTES")
        out[name] = {"packets": packets or 0, "bytes": byts or 0}
    return out


def decode(msg) -> Entry:
    """An Entry from a decoded nfct_msg (a dump reply or an event)."""
    num, orig = _tuple(msg.get_attr("CTA_TUPLE_ORIG"))
    reply_nla = msg.get_attr("CTA_TUPLE_REPLY")
    reply = _tuple(reply_nla)[1] if reply_nla is not None else CtTuple("?", "?", family=orig.family)
    status = msg.get_attr("CTA_STATUS") or 0
    names = [name for bit, name in sorted(IPSBIT_TO_NAME.items()) if status & bit]
    state = None
    info = msg.get_attr("CTA_PROTOINFO")
    if num == socket.IPPROTO_TCP and info is not None:
        tcp = info.get_attr("CTA_PROTOINFO_TCP")
        if tcp is not None:
            state = TCP_CONNTRACK_TO_NAME.get(tcp.get_attr("CTA_PROTOINFO_TCP_STATE"))
    if state is None:
        state = ("ASSURED" if status & IPS_ASSURED else "REPLIED" if status & IPS_SEEN_REPLY
                 else "UNREPLIED")
    return Entry(
        protocol=_PROTO.get(num, f"proto-{num}"),
        original=orig,
        reply=reply,
        nat=translations(orig, reply) if reply_nla is not None else [],
        state=state,
        status=names,
        timeout=msg.get_attr("CTA_TIMEOUT"),
        counters=_counters(msg),
        mark=msg.get_attr("CTA_MARK"),
        id=msg.get_attr("CTA_ID"),
        zone=msg.get_attr("CTA_ZONE"),
    )


def _sort_key(e: Entry) -> tuple:
    o = e.original
    return (e.protocol, o.src, o.dst, o.sport or 0, o.dport or 0, o.icmp_id or 0)


# --------------------------------------------------------------------------- reading


def accounting(ns: str) -> bool | None:
    """Whether conntrack counts packets and bytes in `ns` (None: no conntrack there)."""
    value = sysctl.read(ns, [ACCT_SYSCTL])[ACCT_SYSCTL]
    return None if value is None else value != "0"


def entries(ns: str, families: tuple[int, ...] = (4,)) -> list[Entry]:
    """Every conntrack entry of namespace `ns` of `families` (4, 6; IPv4 only unless asked:
    natns's NAT bookkeeping, firewall/ctselect.py, is IPv4's), sorted by family, protocol
    and original tuple."""

    def dump() -> list:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

        out = []
        for fam in families:
            sock = NFCTSocket(nfgen_family=FAMILIES[fam])
            try:
                out += list(sock.dump())
            finally:
                sock.close()
        return out

    return sorted((decode(m) for m in nsexec.call_in(ns, dump)), key=lambda e: (e.family, *_sort_key(e)))


# --------------------------------------------------------------------------- deleting


def nfct_tuple(t: CtTuple, protocol: str):
    """`t` as pyroute2's NFCTAttrTuple (what a ctnetlink request names an entry by)."""
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    num = {v: k for k, v in _PROTO.items()}.get(protocol)
    if num is None and protocol.startswith("proto-"):
        num = int(protocol.removeprefix("proto-"))
    return NFCTAttrTuple(saddr=t.src, daddr=t.dst, proto=num, sport=t.sport, dport=t.dport,
                         icmp_id=t.icmp_id, icmp_type=t.icmp_type, icmp_code=t.icmp_code,
                         family=FAMILIES[t.family])


def delete(ns: str | None, doomed: list[Entry]) -> int:
    """Delete `doomed` from the conntrack table of `ns` by their original tuples (what
    ``conntrack -D`` does, over ctnetlink); return how many were deleted. An entry that
    ended meanwhile (ENOENT) is not an error."""
    if not doomed:
        return 0

    def run() -> int:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket
        from pyroute2.netlink.exceptions import NetlinkError

        socks = {fam: NFCTSocket(nfgen_family=FAMILIES[fam]) for fam in {e.family for e in doomed}}
        n = 0
        try:
            for e in doomed:
                try:
                    socks[e.family].entry("del", tuple_orig=nfct_tuple(e.original, e.protocol))
                    n += 1
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
        finally:
            for sock in socks.values():
                sock.close()
        return n

    return nsexec.call_in(ns, run)


class Watch:
    """New and destroyed conntrack entries of a namespace, as they happen.

    The subscription starts when the Watch is entered (events from then on are
    queued by the kernel) and ends when it is left::

        with Watch("vm") as w:
            ...                               # make traffic
            for ev in w.events(timeout=5, count=2):
                print(ev.kind, ev.entry.original.text())
    """

    def __init__(self, ns: str, kinds: tuple[str, ...] = ("new", "destroy"), families: tuple[int, ...] = (4,)):
        unknown = set(kinds) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown conntrack event kinds: {', '.join(sorted(unknown))}")
        self.ns = ns
        self.kinds = kinds
        self.families = {FAMILIES[f] for f in families}
        self.sock: socket.socket | None = None
        self.lost = 0  # events the kernel dropped because we read too slowly

    def __enter__(self) -> Watch:
        from ..privileges import require_root

        require_root("conntrack")
        groups = 0
        for k in self.kinds:
            groups |= GROUPS[k]
        sock = nsexec.call_in(
            self.ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        try:
            sock.bind((0, groups))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def fileno(self) -> int:
        assert self.sock is not None, "enter the Watch first"
        return self.sock.fileno()

    def read(self) -> list[Event]:
        """The events of one message batch waiting on the socket (blocks if none)."""
        assert self.sock is not None, "enter the Watch first"
        try:
            data = self.sock.recv(1 << 16)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped events: we read too slowly
                self.lost += 1
                return []
            raise
        return [ev for ev in self._parse(data) if ev.kind in self.kinds]

    def events(self, timeout: float | None = None, count: int | None = None) -> Iterator[Event]:
        """Yield events until `count` have come or `timeout` seconds have passed (None: no limit)."""
        return stream([self], timeout, count)

    def _parse(self, data: bytes) -> Iterator[Event]:
        off = 0
        now = time.time()
        while off + 16 <= len(data):
            length = int.from_bytes(data[off:off + 4], "little")
            if length < 16:
                break
            mtype = int.from_bytes(data[off + 4:off + 6], "little")
            flags = int.from_bytes(data[off + 6:off + 8], "little")
            chunk = data[off:off + length]
            off += (length + 3) & ~3
            if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
                continue
            msg = nfct_msg(chunk)
            msg.decode()
            if msg["nfgen_family"] not in self.families:
                continue
            sub = mtype & 0xFF
            if sub == IPCTNL_MSG_CT_NEW:
                kind = "new" if flags & NLM_F_CREATE else "update"
            elif sub == IPCTNL_MSG_CT_DELETE:
                kind = "destroy"
            else:
                continue
            yield Event(kind, now, decode(msg), self.ns)


def stream(watches: list[Watch], timeout: float | None = None, count: int | None = None) -> Iterator[Event]:
    """Events from several Watches as they come, until `count` events or `timeout` seconds.

    Waits in slices of at most half a second, so Ctrl-C is noticed promptly.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    while count is None or seen < count:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if left <= 0:
            return
        ready, _, _ = select.select(watches, [], [], left)
        for w in ready:
            for ev in w.read():
                yield ev
                seen += 1
                if count is not None and seen >= count:
                    return


def delete_argv(ns: str | None, entry: Entry) -> list[str]:
    """The ``conntrack -D`` command (an argument list) that deletes exactly `entry`'s
    connection, selected by its original tuple (for fixes natns prints)."""
    o = entry.original
    pre = ["ip", "netns", "exec", ns] if ns else []
    fam = ["-f", "ipv6"] if entry.family == 6 else []
    argv = [*pre, "conntrack", "-D", *fam, "-p", entry.protocol, "-s", o.src, "-d", o.dst]
    if o.sport is not None:
        argv += ["--sport", str(o.sport), "--dport", str(o.dport)]
    elif o.icmp_id is not None:
        argv += ["--icmpv6-id" if entry.family == 6 else "--icmp-id", str(o.icmp_id)]
    return argv
