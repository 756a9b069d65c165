"""Sparsity detection time: lazyhess against asdex on the benchmark suite.

Prints a markdown table. Both detectors run in this process on the same functions
(float32, as in PROBLEMS.md); times are medians and include tracing the jaxpr. Peak memory
is what tracemalloc sees during one lazyhess detection (NumPy/SciPy buffers).

    python -m benchmarks.bench_sparsity [--sizes 1e3 1e4 1e5 1e6] [--asdex-max 1e5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
import warnings

from benchmarks.problems import PROBLEMS
from lazyhess import SparsityPattern, hessian_sparsity

SUITE = ["GENROSE", "CLPLATEA", "ARWHEAD", "BDQRTIC", "WOODS", "RANDSP2", "SPARSINE"]


def _median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument(
        "--asdex-max",
        type=float,
        default=1e5,
        help="largest n at which asdex runs (it takes minutes at 1e6)",
    )
    parser.add_argument("--problems", nargs="+", default=SUITE)
    args = parser.parse_args()
    try:
        import asdex
    except ImportError:
        asdex = None

    print(
        "| problem | n | nnz | lazyhess (ms) | asdex (ms) | speedup | same pattern | "
        "lazyhess peak MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|:-:|---:|")
    for name in args.problems:
        problem = PROBLEMS[name]
        for size in args.sizes:
            n_req = int(size)
            f, x0 = problem.make(n_req)
            n = problem.size(n_req)
            runs = 5 if n <= 10**5 else 3
            hessian_sparsity(f, x0)  # warm-up: imports, first-call caches
            ours_t, ours = _median_time(lambda f=f, x0=x0: hessian_sparsity(f, x0), runs)
            peak = _peak_mib(lambda f=f, x0=x0: hessian_sparsity(f, x0))
            asdex_cell, speed, same = "skipped", "", ""
            if asdex is not None and n <= args.asdex_max:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a_runs = 3 if n <= 10**4 else 2
                    a_t, theirs = _median_time(
                        lambda f=f, x0=x0: asdex.hessian_sparsity(f, x0), a_runs
                    )
                asdex_cell = f"{a_t * 1e3:.1f}"
                speed = f"{a_t / ours_t:.0f}×"
                same = "yes" if SparsityPattern.from_bcoo(theirs.to_bcoo()) == ours else "no"
            print(
                f"| {name} | {n} | {ours.nnz} | {ours_t * 1e3:.1f} | {asdex_cell} | {speed} | "
                f"{same} | {peak:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
