"""The one probe sender's options on a real lab: what the kernel and the wire show.

A pinned source port or ICMP id is what tcpdump and the router's conntrack
table see; DF with a size over a link of a smaller MTU fails with that MTU
in the result (from the router's ICMP "fragmentation needed", then locally
once the path MTU is known), and the same size without DF gets through; a
responder in the far namespace answers with the source it saw and is gone
afterwards. Plus what `probe` and `capture` say about a lab host that is
unreachable from where the probe starts (issue 16 items 9 and 12).
"""

from __future__ import annotations

import json

import pytest

from natns import Lab, down_lab, topology
from natns.kernel import nsexec
from natns.verify import conntrack as ct
from natns.verify.capture import Capture
from natns.verify.probe import Responder, Sender, ping, send

from .labs import SEED_INET, existing, lab_namespaces, natns, seed, write
from .verify_tools import listening

pytestmark = pytest.mark.root


@pytest.fixture
def make_lab():
    made = []

    def make(data: dict) -> Lab:
        lab = Lab(topology.parse(data, "test.yaml"))
        made.append((lab, lab_namespaces(data)))
        lab.up()
        return lab

    yield make
    for lab, names in made:
        down_lab(lab.name)
        assert existing(names) == [], f"namespaces left behind: {existing(names)}"


def names(uid: str) -> tuple[str, str, str]:
    return f"t{uid}-tenant1", f"t{uid}-vm", f"t{uid}-inet"


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_a_pinned_source_port_or_icmp_id_is_what_tcpdump_and_conntrack_see(make_lab, uid, proto):
    make_lab(seed(uid))
    tenant, vm, inet = names(uid)
    pin = 40000 + int(uid[-2:], 16)  # unique per test: no TIME_WAIT of an earlier run in the way
    port = None if proto == "icmp" else 8080
    opts = {"icmp_id": pin} if proto == "icmp" else {"sport": pin}
    bpf = "icmp" if proto == "icmp" else f"{proto} port {port}"
    with Capture([(tenant, "eth0"), (vm, "eth0")], bpf=bpf) as cap:
        with Sender(tenant, SEED_INET, proto, port, **opts) as sender, \
                Responder(inet, proto, SEED_INET, port) as responder:
            # known before anything is sent (what trace needs to set up its rules)
            assert sender.flow == ({"icmp_id": pin} if proto == "icmp" else {"sport": pin})
            r = sender.send(2.0, responder)
    assert r.ok and r.source_seen == "198.51.100.116", r
    assert r.flow["icmp_id" if proto == "icmp" else "sport"] == pin
    if proto == "icmp":
        ids = {p.icmp_id for p in cap.packets[f"{tenant}:eth0"] if p.icmp_type == 8}
        assert ids == {pin}
    else:
        assert r.local == f"192.0.2.2:{pin}"
        sent = [p for p in cap.packets[f"{tenant}:eth0"] if p.dport == port]
        assert sent and {p.sport for p in sent} == {pin}
        assert any(p.sport == pin and p.src == "198.51.100.116" for p in cap.packets[f"{vm}:eth0"])
    mine = [e for e in ct.entries(vm) if e.protocol == proto and e.original.dst == SEED_INET]
    key = (lambda e: e.original.icmp_id) if proto == "icmp" else (lambda e: e.original.sport)
    assert [key(e) for e in mine] == [pin], [e.original.text() for e in mine]


def test_a_pinned_port_that_is_taken_is_refused(make_lab, uid):
    make_lab(seed(uid))
    tenant, _, _ = names(uid)
    with Sender(tenant, SEED_INET, "udp", 53, sport=40999):
        with pytest.raises(OSError):
            Sender(tenant, SEED_INET, "udp", 53, sport=40999)


def test_df_and_size_over_a_small_mtu_link_fail_with_the_mtu(make_lab, uid):
    data = seed(uid)
    data["routers"][0]["external"]["mtu"] = 1400  # the router's way out is smaller than the tenant's link
    make_lab(data)
    tenant, vm, _ = names(uid)
    assert ping(tenant, SEED_INET, df=True, size=1372).ok  # 1400 bytes: fits
    first = ping(tenant, SEED_INET, df=True, size=1472)  # 1500 bytes with DF: the router says no
    assert first.outcome == "too-big" and first.mtu == 1400 and not first.ok, first
    assert first.error == "frag needed and DF set (mtu = 1400) from 192.0.2.3"
    again = ping(tenant, SEED_INET, df=True, size=1472)  # the path MTU is known now: refused locally
    assert again.outcome == "too-big" and again.mtu == 1400 and again.sent == 0, again
    assert again.error == "local error: message too long, mtu=1400"
    assert again.summary() == "local error: message too long, mtu=1400"  # ping's words, for doctor
    assert ping(tenant, SEED_INET, size=1472).ok  # without DF the same size is fragmented and gets through


def test_a_responder_in_the_far_namespace_answers_with_the_source_it_saw(make_lab, uid):
    make_lab(seed(uid))
    tenant, vm, inet = names(uid)
    for proto, port in (("tcp", 8080), ("udp", 5353), ("icmp", None)):
        r = send(tenant, SEED_INET, proto, port, respond_in=inet, size=200)
        assert r.ok and r.answered and r.source_seen == "198.51.100.116", r
        if proto != "icmp":
            assert r.reply == b"198.51.100.116"
            assert r.responder == f"{proto} responder on {SEED_INET}:{port} in {inet}"
        assert listening(inet) == []
    # Without a responder nothing listens there: TCP is refused (the path works), UDP is
    # refused too (port unreachable); to a silent address UDP is inconclusive for doctor.
    r = send(tenant, SEED_INET, "tcp", 8080)
    assert r.outcome == "refused" and r.answered and r.path_works is True and r.error == "Connection refused"
    assert r.sender_saw() == "refused (TCP RST)"
    r = send(tenant, SEED_INET, "udp", 5353, timeout=1.0)
    assert r.outcome == "refused" and r.path_works is True
    nsexec.run(inet, ["nft", "-f", "-"], input="table ip natns_test {\n chain probe_in {\n"
               "  type filter hook input priority 0;\n  udp dport 5353 drop\n }\n}\n")
    r = send(tenant, SEED_INET, "udp", 5353, timeout=0.5)
    assert r.outcome == "timeout" and r.path_works is None and r.error == "no reply within 0.5 s"


def test_probe_from_outside_to_a_private_lab_host_says_whose_it_is(make_lab, uid, tmp_path):
    data = seed(uid)
    make_lab(data)
    tenant, vm, inet = names(uid)
    path = write(tmp_path, data)
    res = natns("probe", path, "--from", inet, "--to", "192.0.2.2", "--json")
    assert res.returncode == 1, res.stderr
    r = json.loads(res.stdout)
    assert r["far_end"] is None
    assert r["far_end_note"] == (f"192.0.2.2 is lab host {tenant} behind router {vm}: a private address, "
                                 "unreachable from the internet unless a floating IP or port forward maps it")
    table = " ".join(natns("probe", path, "--from", inet, "--to", "192.0.2.2").stdout.split())
    assert f"lab host {tenant} behind router {vm}" in table and "not a namespace of the lab" not in table
    # an address the lab does not hold at all is still "not a namespace of the lab"
    r = json.loads(natns("probe", path, "--from", inet, "--to", "203.0.113.200", "--json").stdout)
    assert r["far_end"] is None and r["far_end_note"] is None


def test_capture_exits_1_when_its_probe_failed(make_lab, uid, tmp_path):
    data = seed(uid)
    make_lab(data)
    tenant, vm, inet = names(uid)
    path = write(tmp_path, data)
    ok = natns("capture", path, "--from", tenant, "--to", SEED_INET, "--timeout", "1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for extra in ([], ["--json"]):
        res = natns("capture", path, "--from", inet, "--to", "192.0.2.2", "--timeout", "0.5", *extra)
        assert res.returncode == 1, (extra, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
    assert json.loads(res.stdout)["probe"]["ok"] is False
