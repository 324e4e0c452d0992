"""Errors natns raises, split by who can fix them.

A `UserError` is something the person running natns can fix (bad topology
file, missing privileges, a name already taken by something natns did not
create). The CLI prints it as one line and exits with status 2. Anything else
is an internal failure: exit status 1 with the cause.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """The exit statuses of every natns command (documented in `natns --help`)."""

    OK = 0  # done; the check, probe or status holds
    FAILED = 1  # an internal failure, or a check, probe or status that does not hold
    USAGE = 2  # bad input or missing privileges: one line naming the problem
    INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT)


class NatnsError(Exception):
    """Base class of every error natns raises on purpose."""


class UserError(NatnsError):
    """A problem the user can fix; printed as one line, exit status 2 (ExitStatus.USAGE)."""


class TopologyError(UserError):
    """A topology file is invalid: names the file, the field path and the problem."""

    def __init__(self, file: str, path: str, problem: str):
        self.file = file
        self.path = path
        self.problem = problem
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {problem}")


class PrivilegeError(UserError):
    """natns needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for this command."""


class ForeignObjectError(UserError):
    """Something natns would create already exists and was not made by natns."""


class KernelError(NatnsError):
    """The kernel or a firewall tool refused a change; exit status 1."""
