"""Builders for the CNI half of the corpus of foreign setups (issue 15, docs/explain.md
"The corpus of foreign setups").

A namespace plays the container host: Debian's containernetworking-plugins (1.1.1) run
in it through their own protocol (CNI_COMMAND/CNI_NETNS/CNI_IFNAME/CNI_CONTAINERID/
CNI_PATH in the environment, the network configuration on stdin, the result on stdout),
as argument lists (``ip netns exec HOST /usr/lib/cni/PLUGIN``), so the plugins' current
network namespace is the host's and everything they write (the bridge, iptables rules,
ip_forward) lands there. The "containers" are namespaces; a far namespace plays the
internet. A plugin chain is run the way libcni runs a conflist: each plugin gets the
network's name and cniVersion, the previous plugin's result as ``prevResult``, and the
``runtimeConfig`` of the capabilities it declares (portmap's ``portMappings``); DEL runs
the chain backwards with the ADD result.

The plugins run the ``iptables`` found first in PATH inside the host namespace (through
go-iptables). On Debian 12 that is iptables-nft (the alternatives' default); the
``legacy`` flavour puts a directory first in PATH whose iptables/ip6tables (and -save,
-restore) are xtables-legacy-multi, so the same plugins write iptables-legacy rules.

Addresses (documentation ranges only): containers 192.0.2.0/24 behind bridge ``cni0``
(gateway 192.0.2.1), host 198.51.100.2/24 on ``eth0``, internet 198.51.100.1/24 and
203.0.113.9/32 on its ``lo``; the internet has no route to 192.0.2.0/24.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field

from natns.kernel import nsexec

CNI_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
FAR = "203.0.113.9"
HOST_ADDR = "198.51.100.2"
INET_ADDR = "198.51.100.1"
SUBNET = "192.0.2.0/24"
GATEWAY = "192.0.2.1"
LEGACY_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")


class CniError(RuntimeError):
    pass


def ip(ns: str, *argv: str) -> None:
    nsexec.run(ns, ["ip", *argv])


def run_printed(command: str) -> subprocess.CompletedProcess:
    """A fix exactly as doctor printed it: shlex-split, no shell."""
    return subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)


def legacy_path(tmp_path) -> str:
    """A PATH whose iptables tools are iptables-legacy (xtables-legacy-multi)."""
    d = tmp_path / "legacy-bin"
    d.mkdir(exist_ok=True)
    for tool in LEGACY_TOOLS:
        link = d / tool
        if not link.exists():
            link.symlink_to("/usr/sbin/xtables-legacy-multi")
    return f"{d}:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class CniHost:
    """A host namespace with the CNI plugins' network, a far namespace, and containers."""

    host: str
    inet: str
    data_dir: str
    path: str = "/usr/sbin:/usr/bin:/sbin:/bin"
    name: str = "corpus"
    port_maps: dict[str, list[dict]] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)

    def conflist(self) -> dict:
        return {
            "cniVersion": CNI_VERSION, "name": self.name,
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
                 "ipam": {"type": "host-local", "dataDir": self.data_dir,
                          "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                {"type": "firewall", "backend": "iptables"},
            ],
        }

    def _plugin(self, command: str, container: str, conf: dict) -> dict:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": f"/run/netns/{container}",
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_DIR, "PATH": self.path}
        done = subprocess.run(["ip", "netns", "exec", self.host, f"{CNI_DIR}/{conf['type']}"],
                              input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=60)
        if done.returncode != 0:
            raise CniError(f"{conf['type']} {command} {container}: {done.stdout.strip()} {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def _confs(self, container: str, prev: dict | None):
        net = self.conflist()
        for p in net["plugins"]:
            conf = {k: v for k, v in p.items() if k != "capabilities"}
            conf.update(name=net["name"], cniVersion=net["cniVersion"])
            if "portMappings" in p.get("capabilities", {}):
                conf["runtimeConfig"] = {"portMappings": self.port_maps.get(container, [])}
            if prev is not None:
                conf["prevResult"] = prev
            yield conf

    def add(self, container: str, port_maps: list[dict] | None = None) -> dict:
        """CNI ADD of `container` (a namespace made before): the chain bridge, portmap, firewall."""
        self.port_maps[container] = port_maps or []
        prev = None
        for conf in self._confs(container, None):
            if prev is not None:
                conf["prevResult"] = prev
            prev = self._plugin("ADD", container, conf)
        self.results[container] = prev
        return prev

    def delete(self, container: str) -> None:
        """CNI DEL of `container`, the chain backwards, each given the ADD result."""
        prev = self.results.pop(container, None)
        for conf in reversed(list(self._confs(container, prev))):
            self._plugin("DEL", container, conf)

    def address(self, container: str) -> str:
        return self.results[container]["ips"][0]["address"].split("/")[0]

    def iptables(self, *argv: str) -> subprocess.CompletedProcess:
        """The same iptables the plugins ran, in the host namespace."""
        return subprocess.run(["ip", "netns", "exec", self.host, "iptables", *argv], capture_output=True,
                              text=True, env={"PATH": self.path}, timeout=30)

    def save(self, table: str) -> list[str]:
        done = subprocess.run(["ip", "netns", "exec", self.host, "iptables-save", "-t", table],
                              capture_output=True, text=True, env={"PATH": self.path}, timeout=30)
        return done.stdout.splitlines()


def build(scratch_ns, tmp_path, flavour: str = "nft") -> CniHost:
    """The host and the internet, wired; no container yet (`CniHost.add` makes one)."""
    host, inet = scratch_ns("cnihost"), scratch_ns("cniinet")
    nsexec.run(host, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", inet])
    ip(host, "addr", "add", f"{HOST_ADDR}/24", "dev", "eth0")
    ip(inet, "addr", "add", f"{INET_ADDR}/24", "dev", "eth0")
    ip(inet, "addr", "add", f"{FAR}/32", "dev", "lo")
    for ns in (host, inet):
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "link", "set", "eth0", "up")
    ip(host, "route", "add", "default", "via", INET_ADDR)
    data = tmp_path / "cni-ipam"
    data.mkdir(exist_ok=True)
    path = legacy_path(tmp_path) if flavour == "legacy" else "/usr/sbin:/usr/bin:/sbin:/bin"
    return CniHost(host, inet, str(data), path)


def container(scratch_ns, label: str) -> str:
    ns = scratch_ns(label)
    ip(ns, "link", "set", "lo", "up")
    return ns


def teardown(h: CniHost) -> None:
    """CNI DEL of every container still added (the namespaces go with scratch_ns)."""
    for c in list(h.results):
        try:
            h.delete(c)
        except CniError:
            pass
    # host-local's leases live under tmp_path; nothing of the plugins is outside the namespaces
    assert not os.path.exists(os.path.join(h.data_dir, h.name)) or \
        not [f for f in os.listdir(os.path.join(h.data_dir, h.name)) if f[0].isdigit()]
