"""Start-up: `natns --help` and `natns status` with no labs, as whole processes.

Next to them, what no natns code can go below: the interpreter starting and
exiting (`python -c pass`), and the interpreter importing click (what
`--help` renders with); and what every `natns up` pays before it reads a
file: the imports of the model (pydantic), the kernel layer (pyroute2's
message classes), YAML and the planner ("natns up's imports"). `status` with no labs is measured twice: in a mount
namespace of its own whose /run/netns is empty (no namespaces at all: natns
needs to ask the kernel nothing), and as the machine is, where the
namespaces of others (tests, other labs) are there and each one's mark must
be read. Variants take turns; every figure is median, min and max.

Run alone: ``python -m benchmarks.startup [--reps 15]``.
"""

from __future__ import annotations

import subprocess
import sys
import time

from natns.kernel import netns

from .common import Results, main_for

BENCH = "startup"
PY = sys.executable


def _cmd(name: str) -> list[str]:
    natns = [PY, "-m", "natns.cli"]
    return {
        "python -c pass": [PY, "-c", "pass"],
        "python -c 'import click'": [PY, "-c", "import click"],
        "natns up's imports": [PY, "-c", "import natns.cli.lifecycle, natns.lab, natns.apply, natns.engines.kernel"],
        "natns --help": [*natns, "--help"],
        "natns status, no namespaces": ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                        'mount -t tmpfs natns-bench /run/netns && exec "$@"', "sh",
                                        *natns, "status"],
        "natns status, no labs, the machine's namespaces": [*natns, "status"],
    }[name]


VARIANTS = ("python -c pass", "python -c 'import click'", "natns up's imports", "natns --help",
            "natns status, no namespaces", "natns status, no labs, the machine's namespaces")


def run(sizes: list[int], reps: int, smoke: bool = False) -> Results:
    res = Results(BENCH)
    reps = max(reps, 1) if smoke else max(reps, 5)
    res.info["namespaces on the machine"] = len(netns.list_names())
    for rep in range(reps):
        k = rep % len(VARIANTS)
        for v in VARIANTS[k:] + VARIANTS[:k]:
            t0 = time.perf_counter()
            proc = subprocess.run(_cmd(v), capture_output=True, text=True, timeout=60)
            dt = time.perf_counter() - t0
            if proc.returncode != 0 and "status" not in v:
                raise RuntimeError(f"{v}: exit {proc.returncode}: {proc.stderr[-300:]}")
            if v == "natns status, no namespaces" and "no natns labs" not in proc.stdout:
                raise RuntimeError(f"{v}: {proc.stdout[-200:]} {proc.stderr[-300:]}")
            res.add(v, "s", dt)
    for v in ("natns --help", "natns status, no namespaces", "natns status, no labs, the machine's namespaces"):
        res.goal(f"{v} < 0.12 s", res.get(v), "< 0.12 s", lambda x: x < 0.12,
                 note="" if "machine" not in v else f"{res.info['namespaces on the machine']} namespaces present")
    floor = res.get("python -c pass")
    if floor:
        for v in VARIANTS[1:]:
            res.add(f"{v} / python -c pass", "x", res.get(v) / floor)
    return res


def main(argv=None) -> Results:
    return main_for(BENCH, run, "1", 15, argv)


if __name__ == "__main__":
    main()
