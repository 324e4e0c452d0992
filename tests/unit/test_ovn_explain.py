"""The OVN engine's verify/explain readers on recorded outputs (no root, no OVN running):
OVS's `dpctl/dump-conntrack -s` lines, `ovn-trace --detailed` of the example lab (recorded
from a real sandbox of examples/ovn.yaml, lab ovnx12dev: vm1 on ch3, vm2 on ch1, gateway ch1)
walked into hops with chassis, the Geneve hop, NAT and the reply.
"""

from __future__ import annotations

import pathlib

from natns.engines.ovn import conntrack as oct
from natns.engines.ovn import live
from natns.engines.ovn import trace as otr

DATA = pathlib.Path(__file__).parent / "data" / "ovn"
LAB = "ovnx12dev"
VM1 = f"natns-{LAB}-h-x12-vm1"
VM2 = f"natns-{LAB}-h-x12-vm2"
WHERE = otr.Where(port_chassis={VM1: "ch3", VM2: "ch1"}, cr_chassis={f"cr-natns-{LAB}-gw-r1": "ch1"},
                  encap_ip={"ch1": "100.64.0.2", "ch2": "100.64.0.3", "ch3": "100.64.0.4"},
                  tunnel_key={f"natns-{LAB}-r1": 3, f"natns-{LAB}-tenant": 2, f"natns-{LAB}-ext": 1})

TCP_LINE = ("tcp,orig=(src=192.0.2.2,dst=203.0.113.114,sport=47462,dport=8080),reply=(src=203.0.113.114,"
            "dst=198.51.100.116,sport=8080,dport=47462),zone=5,timeout=29,protoinfo=(state=TIME_WAIT)")
FIP_LINE = ("icmp,orig=(src=198.51.100.1,dst=198.51.100.50,id=16126,type=8,code=0),reply=(src=192.0.2.3,"
            "dst=198.51.100.1,id=16126,type=0,code=0),zone=5,timeout=24")


def test_dump_conntrack_lines_become_entries_with_their_translation():
    (e,) = oct.parse((DATA / "dump-conntrack.txt").read_text())
    assert (e.protocol, e.original.src, e.original.dst, e.reply.dst, e.zone) == (
        "icmp", "192.0.2.2", "203.0.113.114", "198.51.100.116", 6)
    assert [(n.kind, n.before, n.after) for n in e.nat] == [("SNAT", "192.0.2.2", "198.51.100.116")]
    t = oct.parse_line(TCP_LINE)
    assert (t.original.sport, t.original.dport, t.state, t.timeout) == (47462, 8080, "TIME_WAIT", 29)
    assert [(n.kind, n.before, n.after) for n in t.nat] == [("SNAT", "192.0.2.2:47462", "198.51.100.116:47462")]
    f = oct.parse_line(FIP_LINE)
    assert [(n.kind, n.before, n.after) for n in f.nat] == [("DNAT", "198.51.100.50", "192.0.2.3")]
    assert oct.parse_line("") is None and oct.parse("garbage\n") == []


def _recorded(name: str) -> dict[tuple[str, str], str]:
    out = {}
    for p in sorted(DATA.glob(f"trace-{name}-*.txt")):
        head, _, body = p.read_text().partition("\n")
        dp, _, expr = head.removeprefix("# ").partition(" ")
        out[(dp, expr)] = body
    return out


def _fake_lab(name: str) -> live.Lab:
    rec = _recorded(name)

    def runner(ns, argv):
        assert argv[0] == "ovn-trace" and ns is None
        return rec[(argv[3], argv[4])]
    return live.Lab(LAB, None, "/nonexistent", runner=runner)


def _leg(lab, flow, start, reverse=None):
    return otr._leg(lab, f"natns-{LAB}-tenant" if flow.inport.startswith(f"natns-{LAB}-h-") else f"natns-{LAB}-ext",
                    flow, WHERE, start, [], reverse or {})


def test_forward_trace_has_the_chassis_the_tunnel_hop_and_the_snat():
    text = next(iter(_recorded("snat").values()))
    secs = otr.parse(text)
    assert [s.kind for s in secs][:3] == ["ingress", "egress", "ingress"]
    assert any(s.kind == "ct" and s.ct_args == "ip4.src=198.51.100.116" for s in secs)
    flow = otr.Flow(VM1, "0a:8c:18:8e:1b:5c", "0a:09:1a:b1:b6:a4", "192.0.2.2", "203.0.113.114")
    leg = otr.walk(secs, flow, WHERE, "ch3")
    kinds = [(h.kind, h.chassis) for h in leg.hops if h.kind != "note"]
    assert kinds[0] == ("pipeline", "ch3")
    (tun,) = [h for h in leg.hops if h.kind == "tunnel"]
    assert (tun.chassis, tun.remote, tun.vni) == ("ch3", "ch1", 3)
    (nat,) = [h for h in leg.hops if h.kind == "nat"]
    assert (nat.chassis, nat.field, nat.before, nat.after) == ("ch1", "ip4.src", "192.0.2.2", "198.51.100.116")
    assert (leg.end, leg.out_type, leg.hops[-1].chassis) == ("output", "localnet", "ch1")
    assert leg.final.src == "198.51.100.116" and leg.final.eth_src == "0a:cc:fa:27:5c:2a"


def test_the_reply_is_un_snatted_with_the_forward_entry_and_tunnelled_back():
    lab = _fake_lab("snat")
    flow = otr.Flow(VM1, "0a:8c:18:8e:1b:5c", "0a:09:1a:b1:b6:a4", "192.0.2.2", "203.0.113.114")
    fwd = _leg(lab, flow, "ch3")
    rflow = fwd.final.reply(fwd.out_port)
    rep = _leg(lab, rflow, "ch1", {("ip4.dst", "198.51.100.116"): "192.0.2.2"})
    nat = [(h.field, h.before, h.after) for h in rep.hops if h.kind == "nat"]
    assert nat == [("ip4.dst", "198.51.100.116", "192.0.2.2")]
    assert [(h.chassis, h.remote) for h in rep.hops if h.kind == "tunnel"] == [("ch1", "ch3")]
    assert (rep.end, rep.out_port, rep.hops[-1].chassis) == ("output", VM1, "ch3")
    # without the forward entry ovn-trace's "assuming no un-snat entry" stands, and the reply is lost
    lost = _leg(lab, rflow, "ch1")
    assert lost.end == "drop" and any("assuming no un-snat" in h.text for h in lost.hops)


def test_floating_ip_trace_shows_the_dnat_and_the_hairpin_reply():
    lab = _fake_lab("fip")
    flow = otr.Flow(VM1, "0a:8c:18:8e:1b:5c", "0a:09:1a:b1:b6:a4", "192.0.2.2", "198.51.100.50", "tcp", 33000, 80)
    fwd = _leg(lab, flow, "ch3")
    assert ("ip4.dst", "198.51.100.50", "192.0.2.3") in fwd.nat
    assert (fwd.end, fwd.out_port, fwd.hops[-1].chassis) == ("output", VM2, "ch1")
    reverse = {("ip4.dst" if f == "ip4.src" else "ip4.src", a): b for f, b, a in fwd.nat}
    rflow = otr.Flow(VM2, "0a:ae:4b:58:be:7b", fwd.final.eth_src, fwd.final.dst, fwd.final.src, "tcp", 80, 33000,
                     0, 0x12)
    rep = _leg(lab, rflow, "ch1", reverse)
    assert (rep.end, rep.out_port, rep.hops[-1].chassis) == ("output", VM1, "ch3")
    assert {(f, b, a) for f, b, a in rep.nat} >= {("ip4.src", "192.0.2.3", "198.51.100.50"),
                                                  ("ip4.dst", "198.51.100.116", "192.0.2.2")}


def test_ovsdb_json_tables_decode_sets_maps_and_uuids():
    text = ('{"data":[[["uuid","2233"],"ch1","100.64.0.2",["map",[["csum","true"]]],["set",[]]]],'
            '"headings":["_uuid","chassis_name","ip","options","chassis"]}')
    (row,) = live.decode_table(text)
    assert row == {"_uuid": "2233", "chassis_name": "ch1", "ip": "100.64.0.2", "options": {"csum": "true"},
                   "chassis": []}
    assert live.one(row["chassis"]) is None and live.one("x") == "x"


def test_geneve_in_a_real_capture_is_decoded_with_its_inner_packet():
    from natns.verify.capture import read_pcap

    # captured on ch3's underlay veth during a ping from vm1 (ch3) to 203.0.113.114 (gateway ch1)
    pkts = read_pcap(str(DATA / "geneve-ch3-phy0.pcap"), "ch3:phy0")
    assert len(pkts) == 2  # the echo request and reply; BFD inside Geneve is left out
    req, rep = pkts
    assert (req.src, req.dst, req.dport, req.geneve["vni"]) == ("100.64.0.4", "100.64.0.2", 6081, 3)
    assert req.geneve["protocol"] == 0x6558 and req.geneve["options"]
    assert (req.inner.src, req.inner.dst, req.inner.icmp_type) == ("192.0.2.2", "203.0.113.114", 8)
    assert req.key() == req.inner.key()  # numbered as the same packet as on vm1's eth0
    assert (rep.src, rep.geneve["vni"], rep.inner.dst, rep.inner.icmp_type) == ("100.64.0.2", 2, "192.0.2.2", 0)
    assert req.to_json()["geneve"]["inner"]["src"] == "192.0.2.2"
