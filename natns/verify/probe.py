"""Probes: send real packets from a lab namespace and report what happened.

`ping` and `tcp_connect` are small helpers (the demo and tests use them).
`probe` is what `natns probe` and `natns check` run: one ICMP echo, TCP
connection or UDP exchange, its latency, and the source address the far end
saw when the far end is a namespace of the lab.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..privileges import require_root
from ..errors import UserError
from ..kernel import nsexec


@dataclass
class PingResult:
    """The outcome of `ping` from a namespace."""

    sent: int
    received: int
    error: str | None  # e.g. "connect: Network is unreachable"
    rtt_ms: float | None
    output: str

    @property
    def ok(self) -> bool:
        return self.received > 0

    def summary(self) -> str:
        """One line like ping's own: the error, or sent/received and loss."""
        if self.error:
            return self.error
        loss = 100 * (self.sent - self.received) // max(self.sent, 1)
        rtt = f", rtt {self.rtt_ms:.3f} ms" if self.rtt_ms is not None else ""
        return f"{self.sent} packets transmitted, {self.received} received, {loss}% packet loss{rtt}"


def ping(ns: str, addr: str, count: int = 1, timeout: float = 1.0, interval: float = 0.2) -> PingResult:
    """Ping `addr` from namespace `ns` with the system's ping; never raises on loss."""
    argv = ["ping", "-n", "-c", str(count), "-W", str(timeout), "-i", str(interval), addr]
    proc = nsexec.run(ns, argv, check=False, timeout=count * (interval + timeout) + 5)
    text = (proc.stdout + proc.stderr).strip()
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", text)
    error = None
    if proc.returncode == 2 or not m:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
        error = lines[-1] if lines else f"ping failed (exit {proc.returncode})"
        error = re.sub(r"^ping: ", "", error)
    return PingResult(sent, received, error, float(rtt.group(1)) if rtt else None, text)


def tcp_connect(ns: str, addr: str, port: int, payload: bytes = b"natns\n", timeout: float = 3.0) -> bytes:
    """Open a TCP connection from namespace `ns`, send `payload`, return the reply."""
    import socket

    def go() -> bytes:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)

    return nsexec.call_in(ns, go)


# --------------------------------------------------------------------------- `natns probe`

PROTOCOLS = ("icmp", "tcp", "udp")


@dataclass
class ProbeResult:
    """One probe from a lab namespace, and what came of it.

    `far_end` is the lab namespace holding `to` as seen from `from_ns` (None
    when the address is not in the lab); `source_seen` is the source address
    the far end saw (natns listens there for the probe's duration), None when
    it could not look or nothing arrived. `local` is the sender's own
    address (and port) before any translation; `flow` identifies the
    probe's connection (``icmp_id`` or ``sport``) for matching it in the
    conntrack table or a capture.
    """

    from_ns: str
    to: str
    protocol: str
    port: int | None
    ok: bool
    latency_ms: float | None
    far_end: str | None = None
    source_seen: str | None = None
    error: str | None = None
    local: str | None = None
    flow: dict = field(default_factory=dict)
    responder: str | None = None  # how natns looked at the far end, or why it could not
    far_end_address: str | None = None  # the destination as the far end sees it (after DNAT)

    def summary(self) -> str:
        """One line: reachable or not, how fast, the source the far end saw."""
        what = f"{self.protocol}" + (f"/{self.port}" if self.port is not None else "")
        if not self.ok:
            return f"{self.from_ns} -> {self.to} {what}: no ({self.error or 'no answer'})"
        out = f"{self.from_ns} -> {self.to} {what}: reachable in {self.latency_ms:.3f} ms"
        if self.source_seen:
            out += f"; {self.far_end} saw source {self.source_seen}"
        return out

    def to_json(self) -> dict:
        return {
            "from": self.from_ns, "to": self.to, "protocol": self.protocol, "port": self.port,
            "ok": self.ok, "latency_ms": self.latency_ms, "far_end": self.far_end,
            "source_seen": self.source_seen, "error": self.error, "local": self.local,
            "flow": self.flow, "responder": self.responder, "far_end_address": self.far_end_address,
        }


def probe(t, from_ns: str, to: str, proto: str = "icmp", port: int | None = None,
          timeout: float = 2.0) -> ProbeResult:
    """Send one probe from lab namespace `from_ns` to `to` and report what happened.

    `proto` is ``icmp`` (an echo request), ``tcp`` (a connection to `port`) or
    ``udp`` (a datagram to `port` that must be answered). When `to` belongs
    to a namespace of the lab, natns listens there for the probe's duration
    (a raw ICMP socket, or a TCP/UDP responder on `to`:`port` that answers
    with the address it saw) and closes it before returning. Sockets are made
    in the namespaces by threads that entered them; no process is started.
    Never raises for an unreachable destination; raises UserError for bad
    arguments or a lab that is not up.
    """
    require_root("probe")
    from ..topology.addresses import ipv4_address
    from .endpoints import locate, require_up, role_of

    try:
        addr = ipv4_address(str(to))
    except ValueError as exc:  # "'x' is not an IP address", "'::1' is IPv6; natns handles IPv4 only"
        raise UserError(f"probe destination {exc}") from None
    if proto not in PROTOCOLS:
        raise UserError(f"probe protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
    if proto != "icmp" and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise UserError(f"a {proto} probe needs a port 1-65535")
    role_of(t, from_ns)
    require_up(t, from_ns)
    to = str(addr)
    if proto == "icmp":
        port = None
    dest = locate(t, from_ns, to, proto, port)
    far = None
    if dest is not None:
        try:
            require_up(t, dest.ns)
            far = dest.ns
        except UserError:
            far = None
    res = ProbeResult(from_ns, to, proto, port, False, None, far_end=far)
    if far is not None:
        assert dest is not None
        bind = dest.addr or to
        bind_port = dest.port if dest.port is not None else port
        res.far_end_address = bind if bind_port is None else f"{bind}:{bind_port}"
    if proto == "icmp":
        _icmp(res, timeout)
    elif proto == "tcp":
        _tcp(res, timeout)
    else:
        _udp(res, timeout)
    return res


def _sock(ns: str, kind: int, proto: int = 0):
    import socket

    return nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, kind, proto))


def _err(exc: OSError) -> str:
    import socket

    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer"
    return exc.strerror or str(exc)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _icmp_of(datagram: bytes) -> tuple[str, bytes] | None:
    """(source address, ICMP message) of an IPv4 datagram from a raw socket."""
    if len(datagram) < 20:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    return ".".join(map(str, datagram[12:16])), datagram[ihl:]


def _icmp(res: ProbeResult, timeout: float) -> None:
    import secrets
    import socket
    import struct
    import time

    ident, seq = secrets.randbelow(0xFFFE) + 1, 1
    token = b"natns-probe-" + secrets.token_hex(8).encode()
    payload = token + b"\0" * (56 - len(token))
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(head + payload), ident, seq) + payload
    res.flow = {"icmp_id": ident, "icmp_seq": seq}
    sock = _sock(res.from_ns, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    observer = None
    try:
        if res.far_end:
            observer = _sock(res.far_end, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            res.responder = f"raw ICMP socket in {res.far_end}"
        try:
            sock.connect((res.to, 0))
            res.local = sock.getsockname()[0]
            start = time.perf_counter()
            sock.send(packet)
        except OSError as exc:
            res.error = _err(exc)
            return
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.error = f"no reply within {timeout:g} s"
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except OSError as exc:
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    continue
                res.error = _err(exc)
                break
            got = _icmp_of(data)
            if not got or len(got[1]) < 8:
                continue
            src, msg = got
            if msg[0] == 0 and msg[8:8 + len(token)] == token:
                res.ok = True
                res.latency_ms = round((time.perf_counter() - start) * 1000, 3)
                break
            if msg[0] in (3, 11) and len(msg) >= 36:
                inner = msg[8:]
                ihl = (inner[0] & 0x0F) * 4
                quoted = inner[ihl:ihl + 8]
                if len(quoted) == 8 and quoted[0] == 8 and struct.unpack("!HH", quoted[4:8]) == (ident, seq):
                    what = "destination unreachable" if msg[0] == 3 else "time exceeded"
                    res.error = f"{what} (code {msg[1]}) from {src}"
                    break
        if observer is not None:
            observer.setblocking(False)
            while True:
                try:
                    data = observer.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                got = _icmp_of(data)
                if got and len(got[1]) >= 8 and got[1][0] == 8 and token in got[1]:
                    res.source_seen = got[0]
                    break
    finally:
        sock.close()
        if observer is not None:
            observer.close()


def _responder(res: ProbeResult, kind: int):
    """A socket bound to `to`:`port` in the far end, or None (with the reason noted)."""
    import socket

    if not res.far_end or not res.far_end_address:
        return None
    addr, _, port = res.far_end_address.partition(":")

    def make():
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, int(port)))
            if kind == socket.SOCK_STREAM:
                s.listen(8)
        except OSError:
            s.close()
            raise
        return s

    try:
        srv = nsexec.call_in(res.far_end, make)
    except OSError as exc:
        res.responder = f"no responder in {res.far_end}: {exc.strerror or exc}"
        return None
    res.responder = f"{res.protocol} responder on {res.far_end_address} in {res.far_end}"
    return srv


def _tcp(res: ProbeResult, timeout: float) -> None:
    import secrets
    import socket
    import time

    token = b"natns-probe-" + secrets.token_hex(8).encode()
    server = _responder(res, socket.SOCK_STREAM)
    client = _sock(res.from_ns, socket.SOCK_STREAM)
    conn = None
    try:
        client.settimeout(timeout)
        start = time.perf_counter()
        try:
            client.connect((res.to, res.port))
        except OSError as exc:
            res.error = _err(exc)
            return
        res.latency_ms = round((time.perf_counter() - start) * 1000, 3)
        res.ok = True
        host, sport = client.getsockname()
        res.local, res.flow = f"{host}:{sport}", {"sport": sport}
        if server is None:
            return
        client.sendall(token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                conn, peer = server.accept()
            except OSError:
                break
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
                res.source_seen = peer[0]
                try:  # answer, and let the client read it, so both sides close cleanly
                    conn.sendall(peer[0].encode())
                    conn.shutdown(socket.SHUT_WR)
                    client.recv(64)
                except OSError:
                    pass
                break
            conn.close()
            conn = None
    finally:
        client.close()
        if conn is not None:
            conn.close()
        if server is not None:
            server.close()


def _udp(res: ProbeResult, timeout: float) -> None:
    import secrets
    import socket
    import time

    token = b"natns-probe-" + secrets.token_hex(8).encode()
    server = _responder(res, socket.SOCK_DGRAM)
    client = _sock(res.from_ns, socket.SOCK_DGRAM)
    try:
        try:
            client.connect((res.to, res.port))
            host, sport = client.getsockname()
            res.local, res.flow = f"{host}:{sport}", {"sport": sport}
            start = time.perf_counter()
            client.send(token)
        except OSError as exc:
            res.error = _err(exc)
            return
        deadline = time.monotonic() + timeout
        if server is not None:
            while time.monotonic() < deadline:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    data, peer = server.recvfrom(2048)
                except OSError:
                    break
                if data == token:
                    res.source_seen = peer[0]
                    server.sendto(peer[0].encode(), peer)
                    break
        client.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            client.recv(2048)
        except OSError as exc:
            res.error = (f"no reply within {timeout:g} s" if isinstance(exc, (socket.timeout, TimeoutError))
                         else _err(exc))
            return
        res.ok = True
        res.latency_ms = round((time.perf_counter() - start) * 1000, 3)
    finally:
        client.close()
        if server is not None:
            server.close()
