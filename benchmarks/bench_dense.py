"""Dense Hessians: ``sparsity="auto"`` against ``sparsity=None``, and the dense engine against JAX.

Run: ``python -m benchmarks.bench_dense [--sizes 1000 20000 100000] [--rounds 3]
[--skip-auto] [--skip-engine]``. Prints markdown tables for issue 13:

1. One row (``H.flat[i]``) of a dense Hessian under ``sparsity="auto"`` against
   ``sparsity=None``, on an MLP loss over a dict of layer parameters, ``sum(tanh(A @ x))``
   with a 256 x n matrix ``A``, and an all-pairs energy of particles in 3-D, written two
   ways: with (n/3)² pair arrays (only up to ``--pairs-max`` inputs: they grow as n²) and
   as a checkpointed ``lax.map`` over particles ("all-pairs-map"). Each mode runs in a
   fresh process (so the first request includes detection and compilation, and the peak
   RSS is that
   request's), ``--rounds`` times alternating; best and median. "steady" is the same row
   at a fresh point (``H.at(x)``, warm kernels), both modes in one process in alternating
   rounds. Goal: auto ≤ 1.5x None in time and peak.
2. The whole Hessian ``H[:]`` against ``jax.jit(jax.hessian(f))`` at n ≈ 1000 (an MLP and
   ``tanh(A @ x)`` with a square ``A``): first call on a fresh function (each round a new
   closure, alternating) and steady state (a fresh point, ``H.at(x)[:]``, alternating
   rounds of medians); best and median. Goal: steady ≤ 1.2x, first ≤ 1.5x. Also one pytree
   block ``H[l]["w"][l]["w"]``: its HVPs (its columns) and time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import lazyhess
from benchmarks.bench_estimators import mlp_problem
from benchmarks.bench_hessian import fmt, once, print_table, rounds

jax.config.update("jax_enable_x64", True)

SAMPLES = 64


def mlp(n: int):
    """An MLP loss over layers ``[10, w, w, 1]`` with about ``n`` parameters."""
    w = max(2, int((-13 + np.sqrt(169 + 4 * n)) / 2))
    return mlp_problem([10, w, w, 1], SAMPLES)


def tanh_layer(n: int, rows: int | None = 256):
    """``sum(tanh(A @ x))`` with ``A`` of shape ``(min(rows, n), n)`` (square: ``rows=None``)."""
    m = n if rows is None else min(rows, n)
    a = np.random.default_rng(1).normal(size=(m, n)) / np.sqrt(n)
    return (lambda x: jnp.sum(jnp.tanh(a @ x))), jnp.linspace(-1.0, 1.0, n)


def all_pairs(n: int):
    """A soft-core energy ``Σ_{i≠j} 1 / sqrt(|x_i - x_j|² + 1)`` of ``n // 3`` particles."""
    k = max(n // 3, 2)

    def energy(x):
        d = x[:, None, :] - x[None, :, :]
        return 0.5 * jnp.sum(1.0 / jnp.sqrt(jnp.sum(d * d, -1) + 1.0) - jnp.eye(k))

    return energy, jnp.asarray(np.random.default_rng(2).normal(size=(k, 3)))


def all_pairs_mapped(n: int, batch: int = 128):
    """The same energy as a user writes it for large ``n``: ``lax.map`` over particles.

    Each particle's row of interactions is one checkpointed function of its position and
    all positions (``batch`` particles at a time), so no pass holds an n²/9 array and
    reverse mode stores no per-pair residuals.
    """
    k = max(n // 3, 2)

    def energy(x):
        def row(xi):
            d = x - xi
            return jnp.sum(1.0 / jnp.sqrt(jnp.sum(d * d, -1) + 1.0))

        return 0.5 * (jnp.sum(jax.lax.map(jax.checkpoint(row), x, batch_size=batch)) - k)

    return energy, jnp.asarray(np.random.default_rng(2).normal(size=(k, 3)))


PROBLEMS = {
    "MLP": mlp,
    "tanh(A@x)": tanh_layer,
    "all-pairs": all_pairs,
    "all-pairs-map": all_pairs_mapped,
}

ROW_SCRIPT = """
import json, time, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import lazyhess
from benchmarks.bench_dense import PROBLEMS
from benchmarks.bench_hessian import once
jax.jit(lambda v: v * 2)(jnp.ones(3)).block_until_ready()  # the backend is up
f, x = PROBLEMS[{problem!r}]({n})
jax.block_until_ready(x)
def rss(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1])
before = rss("VmRSS")
H = lazyhess.hessian(f, x, sparsity={mode!r})
i = H.flat.shape[-1] // 2
first = once(lambda: H.flat[i])
peak = rss("VmHWM")
print(json.dumps(dict(first=first, peak=peak, before=before,
                      n=H.flat.shape[-1], dense=H._engine.structure.dense,
                      what=repr(H.sparsity)[:60])))
"""


def _row_run(problem: str, n: int, mode: str | None) -> dict:
    script = ROW_SCRIPT.format(problem=problem, n=n, mode=mode)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _best_median(values: list[float]) -> str:
    return f"{fmt(min(values))} / {fmt(float(np.median(values)))}"


def auto_rows(problem: str, n: int, count: int):
    """One row under auto and None, best / median.

    First calls in fresh processes, alternating; steady state in this process, in
    alternating rounds.
    """
    runs: dict = {"auto": [], None: []}
    for _ in range(count):
        for mode in runs:
            runs[mode].append(_row_run(problem, n, mode))
    auto, none = runs["auto"], runs[None]
    f, x = PROBLEMS[problem](n)
    hessians = {mode: lazyhess.hessian(f, x, sparsity=mode) for mode in runs}
    i = auto[0]["n"] // 2
    for H in hessians.values():
        H.flat[i]
    steady = rounds({mode: lambda H=H: H.at(x).flat[i] for mode, H in hessians.items()}, count)
    for mode, times in steady.items():
        for run, t in zip(runs[mode], times, strict=True):
            run["steady"] = t

    def ratio(key):
        return min(r[key] for r in auto) / min(r[key] for r in none)

    def mib(rs, key):
        return f"{min(r[key] for r in rs) / 1024:.0f}"

    return [
        problem,
        str(auto[0]["n"]),
        "dense" if auto[0]["dense"] else auto[0]["what"],
        _best_median([r["first"] for r in auto]),
        _best_median([r["first"] for r in none]),
        f"{ratio('first'):.2f}x",
        _best_median([r["steady"] for r in auto]),
        _best_median([r["steady"] for r in none]),
        f"{ratio('steady'):.2f}x",
        f"{mib(auto, 'peak')} ({mib(auto, 'before')})",
        f"{mib(none, 'peak')} ({mib(none, 'before')})",
        f"{ratio('peak'):.2f}x",
    ]


def engine_rows(name: str, make, count: int):
    """``H[:]`` against ``jax.jit(jax.hessian(f))``: first call and steady state."""
    firsts: dict = {"ours": [], "jax": []}
    for _ in range(count):
        f, x = make()
        firsts["ours"].append(once(lambda f=f, x=x: lazyhess.hessian(f, x)[:]))
        f, x = make()
        firsts["jax"].append(once(lambda f=f, x=x: jax.jit(jax.hessian(f))(x)))
    f, x = make()
    H = lazyhess.hessian(f, x)
    H[:]
    hess = jax.jit(jax.hessian(f))
    hess(x)
    steady = rounds({"ours": lambda: H.at(x)[:], "jax": lambda: hess(x)}, count)
    n = H.flat.shape[-1]
    rows = []
    for label, times in (("first call", firsts), ("steady", steady)):
        ours, ref = times["ours"], times["jax"]
        rows.append(
            [
                name,
                str(n),
                label,
                _best_median(ours),
                _best_median(ref),
                f"{min(ours) / min(ref):.2f}x / {np.median(ours) / np.median(ref):.2f}x",
            ]
        )
    return rows


def block_rows(count: int):
    """One pytree block of the MLP at a fresh point: its HVPs and time against ``H[:]``."""
    f, x = mlp(1000)
    H = lazyhess.hessian(f, x)
    H[:]
    layer = "layer1"

    def block(fresh):
        return fresh[layer]["w"][layer]["w"].to_dense()

    times = rounds({"block": lambda: block(H.at(x)), "all": lambda: H.at(x)[:]}, count)
    fresh = H.at(x)
    block(fresh)
    hvps = fresh.cache_info().hvps
    size = x[layer]["w"].size
    return [
        [f'H["{layer}"]["w"]["{layer}"]["w"]', str(size), str(hvps), _best_median(times["block"])],
        ["H[:]", str(H.flat.shape[-1]), str(H.flat.shape[-1]), _best_median(times["all"])],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 20000, 100000])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--pairs-max", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-auto", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    if not args.skip_auto:
        print_table(
            "One row of a dense Hessian: sparsity='auto' against sparsity=None (best / median)",
            [
                "problem",
                "n",
                "auto's pattern",
                "first, auto",
                "first, None",
                "ratio",
                "steady, auto",
                "steady, None",
                "ratio",
                "peak MiB auto (before)",
                "peak MiB None (before)",
                "ratio",
            ],
            (
                auto_rows(p, n, args.rounds)
                for n in args.sizes
                for p in args.problems
                if p != "all-pairs" or n <= args.pairs_max
            ),
        )
    if not args.skip_engine:
        print_table(
            "Whole Hessian H[:] against jax.jit(jax.hessian(f)) (best / median)",
            ["problem", "n", "call", "lazyhess", "jax", "ratio (best / median)"],
            (
                row
                for name, make in (
                    ("MLP", lambda: mlp(1000)),
                    ("tanh(A@x), A square", lambda: tanh_layer(1000, rows=None)),
                )
                for row in engine_rows(name, make, args.rounds)
            ),
        )
        print_table(
            "A pytree block costs its columns (MLP, fresh point, best / median)",
            ["request", "size", "HVPs", "time"],
            block_rows(args.rounds),
        )


if __name__ == "__main__":
    main()
