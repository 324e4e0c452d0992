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
from natns.engines.ovn import live, nb, sandbox
from natns.engines.ovn import conntrack as oct
from natns.engines.ovn import trace as otr
from natns.kernel import nsexec
from tests.integration.test_ovn_sandbox import _ping, _tcp, renamed

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
        hosts = {h.address.exploded if hasattr(h.address, "exploded") else str(h.address): h.namespace
                 for n in t.networks for h in n.hosts}
        yield {"t": t, "lo": lo, "file": str(path), "vm1": hosts["192.0.2.2"], "vm2": hosts["192.0.2.3"]}
    finally:
        if api is not None:
            nb.close(api)
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
    p = natns("trace", "--from", lab["vm1"], "--to", "203.0.113.114", "--json")
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
    text = natns("trace", "--from", lab["vm1"], "--to", "203.0.113.114").stdout
    assert "TUNNEL Geneve tunnel ch3" in text and "source 192.0.2.2 -> 198.51.100.116" in text


def test_trace_to_the_floating_ip_shows_the_dnat(lab):
    r = json.loads(natns("trace", "--from", lab["vm1"], "--to", "198.51.100.50", "--tcp", "80", "--json").stdout)
    nat = [(h["field"], h["before"], h["after"]) for h in r["forward"]["hops"] if h["kind"] == "nat"]
    assert ("ip4.dst", "198.51.100.50", "192.0.2.3") in nat
    assert r["forward"]["port"] == nb.host_port(lab["t"].name, lab["vm2"])
    assert r["reply"]["port"] == nb.host_port(lab["t"].name, lab["vm1"])
    assert r["ok"] is True
