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
    """The probe's socket in the source namespace, made (and port bound) before tracing starts.

    `size` is the payload in bytes (as ``ping -s``), `df` sets Don't Fragment (``ping -M do``).
    """

    def __init__(self, ns: str, dst: str, proto: str, port: int | None, *, size: int | None = None,
                 df: bool = False):
        self.ns, self.dst, self.proto, self.port = ns, dst, proto, port
        self.size, self.df = size, df
        # TCP closes with a RST: no FIN exchange after the traced packets
        self._sender = probemod.Sender(ns, dst, proto, port, rst_close=True, size=size, df=df,
                                       payload=PAYLOAD + b"\n" if proto == "udp" and size is None else None)
        self.icmp_id, self.sport = self._sender.icmp_id, self._sender.sport

    def _mark(self) -> str | None:
        """8 random bytes of the echo request's data (its token), which no NAT rewrites: ``0x...``.

        None when the payload is too short to carry them."""
        tok = self._sender.token
        if self.proto != "icmp" or len(probemod.fill(tok, self.size)) < 20:
            return None
        return "0x" + tok[12:20].hex()

    def match_rules(self) -> list[str]:
        """nft rules (after the match, `meta nftrace set 1`) that pick out the probe and its replies.

        Source NAT may rewrite the probe's ICMP id or source port (``--random-fully``,
        ``masquerade random,fully-random``), so the probe is also matched by what no
        source NAT changes: an echo's data (the token it carries, quoted in ICMP errors
        about it), a TCP/UDP packet's destination address and port (and the reply's source).

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
            inner = 58 if icmp == "icmpv6" else 1
            rules = [f"{icmp} type {{ echo-request, echo-reply }} {icmp} id {i}",
                     f"{errors} {inner} @th,{quoted + 32},16 {i}"]
            mark = self._mark()
            if mark is not None:
                # the token's random bytes: data byte 12 (th+20), quoted in an error 8 + 12 bytes
                # after the quoted ICMP header's start
                rules += [f"{icmp} type {{ echo-request, echo-reply }} @th,160,64 {mark}",
                          f"{errors} {inner} @th,{quoted + 160},64 {mark}"]
            return rules
        p = int(self.sport)
        num = 6 if self.proto == "tcp" else 17
        dst, dport = self.dst, int(self.port)
        ipf = "ip6" if icmp == "icmpv6" else "ip"
        return [f"meta l4proto {self.proto} th sport {p}",
                f"meta l4proto {self.proto} th dport {p}",
                f"{errors} {num} @th,{quoted},16 {p}",
                f"meta l4proto {self.proto} {ipf} daddr {dst} th dport {dport}",
                f"meta l4proto {self.proto} {ipf} saddr {dst} th sport {dport}",
                f"{errors} {num} @th,{quoted + 16},16 {dport}"]

    def probe(self) -> Probe:
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id, size=self.size, df=self.df)

    def send(self, timeout: float) -> Probe:
        """Send the probe and wait up to `timeout` s for its answer."""
        r = self._sender.send(timeout)
        return Probe(self.proto, self.dst, self.port, self.sport, self.icmp_id,
                     result=r.sender_saw(), answered=r.came_back, outcome=r.outcome, size=self.size,
                     df=self.df, mtu=r.mtu, error_from=r.error_from, error=r.error)

    def close(self) -> None:
        self._sender.close()
