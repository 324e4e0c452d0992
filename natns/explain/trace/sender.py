"""The probe's raw-socket sender: one recognisable ICMP echo, TCP SYN or UDP datagram.

(To be replaced by the single probe sender of natns.verify.probe.)
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import struct
import time

from ...errors import KernelError
from ...kernel import nsexec
from .result import Probe

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


PAYLOAD = b"natns trace"
_ICMP_UNREACH = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                 3: "port unreachable", 4: "fragmentation needed", 9: "network prohibited",
                 10: "host prohibited", 13: "administratively prohibited"}


class _Sender:
    """The probe's socket in the source namespace, made (and port bound) before tracing starts."""

    def __init__(self, ns: str, dst: str, proto: str, port: int | None):
        self.ns, self.dst, self.proto, self.port = ns, dst, proto, port
        self.icmp_id = self.sport = None
        if proto == "icmp":
            self.icmp_id = random.randint(0x1000, 0xFFFE)
            self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
        else:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            self.sock = nsexec.call_in(ns, lambda: socket.socket(socket.AF_INET, kind))
            for _ in range(50):
                sport = random.randint(33000, 60999)
                try:
                    self.sock.bind(("0.0.0.0", sport))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        continue
                    raise
                self.sport = sport
                break
            else:
                raise KernelError(f"no free source port in namespace {ns}")
            if proto == "tcp":
                # Close with a RST: no FIN exchange after the traced packets.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def match_rules(self) -> list[str]:
        """nft rules (after the match, `meta nftrace set 1`) that pick out the probe and its replies."""
        errors = "icmp type { destination-unreachable, time-exceeded, parameter-problem }"
        if self.proto == "icmp":
            i = int(self.icmp_id)
            # In an ICMP error: inner IP header at th+8 bytes; its protocol at +9, the inner ICMP id at +28+4.
            return [f"icmp type {{ echo-request, echo-reply }} icmp id {i}",
                    f"{errors} @th,136,8 1 @th,256,16 {i}"]
        p = int(self.sport)
        num = 6 if self.proto == "tcp" else 17
        return [f"meta l4proto {self.proto} th sport {p}",
                f"meta l4proto {self.proto} th dport {p}",
                f"{errors} @th,136,8 {num} @th,224,16 {p}"]

    def probe(self) -> Probe:
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id)

    def send(self, timeout: float) -> Probe:
        """Send the probe and wait up to `timeout` s for its answer."""
        pr = self.probe()
        s = self.sock
        s.settimeout(timeout)
        try:
            if self.proto == "icmp":
                hdr = struct.pack("!BBHHH", 8, 0, 0, self.icmp_id, 1) + PAYLOAD
                pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr), self.icmp_id, 1) + PAYLOAD
                s.sendto(pkt, (self.dst, 0))
                pr.result, pr.answered = self._icmp_answer(timeout)
            elif self.proto == "tcp":
                s.connect((self.dst, self.port))
                pr.result, pr.answered = "connected", True
            else:
                s.connect((self.dst, self.port))
                s.send(PAYLOAD + b"\n")
                data = s.recv(2048)
                pr.result, pr.answered = f"reply ({len(data)} bytes)", True
        except ConnectionRefusedError:
            pr.result = "refused (TCP RST)" if self.proto == "tcp" else "refused (ICMP port unreachable)"
            pr.answered = True
        except TimeoutError:
            pr.result = "no reply"
        except OSError as exc:
            pr.result = exc.strerror or str(exc)
        return pr

    def _icmp_answer(self, timeout: float) -> tuple[str, bool]:
        deadline = time.monotonic() + timeout
        names = {3: "destination unreachable", 11: "time exceeded", 12: "parameter problem"}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "no reply", False
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                return "no reply", False
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8:
                continue
            typ, code = icmp[0], icmp[1]
            if typ == 0 and struct.unpack("!H", icmp[4:6])[0] == self.icmp_id:
                return "reply", True
            if typ in names and len(icmp) >= 8 + 20 + 8:
                inner = icmp[8:]
                ihl2 = (inner[0] & 0x0F) * 4
                if inner[9] == 1 and struct.unpack("!H", inner[ihl2 + 4:ihl2 + 6])[0] == self.icmp_id:
                    what = _ICMP_UNREACH.get(code, f"code {code}") if typ == 3 else f"code {code}"
                    return f"ICMP {names[typ]} ({what}) from {addr[0]}", True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
