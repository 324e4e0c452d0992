"""What every benchmark shares: names, cleanup, repetitions, the table and the JSON.

Rules every benchmark keeps (see docs/performance.md):

* every name it makes starts with a prefix unique to the run (``b`` and four
  hex digits), so runs go side by side with tests and with each other;
* everything it makes is removed at the end, also on failure and Ctrl-C
  (`Run` is a context manager; SIGTERM is turned into KeyboardInterrupt);
* addresses only from 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and,
  where a benchmark needs more, 100.64.0.0/16; traffic only between the
  namespaces it built; nothing in the main namespace is changed;
* every figure is measured several times in one run, variants interleaved
  (A B C, A B C, ...) so background noise hits them alike, and reported as
  median with min and max; goals are ratios of figures from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from natns.kernel import netns

OUT_DEFAULT = "out/bench.json"


@dataclass
class Figure:
    """One measured quantity: its samples, unit, and where it belongs in the table."""

    bench: str
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def to_json(self) -> dict:
        return {
            "bench": self.bench, "name": self.name, "unit": self.unit, "params": self.params,
            "median": self.median, "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None, "n": len(self.samples),
            "samples": self.samples, "note": self.note,
        }


@dataclass
class Goal:
    """A goal from the issue, checked on this run's figures."""

    bench: str
    text: str
    value: float | None
    target: str
    met: bool | None
    note: str = ""

    def to_json(self) -> dict:
        return {"bench": self.bench, "goal": self.text, "value": self.value, "target": self.target,
                "met": self.met, "note": self.note}


class Results:
    """Figures and goals of one benchmark (or of the whole suite)."""

    def __init__(self, bench: str):
        self.bench = bench
        self.figures: list[Figure] = []
        self.goals: list[Goal] = []
        self.info: dict = {}
        self.seconds: float = 0.0

    def figure(self, name: str, unit: str, note: str = "", **params) -> Figure:
        """The figure called `name` with `params`, made on first use."""
        for f in self.figures:
            if f.name == name and f.params == params:
                return f
        f = Figure(self.bench, name, unit, params=params, note=note)
        self.figures.append(f)
        return f

    def add(self, name: str, unit: str, value: float, note: str = "", **params) -> None:
        self.figure(name, unit, note, **params).samples.append(value)

    def get(self, name: str, **params) -> float | None:
        for f in self.figures:
            if f.name == name and f.params == params:
                return f.median
        return None

    def goal(self, text: str, value: float | None, target: str, ok: Callable[[float], bool], note: str = "") -> None:
        self.goals.append(Goal(self.bench, text, value, target, None if value is None else bool(ok(value)), note))

    def to_json(self) -> dict:
        return {"bench": self.bench, "seconds": round(self.seconds, 1), "info": self.info,
                "figures": [f.to_json() for f in self.figures], "goals": [g.to_json() for g in self.goals]}


def compile_natns() -> bool:
    """Byte-compile natns's modules (into its __pycache__ folders, ignored by git), as pip
    does when it installs a package: the `natns` processes timed here then start as an
    installed natns does. Without it, a machine with PYTHONDONTWRITEBYTECODE set (this
    one has it) compiles every natns module in every process: ~0.1-0.2 s of each
    `natns up`. True if every module compiled."""
    import compileall

    import natns

    return bool(compileall.compile_dir(os.path.dirname(natns.__file__), quiet=1))


def machine_info() -> dict:
    """Where the numbers come from."""
    info = {"natns_bytecode": "compiled" if compile_natns() else "not compiled",
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
            "kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    for tool in ("nft", "iptables", "ip", "iperf3"):
        try:
            out = subprocess.run([tool, "--version" if tool != "ip" else "-V"], capture_output=True, text=True,
                                 timeout=5)
            info[tool] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            info[tool] = None
    from natns.kernel import nftlib

    info["natns_nft_in_process"] = nftlib.in_process()
    return info


# ----------------------------------------------------------------------------- run scope and cleanup


def remove_lab_locks(prefix: str) -> None:
    """The lab lock files (/run/natns/labs/LAB.lock) of labs named with `prefix`: a lab
    whose namespaces were removed directly, not by `natns down`, leaves its lock file."""
    from natns.lab import LOCK_DIR

    try:
        names = os.listdir(LOCK_DIR)
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith(prefix) and n.endswith(".lock"):
            try:
                os.unlink(os.path.join(LOCK_DIR, n))
            except FileNotFoundError:
                pass


class Run:
    """One benchmark run: a unique prefix, a scratch directory, and cleanup of both.

    ``with Run("bringup") as run:`` — every namespace whose name starts with
    ``run.prefix`` is deleted on the way out, whatever happened, and the lab lock
    files of labs so named.
    """

    def __init__(self, bench: str, prefix: str | None = None):
        self.bench = bench
        self.prefix = prefix or ("b" + secrets.token_hex(2))
        self.tmp = ""
        self._old_term = None
        self.cleanups: list[Callable[[], None]] = []

    def __enter__(self) -> "Run":
        if os.geteuid() != 0:
            raise SystemExit("benchmarks build network namespaces: run them as root")
        self.tmp = tempfile.mkdtemp(prefix=f"natns-bench-{self.prefix}-")
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._old_term = signal.signal(signal.SIGTERM, _term)
        return self

    def __exit__(self, *exc) -> None:
        try:
            for fn in reversed(self.cleanups):
                try:
                    fn()
                except Exception as e:  # keep cleaning
                    print(f"cleanup: {e}", file=sys.stderr)
            remove_namespaces(self.prefix)
            remove_lab_locks(self.prefix)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)


def _term(signum, frame):
    raise KeyboardInterrupt


def our_namespaces(prefix: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(prefix)]


def remove_namespaces(prefix: str) -> int:
    """Delete every namespace whose name starts with `prefix`; how many there were."""
    names = our_namespaces(prefix)
    for n in names:
        netns.remove(n)
    return len(names)


def netns_alive() -> int | None:
    """Network namespaces the kernel still holds (slab objects), or None if unreadable."""
    try:
        with open("/proc/slabinfo") as fh:
            for line in fh:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def settle(target: int | None, timeout: float = 60.0) -> float:
    """Wait (bounded) until the kernel has freed deleted namespaces; seconds waited.

    Deleting a namespace only unmounts it: the kernel frees it later on a
    work queue (cleanup_net), and that work competes with whatever is
    measured next. `target` is the count to get back to (other users of the
    machine make their own, so "close to it, or no longer falling" is enough).
    """
    t0 = time.perf_counter()
    last, still = None, 0
    while time.perf_counter() - t0 < timeout:
        n = netns_alive()
        if n is None:
            break
        if target is not None and n <= target + 4:
            break
        if last is not None and n >= last:
            still += 1
            if still >= 10:  # not falling for a second: others are making namespaces
                break
        else:
            still = 0
        last = n
        time.sleep(0.1)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- timing helpers


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of fn()."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def run_script(path: str, timeout: float = 900) -> float:
    """Run a generated script with bash; seconds it took. Raises on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", path], capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{path} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return dt


def natns_cli(*args: str, expect: str | None = None, timeout: float = 900) -> tuple[float, int]:
    """`natns ARGS...` as a process of its own: (seconds, its peak resident memory in KiB).

    The memory is that child's own ru_maxrss (from wait4), so nothing else counts.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "natns.cli", *args], stdout=out, stderr=err)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C, SIGTERM: the child must be gone before Run removes namespaces
            proc.kill()
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            raise
        finally:
            killer.cancel()
        dt = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        text, etext = out.read(), err.read()
    if proc.returncode != 0 or (expect and expect not in text):
        raise RuntimeError(f"natns {' '.join(args)}: exit {proc.returncode}: {text[-200:]} {etext[-300:]}")
    return dt, usage.ru_maxrss


# ----------------------------------------------------------------------------- output


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("x", "ratio"):
        return f"{v:.2f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def print_results(results: Iterable[Results]) -> None:
    """The figures (median, min, max) and the goals, as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(120, Console().width))
    for res in results:
        t = Table(title=f"{res.bench}  ({res.seconds:.0f} s)", title_justify="left")
        for col in ("figure", "params", "median", "min", "max", "unit", "n"):
            t.add_column(col, justify="right" if col in ("median", "min", "max", "n") else "left")
        for f in res.figures:
            params = " ".join(f"{k}={v}" for k, v in f.params.items())
            t.add_row(f.name, params, fmt(f.median, f.unit), fmt(min(f.samples) if f.samples else None, f.unit),
                      fmt(max(f.samples) if f.samples else None, f.unit), f.unit, str(len(f.samples)))
        console.print(t)
        if res.goals:
            g = Table(title=f"{res.bench}: goals", title_justify="left")
            for col in ("goal", "value", "target", "met", "note"):
                g.add_column(col)
            for goal in res.goals:
                met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[goal.met]
                g.add_row(goal.text, fmt(goal.value, "x"), goal.target, met, goal.note)
            console.print(g)


def write_json(results: list[Results], path: str, info: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"machine": info, "results": [r.to_json() for r in results]}, fh, indent=1)
        fh.write("\n")


def parse_args(bench: str, sizes_default: str, reps_default: int, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{bench}")
    p.add_argument("--sizes", default=sizes_default, help=f"comma-separated sizes (default {sizes_default})")
    p.add_argument("--reps", type=int, default=reps_default, help=f"repetitions (default {reps_default})")
    p.add_argument("--smoke", action="store_true", help="smallest size, one repetition (for the smoke test)")
    p.add_argument("--out", default=f"out/bench-{bench}.json", help="where to write the JSON")
    return p.parse_args(argv)


def sizes_of(args) -> list[int]:
    return [int(s) for s in str(args.sizes).split(",") if s.strip()]


def main_for(bench: str, run_fn, sizes_default: str, reps_default: int, argv=None) -> Results:
    """`python -m benchmarks.<bench>`: parse options, run, print, write JSON (machine_info
    byte-compiles natns first: `compile_natns`)."""
    args = parse_args(bench, sizes_default, reps_default, argv)
    sizes = sizes_of(args)
    if args.smoke:
        sizes, args.reps = [min(sizes)], 1
    info = machine_info()
    t0 = time.perf_counter()
    res = run_fn(sizes, args.reps, smoke=args.smoke)
    res.seconds = time.perf_counter() - t0
    print_results([res])
    write_json([res], args.out, info)
    print(f"wrote {args.out}")
    return res
