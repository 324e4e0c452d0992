"""Helpers for the reliability tests (crash, exactness, concurrency, load) and the soak.

* `many_routers` generates a lab of up to 90 routers (50 in the soak);
* `snapshot` is a kernel dump of one namespace that two separately built
  copies of the same lab share exactly: everything `kernel_dump` shows minus
  what the kernel picks at random or by creation order (interface indexes,
  MAC addresses and what derives from them, netns ids, bridge port numbers,
  IPv6 link-local addresses), plus every ``net.*`` sysctl;
* `run_natns` runs the CLI in its own process group and can SIGKILL or
  SIGINT it after a delay, or ask the apply test hook to kill it at a step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from natns.kernel import nsexec

from .labs import SEED_INET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def many_routers(uid: str, routers: int = 50, backend: str = "nftables", *, floating: bool = True,
                 forwards: bool = True, hosts: int = 1) -> dict:
    """A generated lab of `routers` routers on one internet, `hosts` tenant hosts behind each.

    Router i (namespace ``t<uid>r<i>``) has external address 198.51.100.(10+i)
    and the network 192.0.2.0/24 (the same CIDR behind every router), with
    hosts ``t<uid>h<i>`` (and ``t<uid>h<i>x<k>``) at 192.0.2.10, .11, ...
    With `floating`, every even router gives its first host the floating IP
    198.51.100.(100+i); with `forwards`, every router forwards tcp 8000+i to
    its first host's port 80 and every third one udp 5353 to port 53. Up to
    90 routers fit in 198.51.100.0/24 this way.
    """
    if not 1 <= routers <= 90:
        raise ValueError("many_routers makes 1 to 90 routers")
    names = [f"t{uid}r{i}" for i in range(routers)]
    data = {
        "name": f"g{uid}",
        "backend": backend,
        "internet": {"namespace": f"t{uid}-inet", "address": "198.51.100.1/24", "hosts": [SEED_INET]},
        "routers": [{"name": name, "external": {"address": f"198.51.100.{10 + i}/24"}}
                    for i, name in enumerate(names)],
        "networks": [{"name": f"n{i}", "router": name, "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"t{uid}h{i}" + (f"x{k}" if k else ""), "address": f"192.0.2.{10 + k}"}
                                for k in range(hosts)]}
                     for i, name in enumerate(names)],
        "floating_ips": [],
        "port_forwards": [],
    }
    if floating:
        data["floating_ips"] = [{"router": name, "address": f"198.51.100.{100 + i}", "host": "192.0.2.10"}
                                for i, name in enumerate(names) if i % 2 == 0]
    if forwards:
        for i, name in enumerate(names):
            data["port_forwards"].append({"router": name, "protocol": "tcp", "port": 8000 + i, "to": "192.0.2.10:80"})
            if i % 3 == 0:
                data["port_forwards"].append({"router": name, "protocol": "udp", "port": 5353, "to": "192.0.2.10:53"})
    return data


# --------------------------------------------------------------------------- snapshots

# Keys of `ip -d -j link` output that differ between two builds of the same lab.
_RANDOM_KEY = re.compile(
    r"^(ifindex|link_index|address|perm_address|link_netnsid|stats.*|.*_timer|bridge_id|root_id|root_port"
    r"|designated_.*|id|no|port_id|port_no)$"
)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not _RANDOM_KEY.match(k)}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _ipj(ns: str, *args) -> list:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out or "[]")


def _sort_elements(text: str) -> str:
    """nft prints map elements in the kernel's order, which follows insertion: sort them."""

    def fix(m: re.Match) -> str:
        items = sorted(i.strip() for i in m.group(1).replace("\n", " ").split(",") if i.strip())
        return "elements = { " + ", ".join(items) + " }"

    return re.sub(r"elements = \{(.*?)\}", fix, text, flags=re.DOTALL)


def snapshot(ns: str) -> dict:
    """Namespace `ns` as two builds of the same lab must both show it (see the module doc)."""
    links = sorted(_clean(_ipj(ns, "-d", "link", "show")), key=lambda ln: ln["ifname"])
    addrs = {a["ifname"]: sorted((i["local"], i["prefixlen"], i.get("scope"), i.get("label"))
                                 for i in a.get("addr_info", []))
             for a in _ipj(ns, "-4", "addr", "show")}
    routes = sorted(json.dumps(_clean(r), sort_keys=True) for r in _ipj(ns, "-4", "route", "show", "table", "all"))
    routes6 = sorted(json.dumps(_clean(r), sort_keys=True) for r in _ipj(ns, "-6", "route", "show", "table", "all")
                     if not str(r.get("dst", "")).startswith("fe80::") or r.get("dst") == "fe80::/64")
    rules = _ipj(ns, "rule", "show")
    sysctls = nsexec.run(ns, ["sysctl", "-a", "-r", r"^net\."], check=False).stdout
    sysctls = "\n".join(ln for ln in sysctls.splitlines() if "nf_conntrack_count" not in ln)
    nft = re.sub(r"counter packets \d+ bytes \d+", "counter",
                 nsexec.run(ns, ["nft", "list", "ruleset"], check=False).stdout)
    ipt = "\n".join(re.sub(r"\[\d+:\d+\]", "[]", ln)
                    for ln in nsexec.run(ns, ["iptables-save"], check=False).stdout.splitlines()
                    if not ln.startswith("#"))
    return {"links": links, "addrs": addrs, "routes": routes, "routes6": routes6, "rules": rules,
            "sysctls": sysctls, "nft": _sort_elements(nft), "iptables": ipt}


def snapshots(names) -> dict:
    """`snapshot` of every namespace in `names`, by name."""
    return {ns: snapshot(ns) for ns in names}


def diff(a: dict, b: dict) -> str:
    """A short description of where two `snapshots` results differ (for assertion messages)."""
    out = []
    for ns in sorted(set(a) | set(b)):
        if ns not in a or ns not in b:
            out.append(f"{ns}: only in {'second' if ns not in a else 'first'}")
            continue
        for key in a[ns]:
            if a[ns][key] != b[ns].get(key):
                out.append(f"{ns}.{key}: {str(a[ns][key])[:300]!r} != {str(b[ns].get(key))[:300]!r}")
    return "\n".join(out[:10]) or "no difference"


def settle(names, timeout: float = 10.0) -> None:
    """Wait (bounded) until no IPv6 address in `names` is tentative (DAD done), so
    dumps taken one after the other don't differ by the kernel's own timers."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [ns for ns in pending
                   if "tentative" in subprocess.run(["ip", "-n", ns, "-6", "addr"], capture_output=True,
                                                    text=True, timeout=10).stdout]
        if pending:
            time.sleep(0.2)


# --------------------------------------------------------------------------- killing natns


@dataclass
class Run:
    """How a natns run ended: exit status (negative: killed by that signal) and its output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def hook(self) -> str:
        """The test hook's line, if it struck."""
        return next((ln for ln in self.stderr.splitlines() if "test hook" in ln), "")


def run_natns(*args: str, kill_at: str | None = None, after: float | None = None,
              sig: int = signal.SIGKILL, env: dict | None = None, timeout: float = 300) -> Run:
    """Run ``natns ARGS`` in its own process group.

    `kill_at` sets NATNS_TEST_KILL_AT_STEP (natns kills itself there); with
    `after`, the whole process group (natns and any tool it runs) gets `sig`
    after that many seconds, if it is still running.
    """
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("NATNS_TEST_KILL_AT_STEP", None)
    if kill_at is not None:
        full_env["NATNS_TEST_KILL_AT_STEP"] = kill_at
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if after is not None:
            try:
                out, err = proc.communicate(timeout=after)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                out, err = proc.communicate(timeout=timeout)
        else:
            out, err = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    return Run(proc.returncode, out, err)


def plan_steps(path: str) -> list[dict]:
    """The steps `natns up PATH` would run now (``natns plan --json``)."""
    res = run_natns("plan", "--json", path)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["steps"]


def kill_points(steps: list[dict], count: int) -> list[str]:
    """At least `count` NATNS_TEST_KILL_AT_STEP values spread over a plan: before the
    first step of every kind (and right after the first veth pair, made but not
    configured), during the first, a middle and the last firewall transaction,
    the rest evenly over the plan."""
    points: list[str] = []
    seen: set[str] = set()
    for i, s in enumerate(steps, 1):
        if s["action"] not in seen:
            seen.add(s["action"])
            points.append(str(i))
            if s["action"] == "create_veth" and i < len(steps):
                points.append(str(i + 1))
    fw = [i for i, s in enumerate(steps, 1) if s["action"] in ("load_firewall", "update_firewall")]
    if fw:
        points += list(dict.fromkeys([f"{fw[0]}:during", f"{fw[len(fw) // 2]}:during", f"{fw[-1]}:during"]))
    n = len(steps)
    spread = max(count - len(points), 0)
    for k in range(1, spread + 1):
        i = str(max(1, round(k * n / (spread + 1))))
        if i not in points:
            points.append(i)
    return points
