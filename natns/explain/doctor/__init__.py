"""Say why namespace NS cannot reach address ADDR, and how to fix it.

`diagnose(ns, addr)` first reads the configuration along the path a packet
takes (see path.walk), so it finds causes even when nothing gets through:
routes, neighbours, links and their peers, MTUs, sysctls (ip_forward,
rp_filter), the netfilter rules of every tool (nftables, iptables-nft,
iptables-legacy), source NAT, conntrack's table, duplicate addresses. It then
follows the reply back (through the NAT points it found) and checks the same
there. Last, it confirms with a real probe from NS (ping, a TCP connect or a
UDP datagram).

Each `Finding` has a severity, the namespace it is in, the evidence read (the
exact values) and the commands that fix it. Findings are ordered by where the
packet meets them: the forward path hop by hop (in each namespace in the
order the kernel works: conntrack, prerouting, routing, forwarding,
rp_filter, filter hooks, postrouting, MTU, link, neighbour), then the reply.

Only the probe sends anything; nothing is changed.

The package: findings (the codes' registry, Finding, Report), snapshot
questions shared by the checks (context), the checks (checks: each a
function of the flow and a read-only explain.snapshot.Snapshot to findings),
the forward and reply passes (passes), doctor's probes (probes) and the
text output (render).
"""

from __future__ import annotations


from ...errors import UserError
from ...privileges import require_root
from ...kernel.nsexec import NETNS_DIR
from .. import path as pathmod
from ..path import check_address
from ..snapshot import KernelSnapshot, RouteLookupError, Snapshot
from . import checks as ck
from . import passes
from .context import Findings, Flow
from .findings import CODES, SEVERITIES, ST_END, Code, Finding, NatPoint, ProbeResult, Report, cmd, finding
from .probes import KernelProber
from .render import render


def diagnose(src_ns: str, dst: str, *, proto: str = "icmp", port: int | None = None, probe: bool = True,
             snapshot: Snapshot | None = None, prober=None) -> Report:
    """Why `src_ns` can (not) reach `dst`: the path, the reply path, findings and a probe.

    Reads the kernel unless given a `snapshot` (natns.testing.fakes.FakeSnapshot), and
    probes with `prober` (default: real packets from `src_ns`; an object with
    `probe(src_ns, dst, proto, port)` and `df_probe(src_ns, dst, size)`).

    Raises UserError for an unknown namespace, a bad address or a bad port, and
    PrivilegeError (a UserError) when reading the kernel without root.
    """
    if snapshot is None:
        require_root("doctor")
        snapshot = KernelSnapshot()
    prober = prober or KernelProber()
    if not src_ns or "/" in src_ns or src_ns in (".", "..") or not snapshot.has_namespace(src_ns):
        raise UserError(f"no network namespace {src_ns!r} under {NETNS_DIR} (see `ip netns list`)")
    dst = check_address(dst)
    if proto not in ("icmp", "tcp", "udp"):
        raise UserError(f"unknown protocol {proto!r}: use icmp, tcp or udp")
    if proto == "icmp":
        port = None
    elif port is None or not (1 <= int(port) <= 65535):
        raise UserError(f"--{proto} needs a port number 1-65535, not {port!r}")
    fl = Flow(snapshot, src_ns, dst, proto, port)
    found = Findings()
    p = pathmod.walk(src_ns, dst, snapshot=snapshot)
    report = Report(src_ns, dst, proto, port, p)
    arriving, nat = passes.forward(fl, p, found)
    report.nat = nat
    if p.complete and len(p.hops) > 1:
        report.reply_hops, report.reply_complete, report.reply_stop = passes.reply(fl, p, arriving, nat, found)
    elif p.complete:
        report.reply_complete = True
    report.not_forwarding = {"forward": _not_forwarding(fl, p.hops), "reply": _not_forwarding(fl, report.reply_hops)}
    if probe:
        report.probe = prober.probe(src_ns, dst, proto, port)
        _after_probe(fl, p, report, found, prober)
    for f in found.items:
        ck.natns_route_fixes(fl, f)
    found.items.sort(key=Finding.sort_key)
    report.findings = found.items
    return report


def _not_forwarding(fl: Flow, hops) -> dict[int, str]:
    """The hops where the packet must be forwarded and the kernel will not: what is true there."""
    out: dict[int, str] = {}
    for i, h in enumerate(hops):
        if not h.forwards or h.bridge or h.local or h.ns == pathmod.HOST:
            continue
        if fl.v6:
            if not fl.forwards(h.ns):
                out[i] = ("must forward, but IPv6 forwarding is off here "
                          "(net.ipv6.conf.all.forwarding = 0): dropped")
            continue
        ipf = fl.snap.sysctl(h.ns, "net.ipv4.ip_forward")
        link = fl.link(h.ns, h.in_iface)
        if ipf == "0":
            out[i] = "must forward, but IP forwarding is off here (net.ipv4.ip_forward = 0): dropped"
        elif link is not None and link.conf.get("forwarding") == 0:
            out[i] = (f"must forward, but forwarding is off on {h.in_iface} "
                      f"(net.ipv4.conf.{h.in_iface}.forwarding = 0): dropped")
    return out


def _after_probe(fl: Flow, p, report: Report, found: Findings, prober) -> None:
    """What the probe confirms: a lost DF ping makes an MTU mismatch an error, a neighbour
    the probe resolved is no longer reported, and a failure nothing explains is said so."""
    src_ns, dst = fl.src_ns, fl.dst
    mism = [f for f in found.items if f.code in ("mtu-mismatch", "path-mtu") and f.direction == "forward"]
    if mism and p.hops and p.hops[0].out_iface:
        lk = fl.link(src_ns, p.hops[0].out_iface)
        if lk and lk.mtu and report.probe.ok:
            # what the sender saw, in full: "too-big: frag needed and DF set (mtu = 1400) from 192.0.2.1"
            ok, line = prober.df_probe(src_ns, dst, lk.mtu)
            for f in mism:
                head = 48 if fl.v6 else 28
                f.evidence[f"ping -M do -s {lk.mtu - head} (DF, {lk.mtu} bytes)"] = "ok" if ok else line
                # IPv6 never fragments on the way: a packet too big coming back for a narrower link
                # is path MTU discovery working (the source then sends smaller), not a failure
                if not ok and not (fl.v6 and f.code == "path-mtu" and line.startswith("too-big")):
                    f.severity = "error"
    for f in [f for f in found.items if f.code == "neighbour-failed"]:
        # the probe has just asked again: keep the finding only if ARP still gets no answer
        ns, nh, dev = f.namespace, f.evidence["next hop"], f.evidence["out"]
        try:
            ne = fl.snap.neighbour(ns, nh, dev)
        except RouteLookupError:
            ne = None
        if report.probe.ok or not ne or ne["state"] not in ("FAILED", "INCOMPLETE"):
            found.items.remove(f)
        else:
            f.evidence["neighbour entry after the probe"] = f"{nh} dev {dev} {ne['state']}"
            f.severity = "error"
    if report.probe.ok is True:
        _probe_outranks_model(fl, report, found)
    if report.probe.ok is False and not [f for f in found.items if f.severity == "error"]:
        ev = {"probe": report.probe.detail, "probe command": report.probe.command,
              "path": " > ".join(h.ns for h in p.hops) + ("" if p.complete else f" (stops: {p.stop})"),
              "reply path": " > ".join(h.ns for h in report.reply_hops) or "not followed",
              "address translation": [n.text() for n in report.nat] or "none"}
        walls = [(h.ns, fl.snap.firewall(h.ns)) for h in p.hops if h.ns != pathmod.HOST and not h.bridge]
        unread = [f"{ns}: {c}" for ns, fw in walls for c in fw.not_evaluated()]
        dormant = [f"{ns}: table {t}" for ns, fw in walls for t in fw.dormant_tables]
        if unread:
            ev["chains doctor does not evaluate"] = list(dict.fromkeys(unread))
        if dormant:
            ev["dormant tables (not run by the kernel)"] = list(dict.fromkeys(dormant))
        found.add(finding("unexplained-failure", src_ns,
                          f"the probe failed and doctor cannot explain why: the routes, links, sysctls and "
                          f"rules it can read along the path all let the packet through ({report.probe.detail})",
                          ev, note=f"run `{trace_command(fl)}` to see where the packet goes",
                          direction="reply", hop=999, stage=ST_END))


#: Findings a passing probe does not contradict: doctor's probe is a new connection, so
#: a stale entry of the user's flow can break it while the probe passes; a confirmed MTU
#: problem was confirmed by a probe of its own (the DF ping); which of two holders of one
#: address answers ARP is a race the probe may win by luck.
_PROBE_CANNOT_CONTRADICT = {"stale-conntrack", "mtu-mismatch", "path-mtu", "duplicate-address", "model-disagrees"}


def _probe_outranks_model(fl: Flow, report: Report, found: Findings) -> None:
    """The probe of the same flow got through: an error the model predicts is not what
    happens. Each such error becomes a warning, and one finding says the model disagrees
    with reality (a natns bug), with the evidence to report it."""
    wrong = [f for f in found.items if f.severity == "error" and f.code not in _PROBE_CANNOT_CONTRADICT]
    if not wrong:
        return
    for f in wrong:
        f.severity = "warning"
        f.evidence["contradicted by the probe"] = report.probe.detail
    found.add(finding(
        "model-disagrees", fl.src_ns,
        f"doctor's model predicts that this flow fails ({', '.join(dict.fromkeys(f.code for f in wrong))}), "
        f"but its own probe of the same flow got through: the model disagrees with reality",
        {"probe": report.probe.detail, "probe command": report.probe.command,
         "predicted": [f"{f.code} in {f.namespace}: {f.summary}" for f in wrong]},
        note=f"this is a bug in natns (its reading of the rules or routes): please report it with the output "
             f"of `{cmd('natns', 'doctor', '--json', *_flow_args(fl))}` and `{trace_command(fl)}`; the findings "
             f"it contradicts are kept as warnings",
        direction="forward", hop=-1, stage=0))


def _flow_args(fl: Flow) -> list[str]:
    args = ["--from", fl.src_ns, "--to", fl.dst]
    if fl.proto != "icmp":
        args += [f"--{fl.proto}", str(fl.port)]
    return args


def trace_command(fl: Flow) -> str:
    """The `natns trace` command that follows this flow (its protocol and port)."""
    return cmd("natns", "trace", *_flow_args(fl))


def routes_text(ns: str) -> list[str]:
    """The main table of `ns` as `ip route` prints it (read from the kernel)."""
    return KernelSnapshot().routes_text(ns)


__all__ = ["CODES", "SEVERITIES", "Code", "Finding", "NatPoint", "ProbeResult", "Report", "cmd", "diagnose",
           "render", "routes_text"]
