"""natns.locks: exclusive flock locks whose files can be removed while others wait.

No root needed: everything happens in a temporary directory.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from natns.locks import exclusive


def _same_file(fd: int, path: str) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _blocked_on(ino: int, timeout: float = 10.0) -> bool:
    """Whether some flock waiter is blocked on the file with inode `ino` (per /proc/locks,
    where a blocked request is listed with '->')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/locks") as fh:
            for line in fh:
                fields = line.split()
                if "->" in fields and "FLOCK" in fields:
                    dev_ino = fields[fields.index("FLOCK") + 4]
                    if int(dev_ino.rsplit(":", 1)[1]) == ino:
                        return True
        time.sleep(0.01)
    return False


def test_the_lock_file_is_created_held_and_removed(tmp_path):
    path = str(tmp_path / "sub" / "lab.lock")
    with exclusive(path) as held:
        assert _same_file(held.fd, path)
        held.remove()
        assert not os.path.exists(path)
        held.remove()  # idempotent
    assert not os.path.exists(path)
    with exclusive(path):  # and it can be taken again: a new file
        assert os.path.exists(path)
    assert os.path.exists(path)  # without remove(), the file stays


def test_an_exception_in_the_block_releases_the_lock(tmp_path):
    path = str(tmp_path / "lab.lock")
    with pytest.raises(RuntimeError):
        with exclusive(path):
            raise RuntimeError("boom")
    got = threading.Event()

    def take():
        with exclusive(path):
            got.set()

    t = threading.Thread(target=take)
    t.start()
    t.join(10)
    assert got.is_set()


def test_a_waiter_on_a_removed_lock_file_retries_on_the_current_one(tmp_path):
    """The race removal has to survive: W waits on the file; the holder removes it and
    releases; a newcomer N creates a new file and locks it. W's flock then succeeds on
    the dead file, and without the re-check W and N would both hold "the" lock."""
    path = str(tmp_path / "lab.lock")
    inside: list[str] = []
    errors: list[str] = []
    w_done = threading.Event()

    def critical(who: str, fd: int, seconds: float) -> None:
        if inside:
            errors.append(f"{who} entered while {inside} held the lock")
        if not _same_file(fd, path):
            errors.append(f"{who} holds a lock on a file that is no longer at the path")
        inside.append(who)
        time.sleep(seconds)
        inside.remove(who)

    def waiter():
        with exclusive(path) as held:
            critical("W", held.fd, 0.1)
        w_done.set()

    with exclusive(path) as held:
        first_ino = os.fstat(held.fd).st_ino
        w = threading.Thread(target=waiter)
        w.start()
        assert _blocked_on(first_ino), "the waiter never blocked on the lock"
        held.remove()
    # Released: W wakes on the dead file. N takes the path's new file meanwhile.
    with exclusive(path) as held:
        critical("N", held.fd, 0.3)
    w.join(10)
    assert w_done.is_set()
    assert errors == []


def _worker(path: str, marker: str, rounds: int, q) -> None:
    bad = 0
    for i in range(rounds):
        with exclusive(path) as held:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                bad += 1  # someone else is inside too
                continue
            os.close(fd)
            if not _same_file(held.fd, path):
                bad += 1
            time.sleep(0.001)
            os.unlink(marker)
            if i % 2:
                held.remove()  # like `down`: the file goes, others keep coming
    q.put(bad)


def test_processes_taking_and_removing_the_lock_never_overlap(tmp_path):
    path = str(tmp_path / "lab.lock")
    marker = str(tmp_path / "inside")
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, marker, 60, q)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    assert results == [0, 0, 0, 0]
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
