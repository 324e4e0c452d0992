"""doctor's own probes: the one thing it sends (ping, a TCP connect, a UDP datagram, a DF ping).

Kept apart from the checks (which only read a Snapshot); to be replaced by the
single probe sender of natns/verify/probe.py. `KernelProber` is what
`diagnose` uses unless given another (natns.testing.fakes.FakeProber).
"""

from __future__ import annotations

import socket

from ...kernel import nsexec
from ...verify import probe as probemod
from .findings import ProbeResult, cmd


def probe(src_ns: str, dst: str, proto: str, port: int | None) -> ProbeResult:
    if proto == "icmp":
        # three pings 0.3 s apart, waiting 1 s after the last: outlasts one ARP retransmit (1 s), so a
        # neighbour entry left INCOMPLETE by earlier traffic resolves within the probe
        r = probemod.ping(src_ns, dst, count=3, timeout=1.0, interval=0.3)
        return ProbeResult("icmp", r.ok, r.summary(), cmd("ip", "netns", "exec", src_ns, "ping", "-c", "3", dst))
    return _tcp(src_ns, dst, port) if proto == "tcp" else _udp(src_ns, dst, port)


def _tcp(src_ns: str, dst: str, port: int) -> ProbeResult:
    def go() -> tuple[bool | None, str]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect((dst, port))
            return True, f"connected to {dst}:{port}"
        except ConnectionRefusedError:
            return True, f"{dst}:{port} refused the connection (the path works; nothing listens there)"
        except TimeoutError:
            return False, f"no answer from {dst}:{port} within 2 s"
        except OSError as exc:
            return False, f"connect to {dst}:{port}: {exc.strerror or exc}"
        finally:
            s.close()

    ok, detail = nsexec.call_in(src_ns, go)
    return ProbeResult("tcp", ok, detail, cmd("ip", "netns", "exec", src_ns, "nc", "-z", "-w", "2", dst, str(port)))


def _udp(src_ns: str, dst: str, port: int) -> ProbeResult:
    def go() -> tuple[bool | None, str]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.5)
        try:
            s.connect((dst, port))
            s.send(b"natns doctor\n")
            s.recv(2048)
            return True, f"{dst}:{port} answered"
        except ConnectionRefusedError:
            return True, f"{dst}:{port}: port unreachable came back (the path works; nothing listens there)"
        except TimeoutError:
            return None, f"no answer from {dst}:{port} (UDP: inconclusive, many services stay silent)"
        except OSError as exc:
            return False, f"send to {dst}:{port}: {exc.strerror or exc}"
        finally:
            s.close()

    ok, detail = nsexec.call_in(src_ns, go)
    return ProbeResult("udp", ok, detail, cmd("ip", "netns", "exec", src_ns, "nc", "-u", "-w", "2", dst, str(port)))


def df_probe(src_ns: str, dst: str, size: int) -> tuple[bool, str]:
    """A ping of `size` bytes (IP) with DF set: do frames of the source's MTU get through?"""
    argv = ["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size - 28), dst]
    proc = nsexec.run(src_ns, argv, check=False, timeout=10)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, (text[-2] if len(text) >= 2 else (text[-1] if text else ""))


class KernelProber:
    """Sends doctor's probes for real, from the source namespace."""

    def probe(self, src_ns: str, dst: str, proto: str, port: int | None) -> ProbeResult:
        return probe(src_ns, dst, proto, port)

    def df_probe(self, src_ns: str, dst: str, size: int) -> tuple[bool, str]:
        return df_probe(src_ns, dst, size)
