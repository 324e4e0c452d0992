"""Helpers for the verify tests: processes, listening sockets, pcap files read by tcpdump."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

from natns.kernel import nsexec


def processes_mentioning(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains `token`."""
    out = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if token in cmd:
            out.append((int(pid), cmd))
    return out


def tcpdumps_for(token: str) -> list[tuple[int, str]]:
    """tcpdump processes whose command line mentions `token` (natns names pcaps after namespaces)."""
    return [(pid, cmd) for pid, cmd in processes_mentioning(token) if cmd.startswith("tcpdump")]


def processes_in_netns(ns: str) -> list[int]:
    """PIDs of processes whose network namespace is `ns` (compared by inode)."""
    target = os.stat(f"/run/netns/{ns}").st_ino
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == target:
                out.append(int(pid))
        except OSError:
            continue
    return out


def listening(ns: str) -> list[str]:
    """Listening TCP, bound UDP and raw sockets in namespace `ns`, as `ss` shows them."""
    text = nsexec.run(ns, ["ss", "-H", "-n", "-l", "-t", "-u", "-w"]).stdout
    return [ln for ln in text.splitlines() if ln.strip()]


def tcpdump_read(path: str) -> list[str]:
    """The packets of a pcap file as tcpdump itself prints them (an independent reader)."""
    proc = subprocess.run(["tcpdump", "-r", path, "-n", "-q"], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [re.sub(r"^\S+ ", "", ln) for ln in proc.stdout.splitlines() if ln.strip()]


def conntrack_tool(ns: str, *args: str) -> str:
    """`conntrack -L` (conntrack-tools, an independent reader) in namespace `ns`."""
    return nsexec.run(ns, ["conntrack", "-L", *args], check=False).stdout


def json_lines(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


class PcapCapture:
    """tcpdump in `ns` on `iface` with filter `bpf`, to the pcap `path`, listening before
    the constructor returns; `stop()` stops it (SIGINT, by its PID) and gives the pcap as
    `tcpdump -r` prints it (`read_args` added), one line a packet. Subclasses parse lines."""

    read_args: tuple[str, ...] = ()

    def __init__(self, ns: str, iface: str, path: str, bpf: str):
        self.path = path
        self.proc = nsexec.popen(ns, ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-w", path, bpf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()  # "listening on IFACE, ..." once the socket is open
        assert "listening" in line, line

    def lines(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        return subprocess.run(["tcpdump", "-r", self.path, "-n", "-tt", *self.read_args], capture_output=True,
                              text=True, timeout=30, check=True).stdout.splitlines()
