"""What natns needs from the system to act on namespaces, checked at the library's doors.

Every public entry point that enters or changes a namespace (`Lab.up`,
`down`, `status`, `run_checks`, `probe`, `capture`, `conntrack`, `trace`,
`diagnose`, ...) calls `require_root` first, so that a caller from Python
gets the same one-line PrivilegeError as the CLI, not a PermissionError from
deep inside pyroute2 or setns(2).
"""

from __future__ import annotations

import os

from .errors import PrivilegeError

#: Capabilities natns uses: CAP_NET_ADMIN (links, routes, nftables) and
#: CAP_SYS_ADMIN (setns(2) into a network namespace, mounting /run/netns).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def effective_caps() -> int | None:
    """The effective capability set of this process (None if /proc does not say)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


def missing_caps() -> list[str]:
    """The capabilities natns needs that this root process lacks (a restricted container)."""
    caps = effective_caps()
    if caps is None:
        return []
    return [name for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
            if not caps >> bit & 1]


def require_root(what: str) -> None:
    """Raise PrivilegeError unless natns can manage namespaces (`what`: the command or function)."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"natns {what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to enter namespaces); "
            f"run it with sudo"
        )
    lacking = missing_caps()
    if lacking:
        raise PrivilegeError(
            f"natns {what} needs {' and '.join(lacking)}, which this root process lacks "
            "(a container without them?)"
        )
