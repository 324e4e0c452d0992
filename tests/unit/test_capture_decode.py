"""capture's pcap decoding (dpkt) on a real capture, tests/unit/data/capture_dual.pcap
(how it was made: capture_pcap.py beside it): the IPv4 packets decode exactly as the
hand-written parser they replace did (its output, kept as capture_dual_v4.json when the
parser was removed), and the IPv6 ones with ICMPv6 types, NS/NA targets, packet too big's
MTU, TCP/UDP over v6 and extension headers (hop-by-hop, fragment)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct

import pytest

from natns.errors import KernelError
from natns.verify.capture import read_pcap

DATA = pathlib.Path(__file__).parent / "data"
PCAP = str(DATA / "capture_dual.pcap")


def test_ipv4_packets_decode_exactly_as_before():
    want = json.loads((DATA / "capture_dual_v4.json").read_text())
    got = [p for p in read_pcap(PCAP, "r:eth1") if p.family == 4]
    assert len(got) == len(want) == 22
    for p, w in zip(got, want):
        d = dict(p.to_json(), kind=p.kind, payload_sha1=hashlib.sha1(p.payload).hexdigest(),
                 key=list(p.key()), addr=[p.addr("src"), p.addr("dst")])
        assert d["time"] == pytest.approx(w.pop("time"), abs=1e-9)
        d.pop("time")
        assert d == w


def test_ipv6_packets_decode_with_icmpv6_types_and_extension_headers():
    v6 = [p for p in read_pcap(PCAP, "r:eth1") if p.family == 6]
    kinds = {p.kind for p in v6}
    assert {"ICMP6 echo request", "ICMP6 echo reply", "ICMP6 packet too big", "ICMP6 neighbor solicitation",
            "ICMP6 neighbor advertisement", "ICMP6 destination unreachable"} <= kinds, kinds
    echo = next(p for p in v6 if p.icmp_type == 128 and p.length == 104)
    assert (echo.src, echo.dst, echo.proto, echo.ttl) == ("2001:db8:1::2", "2001:db8:ffff::114", "icmp6", 64)
    assert echo.info == f"ICMP6, echo request, id {echo.icmp_id}, seq {echo.icmp_seq}, length 64"
    assert echo.payload.startswith(b"natns-probe-")
    ptb = next(p for p in v6 if p.icmp_type == 2)
    assert ptb.mtu == 1280 and ptb.src == "2001:db8:1::1" and ptb.info == "ICMP6, packet too big, mtu 1280, length 1240"
    ns = next(p for p in v6 if p.icmp_type == 135)
    assert (ns.src, ns.dst, ns.target) == ("2001:db8:1::2", "ff02::1:ff00:1", "2001:db8:1::1")
    assert ns.info == "ICMP6, neighbor solicitation, who has 2001:db8:1::1, length 32"
    assert ns.ttl == 255  # neighbour discovery's hop limit (RFC 4861)
    assert any(p.icmp_type == 136 and p.target == "2001:db8:1::1" for p in v6)
    mld = next(p for p in v6 if p.icmp_type == 143)
    assert mld.ext == ("HBH",) and mld.info.startswith("HBH ICMP6, multicast listener report v2")
    syn = next(p for p in v6 if p.proto == "tcp" and p.tcp_flags == "S")
    assert syn.dport == 8080 and syn.addr("dst") == "[2001:db8:ffff::114]:8080" and syn.kind == "TCP [S]"
    assert syn.to_json()["family"] == 6 and syn.to_json()["tcp"]["flags"] == "S"
    udp = [p for p in v6 if p.proto == "udp"]
    assert {p.dport for p in udp} >= {6363, 6364, 6365}
    first = next(p for p in udp if p.dport == 6365)
    assert first.ext == ("frag",) and first.ip_id is not None and first.info.startswith("frag UDP, length")
    rest = next(p for p in v6 if p.proto == "ip6-fragment")
    assert rest.ip_id == first.ip_id and rest.info.startswith("frag (offset 1232")
    unreach = next(p for p in v6 if p.icmp_type == 1)
    assert unreach.icmp_code == 4 and unreach.src == "2001:db8:ffff::114"


def test_not_a_pcap_is_a_kernel_error_and_an_empty_file_no_packets(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap file at all, longer than 24 bytes")
    with pytest.raises(KernelError, match="not a pcap file"):
        read_pcap(str(bad), "x")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert read_pcap(str(empty), "x") == []
    # a cooked (113) capture: no MACs, the same fields
    frame = bytes(16)[:14] + struct.pack("!H", 0x0800)
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 113)
    ip = bytes.fromhex("450000200001000040110000c0000202cb007172") + struct.pack("!HHHH", 1, 2, 12, 0) + b"abcd"
    rec = frame + ip
    cooked = tmp_path / "sll.pcap"
    cooked.write_bytes(head + struct.pack("<IIII", 1, 0, len(rec), len(rec)) + rec)
    (p,) = read_pcap(str(cooked), "x")
    assert (p.proto, p.sport, p.dport, p.smac, p.payload) == ("udp", 1, 2, None, b"abcd")
