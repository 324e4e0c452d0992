"""Ctrl-C during `natns demo` says what happened (issue 16 item 2): the demo removed its
namespaces, so not "run the same command again to converge, or `natns down` to remove"."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from natns import down_lab
from natns.kernel import netns as kns

from .reliability_tools import ROOT
from .verify_tools import tcpdumps_for

pytestmark = pytest.mark.root


def demo_names(prefix: str) -> list[str]:
    return [n for n in kns.list_names() if n.startswith(prefix + "-")]


def test_ctrl_c_during_the_demo_says_its_namespaces_are_removed_and_exits_130():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NATNS_TEST_KILL_AT_STEP", None)
    proc = subprocess.Popen([sys.executable, "-m", "natns.cli", "demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    prefix = None
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"Step 1 - " not in seen:  # the demo has printed its first step
            assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, "the demo ended before its first step: " + seen.decode(errors="replace")[-2000:]
                seen += chunk
            m = re.search(rb"(demo[0-9a-f]{4})-tenant1", seen)
            prefix = prefix or (m and m.group(1).decode())
        assert prefix and demo_names(prefix), seen.decode(errors="replace")[-2000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if prefix:
            down_lab(prefix)
    err = err.decode()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip() == "natns: interrupted; the demo's namespaces are removed", err
    assert "run the same command again" not in err
    assert demo_names(prefix) == []
    assert tcpdumps_for(prefix) == []  # its captures are stopped too
