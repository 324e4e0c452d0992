"""The running trace: tracing tables loaded and ``nft monitor`` running in each namespace,
always cleaned up (on error, Ctrl-C, SIGTERM), under the trace lock.

Traces take a lock (`_trace_lock`, its own flock file), so two traces never
share the tracing tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence

from ... import locks
from ...errors import KernelError, UserError
from ...kernel import netns, nsexec
from .tables import FAMILY, TABLE, remove_script, table_script

LOCK_PATH = "/run/natns/trace.lock"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup() -> None:
    """In the monitor's process before exec: SIGTERM when natns dies; no signals held back."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())



class _Monitor:
    """``nft -a monitor`` in one namespace, its output read line by line on a thread."""

    def __init__(self, ns: str):
        self.ns = ns
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = nsexec.popen(ns, ["nft", "-a", "monitor"], stdout=subprocess.PIPE, stderr=self._err,
                                 stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                                 start_new_session=True, preexec_fn=_child_setup)
        self._thread = threading.Thread(target=self._read, name=f"natns-trace-{ns}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> None:
        """Wait until a line starting with `prefix` was printed; KernelError if not in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(ln.startswith(prefix) for ln in self.lines):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            else:
                return
        self._err.seek(0)
        why = self._err.read().strip() or ("it exited" if self.proc.poll() is not None else "no output")
        raise KernelError(f"nft monitor in namespace {self.ns} did not start: {why}")

    def stop(self) -> None:
        """Stop the monitor (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):
            self._err.close()


class TraceSession:
    """Tracing on in a set of namespaces: tables loaded, monitors running.

    A context manager; leaving it (normally, on error or on
    KeyboardInterrupt) stops every monitor and deletes every tracing table,
    with SIGINT/SIGTERM held off until that is done.
    """

    def __init__(self, namespaces: Sequence[str], match_rules: Sequence[str], ready_timeout: float = 5.0,
                 family: str = FAMILY):
        for ns in namespaces:
            if not ns or not netns.exists(ns):
                raise UserError(f"namespace {ns!r} does not exist")
        self.namespaces = list(namespaces)
        self.family = family  # "ip6": an IPv6 trace's table, ip6 natns_trace
        self.script = table_script(match_rules, family)
        self.ready_timeout = ready_timeout
        self.monitors: dict[str, _Monitor] = {}
        self.lines: dict[str, list[str]] = {}

    def __enter__(self) -> TraceSession:
        try:
            # Tables first, so each monitor's rule cache holds the tracing rules.
            for ns in self.namespaces:
                nsexec.run(ns, ["nft", "-f", "-"], input=self.script)
            for ns in self.namespaces:
                with _signals_held():  # a monitor started is a monitor recorded (and stopped later)
                    self.monitors[ns] = _Monitor(ns)
            for ns, mon in self.monitors.items():
                self._wait_ready(ns, mon)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, ns: str, mon: _Monitor) -> None:
        """Make ruleset changes in `ns` until its monitor prints one: then it is listening."""
        deadline = time.monotonic() + self.ready_timeout
        n = 0
        while True:
            n += 1
            nsexec.run(ns, ["nft", "add", "chain", self.family, TABLE, f"ready{n}"])
            try:
                mon.wait_for(f"add chain {self.family} {TABLE} ready",
                             min(0.2, max(deadline - time.monotonic(), 0.01)))
                return
            except KernelError:
                if mon.proc.poll() is not None or time.monotonic() >= deadline:
                    raise

    def __exit__(self, *exc) -> None:
        self.close()

    def stop_monitors(self) -> None:
        """Stop every monitor and keep what each printed (in `lines`)."""
        for ns, mon in list(self.monitors.items()):
            try:
                mon.stop()
            finally:
                self.lines[ns] = list(mon.lines)
                del self.monitors[ns]

    def close(self) -> None:
        """Stop the monitors and delete the tracing tables; safe to call twice."""
        with _signals_held():
            errors = []
            try:
                self.stop_monitors()
            except Exception as exc:  # keep going: the tables must go too
                errors.append(str(exc))
            for ns in self.namespaces:
                if not netns.exists(ns):
                    continue
                try:
                    nsexec.run(ns, ["nft", "-f", "-"], input=remove_script(self.family), check=True)
                except Exception as exc:
                    errors.append(str(exc))
            if errors:
                raise KernelError("cleaning up after trace: " + "; ".join(errors))


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM/SIGHUP back (main thread only) while cleaning up."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a trace (treated like Ctrl-C: clean up, then stop)."""


@contextlib.contextmanager
def _term_as_interrupt():
    """Turn SIGTERM/SIGHUP into an exception for the duration (main thread only), so finally runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _trace_lock():
    """One trace at a time on this machine (natns's one flock helper; the file stays)."""
    with locks.exclusive(LOCK_PATH):
        yield
