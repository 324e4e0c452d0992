"""`natns trace` on an OVN lab: the logical path of a packet, from `ovn-trace`, with chassis.

`ovn-trace --detailed` (run against the sandbox's SB socket) prints each logical datapath
pipeline a packet passes (``ingress(dp=..., inport=...)``, ``egress(...)``), the stages
whose flows it matches (``13. lr_in_ip_routing (northd.c:...): MATCH, priority P``) with
their actions, and the conntrack NAT actions as sections of their own
(``ct_snatin_czone(ip4.src=198.51.100.116)``). natns parses that (`parse`), and adds
what ovn-trace does not know:

* **the chassis each hop runs on**: a pipeline starts on the chassis its inport is bound
  to (a VIF's Port_Binding chassis; the localnet port: the router's active gateway); the
  egress pipeline towards a VIF bound elsewhere, or towards a gateway port redirected to
  its ``chassisredirect`` port (``cr-...``), runs on that other chassis, and between the
  two natns puts the **tunnel hop** (Geneve, underlay addresses from SB Encap, VNI = the
  datapath's tunnel key);
* **the rewrites** as before -> after (eth addresses, ct_snat/ct_dnat and their
  ``_in_czone`` forms);
* **the reply**: a second ovn-trace from where the packet left (the localnet port or the
  far host's port), addresses swapped. ovn-trace has no conntrack state, so where the
  reply meets an un-SNAT/un-DNAT stage it says "assuming no un-snat entry"; natns applies
  the reverse of the forward translation there (what conntrack does with the entry the
  forward packet made) and restarts that datapath's pipeline with the rewritten packet.

`trace(lab, from_ns, to, proto, port)` runs it; `render` prints it. The parsing is pure
(`parse`, `walk`) and the unit tests feed it recorded ovn-trace output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ...errors import UserError
from . import live, nb

_HEADER = re.compile(r'^(ingress|egress)\(dp="([^"]+)", inport="([^"]+)"(?:, outport="([^"]+)")?\)$')
_MCAST = re.compile(r'^multicast\(dp="([^"]+)", mcgroup="([^"]+)"\)$')
_CT = re.compile(r"^(ct_\w+?)(?:\((.*?)\))?\s*(/\*.*)?$")
_STAGE = re.compile(r"^(\d+)\. (\w+) \(([^)]*)\): (.*), priority (\d+), uuid (\w+)$")
_OUTPUT = re.compile(r'/\* output to "([^"]+)", type "([^"]*)" \*/')
_REDIRECT = re.compile(r'/\* Replacing type "chassisredirect" outport "([^"]+)" with distributed port "([^"]+)"')
_MACBIND = re.compile(r"/\* MAC binding to ([0-9a-f:]+)\. \*/")
_SET = re.compile(r"^(eth\.src|eth\.dst|ip4\.src|ip4\.dst) = ([^;]+);$")


@dataclass
class Stage:
    table: int
    name: str
    match: str
    priority: int
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"table": self.table, "stage": self.name, "match": self.match, "priority": self.priority,
                "actions": self.actions}


@dataclass
class Section:
    """One section of ovn-trace --detailed output: a pipeline, a ct action, a multicast group."""

    kind: str  # ingress | egress | ct | multicast
    datapath: str = ""
    inport: str = ""
    outport: str = ""
    ct: str = ""  # ct_snat_in_czone, ...
    ct_args: str = ""  # ip4.src=198.51.100.116
    ct_note: str = ""  # "assuming no un-snat entry, so no change"
    stages: list[Stage] = field(default_factory=list)


def parse(text: str) -> list[Section]:
    """The sections of ``ovn-trace --detailed`` output, in order."""
    out: list[Section] = []
    cur: Section | None = None
    lines = [ln.rstrip() for ln in text.splitlines()]
    for i, raw in enumerate(lines):
        ln = raw.strip()
        if not ln or ln.startswith("#") or set(ln) == {"-"}:
            continue
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        underlined = bool(nxt) and set(nxt) == {"-"}
        m = _HEADER.match(ln)
        if m and underlined:
            cur = Section(m.group(1), m.group(2), m.group(3), m.group(4) or "")
            out.append(cur)
            continue
        m = _MCAST.match(ln)
        if m and underlined:
            cur = Section("multicast", m.group(1), outport=m.group(2))
            out.append(cur)
            continue
        if underlined and ln in ("arp", "nd_ns"):  # its actions follow, as a stage of their own
            cur = Section(ln, stages=[Stage(0, ln, "", 0)])
            out.append(cur)
            continue
        if underlined and ln.startswith("ct_"):
            m = _CT.match(ln)
            note = ""
            if m and m.group(3):
                notes = re.findall(r"/\*\s*(.*?)\s*\*/", m.group(3))
                note = "; ".join(n for n in notes if not n.startswith("default"))
            cur = Section("ct", ct=m.group(1) if m else ln, ct_args=(m.group(2) or "") if m else "", ct_note=note)
            out.append(cur)
            continue
        m = _STAGE.match(ln)
        if m and cur is not None:
            cur.stages.append(Stage(int(m.group(1)), m.group(2), m.group(4), int(m.group(5))))
            continue
        if cur is not None and cur.stages:
            cur.stages[-1].actions.append(ln)
    return out


# --------------------------------------------------------------------------- the packet


@dataclass(frozen=True)
class Flow:
    """The packet ovn-trace is given (a microflow)."""

    inport: str
    eth_src: str
    eth_dst: str
    src: str
    dst: str
    proto: str = "icmp"  # icmp | tcp | udp
    sport: int | None = None
    dport: int | None = None
    icmp_type: int = 8
    tcp_flags: int = 2  # SYN; the reply: SYN+ACK (0x12)
    ttl: int = 64

    def expr(self) -> str:
        parts = [f'inport == "{self.inport}"', f"eth.src == {self.eth_src}", f"eth.dst == {self.eth_dst}",
                 f"ip4.src == {self.src}", f"ip4.dst == {self.dst}", f"ip.ttl == {self.ttl}"]
        if self.proto == "icmp":
            parts += [f"icmp4.type == {self.icmp_type}", "icmp4.code == 0"]
        else:
            parts += [self.proto, f"{self.proto}.src == {self.sport}", f"{self.proto}.dst == {self.dport}"]
            if self.proto == "tcp":
                parts.append(f"tcp.flags == {self.tcp_flags:#x}")
        return " && ".join(parts)

    def what(self) -> str:
        if self.proto == "icmp":
            return "echo " + ("request" if self.icmp_type == 8 else "reply")
        return f"{self.proto} {self.sport} > {self.dport}"

    def reply(self, inport: str) -> Flow:
        return Flow(inport, self.eth_dst, self.eth_src, self.dst, self.src, self.proto, self.dport, self.sport,
                    0 if self.proto == "icmp" else 8, 0x12 if self.proto == "tcp" else 2)


@dataclass
class Hop:
    """One step of the logical path, with the chassis it runs on."""

    kind: str  # pipeline | nat | tunnel | output | drop | note
    chassis: str | None = None
    datapath: str = ""
    pipeline: str = ""  # ingress | egress
    inport: str = ""
    outport: str = ""
    stages: list[Stage] = field(default_factory=list)
    text: str = ""  # nat: "SNAT source 192.0.2.2 -> 198.51.100.116"; tunnel: "ch3 -> ch1 ..."
    before: str = ""
    after: str = ""
    field: str = ""  # nat: ip4.src | ip4.dst | eth.src | eth.dst
    action: str = ""  # nat: the ct action (ct_snat_in_czone, ...)
    remote: str | None = None  # tunnel: the chassis it goes to
    vni: int | None = None

    def to_json(self) -> dict:
        d = {"kind": self.kind, "chassis": self.chassis}
        if self.kind == "pipeline":
            d.update(datapath=self.datapath, pipeline=self.pipeline, inport=self.inport, outport=self.outport,
                     stages=[s.to_json() for s in self.stages])
        elif self.kind == "nat":
            d.update(field=self.field, before=self.before, after=self.after, action=self.action,
                     datapath=self.datapath)
        elif self.kind == "tunnel":
            d.update(to=self.remote, vni=self.vni, datapath=self.datapath)
        elif self.kind in ("output", "drop"):
            d.update(datapath=self.datapath, port=self.outport)
        d["text"] = self.text
        return d


@dataclass
class Where:
    """What the walk needs to know about the lab: port bindings, gateways, tunnels."""

    port_chassis: dict[str, str | None]  # logical port -> chassis it is bound to
    cr_chassis: dict[str, str | None]  # chassisredirect port -> chassis
    encap_ip: dict[str, str]  # chassis -> underlay address
    tunnel_key: dict[str, int]  # datapath name -> tunnel key (the Geneve VNI)
    localnet_chassis: str | None = None  # where the localnet (internet) port's traffic enters/leaves


@dataclass
class Leg:
    """One direction: the hops, and how it ended."""

    flow: Flow
    hops: list[Hop] = field(default_factory=list)
    end: str = ""  # output | drop | unknown
    out_port: str = ""
    out_type: str = ""
    out_datapath: str = ""
    final: Flow | None = None
    nat: list[tuple[str, str, str]] = field(default_factory=list)  # (field, before, after)
    mac_binding: str | None = None
    no_mac_binding: bool = False

    @property
    def delivered(self) -> bool:
        return self.end == "output"

    def to_json(self) -> dict:
        return {"flow": self.flow.expr(), "end": self.end, "port": self.out_port, "port_type": self.out_type,
                "hops": [h.to_json() for h in self.hops]}


def _chassis_of_port(w: Where, port: str, current: str | None) -> str | None:
    if port in w.port_chassis and w.port_chassis[port]:
        return w.port_chassis[port]
    return current


def walk(sections: list[Section], flow: Flow, w: Where, start: str | None, leg: Leg | None = None) -> Leg:
    """The hops of one ovn-trace run from chassis `start`, with chassis, NAT and tunnels added."""
    leg = leg or Leg(flow)
    cur = start
    f = {"eth.src": flow.eth_src, "eth.dst": flow.eth_dst, "ip4.src": flow.src, "ip4.dst": flow.dst}
    redirect_to: str | None = None
    last_pipe: Hop | None = None
    for s in sections:
        if s.kind in ("ingress", "egress"):
            where = cur
            if s.kind == "egress":
                if redirect_to is not None:
                    where = w.cr_chassis.get(redirect_to) or cur
                elif s.outport in w.port_chassis:
                    where = _chassis_of_port(w, s.outport, cur)
            redirect_to = None
            if where != cur and where is not None:
                ip_a, ip_b = w.encap_ip.get(cur or "", "?"), w.encap_ip.get(where, "?")
                vni = w.tunnel_key.get(s.datapath)
                leg.hops.append(Hop("tunnel", cur, datapath=s.datapath, remote=where, vni=vni,
                                    text=f"Geneve tunnel {cur} ({ip_a}) -> {where} ({ip_b}), UDP 6081, "
                                         f"VNI {vni} (datapath {s.datapath}), outport {s.outport}"))
                cur = where
            last_pipe = Hop("pipeline", cur, s.datapath, s.kind, s.inport, s.outport, list(s.stages))
            leg.hops.append(last_pipe)
        elif s.kind == "multicast":
            leg.hops.append(Hop("note", cur, datapath=s.datapath, text=f"flooded to multicast group {s.outport}"))
            last_pipe = None
            continue
        elif s.kind in ("arp", "nd_ns"):
            leg.no_mac_binding = True
            leg.hops.append(Hop("note", cur, text="no MAC binding for the next hop yet: the router sends an ARP "
                                                  "request instead (ovn-trace follows it; the packet waits)"))
        elif s.kind == "ct":
            m = re.match(r"(ip4\.(?:src|dst))=(.+)", s.ct_args)
            if m:
                fld, after = m.group(1), m.group(2)
                before = f[fld]
                f[fld] = after
                leg.nat.append((fld, before, after))
                leg.hops.append(Hop("nat", cur, datapath=last_pipe.datapath if last_pipe else "", field=fld,
                                    before=before, after=after, action=s.ct,
                                    text=f"{s.ct}: {'source' if fld.endswith('src') else 'destination'} "
                                         f"{before} -> {after}"))
            elif s.ct_note:
                leg.hops.append(Hop("note", cur, action=s.ct, text=f"{s.ct}: ovn-trace: {s.ct_note}"))
            if s.stages and last_pipe is not None:  # the pipeline goes on after the ct action
                last_pipe = Hop("pipeline", cur, last_pipe.datapath, last_pipe.pipeline, last_pipe.inport,
                                last_pipe.outport, list(s.stages), text="continued")
                leg.hops.append(last_pipe)
        for st in s.stages:
            for a in st.actions:
                m = _SET.match(a)
                if m and m.group(1) in f:
                    f[m.group(1)] = m.group(2).strip()
                m = _MACBIND.search(a)
                if m:
                    f["eth.dst"] = m.group(1)
                    leg.mac_binding = m.group(1)
                m = _REDIRECT.search(a)
                if m:
                    redirect_to = m.group(1)
                    gw = w.cr_chassis.get(redirect_to)
                    leg.hops.append(Hop("note", cur, datapath=s.datapath,
                                        text=f"redirected to {redirect_to}: the gateway port is resident on "
                                             f"chassis {gw or 'none (bound to no chassis)'}"))
                m = _OUTPUT.search(a)
                if m and m.group(2) not in ("patch",):
                    # (in a ct or clone section the datapath is the pipeline's that ran it)
                    dp = s.datapath or (last_pipe.datapath if last_pipe else "")
                    leg.end, leg.out_port, leg.out_type, leg.out_datapath = "output", m.group(1), m.group(2), dp
                if a == "drop;":
                    leg.end = "drop"
                    leg.out_datapath = s.datapath or (last_pipe.datapath if last_pipe else "")
    if leg.end == "output":
        kind = leg.out_type or "VIF"
        leg.hops.append(Hop("output", cur, datapath=leg.out_datapath, outport=leg.out_port,
                            text=f"out of port {leg.out_port} ({kind}) on chassis {cur}"))
    elif leg.end == "drop":
        st = next((st for h in reversed(leg.hops) if h.kind == "pipeline" for st in reversed(h.stages)), None)
        leg.hops.append(Hop("drop", cur, datapath=leg.out_datapath,
                            text=f"dropped in {leg.out_datapath}" + (f" at {st.name} ({st.match})" if st else "")))
    elif not leg.end:
        leg.end = "unknown"
    leg.final = replace(leg.flow, eth_src=f["eth.src"], eth_dst=f["eth.dst"], src=f["ip4.src"], dst=f["ip4.dst"])
    return leg


def needs_reverse(sections: list[Section]) -> int | None:
    """Index of the first ct section where ovn-trace assumed no un-NAT entry."""
    for i, s in enumerate(sections):
        if s.kind == "ct" and "assuming no un-" in s.ct_note:
            return i
    return None


# --------------------------------------------------------------------------- on a live lab


@dataclass
class Result:
    lab: str
    from_ns: str
    to: str
    proto: str
    port: int | None
    forward: Leg
    reply: Leg | None
    probe: object | None = None  # kernel.probe.ProbeResult
    commands: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the logical path alone does not show

    @property
    def logical_ok(self) -> bool:
        return (self.forward.delivered and self.reply is not None and self.reply.delivered
                and not self.problems)

    @property
    def ok(self) -> bool:
        return self.logical_ok and (self.probe is None or getattr(self.probe, "ok", True))

    def to_json(self) -> dict:
        return {"engine": "ovn", "lab": self.lab, "from": self.from_ns, "to": self.to, "protocol": self.proto,
                "port": self.port, "ok": self.ok, "problems": self.problems, "forward": self.forward.to_json(),
                "reply": self.reply.to_json() if self.reply else None,
                "probe": self.probe.to_json() if self.probe is not None and hasattr(self.probe, "to_json") else None,
                "ovn_trace": [" ".join(c[:3]) + " ..." for c in self.commands]}


def _where(lab: live.Lab) -> Where:
    chassis = {c["_uuid"]: c for c in lab.sb_rows("Chassis")}
    encaps = {e["_uuid"]: e["ip"] for e in lab.sb_rows("Encap")}
    encap_ip = {}
    for c in chassis.values():
        e = c["encaps"] if isinstance(c["encaps"], list) else [c["encaps"]]
        if e and e[0] in encaps:
            encap_ip[c["name"]] = encaps[e[0]]
    pc, cr = {}, {}
    for pb in lab.sb_rows("Port_Binding"):
        ch = live.one(pb["chassis"])
        name = chassis[ch]["name"] if ch in chassis else None
        if pb["type"] == "chassisredirect":
            cr[pb["logical_port"]] = name
        elif pb["type"] == "":
            pc[pb["logical_port"]] = name
    keys = {dp["external_ids"].get("name", ""): dp["tunnel_key"] for dp in lab.sb_rows("Datapath_Binding")}
    return Where(pc, cr, encap_ip, keys, localnet_chassis=next((c for c in cr.values() if c), None))


#: ct_state for each ct_next of a reply's trace: ovn-trace has no conntrack and defaults to
#: trk,est, which the port group's default-deny ACL blocks (its allow-related rule passes
#: only replies, `ct.rpl`); one per ct_next the reply may meet (switch, router, switch, ...).
REPLY_CT = ["--ct=trk,est,rpl"] * 6


def _ovn_trace(lab: live.Lab, datapath: str, flow: Flow, cmds: list, ct: list[str] | None = None) -> list[Section]:
    argv = ["ovn-trace", f"--db={lab.sb}", "--detailed", *(ct or []), datapath, flow.expr()]
    cmds.append(argv)
    return parse(lab.runner(None, argv))


def _port_rows(lab: live.Lab) -> dict[str, dict]:
    return {pb["logical_port"]: pb for pb in lab.sb_rows("Port_Binding")}


def _dp_names(lab: live.Lab) -> dict[str, str]:
    return {dp["_uuid"]: dp["external_ids"].get("name", "") for dp in lab.sb_rows("Datapath_Binding")}


def _mac_ip(pb: dict) -> tuple[str, str, str]:
    """(MAC, address, prefix length) of a Port_Binding's first `mac` entry."""
    macs = pb["mac"] if isinstance(pb["mac"], list) else [pb["mac"]]
    parts = macs[0].split() if macs else []
    mac = parts[0] if parts else ""
    ip, _, plen = (parts[1] if len(parts) > 1 else "").partition("/")
    return mac, ip, plen


def start_flow_internet(lab: live.Lab, from_ns: str, to: str, proto: str, port: int | None,
                        ports: dict[str, dict], dps: dict[str, str]) -> tuple[str, Flow]:
    """(datapath, flow) of a packet from the internet namespace to `to` (a router's external
    address or floating IP): it enters at the external switch's localnet port, sent to the MAC
    of the router port whose network holds `to` (centralized NAT: the gateway port's)."""
    import ipaddress
    import json

    dst = ipaddress.ip_address(to)
    gw = next((pb for pb in ports.values() if pb["type"] == "patch" and _mac_ip(pb)[2]
               and dst in ipaddress.ip_network(f"{_mac_ip(pb)[1]}/{_mac_ip(pb)[2]}", strict=False)), None)
    localnet = next((pb for pb in ports.values() if pb["type"] == "localnet"), None)
    if gw is None or localnet is None:
        raise UserError(f"{to} is on no router's external network of OVN lab {lab.name}")
    net = ipaddress.ip_network(f"{_mac_ip(gw)[1]}/{_mac_ip(gw)[2]}", strict=False)
    mac = src = ""
    for link in json.loads(lab.runner(from_ns, ["ip", "-j", "addr", "show"])):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and ipaddress.ip_address(a["local"]) in net:
                mac, src = link.get("address", ""), a["local"]
    if not src:
        raise UserError(f"{from_ns} has no address on {net}, the external network of {to}")
    sport = 33000 if proto in ("tcp", "udp") else None
    return dps[localnet["datapath"]], Flow(localnet["logical_port"], mac, _mac_ip(gw)[0], src, to, proto, sport, port)


def start_flow(lab: live.Lab, from_ns: str, to: str, proto: str, port: int | None,
               ports: dict[str, dict], dps: dict[str, str]) -> tuple[str, Flow]:
    """(datapath, flow) of a packet from host namespace `from_ns` to `to`."""
    import ipaddress

    if lab.role(from_ns) == "internet":
        return start_flow_internet(lab, from_ns, to, proto, port, ports, dps)
    lport = nb.host_port(lab.name, from_ns)
    pb = ports.get(lport)
    if pb is None:
        raise UserError(f"{from_ns} is not a host of OVN lab {lab.name} (no logical port {lport} in the SB DB)")
    mac, ip, _ = _mac_ip(pb)
    dp = pb["datapath"]
    eth_dst = ""
    for other in ports.values():  # the router port of the host's switch: its gateway
        if other["datapath"] == dp and other["type"] == "patch":
            peer = ports.get(other["options"].get("peer", ""))
            if peer is not None:
                pmac, pip, plen = _mac_ip(peer)
                eth_dst = pmac
                if plen and ipaddress.ip_address(to) in ipaddress.ip_network(f"{pip}/{plen}", strict=False):
                    for o2 in ports.values():  # on-link: the other host's MAC
                        if o2["datapath"] == dp and o2["type"] == "" and _mac_ip(o2)[1] == to:
                            eth_dst = _mac_ip(o2)[0]
    sport = 33000 if proto in ("tcp", "udp") else None
    return dps[dp], Flow(lport, mac, eth_dst, ip, to, proto, sport, port)


def _leg(lab: live.Lab, dp: str, flow: Flow, w: Where, start: str | None, cmds: list,
         reverse: dict[tuple[str, str], str], ct: list[str] | None = None) -> Leg:
    """One direction; where ovn-trace assumes no un-NAT entry, apply `reverse` and restart."""
    leg = Leg(flow)
    for _ in range(3):
        secs = _ovn_trace(lab, dp, flow, cmds, ct)
        cut = needs_reverse(secs)
        key = None
        if cut is not None:
            fld = "ip4.dst" if "snat" in secs[cut].ct else "ip4.src"
            # the datapath the ct stage is in: restart its ingress pipeline with the packet as it
            # entered that pipeline, rewritten
            last = next((s for s in reversed(secs[:cut]) if s.kind in ("ingress", "egress")), None)
            k = next((i for i in range(cut - 1, -1, -1) if secs[i].kind == "ingress"
                      and last is not None and secs[i].datapath == last.datapath), None)
            pipe = secs[k] if k is not None else None
            tmp = walk(secs[:cut], flow, w, start)
            val = (tmp.final.dst if fld == "ip4.dst" else tmp.final.src) if tmp.final else None
            key = (fld, val)
        if cut is None or key not in reverse or pipe is None:
            walk(secs, flow, w, start, leg)
            return leg
        part = walk(secs[:cut], flow, w, start)
        leg.hops += [h for h in part.hops]
        before, after = key[1], reverse[key]
        cur = part.hops[-1].chassis if part.hops else start
        leg.hops.append(Hop("nat", cur, datapath=pipe.datapath, field=key[0], before=before, after=after,
                            action=secs[cut].ct,
                            text=f"{secs[cut].ct}: {'destination' if key[0] == 'ip4.dst' else 'source'} "
                                 f"{before} -> {after} (the reverse of the forward entry: conntrack's un-NAT; "
                                 f"natns restarts {pipe.datapath}'s ingress pipeline with it)"))
        leg.nat.append((key[0], before, after))
        fin = walk(secs[:k], flow, w, start).final if k else flow
        flow = replace(fin, inport=pipe.inport, **({"dst": after} if key[0] == "ip4.dst" else {"src": after}))
        dp, start = pipe.datapath, cur
        reverse = {k: v for k, v in reverse.items() if k != key}
    walk([], flow, w, start, leg)
    return leg


def trace(lab: live.Lab, from_ns: str, to: str, proto: str = "icmp", port: int | None = None,
          probe: bool = True, timeout: float = 1.0) -> Result:
    """The logical path from host `from_ns` to `to` and the reply, on OVN lab `lab`."""
    ports, dps = _port_rows(lab), _dp_names(lab)
    w = _where(lab)
    cmds: list[list[str]] = []
    dp, flow = start_flow(lab, from_ns, to, proto, port, ports, dps)
    inet = lab.role(from_ns) == "internet"
    start = w.localnet_chassis if inet else w.port_chassis.get(flow.inport)
    def both() -> tuple[Leg, Leg | None]:
        fwd = _leg(lab, dp, flow, w, start, cmds, {})
        if not fwd.delivered or fwd.final is None or fwd.no_mac_binding:
            return fwd, None
        rflow = fwd.final.reply(fwd.out_port)
        if fwd.out_type == "localnet":
            rstart = fwd.hops[-1].chassis
        else:
            rstart = w.port_chassis.get(fwd.out_port)
            mac = _mac_ip(ports[fwd.out_port])[0] if fwd.out_port in ports else rflow.eth_src
            rflow = replace(rflow, eth_src=mac)
        reverse = {}
        for fld, before, after in fwd.nat:  # forward SNAT src b->a: the reply's dst a->b; DNAT: its src
            reverse[("ip4.dst" if fld == "ip4.src" else "ip4.src", after)] = before
        return fwd, _leg(lab, fwd.out_datapath, rflow, w, rstart, cmds, reverse, REPLY_CT)

    fwd, reply = both()
    if probe and (fwd.no_mac_binding or (reply is not None and reply.no_mac_binding)):
        # a real packet (and its answer) makes the routers learn their next hops; then again
        send_probe(lab, Result(lab.name, from_ns, to, proto, port, fwd, reply), from_ns, to, proto, port, timeout)
        cmds.clear()
        fwd, reply = both()
    arp_only = fwd.no_mac_binding or (reply is not None and reply.no_mac_binding)
    res = Result(lab.name, from_ns, to, proto, port, fwd, reply, commands=cmds)
    if arp_only:
        res.problems.append("a router has no MAC binding for the next hop: the path shown ends in its ARP "
                            "request; nothing has answered it yet")
    if start is None and not inet:
        res.problems.append(f"{flow.inport} is bound to no chassis (its SB Port_Binding has none): no chassis "
                            "runs this path for it (see `natns doctor`)")
    if probe:
        res.probe = send_probe(lab, res, from_ns, to, proto, port, timeout)
    return res


def send_probe(lab: live.Lab, res: Result | None, from_ns: str, to: str, proto: str, port: int | None,
          timeout: float = 1.0):
    """One real probe from `from_ns` to `to`; for TCP/UDP a listener where the trace delivers it."""
    from ...kernel import probe as kprobe

    kw = {}
    fwd = res.forward if res is not None else None
    if proto in ("tcp", "udp") and fwd is not None and fwd.delivered and fwd.final is not None:
        prefix = nb.host_port(lab.name, "")
        if fwd.out_type == "localnet" and lab.internet_ns():
            kw = {"respond_in": lab.internet_ns(), "respond_at": (fwd.final.dst, port)}
        elif fwd.out_port.startswith(prefix):
            kw = {"respond_in": fwd.out_port[len(prefix):], "respond_at": (fwd.final.dst, port)}
    elif proto in ("tcp", "udp") and lab.internet_ns():
        kw = {"respond_in": lab.internet_ns()}
    r = kprobe.send(from_ns, to, proto=proto, port=port, timeout=timeout, **kw)
    if kw and r.far_end is None:
        r.far_end = kw["respond_in"]
    return r


# --------------------------------------------------------------------------- text


def _leg_lines(leg: Leg, title: str) -> list[str]:
    lines = [f"{title}: {leg.flow.src} > {leg.flow.dst} {leg.flow.what()} (in port {leg.flow.inport})"]
    n = 0
    for h in leg.hops:
        where = f"[{h.chassis or '?'}]"
        if h.kind == "pipeline":
            if h.text == "continued":
                lines.append(f"     {where:<8} {h.datapath} {h.pipeline}, continued:")
            else:
                n += 1
                to = f" -> {h.outport}" if h.outport else ""
                lines.append(f"  {n:>2} {where:<8} {h.datapath} {h.pipeline}: {h.inport}{to}")
            for st in h.stages:
                acts = [a for a in st.actions if a not in ("next;",) and not a.startswith("/*")]
                lines.append(f"             {st.table:>2}. {st.name}: {st.match}"
                             + (f"  => {' '.join(acts)}" if acts else ""))
        elif h.kind == "nat":
            lines.append(f"     {where:<8} NAT {h.text}")
        elif h.kind == "tunnel":
            lines.append(f"     {where:<8} TUNNEL {h.text}")
        elif h.kind == "note":
            lines.append(f"     {where:<8} {h.text}")
        else:
            lines.append(f"     {where:<8} {h.kind.upper()}: {h.text}")
    return lines


def render(r: Result) -> str:
    what = r.proto if r.proto == "icmp" else f"{r.proto} port {r.port}"
    lines = [f"trace (OVN lab {r.lab}, logical path from ovn-trace): {r.from_ns} -> {r.to} ({what})", ""]
    lines += _leg_lines(r.forward, "packet")
    if r.forward.nat:
        lines.append("  rewrites: " + "; ".join(f"{f} {b} -> {a}" for f, b, a in r.forward.nat))
    lines.append("")
    if r.reply is not None:
        lines += _leg_lines(r.reply, "reply")
        lines.append("")
    else:
        lines += ["reply: not traced (the packet was not delivered)", ""]
    lines += [f"problem: {p}" for p in r.problems]
    if r.probe is not None:
        lines.append(f"probe: {r.probe.summary() if hasattr(r.probe, 'summary') else r.probe}")
    verdict = ("the logical path delivers the packet and its reply" if r.logical_ok
               else "the logical path does not deliver " + ("the packet" if not r.forward.delivered else "the reply"))
    lines.append(verdict)
    return "\n".join(lines)
