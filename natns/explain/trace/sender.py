"""The traced probe: natns's one sender (natns.kernel.probe), and the nft rules that pick
out its packets.

The probe's socket is made (its source port bound, or its ICMP id chosen) before
tracing starts, so `match_rules` can mark exactly its packets and their replies
for netfilter tracing; `send` then sends it and says, in trace's words, what the
sender saw.
"""

from __future__ import annotations

from ...kernel import probe as probemod
from .result import Probe

#: The Internet checksum (RFC 1071), as the sender computes it.
_checksum = probemod.checksum
PAYLOAD = b"natns trace"
_ICMP_UNREACH = probemod.ICMP_UNREACH


class _Sender:
    """The probe's socket in the source namespace, made (and port bound) before tracing starts."""

    def __init__(self, ns: str, dst: str, proto: str, port: int | None):
        self.ns, self.dst, self.proto, self.port = ns, dst, proto, port
        # TCP closes with a RST: no FIN exchange after the traced packets
        self._sender = probemod.Sender(ns, dst, proto, port, rst_close=True,
                                       payload=PAYLOAD + b"\n" if proto == "udp" else None)
        self.icmp_id, self.sport = self._sender.icmp_id, self._sender.sport

    def match_rules(self) -> list[str]:
        """nft rules (after the match, `meta nftrace set 1`) that pick out the probe and its replies.

        The ICMP(v6) errors quoting the probe are matched in their quoted packet: its IP header
        at th+8 bytes, the protocol field in it (IPv4: byte 9; IPv6: next header, byte 6), and
        the quoted ICMP id / source port right after it (20 bytes of IPv4, 40 of IPv6) + 4 / + 0.
        """
        if ":" in self.dst:
            icmp, errors, at_proto, head = ("icmpv6", "destination-unreachable, packet-too-big, time-exceeded, "
                                            "parameter-problem", 112, 40)
        else:
            icmp, errors, at_proto, head = "icmp", "destination-unreachable, time-exceeded, parameter-problem", 136, 20
        errors = f"{icmp} type {{ {errors} }} @th,{at_proto},8"
        quoted = (8 + head) * 8  # bit offset of the quoted transport header
        if self.proto == "icmp":
            i = int(self.icmp_id)
            return [f"{icmp} type {{ echo-request, echo-reply }} {icmp} id {i}",
                    f"{errors} {58 if icmp == 'icmpv6' else 1} @th,{quoted + 32},16 {i}"]
        p = int(self.sport)
        num = 6 if self.proto == "tcp" else 17
        return [f"meta l4proto {self.proto} th sport {p}",
                f"meta l4proto {self.proto} th dport {p}",
                f"{errors} {num} @th,{quoted},16 {p}"]

    def probe(self) -> Probe:
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id)

    def send(self, timeout: float) -> Probe:
        """Send the probe and wait up to `timeout` s for its answer."""
        r = self._sender.send(timeout)
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id,
                     result=r.sender_saw(), answered=r.came_back)

    def close(self) -> None:
        self._sender.close()
