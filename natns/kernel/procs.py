"""Stop the processes that run inside a network namespace, before it is removed.

Removing a namespace's name (/run/netns/NAME) does not end the processes in
it: they keep it alive, orphaned and unreachable. Docker, containerlab and
Mininet stop them; so does natns, for the namespaces it removes:

    stopped = stop_in_netns("tenant1")      # [Stopped(pid, namespace, command, signal)]

    with recording() as stopped:            # everything stopped inside the block, e.g.
        apply(plan)                         # by apply's delete-namespace steps


A process is "in" the namespace when its network namespace
(/proc/PID/ns/net) is the very namespace the file names: same device and
inode by os.stat, never a match on names. Each gets SIGTERM; what is still
running after a short grace gets SIGKILL. Signals go through a pidfd
(pidfd_open, pidfd_send_signal) opened before the process is checked, so a
PID reused in between is never signalled; without pidfd support, by PID.

Never signalled, whatever the file names: natns's own process, and any
process whose network namespace is natns's own, PID 1's or one of natns's
ancestors' (if the file names one of those, nothing is stopped at all).
"""

from __future__ import annotations

import os
import select
import signal
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from .nsexec import NETNS_DIR

GRACE = 1.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 5.0  # seconds to wait for SIGKILLed processes to be gone


@dataclass(frozen=True)
class Stopped:
    """A process that was stopped: its PID, the namespace it ran in, its command
    line, and the signal that ended it ("SIGTERM" or "SIGKILL")."""

    pid: int
    namespace: str
    command: str
    signal: str

    @property
    def program(self) -> str:
        """The short name of what ran (the command's first word, without its directory)."""
        first = self.command.split(" ", 1)[0]
        return os.path.basename(first) or first

    def to_json(self) -> dict:
        return {"pid": self.pid, "namespace": self.namespace, "command": self.command, "signal": self.signal}


class _Scanner:
    """Reads which processes are in which network namespace. A fresh one reads every
    process; one kept across calls (a `recording()`'s) reads each PID's namespace once
    and after that only new PIDs' (a `down` removing hundreds of namespaces then reads
    /proc/PID/ns/net of every process once, not once per namespace: ~20 us each)."""

    def __init__(self) -> None:
        self.ns_of: dict[int, tuple[int, int] | None] = {}
        self.by_ns: dict[tuple[int, int] | None, set[int]] = {}
        self._guard: tuple | None = None
        self._last: int | None = None

    def guard(self) -> tuple:
        """(our namespace, the protected ones), read once."""
        if self._guard is None:
            self._guard = (_key("/proc/self/ns/net"), _protected())
        return self._guard

    def pids(self, target: tuple[int, int]) -> set[int]:
        """PIDs in namespace `target` (some may have exited since: check each)."""
        last = _last_pid()
        if last is not None and last == self._last:
            return set(self.by_ns.get(target, ()))  # no process (or thread) was made since
        live = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        for pid in live - self.ns_of.keys():
            key = self.ns_of[pid] = _key(f"/proc/{pid}/ns/net")
            self.by_ns.setdefault(key, set()).add(pid)
        for pid in self.ns_of.keys() - live:  # exited: its number may come back as another
            self.by_ns.get(self.ns_of.pop(pid), set()).discard(pid)
        self._last = last
        return self.by_ns.get(target, set()) & live

    def forget(self) -> None:
        """Read every process afresh next time (after something ran in a namespace)."""
        self.ns_of.clear()
        self.by_ns.clear()
        self._last = None


def _last_pid() -> int | None:
    """The PID the kernel gave last in our PID namespace (/proc/loadavg's last field):
    unchanged means no process or thread was created in between."""
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


class _Session:
    """One `recording()`: what was stopped, and a scanner kept across its calls."""

    def __init__(self) -> None:
        self.got: list[Stopped] = []
        self.scan = _Scanner()


_sessions: ContextVar[tuple[_Session, ...]] = ContextVar("natns_procs_sessions", default=())


@contextmanager
def recording() -> Iterator[list[Stopped]]:
    """Collect, in the yielded list, every process `stop_in_netns` stops inside the block
    (so a caller of `apply` learns what its delete-namespace steps stopped).

    Inside the block, each process's namespace is read once: a process that moves
    into a namespace by setns() (not by fork) while the block runs is not seen."""
    session = _Session()
    token = _sessions.set((*_sessions.get(), session))
    try:
        yield session.got
    finally:
        _sessions.reset(token)


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _protected() -> set[tuple[int, int]] | None:
    """The namespaces whose processes are never signalled: ours, PID 1's, and those of
    our ancestors (the shell natns was started from, ...). PID 1's may be unreadable
    (no CAP_SYS_PTRACE over it, as in some sandboxes); then the ancestors' stand in for
    it. None when even ours can't be read (then nothing is signalled)."""
    own = _key("/proc/self/ns/net")
    if own is None:
        return None
    out = {own}
    pid, seen = os.getppid(), set()
    while pid and pid not in seen:
        seen.add(pid)
        key = _key(f"/proc/{pid}/ns/net")
        if key is not None:
            out.add(key)
        pid = _ppid(pid) if pid != 1 else None
    init = _key("/proc/1/ns/net")
    if init is not None:
        out.add(init)
    return out


def pids_in(path: str, _scan: _Scanner | None = None) -> list[int]:
    """PIDs of the processes whose network namespace is the one at `path` (not ours;
    empty when `path` is not a namespace, or is ours, PID 1's or an ancestor's)."""
    scan = _scan or _Scanner()
    target = _key(path)
    own, protected = scan.guard()
    if target is None or own is None or protected is None or target in protected:
        return []
    if target[0] != own[0]:  # not on nsfs: a plain file (a placeholder), not a mounted namespace
        return []
    return sorted(scan.pids(target) - {os.getpid()})


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        raw = b""
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if words:
        return " ".join(words)
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return f"[{fh.read().strip()}]"
    except OSError:
        return "?"


class _Proc:
    """One process to stop: a pidfd when the kernel has them, else its PID and namespace."""

    def __init__(self, pid: int, target: tuple[int, int]) -> None:
        self.pid = pid
        self.target = target
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, ProcessLookupError):
                raise
            self.fd = None  # no pidfd support: fall back to the PID

    def still_ours(self) -> bool:
        """Whether this is (still) a live process in the target namespace. With a pidfd:
        checked after it was opened, and the process still not exited afterwards, so
        /proc/PID was this very process."""
        if _key(f"/proc/{self.pid}/ns/net") != self.target:
            return False
        return not self.exited()

    def exited(self) -> bool:
        if self.fd is not None:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return bool(poller.poll(0))
        return _key(f"/proc/{self.pid}/ns/net") != self.target  # gone, a zombie, or reused

    def send(self, sig: int) -> bool:
        """Send `sig`; False if the process is already gone."""
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.still_ours():
                os.kill(self.pid, sig)
            else:
                return False
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wait(procs: list[_Proc], seconds: float) -> list[_Proc]:
    """Wait up to `seconds` for `procs` to exit; return those still running."""
    deadline = time.monotonic() + seconds
    left = [p for p in procs if not p.exited()]
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        step = min(remaining, 0.05)
        if all(p.fd is not None for p in left):
            poller = select.poll()  # a pidfd is readable once its process has exited
            for p in left:
                poller.register(p.fd, select.POLLIN)
            poller.poll(step * 1000)
        else:
            time.sleep(step)
        left = [p for p in left if not p.exited()]
    return left


def stop_processes(path: str, namespace: str, grace: float = GRACE, _scan: _Scanner | None = None) -> list[Stopped]:
    """Stop every process inside the network namespace at `path` (SIGTERM, then SIGKILL
    for what is left after `grace` seconds); return what was stopped, by PID.

    Looks again afterwards, in case one of them started another meanwhile (a few rounds)."""
    target = _key(path)
    if target is None:
        return []
    out: list[Stopped] = []
    for _ in range(3):
        stopped = _stop(pids_in(path, _scan), target, namespace, grace)
        if not stopped:
            break
        out += stopped
        if _scan is not None:
            _scan.forget()  # something ran here: read every process afresh for the next round
    return out


def _stop(pids: list[int], target: tuple[int, int], namespace: str, grace: float) -> list[Stopped]:
    procs: list[_Proc] = []
    try:
        for pid in pids:
            try:
                p = _Proc(pid, target)
            except ProcessLookupError:
                continue
            if p.still_ours():
                procs.append(p)
            else:
                p.close()
        commands = {p.pid: _cmdline(p.pid) for p in procs}
        termed = [p for p in procs if p.send(signal.SIGTERM)]
        stubborn = _wait(termed, grace)
        killed = [p for p in stubborn if p.send(signal.SIGKILL)]
        _wait(killed, KILL_WAIT)
        kill_pids = {p.pid for p in killed}
        return [Stopped(p.pid, namespace, commands[p.pid], "SIGKILL" if p.pid in kill_pids else "SIGTERM")
                for p in termed]
    finally:
        for p in procs:
            p.close()


def stop_in_netns(name: str, grace: float = GRACE) -> list[Stopped]:
    """Stop the processes inside the named namespace (/run/netns/NAME); see `stop_processes`.
    What was stopped is also added to every active `recording()`."""
    sessions = _sessions.get()
    stopped = stop_processes(os.path.join(NETNS_DIR, name), name, grace,
                             sessions[-1].scan if sessions else None)
    for session in sessions:
        session.got.extend(stopped)
    return stopped
