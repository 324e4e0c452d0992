"""The OVN sandbox: OVN run by natns on this machine, one network namespace per chassis.

Layout for a lab (see docs/ovn.md):

* the central namespace (``ovn.sandbox.namespace``, default ``<lab>-ovn``, role
  ``ovn-central``): the NB and SB ovsdb-servers and ovn-northd; a Linux bridge
  ``ul`` with the underlay's first address: the underlay switch. NB listens on a
  unix socket (for natns) and on TCP 6641 on the underlay, SB on a unix socket and
  TCP 6642 on the underlay (for the chassis).
* per chassis (its namespace, role ``chassis``): ovsdb-server with its own conf.db,
  ovs-vswitchd (userspace datapath, every bridge ``datapath_type=netdev``) and
  ovn-controller, all with the chassis' run directory as OVS_RUNDIR/OVN_RUNDIR;
  ``br-phy`` holds the veth to ``ul`` and carries the chassis' underlay address
  (Geneve runs over it); a gateway chassis also has ``br-ex`` holding a veth to the
  internet namespace's bridge (``ovn-bridge-mappings=internet:br-ex``); ``br-int``
  holds the lab hosts' veths, each bound to its logical port by ``iface-id``.
* the internet namespace (role ``internet``), and each host's namespace (role ``host``).

Every namespace is marked like natns's others (`state.ns_mark`, on `lo`'s alias,
before it has a name). Each daemon's run directory is /run/natns/ovn/<lab>/<name>/;
daemons are started from argument lists with ``--detach --pidfile`` there, and stopped
by the PIDs of those pidfiles, then by the namespaces (every process whose
/proc/PID/ns/net is a lab namespace), never by name. `down` works after a crash: it
needs only the lab's name.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Sequence

from ...errors import KernelError
from ...kernel import netns, nsexec, procs
from ...state import ns_mark, parse_ns_mark
from ...topology.names import short_ifname
from ...topology.schema import Topology, ovn_central_ns
from . import nb

RUN_ROOT = "/run/natns/ovn"
NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
NB_PORT, SB_PORT = 6641, 6642
#: NB_Global options the sandbox sets (ovn-notes pitfall 6).
BFD_OPTIONS = {"bfd-min-rx": 100, "bfd-min-tx": 100, "bfd-mult": 3}
#: The roles of the namespaces the OVN engine makes (the lo-alias mark's middle part).
ROLES = ("ovn-central", "chassis", "internet", "host")
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovn-northd",
            "ovn-controller", "ovn-sbctl", "ovn-nbctl", "ethtool", "ip")


def missing_binaries() -> list[str]:
    """The programs the sandbox needs that are not installed (scripts/bootstrap.sh installs them)."""
    return [b for b in BINARIES if shutil.which(b) is None]


@dataclass(frozen=True)
class ChassisPlace:
    """Where one chassis runs: its namespace, underlay address and run directory."""

    name: str
    ns: str
    ip: ipaddress.IPv4Address
    gateway: bool
    index: int
    rundir: str

    @property
    def db(self) -> str:
        return f"unix:{self.rundir}/db.sock"


@dataclass(frozen=True)
class Layout:
    """The sandbox of one lab: names, addresses, directories. Pure, from the topology."""

    lab: str
    central_ns: str
    central_ip: ipaddress.IPv4Address
    prefixlen: int
    central_dir: str
    chassis: tuple[ChassisPlace, ...]
    inet_ns: str
    inet_bridge: str

    @property
    def nb_unix(self) -> str:
        return f"unix:{self.central_dir}/nb.sock"

    @property
    def sb_unix(self) -> str:
        return f"unix:{self.central_dir}/sb.sock"

    @property
    def nb_tcp(self) -> str:
        return f"tcp:{self.central_ip}:{NB_PORT}"

    @property
    def sb_tcp(self) -> str:
        return f"tcp:{self.central_ip}:{SB_PORT}"

    def place(self, chassis: str) -> ChassisPlace:
        for c in self.chassis:
            if c.name == chassis:
                return c
        raise KeyError(chassis)


def lab_dir(lab: str) -> str:
    return os.path.join(RUN_ROOT, lab)


def layout(t: Topology) -> Layout:
    """The sandbox layout of topology `t` (which must have ``ovn.sandbox``)."""
    sb = t.ovn.sandbox
    hosts = list(sb.underlay.hosts())
    d = lab_dir(t.name)
    places = tuple(
        ChassisPlace(c.name, c.ns, hosts[j + 1], c.gateway, j, os.path.join(d, c.name))
        for j, c in enumerate(sb.chassis))
    return Layout(t.name, ovn_central_ns(t), hosts[0], sb.underlay.prefixlen,
                  os.path.join(d, "central"), places, t.internet.namespace, t.internet.interface)


# --------------------------------------------------------------------------- helpers


def _env(rundir: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR"):
        env[var] = rundir
    return env


def _run(ns: str | None, argv: Sequence[str], rundir: str | None = None, timeout: float = 30) -> str:
    """Run `argv` (a list, no shell) in namespace `ns` with the run directory's environment."""
    full = list(argv) if ns is None else ["nsenter", f"--net={nsexec.ns_path(ns)}", "--", *argv]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                          env=_env(rundir) if rundir else None, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        where = f" in namespace {ns}" if ns else ""
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise KernelError(f"{' '.join(argv)}{where} failed (exit {proc.returncode}): "
                          + (" | ".join(msg[:5]) if msg else "no output"))
    return proc.stdout


def _ip(ns: str, *args: str) -> None:
    _run(ns, ["ip", *args])


def _tx_off(ns: str, dev: str) -> None:
    """TX checksum offload off (ovn-notes pitfall 1: else OVS's conntrack drops the NAT of TCP)."""
    _run(ns, ["ethtool", "-K", dev, "tx", "off"])


def _wait(what: str, cond, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = cond()
            if got:
                return got
        except (KernelError, OSError, subprocess.SubprocessError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise KernelError(f"timed out after {timeout:g} s waiting for {what}"
                              + (f" (last error: {last})" if last else ""))
        time.sleep(step)
        step = min(step * 1.5, 0.2)


def _make_ns(lab: str, role: str, name: str) -> None:
    if netns.exists(name) and not netns.is_placeholder(name):
        from ...observe import read_mark

        owner = parse_ns_mark(read_mark(name))
        if owner != (lab, role, name):
            raise KernelError(f"namespace {name} already exists and is not lab {lab}'s {role}")
        return
    netns.create_open(name, rtnl=False, mark=ns_mark(lab, role, name))


def _daemon(ns: str, rundir: str, name: str, argv: Sequence[str]) -> int:
    """Start a daemon detached, with its pidfile and log in `rundir`; return its PID."""
    pidfile = os.path.join(rundir, f"{name}.pid")
    _run(ns, [*argv, f"--pidfile={pidfile}", f"--log-file={rundir}/{name}.log", "--detach"], rundir)
    with open(pidfile) as fh:
        return int(fh.read().strip())


# --------------------------------------------------------------------------- up


def up(t: Topology, timeout: float = 20) -> Layout:
    """Bring up the sandbox of `t`: namespaces, underlay, internet, daemons; ready when it returns.

    Ready means: NB and SB answer, every chassis is registered in SB. Hosts are
    plugged by `attach_hosts`. On failure, what was made is taken down again; if
    natns is killed instead, `down(lab)` finds it all.
    """
    lo = layout(t)
    lab = t.name
    if lab_namespaces(lab):
        raise KernelError(f"the OVN sandbox of lab {lab} is (partly) up; take it down first")
    try:
        _up(t, lo, timeout)
    except BaseException:
        down(lab)
        raise
    return lo


def _up(t: Topology, lo: Layout, timeout: float) -> None:
    lab = t.name
    os.makedirs(lo.central_dir, exist_ok=True)

    # Central namespace: the underlay switch and the databases.
    _make_ns(lab, "ovn-central", lo.central_ns)
    _ip(lo.central_ns, "link", "add", "ul", "type", "bridge")
    _ip(lo.central_ns, "addr", "add", f"{lo.central_ip}/{lo.prefixlen}", "dev", "ul")
    _ip(lo.central_ns, "link", "set", "ul", "up")

    # Internet namespace: a bridge with its address, its hosts on lo.
    i = t.internet
    _make_ns(lab, "internet", lo.inet_ns)
    _ip(lo.inet_ns, "link", "add", lo.inet_bridge, "type", "bridge")
    _ip(lo.inet_ns, "addr", "add", str(i.address), "dev", lo.inet_bridge)
    _ip(lo.inet_ns, "link", "set", lo.inet_bridge, "up")
    for h in i.hosts:
        _ip(lo.inet_ns, "addr", "add", f"{h}/32", "dev", "lo")

    # Chassis namespaces with their underlay (and uplink) veths.
    for c in lo.chassis:
        os.makedirs(c.rundir, exist_ok=True)
        _make_ns(lab, "chassis", c.ns)
        ul = f"ul{c.index}"
        _ip(lo.central_ns, "link", "add", ul, "type", "veth", "peer", "name", "phy0", "netns", c.ns)
        _ip(lo.central_ns, "link", "set", ul, "master", "ul", "up")
        _ip(c.ns, "link", "set", "phy0", "up")
        _tx_off(lo.central_ns, ul)
        _tx_off(c.ns, "phy0")
        if c.gateway:
            gx = f"gx{c.index}"
            _ip(lo.inet_ns, "link", "add", gx, "type", "veth", "peer", "name", "ex0", "netns", c.ns)
            _ip(lo.inet_ns, "link", "set", gx, "master", lo.inet_bridge, "up")
            _ip(c.ns, "link", "set", "ex0", "up")
            _tx_off(lo.inet_ns, gx)
            _tx_off(c.ns, "ex0")

    # NB, SB, northd.
    d = lo.central_dir
    for db, schema, port in (("nb", NB_SCHEMA, NB_PORT), ("sb", SB_SCHEMA, SB_PORT)):
        path = os.path.join(d, f"{db}.db")
        if not os.path.exists(path):
            _run(None, ["ovsdb-tool", "create", path, schema])
        _daemon(lo.central_ns, d, f"ovsdb-{db}", [
            "ovsdb-server", path, f"--remote=punix:{d}/{db}.sock",
            f"--remote=ptcp:{port}:{lo.central_ip}", f"--unixctl={d}/ovsdb-{db}.ctl"])
    _run(None, ["ovn-nbctl", f"--db={lo.nb_unix}", "--no-wait", "init"])
    _run(None, ["ovn-sbctl", f"--db={lo.sb_unix}", "init"])
    # The sandbox's NB is natns's own: BFD between chassis fast enough that a gateway's
    # death is seen in ~0.3 s, and that a chassis finds its active gateway in as little
    # (with the default 1 s intervals, the first packets after start-up are lost for ~3 s).
    _run(None, ["ovn-nbctl", f"--db={lo.nb_unix}", "--no-wait", "set", "NB_Global", ".",
                *[f"options:{k}={v}" for k, v in BFD_OPTIONS.items()]])
    _daemon(lo.central_ns, d, "ovn-northd", [
        "ovn-northd", f"--ovnnb-db={lo.nb_unix}", f"--ovnsb-db={lo.sb_unix}",
        f"--unixctl={d}/ovn-northd.ctl"])

    # Per chassis: ovsdb-server, vswitchd, bridges, ovn-controller.
    for c in lo.chassis:
        r = c.rundir
        conf = os.path.join(r, "conf.db")
        if not os.path.exists(conf):
            _run(None, ["ovsdb-tool", "create", conf, VSWITCH_SCHEMA])
        _daemon(c.ns, r, "ovsdb-server", [
            "ovsdb-server", conf, f"--remote=punix:{r}/db.sock", f"--unixctl={r}/ovsdb-server.ctl"])
        ids = [f"external_ids:system-id={c.name}", f"external_ids:hostname={c.name}",
               f"external_ids:ovn-remote={lo.sb_tcp}", "external_ids:ovn-encap-type=geneve",
               f"external_ids:ovn-encap-ip={c.ip}", "external_ids:ovn-bridge-datapath-type=netdev"]
        if c.gateway:
            ids += [f"external_ids:ovn-bridge-mappings={nb.PHYSNET}:br-ex",
                    "external_ids:ovn-cms-options=enable-chassis-as-gw"]
        _run(None, ["ovs-vsctl", f"--db={c.db}", "--no-wait", "--", "init", "--",
                    "set", "Open_vSwitch", ".", *ids])
        _daemon(c.ns, r, "ovs-vswitchd", ["ovs-vswitchd", c.db, f"--unixctl={r}/ovs-vswitchd.ctl"])
        vsctl = ["ovs-vsctl", f"--db={c.db}", "--timeout=10",
                 "--", "--may-exist", "add-br", "br-int",
                 "--", "set", "Bridge", "br-int", "datapath_type=netdev", "fail_mode=secure",
                 "other_config:disable-in-band=true",
                 "--", "--may-exist", "add-br", "br-phy",
                 "--", "set", "Bridge", "br-phy", "datapath_type=netdev",
                 "--", "--may-exist", "add-port", "br-phy", "phy0"]
        if c.gateway:
            vsctl += ["--", "--may-exist", "add-br", "br-ex",
                      "--", "set", "Bridge", "br-ex", "datapath_type=netdev",
                      "--", "--may-exist", "add-port", "br-ex", "ex0"]
        _run(None, vsctl)
        _ip(c.ns, "addr", "add", f"{c.ip}/{lo.prefixlen}", "dev", "br-phy")
        _ip(c.ns, "link", "set", "br-phy", "up")
        _daemon(c.ns, r, "ovn-controller", ["ovn-controller", c.db])  # no --unixctl: pitfall 4

    wait_chassis(lo, timeout)


def registered_chassis(lo: Layout) -> set[str]:
    """Names of the chassis registered in the SB DB."""
    out = _run(None, ["ovn-sbctl", f"--db={lo.sb_unix}", "--bare", "--columns=name", "list", "Chassis"])
    return {ln.strip() for ln in out.splitlines() if ln.strip()}


def wait_chassis(lo: Layout, timeout: float = 20) -> None:
    """Wait until every chassis of `lo` is registered in SB (bounded)."""
    want = {c.name for c in lo.chassis}
    _wait(f"chassis {', '.join(sorted(want))} to register in the SB DB",
          lambda: want <= registered_chassis(lo), timeout)


# --------------------------------------------------------------------------- hosts


def host_tap(host_ns: str) -> str:
    """The name of a host's veth end on its chassis' br-int."""
    return short_ifname("tap", host_ns)


def attach_hosts(t: Topology, lo: Layout) -> None:
    """Make each host's namespace and plug it into its chassis' br-int, bound to its logical port."""
    for n in t.networks:
        for h in n.hosts:
            c = lo.place(h.chassis)
            tap = host_tap(h.namespace)
            _make_ns(t.name, "host", h.namespace)
            _ip(c.ns, "link", "add", tap, "mtu", str(nb.HOST_MTU), "type", "veth",
                "peer", "name", h.interface, "netns", h.namespace)
            _ip(h.namespace, "link", "set", "lo", "up")
            _ip(h.namespace, "link", "set", h.interface, "address", nb.host_mac(t.name, h.namespace),
                "mtu", str(nb.HOST_MTU), "up")
            _ip(h.namespace, "addr", "add", f"{h.address}/{n.cidr.prefixlen}", "dev", h.interface)
            _ip(h.namespace, "route", "add", "default", "via", str(n.gateway))
            _ip(c.ns, "link", "set", tap, "up")
            _tx_off(c.ns, tap)
            _tx_off(h.namespace, h.interface)
            _run(None, ["ovs-vsctl", f"--db={c.db}", "--timeout=10", "--", "--may-exist", "add-port",
                        "br-int", tap, "--", "set", "Interface", tap,
                        f"external_ids:iface-id={nb.host_port(t.name, h.namespace)}"])


def port_installed(c: ChassisPlace, tap: str) -> bool:
    """Whether ovn-controller has installed the flows of `tap`'s logical port (ovn-notes pitfall 3)."""
    out = _run(None, ["ovs-vsctl", f"--db={c.db}", "--if-exists", "get", "Interface", tap,
                      "external_ids:ovn-installed"], timeout=10)
    return out.strip().strip('"') == "true"


def tunnels_up(c: ChassisPlace, remote_ips: set[str]) -> bool:
    """Whether `c` has a Geneve tunnel to each of `remote_ips` that forwards: BFD says
    ``forwarding=true`` where BFD runs (towards HA gateway chassis), else the tunnel exists."""
    import json

    out = _run(None, ["ovs-vsctl", f"--db={c.db}", "--format=json", "--columns=options,bfd_status",
                      "find", "Interface", "type=geneve"], timeout=10)
    seen: dict[str, bool] = {}
    for options, bfd in json.loads(out)["data"]:
        opts, st = dict(options[1]), dict(bfd[1])
        seen[opts.get("remote_ip", "")] = not st or st.get("forwarding") == "true"
    return all(seen.get(ip) for ip in remote_ips)


def wait_bound(t: Topology, lo: Layout, timeout: float = 20) -> None:
    """Wait (bounded) until traffic can flow: every chassis has caught up with the NB
    (``--wait=hv``), every host's port is ``ovn-installed`` on its chassis, and each
    host's chassis has a forwarding tunnel to its router's gateway chassis."""
    _run(None, ["ovn-nbctl", f"--db={lo.nb_unix}", f"--timeout={int(timeout)}", "--wait=hv", "sync"],
         timeout=timeout + 5)
    routers = {r.name: r for r in t.routers}
    for n in t.networks:
        gws = {str(lo.place(g).ip) for g in routers[n.router].gateway_chassis}
        for h in n.hosts:
            c = lo.place(h.chassis)
            tap = host_tap(h.namespace)
            _wait(f"host {h.namespace}'s port to be bound on chassis {c.name}",
                  lambda: port_installed(c, tap), timeout)
            remote = gws - {str(c.ip)}
            _wait(f"chassis {c.name}'s tunnels to gateway chassis to forward",
                  lambda: tunnels_up(c, remote), timeout)


# --------------------------------------------------------------------------- down


def _pidfile_pids(lab: str) -> list[int]:
    """PIDs from the pidfiles of the lab's run directories, kept only if that process still
    names this run directory on its command line (a reused PID is someone else's)."""
    out = []
    root = lab_dir(lab)
    if not os.path.isdir(root):
        return out
    for sub in sorted(os.listdir(root)):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if not f.endswith(".pid"):
                continue
            try:
                with open(os.path.join(d, f)) as fh:
                    pid = int(fh.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except (OSError, ValueError):
                continue
            if (d + "/").encode() in cmd:
                out.append(pid)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pids(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM each PID, then SIGKILL those still alive after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def lab_namespaces(lab: str) -> list[str]:
    """The namespaces marked as lab `lab`'s with one of the OVN engine's roles."""
    from ...observe import marked_namespaces

    return sorted(name for name, (_, role, _n) in marked_namespaces(lab).items() if role in ROLES)


def down(lab: str) -> None:
    """Remove the lab's sandbox: daemons (by pidfile, then by namespace), namespaces, run dir.

    Needs nothing but the lab's name, so it works after natns was killed anywhere in `up`.
    """
    stop_pids(_pidfile_pids(lab))
    names = lab_namespaces(lab)
    for name in names:  # what the pidfiles missed: every process still in a sandbox namespace
        procs.stop_in_netns(name)
    for name in names:
        netns.remove(name)
    for name in os.listdir(nsexec.NETNS_DIR) if os.path.isdir(nsexec.NETNS_DIR) else []:
        owner = parse_ns_mark(netns.placeholder_mark(name))  # a create cut short
        if owner and owner[0] == lab and owner[1] in ROLES:
            try:
                os.unlink(os.path.join(nsexec.NETNS_DIR, name))
            except OSError:
                pass
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
