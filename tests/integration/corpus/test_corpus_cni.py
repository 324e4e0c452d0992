"""The corpus of foreign setups, CNI half: the real containernetworking-plugins (issue 15).

Debian 12's bridge (ipMasq, isGateway), host-local, portmap and firewall plugins run
through their own protocol inside a namespace that plays the container host
(cni_tools.py), once with the iptables-nft they find in PATH and once with
iptables-legacy first in PATH. For the working state doctor must say healthy and trace
follow the packet to the end and back; for each break, doctor's first error names the
cause and its fix, run exactly as printed (shlex-split, no shell), restores reachability.

portmap's DNAT sits behind ``-m addrtype --dst-type LOCAL`` (``fib daddr type local``):
the rule walk evaluates it against the host namespace's own addresses (issue 15 item 4).
"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from natns.kernel import nsexec
from natns.verify.probe import ping, tcp_connect

from ..labs import PeerServer, natns
from . import cni_tools as ct

pytestmark = pytest.mark.root
FLAVOURS = ["nft", "legacy"]


@pytest.fixture
def cni(scratch_ns, tmp_path):
    """Factory: the CNI host with container c1 added (tcp 8080 on the host -> c1:80);
    every container is deleted through CNI DEL afterwards, pass or fail."""
    made: list[ct.CniHost] = []

    def make(flavour: str) -> tuple[ct.CniHost, str]:
        h = ct.build(scratch_ns, tmp_path, flavour)
        made.append(h)
        c1 = ct.container(scratch_ns, "c1")
        h.add(c1, [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        return h, c1

    yield make
    for h in made:
        ct.teardown(h)
        shutil.rmtree(h.data_dir, ignore_errors=True)


def doctor(src: str, dst: str, *extra: str) -> tuple[int, dict]:
    done = natns("doctor", "--from", src, "--to", dst, "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def trace(src: str, dst: str, *extra: str) -> tuple[int, dict]:
    done = natns("trace", "--from", src, "--to", dst, "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def first_error(doc: dict) -> dict:
    errors = [f for f in doc["findings"] if f["severity"] == "error"]
    assert errors, doc["findings"]
    return errors[0]


def run_fix(f: dict) -> None:
    assert f["fix"], f
    for command in f["fix"]:
        done = ct.run_printed(command)
        assert done.returncode == 0, (command, done.stderr)


def rewrites(leg: dict) -> list[tuple[str, str, str, str]]:
    return [(h["namespace"], rw["field"], rw["before"], rw["after"])
            for h in leg["hops"] for k in h["hooks"] for rw in k.get("rewrites", [])]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_plugins_write_with_the_iptables_in_path(cni, flavour):
    h, c1 = cni(flavour)
    addr = h.address(c1)
    nat = h.save("nat")
    assert any("-j MASQUERADE" in ln and "CNI-" in ln for ln in nat)  # bridge's ipMasq
    assert "-A CNI-HOSTPORT-DNAT" in "\n".join(nat)  # portmap
    assert any(ln.startswith("-A CNI-FORWARD") and addr in ln for ln in h.save("filter"))  # firewall
    nft = nsexec.run(h.host, ["nft", "list", "tables"]).stdout.split()
    legacy = nsexec.run(h.host, ["iptables-legacy-save", "-t", "nat"]).stdout
    if flavour == "nft":
        assert "nat" in nft and "CNI-HOSTPORT-DNAT" not in legacy
    else:
        assert nft == [] and "CNI-HOSTPORT-DNAT" in legacy
    assert nsexec.run(h.host, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"  # isGateway


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_working_outbound_doctor_healthy_trace_there_and_back(cni, flavour):
    h, c1 = cni(flavour)
    addr = h.address(c1)
    assert ping(c1, ct.FAR).ok
    code, doc = doctor(c1, ct.FAR)
    assert code == 0 and doc["healthy"], doc["findings"]
    assert [(n["namespace"], n["kind"], n["before"], n["after"]) for n in doc["nat"]] == [
        (h.host, "masquerade", addr, ct.HOST_ADDR)]
    assert [hp["ns"] for hp in doc["path"]["hops"]] == [c1, h.host, h.inet]
    code, tr = trace(c1, ct.FAR)
    assert code == 0 and tr["ok"]
    assert tr["request"]["delivered_to"] == h.inet and tr["reply"]["delivered_to"] == c1
    if flavour == "nft":  # nftables tracing shows iptables-nft's rewrite; legacy rules are not traceable
        assert (h.host, "saddr", addr, ct.HOST_ADDR) in rewrites(tr["request"])
    else:
        assert h.host in tr["iptables_legacy"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_working_inbound_through_portmap_doctor_healthy_trace_there_and_back(cni, flavour):
    h, c1 = cni(flavour)
    addr = h.address(c1)
    with PeerServer(c1, addr, 80):
        assert tcp_connect(h.inet, ct.HOST_ADDR, 8080) == ct.INET_ADDR.encode()
        code, doc = doctor(h.inet, ct.HOST_ADDR, "--tcp", "8080")
        assert code == 0 and doc["healthy"], doc["findings"]
        assert [(n["kind"], n["after"]) for n in doc["nat"]] == [("dnat", addr)]
        assert doc["path"]["hops"][-1]["ns"] == c1
        code, tr = trace(h.inet, ct.HOST_ADDR, "--tcp", "8080")
        assert code == 0 and tr["request"]["delivered_to"] == c1 and tr["reply"]["delivered_to"] == h.inet


def _masquerade_rule(h: ct.CniHost) -> list[str]:
    """The `-A CNI-... -j MASQUERADE` rule the bridge plugin's ipMasq wrote, as iptables -D words."""
    line = next(ln for ln in h.save("nat") if ln.startswith("-A CNI-") and ln.endswith("-j MASQUERADE")
                and "HOSTPORT" not in ln)
    return shlex.split(line)[1:]


BREAKS = {
    # name: (break it, the finding code doctor must put first)
    "forwarding-off": (lambda h, c1: nsexec.run(h.host, ["sysctl", "-w", "net.ipv4.ip_forward=0"]),
                       "ip-forward-off"),
    "masquerade-deleted": (lambda h, c1: h.iptables("-t", "nat", "-D", *_masquerade_rule(h)), "no-snat"),
    "admin-forward-drop": (lambda h, c1: h.iptables("-A", "CNI-ADMIN", "-d", f"{ct.FAR}/32", "-j", "DROP"),
                           "forward-drop"),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_outbound_break_first_error_names_it_and_the_printed_fix_restores(cni, flavour, broken):
    h, c1 = cni(flavour)
    assert ping(c1, ct.FAR).ok
    do, code_wanted = BREAKS[broken]
    done = do(h, c1)
    assert done.returncode == 0, getattr(done, "stderr", "")
    assert not ping(c1, ct.FAR).ok
    code, doc = doctor(c1, ct.FAR)
    assert code == 1
    f = first_error(doc)
    assert (f["code"], f["namespace"]) == (code_wanted, h.host), doc["findings"]
    tools = {shlex.split(c)[4] for c in f["fix"] if "iptables" in c}
    assert tools <= ({"iptables-legacy"} if flavour == "legacy" else {"iptables", "iptables-nft"}), f["fix"]
    run_fix(f)
    assert ping(c1, ct.FAR).ok
    code, doc = doctor(c1, ct.FAR)
    assert code == 0, doc["findings"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_inbound_forward_policy_drop_first_error_names_it_and_the_printed_fix_restores(cni, flavour):
    h, c1 = cni(flavour)
    addr = h.address(c1)
    with PeerServer(c1, addr, 80):
        assert h.iptables("-P", "FORWARD", "DROP").returncode == 0
        # the firewall plugin accepts what the container sends and the replies to it, not new
        # connections to it: outbound still works, the published port does not
        assert ping(c1, ct.FAR).ok
        with pytest.raises(OSError):
            tcp_connect(h.inet, ct.HOST_ADDR, 8080, timeout=2)
        code, doc = doctor(h.inet, ct.HOST_ADDR, "--tcp", "8080")
        assert code == 1
        f = first_error(doc)
        assert (f["code"], f["namespace"]) == ("forward-drop", h.host), doc["findings"]
        run_fix(f)
        assert tcp_connect(h.inet, ct.HOST_ADDR, 8080) == ct.INET_ADDR.encode()


BRNF = "net.bridge.bridge-nf-call-iptables"


def _self_through_own_port(h: ct.CniHost, c1: str) -> bool:
    addr = h.address(c1)
    with PeerServer(c1, addr, 80):
        try:
            # portmap marks it for masquerade (CNI-HOSTPORT-SETMARK): c1 sees cni0's address
            return tcp_connect(c1, ct.HOST_ADDR, 8080, timeout=4) == ct.GATEWAY.encode()
        except OSError:
            return False


def _host_port(h: ct.CniHost, c1: str) -> str:
    """The host end of c1's veth, a port of cni0 (the bridge plugin's result names it)."""
    return h.results[c1]["interfaces"][1]["name"]


def test_a_container_reaching_its_own_published_port_needs_hairpin(cni):
    """The kernel's side of doctor's bridge-hairpin finding (issue 15 item 9), on the CNI host:
    with br_netfilter on and the bridge plugin's default hairpinMode false, portmap's DNAT
    sends c1's connection back out the port it came in by and the bridge drops it; hairpin on
    that port (what hairpinMode: true sets) or bridge netfilter off makes it work."""
    h, c1 = cni("nft")
    if nsexec.run(h.host, ["sysctl", "-n", BRNF], check=False).returncode != 0:
        pytest.skip("br_netfilter is not loaded")
    port = _host_port(h, c1)
    assert nsexec.run(h.host, ["sysctl", "-n", BRNF]).stdout.strip() == "1"
    assert not _self_through_own_port(h, c1)
    nsexec.run(h.host, ["sysctl", "-w", f"{BRNF}=0"])
    assert _self_through_own_port(h, c1)
    nsexec.run(h.host, ["sysctl", "-w", f"{BRNF}=1"])
    assert not _self_through_own_port(h, c1)
    nsexec.run(h.host, ["ip", "link", "set", port, "type", "bridge_slave", "hairpin", "on"])
    assert _self_through_own_port(h, c1)


def test_doctor_names_the_hairpin_drop_of_a_container_reaching_its_own_port(cni):
    h, c1 = cni("nft")
    if nsexec.run(h.host, ["sysctl", "-n", BRNF], check=False).returncode != 0:
        pytest.skip("br_netfilter is not loaded")
    assert not _self_through_own_port(h, c1)
    code, doc = doctor(c1, ct.HOST_ADDR, "--tcp", "8080", "--no-probe")
    f = first_error(doc)
    assert (f["code"], f["namespace"], f["evidence"]["in port"]) == ("bridge-hairpin", h.host, _host_port(h, c1))
    run_fix(f)  # on a foreign host: hairpin on that one port
    assert _self_through_own_port(h, c1)
