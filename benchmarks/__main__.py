"""`make bench` / `python -m benchmarks`: every benchmark, one table each, one JSON file.

    python -m benchmarks                  # all five, default sizes
    python -m benchmarks --only bringup,fip
    python -m benchmarks --smoke          # smallest sizes, one repetition (what the smoke test runs)
    python -m benchmarks --out out/bench.json

Each benchmark also runs alone: ``python -m benchmarks.bringup`` (and .fip,
.dataplane, .snat, .pcapdecode, .startup, .ovn), with its own --sizes/--reps. Results go to out/bench.json
(out/ is ignored by git); docs/performance.md explains every figure.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from . import bringup, dataplane, fip, ovn, pcapdecode, snat, startup
from .common import machine_info, print_results, write_json

#: name -> (module, default sizes, default repetitions)
SUITE = {
    "startup": (startup, [1], 15),
    "bringup": (bringup, [10, 100, 500], 3),
    "fip": (fip, [10, 100, 1000, 5000], 5),
    "dataplane": (dataplane, [4], 3),
    "snat": (snat, [1000], 3),
    "pcapdecode": (pcapdecode, [5000], 5),
    "ovn": (ovn, [10, 100], 2),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--only", default=",".join(SUITE), help="comma-separated benchmarks to run")
    p.add_argument("--smoke", action="store_true", help="smallest size, one repetition each")
    p.add_argument("--reps", type=int, default=None, help="override every benchmark's repetitions")
    p.add_argument("--out", default="out/bench.json")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SUITE)}")
    info = machine_info()
    t_all = time.perf_counter()
    results, failed = [], []
    for name in names:
        mod, sizes, reps = SUITE[name]
        if args.smoke:
            sizes, reps = [min(sizes)], 1
        if args.reps:
            reps = args.reps
        print(f"== {name}: sizes {sizes}, {reps} repetition(s)", flush=True)
        t0 = time.perf_counter()
        try:
            res = mod.run(sizes, reps, smoke=args.smoke)
        except KeyboardInterrupt:
            print("interrupted; everything the benchmarks made has been removed", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        res.seconds = time.perf_counter() - t0
        results.append(res)
        print_results([res])
        write_json(results, args.out, {**info, "seconds_so_far": round(time.perf_counter() - t_all, 1)})
    info["seconds"] = round(time.perf_counter() - t_all, 1)
    write_json(results, args.out, info)
    print(f"all benchmarks: {info['seconds']:.0f} s; wrote {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
