"""Probes: send real packets from a namespace and report what happened.

One sender for every command that sends a probe (probe, check, capture, the
demo, trace and doctor): `Sender` makes the probe's socket in a namespace --
its source port bound or ICMP id chosen at once, so a caller can follow the
packet (netfilter tracing, a capture, conntrack) before it is sent -- and
`Sender.send` sends it and classifies what came back into one `ProbeResult`.
Options: a pinned source port or ICMP id, DF set, the payload size, a count
of echo requests, a timeout, and a `Responder` in the far namespace (a TCP
listener or UDP echo bound to the far end's address, or a raw ICMP socket
watching for the echo request) that reports the source address it saw.

One definition of success, `ProbeResult.outcome`:

    reply        the far end answered: echo reply, TCP connection, UDP answer
    refused      the far end said no: TCP RST or ICMP port unreachable
    unreachable  something on the way said no: an ICMP error, no route
    too-big      DF set and the packet is bigger than the path MTU (`mtu`)
    timeout      nothing came back in time
    error        it could not be sent (another errno)

`ok` (reachable) is ``outcome == "reply"``; `answered` (the path works both
ways) adds ``refused``; `path_works` is what doctor reports: None for a UDP
datagram nothing answered (inconclusive), else `answered`.

`send` is the one-shot form (what trace and doctor use, on any namespace);
`natns.verify.probe.probe` is the lab-aware one (`natns probe`, `natns check`,
`natns capture`): it finds the far end in the topology and listens there.
`ping` and `tcp_connect` are thin wrappers kept for the demo and the tests.

IPv6: a destination with a colon is probed over IPv6 with the same options
and outcomes -- an ICMPv6 echo request (type 128) on a raw ICMPv6 socket, TCP
and UDP on AF_INET6 sockets. An ICMPv6 error quoting the probe classifies
as for v4: packet too big (type 2) is ``too-big`` with its MTU, destination
unreachable (type 1) with code 4 (port unreachable) is ``refused`` for UDP,
else ``unreachable``. `df` means the same on the wire for both families: v6
routers never fragment, so a v6 packet bigger than a link's MTU always comes
back as packet too big; `df` (IPV6_PMTUDISC_DO) also stops the sender's own
kernel from fragmenting it, so a probe bigger than the route's MTU is
refused locally (``too-big`` with the MTU) as with v4.
"""

from __future__ import annotations

import errno
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field

from ..errors import UserError
from . import nsexec

PROTOCOLS = ("icmp", "tcp", "udp")
OUTCOMES = ("reply", "refused", "unreachable", "too-big", "timeout", "error")

#: ping's default payload (56 bytes: an 84-byte IP packet).
DEFAULT_SIZE = 56
TOKEN_PREFIX = b"natns-probe-"

ICMP_UNREACH = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                3: "port unreachable", 4: "fragmentation needed", 9: "network prohibited",
                10: "host prohibited", 13: "administratively prohibited"}
ICMP_ERRORS = {3: "destination unreachable", 11: "time exceeded", 12: "parameter problem"}

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IP_MTU = getattr(socket, "IP_MTU", 14)

ICMP6_UNREACH = {0: "no route to destination", 1: "administratively prohibited",
                 2: "beyond scope of source address", 3: "address unreachable", 4: "port unreachable",
                 5: "source address failed policy", 6: "reject route to destination"}
ICMP6_ERRORS = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
                4: "parameter problem"}
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129

IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def family_of(addr: str) -> int:
    """socket.AF_INET6 for an IPv6 address (it has a colon), else socket.AF_INET."""
    return socket.AF_INET6 if ":" in str(addr) else socket.AF_INET


def hostport(addr: str, port: int | None) -> str:
    """``192.0.2.2:80``, ``[2001:db8:1::2]:80`` (RFC 3986's way for v6), or the bare address."""
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def icmp_error_text(typ: int, code: int, v6: bool = False) -> str:
    """An ICMP(v6) error's name and code in words: ``destination unreachable (host unreachable)``."""
    if v6:
        what = ICMP6_UNREACH.get(code, f"code {code}") if typ == 1 else f"code {code}"
        return f"ICMPv6 {ICMP6_ERRORS.get(typ, f'type {typ}')} ({what})"
    what = ICMP_UNREACH.get(code, f"code {code}") if typ == 3 else f"code {code}"
    return f"ICMP {ICMP_ERRORS.get(typ, f'type {typ}')} ({what})"


# --------------------------------------------------------------------------- the result


@dataclass
class ProbeResult:
    """One probe and what came of it.

    `outcome` is the one classification (see the module); `ok`, `answered`
    and `path_works` derive from it. `error` says why not in words (None
    when the far end answered); `error_from` is the address an ICMP error
    came from; `mtu` the path MTU a too-big outcome reported. `far_end` is
    the lab namespace holding `to` (None when the address is not in the
    lab), `source_seen` the source address the responder there saw. `local`
    is the sender's own address (and port) before any translation; `flow`
    identifies the probe's connection (``icmp_id`` or ``sport``) for
    matching it in the conntrack table, a trace or a capture. ICMP: `sent`
    and `received` count echo requests and replies, `latency_ms` is the
    first reply's round trip, `rtt_ms` the average. `reply` holds the bytes
    a TCP/UDP far end answered with.
    """

    from_ns: str
    to: str
    protocol: str
    port: int | None
    outcome: str = "timeout"
    latency_ms: float | None = None
    far_end: str | None = None
    source_seen: str | None = None
    error: str | None = None
    local: str | None = None
    flow: dict = field(default_factory=dict)
    responder: str | None = None  # how natns looked at the far end, or why it could not
    far_end_address: str | None = None  # the destination as the far end sees it (after DNAT)
    far_end_note: str | None = None  # why there is no far end although the address is the lab's
    error_from: str | None = None
    icmp_error: tuple[int, int] | None = None  # (type, code) of the ICMP error that came back
    mtu: int | None = None
    sent: int = 0
    received: int = 0
    errors: int = 0  # ICMP errors about the probe
    rtt_ms: float | None = None
    size: int | None = None
    df: bool = False
    reply: bytes = field(default=b"", repr=False)
    exception: OSError | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Reachable: the far end answered (echo reply, connection, UDP answer)."""
        return self.outcome == "reply"

    @property
    def answered(self) -> bool:
        """The path works both ways: the far end answered or refused."""
        return self.outcome in ("reply", "refused")

    @property
    def came_back(self) -> bool:
        """Something came back about the probe: a reply, a refusal, or an ICMP error from the path."""
        return self.answered or self.icmp_error is not None

    @property
    def path_works(self) -> bool | None:
        """doctor's verdict: None for an unanswered UDP datagram (inconclusive), else `answered`."""
        if self.outcome == "timeout" and self.protocol == "udp" and not self.source_seen:
            return None
        return self.answered

    def summary(self) -> str:
        """One line: reachable or not, how fast, the source the far end saw."""
        what = f"{self.protocol}" + (f"/{self.port}" if self.port is not None else "")
        if not self.ok:
            return f"{self.from_ns} -> {self.to} {what}: no ({self.error or 'no answer'})"
        out = f"{self.from_ns} -> {self.to} {what}: reachable in {self.latency_ms:.3f} ms"
        if self.source_seen:
            out += f"; {self.far_end} saw source {self.source_seen}"
        return out

    def counts(self) -> str:
        """ping's statistics line: ``3 packets transmitted, 3 received, 0% packet loss, rtt 0.061 ms``."""
        loss = 100 * (self.sent - self.received) // max(self.sent, 1)
        errs = f", +{self.errors} errors" if self.errors else ""
        rtt = f", rtt {self.rtt_ms:.3f} ms" if self.rtt_ms is not None else ""
        return f"{self.sent} packets transmitted, {self.received} received{errs}, {loss}% packet loss{rtt}"

    def sender_saw(self) -> str:
        """What the sender saw, in trace's words: reply, connected, refused (TCP RST), no reply, ..."""
        if self.outcome == "reply":
            if self.protocol == "tcp":
                return "connected"
            return "reply" if self.protocol == "icmp" else f"reply ({len(self.reply)} bytes)"
        if self.outcome == "refused":
            if self.protocol == "tcp":
                return "refused (TCP RST)"
            return "refused (ICMPv6 port unreachable)" if self.v6 else "refused (ICMP port unreachable)"
        if self.outcome == "timeout":
            return "no reply"
        if self.icmp_error is not None:
            return f"{icmp_error_text(*self.icmp_error, v6=self.v6)} from {self.error_from}"
        return self.error or self.outcome

    @property
    def v6(self) -> bool:
        """The probe went over IPv6 (its destination is a v6 address)."""
        return ":" in self.to

    def to_json(self) -> dict:
        return {
            "from": self.from_ns, "to": self.to, "protocol": self.protocol, "port": self.port,
            "ok": self.ok, "outcome": self.outcome, "latency_ms": self.latency_ms, "far_end": self.far_end,
            "source_seen": self.source_seen, "error": self.error, "local": self.local,
            "flow": self.flow, "responder": self.responder, "far_end_address": self.far_end_address,
            "far_end_note": self.far_end_note, "mtu": self.mtu,
        }


class PingResult(ProbeResult):
    """A `ping`'s result: a ProbeResult whose summary is ping's own line."""

    def summary(self) -> str:
        """The local error when nothing could be sent, else ping's statistics line."""
        if self.error and (self.sent == 0 or self.outcome in ("too-big", "error")):
            return self.error
        return self.counts()


# --------------------------------------------------------------------------- pure helpers


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with its checksum."""
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload


def fill(token: bytes, size: int | None) -> bytes:
    """A payload of `size` bytes starting with `token` (cut short if `size` is smaller)."""
    n = DEFAULT_SIZE if size is None else size
    return (token + b"\0" * max(n - len(token), 0))[:n]


@dataclass(frozen=True)
class IcmpAnswer:
    """An ICMP message read by a raw socket that concerns a probe."""

    kind: str  # "reply" | "error"
    src: str
    seq: int
    type: int = 0
    code: int = 0
    mtu: int | None = None  # next-hop MTU of a "fragmentation needed" / ICMPv6 packet too big
    v6: bool = False  # an ICMPv6 message (its types are numbered otherwise)

    def text(self) -> str:
        """How the probe's `error` says it: ``destination unreachable (code 1) from 192.0.2.3``."""
        if self.v6:
            if self.type == 2:
                return f"packet too big (mtu = {self.mtu}) from {self.src}"
            return f"{ICMP6_ERRORS.get(self.type, f'type {self.type}')} (code {self.code}) from {self.src}"
        if self.type == 3 and self.code == 4:
            return f"frag needed and DF set (mtu = {self.mtu}) from {self.src}"
        return f"{ICMP_ERRORS.get(self.type, f'type {self.type}')} (code {self.code}) from {self.src}"


def parse_icmp(datagram: bytes, ident: int, token: bytes | None = None) -> IcmpAnswer | None:
    """The echo reply to, or the ICMP error about, echo request `ident` in an IPv4 datagram.

    A reply must carry `ident` (and `token`, when given, at the start of its
    data); an error must quote an ICMP echo request with `ident`. None for
    anything else.
    """
    if len(datagram) < 20:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    src = ".".join(map(str, datagram[12:16]))
    msg = datagram[ihl:]
    if len(msg) < 8:
        return None
    typ, code = msg[0], msg[1]
    if typ == 0:
        rid, seq = struct.unpack("!HH", msg[4:8])
        if rid == ident and (token is None or msg[8:8 + len(token)] == token):
            return IcmpAnswer("reply", src, seq)
        return None
    if typ in ICMP_ERRORS and len(msg) >= 8 + 20 + 8:
        inner = msg[8:]
        ihl2 = (inner[0] & 0x0F) * 4
        quoted = inner[ihl2:ihl2 + 8]
        if inner[9] == 1 and len(quoted) == 8 and quoted[0] == 8:
            qid, seq = struct.unpack("!HH", quoted[4:8])
            if qid == ident:
                mtu = struct.unpack("!H", msg[6:8])[0] if typ == 3 and code == 4 else None
                return IcmpAnswer("error", src, seq, typ, code, mtu)
    return None


def echo_request6(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMPv6 echo request; its checksum is left 0: the kernel fills it in (RFC 3542 3.1)."""
    return struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload


def parse_icmp6(msg: bytes, src: str, ident: int, token: bytes | None = None) -> IcmpAnswer | None:
    """The echo reply to, or the ICMPv6 error about, echo request `ident`.

    `msg` is the ICMPv6 message as a raw ICMPv6 socket reads it (no IPv6
    header: the kernel strips it), `src` the address it came from. An error
    must quote an IPv6 packet whose ICMPv6 echo request carries `ident`
    (extension headers in the quoted packet are walked). None for anything
    else (neighbour discovery, other senders' echoes, our own requests).
    """
    if len(msg) < 8:
        return None
    typ, code = msg[0], msg[1]
    if typ == ICMP6_ECHO_REPLY:
        rid, seq = struct.unpack("!HH", msg[4:8])
        if rid == ident and (token is None or msg[8:8 + len(token)] == token):
            return IcmpAnswer("reply", src, seq, v6=True)
        return None
    if typ in ICMP6_ERRORS and len(msg) >= 8 + 40 + 8:
        inner = msg[8:]
        nxt, off = inner[6], 40
        while nxt in (0, 43, 60) and len(inner) >= off + 8:  # hop-by-hop, routing, destination options
            nxt, off = inner[off], off + (inner[off + 1] + 1) * 8
        if nxt == 44 and len(inner) >= off + 8:  # a fragment header (8 bytes)
            nxt, off = inner[off], off + 8
        quoted = inner[off:off + 8]
        if nxt == 58 and len(quoted) == 8 and quoted[0] == ICMP6_ECHO_REQUEST:
            qid, seq = struct.unpack("!HH", quoted[4:8])
            if qid == ident:
                mtu = struct.unpack("!I", msg[4:8])[0] if typ == 2 else None
                return IcmpAnswer("error", src, seq, typ, code, mtu, v6=True)
    return None


def classify(exc: BaseException) -> tuple[str, str]:
    """(outcome, error text) of an exception from sending or waiting."""
    if isinstance(exc, TimeoutError):  # socket.timeout too: a socket timeout has no errno
        return "timeout", exc.strerror or "no answer"
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.errno == errno.ECONNREFUSED:
            return "refused", text
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM,
                         errno.EADDRNOTAVAIL):
            return "unreachable", text
        if exc.errno == errno.EMSGSIZE:
            return "too-big", text
        if exc.errno == errno.ETIMEDOUT:
            return "timeout", text
        return "error", text
    return "error", str(exc)


def _token() -> bytes:
    return TOKEN_PREFIX + secrets.token_hex(8).encode()


# --------------------------------------------------------------------------- the far end


class Responder:
    """natns listening in the far namespace for one probe, closed by `close`.

    tcp: a listener on `addr`:`port` that reads the probe's data and answers
    with the source address it saw; udp: the same for one datagram; icmp: a
    raw ICMP socket that watches for the echo request (the kernel answers
    it). `seen` is the source address of the probe once it arrived. If the
    socket cannot be made (the address is not there, the port is taken),
    `sock` is None and `note` says why.
    """

    def __init__(self, ns: str, proto: str, addr: str | None = None, port: int | None = None):
        self.ns, self.proto, self.addr, self.port = ns, proto, addr, port
        self.seen: str | None = None
        self.sock = None
        where = hostport(addr, port) if addr is not None else addr

        fam = family_of(addr or "")
        self.v6 = fam == socket.AF_INET6

        def make():
            if proto == "icmp":
                return socket.socket(fam, socket.SOCK_RAW,
                                     socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP)
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(fam, kind)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.v6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, int(port)))
                if kind == socket.SOCK_STREAM:
                    s.listen(8)
            except OSError:
                s.close()
                raise
            return s

        try:
            self.sock = nsexec.call_in(ns, make)
        except OSError as exc:
            self.note = f"no responder in {ns}: {exc.strerror or exc}"
            return
        self.note = (f"raw ICMP socket in {ns}" if proto == "icmp"
                     else f"{proto} responder on {where} in {ns}")

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def serve_tcp(self, token: bytes, deadline: float) -> socket.socket | None:
        """Accept the probe's connection (the one that sends `token`); answer with its source."""
        while self.sock is not None and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return None
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            data = b""
            try:
                while len(data) < len(token):
                    chunk = conn.recv(len(token) - len(data))
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            if data == token:
                self.seen = peer[0]
                try:
                    conn.sendall(peer[0].encode())
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return conn  # closed by the caller after the client read the answer
            conn.close()
        return None

    def serve_udp(self, token: bytes, deadline: float) -> None:
        """Answer the probe's datagram (the one starting with `token`) with its source."""
        while self.sock is not None and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            if data.startswith(token):
                self.seen = peer[0]
                self.sock.sendto(peer[0].encode(), peer)
                return

    def look_icmp(self, token: bytes) -> None:
        """Find the echo request carrying `token` among what the raw socket received."""
        if self.sock is None:
            return
        self.sock.setblocking(False)
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            if self.v6:  # no IPv6 header on a raw ICMPv6 socket: the sender is the peer
                if len(data) >= 8 and data[0] == ICMP6_ECHO_REQUEST and token in data[8:]:
                    self.seen = peer[0]
                    return
                continue
            if len(data) < 20:
                continue
            ihl = (data[0] & 0x0F) * 4
            msg = data[ihl:]
            if len(msg) >= 8 and msg[0] == 8 and token in msg[8:]:
                self.seen = ".".join(map(str, data[12:16]))
                return


# --------------------------------------------------------------------------- the sender


class Sender:
    """The probe's socket in namespace `ns`, ready before anything is sent.

    ICMP: a raw socket; the echo requests carry `icmp_id` (random unless
    pinned). TCP/UDP: the socket is bound at once to source port `sport`
    (pinned) or to one the kernel picks, so `flow` is known before `send`.
    `df` sets Don't Fragment (IP_PMTUDISC_DO: a packet bigger than the path
    MTU is refused, with the MTU in the result); `size` is the payload in
    bytes (ICMP data, the UDP datagram, the data sent on the TCP
    connection); `count` echo requests are sent `interval` s apart (ICMP
    only). `rst_close` closes a TCP connection with a RST (no FIN exchange
    after the probe; trace uses it). `payload` is sent as is instead of a
    token (TCP/UDP; `tcp_connect`). Raises OSError when the socket cannot be
    made (no such namespace, the pinned port is taken).
    """

    def __init__(self, ns: str, dst: str, proto: str = "icmp", port: int | None = None, *,
                 sport: int | None = None, icmp_id: int | None = None, df: bool = False,
                 size: int | None = None, count: int = 1, interval: float = 0.2,
                 rst_close: bool = False, payload: bytes | None = None):
        if proto not in PROTOCOLS:
            raise UserError(f"probe protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
        if proto != "icmp" and (not isinstance(port, int) or not 1 <= port <= 65535):
            raise UserError(f"a {proto} probe needs a port 1-65535")
        if count < 1 or (count > 1 and proto != "icmp"):
            raise UserError("a probe sends one packet, or count >= 1 echo requests (ICMP)")
        if size is not None and not 0 <= size <= 65507:
            raise UserError(f"probe size {size} is not 0-65507 bytes")
        self.ns, self.dst, self.proto = ns, dst, proto
        self.port = None if proto == "icmp" else port
        self.df, self.size, self.count, self.interval = df, size, count, interval
        self.rst_close, self.payload = rst_close, payload
        self.icmp_id: int | None = None
        self.sport: int | None = None
        self._route = None
        self.token = _token()
        fam = family_of(dst)
        self.v6 = fam == socket.AF_INET6
        if proto == "icmp":
            self.icmp_id = icmp_id if icmp_id is not None else secrets.randbelow(0xEFFE) + 0x1000
            # Not connected: a connected raw socket receives only what comes from the
            # destination, and the ICMP errors of the routers on the way would be lost.
            # A UDP socket connected to the destination gives the route's source and MTU.
            self.sock, self._route = nsexec.call_in(ns, lambda: (
                socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP),
                socket.socket(fam, socket.SOCK_DGRAM)))
        else:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            self.sock = nsexec.call_in(ns, lambda: socket.socket(fam, kind))
            try:
                self.sock.bind(("::" if self.v6 else "0.0.0.0", sport or 0))
                self.sport = self.sock.getsockname()[1]
                if proto == "tcp" and rst_close:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                self.sock.close()
                raise
        if df:
            for s in (self.sock, self._route):
                if s is None:
                    continue
                if self.v6:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)

    @property
    def flow(self) -> dict:
        """What identifies the probe's packets: ``{"icmp_id": N}`` or ``{"sport": N}``."""
        return {"icmp_id": self.icmp_id} if self.proto == "icmp" else {"sport": self.sport}

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for s in (self.sock, self._route):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def result(self, **kw) -> ProbeResult:
        """An empty result for this probe (what `send` fills in)."""
        return ProbeResult(self.ns, self.dst, self.proto, self.port, size=self.size, df=self.df, **kw)

    def send(self, timeout: float = 2.0, responder: Responder | None = None,
             result: ProbeResult | None = None, cls: type[ProbeResult] = ProbeResult) -> ProbeResult:
        """Send the probe, wait up to `timeout` s (after the last echo request) and classify.

        Never raises for what the network did; the result says it.
        """
        res = result if result is not None else cls(self.ns, self.dst, self.proto, self.port,
                                                    size=self.size, df=self.df)
        res.flow = dict(self.flow, **({"icmp_seq": 1} if self.proto == "icmp" else {}))
        if responder is not None:
            res.responder = responder.note
        if self.proto == "icmp":
            self._icmp(res, timeout, responder)
        elif self.proto == "tcp":
            self._tcp(res, timeout, responder)
        else:
            self._udp(res, timeout, responder)
        if responder is not None:
            res.source_seen = responder.seen
        if res.outcome == "timeout" and res.error in (None, "no answer"):
            res.error = f"no reply within {timeout:g} s"
        return res

    def _fail(self, res: ProbeResult, exc: OSError) -> None:
        res.outcome, res.error = classify(exc)
        res.exception = exc
        if res.outcome == "too-big":
            try:
                res.mtu = ((self._route or self.sock).getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) if self.v6
                           else (self._route or self.sock).getsockopt(socket.IPPROTO_IP, IP_MTU))
            except OSError:
                pass
            if self.proto == "icmp":
                res.error = f"local error: message too long, mtu={res.mtu}"

    def _icmp(self, res: ProbeResult, timeout: float, responder: Responder | None) -> None:
        ident = self.icmp_id
        data = fill(self.token, self.size)
        match = self.token if len(data) >= len(self.token) else None
        try:
            self._route.connect((self.dst, 9))  # a route lookup; nothing is sent
            res.local = self._route.getsockname()[0]
        except OSError as exc:
            self._fail(res, exc)
            return
        sent_at: dict[int, float] = {}
        rtts: list[float] = []
        first_error: IcmpAnswer | None = None
        sock_exc: OSError | None = None
        seq = 0
        next_send = time.monotonic()
        deadline = None
        while True:
            now = time.monotonic()
            if seq < self.count and now >= next_send:
                seq += 1
                try:
                    self.sock.sendto((echo_request6 if self.v6 else echo_request)(ident, seq, data), (self.dst, 0))
                except OSError as exc:
                    if res.sent == 0:  # nothing left: a local error (no route, DF and too big, ...)
                        self._fail(res, exc)
                        return
                    sock_exc = sock_exc or exc
                    res.errors += 1
                else:
                    res.sent += 1
                    sent_at[seq] = time.perf_counter()
                next_send = now + self.interval
                if seq == self.count:
                    deadline = now + timeout
                continue
            if res.received >= self.count or (deadline is not None and now >= deadline):
                break
            wait_until = next_send if seq < self.count else deadline
            self.sock.settimeout(max(wait_until - now, 0.001))
            try:
                datagram, peer = self.sock.recvfrom(65535)
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                # an ICMP error the kernel also reports on the connected socket (sk_err, e.g.
                # EMSGSIZE for "fragmentation needed"); the ICMP message itself follows in the queue
                sock_exc = sock_exc or exc
                continue
            got = (parse_icmp6(datagram, peer[0], ident, match) if self.v6
                   else parse_icmp(datagram, ident, match))
            if got is None or got.seq not in sent_at:
                continue
            if got.kind == "reply":
                rtts.append((time.perf_counter() - sent_at.pop(got.seq)) * 1000)
                res.received += 1
            else:
                res.errors += 1
                if first_error is None:
                    first_error = got
        if rtts:
            res.outcome, res.error = "reply", None
            res.latency_ms = round(rtts[0], 3)
            res.rtt_ms = round(sum(rtts) / len(rtts), 3)
        elif first_error is not None:
            res.error_from = first_error.src
            res.icmp_error = (first_error.type, first_error.code)
            res.error = first_error.text()
            if first_error.mtu is not None:
                res.outcome, res.mtu = "too-big", first_error.mtu
            else:
                res.outcome = "unreachable"
        elif sock_exc is not None:
            self._fail(res, sock_exc)
        else:
            res.outcome = "timeout"
        if responder is not None:
            responder.look_icmp(self.token if match else data)

    def _tcp(self, res: ProbeResult, timeout: float, responder: Responder | None) -> None:
        s = self.sock
        s.settimeout(timeout)
        start = time.perf_counter()
        try:
            s.connect((self.dst, self.port))
        except OSError as exc:
            self._fail(res, exc)
            return
        res.latency_ms = round((time.perf_counter() - start) * 1000, 3)
        res.outcome = "reply"
        res.local = hostport(s.getsockname()[0], self.sport)
        serving = responder is not None and responder.sock is not None
        if self.payload is None and not serving and self.size is None:
            return
        data = self.payload if self.payload is not None else fill(self.token, self.size or len(self.token))
        deadline = time.monotonic() + timeout
        conn = None
        try:
            s.sendall(data)
            if serving:
                conn = responder.serve_tcp(self.token, deadline)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                s.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            res.reply = b"".join(chunks)
        except OSError as exc:
            # connected: the probe got through; what it could not exchange is kept for tcp_connect
            res.exception = exc
        finally:
            if conn is not None:
                conn.close()

    def _udp(self, res: ProbeResult, timeout: float, responder: Responder | None) -> None:
        s = self.sock
        data = self.payload if self.payload is not None else fill(self.token, self.size or len(self.token))
        try:
            s.connect((self.dst, self.port))
            res.local = hostport(s.getsockname()[0], self.sport)
            start = time.perf_counter()
            s.send(data)
        except OSError as exc:
            self._fail(res, exc)
            return
        deadline = time.monotonic() + timeout
        if responder is not None and responder.sock is not None:
            responder.serve_udp(self.token, deadline)
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            res.reply = s.recv(65535)
        except OSError as exc:
            self._fail(res, exc)
            return
        res.outcome = "reply"
        res.latency_ms = round((time.perf_counter() - start) * 1000, 3)


def send(ns: str, dst: str, proto: str = "icmp", port: int | None = None, *, timeout: float = 2.0,
         respond_in: str | None = None, respond_at: tuple[str, int | None] | None = None,
         cls: type[ProbeResult] = ProbeResult, **options) -> ProbeResult:
    """One probe from namespace `ns` to `dst`: make the `Sender`, send, close.

    `options` are Sender's (sport, icmp_id, df, size, count, interval,
    rst_close, payload). With `respond_in`, a `Responder` runs in that
    namespace for the probe's duration, bound to `respond_at` (address,
    port; default `dst` and `port`). Raises OSError only when the probe's
    socket cannot be made.
    """
    sender = Sender(ns, dst, proto, port, **options)
    responder = None
    try:
        if respond_in is not None:
            addr, rport = respond_at or (dst, port)
            responder = Responder(respond_in, proto, addr, rport if rport is not None else port)
        return sender.send(timeout, responder, cls=cls)
    finally:
        sender.close()
        if responder is not None:
            responder.close()


def ping(ns: str, addr: str, count: int = 1, timeout: float = 1.0, interval: float = 0.2, *,
         df: bool = False, size: int | None = None, icmp_id: int | None = None) -> PingResult:
    """`count` echo requests from namespace `ns` to `addr`, like ping -c; never raises on loss.

    The result's summary is ping's line (``1 packets transmitted, 1 received,
    0% packet loss, rtt ...``, or the local error, e.g. ``Network is
    unreachable`` or ``local error: message too long, mtu=1400``).
    """
    res = send(ns, addr, "icmp", timeout=timeout, count=count, interval=interval, df=df, size=size,
               icmp_id=icmp_id, cls=PingResult)
    assert isinstance(res, PingResult)
    return res


def tcp_connect(ns: str, addr: str, port: int, payload: bytes = b"natns\n", timeout: float = 3.0) -> bytes:
    """Open a TCP connection from namespace `ns`, send `payload`, return the reply.

    Raises the OSError the connection or the exchange met.
    """
    res = send(ns, addr, "tcp", port, timeout=timeout, payload=payload)
    if res.exception is not None:
        raise res.exception
    return res.reply
