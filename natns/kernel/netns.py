"""Network namespaces: create, remove, list, and open a netlink handle in one.

Namespaces are named files under /run/netns, as with `ip netns`. A netlink
socket for a namespace is made on a thread that entered it (setns), so no
child process is forked per namespace and nothing is created by accident.
"""

from __future__ import annotations

import errno
import os
import socket

from pyroute2 import IPRoute
from pyroute2 import netns as _netns

from ..errors import KernelError
from .nsexec import NETNS_DIR, call_in

NETLINK_ROUTE = 0


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
    if exists(name):
        raise KernelError(f"namespace {name} already exists")
    try:
        _netns.create(name)
    except OSError as exc:
        raise KernelError(f"ip netns add {name}: {exc.strerror or exc}") from None


def remove(name: str) -> None:
    """Remove namespace `name` (like `ip netns del`); no error if it is gone."""
    try:
        _netns.remove(name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise KernelError(f"ip netns del {name}: {exc.strerror or exc}") from None


def open_rtnl(name: str | None) -> IPRoute:
    """An IPRoute handle whose socket lives in namespace `name` (None: our own).

    The caller closes it. Raises FileNotFoundError if the namespace is gone.
    """
    if name is None:
        return IPRoute()
    sock = call_in(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    return IPRoute(fileno=sock.detach())
