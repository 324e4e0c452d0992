"""Many checksummed TCP streams through a router, for the load tests (quick and soak).

`Streams` opens `count` connections from a tenant namespace to a server in
the internet namespace. Each client sends `size` random bytes; the server
hashes what it receives (sha256) and, at end of stream, answers with the
byte count and the digest, which the client compares with its own. Sending
is paced so that every stream is still running while the test changes the
lab: until `finish()` is called a stream sends at most 90% of its payload,
spread over `spread` seconds, then the rest at full speed. A reset, a
timeout, a short count or a wrong digest on any stream is an error.

Both ends run on two threads of the test process with non-blocking sockets
(selectors), made in their namespaces with `call_in`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from natns.kernel import nsexec


@dataclass
class Stream:
    index: int
    payload: bytes
    digest: str
    sock: socket.socket | None = None
    sent: int = 0
    reply: bytes = b""
    shut: bool = False
    done: bool = False
    error: str | None = None


@dataclass
class Result:
    """What the streams saw: per-stream errors, and figures for docs/reliability.md."""

    count: int
    size: int
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    bytes_verified: int = 0
    seconds: float = 0.0


class Streams:
    def __init__(self, client_ns: str, server_ns: str, server_addr: str, port: int, count: int, size: int,
                 spread: float, timeout: float = 180.0):
        self.count, self.size, self.spread, self.timeout = count, size, spread, timeout
        self.client_ns, self.addr, self.port = client_ns, server_addr, port
        self.listener = nsexec.call_in(server_ns, lambda: socket.create_server((server_addr, port), backlog=1024))
        self.listener.setblocking(False)
        self.streams = [Stream(i, p, hashlib.sha256(p).hexdigest()) for i, p in
                        ((i, os.urandom(size)) for i in range(count))]
        self._finish = threading.Event()
        self._stop = threading.Event()
        self.result = Result(count, size)
        self.server_errors: list[str] = []
        self._server = threading.Thread(target=self._serve, daemon=True, name="loadgen-server")
        self._client = threading.Thread(target=self._run_clients, daemon=True, name="loadgen-clients")
        self.started = time.monotonic()

    def start(self) -> Streams:
        self._server.start()
        for s in self.streams:
            s.sock = nsexec.call_in(self.client_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.sock.setblocking(False)
            err = s.sock.connect_ex((self.addr, self.port))
            if err not in (0, errno.EINPROGRESS):
                s.error = f"stream {s.index}: connect: {os.strerror(err)}"
        self._client.start()
        return self

    def established(self, timeout: float = 10.0) -> bool:
        """Wait until every stream has sent something (so all are connected and flowing)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(s.sent > 0 or s.error for s in self.streams):
                return not any(s.error for s in self.streams)
            time.sleep(0.05)
        return False

    def finish(self) -> Result:
        """Let every stream send the rest, wait for all answers (bounded), return the result."""
        self._finish.set()
        self._client.join(timeout=self.timeout)
        self._stop.set()
        self._server.join(timeout=10)
        r = self.result
        r.seconds = time.monotonic() - self.started
        for s in self.streams:
            if s.error:
                r.errors.append(s.error)
            elif not s.done:
                r.errors.append(f"stream {s.index}: no answer after {s.sent} bytes sent")
            else:
                count, _, digest = s.reply.decode(errors="replace").strip().partition(" ")
                if count != str(self.size) or digest != s.digest:
                    r.errors.append(f"stream {s.index}: server got {count} bytes, digest "
                                    f"{'ok' if digest == s.digest else 'WRONG'}")
                else:
                    r.ok += 1
                    r.bytes_verified += self.size
        r.errors += self.server_errors
        self.close()
        return r

    def close(self) -> None:
        self._finish.set()
        self._stop.set()
        for s in self.streams:
            if s.sock is not None:
                s.sock.close()
        self.listener.close()

    # -- the client side: pace, send, half-close, read the answer

    def _run_clients(self) -> None:
        chunk = 16384
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            finishing = self._finish.is_set()
            budget = self.size if finishing else int(self.size * 0.9 * min(1.0, (now - self.started) / self.spread))
            busy = False
            for s in self.streams:
                if s.done or s.error:
                    continue
                busy = True
                try:
                    while s.sent < min(budget, self.size):
                        n = s.sock.send(memoryview(s.payload)[s.sent:min(budget, s.sent + chunk)])
                        if n <= 0:
                            break
                        s.sent += n
                    if s.sent == self.size and not s.shut:
                        s.sock.shutdown(socket.SHUT_WR)
                        s.shut = True
                    if s.shut:
                        data = s.sock.recv(200)
                        if data:
                            s.reply += data
                            if s.reply.endswith(b"\n"):
                                s.done = True
                        else:
                            s.done = bool(s.reply)
                            if not s.done:
                                s.error = f"stream {s.index}: closed without an answer"
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    s.error = f"stream {s.index}: {exc.strerror or exc} after {s.sent} bytes"
            if not busy:
                return
            time.sleep(0.002)

    # -- the server side: accept, hash, answer at end of stream

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        state: dict[socket.socket, tuple] = {}
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                if key.data is None:
                    try:
                        conn, _ = self.listener.accept()
                    except (BlockingIOError, OSError):
                        continue
                    conn.setblocking(False)
                    state[conn] = (hashlib.sha256(), [0])
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                conn = key.fileobj
                h, n = state[conn]
                try:
                    data = conn.recv(262144)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.server_errors.append(f"server: {exc.strerror or exc} after {n[0]} bytes")
                    sel.unregister(conn)
                    conn.close()
                    continue
                if data:
                    h.update(data)
                    n[0] += len(data)
                    continue
                sel.unregister(conn)
                try:
                    conn.setblocking(True)
                    conn.settimeout(5)
                    conn.sendall(f"{n[0]} {h.hexdigest()}\n".encode())
                except OSError as exc:
                    self.server_errors.append(f"server: answer: {exc.strerror or exc}")
                conn.close()
        sel.close()
        for conn in state:
            conn.close()
