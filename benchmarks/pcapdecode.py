"""pcap decoding for `natns capture`: dpkt against scapy, the choice issue 13 asked to measure.

Both decode the same real capture, tests/unit/data/capture_dual.pcap (IPv4 and IPv6:
ICMP/ICMPv6 echo and errors, neighbour discovery, MLD behind a hop-by-hop header, TCP,
UDP, a fragmented v6 datagram; how it was made: capture_pcap.py beside it), repeated to
`size` packets, into the fields natns's `Packet` holds (addresses, ports, ICMP type/code/
id/seq, TCP flags/seq/ack, TTL/hop limit, payload). Figures, variants interleaved per
repetition:

* decode time per packet, each library, and the ratio scapy / dpkt;
* import time of each library in a fresh interpreter, less a bare interpreter's start
  (what `natns capture` pays once, and why the import stays inside `read_pcap`).

No namespaces, no root. Run alone: ``python -m benchmarks.pcapdecode [--sizes 5000] [--reps 5]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .common import Results, main_for

BENCH = "pcapdecode"
PCAP = os.path.join(os.path.dirname(__file__), "..", "tests", "unit", "data", "capture_dual.pcap")


def frames() -> list[tuple[float, bytes]]:
    import dpkt

    with open(PCAP, "rb") as fh:
        return [(float(ts), bytes(buf)) for ts, buf in dpkt.pcap.Reader(fh)]


def decode_dpkt(frames: list[tuple[float, bytes]]) -> int:
    """natns's own decoder (dpkt), frame by frame; the number of IP packets."""
    import dpkt

    from natns.verify import capture

    n = 0
    for ts, f in frames:
        if capture._frame("p", ts, f, 1, dpkt) is not None:
            n += 1
    return n


def decode_scapy(frames: list[tuple[float, bytes]]) -> int:
    """The same fields with scapy's layers; the number of IP packets."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, _ICMPv6
    from scapy.layers.l2 import Ether

    n = 0
    for ts, f in frames:
        e = Ether(f)
        ip = e.getlayer(IP) or e.getlayer(IPv6)
        if ip is None:
            continue
        n += 1
        fields = [e.src, e.dst, ip.src, ip.dst, getattr(ip, "ttl", None) or getattr(ip, "hlim", None)]
        if e.haslayer(TCP):
            t = e[TCP]
            fields += [t.sport, t.dport, t.seq, t.ack, str(t.flags), bytes(t.payload)]
        elif e.haslayer(UDP):
            u = e[UDP]
            fields += [u.sport, u.dport, bytes(u.payload)]
        elif e.haslayer(ICMP):
            i = e[ICMP]
            fields += [i.type, i.code, i.id, i.seq, bytes(i.payload)]
        elif e.haslayer(_ICMPv6):
            i = e[_ICMPv6]
            fields += [i.type, i.code, getattr(i, "id", None), getattr(i, "seq", None)]
    return n


def import_seconds(module: str | None) -> float:
    """Wall time of a fresh interpreter that imports `module` (None: imports nothing)."""
    code = f"import {module}" if module else "pass"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


DECODERS = {"dpkt": decode_dpkt, "scapy": decode_scapy}
IMPORTS = {"dpkt": "dpkt", "scapy": "scapy.all"}


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    base = frames()
    size = sizes[0]
    work = (base * (size // len(base) + 1))[:size]
    res.info.update(pcap=os.path.relpath(PCAP), frames_in_pcap=len(base), packets=size)
    for rep in range(reps):
        order = list(DECODERS)[rep % 2:] + list(DECODERS)[:rep % 2]
        per = {}
        for name in order:
            t0 = time.perf_counter()
            n = DECODERS[name](work)
            per[name] = (time.perf_counter() - t0) / len(work) * 1e6
            res.add("decode time per packet", "us", per[name], library=name)
            res.info[f"ip_packets_{name}"] = n
        res.add("decode scapy / dpkt", "x", per["scapy"] / per["dpkt"])
        bare = import_seconds(None)
        for name in order:
            res.add("import time", "ms", (import_seconds(IMPORTS[name]) - bare) * 1000, library=name)
    res.goal("dpkt decodes faster than scapy", res.get("decode scapy / dpkt"), "> 1", lambda x: x > 1)
    return res


if __name__ == "__main__":
    main_for(BENCH, run, "5000", 5)
