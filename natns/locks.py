"""Exclusive locks on files (flock), whose files can be removed safely.

    with exclusive("/run/natns/labs/LAB.lock") as held:
        ...                       # nobody else holds it
        held.remove()             # optional: unlink the file; it is gone when we are done

Removing a lock file that others may be waiting on is safe with the usual
protocol: the remover unlinks the path while it holds the lock, and every
taker, once flock returns, checks that the file it locked is still the one
at the path (same device and inode). If it was unlinked (or replaced) in the
meantime, the lock it holds is on a dead file: it closes it and tries again
on the path, where it finds (or creates) the current one. So two takers can
never both believe they hold the lock, and a lab's lock file does not outlive
the lab (`down` removes it).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator


class Held:
    """A lock held on `path` (by the file descriptor `fd`)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.removed = False

    def remove(self) -> None:
        """Unlink the lock file now, while the lock is still held (a waiter then
        retries on a fresh file). Idempotent; a file already gone is fine."""
        if self.removed:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.removed = True


def _acquire(path: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                there = os.stat(path)
            except FileNotFoundError:
                there = None
            if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was removed (or replaced) while we waited: lock the current one


@contextmanager
def exclusive(path: str) -> Iterator[Held]:
    """Hold an exclusive flock on the file at `path` (created if missing, with its
    directory) for the `with` block; the lock is released when the block ends,
    also on an exception. `Held.remove()` unlinks the file before the release."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = _acquire(path)
    held = Held(path, fd)
    try:
        yield held
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
