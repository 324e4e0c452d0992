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
    make_central(t, lo)
    make_internet(t, lo)
    for c in lo.chassis:
        make_chassis(t, lo, c)
    wait_chassis(lo, timeout)


# The sandbox in parts, each made whole or found unfinished: a part is done when its
# `ready` marker exists (written last), its namespace exists and its daemons run. A part
# found unfinished (natns killed while making it) or broken (a daemon dead) is removed and
# made again; what lives in a part that is made again goes with it (the chassis' veths
# end in the central and internet namespaces, the hosts' in their chassis).

CENTRAL_DAEMONS = ("ovsdb-nb", "ovsdb-sb", "ovn-northd")
CHASSIS_DAEMONS = ("ovsdb-server", "ovs-vswitchd", "ovn-controller")


def internet_dir(lab: str) -> str:
    return os.path.join(lab_dir(lab), "internet")


def hosts_dir(lab: str) -> str:
    return os.path.join(lab_dir(lab), "hosts")


def _ready(d: str, name: str = "ready") -> str:
    return os.path.join(d, name)


def _mark_ready(d: str, name: str = "ready") -> None:
    os.makedirs(d, exist_ok=True)
    with open(_ready(d, name), "w") as fh:
        fh.write("natns\n")


def daemon_pids(d: str, names: Sequence[str]) -> dict[str, int | None]:
    """Each daemon's PID from its pidfile in run directory `d`, None where it isn't running
    (no pidfile, the process gone, or a reused PID that doesn't name `d`)."""
    out: dict[str, int | None] = {}
    for name in names:
        pid = None
        try:
            with open(os.path.join(d, f"{name}.pid")) as fh:
                p = int(fh.read().strip())
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                if (d + "/").encode() in fh.read() and _alive(p):
                    pid = p
        except (OSError, ValueError):
            pass
        out[name] = pid
    return out


def part_problems(d: str, ns: str, daemons: Sequence[str], marker: str = "ready") -> list[str]:
    """What is wrong with a part of the sandbox (empty: it is whole and running)."""
    if not netns.exists(ns) or netns.is_placeholder(ns):
        return [f"namespace {ns} does not exist"]
    if not os.path.exists(_ready(d, marker)):
        return [f"unfinished: natns stopped while making it (no {_ready(d, marker)})"]
    return [f"daemon {name} is not running (pidfile {d}/{name}.pid)"
            for name, pid in daemon_pids(d, daemons).items() if pid is None]


def remove_part(d: str | None, ns: str, daemons: Sequence[str] = (), marker: str | None = None) -> None:
    """Stop a part's daemons (by pidfile, then whatever runs in its namespace), remove its
    namespace and its run directory (or only its marker)."""
    if d is not None:
        stop_pids([p for p in daemon_pids(d, daemons).values() if p is not None])
    if netns.exists(ns):
        procs.stop_in_netns(ns)
        netns.remove(ns)
    if d is not None and marker is None:
        shutil.rmtree(d, ignore_errors=True)
    elif d is not None:
        try:
            os.unlink(_ready(d, marker))
        except FileNotFoundError:
            pass


def make_central(t: Topology, lo: Layout) -> None:
    """The central namespace: the underlay switch, the NB and SB servers, ovn-northd."""
    lab = t.name
    os.makedirs(lo.central_dir, exist_ok=True)
    _make_ns(lab, "ovn-central", lo.central_ns)
    _ip(lo.central_ns, "link", "add", "ul", "type", "bridge")
    _ip(lo.central_ns, "addr", "add", f"{lo.central_ip}/{lo.prefixlen}", "dev", "ul")
    _ip(lo.central_ns, "link", "set", "ul", "up")
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
    _mark_ready(d)


def central_commands(lo: Layout) -> list[str]:
    """What `make_central` amounts to, as commands (for `plan`)."""
    d = lo.central_dir
    return [f"ip netns add {lo.central_ns}", f"ip -n {lo.central_ns} link add ul type bridge",
            f"ip -n {lo.central_ns} addr add {lo.central_ip}/{lo.prefixlen} dev ul"] + [
        f"ovsdb-server {d}/{db}.db --remote=punix:{d}/{db}.sock --remote=ptcp:{port}:{lo.central_ip} --detach"
        for db, port in (("nb", NB_PORT), ("sb", SB_PORT))] + [
        f"ovn-nbctl --db={lo.nb_unix} set NB_Global . "
        + " ".join(f"options:{k}={v}" for k, v in BFD_OPTIONS.items()),
        f"ovn-northd --ovnnb-db={lo.nb_unix} --ovnsb-db={lo.sb_unix} --detach"]


def make_internet(t: Topology, lo: Layout) -> None:
    """The internet namespace: a bridge with its address, its hosts on lo."""
    i = t.internet
    _make_ns(t.name, "internet", lo.inet_ns)
    _ip(lo.inet_ns, "link", "add", lo.inet_bridge, "type", "bridge")
    _ip(lo.inet_ns, "addr", "add", str(i.address), "dev", lo.inet_bridge)
    _ip(lo.inet_ns, "link", "set", lo.inet_bridge, "up")
    for h in i.hosts:
        _ip(lo.inet_ns, "addr", "add", f"{h}/32", "dev", "lo")
    _mark_ready(internet_dir(t.name))


def internet_commands(t: Topology, lo: Layout) -> list[str]:
    return [f"ip netns add {lo.inet_ns}", f"ip -n {lo.inet_ns} link add {lo.inet_bridge} type bridge",
            f"ip -n {lo.inet_ns} addr add {t.internet.address} dev {lo.inet_bridge}"] + [
        f"ip -n {lo.inet_ns} addr add {h}/32 dev lo" for h in t.internet.hosts]


def _chassis_ids(lo: Layout, c: ChassisPlace) -> list[str]:
    ids = [f"external_ids:system-id={c.name}", f"external_ids:hostname={c.name}",
           f"external_ids:ovn-remote={lo.sb_tcp}", "external_ids:ovn-encap-type=geneve",
           f"external_ids:ovn-encap-ip={c.ip}", "external_ids:ovn-bridge-datapath-type=netdev"]
    if c.gateway:
        ids += [f"external_ids:ovn-bridge-mappings={nb.PHYSNET}:br-ex",
                "external_ids:ovn-cms-options=enable-chassis-as-gw"]
    return ids


def make_chassis(t: Topology, lo: Layout, c: ChassisPlace) -> None:
    """One chassis: its namespace, its veths to the underlay switch (and the internet's
    bridge on a gateway chassis), ovsdb-server, ovs-vswitchd, the bridges, ovn-controller."""
    lab = t.name
    os.makedirs(c.rundir, exist_ok=True)
    _make_ns(lab, "chassis", c.ns)
    ul = f"ul{c.index}"
    _gone(lo.central_ns, ul)
    _ip(lo.central_ns, "link", "add", ul, "type", "veth", "peer", "name", "phy0", "netns", c.ns)
    _ip(lo.central_ns, "link", "set", ul, "master", "ul", "up")
    _ip(c.ns, "link", "set", "phy0", "up")
    _tx_off(lo.central_ns, ul)
    _tx_off(c.ns, "phy0")
    if c.gateway:
        gx = f"gx{c.index}"
        _gone(lo.inet_ns, gx)
        _ip(lo.inet_ns, "link", "add", gx, "type", "veth", "peer", "name", "ex0", "netns", c.ns)
        _ip(lo.inet_ns, "link", "set", gx, "master", lo.inet_bridge, "up")
        _ip(c.ns, "link", "set", "ex0", "up")
        _tx_off(lo.inet_ns, gx)
        _tx_off(c.ns, "ex0")
    r = c.rundir
    conf = os.path.join(r, "conf.db")
    if not os.path.exists(conf):
        _run(None, ["ovsdb-tool", "create", conf, VSWITCH_SCHEMA])
    _daemon(c.ns, r, "ovsdb-server", [
        "ovsdb-server", conf, f"--remote=punix:{r}/db.sock", f"--unixctl={r}/ovsdb-server.ctl"])
    _run(None, ["ovs-vsctl", f"--db={c.db}", "--no-wait", "--", "init", "--",
                "set", "Open_vSwitch", ".", *_chassis_ids(lo, c)])
    _daemon(c.ns, r, "ovs-vswitchd", ["ovs-vswitchd", c.db, f"--unixctl={r}/ovs-vswitchd.ctl"])
    _run(None, _bridges_argv(c))
    _ip(c.ns, "addr", "add", f"{c.ip}/{lo.prefixlen}", "dev", "br-phy")
    _ip(c.ns, "link", "set", "br-phy", "up")
    _daemon(c.ns, r, "ovn-controller", ["ovn-controller", c.db])  # no --unixctl: pitfall 4
    _mark_ready(r)


def _bridges_argv(c: ChassisPlace) -> list[str]:
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
    return vsctl


def chassis_commands(lo: Layout, c: ChassisPlace) -> list[str]:
    r = c.rundir
    out = [f"ip netns add {c.ns}", f"ip -n {lo.central_ns} link add ul{c.index} type veth peer name phy0 netns {c.ns}"]
    if c.gateway:
        out.append(f"ip -n {lo.inet_ns} link add gx{c.index} type veth peer name ex0 netns {c.ns}")
    return out + [
        f"ovsdb-server {r}/conf.db --remote=punix:{r}/db.sock --detach",
        f"ovs-vsctl --db={c.db} set Open_vSwitch . " + " ".join(_chassis_ids(lo, c)),
        f"ovs-vswitchd {c.db} --detach",
        " ".join(_bridges_argv(c)),
        f"ovn-controller {c.db} --detach"]


def _gone(ns: str | None, dev: str, timeout: float = 10) -> None:
    """Make sure link `dev` is not in `ns`: a veth whose peer's namespace was just removed
    goes away by itself a little later (the kernel cleans namespaces up asynchronously);
    one left by a make cut short is deleted."""
    if not _has_link(ns, dev):
        return
    subprocess.run(["ip", *(["-n", ns] if ns else []), "link", "del", dev], capture_output=True,
                   stdin=subprocess.DEVNULL)
    _wait(f"link {dev} to go away" + (f" in {ns}" if ns else ""), lambda: not _has_link(ns, dev), timeout)


def _has_link(ns: str | None, dev: str) -> bool:
    """Whether link `dev` exists in namespace `ns` (None: the one natns runs in)."""
    return subprocess.run(["ip", *(["-n", ns] if ns else []), "link", "show", "dev", dev],
                          capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


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
            plug_host(t, n, h, c.ns, c.db)


def plug_host(t: Topology, n, h, chassis_ns: str | None, db: str) -> None:
    """Make host `h`'s namespace and plug it, by a veth, into the br-int of the OVS whose
    database is `db`, in namespace `chassis_ns` (None: the one natns runs in — `attach`),
    bound to its logical port by ``iface-id``. The ``hosts/<ns>.ready`` marker is last."""
    tap = host_tap(h.namespace)
    if netns.exists(h.namespace) and not netns.is_placeholder(h.namespace):
        netns.remove(h.namespace)  # a plug cut short: made again from nothing (its veth goes with it)
    _make_ns(t.name, "host", h.namespace)
    # A port left on br-int by an earlier plug goes first: vswitchd (userspace datapath) keeps
    # reading the old device of a port whose veth was deleted and made again under the same
    # name, so packets from the new one never reach OVN (seen: flows installed, no packet).
    _run(None, ["ovs-vsctl", f"--db={db}", "--timeout=10", "--if-exists", "del-port", "br-int", tap])
    _gone(chassis_ns, tap)
    _run(chassis_ns, ["ip", "link", "add", tap, "mtu", str(nb.HOST_MTU), "type", "veth",
                      "peer", "name", h.interface, "netns", h.namespace])
    _ip(h.namespace, "link", "set", "lo", "up")
    _ip(h.namespace, "link", "set", h.interface, "address", nb.host_mac(t.name, h.namespace),
        "mtu", str(nb.HOST_MTU), "up")
    _ip(h.namespace, "addr", "add", f"{h.address}/{n.cidr.prefixlen}", "dev", h.interface)
    _ip(h.namespace, "route", "add", "default", "via", str(n.gateway))
    _run(chassis_ns, ["ip", "link", "set", tap, "up"])
    _run(chassis_ns, ["ethtool", "-K", tap, "tx", "off"])
    _tx_off(h.namespace, h.interface)
    _run(None, ["ovs-vsctl", f"--db={db}", "--timeout=10", "--", "--may-exist", "add-port",
                "br-int", tap, "--", "set", "Interface", tap,
                f"external_ids:iface-id={nb.host_port(t.name, h.namespace)}"])
    _mark_ready(hosts_dir(t.name), f"{h.namespace}.ready")


def plug_commands(t: Topology, n, h, chassis_ns: str | None, db: str) -> list[str]:
    tap = host_tap(h.namespace)
    n_ = f"-n {chassis_ns} " if chassis_ns else ""
    return [f"ip netns add {h.namespace}",
            f"ip {n_}link add {tap} mtu {nb.HOST_MTU} type veth peer name {h.interface} netns {h.namespace}",
            f"ip -n {h.namespace} link set {h.interface} address {nb.host_mac(t.name, h.namespace)} up",
            f"ip -n {h.namespace} addr add {h.address}/{n.cidr.prefixlen} dev {h.interface}",
            f"ip -n {h.namespace} route add default via {n.gateway}",
            f"ovs-vsctl --db={db} add-port br-int {tap} -- set Interface {tap} "
            f"external_ids:iface-id={nb.host_port(t.name, h.namespace)}"]


def host_problems(t: Topology, h, chassis_ns: str | None, db: str) -> list[str]:
    """What is wrong with a host's plugging (empty: its namespace, veth and br-int port are there)."""
    if not netns.exists(h.namespace) or netns.is_placeholder(h.namespace):
        return [f"namespace {h.namespace} does not exist"]
    if not os.path.exists(_ready(hosts_dir(t.name), f"{h.namespace}.ready")):
        return ["unfinished: natns stopped while plugging it"]
    tap = host_tap(h.namespace)
    try:
        out = _run(None, ["ovs-vsctl", f"--db={db}", "--timeout=5", "--if-exists", "get", "Interface", tap,
                          "ofport", "external_ids:iface-id"], timeout=10).split()
    except KernelError as exc:
        return [f"its chassis' OVS does not answer: {exc}"]
    want = nb.host_port(t.name, h.namespace)
    if len(out) < 2 or out[0] in ("-1", "[]") or out[1].strip('"') != want:
        return [f"not plugged: {tap} is not on br-int bound to {want}"]
    return []


def unplug_host(lab: str, host_ns: str, db: str | None) -> None:
    """Remove a host's namespace (its veth goes with it) and its port on br-int."""
    if netns.exists(host_ns):
        procs.stop_in_netns(host_ns)
        netns.remove(host_ns)
    if db is not None:
        try:
            _run(None, ["ovs-vsctl", f"--db={db}", "--timeout=5", "--if-exists", "del-port", "br-int",
                        host_tap(host_ns)], timeout=10)
        except KernelError:
            pass
    try:
        os.unlink(_ready(hosts_dir(lab), f"{host_ns}.ready"))
    except FileNotFoundError:
        pass


def port_installed(c: ChassisPlace, tap: str) -> bool:
    """Whether ovn-controller has installed the flows of `tap`'s logical port (ovn-notes pitfall 3)."""
    return installed(c.db, tap)


def installed(db: str, tap: str) -> bool:
    """`port_installed` against the OVS database `db`."""
    out = _run(None, ["ovs-vsctl", f"--db={db}", "--timeout=5", "--if-exists", "get", "Interface", tap,
                      "external_ids:ovn-installed"], timeout=10)
    return out.strip().strip('"') == "true"


def _answers(ns: str, addr: str) -> bool:
    """Whether `addr` answers one ping from namespace `ns` within 0.5 s."""
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.5", "-q", addr],
                          capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def nb_sync(remote: str, timeout: float = 20) -> None:
    """``ovn-nbctl --wait=hv sync``: return once every chassis has caught up with the NB."""
    _run(None, ["ovn-nbctl", f"--db={remote}", f"--timeout={int(timeout)}", "--wait=hv", "sync"],
         timeout=timeout + 5)


def active_gateway(lo: Layout, gateway_port: str) -> str | None:
    """The chassis the router's gateway port is active on: the SB Port_Binding of its
    chassisredirect port ``cr-<port>`` (what HA moves when a gateway chassis dies)."""
    out = _run(None, ["ovn-sbctl", f"--db={lo.sb_unix}", "--timeout=5", "--bare", "--columns=chassis", "find",
                      "Port_Binding", f"logical_port=cr-{gateway_port}"], timeout=10).strip()
    if not out:
        return None
    name = _run(None, ["ovn-sbctl", f"--db={lo.sb_unix}", "--timeout=5", "--bare", "--columns=name", "list",
                       "Chassis", out.split()[0]], timeout=10).strip()
    return name or None


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


def wait_bound(t: Topology, lo: Layout, timeout: float = 20, sync: bool = True) -> None:
    """Wait (bounded) until traffic can flow: every chassis has caught up with the NB
    (``--wait=hv``; with `sync` only: it writes NB_Global's nb_cfg, so an `up` that changed
    nothing skips it), every host's port is ``ovn-installed`` on its chassis, and each
    host's chassis has a forwarding tunnel to its router's gateway chassis."""
    if sync:
        nb_sync(lo.nb_unix, timeout)
    routers = {r.name: r for r in t.routers}
    for r in t.routers:  # each router's gateway port claimed by a chassis (its SNAT, floating IPs)
        if r.gateway_chassis:
            port = nb.gateway_port(t.name, r.name)
            _wait(f"router {r.name}'s gateway port to be active on a chassis",
                  lambda: active_gateway(lo, port) is not None, timeout)
            # ... and answering on the internet side: the SB claim can be a dead controller's
            # (a chassis made again keeps its name), and a neighbour entry of the internet
            # namespace that failed while the gateway was away must be learnt again.
            addr = str(r.external.address.ip)
            _wait(f"router {r.name}'s external address {addr} to answer from the internet namespace",
                  lambda: _answers(lo.inet_ns, addr), timeout)
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
            # ... and the host's first hop answering it: `ovn-installed` can come before the
            # flows of a datapath that just became local to the chassis (a first ARP was lost)
            _wait(f"host {h.namespace}'s gateway {n.gateway} to answer it",
                  lambda: _answers(h.namespace, str(n.gateway)), timeout)


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
