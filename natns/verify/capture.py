"""Capture packets at several points at once with tcpdump, and line them up.

`Capture([(ns, iface), ...], bpf)` is a context manager: it starts one
tcpdump per point (each writing a pcap file), waits until each is listening,
and on exit stops them all (SIGINT, then SIGKILL if needed) so no tcpdump
outlives it. `packets` then holds what each point saw, read back from the
pcap files by a small parser here (Ethernet, IPv4, ICMP/TCP/UDP), so every
header field is available, not only what tcpdump prints. With `pcap_dir` the
files are kept there, one per point (``<ns>_<iface>.pcap``, for Wireshark);
without it they go to a temporary directory that is removed.

`rows(capture)` is the merged view: every packet of every point in time
order, numbered so the same packet can be followed from point to point,
with the fields that changed since the previous point named (the SNAT
rewrite shows up as a changed source).

`capture(topology, from_ns, ...)` is what `natns capture` runs: it captures
along the path of a probe (`probe.probe`) or while a command runs in a lab
namespace, and returns everything in one `CaptureRun`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from ..privileges import require_root
from ..errors import KernelError, UserError
from ..kernel import nsexec
from ..topology import Topology
from .endpoints import Point, path_points, require_up, role_of

#: Seconds a tcpdump may take to start listening. Its start takes the kernel's rtnl lock
#: three times (two SIOCETHTOOL ioctls, PACKET_ADD_MEMBERSHIP for promiscuous mode), which
#: other work on the machine (namespaces being removed) can hold for seconds.
START_TIMEOUT = 30.0

#: Fields compared from one point to the next (`Row.changed`).
COMPARED = ("src", "sport", "dst", "dport", "icmp_id", "ttl", "smac", "dmac")

_TCP_FLAGS = [(0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"), (0x80, "W")]


@dataclass
class Packet:
    """One IPv4 packet as captured at one point (``ns:iface``)."""

    point: str
    time: float  # seconds since the epoch, nanosecond resolution
    src: str
    dst: str
    sport: int | None
    dport: int | None
    info: str  # tcpdump-style summary: "ICMP echo request, id 7, seq 1, length 64"
    proto: str = ""  # "icmp" | "tcp" | "udp" | "ip-proto-N"
    ttl: int | None = None
    ip_id: int | None = None
    length: int | None = None  # IP total length
    smac: str | None = None
    dmac: str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    tcp_flags: str | None = None  # tcpdump's letters: "S", "S.", "P.", "F."
    tcp_seq: int | None = None
    tcp_ack: int | None = None
    payload: bytes = field(default=b"", repr=False)  # the transport payload
    #: Geneve (UDP 6081, OVN's tunnels): {"vni", "protocol", "options": [{"class", "type", "data"}]}
    geneve: dict | None = None
    inner: "Packet | None" = field(default=None, repr=False)  # the encapsulated packet (IPv4 only)

    @property
    def kind(self) -> str:
        """A short description: 'ICMP echo request', 'TCP [S]', 'UDP', ..."""
        i = self.info
        if i.startswith("ICMP"):
            return i.split(",")[0]
        if i.startswith("Flags"):
            return "TCP " + i.split("]")[0].removeprefix("Flags ") + "]"
        return i.split(",")[0][:30]

    def key(self) -> tuple:
        """What stays the same when a router forwards or translates the packet.

        Addresses, ports, ICMP ids, TTLs, checksums and MACs may change on the
        way; the IP id, length, payload and TCP sequence numbers do not.
        """
        if self.inner is not None:  # the tunnelled packet is the same packet as on either end
            return self.inner.key()
        digest = hashlib.sha1(self.payload).hexdigest()[:16]
        return (self.proto, self.ip_id, self.length, self.icmp_type, self.icmp_code, self.icmp_seq,
                self.tcp_flags, self.tcp_seq, self.tcp_ack, digest)

    def addr(self, which: str) -> str:
        """``src`` or ``dst`` with its port when it has one: ``192.0.2.2:40000``."""
        ip, port = (self.src, self.sport) if which == "src" else (self.dst, self.dport)
        return ip if port is None else f"{ip}:{port}"

    def to_json(self) -> dict:
        return {
            "point": self.point, "time": self.time, "src": self.src, "dst": self.dst,
            "sport": self.sport, "dport": self.dport, "protocol": self.proto, "summary": self.info,
            "ttl": self.ttl, "ip_id": self.ip_id, "length": self.length,
            "smac": self.smac, "dmac": self.dmac,
            "icmp": None if self.icmp_type is None else {
                "type": self.icmp_type, "code": self.icmp_code, "id": self.icmp_id, "seq": self.icmp_seq},
            "tcp": None if self.tcp_flags is None else {
                "flags": self.tcp_flags, "seq": self.tcp_seq, "ack": self.tcp_ack},
            "geneve": None if self.geneve is None else {
                **self.geneve, "inner": self.inner.to_json() if self.inner is not None else None},
        }


def tcpdump_listening(pid: int, ifindex: int, pcap: str) -> bool:
    """Whether tcpdump `pid` is capturing on interface `ifindex` and has its filter set.

    The real conditions, read from the kernel and the file system rather than
    from its messages: one of its sockets is a packet socket bound to
    `ifindex` and running (in /proc/PID/net/packet, the table of its own
    namespace), and the pcap file header is written -- tcpdump opens the file
    only after it has attached its filter.
    """
    try:
        if os.path.getsize(pcap) < 24:
            return False
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open(f"/proc/{pid}/net/packet") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return False
    return any(bound_packet_socket(row, ifindex, inodes) for row in rows)


def bound_packet_socket(row: str, ifindex: int, inodes: set[str]) -> bool:
    """Whether a row of /proc/PID/net/packet is one of `inodes`, bound to `ifindex` and running.

    Columns: sk RefCnt Type Proto Iface R Rmem User Inode.
    """
    cols = row.split()
    if len(cols) < 9:
        return False
    try:
        return cols[8] in inodes and int(cols[4]) == ifindex and cols[5] == "1"
    except ValueError:
        return False


def point_name(ns: str, iface: str) -> str:
    """How a point is written: ``ns:iface``."""
    return f"{ns}:{iface}"


def parse_point(text: str) -> Point:
    """``NS:IFACE`` -> (ns, iface); UserError if it is not of that shape."""
    ns, sep, iface = text.partition(":")
    if not sep or not ns or not iface or ":" in iface:
        raise UserError(f"capture point {text!r} must be NAMESPACE:INTERFACE, like vm:eth0")
    return ns, iface


@dataclass
class Capture:
    """tcpdump at several (namespace, interface) points at once."""

    points: list[tuple[str, str]]
    bpf: str = ""
    packets: dict[str, list[Packet]] = field(default_factory=dict)
    pcap_dir: str | None = None
    pcaps: dict[str, str] = field(default_factory=dict)  # point -> pcap file (kept with pcap_dir)
    start_timeout: float = START_TIMEOUT
    _procs: list = field(default_factory=list)
    _tmp: str | None = None

    def __enter__(self) -> Capture:
        self.points = list(dict.fromkeys((ns, iface) for ns, iface in self.points))
        if self.pcap_dir:
            os.makedirs(self.pcap_dir, exist_ok=True)
            where = os.path.abspath(self.pcap_dir)
        else:
            where = self._tmp = tempfile.mkdtemp(prefix="natns-capture-")
        try:
            for ns, iface in self.points:
                self._start(ns, iface, os.path.join(where, f"{ns}_{iface}.pcap"))
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.2)  # let the last packets reach the capture buffers
        self._stop()

    def _start(self, ns: str, iface: str, path: str) -> None:
        # O_APPEND: tcpdump's stderr shares this file's offset with us; appending keeps our
        # reads (which seek) from making it write over what it wrote before.
        errf = tempfile.TemporaryFile(mode="a+")
        try:
            ifindex = nsexec.call_in(ns, lambda: socket.if_nametoindex(iface))
        except OSError:
            ifindex = None
        # --immediate-mode: hand each packet over at once, so none is still in a
        # kernel block when tcpdump is stopped. -Z root: write the file as root.
        argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root",
                "--time-stamp-precision=nano", "-w", path]
        if self.bpf:
            argv.append(self.bpf)
        proc = nsexec.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL,
                            start_new_session=True)
        point = point_name(ns, iface)
        self._procs.append((point, proc, path, errf))
        deadline = time.monotonic() + self.start_timeout
        while True:
            if ifindex is not None and tcpdump_listening(proc.pid, ifindex, path):
                return
            if proc.poll() is not None:
                errf.seek(0)
                raise KernelError(f"tcpdump on {point} failed: {errf.read().strip()}")
            if time.monotonic() >= deadline:
                raise KernelError(f"tcpdump on {point} did not start listening within {self.start_timeout:g} s "
                                  f"(no packet socket of it bound to {iface}, or no pcap header written)")
            time.sleep(0.01)

    def _stop(self) -> None:
        for _, proc, _, _ in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for point, proc, path, errf in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            errf.close()
            self.packets[point] = read_pcap(path, point) if os.path.exists(path) else []
            if self.pcap_dir:
                self.pcaps[point] = path
        self._procs.clear()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def merged(self) -> list[Packet]:
        """Every packet of every point, in time order (ties: in the order of the points)."""
        order = {point_name(ns, iface): i for i, (ns, iface) in enumerate(self.points)}
        allp = [p for ps in self.packets.values() for p in ps]
        return sorted(allp, key=lambda p: (p.time, order.get(p.point, len(order))))


# --------------------------------------------------------------------------- the merged view


@dataclass
class Row:
    """One packet at one point in the merged view.

    `number` is the same for one packet at every point it was seen; `changed`
    names the fields (of COMPARED) that differ from the previous point it was
    seen at, empty for the first.
    """

    number: int
    packet: Packet
    changed: tuple[str, ...] = ()
    previous_point: str | None = None

    def to_json(self, t0: float) -> dict:
        d = {"n": self.number, "offset_ms": round((self.packet.time - t0) * 1000, 3)}
        d.update(self.packet.to_json())
        d["changed"] = list(self.changed)
        d["previous_point"] = self.previous_point
        return d


def rows(cap: Capture) -> list[Row]:
    """The merged, numbered view of a finished capture; see `Row`."""
    out: list[Row] = []
    groups: list[tuple[tuple, list[Packet]]] = []  # (key, packets seen so far), by number
    for p in cap.merged():
        k = p.key()
        number = None
        for i in range(len(groups) - 1, -1, -1):
            gk, seen = groups[i]
            if gk == k and all(q.point != p.point for q in seen):
                number = i
                break
        if number is None:
            groups.append((k, [p]))
            out.append(Row(len(groups), p))
            continue
        prev = groups[number][1][-1]
        groups[number][1].append(p)
        changed = tuple(f for f in COMPARED if getattr(p, f) != getattr(prev, f))
        out.append(Row(number + 1, p, changed, prev.point))
    return out


# --------------------------------------------------------------------------- pcap files


def read_pcap(path: str, point: str) -> list[Packet]:
    """The IPv4 packets of a pcap file (microsecond or nanosecond, either byte order).

    Link types: Ethernet (1) and Linux cooked (113). Other frames (ARP, IPv6)
    are skipped. Geneve (UDP 6081, OVN's tunnels) is decoded: the packet's
    `geneve` header (VNI, options) and its `inner` packet; BFD inside Geneve
    (OVN's tunnel keep-alives) is left out.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    formats = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
    if magic not in formats:
        raise KernelError(f"{path}: not a pcap file")
    endian, unit = formats[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        pkt = _frame(point, sec + frac * unit, frame, linktype)
        if pkt is not None and not _control(pkt):
            out.append(pkt)
    return out


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _frame(point: str, ts: float, frame: bytes, linktype: int) -> Packet | None:
    smac = dmac = None
    if linktype == 1:  # Ethernet
        if len(frame) < 14:
            return None
        dmac, smac = _mac(frame[0:6]), _mac(frame[6:12])
        ethertype = struct.unpack("!H", frame[12:14])[0]
        ip = frame[14:]
    elif linktype == 113:  # Linux cooked capture
        if len(frame) < 16:
            return None
        ethertype = struct.unpack("!H", frame[14:16])[0]
        ip = frame[16:]
    else:
        return None
    if ethertype != 0x0800 or len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total, ip_id = struct.unpack("!HH", ip[2:6])
    ttl, proto = ip[8], ip[9]
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    l4 = ip[ihl:total] if total >= ihl else ip[ihl:]
    p = Packet(point=point, time=ts, src=src, dst=dst, sport=None, dport=None, info="",
               proto=f"ip-proto-{proto}", ttl=ttl, ip_id=ip_id, length=total, smac=smac, dmac=dmac)
    if proto == 1 and len(l4) >= 8:
        p.proto = "icmp"
        p.icmp_type, p.icmp_code = l4[0], l4[1]
        p.payload = l4[8:]
        names = {0: "echo reply", 8: "echo request"}
        if p.icmp_type in names:
            p.icmp_id, p.icmp_seq = struct.unpack("!HH", l4[4:8])
            p.info = (f"ICMP {names[p.icmp_type]}, id {p.icmp_id}, seq {p.icmp_seq}, "
                      f"length {len(l4)}")
        else:
            what = {3: "unreachable", 11: "time exceeded"}.get(p.icmp_type, f"type {p.icmp_type}")
            p.info = f"ICMP {what}, code {p.icmp_code}, length {len(l4)}"
    elif proto == 6 and len(l4) >= 20:
        p.proto = "tcp"
        p.sport, p.dport, p.tcp_seq, p.tcp_ack = struct.unpack("!HHII", l4[:12])
        doff = (l4[12] >> 4) * 4
        flags = l4[13]
        letters = "".join(c for bit, c in _TCP_FLAGS if flags & bit) + ("." if flags & 0x10 else "")
        p.tcp_flags = letters or "none"
        p.payload = l4[doff:]
        p.info = f"Flags [{p.tcp_flags}], seq {p.tcp_seq}" + (
            f", ack {p.tcp_ack}" if flags & 0x10 else "") + f", length {len(p.payload)}"
    elif proto == 17 and len(l4) >= 8:
        p.proto = "udp"
        p.sport, p.dport = struct.unpack("!HH", l4[:4])
        p.payload = l4[8:]
        p.info = f"UDP, length {len(p.payload)}"
        if p.dport == GENEVE_PORT:
            _geneve(p, point, ts)
    else:
        p.payload = l4
        p.info = f"ip-proto-{proto} {len(l4)}"
    return p


#: Geneve's UDP port (RFC 8926), the encapsulation OVN's tunnels between chassis use.
GENEVE_PORT = 6081
#: BFD's UDP ports: OVN runs BFD inside its Geneve tunnels every 100 ms; a capture leaves it out.
BFD_PORTS = (3784, 4784)


def _geneve(p: Packet, point: str, ts: float) -> None:
    """Decode the Geneve header in `p`'s UDP payload (RFC 8926) and the Ethernet frame it carries."""
    g = p.payload
    if len(g) < 8 or g[0] >> 6 != 0:
        return
    opt_len = (g[0] & 0x3F) * 4
    protocol = struct.unpack("!H", g[2:4])[0]
    vni = int.from_bytes(g[4:7], "big")
    opts, off = [], 8
    while off + 4 <= 8 + opt_len and off + 4 <= len(g):
        cls, typ, ln = struct.unpack("!HBB", g[off:off + 4])
        n = (ln & 0x1F) * 4
        opts.append({"class": cls, "type": typ, "data": g[off + 4:off + 4 + n].hex()})
        off += 4 + n
    p.geneve = {"vni": vni, "protocol": protocol, "options": opts}
    inner = g[8 + opt_len:]
    desc = f"Geneve VNI {vni}"
    if protocol == 0x6558:  # a whole Ethernet frame
        p.inner = _frame(point, ts, inner, 1)
        if p.inner is not None:
            p.info = f"{desc}, inner {p.inner.src} > {p.inner.dst}: {p.inner.info}"
            return
        ethertype = struct.unpack("!H", inner[12:14])[0] if len(inner) >= 14 else 0
        p.info = f"{desc}, inner " + {0x0806: "ARP", 0x86DD: "IPv6"}.get(ethertype, f"ethertype {ethertype:#06x}")
        return
    p.info = f"{desc}, protocol {protocol:#06x}"


def _control(p: Packet) -> bool:
    """OVN's BFD inside a Geneve tunnel: tunnel keep-alives, not traffic."""
    return p.inner is not None and p.inner.proto == "udp" and p.inner.dport in BFD_PORTS


# --------------------------------------------------------------------------- what `natns capture` runs


@dataclass
class CommandResult:
    """A command run in a lab namespace during a capture."""

    ns: str
    argv: list[str]
    returncode: int | None  # None: stopped (timeout or Ctrl-C)
    output: str
    stopped: str | None = None  # "timeout" | "interrupted"

    def to_json(self) -> dict:
        return {"namespace": self.ns, "argv": self.argv, "exit": self.returncode,
                "output": self.output, "stopped": self.stopped}


def run_command(ns: str, argv: list[str], timeout: float) -> CommandResult:
    """Run `argv` in namespace `ns`, at most `timeout` seconds; never leaves it running.

    Its output (stdout and stderr) is collected. A timeout or Ctrl-C stops its
    whole process group and is reported in `stopped`, so the capture around it
    still ends normally and shows what was seen.
    """
    try:
        proc = nsexec.popen(ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise UserError(f"cannot run {argv[0]!r} ({exc.strerror})") from None
    stopped = None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stopped = "timeout"
    except KeyboardInterrupt:
        stopped = "interrupted"
    if stopped:
        _kill_group(proc)
        output, _ = proc.communicate()
    text = output.decode(errors="replace") if output else ""
    return CommandResult(ns, list(argv), None if stopped else proc.returncode, text, stopped)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class CaptureRun:
    """Everything `natns capture` shows: the points, the merged rows, what ran."""

    lab: str
    points: list[Point]
    bpf: str
    rows: list[Row]
    pcaps: dict[str, str]
    probe: object | None = None  # probe.ProbeResult
    command: CommandResult | None = None

    def seen(self, point: str) -> list[Packet]:
        """The packets captured at `point` (``ns:iface``), in time order."""
        return [r.packet for r in self.rows if r.packet.point == point]

    def to_json(self) -> dict:
        t0 = self.rows[0].packet.time if self.rows else 0.0
        return {
            "lab": self.lab,
            "points": [point_name(ns, i) for ns, i in self.points],
            "filter": self.bpf,
            "probe": self.probe.to_json() if self.probe is not None else None,
            "command": self.command.to_json() if self.command else None,
            "packets": [r.to_json(t0) for r in self.rows],
            "pcaps": self.pcaps,
        }


def default_filter(proto: str | None, port: int | None) -> str:
    """The BPF filter for a probe (with ICMP errors about it), or all IPv4 for a command."""
    if proto is None:
        return "ip and not igmp"  # all IPv4, without the kernel's multicast reports
    if proto == "icmp":
        return "icmp"
    return f"ip and ({proto} port {port} or icmp)"


def check_points(t: Topology, points: list[Point], known: frozenset[str] = frozenset()) -> None:
    """UserError unless every point is an existing interface of an up namespace of the lab.

    `known`: namespaces of the lab that are not hosts, routers or the internet (an OVN
    sandbox's chassis and central namespace).
    """
    from ..kernel import rtnl

    for ns, iface in points:
        if ns not in known:
            role_of(t, ns)
        require_up(t, ns)
        with rtnl.open_in(ns) as h:
            if h.index(iface) is None:
                raise UserError(f"capture point {ns}:{iface} does not exist (namespace {ns} has no interface {iface})")


def capture(t: Topology, from_ns: str, *, to: str | None = None, proto: str = "icmp",
            port: int | None = None, argv: list[str] | None = None,
            points: list[Point] | None = None, bpf: str | None = None,
            pcap_dir: str | None = None, timeout: float = 2.0,
            command_timeout: float = 60.0, known: frozenset[str] = frozenset()) -> CaptureRun:
    """Capture at `points` (default: the path from `from_ns` to `to`) while traffic runs.

    With `argv`, the traffic is that command, run in `from_ns`; otherwise one
    probe (`probe.probe`) from `from_ns` to `to` with `proto`/`port`. Captures
    start before and stop after; no tcpdump or responder is left running.
    """
    require_root("capture")
    from .probe import probe as run_probe

    role_of(t, from_ns)
    require_up(t, from_ns)
    if argv is None and to is None:
        raise UserError("capture needs a probe destination (--to ADDR) or a command (-- CMD ...)")
    pts = list(points) if points else path_points(t, from_ns, to, None if argv else proto, port)
    check_points(t, pts, known)
    filt = bpf if bpf is not None else default_filter(None if argv else proto, port)
    result = None
    command = None
    with Capture(pts, bpf=filt, pcap_dir=pcap_dir) as cap:
        if argv:
            command = run_command(from_ns, argv, command_timeout)
        else:
            result = run_probe(t, from_ns, to, proto=proto, port=port, timeout=timeout)
    return CaptureRun(t.name, pts, filt, rows(cap), dict(cap.pcaps), result, command)
