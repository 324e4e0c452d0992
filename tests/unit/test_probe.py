"""The probe sender's result and its one definition of success, without root.

What the network did reaches the result in two forms: an errno from the
socket (`classify`) or an ICMP message read by the raw socket
(`parse_icmp`). Both are built here byte by byte, as the kernel hands them
over, and the derived verdicts (ok, answered, path_works, the texts of
probe, ping, trace and doctor) checked for every outcome.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from natns.errors import UserError
from natns.verify import probe as pm
from natns.verify.capture import bound_packet_socket
from natns.verify.probe import PingResult, ProbeResult, classify, echo_request, fill, parse_icmp


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """An IPv4 header (no options) + payload, as a raw socket returns it."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + payload


def echo_reply(ident: int, seq: int, data: bytes) -> bytes:
    return struct.pack("!BBHHH", 0, 0, 0, ident, seq) + data


def icmp_error(typ: int, code: int, quoted: bytes, mtu: int = 0) -> bytes:
    """An ICMP error quoting `quoted` (the offending IP header + 8 bytes)."""
    return struct.pack("!BBHHH", typ, code, 0, 0, mtu) + quoted


TOKEN = b"natns-probe-0123456789abcdef"


# --------------------------------------------------------------------------- building the probe


def test_echo_request_checksum_verifies_and_fill_pads_or_cuts():
    pkt = echo_request(0x1234, 7, fill(TOKEN, 56))
    assert len(pkt) == 8 + 56
    assert pm.checksum(pkt) == 0  # a correct checksum sums to zero
    assert struct.unpack("!BBHHH", pkt[:8])[3:] == (0x1234, 7)
    assert fill(TOKEN, None) == TOKEN + b"\0" * (56 - len(TOKEN))
    assert fill(TOKEN, 1472)[:len(TOKEN)] == TOKEN and len(fill(TOKEN, 1472)) == 1472
    assert fill(TOKEN, 4) == TOKEN[:4] and fill(TOKEN, 0) == b""
    assert pm.checksum(b"\x01") == (~0x0100) & 0xFFFF  # odd length padded with a zero byte


def test_sender_refuses_bad_options_before_making_a_socket():
    for kw, words in [
        ({"proto": "sctp"}, "not one of"),
        ({"proto": "tcp"}, "needs a port"),
        ({"proto": "udp", "port": 0}, "needs a port"),
        ({"proto": "tcp", "port": 80, "count": 3}, "count"),
        ({"count": 0}, "count"),
        ({"size": 70000}, "size"),
    ]:
        with pytest.raises(UserError, match=words):
            pm.Sender("nowhere", "192.0.2.1", **kw)


# --------------------------------------------------------------------------- reading what came back


def test_an_echo_reply_is_ours_only_with_our_id_and_token():
    data = fill(TOKEN, 56)
    reply = ipv4("203.0.113.114", "192.0.2.2", 1, echo_reply(4242, 1, data))
    got = parse_icmp(reply, 4242, TOKEN)
    assert got is not None and got.kind == "reply" and got.src == "203.0.113.114" and got.seq == 1
    assert parse_icmp(reply, 4243, TOKEN) is None  # another sender's id
    assert parse_icmp(reply, 4242, b"natns-probe-ffffffffffffffff") is None  # another probe's token
    assert parse_icmp(reply, 4242, None) is not None  # too small for a token: the id decides
    request = ipv4("192.0.2.2", "203.0.113.114", 1, echo_request(4242, 1, data))
    assert parse_icmp(request, 4242, TOKEN) is None  # our own request, seen on lo
    assert parse_icmp(b"\x45" + b"\0" * 10, 4242) is None


def test_an_icmp_error_is_ours_when_it_quotes_our_echo_request():
    offending = ipv4("192.0.2.2", "203.0.113.114", 1, echo_request(4242, 3, fill(TOKEN, 56)))[:28]
    unreach = ipv4("192.0.2.3", "192.0.2.2", 1, icmp_error(3, 1, offending))
    got = parse_icmp(unreach, 4242, TOKEN)
    assert got is not None and got.kind == "error" and (got.type, got.code, got.seq) == (3, 1, 3)
    assert got.text() == "destination unreachable (code 1) from 192.0.2.3"
    assert got.mtu is None
    assert parse_icmp(unreach, 999, TOKEN) is None
    exceeded = ipv4("198.51.100.1", "192.0.2.2", 1, icmp_error(11, 0, offending))
    assert parse_icmp(exceeded, 4242).text() == "time exceeded (code 0) from 198.51.100.1"
    # quoting a UDP datagram: not about an echo request
    udp = ipv4("192.0.2.2", "203.0.113.114", 17, struct.pack("!HHHH", 4242, 53, 8, 0))[:28]
    assert parse_icmp(ipv4("192.0.2.3", "192.0.2.2", 1, icmp_error(3, 3, udp)), 4242) is None


def test_frag_needed_carries_the_next_hop_mtu():
    offending = ipv4("192.0.2.2", "203.0.113.114", 1, echo_request(7, 1, fill(TOKEN, 1472)))[:28]
    got = parse_icmp(ipv4("192.0.2.3", "192.0.2.2", 1, icmp_error(3, 4, offending, mtu=1400)), 7)
    assert got.mtu == 1400
    assert got.text() == "frag needed and DF set (mtu = 1400) from 192.0.2.3"


@pytest.mark.parametrize("exc, outcome", [
    (socket.timeout("timed out"), "timeout"),
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
    (OSError(errno.EPERM, "Operation not permitted"), "unreachable"),  # a firewall's reject on output
    (OSError(errno.EMSGSIZE, "Message too long"), "too-big"),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), "timeout"),
    (OSError(errno.EBADF, "Bad file descriptor"), "error"),
])
def test_classify_names_one_outcome_per_errno(exc, outcome):
    got, text = classify(exc)
    assert got == outcome and got in pm.OUTCOMES
    if isinstance(exc, OSError) and exc.strerror:
        assert text == exc.strerror


# --------------------------------------------------------------------------- one definition of success


def result(outcome: str, proto: str = "icmp", **kw) -> ProbeResult:
    port = None if proto == "icmp" else 80
    return ProbeResult("tenant1", "203.0.113.114", proto, port, outcome=outcome, **kw)


@pytest.mark.parametrize("outcome, ok, answered", [
    ("reply", True, True),
    ("refused", False, True),
    ("unreachable", False, False),
    ("too-big", False, False),
    ("timeout", False, False),
    ("error", False, False),
])
def test_ok_and_answered_follow_from_the_outcome_alone(outcome, ok, answered):
    for proto in ("icmp", "tcp", "udp"):
        r = result(outcome, proto)
        assert (r.ok, r.answered) == (ok, answered), (outcome, proto)
        assert r.to_json()["ok"] is ok and r.to_json()["outcome"] == outcome


def test_doctor_verdict_is_inconclusive_only_for_an_unanswered_udp_datagram():
    assert result("timeout", "udp").path_works is None
    assert result("timeout", "udp", source_seen="198.51.100.116").path_works is False  # it arrived
    assert result("timeout", "tcp").path_works is False
    assert result("timeout").path_works is False
    assert result("refused", "udp").path_works is True  # port unreachable came back: the path works
    assert result("refused", "tcp").path_works is True
    assert result("unreachable", "udp").path_works is False


def test_came_back_counts_icmp_errors_from_the_path_as_trace_does():
    assert result("unreachable", icmp_error=(3, 1), error_from="192.0.2.3").came_back
    assert not result("unreachable", error="Network is unreachable").came_back  # local: nothing sent
    assert not result("timeout").came_back
    assert result("refused", "tcp").came_back


def test_the_words_of_trace_for_each_outcome():
    assert result("reply").sender_saw() == "reply"
    assert result("reply", "tcp").sender_saw() == "connected"
    assert result("reply", "udp", reply=b"198.51.100.116").sender_saw() == "reply (14 bytes)"
    assert result("refused", "tcp").sender_saw() == "refused (TCP RST)"
    assert result("refused", "udp").sender_saw() == "refused (ICMP port unreachable)"
    assert result("timeout").sender_saw() == "no reply"
    assert result("unreachable", icmp_error=(3, 1), error_from="192.0.2.3").sender_saw() == (
        "ICMP destination unreachable (host unreachable) from 192.0.2.3")
    assert result("unreachable", icmp_error=(11, 0), error_from="192.0.2.3").sender_saw() == (
        "ICMP time exceeded (code 0) from 192.0.2.3")
    assert result("unreachable", "tcp", error="No route to host").sender_saw() == "No route to host"


def test_probe_summary_and_ping_summary():
    ok = result("reply", latency_ms=0.5, far_end="inet", source_seen="198.51.100.116")
    assert ok.summary() == "tenant1 -> 203.0.113.114 icmp: reachable in 0.500 ms; inet saw source 198.51.100.116"
    assert result("timeout", "tcp", error="no reply within 2 s").summary() == (
        "tenant1 -> 203.0.113.114 tcp/80: no (no reply within 2 s)")

    def ping(**kw) -> PingResult:
        return PingResult("tenant1", "203.0.113.114", "icmp", None, **kw)

    assert ping(outcome="reply", sent=3, received=3, rtt_ms=0.061).summary() == (
        "3 packets transmitted, 3 received, 0% packet loss, rtt 0.061 ms")
    assert ping(outcome="timeout", sent=1, error="no reply within 1 s").summary() == (
        "1 packets transmitted, 0 received, 100% packet loss")
    assert ping(outcome="reply", sent=3, received=2, rtt_ms=1.0).summary().endswith("33% packet loss, rtt 1.000 ms")
    # nothing could be sent: the local error, as ping prints it
    assert ping(outcome="unreachable", error="Network is unreachable").summary() == "Network is unreachable"
    assert ping(outcome="too-big", sent=0, mtu=1400,
                error="local error: message too long, mtu=1400").summary() == (
        "local error: message too long, mtu=1400")
    # an ICMP error from a router: ping's statistics, with the error count
    assert ping(outcome="unreachable", sent=1, errors=1, error_from="192.0.2.3",
                error="destination unreachable (code 1) from 192.0.2.3").summary() == (
        "1 packets transmitted, 0 received, +1 errors, 100% packet loss")


# --------------------------------------------------------------------------- capture start


def test_a_packet_socket_is_listening_when_bound_to_the_interface_and_running():
    head = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode"
    assert not bound_packet_socket(head, 3, {"248859"})
    running = "000000006d6ecbae 3      3    0003   3     1 0      0      248859"
    assert bound_packet_socket(running, 3, {"248859"})
    assert not bound_packet_socket(running, 4, {"248859"})  # another interface
    assert not bound_packet_socket(running, 3, {"1"})  # another process's socket
    first_bind = "000000006d6ecbae 3      3    0000   3     0 0      0      248859"  # protocol 0: not hooked yet
    assert not bound_packet_socket(first_bind, 3, {"248859"})
    assert not bound_packet_socket("garbage", 3, {"248859"})


# --------------------------------------------------------------------------- IPv6 (issue 13)


def icmp6(typ: int, code: int, body4: int, rest: bytes) -> bytes:
    """An ICMPv6 message as a raw ICMPv6 socket reads it (no IPv6 header)."""
    return struct.pack("!BBHI", typ, code, 0, body4) + rest


def ipv6(src: str, dst: str, nxt: int, payload: bytes) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nxt, 64) + socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst) + payload)


def test_an_icmpv6_echo_reply_and_the_errors_that_quote_our_request_are_ours():
    from natns.kernel.probe import echo_request6, parse_icmp6
    req = echo_request6(4242, 1, fill(TOKEN, 56))
    assert req[0] == 128 and struct.unpack("!HH", req[4:8]) == (4242, 1)
    reply = bytes([129]) + req[1:]
    got = parse_icmp6(reply, "2001:db8:ffff::114", 4242, TOKEN)
    assert got.kind == "reply" and got.seq == 1 and got.v6
    assert parse_icmp6(reply, "2001:db8:ffff::114", 4243, TOKEN) is None
    assert parse_icmp6(req, "2001:db8:1::2", 4242, TOKEN) is None  # our own request
    ns = icmp6(135, 0, 0, socket.inet_pton(socket.AF_INET6, "2001:db8:1::2"))
    assert parse_icmp6(ns, "fe80::1", 4242) is None  # neighbour discovery is no answer
    quoted = ipv6("2001:db8:1::2", "2001:db8:ffff::114", 58, req)
    ptb = parse_icmp6(icmp6(2, 0, 1280, quoted), "2001:db8:1::1", 4242)
    assert ptb.kind == "error" and ptb.mtu == 1280 and ptb.text() == "packet too big (mtu = 1280) from 2001:db8:1::1"
    unreach = parse_icmp6(icmp6(1, 0, 0, quoted), "2001:db8:1::1", 4242)
    assert unreach.mtu is None and unreach.text() == "destination unreachable (code 0) from 2001:db8:1::1"
    assert parse_icmp6(icmp6(1, 0, 0, quoted), "2001:db8:1::1", 999) is None
    # a quoted packet with a destination-options header before the ICMPv6 request
    dopts = bytes([58, 0]) + b"\x01\x04\0\0\0\0"
    behind = ipv6("2001:db8:1::2", "2001:db8:ffff::114", 60, dopts + req)
    assert parse_icmp6(icmp6(3, 0, 0, behind), "2001:db8:ff::1", 4242).text() == (
        "time exceeded (code 0) from 2001:db8:ff::1")
    udp = ipv6("2001:db8:1::2", "2001:db8:ffff::114", 17, struct.pack("!HHHH", 5000, 53, 8, 0))
    assert parse_icmp6(icmp6(1, 4, 0, udp), "2001:db8:ffff::114", 4242) is None  # not an echo request


def test_v6_results_say_icmpv6_and_bracket_ports():
    from natns.kernel.probe import family_of, hostport
    assert family_of("2001:db8::1") == socket.AF_INET6 and family_of("192.0.2.1") == socket.AF_INET
    assert hostport("2001:db8:1::2", 80) == "[2001:db8:1::2]:80" and hostport("192.0.2.2", 80) == "192.0.2.2:80"
    r = ProbeResult("t", "2001:db8:ffff::114", "icmp", None, outcome="unreachable", icmp_error=(1, 1),
                    error_from="2001:db8:1::1")
    assert r.v6 and r.sender_saw() == "ICMPv6 destination unreachable (administratively prohibited) from 2001:db8:1::1"
    u = ProbeResult("t", "2001:db8:ffff::114", "udp", 53, outcome="refused")
    assert u.sender_saw() == "refused (ICMPv6 port unreachable)"
    v4 = ProbeResult("t", "192.0.2.9", "icmp", None, outcome="unreachable", icmp_error=(3, 1), error_from="192.0.2.3")
    assert not v4.v6 and v4.sender_saw() == "ICMP destination unreachable (host unreachable) from 192.0.2.3"
