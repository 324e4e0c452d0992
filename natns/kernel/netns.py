"""Network namespaces: create, remove, list, and open a netlink handle in one.

Namespaces are named files under /run/netns, as with `ip netns`. A netlink
socket for a namespace is made on a thread that entered it (setns), so no
child process is forked per namespace and nothing is created by accident.
A namespace is created the same way: a short-lived thread unshares its
network namespace and bind-mounts it under /run/netns (what `ip netns add`
does, without forking the whole Python process as pyroute2's `netns.create`
does: ~0.3 ms instead of ~4 ms).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from pyroute2 import netns as _netns

from ..errors import KernelError
from .nsexec import NETNS_DIR, _errno_error, _libc, call_in_new

MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 0x100000


def exists(name: str) -> bool:
    """True if namespace `name` exists under /run/netns."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def list_names() -> list[str]:
    """Names of all namespaces under /run/netns, sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create namespace `name` (like `ip netns add`); fail if it exists."""
    create_open(name, rtnl=False)


def create_open(name: str, rtnl: bool = True, mark: str | None = None):
    """Create namespace `name`; with `rtnl`, return an open `rtnl.Rtnl` socket in it.

    The socket is made on the same thread that made the namespace, which
    saves entering it again. The caller closes it.

    With `mark`, `lo` gets it as its alias (and is brought up) *before* the
    namespace appears under /run/netns, so no one, not natns after a crash
    either, ever sees the namespace without its ownership mark. The file the
    namespace is mounted on holds the mark too (hidden while mounted): a
    natns killed before the mount, or in `remove` between unmount and
    unlink, leaves a file that says whose it is (see `placeholder_mark`).
    Such a file, or an empty one left by `ip netns add`/`del`, is not a
    namespace (nothing is mounted on it) and is replaced.
    """
    if exists(name) and not _placeholder(name):
        raise KernelError(f"namespace {name} already exists")
    try:
        return _create(name, rtnl, mark)
    except OSError as exc:
        raise KernelError(f"ip netns add {name}: {exc.strerror or exc}") from None


def mounts_reach_the_system() -> bool:
    """Whether a namespace mounted under /run/netns from here outlives this process.

    `ip netns exec` runs its command in a mount namespace of its own whose mounts
    don't propagate back (a slave: `master:N` in /proc/self/mountinfo): a namespace
    made there vanishes when the command ends, leaving an empty file, and one removed
    there stays mounted everywhere else. So: the mount holding /run/netns must not be
    a slave only. The machine's (shared), or a container's own (private), is fine.
    (`nsenter --net=/run/netns/NAME` switches only the network namespace and is the
    way to run natns "inside" another namespace.)
    """
    try:
        with open("/proc/self/mountinfo") as fh:
            entries = [line.split(" - ")[0].split() for line in fh]
    except OSError:
        return True
    best, tags = "", []
    for e in entries:  # the mount covering /run/netns: the longest mount point above it
        point = e[4]
        if (NETNS_DIR == point or NETNS_DIR.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, tags = point, e[6:]
    return not (any(t.startswith("master:") for t in tags) and not any(t.startswith("shared:") for t in tags))


def _share_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does (so mounts propagate)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    d = NETNS_DIR.encode()
    done = False
    while _libc.mount(b"", d, b"none", ctypes.c_ulong(MS_SHARED | MS_REC), None) != 0:
        if done:
            raise _errno_error(f"mount --make-rshared {NETNS_DIR}")
        if _libc.mount(d, d, b"none", ctypes.c_ulong(MS_BIND | MS_REC), None) != 0:
            raise _errno_error(f"mount --rbind {NETNS_DIR}")
        done = True


def is_placeholder(name: str) -> bool:
    """Whether /run/netns/`name` is a file left by an interrupted create or remove (empty
    or holding a natns mark, nothing mounted on it), which `up` replaces."""
    return _placeholder(name)


def _placeholder(name: str) -> bool:
    """Whether /run/netns/`name` is a file with nothing mounted on it, empty or natns's.

    `ip netns add` (and natns) create the file, then bind-mount the
    namespace on it; `del` unmounts, then unlinks. A process killed in
    between leaves such a file: not a namespace, safe to replace.
    """
    return _read_placeholder(name) is not None


def placeholder_mark(name: str) -> str | None:
    """The natns mark written in /run/netns/`name`, if that is a file natns made for a
    namespace and nothing is mounted on it (natns was killed before mounting, or while
    removing it); None otherwise. `down` removes those of its lab."""
    text = _read_placeholder(name)
    return text or None


def _read_placeholder(name: str) -> str | None:
    """The content of a non-mounted regular file under /run/netns that is empty or holds a
    natns mark ("" when empty); None for anything else (a namespace, a foreign file)."""
    import stat

    path = os.path.join(NETNS_DIR, name)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 512 or os.path.ismount(path):
            return None
        with open(path, "rb") as fh:
            text = fh.read().decode(errors="replace").strip()
    except OSError:
        return None
    return text if text == "" or text.startswith("natns:") and "\n" not in text else None


def _create(name: str, rtnl: bool, mark: str | None = None):
    from .rtnl import here

    _share_dir()
    path = os.path.join(NETNS_DIR, name)
    if _placeholder(name):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0)
    try:
        if mark:
            os.write(fd, mark.encode() + b"\n")  # whose it is, should natns die before the mount
    finally:
        os.close(fd)

    def body():
        h = here() if rtnl or mark else None
        try:
            if mark:  # marked before it has a name: see create_open
                h.set_link(h.index("lo"), alias=mark, up=True)
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            if _libc.mount(src, path.encode(), b"none", ctypes.c_ulong(MS_BIND), None) != 0:
                raise _errno_error("mount")
        except BaseException:
            if h is not None:
                h.close()
            raise
        if rtnl:
            return h
        if h is not None:
            h.close()
        return None

    try:
        return call_in_new(body, name=f"natns-netns-add-{name}")
    except BaseException:
        _libc.umount2(path.encode(), 2)  # MNT_DETACH, if the mount was made
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def remove(name: str) -> None:
    """Remove namespace `name` (like `ip netns del`); no error if it is gone."""
    try:
        _netns.remove(name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise KernelError(f"ip netns del {name}: {exc.strerror or exc}") from None
