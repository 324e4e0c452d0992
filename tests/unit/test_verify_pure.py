"""The pure parts of the verify tools: pcap parsing, the merged view, NAT read off tuples,
paths through a topology, and the pictures. No root, no kernel."""

from __future__ import annotations

import pathlib
import shutil
import struct
import xml.etree.ElementTree as ET

import pytest

from natns import topology
from natns.topology import drawing as show
from natns.verify.capture import Capture, read_pcap, rows
from natns.verify.conntrack import CtTuple, translations
from natns.verify.endpoints import hidden_host, locate, path_points

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
SEED = topology.load(str(EXAMPLES / "seed.yaml"))
TWO = topology.load(str(EXAMPLES / "two-routers.yaml"))


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def icmp_frame(src, dst, ttl, ident, seq, type_=8, ip_id=4242, smac=b"\x02" * 6, dmac=b"\x04" * 6) -> bytes:
    payload = b"natns-probe-0123456789abcdef" + b"\0" * 28
    icmp = struct.pack("!BBHHH", type_, 0, 0, ident, seq) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ip_id, 0x4000, ttl, 1, 0, _ip(src), _ip(dst))
    return dmac + smac + b"\x08\x00" + ip + icmp


def tcp_frame(src, sport, dst, dport, flags, seq, ttl=64) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, ttl, 6, 0, _ip(src), _ip(dst))
    return b"\x04" * 6 + b"\x02" * 6 + b"\x08\x00" + ip + tcp


def write_pcap(path, frames, nano=True) -> None:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    data = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    for ts, frame in frames:
        sec, frac = int(ts), round((ts - int(ts)) * (1e9 if nano else 1e6))
        data += struct.pack("<IIII", sec, frac, len(frame), len(frame)) + frame
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28  # skipped: not IPv4
    data += struct.pack("<IIII", 0, 0, len(arp), len(arp)) + arp
    path.write_bytes(data)


def test_read_pcap_gives_every_header_field(tmp_path):
    f = tmp_path / "a.pcap"
    write_pcap(f, [(1700000000.000000100, icmp_frame("192.0.2.2", "203.0.113.114", 64, 7, 1)),
                   (1700000000.5, tcp_frame("192.0.2.2", 40000, "203.0.113.114", 80, 0x02, 99))])
    icmp, tcp = read_pcap(str(f), "t:eth0")
    assert (icmp.src, icmp.dst, icmp.ttl, icmp.ip_id, icmp.length) == ("192.0.2.2", "203.0.113.114", 64, 4242, 84)
    assert (icmp.icmp_type, icmp.icmp_id, icmp.icmp_seq) == (8, 7, 1)
    assert icmp.info == "ICMP echo request, id 7, seq 1, length 64" and icmp.kind == "ICMP echo request"
    assert icmp.smac == "02:02:02:02:02:02" and icmp.dmac == "04:04:04:04:04:04"
    assert icmp.time == pytest.approx(1700000000.0000001, abs=1e-7)
    assert (tcp.proto, tcp.sport, tcp.dport, tcp.tcp_flags, tcp.tcp_seq) == ("tcp", 40000, 80, "S", 99)
    assert tcp.addr("src") == "192.0.2.2:40000" and tcp.kind == "TCP [S]"
    micro = tmp_path / "b.pcap"
    write_pcap(micro, [(1.25, icmp_frame("192.0.2.2", "203.0.113.114", 64, 7, 1))], nano=False)
    assert read_pcap(str(micro), "x")[0].time == pytest.approx(1.25)


def test_rows_number_one_packet_across_points_and_name_what_changed(tmp_path):
    cap = Capture([("t", "eth0"), ("vm", "qr"), ("vm", "eth0")])
    req = lambda src, ttl, **kw: icmp_frame(src, "203.0.113.114", ttl, 7, 1, **kw)
    rep = lambda dst, ttl: icmp_frame("203.0.113.114", dst, ttl, 7, 1, type_=0, ip_id=99)
    frames = {
        "t:eth0": [(10.0001, req("192.0.2.2", 64)), (10.0009, rep("192.0.2.2", 63))],
        "vm:qr": [(10.0002, req("192.0.2.2", 64)), (10.0008, rep("192.0.2.2", 63))],
        "vm:eth0": [(10.0003, req("198.51.100.116", 63, smac=b"\x06" * 6)), (10.0007, rep("198.51.100.116", 64))],
    }
    for point, fr in frames.items():
        path = tmp_path / f"{point.replace(':', '_')}.pcap"
        write_pcap(path, fr)
        cap.packets[point] = read_pcap(str(path), point)
    view = [(r.number, r.packet.point, r.changed) for r in rows(cap)]
    assert view == [
        (1, "t:eth0", ()),
        (1, "vm:qr", ()),
        (1, "vm:eth0", ("src", "ttl", "smac")),
        (2, "vm:eth0", ()),
        (2, "vm:qr", ("dst", "ttl")),
        (2, "t:eth0", ()),
    ]


def test_translations_are_read_off_the_two_tuples():
    orig = CtTuple("192.0.2.2", "203.0.113.114", 40000, 80)
    assert translations(orig, CtTuple("203.0.113.114", "192.0.2.2", 80, 40000)) == []
    snat = translations(orig, CtTuple("203.0.113.114", "198.51.100.116", 80, 40000))
    assert [(n.kind, n.before, n.after) for n in snat] == [("SNAT", "192.0.2.2:40000", "198.51.100.116:40000")]
    dnat = translations(CtTuple("198.51.100.1", "198.51.100.116", 5000, 8080),
                        CtTuple("192.0.2.2", "198.51.100.1", 80, 5000))
    assert [(n.kind, n.before, n.after) for n in dnat] == [("DNAT", "198.51.100.116:8080", "192.0.2.2:80")]
    icmp = translations(CtTuple("192.0.2.2", "203.0.113.114", icmp_id=7),
                        CtTuple("203.0.113.114", "198.51.100.116", icmp_id=9))
    assert [n.text() for n in icmp] == ["SNAT 192.0.2.2 id 7 -> 198.51.100.116 id 9"]


def test_paths_through_the_seed_and_two_routers():
    assert path_points(SEED, "tenant1", "203.0.113.114") == [
        ("tenant1", "eth0"), ("vm", "qr-tenant"), ("vm", "eth0"), ("inet", "ext")]
    assert path_points(SEED, "tenant1") == path_points(SEED, "tenant1", "203.0.113.114")
    assert path_points(SEED, "tenant1", "192.0.2.3") == [("tenant1", "eth0"), ("vm", "qr-tenant")]
    assert path_points(SEED, "inet", "198.51.100.116") == [("inet", "ext"), ("vm", "eth0")]
    assert path_points(SEED, "inet", "192.0.2.2") == [("inet", "ext")]  # no route: nothing beyond
    assert locate(SEED, "inet", "192.0.2.2") is None
    # The same address behind two routers: who answers depends on who asks.
    assert locate(TWO, "tr-red1", "192.0.2.10").ns == "tr-b1"
    assert locate(TWO, "tr-g1", "192.0.2.10").ns == "tr-g1"
    assert path_points(TWO, "tr-b1", "192.0.2.130") == [
        ("tr-b1", "eth0"), ("tr-r1", "qr-blue"), ("tr-r1", "qr-red"), ("tr-red1", "eth0")]
    assert path_points(TWO, "tr-b1", "198.51.100.20") == [
        ("tr-b1", "eth0"), ("tr-r1", "qr-blue"), ("tr-r1", "eth0"), ("tr-inet", "ext"), ("tr-r2", "eth0")]


def test_a_private_lab_address_seen_from_outside_is_named_not_called_foreign():
    """Issue 16 item 9: from the internet, 192.0.2.2 is the lab's tenant1 behind vm, unreachable."""
    assert hidden_host(SEED, "inet", "192.0.2.2") == (
        "192.0.2.2 is lab host tenant1 behind router vm: a private address, unreachable from the "
        "internet unless a floating IP or port forward maps it")
    assert "router vm's gateway on network tenant" in hidden_host(SEED, "inet", "192.0.2.3")
    assert hidden_host(SEED, "inet", "203.0.113.200") is None  # not the lab's at all
    assert hidden_host(SEED, "tenant1", "192.0.2.2") is None  # behind its own router: no secret
    assert hidden_host(TWO, "tr-red1", "192.0.2.11") is None  # b2 is behind red1's own router
    # The same address behind two routers: both named.
    assert hidden_host(TWO, "tr-inet", "192.0.2.10").startswith(
        "192.0.2.10 is lab host tr-b1 behind router tr-r1 and lab host tr-g1 behind router tr-r2: ")
    note = hidden_host(TWO, "tr-g1", "192.0.2.130")
    assert note == ("192.0.2.130 is lab host tr-red1 behind router tr-r1: a private address, unreachable "
                    "from tr-g1 (behind another router) unless a floating IP or port forward maps it")


def test_paths_follow_floating_ips_and_port_forwards():
    t = topology.load(str(EXAMPLES / "mappings.yaml")) if (EXAMPLES / "mappings.yaml").exists() else None
    if t is None:
        pytest.skip("examples/mappings.yaml not present")
    fip = locate(t, "mp-inet", "198.51.100.51")
    assert (fip.ns, fip.via, fip.addr) == ("mp-a1", "mp-r1", "192.0.2.10")
    pf = locate(t, "mp-inet", "198.51.100.11", "tcp", 8080)
    assert (pf.ns, pf.addr, pf.port) == ("mp-a2", "192.0.2.11", 80)
    assert locate(t, "mp-inet", "198.51.100.11", "tcp", 8081).ns == "mp-r1"
    assert path_points(t, "mp-inet", "198.51.100.51") == [
        ("mp-inet", "ext"), ("mp-r1", "eth0"), ("mp-r1", "qr-t1"), ("mp-a1", "eth0")]


def test_the_graph_holds_every_namespace_address_and_snat_mode():
    g = show.graph(TWO)
    assert {n.namespace for n in g.nodes if n.namespace} == set(TWO.namespaces())
    r2 = next(n for n in g.nodes if n.name == "tr-r2")
    assert "SNAT to 198.51.100.20" in r2.details and "eth0 198.51.100.20/24" in r2.details
    assert ("internet", "router1", "e-tr-r2 / eth0") in {(e.a, e.b, e.label) for e in g.edges}


def test_dot_and_mermaid_name_every_namespace():
    for t in (SEED, TWO):
        dot, mm = show.to_dot(t), show.to_mermaid(t)
        assert dot.startswith("graph ") and dot.rstrip().endswith("}")
        assert mm.startswith("flowchart TB")
        for ns in t.namespaces():
            assert f" {ns}\\n" in dot and f" {ns}<br/>" in mm


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_svg_parses_and_the_committed_seed_picture_is_current():
    root = ET.fromstring(show.to_svg(SEED))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"internet inet", "router vm", "host tenant1"} <= set(texts)
    committed = ET.parse(DOCS / "seed.svg").getroot()
    assert [t.text for t in committed.iter("{http://www.w3.org/2000/svg}text")] == texts


def test_a_port_range_forward_is_drawn_as_the_range_in_the_tree_and_the_diagrams():
    data = {"name": "pr", "internet": {"address": "198.51.100.1/24"},
            "routers": [{"name": "r", "external": {"address": "198.51.100.2/24"}}],
            "networks": [{"name": "n", "router": "r", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                          "hosts": [{"namespace": "h", "address": "192.0.2.10"}]}],
            "port_forwards": [{"router": "r", "protocol": "tcp", "port": "5000-5001", "to": "192.0.2.10"},
                              {"router": "r", "protocol": "udp", "port": "6000-6002", "to": "192.0.2.10:7000"},
                              {"router": "r", "protocol": "tcp", "port": 8080, "to": "192.0.2.10:80"}]}
    t = topology.parse(data, "pr.yaml")
    want = ["forward tcp/5000-5001 -> 192.0.2.10:5000-5001", "forward udp/6000-6002 -> 192.0.2.10:7000-7002",
            "forward tcp/8080 -> 192.0.2.10:80"]
    from rich.console import Console

    console = Console(width=300, record=True, file=open("/dev/null", "w"))
    console.print(show.tree(t))
    drawings = {"tree": console.export_text(), "dot": show.to_dot(t), "mermaid": show.to_mermaid(t)}
    for fmt, text in drawings.items():
        for line in want:
            assert line.replace(">", "#gt;" if fmt == "mermaid" else ">") in text, (fmt, line)
        assert "192.0.2.10:5000;" not in text and "192.0.2.10:5000\\n" not in text, fmt


def test_default_checks_probe_each_internet_host_of_the_hosts_families():
    from natns.verify.checks import default_checks

    dual = topology.load(str(EXAMPLES / "dual-stack.yaml"))
    got = [c.describe() for c in default_checks(dual)]
    assert got == ["dual-tenant1 -> 203.0.113.114 icmp reachable",
                   "dual-tenant1 -> 2001:db8:ffff::114 icmp reachable (source 2001:db8:1::2)"]
    data = yaml_data("dual-stack.yaml")
    data["routers"][0]["snat6"] = "masquerade"  # NAT66: the far end sees the router's address
    del data["routers"][0]["ingress"]
    assert default_checks(topology.parse(data, "x.yaml"))[1].source.compressed == "2001:db8:ff::116"
    assert [c.describe() for c in default_checks(SEED)] == ["tenant1 -> 203.0.113.114 icmp reachable"]


def test_v6_addresses_are_located_and_their_paths_found():
    dual = topology.load(str(EXAMPLES / "dual-stack.yaml"))
    far = locate(dual, "dual-tenant1", "2001:db8:ffff::114")
    assert (far.ns, far.role) == ("dual-inet", "internet")
    assert locate(dual, "dual-tenant1", "2001:db8:1::1").ns == "dual-vm"
    # routed (snat6: off): the tenant's own v6 address is reached from the internet
    back = locate(dual, "dual-inet", "2001:db8:1::2")
    assert (back.ns, back.role) == ("dual-tenant1", "host")
    assert path_points(dual, "dual-inet", "2001:db8:1::2") == [
        ("dual-inet", "ext"), ("dual-vm", "eth0"), ("dual-vm", "qr-tenant"), ("dual-tenant1", "eth0")]
    assert path_points(dual, "dual-tenant1", "2001:db8:ffff::114") == path_points(dual, "dual-tenant1", "203.0.113.114")
    data = yaml_data("dual-stack.yaml")
    data["routers"][0]["snat6"] = "masquerade"
    del data["routers"][0]["ingress"]
    assert locate(topology.parse(data, "x.yaml"), "dual-inet", "2001:db8:1::2") is None  # hidden by NAT66


def yaml_data(name: str) -> dict:
    import yaml

    return yaml.safe_load((EXAMPLES / name).read_text())
