"""`natns doctor` on an OVN lab: the OVN failures on a host's path, each with its fix.

`gather(lab, host_ns, to)` reads what decides whether a host's packets get through OVN
(argument lists only, no shell):

* the host: its interface's MTU and TX checksum offload (``ethtool -k``), its veth
  (``tap…``) on its chassis' br-int with ``external_ids:iface-id`` and ``ovn-installed``,
  the SB Port_Binding of its logical port (bound to which chassis);
* every chassis: ovn-controller alive (its pidfile's PID), connected to the SB DB
  (``ovn-appctl connection-status``), ``ovn-remote`` against the SB DB's real listening
  address, ``ovn-bridge-mappings``, whether it may be a gateway (``ovn-cms-options``), the
  underlay MTU (br-phy), its Geneve tunnels and their BFD state;
* the router behind the host: its gateway port, Gateway_Chassis rows (NB), the chassis
  its chassisredirect port is bound to (the active gateway), the localnet's physical
  network.

`check(state)` (pure: the unit tests give it a fake state) returns the `Issue`s in the
order the packet meets them: the host's chassis (controller down, disconnected), the
host's port (unbound), offload, tunnel MTU, the router's gateway (none), BFD towards it,
the gateway chassis (controller down/disconnected, no bridge mapping). Each has a fix a
user can paste (`shlex.split` gives the argv back) and natns's tests run exactly as
printed. The CLI turns the issues into doctor's registered findings (natns/explain/
doctor/findings.py CODES) and adds a real probe.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ...errors import KernelError
from . import live, nb, sandbox

#: Bytes Geneve adds on an IPv4 underlay: outer IP 20 + UDP 8 + Geneve 8 + OVN's option 8
#: + the inner Ethernet header 14. A 1500-byte underlay carries inner packets up to 1442.
GENEVE_OVERHEAD = 58

def cmd(argv) -> str:
    return shlex.join([str(a) for a in argv])


@dataclass
class Issue:
    code: str
    where: str  # a namespace (host or chassis) or a chassis name
    summary: str
    evidence: dict = field(default_factory=dict)
    fix: list[str] = field(default_factory=list)
    note: str | None = None
    severity: str | None = None  # None: the code's usual one (natns/explain/doctor/findings.py CODES)


@dataclass
class ChassisState:
    name: str
    ns: str | None
    rundir: str
    controller_alive: bool = True
    vswitchd_alive: bool = True
    connected: bool | None = True  # None: not known (no controller)
    remote: str | None = None
    mappings: dict[str, str] = field(default_factory=dict)
    bridges: list[str] = field(default_factory=list)
    gateway_capable: bool = False
    underlay_mtu: int | None = None
    encap_ip: str | None = None
    bfd: dict[str, bool | None] = field(default_factory=dict)  # remote underlay IP -> forwarding (None: no BFD)

    @property
    def db(self) -> str:
        return f"unix:{self.rundir}/db.sock"


@dataclass
class HostState:
    ns: str
    lport: str
    iface: str | None = None
    mtu: int | None = None
    tx_offload: bool | None = None
    tap: str = ""
    tap_chassis: str | None = None  # the chassis whose br-int holds the tap
    tap_iface_id: str | None = None
    tap_installed: bool = False
    tap_mtu: int | None = None
    tap_tx_offload: bool | None = None
    bound_chassis: str | None = None  # SB Port_Binding.chassis


@dataclass
class State:
    lab: str
    nb: str
    sb_remote: str | None
    host: HostState
    chassis: dict[str, ChassisState] = field(default_factory=dict)
    via_gateway: bool = True  # the destination is reached through the router's gateway
    gw_port: str | None = None
    gateway_chassis: list[tuple[str, int]] = field(default_factory=list)  # (chassis, priority), NB
    active_gateway: str | None = None
    physnet: str | None = None
    underlay_links: list[tuple[str, str, bool | None]] = field(default_factory=list)  # (ns, dev, tx on)


# --------------------------------------------------------------------------- checks (pure)


def _chassis_issues(s: State, c: ChassisState, role: str) -> list[Issue]:
    where = c.ns or c.name
    if not c.controller_alive:
        argv = live.controller_argv(live.Chassis(c.name, c.ns, c.rundir))
        return [Issue("ovn-controller-down", where,
                      f"{role} chassis {c.name} has no ovn-controller running: its flows are no longer kept "
                      "in step with the SB DB, and new ports are not bound",
                      {"pidfile": f"{c.rundir}/ovn-controller.pid", "chassis": c.name}, [cmd(argv)],
                      note="the command starts it as natns's sandbox does (its run directory as OVS_RUNDIR, "
                           "so it finds br-int.mgmt)")]
    if c.connected is False:
        fix = []
        if s.sb_remote and c.remote != s.sb_remote:
            fix = [cmd(["ovs-vsctl", f"--db={c.db}", "set", "Open_vSwitch", ".",
                        f"external_ids:ovn-remote={s.sb_remote}"])]
        return [Issue("ovn-controller-disconnected", where,
                      f"{role} chassis {c.name}'s ovn-controller is not connected to the SB DB",
                      {"ovn-remote": c.remote or "(unset)", "SB DB listens on": s.sb_remote or "?",
                       "connection-status": "not connected"}, fix,
                      note=None if fix else "ovn-remote names the SB DB: is the underlay up?")]
    return []


def _tx_fix(ns: str, dev: str) -> str:
    return cmd(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])


def check(s: State) -> list[Issue]:
    """The OVN issues on the host's path, in the order the packet meets them."""
    out: list[Issue] = []
    h = s.host
    home = s.chassis.get(h.tap_chassis or h.bound_chassis or "")
    if home is not None:
        out += _chassis_issues(s, home, "the host's")
    # the host's port: bound by iface-id on the tap, installed by ovn-controller
    if h.tap_chassis is not None and (h.tap_iface_id != h.lport or h.bound_chassis != h.tap_chassis):
        c = s.chassis[h.tap_chassis]
        out.append(Issue("ovn-port-unbound", h.ns,
                         f"host {h.ns}'s logical port {h.lport} is not bound on chassis {c.name}"
                         + (" (its veth has no iface-id)" if not h.tap_iface_id else
                            f" (its veth's iface-id is {h.tap_iface_id})" if h.tap_iface_id != h.lport else ""),
                         {"veth on br-int": f"{c.ns}:{h.tap}", "iface-id": h.tap_iface_id or "(none)",
                          "SB Port_Binding chassis": h.bound_chassis or "(none)"},
                         [cmd(["ovs-vsctl", f"--db={c.db}", "set", "Interface", h.tap,
                               f"external_ids:iface-id={h.lport}"])]))
    elif h.tap_chassis is None:
        out.append(Issue("ovn-port-unbound", h.ns, f"host {h.ns}'s veth {h.tap} is on no chassis' br-int",
                         {"SB Port_Binding chassis": h.bound_chassis or "(none)"}, [],
                         note="plug it again: `natns up FILE` (or `natns attach FILE --chassis NAME`)"))
    # offload on the veths OVS sends through
    links = []
    if h.iface:
        links.append((h.ns, h.iface, h.tx_offload))
    if home is not None and home.ns:
        links.append((home.ns, h.tap, h.tap_tx_offload))
    links += s.underlay_links
    for ns, dev, on in links:
        if on:
            out.append(Issue("ovn-tx-offload", ns, f"TX checksum offload is on on {ns}:{dev}: OVS's userspace "
                             "conntrack sees bad TCP checksums and does no NAT (the SYN leaves with the private "
                             "source); ping still works",
                             {"ethtool -k": "tx-checksumming: on"}, [_tx_fix(ns, dev)]))
    # MTU over Geneve
    if home is not None and home.underlay_mtu and h.mtu:
        room = home.underlay_mtu - GENEVE_OVERHEAD
        if h.mtu > room:
            fix = [cmd(["ip", "-n", h.ns, "link", "set", h.iface or "eth0", "mtu", str(room)])]
            out.append(Issue("ovn-tunnel-mtu", h.ns,
                             f"host {h.ns}'s MTU {h.mtu} is above the {room} bytes Geneve leaves of chassis "
                             f"{home.name}'s {home.underlay_mtu}-byte underlay: larger packets are dropped "
                             "without an ICMP error (vswitchd logs 'Message too long')",
                             {f"{h.ns}:{h.iface} mtu": h.mtu, f"{home.name} underlay mtu": home.underlay_mtu,
                              "Geneve overhead": GENEVE_OVERHEAD}, fix,
                             note="or raise the underlay's MTU by "
                                  f"{h.mtu - room} bytes (mtu_request on br-phy and its veths)"))
    if not s.via_gateway:
        return out
    # the router's gateway
    if not s.active_gateway:
        caps = sorted((c for c in s.chassis.values() if c.gateway_capable), key=lambda c: c.name)
        fix = [cmd(["ovn-nbctl", f"--db={s.nb}", "lrp-set-gateway-chassis", s.gw_port or "?", c.name,
                    str(len(caps) - i)]) for i, c in enumerate(caps)] if s.gw_port else []
        out.append(Issue("ovn-no-gateway-chassis", s.gw_port or h.ns,
                         f"the router's gateway port {s.gw_port or '?'} is resident on no chassis",
                         {"Gateway_Chassis (NB)": [f"{c} priority {p}" for c, p in s.gateway_chassis] or "(none)",
                          "gateway-capable chassis": [c.name for c in caps] or "(none)"}, fix,
                         note="`natns up FILE` writes the topology's gateway_chassis back"))
        return out
    # BFD from the host's chassis to the gateway chassis (HA: BFD chooses the active one)
    gws = [c for c, _ in sorted(s.gateway_chassis, key=lambda x: -x[1])]
    if home is not None and home.name not in gws and len(gws) > 1:
        down = []
        for g in gws:
            gc = s.chassis.get(g)
            if gc is not None and gc.encap_ip and home.bfd.get(gc.encap_ip) is False:
                down.append(g)
        if down:
            all_down = set(down) == set(gws)
            out.append(Issue("ovn-bfd-down", home.ns or home.name,
                             f"BFD from chassis {home.name} to gateway chassis {', '.join(down)} is down"
                             + (": no gateway is reachable" if all_down else
                                "; the gateway moved to the next chassis by priority"),
                             {"bfd forwarding": {g: home.bfd.get(s.chassis[g].encap_ip) for g in gws if g in s.chassis}},
                             [cmd(live.vswitchd_argv(live.Chassis(g, s.chassis[g].ns, s.chassis[g].rundir)))
                              for g in down if not s.chassis[g].vswitchd_alive],
                             note="BFD runs over the Geneve tunnels: " + (
                                 "the fix starts the dead ovs-vswitchd as the sandbox does" if any(
                                     not s.chassis[g].vswitchd_alive for g in down) else
                                 "the gateway chassis' underlay link is down (see "
                                 + cmd(["ovs-appctl", "-t", f"{home.rundir}/ovs-vswitchd.ctl", "bfd/show"]) + ")"),
                             severity="error" if all_down else "warning"))
    gw = s.chassis.get(s.active_gateway)
    if gw is not None and gw is not home:
        out += _chassis_issues(s, gw, "the gateway")
    if gw is not None and s.physnet and s.physnet not in gw.mappings:
        bridge = "br-ex" if "br-ex" in gw.bridges else next(
            (b for b in gw.bridges if b not in ("br-int", "br-phy")), "br-ex")
        value = ",".join([*(f"{k}:{v}" for k, v in gw.mappings.items()), f"{s.physnet}:{bridge}"])
        out.append(Issue("ovn-no-bridge-mapping", gw.ns or gw.name,
                         f"the active gateway chassis {gw.name} has no ovn-bridge-mappings entry for "
                         f"physical network {s.physnet!r}: the external switch's localnet port goes nowhere",
                         {"ovn-bridge-mappings": ",".join(f"{k}:{v}" for k, v in gw.mappings.items()) or "(none)",
                          "bridges": gw.bridges},
                         [cmd(["ovs-vsctl", f"--db={gw.db}", "set", "Open_vSwitch", ".",
                               f"external_ids:ovn-bridge-mappings={value}"])]))
    return out


# --------------------------------------------------------------------------- reading the live lab


def _ethtool_tx(ns: str, dev: str) -> bool | None:
    p = live.capture_output(["nsenter", f"--net=/run/netns/{ns}", "--", "ethtool", "-k", dev])
    if p.returncode != 0:
        return None
    for ln in p.stdout.splitlines():
        if ln.startswith("tx-checksumming:"):
            return ln.split(":", 1)[1].split()[0] == "on"
    return None


def _links(ns: str) -> list:
    from ...kernel import rtnl

    try:
        with rtnl.open_in(ns) as h:
            return [ln for ln in h.links() if ln.name != "lo"]
    except (OSError, KernelError):
        return []


def _chassis_state(lab: live.Lab, ch: live.Chassis, sb_chassis: dict) -> ChassisState:
    c = ChassisState(ch.name, ch.ns, ch.rundir)
    c.controller_alive = ch.pid("ovn-controller") is not None
    c.vswitchd_alive = ch.pid("ovs-vswitchd") is not None
    if c.controller_alive:
        ctl = ch.controller_ctl()
        p = live.capture_output(["ovn-appctl", "-t", ctl, "connection-status"]) if ctl else None
        c.connected = None if p is None or p.returncode != 0 else p.stdout.strip() == "connected"
    else:
        c.connected = None
    try:
        (ovs,) = lab.ovs_rows(ch, "Open_vSwitch")
        ids = ovs["external_ids"]
        c.remote = ids.get("ovn-remote")
        c.encap_ip = ids.get("ovn-encap-ip")
        c.gateway_capable = "enable-chassis-as-gw" in ids.get("ovn-cms-options", "")
        for part in filter(None, ids.get("ovn-bridge-mappings", "").split(",")):
            k, _, v = part.partition(":")
            c.mappings[k] = v
        c.bridges = sorted(b["name"] for b in lab.ovs_rows(ch, "Bridge"))
        for i in lab.ovs_rows(ch, "Interface"):
            if i["name"] == "br-phy":
                c.underlay_mtu = live.one(i["mtu"])
            if i["type"] == "geneve":
                st = i["bfd_status"] or {}
                c.bfd[i["options"].get("remote_ip", "")] = (st.get("forwarding") == "true") if st else None
    except (KernelError, ValueError):
        pass
    return c


def gather(lab: live.Lab, host_ns: str, to: str, via_gateway: bool = True) -> State:
    """The OVN state that decides whether `host_ns`'s packets to `to` get through."""
    sbc = {c["_uuid"]: c for c in lab.sb_rows("Chassis")}
    h = HostState(host_ns, nb.host_port(lab.name, host_ns), tap=sandbox.host_tap(host_ns))
    links = _links(host_ns)
    if links:
        h.iface, h.mtu = links[0].name, links[0].mtu
        h.tx_offload = _ethtool_tx(host_ns, h.iface)
    chassis = {}
    for ch in lab.chassis.values():
        cs = _chassis_state(lab, ch, sbc)
        chassis[ch.name] = cs
        try:
            rows = lab.ovs_rows(ch, "Interface", f"name={h.tap}")
        except KernelError:
            rows = []
        if rows:
            h.tap_chassis = ch.name
            ids = rows[0]["external_ids"]
            h.tap_iface_id = ids.get("iface-id")
            h.tap_installed = ids.get("ovn-installed") == "true"
            h.tap_mtu = live.one(rows[0]["mtu"])
            if ch.ns:
                h.tap_tx_offload = _ethtool_tx(ch.ns, h.tap)
    ports = {pb["logical_port"]: pb for pb in lab.sb_rows("Port_Binding")}
    pb = ports.get(h.lport)
    if pb is not None:
        u = live.one(pb["chassis"])
        h.bound_chassis = sbc[u]["name"] if u in sbc else None
    s = State(lab.name, lab.nb, lab.sb_remote(), h, chassis, via_gateway=via_gateway)
    # the router behind the host's switch, its gateway port and chassis
    if pb is not None:
        router_dp = None
        for p in ports.values():
            if p["datapath"] == pb["datapath"] and p["type"] == "patch":
                peer = ports.get(p["options"].get("peer", ""))
                if peer is not None:
                    router_dp = peer["datapath"]
        localnet_dps = {p["datapath"]: p for p in ports.values() if p["type"] == "localnet"}
        for p in ports.values():
            if p["datapath"] != router_dp:
                continue
            if p["type"] == "chassisredirect":
                u = live.one(p["chassis"])
                s.active_gateway = sbc[u]["name"] if u in sbc else None
                s.gw_port = p["options"].get("distributed-port") or p["logical_port"].removeprefix("cr-")
            elif p["type"] == "patch":
                peer = ports.get(p["options"].get("peer", ""))
                if peer is not None and peer["datapath"] in localnet_dps:
                    s.gw_port = s.gw_port or p["logical_port"]
                    s.physnet = localnet_dps[peer["datapath"]]["options"].get("network_name")
    if s.gw_port:
        try:
            lrps = live.decode_table(lab.runner(None, ["ovn-nbctl", f"--db={lab.nb}", "--format=json", "find",
                                                      "Logical_Router_Port", f"name={s.gw_port}"]))
            gcs = {g["_uuid"]: g for g in live.decode_table(lab.runner(
                None, ["ovn-nbctl", f"--db={lab.nb}", "--format=json", "list", "Gateway_Chassis"]))}
            if lrps:
                ids = lrps[0]["gateway_chassis"]
                ids = ids if isinstance(ids, list) else [ids]
                best: dict[str, int] = {}
                for i in ids:
                    if i in gcs:
                        g = gcs[i]
                        best[g["chassis_name"]] = max(best.get(g["chassis_name"], -1), g["priority"])
                s.gateway_chassis = sorted(best.items(), key=lambda x: -x[1])
        except (KernelError, ValueError):
            pass
    # the underlay veths of the host's chassis and of the gateway (phy0; ex0 on the gateway)
    for name in {h.tap_chassis, s.active_gateway} - {None}:
        c = chassis[name]
        if c.ns:
            for dev in ("phy0", "ex0"):
                if any(ln.name == dev for ln in _links(c.ns)):
                    s.underlay_links.append((c.ns, dev, _ethtool_tx(c.ns, dev)))
    return s


@dataclass
class Report:
    lab: str
    from_ns: str
    to: str
    proto: str
    port: int | None
    issues: list[Issue]
    trace: object | None = None  # trace.Result
    probe: object | None = None  # kernel.probe.ProbeResult


def diagnose(lab: live.Lab, from_ns: str, to: str, proto: str = "icmp", port: int | None = None,
             probe: bool = True) -> Report:
    """The OVN issues on `from_ns`'s path to `to`, the logical path, and a real probe."""
    from . import trace as otr

    tr = None
    try:
        tr = otr.trace(lab, from_ns, to, proto, port, probe=False)
    except (KernelError, KeyError, ValueError):
        pass
    via_gw = True
    if tr is not None and tr.forward.delivered and tr.forward.out_type != "localnet":
        via_gw = any(h.kind == "nat" for h in tr.forward.hops)
    s = gather(lab, from_ns, to, via_gateway=via_gw)
    rep = Report(lab.name, from_ns, to, proto, port, check(s), tr)
    if probe:
        rep.probe = otr.send_probe(lab, tr, from_ns, to, proto, port, timeout=2.0)
    return rep
