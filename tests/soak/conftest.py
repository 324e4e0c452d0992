"""Soak tests (`make soak`): the long versions of the reliability tests.

Each test adds its figures to `figures` (name -> lines); they are printed at
the end of the run, and written to the file named by NATNS_SOAK_REPORT if
set. docs/reliability.md quotes the figures of the last run.
"""

from __future__ import annotations

import os
import time

import pytest

_FIGURES: dict[str, list[str]] = {}
_STARTED = time.monotonic()


@pytest.fixture
def figures(request):
    """Record lines of figures for this test: figures("...")."""
    lines = _FIGURES.setdefault(request.node.name, [])
    return lines.append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _FIGURES:
        return
    out = [f"natns soak figures (run took {time.monotonic() - _STARTED:.0f} s)"]
    for name, lines in _FIGURES.items():
        out.append(f"{name}:")
        out += [f"    {line}" for line in lines]
    terminalreporter.write_sep("=", "soak figures")
    for line in out:
        terminalreporter.write_line(line)
    path = os.environ.get("NATNS_SOAK_REPORT")
    if path:
        with open(path, "w") as fh:
            fh.write("\n".join(out) + "\n")
