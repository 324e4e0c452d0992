"""Verify and explain on an OVN lab (issue 12), on the real 3-chassis sandbox of examples/ovn.yaml:
`natns conntrack` (OVS's userspace conntrack on the active gateway), `natns trace` (the
logical path from ovn-trace), `natns doctor` (OVN failures: each broken for real, the
printed fix run exactly as printed, reachability back) and `natns capture` on the underlay
(Geneve decoded).

One sandbox for the module (OVN's daemons are CPU-hungry), torn down at the end, pass or fail.
Tests that break something repair it before they end, also on failure.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
import yaml

from natns import topology
from natns.errors import NatnsError
from natns.engines.ovn import live, nb, sandbox
from natns.engines.ovn import conntrack as oct
from natns.engines.ovn import trace as otr
from natns.kernel import nsexec
from tests.integration.test_ovn_sandbox import SERVER, _ping, _tcp, renamed

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(sandbox.missing_binaries()),
                       reason="OVS/OVN not installed (scripts/bootstrap.sh installs them): missing "
                       + ", ".join(sandbox.missing_binaries())),
]

NATNS = [sys.executable, "-m", "natns.cli"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tests.conftest import RUN
    import secrets

    uid = RUN + secrets.token_hex(1)
    d = renamed(uid)
    t = topology.parse(d, "ovn.yaml")
    path = tmp_path_factory.mktemp("ovnx") / "ovn.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    api = None
    try:
        lo = sandbox.up(t)
        api = nb.connect(lo.nb_unix)
        nb.converge(api, t)
        sandbox.attach_hosts(t, lo)
        sandbox.wait_bound(t, lo)
        hosts = {str(h.address): h.namespace for n in t.networks for h in n.hosts}
        # readiness is test_ovn_sandbox's subject; here, on a loaded machine, wait until both
        # directions work once (and the routers have their MAC bindings) before explaining them
        from natns.kernel import probe as kprobe

        for src, dst in ((hosts["192.0.2.2"], "203.0.113.114"), (t.internet.namespace, "198.51.100.50")):
            deadline = time.monotonic() + 20
            while not kprobe.send(src, dst, "icmp", timeout=1).ok:
                assert time.monotonic() < deadline, f"{src} -> {dst} never worked"
        yield {"t": t, "lo": lo, "api": api, "file": str(path), "vm1": hosts["192.0.2.2"],
               "vm2": hosts["192.0.2.3"]}
    finally:
        try:
            if api is not None:
                nb.close(api)
        finally:
            sandbox.down(t.name)


def natns(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*NATNS, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


# --------------------------------------------------------------------------- conntrack


def test_conntrack_shows_snat_and_fip_entries_of_the_active_gateway(lab):
    t, lo = lab["t"], lab["lo"]
    _ping(lab["vm1"], "203.0.113.114")                      # SNAT, from the non-gateway chassis ch3
    mine, seen = _tcp(t.internet.namespace, lab["vm2"], "192.0.2.3", "198.51.100.50", 8081)  # the FIP
    assert seen == "198.51.100.1"
    data = json.loads(natns("conntrack", lab["file"], "r1", "--json").stdout)
    (tb,) = data["routers"]
    # the chassis natns names is the one SB binds the router's chassisredirect port to
    sb = live.find(t.name)
    assert tb["chassis"] == oct.active_chassis(sb, "r1") == "ch1"
    assert tb["namespace"] == lo.place("ch1").ns
    raw = subprocess.run(["ovs-appctl", "-t", f"{lo.place('ch1').rundir}/ovs-vswitchd.ctl",
                          "dpctl/dump-conntrack"], capture_output=True, text=True, check=True).stdout
    snat = [e for e in tb["entries"] if e["protocol"] == "icmp" and e["original"]["src"] == "192.0.2.2"]
    assert snat and snat[0]["original"]["dst"] == "203.0.113.114"
    assert snat[0]["reply"] == {**snat[0]["reply"], "src": "203.0.113.114", "dst": "198.51.100.116"}
    assert [n["type"] for n in snat[0]["nat"]] == ["SNAT"]
    assert f"src=192.0.2.2,dst=203.0.113.114,id={snat[0]['original']['icmp_id']}" in raw
    fip = [e for e in tb["entries"] if e["protocol"] == "tcp" and e["original"]["dst"] == "198.51.100.50"]
    assert fip, tb["entries"]
    assert fip[0]["original"]["src"] == "198.51.100.1" and fip[0]["reply"]["src"] == "192.0.2.3"
    assert fip[0]["nat"] == [{"type": "DNAT", "from": "198.51.100.50:8081", "to": "192.0.2.3:8081"}]
    assert fip[0]["state"] and fip[0]["zone"] is not None
    text = natns("conntrack", lab["file"], "r1").stdout
    assert "active gateway chassis ch1" in text and "SNAT to 198.51.100.116" in text


# --------------------------------------------------------------------------- trace


def _kinds(leg: dict) -> list[str]:
    return [h["kind"] for h in leg["hops"]]


def test_trace_shows_snat_on_the_gateway_the_tunnel_and_the_reply(lab):
    p = natns("trace", "--from", lab["vm1"], "--to", "203.0.113.114", "--timeout", "3", "--json")
    r = json.loads(p.stdout)
    assert r["engine"] == "ovn" and r["ok"] is True
    fwd, rep = r["forward"], r["reply"]
    lab_name = lab["t"].name
    first = fwd["hops"][0]
    assert (first["kind"], first["chassis"], first["datapath"]) == ("pipeline", "ch3", f"natns-{lab_name}-tenant")
    tunnels = [h for h in fwd["hops"] if h["kind"] == "tunnel"]
    assert [(h["chassis"], h["to"]) for h in tunnels] == [("ch3", "ch1")]
    assert "100.64.0.4" in tunnels[0]["text"] and "100.64.0.2" in tunnels[0]["text"]
    nat = [h for h in fwd["hops"] if h["kind"] == "nat"]
    assert [(h["chassis"], h["field"], h["before"], h["after"]) for h in nat] == [
        ("ch1", "ip4.src", "192.0.2.2", "198.51.100.116")]
    assert fwd["end"] == "output" and fwd["port"] == f"natns-{lab_name}-ext-localnet"
    assert fwd["hops"][-1]["chassis"] == "ch1"
    # the reply: in on the gateway, un-SNAT there, tunnel back to ch3, out to vm1's port
    assert rep["hops"][0]["chassis"] == "ch1"
    assert [(h["field"], h["before"], h["after"]) for h in rep["hops"] if h["kind"] == "nat"] == [
        ("ip4.dst", "198.51.100.116", "192.0.2.2")]
    assert [(h["chassis"], h["to"]) for h in rep["hops"] if h["kind"] == "tunnel"] == [("ch1", "ch3")]
    assert rep["end"] == "output" and rep["port"] == nb.host_port(lab_name, lab["vm1"])
    assert rep["hops"][-1]["chassis"] == "ch3"
    assert r["probe"]["ok"] is True
    # the chassis of the first hop is where SB binds vm1's port
    sb = live.find(lab_name)
    (pb,) = sb.sb_rows("Port_Binding", f"logical_port={nb.host_port(lab_name, lab['vm1'])}")
    names = {c["_uuid"]: c["name"] for c in sb.sb_rows("Chassis")}
    assert names[live.one(pb["chassis"])] == "ch3"
    text = natns("trace", "--from", lab["vm1"], "--to", "203.0.113.114", "--timeout", "3").stdout
    assert "TUNNEL Geneve tunnel ch3" in text and "source 192.0.2.2 -> 198.51.100.116" in text


def test_trace_to_the_floating_ip_shows_the_dnat(lab):
    r = json.loads(natns("trace", "--from", lab["vm1"], "--to", "198.51.100.50", "--tcp", "80", "--timeout", "3",
                         "--json").stdout)
    nat = [(h["field"], h["before"], h["after"]) for h in r["forward"]["hops"] if h["kind"] == "nat"]
    assert ("ip4.dst", "198.51.100.50", "192.0.2.3") in nat
    assert r["forward"]["port"] == nb.host_port(lab["t"].name, lab["vm2"])
    assert r["reply"]["port"] == nb.host_port(lab["t"].name, lab["vm1"])
    assert r["ok"] is True


# --------------------------------------------------------------------------- doctor

#: test_ovn_sandbox's server up to its accept (listen, say "ready"), then: count, answer the count
BULK_SERVER = SERVER.split("s.settimeout")[0] + r"""s.settimeout(15)
c, _ = s.accept()
c.settimeout(10)
n = 0
try:
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode())
except OSError:
    pass
c.close()
"""

BULK_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
s.sendall(b"x" * int(sys.argv[3]))
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
"""


def bulk(lab, n: int = 300_000, port: int = 8090) -> bool:
    """vm1 sends `n` bytes over TCP through SNAT to the internet host; whether all arrived."""
    inet = lab["t"].internet.namespace
    srv = nsexec.popen(inet, [sys.executable, "-c", BULK_SERVER, "203.0.113.114", str(port)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert srv.stdout.readline().strip() == "ready"
        p = subprocess.run(["ip", "netns", "exec", lab["vm1"], sys.executable, "-c", BULK_CLIENT,
                            "203.0.113.114", str(port), str(n)], capture_output=True, text=True, timeout=20)
        return p.returncode == 0 and p.stdout.strip() == str(n)
    finally:
        srv.kill()
        srv.wait()


def snat_tcp_works(lab, port: int = 8085) -> bool:
    try:
        _, seen = _tcp(lab["vm1"], lab["t"].internet.namespace, "203.0.113.114", "203.0.113.114", port)
    except (subprocess.SubprocessError, AssertionError, NatnsError):
        return False
    return seen == "198.51.100.116"


def doctor(lab, *extra: str) -> tuple[int, dict]:
    p = natns("doctor", "--from", lab["vm1"], "--to", "203.0.113.114", *extra, "--json", check=False)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def first_error(report: dict) -> dict:
    errs = [f for f in report["findings"] if f["severity"] == "error"]
    assert errs, report["findings"]
    return errs[0]


def run_fix(f: dict) -> None:
    """Each printed fix command, exactly as printed (shlex, no shell)."""
    assert f["fix"], f
    for c in f["fix"]:
        subprocess.run(shlex.split(c), check=True, capture_output=True, timeout=30)


def eventually(cond, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def vsctl(lab, chassis: str, *args: str) -> str:
    c = lab["lo"].place(chassis)
    return subprocess.run(["ovs-vsctl", f"--db={c.db}", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_doctor_on_a_healthy_ovn_lab_finds_nothing(lab):
    rc, rep = doctor(lab, "--tcp", "80")
    assert rc == 0 and rep["healthy"] and rep["engine"] == "ovn", rep["findings"]
    assert [f for f in rep["findings"] if f["severity"] == "error"] == []


def test_doctor_port_unbound_and_its_fix(lab):
    t, lo = lab["t"], lab["lo"]
    tap = sandbox.host_tap(lab["vm1"])
    lport = nb.host_port(t.name, lab["vm1"])
    vsctl(lab, "ch3", "remove", "Interface", tap, "external_ids", "iface-id")
    try:
        sb = live.find(t.name)
        eventually(lambda: not live.one(sb.sb_rows("Port_Binding", f"logical_port={lport}")[0]["chassis"]),
                   what="the port to be unbound")
        assert not snat_tcp_works(lab)
        tr = natns("trace", "--from", lab["vm1"], "--to", "203.0.113.114", "--json", check=False)
        assert tr.returncode == 1 and "bound to no chassis" in " ".join(json.loads(tr.stdout)["problems"])
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-port-unbound" and f["namespace"] == lab["vm1"]
        run_fix(f)
        sandbox.wait_bound(t, lo)
        assert snat_tcp_works(lab)
    finally:
        vsctl(lab, "ch3", "set", "Interface", tap, f"external_ids:iface-id={lport}")
        sandbox.wait_bound(t, lo)


def test_doctor_controller_down_and_its_fix_restarts_it(lab):
    t, lo = lab["t"], lab["lo"]
    ch3 = live.find(t.name).chassis["ch3"]
    pid = ch3.pid("ovn-controller")
    assert pid
    os.kill(pid, 9)  # a crash: by its PID
    eventually(lambda: ch3.pid("ovn-controller") is None, what="ovn-controller to be gone")
    try:
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-controller-down" and f["namespace"] == lo.place("ch3").ns
        run_fix(f)
        new = ch3.pid("ovn-controller")
        assert new and new != pid
        assert os.stat(f"/proc/{new}/ns/net").st_ino == os.stat(nsexec.ns_path(lo.place("ch3").ns)).st_ino
        sandbox.wait_bound(t, lo)
        assert snat_tcp_works(lab)
        rc, rep = doctor(lab)
        assert rc == 0, rep["findings"]
    finally:
        if ch3.pid("ovn-controller") is None:  # the fix did not run: start it as the sandbox does
            subprocess.run(live.controller_argv(ch3), check=True)
            sandbox.wait_bound(t, lo)


def test_doctor_controller_disconnected_and_its_fix(lab):
    t, lo = lab["t"], lab["lo"]
    good = vsctl(lab, "ch3", "get", "Open_vSwitch", ".", "external_ids:ovn-remote").strip('"')
    vsctl(lab, "ch3", "set", "Open_vSwitch", ".", "external_ids:ovn-remote=tcp:100.64.0.1:6699")
    ch3 = live.find(t.name).chassis["ch3"]

    def status() -> str:
        return subprocess.run(["ovn-appctl", "-t", ch3.controller_ctl(), "connection-status"],
                              capture_output=True, text=True).stdout.strip()
    try:
        eventually(lambda: status() == "not connected", what="ovn-controller to disconnect")
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-controller-disconnected", rep["findings"]
        assert f["evidence"]["ovn-remote"] == "tcp:100.64.0.1:6699"
        run_fix(f)
        eventually(lambda: status() == "connected", what="ovn-controller to reconnect")
        assert vsctl(lab, "ch3", "get", "Open_vSwitch", ".", "external_ids:ovn-remote").strip('"') == good
        sandbox.wait_bound(t, lo)
        assert snat_tcp_works(lab)
    finally:
        vsctl(lab, "ch3", "set", "Open_vSwitch", ".", f"external_ids:ovn-remote={good}")


def test_doctor_tx_offload_left_on_and_its_fix(lab):
    vm1 = lab["vm1"]
    subprocess.run(["ip", "netns", "exec", vm1, "ethtool", "-K", "eth0", "tx", "on"], check=True,
                   capture_output=True)
    try:
        assert not snat_tcp_works(lab)   # ovn-notes pitfall 1: the TCP SYN is not NATed
        rc, rep = doctor(lab, "--tcp", "80")
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-tx-offload" and f["namespace"] == vm1
        run_fix(f)
        assert snat_tcp_works(lab)
    finally:
        subprocess.run(["ip", "netns", "exec", vm1, "ethtool", "-K", "eth0", "tx", "off"], capture_output=True)


def test_doctor_tunnel_mtu_too_small_and_its_fix(lab):
    vm1, ch3 = lab["vm1"], lab["lo"].place("ch3").ns
    tap = sandbox.host_tap(vm1)
    subprocess.run(["ip", "-n", ch3, "link", "set", tap, "mtu", "1500"], check=True)
    subprocess.run(["ip", "-n", vm1, "link", "set", "eth0", "mtu", "1500"], check=True)
    try:
        assert not bulk(lab)  # full-size segments don't fit in Geneve over a 1500-byte underlay
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-tunnel-mtu" and f["namespace"] == vm1
        assert f["evidence"][f"{vm1}:eth0 mtu"] == 1500
        run_fix(f)
        assert bulk(lab, port=8091)
    finally:
        subprocess.run(["ip", "-n", vm1, "link", "set", "eth0", "mtu", str(nb.HOST_MTU)])
        subprocess.run(["ip", "-n", ch3, "link", "set", tap, "mtu", str(nb.HOST_MTU)])


def test_doctor_no_bridge_mapping_on_the_gateway_and_its_fix(lab):
    good = vsctl(lab, "ch1", "get", "Open_vSwitch", ".", "external_ids:ovn-bridge-mappings").strip('"')
    vsctl(lab, "ch1", "remove", "Open_vSwitch", ".", "external_ids", "ovn-bridge-mappings")
    try:
        eventually(lambda: not snat_tcp_works(lab), what="traffic to stop")
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-no-bridge-mapping", rep["findings"]
        assert f["namespace"] == lab["lo"].place("ch1").ns
        run_fix(f)
        assert vsctl(lab, "ch1", "get", "Open_vSwitch", ".", "external_ids:ovn-bridge-mappings").strip('"') == good
        eventually(lambda: snat_tcp_works(lab), what="traffic through the gateway again")
    finally:
        vsctl(lab, "ch1", "set", "Open_vSwitch", ".", f"external_ids:ovn-bridge-mappings={good}")


def test_doctor_no_gateway_chassis_and_its_fix(lab):
    t, lo = lab["t"], lab["lo"]
    gw = nb.gateway_port(t.name, "r1")
    nbctl = ["ovn-nbctl", f"--db={lo.nb_unix}"]
    for c in ("ch1", "ch2"):
        subprocess.run([*nbctl, "lrp-del-gateway-chassis", gw, c], check=True)
    try:
        subprocess.run([*nbctl, "--wait=hv", "sync"], check=True, timeout=20)
        assert not snat_tcp_works(lab)
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-no-gateway-chassis", rep["findings"]
        run_fix(f)
        out = subprocess.run([*nbctl, "lrp-get-gateway-chassis", gw], capture_output=True, text=True).stdout
        assert [ln.split()[-1] for ln in out.splitlines()] == ["2", "1"]  # ch1 first, as the file says
        sandbox.wait_bound(t, lo)
        eventually(lambda: snat_tcp_works(lab), what="traffic through the gateway again")
    finally:
        # back to natns's own rows (marked), whatever the fix left
        for c in ("ch1", "ch2"):  # every row for the chassis, natns's and the fix's
            while subprocess.run([*nbctl, "lrp-del-gateway-chassis", gw, c], capture_output=True).returncode == 0:
                pass
        nb.converge(lab["api"], t)
        sandbox.wait_bound(t, lo)


def test_doctor_bfd_down_to_every_gateway_and_its_fix(lab):
    t, lo = lab["t"], lab["lo"]
    sb = live.find(t.name)
    gws = [sb.chassis["ch1"], sb.chassis["ch2"]]
    for c in gws:
        os.kill(c.pid("ovs-vswitchd"), 9)  # both gateway chassis' datapaths die: BFD from ch3 goes down
    try:
        eventually(lambda: all(c.pid("ovs-vswitchd") is None for c in gws), what="vswitchd to be gone")
        ch3 = lo.place("ch3")
        eventually(lambda: not sandbox.tunnels_up(ch3, {"100.64.0.2"}) and not sandbox.tunnels_up(ch3, {"100.64.0.3"}),
                   what="BFD to go down")
        assert not snat_tcp_works(lab)
        rc, rep = doctor(lab)
        f = first_error(rep)
        assert rc == 1 and f["code"] == "ovn-bfd-down" and len(f["fix"]) == 2, rep["findings"]
        run_fix(f)
        assert all(c.pid("ovs-vswitchd") for c in gws)
        eventually(lambda: snat_tcp_works(lab), timeout=30, what="traffic through the gateway again")
        rc, rep = doctor(lab)
        assert rc == 0, rep["findings"]
    finally:
        for c in gws:
            if c.pid("ovs-vswitchd") is None:
                subprocess.run(live.vswitchd_argv(c), check=True)
        sandbox.wait_bound(t, lo)


# --------------------------------------------------------------------------- capture on the underlay


def test_capture_shows_the_geneve_packet_between_chassis(lab):
    t, lo = lab["t"], lab["lo"]
    p = natns("capture", lab["file"], "--from", lab["vm1"], "--to", "203.0.113.114", "--json")
    run = json.loads(p.stdout)
    ch3, ch1 = lo.place("ch3"), lo.place("ch1")
    assert f"{ch3.ns}:phy0" in run["points"] and f"{lo.central_ns}:ul" in run["points"]
    sb = live.find(t.name)
    vni = {dp["external_ids"]["name"]: dp["tunnel_key"] for dp in sb.sb_rows("Datapath_Binding")}
    tunnelled = [x for x in run["packets"] if x["point"] == f"{ch3.ns}:phy0" and x.get("geneve")
                 and x["geneve"]["inner"] and x["geneve"]["inner"]["icmp"]
                 and x["geneve"]["inner"]["icmp"]["type"] == 8]
    assert tunnelled, run["packets"]
    g = tunnelled[0]
    assert (g["src"], g["dst"], g["dport"], g["protocol"]) == (str(ch3.ip), str(ch1.ip), 6081, "udp")
    assert g["geneve"]["vni"] == vni[nb.router_name(t.name, "r1")]  # redirected to the gateway in r1's datapath
    assert (g["geneve"]["inner"]["src"], g["geneve"]["inner"]["dst"]) == ("192.0.2.2", "203.0.113.114")
    # the same packet (same number) on vm1's eth0, inside Geneve on the underlay bridge, and SNATed outside
    same = [x for x in run["packets"] if x["n"] == g["n"]]
    where = {x["point"]: x for x in same}
    assert where[f"{lab['vm1']}:eth0"]["src"] == "192.0.2.2"
    assert where[f"{lo.central_ns}:ul"]["geneve"]["vni"] == g["geneve"]["vni"]
    assert where[f"{t.internet.namespace}:{t.internet.interface}"]["src"] == "198.51.100.116"
    # the reply comes back to ch3 in Geneve, in the tenant switch's datapath
    back = [x for x in run["packets"] if x["point"] == f"{ch3.ns}:phy0" and x.get("geneve") and x["geneve"]["inner"]
            and x["geneve"]["inner"]["dst"] == "192.0.2.2"]
    assert back and back[0]["src"] == str(ch1.ip) and back[0]["geneve"]["vni"] == vni[nb.switch_name(t.name, "tenant")]
    text = natns("capture", lab["file"], "underlay:ul", "--from", lab["vm1"], "--to", "203.0.113.114").stdout
    assert f"{lo.central_ns}:ul" in text and "Geneve VNI" in text


def test_trace_from_the_internet_to_the_floating_ip_shows_the_dnat_on_the_gateway(lab):
    t = lab["t"]
    r = json.loads(natns("trace", "--from", t.internet.namespace, "--to", "198.51.100.50", "--tcp", "80",
                         "--timeout", "3", "--json").stdout)
    fwd, rep = r["forward"], r["reply"]
    assert fwd["hops"][0]["chassis"] == "ch1" and fwd["flow"].startswith(
        f'inport == "natns-{t.name}-ext-localnet"')
    assert [(h["chassis"], h["field"], h["before"], h["after"]) for h in fwd["hops"] if h["kind"] == "nat"] == [
        ("ch1", "ip4.dst", "198.51.100.50", "192.0.2.3")]  # the client's address is not rewritten
    assert fwd["port"] == nb.host_port(t.name, lab["vm2"]) and rep["port"] == f"natns-{t.name}-ext-localnet"
    assert ("ip4.src", "192.0.2.3", "198.51.100.50") in [(h["field"], h["before"], h["after"])
                                                        for h in rep["hops"] if h["kind"] == "nat"]
    assert r["ok"] is True and r["probe"]["source_seen"] == "198.51.100.1"
