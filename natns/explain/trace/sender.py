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
        """nft rules (after the match, `meta nftrace set 1`) that pick out the probe and its replies."""
        if ":" in self.dst:
            return self._match_rules6()
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

    def _match_rules6(self) -> list[str]:
        """The same for an IPv6 probe: ICMPv6 echo by id, TCP/UDP by port, and the ICMPv6 errors
        (packet too big included) quoting the probe: the quoted IPv6 header at th+8 bytes, its
        next header at +6, the quoted transport header after its 40 bytes."""
        errors = "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem }"
        if self.proto == "icmp":
            i = int(self.icmp_id)
            return [f"icmpv6 type {{ echo-request, echo-reply }} icmpv6 id {i}",
                    f"{errors} @th,112,8 58 @th,416,16 {i}"]
        p = int(self.sport)
        num = 6 if self.proto == "tcp" else 17
        return [f"meta l4proto {self.proto} th sport {p}",
                f"meta l4proto {self.proto} th dport {p}",
                f"{errors} @th,112,8 {num} @th,384,16 {p}"]

    def probe(self) -> Probe:
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id)

    def send(self, timeout: float) -> Probe:
        """Send the probe and wait up to `timeout` s for its answer."""
        r = self._sender.send(timeout)
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id,
                     result=r.sender_saw(), answered=r.came_back)

    def close(self) -> None:
        self._sender.close()
