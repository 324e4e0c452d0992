"""Shared fixtures.

Integration tests (marked `root`) build real namespaces. Every name they use
carries a token unique to this test run, so runs can go side by side, and
every namespace a test makes is removed when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

RUN = secrets.token_hex(2)  # 4 hex chars, unique per pytest process


def _can_build_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("nsenter") is not None


_SKIPPED_FOR_ROOT: list[str] = []


def pytest_collection_modifyitems(config, items):
    if _can_build_namespaces():
        return
    skip = pytest.mark.skip(reason="needs root to build namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
            _SKIPPED_FOR_ROOT.append(item.nodeid)


def pytest_runtest_logstart(nodeid, location):
    """Record the test that starts, for scripts/pytest-run to name if the process dies."""
    path = os.environ.get("NATNS_TEST_CURRENT")
    if path:
        with open(path, "w") as fh:
            fh.write(nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say in one line that the integration tests did not run, and why."""
    if _SKIPPED_FOR_ROOT:
        terminalreporter.write_line(
            f"natns: {len(_SKIPPED_FOR_ROOT)} integration tests were skipped: they need root to build "
            "namespaces (run them with sudo)", yellow=True)


@pytest.fixture
def uid(request) -> str:
    """A short token unique to this test in this run, for names (<= 6 chars)."""
    return RUN + secrets.token_hex(1)


@pytest.fixture
def scratch_ns(uid):
    """Factory: make a bare namespace with a unique name; all are removed after."""
    from pyroute2 import netns

    made: list[str] = []

    def make(label: str = "s") -> str:
        name = f"t{uid}-{label}"
        netns.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            netns.remove(name)
        except OSError:
            pass
