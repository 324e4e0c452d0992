"""Run things inside a network namespace.

Two ways, both without a shell:

* `run(ns, argv)` runs a program in namespace `ns` (by name under /run/netns,
  or None for the namespace natns itself runs in) through `nsenter --net=`.
  Arguments are passed as a list; no user string ever reaches a shell.
* `call_in(ns, fn)` runs a Python callable on a short-lived thread that has
  joined the namespace with setns(2). Used for /proc/sys/net (sysctls), which
  the kernel resolves against the calling thread's namespace, and for
  sockets (netlink, raw) that must be made inside a namespace.
* `call_in_new(fn)` runs it on a short-lived thread that has unshared a new
  network namespace (how `netns.create` makes one).
* `map_in(names, fn, on_error)` calls `fn(name)` in each of many namespaces
  on a thread (or a few) that enters one namespace after another (setns
  costs microseconds, a thread per namespace ~1 ms): how a lab is read.

Both run the callable through `_on_thread`, the one "run on a thread inside
a namespace" helper: the result is returned, an exception re-raised on the
caller's thread.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from typing import Callable, Sequence, TypeVar

from ..errors import KernelError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_here = threading.local()  # .ns: the namespace this thread entered through call_in


def ns_path(ns: str | None) -> str:
    """Path of the namespace file for `ns` (None: the namespace natns runs in)."""
    if ns is None:
        return f"/proc/{os.getpid()}/ns/net"
    return os.path.join(NETNS_DIR, ns)


def run(
    ns: str | None,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = 60,
) -> subprocess.CompletedProcess:
    """Run `argv` inside namespace `ns` and return the completed process.

    With `check`, a non-zero exit raises KernelError carrying the command and
    its stderr.
    """
    full = _full_argv(ns, argv)
    proc = subprocess.run(
        full, input=input, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        where = f" in namespace {ns}" if ns else ""
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise KernelError(
            f"{' '.join(argv)}{where} failed (exit {proc.returncode}): "
            + (" | ".join(msg[:5]) if msg else "no output")
        )
    return proc


def popen(ns: str | None, argv: Sequence[str], **kw) -> subprocess.Popen:
    """Start `argv` inside namespace `ns` without waiting (for tcpdump, responders)."""
    return subprocess.Popen(_full_argv(ns, argv), **kw)


def _full_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` as run from this thread so that it runs in `ns`.

    A thread already in `ns` (see call_in; None: the namespace natns runs in)
    starts the program directly: a child is born in its parent thread's
    namespace. Otherwise through ``nsenter --net=``.
    """
    if ns == getattr(_here, "ns", None):
        return list(argv)
    return ["nsenter", f"--net={ns_path(ns)}", "--", *argv]


def _on_thread(enter: Callable[[], None], fn: Callable[[], T], name: str, here: object) -> T:
    """Call `enter()` then `fn()` on a new thread; return fn's result or re-raise its error.

    `here` is what the thread records as the namespace it is in (see call_in's
    shortcut for nested calls).
    """
    result: list = []
    error: list = []

    def target() -> None:
        try:
            enter()
            _here.ns = here
            result.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def call_in(ns: str | None, fn: Callable[[], T]) -> T:
    """Call `fn()` on a thread that has entered namespace `ns`; return its result.

    A thread that is already in `ns` (the caller's own namespace for None, or
    a thread call_in made for `ns`) calls `fn` directly: nested calls for the
    same namespace cost no thread. None from a thread in a lab namespace
    enters the namespace natns runs in.
    """
    if getattr(_here, "ns", None) == ns:
        return fn()
    return _on_thread(lambda: _enter(ns), fn, f"natns-setns-{ns}", ns)


def _enter(ns: str | None) -> None:
    """Move the calling thread into namespace `ns` (setns(2)); OSError if it can't."""
    fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def map_in(names: Sequence[str], fn: Callable[[str], T], on_error: Callable[[str, OSError], T],
           workers: int = 1) -> list[T]:
    """[fn(name) called inside namespace `name`, for each name], in the order of `names`.

    `workers` threads (one unless asked) each take the next name, enter that namespace
    (setns(2); the thread is then "in" it for nested `call_in`s) and call `fn`
    there; the threads end when the names do. Where a namespace can't be
    entered (gone, not a namespace), `on_error(name, exc)` gives its result.
    An exception from `fn` is re-raised on the caller's thread (the first one).
    More than one thread helps only where the work waits on the kernel without the GIL;
    reading a lab is Python work between short syscalls, and each thread coming back
    from one waits for the GIL: a no-op `up` of 500 routers read 1,001 namespaces in
    1.4 s with one thread, 1.7 s with two, 1.9 s with three (docs/performance.md).
    """
    results: list = [None] * len(names)
    errors: list = []
    lock = threading.Lock()
    todo = iter(range(len(names)))

    def worker() -> None:
        while not errors:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            name = names[i]
            try:
                try:
                    _enter(name)
                except OSError as exc:
                    _here.ns = object()  # in no namespace call_in would match
                    results[i] = on_error(name, exc)
                    continue
                _here.ns = name
                results[i] = fn(name)
            except BaseException as exc:  # re-raised on the caller's thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, name=f"natns-map-in-{k}") for k in range(max(1, min(workers, len(names))))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as exc:  # Ctrl-C: let the threads stop at their next name
        errors.append(exc)
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
    return results


def call_in_new(fn: Callable[[], T], name: str = "natns-netns-add") -> T:
    """Call `fn()` on a thread that has unshared a new, empty network namespace; its result.

    The namespace lives as long as something holds it (a mount of
    /proc/self/task/TID/ns/net made by `fn`, a socket `fn` returns); nested
    call_in calls from `fn` never take it for another namespace.
    """
    def enter() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _errno_error("unshare")

    return _on_thread(enter, fn, name, object())
