"""`natns status` says what is really wrong, on real namespaces (issue 16, items 4-6).

A host namespace deleted while a process holds it; a namespace made by hand at a name
the lab wants, or a natns link whose alias was edited ("foreign", reported, not refused);
a firewall rule deleted by hand (named, with `natns up FILE` as the fix, and that fix,
run as printed, mends it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from natns.kernel import netns as kns
from natns.kernel import nsexec
from natns.verify.probe import ping

from .labs import SEED_INET, mapped, natns, seed, write

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]


def _status(path: str) -> tuple[int, dict, str]:
    """(exit status, --json document, the table's text) of `natns status FILE`."""
    js = natns("status", path, "--json")
    text = natns("status", path)
    assert js.returncode == text.returncode, (js.stderr, text.stderr)
    return js.returncode, json.loads(js.stdout), text.stdout


def _by_ns(doc: dict) -> dict:
    return {n["namespace"]: n for n in doc["namespaces"]}


def _run_as_printed(command: str) -> subprocess.CompletedProcess:
    """Run a printed fix word for word (`natns` is this venv's)."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120, env=env)


def test_a_host_namespace_deleted_while_held_is_reported_with_its_processes(make_lab, uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    lab = make_lab(data)
    assert natns("up", path).returncode == 0
    vm, tenant = f"t{uid}-vm", f"t{uid}-tenant1"
    sleeper = subprocess.Popen(["ip", "netns", "exec", tenant, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        tenant_key = os.stat(f"/run/netns/{tenant}")
        while os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != tenant_key.st_ino:
            assert time.monotonic() < deadline, "the sleep did not enter the namespace"
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", tenant], check=True)
        assert not kns.exists(tenant)
        # The router's default route is there, and so is its link into the orphaned namespace.
        assert "default via 198.51.100.1" in nsexec.run(vm, ["ip", "route"]).stdout
        tap = lab.desired().namespaces[tenant].links["eth0"].peer_name
        assert "link-netnsid" in nsexec.run(vm, ["ip", "-d", "link", "show", tap]).stdout

        code, doc, text = _status(path)
        assert code == 1
        st = _by_ns(doc)
        assert st[vm]["state"] == "ok", st[vm]  # not blamed: its route and link are fine
        t = st[tenant]
        assert t["state"] == "missing"
        assert t["problems"][0] == "namespace does not exist"
        assert t["held_by"] == [{"pid": sleeper.pid, "command": "sleep 60"}]
        detail = " ".join(t["problems"])
        assert f"held open by process {sleeper.pid} (sleep 60)" in detail
        assert f"{tap} in {vm}" in detail
        assert t["fix"] == f"natns up {path}"
        assert f"fix: natns up {path} (makes namespace {tenant} again" in detail
        flat = re.sub(r"[\s│]+", " ", text)
        assert "still held open by process" in flat and str(sleeper.pid) in flat
        assert "route" not in " ".join(st[vm]["problems"])

        fixed = _run_as_printed(t["fix"])
        assert fixed.returncode == 0, fixed.stderr
        code, doc, _ = _status(path)
        assert code == 0 and doc["ok"], doc
        assert ping(f"t{uid}-tenant1", SEED_INET).ok
        assert sleeper.poll() is None  # natns stopped nothing: the sleep is the user's
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_router_deleted_while_held_names_every_surviving_end(make_lab, uid, tmp_path):
    data = seed(uid, "iptables")
    path = write(tmp_path, data)
    lab = make_lab(data)
    assert natns("up", path).returncode == 0
    vm, tenant, inet = f"t{uid}-vm", f"t{uid}-tenant1", f"t{uid}-inet"
    ends = [(w.peer_ns, w.peer_name) for w in lab.desired().namespaces[vm].links.values() if w.kind == "veth"]
    assert sorted(ns for ns, _ in ends) == sorted([inet, tenant])
    sleeper = subprocess.Popen(["ip", "netns", "exec", vm, "sleep", "60"])
    try:
        key = os.stat(f"/run/netns/{vm}").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != key:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", vm], check=True)
        code, doc, _ = _status(path)
        st = _by_ns(doc)
        assert code == 1
        assert (st[inet]["state"], st[tenant]["state"]) == ("ok", "ok"), doc
        assert st[vm]["state"] == "missing" and st[vm]["held_by"] == [{"pid": sleeper.pid, "command": "sleep 60"}]
        for ns, name in ends:
            assert f"{name} in {ns}" in st[vm]["problems"][1]
        assert _run_as_printed(st[vm]["fix"]).returncode == 0
        assert _status(path)[0] == 0
        assert ping(tenant, SEED_INET).ok
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_namespace_made_by_hand_is_reported_as_foreign_not_refused(make_lab, uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    make_lab(data)  # takes the lab down afterwards (the namespace too, once adopted)
    tenant = f"t{uid}-tenant1"
    subprocess.run(["ip", "netns", "add", tenant], check=True)
    try:
        code, doc, text = _status(path)
        assert code == 1, text
        t = _by_ns(doc)[tenant]
        assert t["state"] == "foreign"
        (f,) = t["foreign"]
        assert (f["object"], f["name"], f["adoptable"], f["owner"]) == ("namespace", tenant, True, None)
        assert "was not created by natns" in f["detail"]
        assert t["fix"] == f"natns up --adopt {path}"
        assert t["problems"][0].startswith(f"foreign: namespace {tenant} exists but natns didn't make it")
        flat = re.sub(r"[\s│]+", " ", text)
        assert "foreign" in flat and "natns up --adopt" in flat
        assert {n["state"] for n in doc["namespaces"] if n["namespace"] != tenant} == {"missing"}

        # up still refuses, as before; nothing was made.
        up = natns("up", path)
        assert up.returncode == 2 and "was not created by natns" in up.stderr
        assert not kns.exists(f"t{uid}-vm")

        # plan --adopt previews the takeover: the steps up --adopt runs.
        plan = natns("plan", "--adopt", path, "--json")
        assert plan.returncode == 0, plan.stderr
        steps = json.loads(plan.stdout)["steps"]
        assert [(s["action"], s["namespace"], s["reason"]) for s in steps if s["action"] == "set_mark"] == [
            ("set_mark", tenant, "adopt")]
        assert not any(s["action"] == "create_netns" and s["target"] == tenant for s in steps)
        assert natns("plan", path).returncode == 2  # without --adopt: refused like up
        adopted = natns("up", "--adopt", path, "--json")
        assert adopted.returncode == 0, adopted.stderr
        assert [s["action"] for s in json.loads(adopted.stdout)["steps"]] == [s["action"] for s in steps]
        code, doc, _ = _status(path)
        assert code == 0 and doc["ok"], doc
    finally:
        if kns.exists(tenant):
            subprocess.run(["ip", "netns", "del", tenant], check=False)


def test_a_natns_link_whose_alias_was_edited_is_reported_as_foreign(make_lab, uid, tmp_path):
    data = seed(uid)
    path = write(tmp_path, data)
    lab = make_lab(data)
    assert natns("up", path).returncode == 0
    vm, tenant = f"t{uid}-vm", f"t{uid}-tenant1"
    tap = lab.desired().namespaces[tenant].links["eth0"].peer_name
    mark = lab.desired().namespaces[vm].links[tap].alias
    nsexec.run(vm, ["ip", "link", "set", tap, "alias", "mine now"])
    code, doc, text = _status(path)
    assert code == 1
    st = _by_ns(doc)
    assert st[vm]["state"] == "foreign"
    (f,) = st[vm]["foreign"]
    assert (f["object"], f["namespace"], f["name"], f["alias"]) == ("link", vm, tap, "mine now")
    problem = st[vm]["problems"][0]
    assert problem.startswith(f"foreign: link {tap} in namespace {vm} exists but natns didn't make it")
    assert {st[tenant]["state"], st[f"t{uid}-inet"]["state"]} == {"ok"}
    up = natns("up", path)
    assert up.returncode == 2 and f"link {tap} in namespace {vm}" in up.stderr
    # The fix it offers for natns's own link: give it back its mark (run as printed).
    m = re.search(r"give it back its mark \((ip -n .*)\)$", problem)
    assert m, problem
    assert shlex.split(m.group(1))[-1] == mark
    assert _run_as_printed(m.group(1)).returncode == 0
    code, doc, _ = _status(path)
    assert code == 0, doc


def _delete_snat_rule(backend: str, vm: str) -> None:
    """Delete natns's masquerade rule of network "tenant" by hand, as a person would."""
    if backend == "nftables":
        listing = nsexec.run(vm, ["nft", "-a", "list", "chain", "ip", "natns", "postrouting"]).stdout
        (handle,) = re.findall(r'comment "natns snat tenant" # handle (\d+)', listing)
        nsexec.run(vm, ["nft", "delete", "rule", "ip", "natns", "postrouting", "handle", handle])
        assert "natns snat tenant" not in nsexec.run(vm, ["nft", "list", "table", "ip", "natns"]).stdout
    else:
        nsexec.run(vm, ["iptables", "-w", "-t", "nat", "-D", "natns-POSTROUTING", "-s", "192.0.2.0/24",
                        "-o", "eth0", "-m", "comment", "--comment", "natns snat tenant", "-j", "MASQUERADE"])
        assert "natns snat tenant" not in nsexec.run(vm, ["iptables-save", "-t", "nat"]).stdout


def _has_snat_rule(backend: str, vm: str) -> bool:
    argv = ["nft", "list", "table", "ip", "natns"] if backend == "nftables" else ["iptables-save", "-t", "nat"]
    return "natns snat tenant" in nsexec.run(vm, argv).stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_deleted_firewall_rule_is_named_and_the_printed_fix_restores_it(make_lab, uid, tmp_path, backend):
    data = seed(uid, backend)
    path = write(tmp_path, data)
    make_lab(data)
    assert natns("up", path).returncode == 0
    vm = f"t{uid}-vm"
    _delete_snat_rule(backend, vm)
    code, doc, text = _status(path)
    assert code == 1
    st = _by_ns(doc)[vm]
    assert st["state"] == "drift"
    where = "chain postrouting" if backend == "nftables" else "nat natns-POSTROUTING"
    assert f'firewall ({backend}): rule "natns snat tenant" is missing from {where}' in st["problems"][0]
    assert st["problems"][-1].endswith(f"; fix: natns up {path}")
    assert not any("nft -f -" in p or "iptables-restore" in p for p in st["problems"])
    assert st["fix"] == f"natns up {path}"
    flat = re.sub(r"[\s│]+", " ", text)
    assert "natns snat tenant" in flat and "natns up" in flat
    # The fix, exactly as printed at the end of the problem.
    fix = st["problems"][-1].rsplit("; fix: ", 1)[1]
    done = _run_as_printed(fix)
    assert done.returncode == 0, done.stderr
    assert _has_snat_rule(backend, vm)
    code, doc, _ = _status(path)
    assert code == 0 and doc["ok"], doc


def test_a_map_element_deleted_by_hand_is_named(make_lab, uid, tmp_path):
    data = mapped(uid)
    path = write(tmp_path, data)
    make_lab(data)
    assert natns("up", path).returncode == 0
    vm = f"t{uid}-vm"
    nsexec.run(vm, ["nft", "delete", "element", "ip", "natns", "fip_dnat", "{", "198.51.100.50", "}"])
    code, doc, _ = _status(path)
    st = _by_ns(doc)[vm]
    assert code == 1 and st["state"] == "drift"
    assert st["problems"] == [
        f"firewall (nftables): element 198.51.100.50 : 192.0.2.2 is missing from map fip_dnat; fix: natns up {path}"]
    assert _run_as_printed(st["fix"]).returncode == 0
    listed = nsexec.run(vm, ["nft", "list", "map", "ip", "natns", "fip_dnat"]).stdout
    assert re.search(r"198\.51\.100\.50 (counter packets \d+ bytes \d+ )?: 192\.0\.2\.2", listed), listed
    assert _status(path)[0] == 0
