"""Test hooks: kill natns at an exact point of `apply`, to test crash recovery.

Used only by the reliability tests (tests/integration/test_reliability.py,
tests/soak/); with the variable unset, which is always the case outside
those tests, nothing here runs. `natns.apply` looks at the environment once
per `apply` call and only imports this module when the variable is set.

``NATNS_TEST_KILL_AT_STEP=N``
    SIGKILL natns itself just before step N (1-based) of the plan it applies.
``NATNS_TEST_KILL_AT_STEP=N:during``
    SIGKILL natns, and any program it is running, while step N is in
    progress: as soon as a child process (iptables-restore, conntrack, nft)
    exists or a thread is inside libnftables running a command that
    changes rules (an nft transaction run in process). If step N does
    neither, natns is killed right after it.
``...:int`` (``N:int``, ``N:during:int``)
    SIGINT instead of SIGKILL, to natns and the programs it runs, as Ctrl-C
    in a terminal does: natns then stops the way it stops on Ctrl-C.

``NATNS_TEST_STARTUP_DELAY=SECONDS``
    (natns/_console.py) sleep that long at the end of start-up, with SIGINT still
    held, as a cold start on a loaded machine takes: a test's Ctrl-C then lands in
    the start-up window for sure.

Before dying the hook writes one line to stderr saying where it struck
(``natns: test hook: SIGKILL before step 7/880 (create_veth)``), so a test can
tell a kill inside a firewall transaction from one between steps.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

VARIABLE = "NATNS_TEST_KILL_AT_STEP"


class KillHook:
    """Parsed ``NATNS_TEST_KILL_AT_STEP``: which step, and before or during it."""

    def __init__(self, value: str):
        n, *modes = value.split(":")
        self.step = int(n)
        self.during = "during" in modes
        self.sig = signal.SIGINT if "int" in modes else signal.SIGKILL
        self._armed: threading.Event | None = None

    def before(self, i: int, total: int, action: str) -> None:
        """Called before step `i` runs."""
        if self._armed is not None and not self._armed.is_set():  # the armed step is over
            self._armed.set()
            die(f"after step {i - 1}/{total} (it ran no tool)", sig=self.sig)
        if i != self.step:
            return
        if not self.during:
            die(f"before step {i}/{total} ({action})", sig=self.sig)
            return
        self._armed = threading.Event()
        threading.Thread(target=_watch, args=(self._armed, f"step {i}/{total} ({action})", self.sig),
                         daemon=True, name="natns-test-kill").start()

    def after_all(self, total: int) -> None:
        """Called when every step ran: a `during` kill of the last step strikes here."""
        if self._armed is not None and not self._armed.is_set():
            self._armed.set()
            die(f"after step {total}/{total} (it ran no tool)", sig=self.sig)


def from_environment() -> KillHook | None:
    """The hook asked for by the environment, or None (the normal case)."""
    value = os.environ.get(VARIABLE)
    return KillHook(value) if value else None


def die(where: str, children: list[int] | None = None, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to `children` and this process, saying where on stderr first.

    SIGKILL does not return; SIGINT does, and Python raises KeyboardInterrupt
    in the main thread right after.
    """
    try:
        os.write(2, f"natns: test hook: {signal.Signals(sig).name} {where}\n".encode())
    except OSError:
        pass
    for pid in children or ():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    os.kill(os.getpid(), sig)


def _children() -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return out


def _in_nft_transaction(me: int) -> bool:
    """Whether another thread is running an nft command that changes rules, in process."""
    for tid, frame in sys._current_frames().items():
        if tid == me or not frame.f_code.co_filename.endswith("nftlib.py"):
            continue
        text = frame.f_locals.get("text")
        if isinstance(text, str) and not text.lstrip().startswith("list"):
            return True
    return False


def _watch(done: threading.Event, what: str, sig: int) -> None:
    # Spins (no sleep) while armed: an in-process nft transaction lasts about a
    # millisecond, and the library call releases the GIL, so a spinning watcher
    # on another CPU sees it.
    me = threading.get_ident()
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        kids = _children()
        where = (f"during {what}, while it ran child process(es) {kids}" if kids
                 else f"during {what}, inside libnftables" if _in_nft_transaction(me) else None)
        if where:
            done.set()
            die(where, kids, sig)
            return
