"""Probes: send real packets from a lab namespace and report what happened."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
