"""doctor's own probes: the one thing it sends (ping, a TCP connect, a UDP datagram, a DF ping).

Kept apart from the checks (which only read a Snapshot). Every probe goes
through natns's one sender (natns.kernel.probe) and its one definition of
success; doctor words each outcome for its report. `KernelProber` is what
`diagnose` uses unless given another (natns.testing.fakes.FakeProber).
"""

from __future__ import annotations

from ...kernel import probe as probemod
from .findings import ProbeResult, cmd


def probe(src_ns: str, dst: str, proto: str, port: int | None) -> ProbeResult:
    if proto == "icmp":
        # three pings 0.3 s apart, waiting 1 s after the last: outlasts one ARP retransmit (1 s), so a
        # neighbour entry left INCOMPLETE by earlier traffic resolves within the probe
        r = probemod.ping(src_ns, dst, count=3, timeout=1.0, interval=0.3)
        return ProbeResult("icmp", r.ok, r.summary(), cmd("ip", "netns", "exec", src_ns, "ping", "-c", "3", dst))
    return _tcp(src_ns, dst, port) if proto == "tcp" else _udp(src_ns, dst, port)


def _tcp(src_ns: str, dst: str, port: int) -> ProbeResult:
    r = probemod.send(src_ns, dst, "tcp", port, timeout=2.0)
    at = probemod.hostport(dst, port)
    detail = {"reply": f"connected to {at}",
              "refused": f"{at} refused the connection (the path works; nothing listens there)",
              "timeout": f"no answer from {at} within 2 s"}.get(r.outcome, f"connect to {at}: {r.error}")
    return ProbeResult("tcp", r.path_works, detail,
                       cmd("ip", "netns", "exec", src_ns, "nc", "-z", "-w", "2", dst, str(port)))


def _udp(src_ns: str, dst: str, port: int) -> ProbeResult:
    r = probemod.send(src_ns, dst, "udp", port, timeout=1.5, payload=b"natns doctor\n")
    at = probemod.hostport(dst, port)
    detail = {"reply": f"{at} answered",
              "refused": f"{at}: port unreachable came back (the path works; nothing listens there)",
              "timeout": f"no answer from {at} (UDP: inconclusive, many services stay silent)",
              }.get(r.outcome, f"send to {at}: {r.error}")
    return ProbeResult("udp", r.path_works, detail,
                       cmd("ip", "netns", "exec", src_ns, "nc", "-u", "-w", "2", dst, str(port)))


def df_probe(src_ns: str, dst: str, size: int) -> tuple[bool, str]:
    """A ping of `size` bytes (IP) with DF set: do frames of the source's MTU get through?

    Returns (ok, what the sender saw): the probe's outcome and its error in full, e.g.
    ``too-big: frag needed and DF set (mtu = 1400) from 192.0.2.1`` (a router's ICMP
    error) or ``too-big: local error: message too long, mtu=1400`` (the route's MTU,
    learnt from such an error before). IPv6: 40 bytes of header and 8 of ICMPv6 come off
    `size`, as 20 and 8 for IPv4."""
    r = probemod.ping(src_ns, dst, count=1, timeout=1.0, df=True, size=size - (48 if ":" in dst else 28))
    if r.ok:
        return True, r.summary()
    return False, f"{r.outcome}: {r.error or r.summary()}"


class KernelProber:
    """Sends doctor's probes for real, from the source namespace."""

    def probe(self, src_ns: str, dst: str, proto: str, port: int | None) -> ProbeResult:
        return probe(src_ns, dst, proto, port)

    def df_probe(self, src_ns: str, dst: str, size: int) -> tuple[bool, str]:
        return df_probe(src_ns, dst, size)
