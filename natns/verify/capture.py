"""Capture packets at several points at once with tcpdump, and line them up.

`Capture([(ns, iface), ...], bpf)` is a context manager: it starts one
tcpdump per point (each writing a pcap file), waits until each is listening,
and on exit stops them all (SIGINT, then SIGKILL if needed) so no tcpdump
outlives it. `packets` then holds what each point saw, read back from the
pcap files (IPv4, and IPv6 with its extension headers and ICMPv6, decoded by
dpkt), so every header field is available, not only what tcpdump prints. With `pcap_dir` the
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
    family: int = 4  # 6: an IPv6 packet (ttl is then its hop limit, ip_id its fragment id)
    ext: tuple[str, ...] = ()  # IPv6 extension headers in order, as tcpdump names them: HBH, frag, ...
    mtu: int | None = None  # ICMPv6 packet too big: the MTU it reports
    target: str | None = None  # ICMPv6 neighbor solicitation/advertisement: the target address
    #: Geneve (UDP 6081, OVN's tunnels): {"vni", "protocol", "options": [{"class", "type", "data"}]}
    geneve: dict | None = None
    inner: "Packet | None" = field(default=None, repr=False)  # the encapsulated packet (IPv4 only)

    @property
    def kind(self) -> str:
        """A short description: 'ICMP echo request', 'TCP [S]', 'UDP', ..."""
        i = self.info
        for e in self.ext:  # "HBH ICMP6, ...", "frag UDP, ...": the kind is what follows
            i = i.removeprefix(e + " ")
        if self.proto == "ip6-fragment":
            return "IPv6 fragment"
        if self.family == 6 and self.proto == "icmp6":
            return "ICMP6 " + i.split("ICMP6, ", 1)[-1].split(",")[0]
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
        """``src`` or ``dst`` with its port when it has one: ``192.0.2.2:40000``, ``[2001:db8::2]:40000``."""
        ip, port = (self.src, self.sport) if which == "src" else (self.dst, self.dport)
        if port is None:
            return ip
        return f"[{ip}]:{port}" if self.family == 6 else f"{ip}:{port}"

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
        } | ({} if self.geneve is None else {"geneve": {  # a Geneve packet only (OVN's tunnels)
            **self.geneve, "inner": self.inner.to_json() if self.inner is not None else None}}) | ({"family": 6, "ext_headers": list(self.ext), "mtu": self.mtu, "target": self.target}
             if self.family == 6 else {})


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




#: ICMPv6 types by name, as tcpdump says them (RFC 4443, 4861, 3810).
ICMP6_NAMES = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem",
               128: "echo request", 129: "echo reply", 130: "multicast listener query",
               131: "multicast listener report", 132: "multicast listener done",
               133: "router solicitation", 134: "router advertisement", 135: "neighbor solicitation",
               136: "neighbor advertisement", 137: "redirect", 143: "multicast listener report v2"}

#: IPv6 extension headers by next-header number, as tcpdump abbreviates them.
EXT_HEADERS = {0: "HBH", 43: "srcrt", 44: "frag", 50: "ESP", 51: "AH", 60: "DSTOPT", 135: "mobility"}


def read_pcap(path: str, point: str) -> list[Packet]:
    """The IPv4 and IPv6 packets of a pcap file (microsecond or nanosecond, either byte order).

    Link types: Ethernet (1) and Linux cooked (113). Other frames (ARP) are
    skipped. Decoded by dpkt (imported here, not at module import: `natns`
    starts without it); see benchmarks/pcapdecode.py for why dpkt. Geneve (UDP
    6081, OVN's tunnels) is decoded: the packet's `geneve` header (VNI, options)
    and its `inner` packet; BFD inside Geneve (OVN's tunnel keep-alives) is left out.
    """
    import dpkt

    with open(path, "rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.NeedData):
            if os.path.getsize(path) < 24:
                return []
            raise KernelError(f"{path}: not a pcap file") from None
        linktype = reader.datalink()
        out = []
        for ts, frame in reader:
            pkt = _frame(point, float(ts), frame, linktype, dpkt)
            if pkt is not None and not _control(pkt):
                out.append(pkt)
    return out


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _frame(point: str, ts: float, frame: bytes, linktype: int, dpkt) -> Packet | None:
    smac = dmac = None
    try:
        if linktype == 1:  # Ethernet
            if len(frame) < 14:
                return None
            eth = dpkt.ethernet.Ethernet(frame)
            dmac, smac = _mac(eth.dst), _mac(eth.src)
        elif linktype == 113:  # Linux cooked capture
            if len(frame) < 16:
                return None
            eth = dpkt.sll.SLL(frame)
        else:
            return None
    except dpkt.UnpackError:
        return None
    ip = eth.data
    if isinstance(ip, dpkt.ip.IP) and ip.v == 4:
        return _ipv4(point, ts, ip, smac, dmac, dpkt)
    if isinstance(ip, dpkt.ip6.IP6):
        return _ipv6(point, ts, ip, smac, dmac, dpkt)
    return None


def _ipv4(point, ts, ip, smac, dmac, dpkt) -> Packet:
    raw = bytes(ip.data) if isinstance(ip.data, bytes) else None
    p = Packet(point=point, time=ts, src=socket.inet_ntop(socket.AF_INET, ip.src),
               dst=socket.inet_ntop(socket.AF_INET, ip.dst), sport=None, dport=None, info="",
               proto=f"ip-proto-{ip.p}", ttl=ip.ttl, ip_id=ip.id, length=ip.len, smac=smac, dmac=dmac)
    l4 = ip.data
    if ip.p == 1 and isinstance(l4, dpkt.icmp.ICMP):
        p.proto = "icmp"
        p.icmp_type, p.icmp_code = l4.type, l4.code
        body = _raw(l4)
        p.payload = body[4:]
        names = {0: "echo reply", 8: "echo request"}
        if p.icmp_type in names and isinstance(l4.data, dpkt.icmp.ICMP.Echo):
            p.icmp_id, p.icmp_seq = l4.data.id, l4.data.seq
            p.info = (f"ICMP {names[p.icmp_type]}, id {p.icmp_id}, seq {p.icmp_seq}, "
                      f"length {4 + len(body)}")
        else:
            what = {3: "unreachable", 11: "time exceeded"}.get(p.icmp_type, f"type {p.icmp_type}")
            p.info = f"ICMP {what}, code {p.icmp_code}, length {4 + len(body)}"
    elif ip.p in (6, 17) and isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        _transport(p, l4, dpkt)
    else:
        p.payload = raw if raw is not None else bytes(l4)
        p.info = f"ip-proto-{ip.p} {len(p.payload)}"
    return p


def _raw(msg) -> bytes:
    """An ICMP(v6) message's bytes after type, code and checksum (dpkt decodes them as an
    echo, an error quoting a packet, ...; packed again they are the bytes that came)."""
    return bytes(msg.data)


def _transport(p: Packet, l4, dpkt) -> None:
    """TCP or UDP fields into `p` (either family)."""
    p.sport, p.dport = l4.sport, l4.dport
    p.payload = bytes(l4.data)
    if isinstance(l4, dpkt.tcp.TCP):
        p.proto = "tcp"
        p.tcp_seq, p.tcp_ack = l4.seq, l4.ack
        flags = l4.flags
        letters = "".join(c for bit, c in _TCP_FLAGS if flags & bit) + ("." if flags & 0x10 else "")
        p.tcp_flags = letters or "none"
        p.info = f"Flags [{p.tcp_flags}], seq {p.tcp_seq}" + (
            f", ack {p.tcp_ack}" if flags & 0x10 else "") + f", length {len(p.payload)}"
    else:
        p.proto = "udp"
        p.info = f"UDP, length {len(p.payload)}"
        if p.dport == GENEVE_PORT:
            _geneve(p, dpkt)


def _ipv6(point, ts, ip, smac, dmac, dpkt) -> Packet:
    exts = [EXT_HEADERS.get(n, str(n)) for n, _ in _ext_numbers(ip)]
    frag = ip.extension_hdrs.get(44)
    p = Packet(point=point, time=ts, src=socket.inet_ntop(socket.AF_INET6, ip.src),
               dst=socket.inet_ntop(socket.AF_INET6, ip.dst), sport=None, dport=None, info="",
               proto=f"ip-proto-{ip.p}", ttl=ip.hlim, ip_id=frag.id if frag is not None else None,
               length=40 + ip.plen, smac=smac, dmac=dmac)
    p.ext = tuple(exts)
    p.family = 6
    l4 = ip.data
    prefix = " ".join(exts) + " " if exts else ""
    if frag is not None and frag.frag_off > 0:  # a later fragment: no transport header in it
        p.proto, p.payload = "ip6-fragment", bytes(l4)
        before = " ".join(exts[:-1]) + " " if len(exts) > 1 else ""
        p.info = f"{before}frag (offset {frag.frag_off * 8}, id {frag.id}), length {len(p.payload)}"
        return p
    if ip.p == 58 and isinstance(l4, dpkt.icmp6.ICMP6):
        p.proto = "icmp6"
        p.icmp_type, p.icmp_code = l4.type, l4.code
        body = _raw(l4)
        p.payload = body[4:]
        name = ICMP6_NAMES.get(l4.type, f"type {l4.type}")
        length = 4 + len(body)
        if l4.type in (128, 129) and isinstance(l4.data, dpkt.icmp6.ICMP6.Echo):
            p.icmp_id, p.icmp_seq = l4.data.id, l4.data.seq
            p.info = f"{prefix}ICMP6, {name}, id {p.icmp_id}, seq {p.icmp_seq}, length {length}"
        elif l4.type == 2:
            p.mtu = struct.unpack("!I", body[:4])[0]
            p.info = f"{prefix}ICMP6, {name}, mtu {p.mtu}, length {length}"
        elif l4.type in (135, 136) and len(body) >= 20:
            p.target = socket.inet_ntop(socket.AF_INET6, body[4:20])
            words = "who has" if l4.type == 135 else "tgt is"
            p.info = f"{prefix}ICMP6, {name}, {words} {p.target}, length {length}"
        else:
            p.info = f"{prefix}ICMP6, {name}, code {l4.code}, length {length}"
    elif ip.p in (6, 17) and isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        _transport(p, l4, dpkt)
        p.info = prefix + p.info
    else:
        p.payload = bytes(l4)
        p.info = f"{prefix}ip-proto-{ip.p} {len(p.payload)}"
    return p


def _ext_numbers(ip) -> list[tuple[int, object]]:
    """(next-header number, header) of each extension header of `ip`, in the packet's order."""
    out, n = [], ip.nxt
    for h in ip.all_extension_headers:
        out.append((n, h))
        n = getattr(h, "nxt", None)
    return out


#: Geneve's UDP port (RFC 8926), the encapsulation OVN's tunnels between chassis use.
GENEVE_PORT = 6081
#: BFD's UDP ports: OVN runs BFD inside its Geneve tunnels every 100 ms; a capture leaves it out.
BFD_PORTS = (3784, 4784)


def _geneve(p: Packet, dpkt) -> None:
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
        p.inner = _frame(p.point, p.time, inner, 1, dpkt)
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


#: A command's default filter in a lab with IPv6: IPv4 and IPv6 alike, without the kernel's
#: multicast reports (IGMP; MLD, behind its hop-by-hop header) and without the link-local
#: chatter every v6 link has (router solicitations, DAD and link-local neighbour discovery:
#: from fe80::/10 or :: to ff02::/16).
COMMAND_FILTER6 = ("(ip and not igmp) or (ip6 and not ip6 proto 0 "
                   "and not (dst net ff02::/16 and (src net fe80::/10 or src host ::)))")


def default_filter(proto: str | None, port: int | None, v6: bool = False, lab_v6: bool = False) -> str:
    """The BPF filter for a probe (with ICMP errors about it), or all IP for a command.

    A v6 probe's filter is ICMPv6 (echo, its errors, and the neighbour
    discovery the path needs). A command's is all IPv4 but IGMP in a lab
    without IPv6 (as before IPv6), and `COMMAND_FILTER6` in one with it (`lab_v6`).
    """
    if proto is None:
        return COMMAND_FILTER6 if lab_v6 or v6 else "ip and not igmp"
    if v6:
        return "icmp6" if proto == "icmp" else f"ip6 and ({proto} port {port} or icmp6)"
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
    filt = bpf if bpf is not None else default_filter(None if argv else proto, port, v6=":" in str(to or ""),
                                                      lab_v6=t.has_v6)
    result = None
    command = None
    with Capture(pts, bpf=filt, pcap_dir=pcap_dir) as cap:
        if argv:
            command = run_command(from_ns, argv, command_timeout)
        else:
            result = run_probe(t, from_ns, to, proto=proto, port=port, timeout=timeout)
    return CaptureRun(t.name, pts, filt, rows(cap), dict(cap.pcaps), result, command)
