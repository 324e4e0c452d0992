"""Capture packets at several points at once with tcpdump, and line them up.

`Capture([(ns, iface), ...], filter)` is a context manager: it starts one
tcpdump per point, waits until each is listening, and on exit stops them all
(SIGINT, then SIGKILL if needed) so no tcpdump outlives it. `packets` then
holds what each point saw, parsed from tcpdump's own output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import KernelError
from ..kernel import nsexec

# 1700000000.123456 aa:bb:.. > cc:dd:.., ethertype IPv4 (0x0800), length 98: 192.0.2.2 > 203.0.113.114: ICMP echo request, id 1, seq 1, length 64
_LINE = re.compile(
    r"^(?P<ts>\d+\.\d+)\s+(?:(?P<smac>[0-9a-f:]{17}) > (?P<dmac>[0-9a-f:]{17}), [^:]*:\s+)?"
    r"(?P<src>\d+\.\d+\.\d+\.\d+)(?:\.(?P<sport>\d+))? > (?P<dst>\d+\.\d+\.\d+\.\d+)(?:\.(?P<dport>\d+))?: "
    r"(?P<info>.*)$"
)


@dataclass
class Packet:
    """One packet as tcpdump printed it at one point."""

    point: str  # "ns:iface"
    time: float
    src: str
    dst: str
    sport: int | None
    dport: int | None
    info: str

    @property
    def kind(self) -> str:
        """A short description: 'ICMP echo request', 'TCP', ..."""
        i = self.info
        if i.startswith("ICMP"):
            return i.split(",")[0]
        if i.startswith("Flags"):
            return "TCP " + i.split("]")[0].removeprefix("Flags ") + "]"
        return i.split(",")[0][:30]


@dataclass
class Capture:
    """tcpdump at several (namespace, interface) points at once."""

    points: list[tuple[str, str]]
    bpf: str = ""
    packets: dict[str, list[Packet]] = field(default_factory=dict)
    pcap_dir: str | None = None
    _procs: list = field(default_factory=list)

    def __enter__(self) -> "Capture":
        try:
            for ns, iface in self.points:
                self._start(ns, iface)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.2)  # let the last packets reach the capture buffers
        self._stop()

    def _start(self, ns: str, iface: str) -> None:
        out = tempfile.TemporaryFile(mode="w+")
        errf = tempfile.TemporaryFile(mode="w+")
        argv = ["tcpdump", "-i", iface, "-n", "-l", "-tt", "-e", "-U"]
        if self.pcap_dir:
            argv = ["tcpdump", "-i", iface, "-U", "-w", os.path.join(self.pcap_dir, f"{ns}_{iface}.pcap")]
        if self.bpf:
            argv.append(self.bpf)
        proc = nsexec.popen(ns, argv, stdout=out, stderr=errf, stdin=subprocess.DEVNULL,
                            start_new_session=True)
        self._procs.append((f"{ns}:{iface}", proc, out, errf))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            errf.seek(0)
            text = errf.read()
            if "listening on" in text:
                return
            if proc.poll() is not None:
                raise KernelError(f"tcpdump on {ns}:{iface} failed: {text.strip()}")
            time.sleep(0.02)
        raise KernelError(f"tcpdump on {ns}:{iface} did not start listening within 5 s")

    def _stop(self) -> None:
        for point, proc, out, errf in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for point, proc, out, errf in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(0)
            self.packets[point] = [p for p in (_parse(point, ln) for ln in out) if p]
            out.close()
            errf.close()
        self._procs.clear()

    def merged(self) -> list[Packet]:
        """Every packet of every point, in time order."""
        allp = [p for ps in self.packets.values() for p in ps]
        return sorted(allp, key=lambda p: p.time)


def _parse(point: str, line: str) -> Packet | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    return Packet(
        point=point,
        time=float(m["ts"]),
        src=m["src"],
        dst=m["dst"],
        sport=int(m["sport"]) if m["sport"] else None,
        dport=int(m["dport"]) if m["dport"] else None,
        info=m["info"],
    )
