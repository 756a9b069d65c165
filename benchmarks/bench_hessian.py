"""Sparse Hessians and partial requests: lazyhess against asdex, dense JAX and row-by-row.

Run: ``python -m benchmarks.bench_hessian [--sizes 1000 10000 100000] [--problems ...]``
(asdex from the ``bench`` extra). Prints markdown tables: full sparse Hessian (first call
and jitted steady state), partial requests (HVPs spent and time), and peak memory at
n = 1e6 on a banded problem (each measured in a fresh process).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import lazyhess
from benchmarks.problems import PROBLEMS

jax.config.update("jax_enable_x64", True)

SUITE = [
    "GENROSE",
    "ARWHEAD",
    "BDQRTIC",
    "CLPLATEA",
    "FMINSRF2",
    "WOODS",
    "RANDSP2",
    "RANDSP8",
    "SPARSINE",
    "DIXMAANE",
    "ARROW2",
]


def median_time(fn, repeat: int = 7, between=None) -> float:
    """The median of ``repeat`` timed calls of ``fn``, each after an untimed ``between()``."""
    times = []
    for _ in range(repeat):
        if between is not None:
            between()
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def rounds(fns: dict, count: int = 7, repeat: int = 5, between=None) -> dict:
    """Per function, the median time of ``repeat`` calls in each of ``count`` rounds.

    The functions take turns round by round, so every contender sees the same machine load.
    ``between``, if given, runs untimed before every call (see :func:`median_time`).
    """
    times: dict = {key: [] for key in fns}
    for _ in range(count):
        for key, fn in fns.items():
            times[key].append(median_time(fn, repeat, between))
    return times


def interleaved(fns: dict, count: int = 5, repeat: int = 15) -> dict:
    """Each function's best median over ``count`` alternating :func:`rounds`.

    The best round drops rounds disturbed by other work.
    """
    slowest = max(once(fn) for fn in fns.values())
    if slowest > 0.05:  # large problems: fewer, still alternating, calls
        count, repeat = 3, max(1, min(repeat, int(0.5 / slowest)))
    return {key: min(times) for key, times in rounds(fns, count, repeat).items()}


def once(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def fmt(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def full_row(name: str, n: int, asdex) -> list[str]:
    f, x = PROBLEMS[name].make(n)
    n = x.size
    first = once(lambda: lazyhess.hessian(f, x).to_sparse("bcoo").data)
    H = lazyhess.hessian(f, x)
    H.to_sparse("bcoo")
    colors = H._engine.structure.colored.num_colors
    at_point = median_time(lambda: H.at(x).to_sparse("bcoo").data)
    hess = jax.jit(lazyhess.sparse_hessian(f, x))
    hess(x)
    steady_fns = {"ours": lambda: hess(x).data}
    grad = jax.jit(jax.grad(f))
    grad(x)
    t_grad = median_time(lambda: grad(x))
    tangent = jax.jit(lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1])
    v = jnp.ones_like(x)
    tangent(v)
    t_hvp = median_time(lambda: tangent(v))
    a_first = None
    a_colors = "—"
    if asdex is not None:

        def asdex_first():
            return jax.jit(asdex.hessian(f, x))(x).data

        a_first = once(asdex_first)
        a_hess = jax.jit(asdex.hessian(f, x))
        a_hess(x)
        steady_fns["asdex"] = lambda: a_hess(x).data
        a_colors = str(asdex.hessian_coloring(f, x).num_colors)
    steady_times = interleaved(steady_fns)
    steady, a_steady = steady_times["ours"], steady_times.get("asdex")
    dense = None
    if n <= 2000:
        dense_hess = jax.jit(jax.hessian(f))
        dense_hess(x)
        dense = median_time(lambda: dense_hess(x))
    ratio = f"{steady / a_steady:.2f}x" if a_steady else "—"
    return [
        name,
        str(n),
        str(H.sparsity.nnz),
        f"{colors} / {a_colors}",
        fmt(first),
        fmt(a_first),
        fmt(steady),
        fmt(a_steady),
        ratio,
        fmt(at_point),
        fmt(t_grad + colors * t_hvp),
        fmt(dense),
    ]


def partial_rows(name: str, n: int, asdex) -> list[list[str]]:
    f, x = PROBLEMS[name].make(n)
    n = x.size
    rng = np.random.default_rng(0)
    H = lazyhess.hessian(f, x)
    H.to_sparse("bcoo")  # detection, coloring and kernels are warm
    single = jax.jit(lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1])
    single(jnp.zeros_like(x))

    def row_by_row(rows):
        return [single(jnp.zeros_like(x).at[r].set(1.0)) for r in rows]

    full = None
    if asdex is not None:
        a_hess = jax.jit(asdex.hessian(f, x))
        a_hess(x)
        full = median_time(lambda: a_hess(x).data, repeat=3)
    requests = {
        "1 row": (rng.integers(n),),
        "10 rows": (rng.choice(n, 10, replace=False),),
        "100 rows": (rng.choice(n, min(100, n), replace=False),),
        "100x100 block": (slice(n // 2, n // 2 + 100), slice(n // 2, n // 2 + 100)),
        "diagonal": None,
    }
    out = []
    for label, key in requests.items():
        for _ in range(2):  # the second, on a fresh point, runs with warm kernels
            fresh = H.at(x)
            if key is None:
                spent = once(fresh.diagonal)
            else:
                spent = once(lambda fresh=fresh, key=key: fresh[key])
        hvps = fresh.cache_info().hvps
        rows = (
            range(n)
            if key is None
            else (np.arange(n)[key[0]] if isinstance(key[0], slice) else np.atleast_1d(key[0]))
        )
        baseline = median_time(lambda rows=rows: row_by_row(rows), repeat=1)
        out.append(
            [name, str(n), label, str(hvps), fmt(spent), str(len(rows)), fmt(baseline), fmt(full)]
        )
    return out


MEMORY_SCRIPT = """
import sys, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import lazyhess
from benchmarks.problems import PROBLEMS
f, x = PROBLEMS["GENROSE"].make({n})
H = lazyhess.hessian(f, x)
if "{what}" == "row":
    H[{n} // 2].block_until_ready()
elif "{what}" == "full":
    H.to_sparse("bcoo").data.block_until_ready()
else:
    H.sparsity
# VmHWM is this process's own peak; ru_maxrss would include the parent's, inherited at exec.
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(peak.split()[1], H.cache_info().hvps)
"""


def memory(n: int) -> list[list[str]]:
    """Peak RSS of a process that only detects the pattern, and of ones that also ask."""
    rows = []
    for what, label in (
        ("detect", "pattern only"),
        ("row", "one row"),
        ("full", "full sparse Hessian"),
    ):
        script = MEMORY_SCRIPT.format(n=n, what=what)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        peak, hvps = (int(v) for v in out)
        rows.append([f"GENROSE n={n}", label, hvps, f"{peak / 1024:.0f} MiB"])
    return rows


def print_table(title: str, header: list[str], rows) -> None:
    """A markdown table under ``title``, each row printed as soon as it is measured."""
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--problems", nargs="+", default=SUITE)
    parser.add_argument("--partial-sizes", type=int, nargs="*", default=[10000])
    parser.add_argument("--memory-n", type=int, default=1_000_000)
    args = parser.parse_args()
    try:
        import asdex
    except ImportError:
        asdex = None
        print("asdex not installed (pip install '.[bench]'): its columns are empty.\n")
    print(f"peak RSS before: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print_table(
        "Full sparse Hessian",
        [
            "problem",
            "n",
            "nnz",
            "colors (ours / asdex)",
            "first call",
            "asdex first",
            "steady (jit)",
            "asdex steady",
            "ratio",
            "H.at(x).to_sparse()",
            "floor T_grad+c·T_hvp",
            "dense jax.hessian",
        ],
        (full_row(p, n, asdex) for n in args.sizes for p in args.problems),
    )
    print_table(
        "Partial requests (fresh cache each)",
        [
            "problem",
            "n",
            "request",
            "HVPs",
            "time",
            "row-by-row HVPs",
            "row-by-row time",
            "asdex full Hessian",
        ],
        (
            row
            for n in args.partial_sizes
            for p in args.problems
            for row in partial_rows(p, n, asdex)
        ),
    )
    if args.memory_n:
        print_table(
            "Peak memory (fresh process each)",
            ["problem", "request", "HVPs", "peak RSS"],
            memory(args.memory_n),
        )


if __name__ == "__main__":
    main()
