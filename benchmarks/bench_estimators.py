"""Estimators: error against HVP budget, and top eigenvalues against scipy's eigsh.

Run: ``python -m benchmarks.bench_estimators [--budgets 10 30 100] [--keys 5]
[--sparse SPARSINE] [--sparse-n 2000] [--mlp-width 96]``. Prints markdown tables:

1. Relative error of the trace and of the diagonal (L2) for a given HVP budget, mean over
   ``--keys`` keys, against plain Hutchinson (random signs over all coordinates, no sketch,
   no coloring) on the same budget: on an MLP loss Hessian (dense) and on a sparse problem
   (colored probes). References are dense ``jax.hessian``.
2. The 5 largest eigenvalues of an MLP loss Hessian with ``--mlp-width`` (about 1e4
   parameters at 96): ``H.flat.eigh`` (Lanczos with full reorthogonalisation) against
   ``scipy.sparse.linalg.eigsh`` on ``H.as_linear_operator()`` (default tolerance): HVPs,
   largest difference, and time in alternating rounds (best and median).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

import lazyhess
from benchmarks.bench_hessian import fmt, print_table, rounds
from benchmarks.problems import PROBLEMS

jax.config.update("jax_enable_x64", True)


def mlp_problem(sizes: list[int], samples: int, seed: int = 0):
    """An MLP regression loss over a dict of per-layer parameters, and the parameters."""
    key = jax.random.PRNGKey(seed)
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"layer{i}"] = {"w": jax.random.normal(sub, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
    key, kx = jax.random.split(key)
    x = jax.random.normal(kx, (samples, sizes[0]))
    y = jnp.sin(x.sum(axis=1))

    def loss(params):
        h = x
        *hidden, last = params.values()
        for layer in hidden:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        return jnp.mean(((h @ last["w"] + last["b"])[:, 0] - y) ** 2)

    return loss, params


def error_rows(label: str, H, dense: np.ndarray, budgets: list[int], keys: int):
    """Mean relative errors of trace and diagonal per budget: ours against plain Hutchinson."""
    block = H.flat
    trace, diag = np.trace(dense), np.diag(dense)
    n = dense.shape[0]
    pattern = H.sparsity
    colors = pattern and lazyhess.hessian_coloring_from_sparsity(pattern, method="diagonal")
    for budget in budgets:
        H.clear_cache()  # an exact answer is cached: let each budget pay for its own
        errors = {}
        exact = False
        for name, kwargs in (
            ("ours", {}),
            ("plain", {"method": "hutchinson", "coloring": False}),
        ):
            t_err, d_err, spent = [], [], []
            for key in range(keys):
                t = block.trace(num_probes=budget, key=key, **kwargs)
                d = block.diagonal(
                    method=kwargs.get("method", "diag++"),
                    num_probes=budget,
                    key=key,
                    coloring=kwargs.get("coloring", True),
                )
                spent.append(t.hvps)
                t_err.append(abs(float(t.value) - trace) / abs(trace))
                d_err.append(np.linalg.norm(np.asarray(d.value) - diag) / np.linalg.norm(diag))
                exact = exact or (name == "ours" and t.exact)
            errors[name] = (np.mean(t_err), np.mean(d_err), max(spent))
        yield [
            label,
            n,
            colors.num_colors if colors else "—",
            budget,
            f"{errors['ours'][2]}" + (" (exact)" if exact else ""),
            f"{errors['ours'][0]:.1e}",
            f"{errors['plain'][0]:.1e}",
            f"{errors['ours'][1]:.1e}",
            f"{errors['plain'][1]:.1e}",
        ]


def eigen_rows(width: int, samples: int, steps: list[int], count: int):
    loss, params = mlp_problem([10, width, width, 1], samples)
    H = lazyhess.hessian(loss, params, sparsity=None)
    n = H.flat.shape[-1]
    op = H.as_linear_operator()
    v0 = np.ones(n)

    def eigsh():
        return np.sort(scipy.sparse.linalg.eigsh(op, k=5, which="LA", v0=v0)[0])[::-1]

    before = H.cache_info().hvps
    reference = eigsh()
    eigsh_hvps = H.cache_info().hvps - before
    fns = {"eigsh": eigsh}
    for m in steps:
        fns[m] = lambda m=m: H.flat.eigh(5, num_hvps=m, vectors=True).values
    results = {m: H.flat.eigh(5, num_hvps=m) for m in steps}  # also compiles
    times = rounds(fns, count, repeat=1)
    best = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    yield ["eigsh (LA, tol=0)", n, eigsh_hvps, "—", "—", fmt(best["eigsh"]), fmt(median["eigsh"])]
    for m in steps:
        found = results[m]
        diff = np.max(np.abs(np.asarray(found.values) - reference) / np.abs(reference))
        yield [
            f"H.flat.eigh(5, num_hvps={m})",
            n,
            found.hvps,
            f"{diff:.1e}",
            f"{float(np.max(found.residuals)):.1e}",
            fmt(best[m]),
            fmt(median[m]),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--sparse", nargs="+", default=["SPARSINE"])
    parser.add_argument("--sparse-n", type=int, default=2000)
    parser.add_argument("--mlp-width", type=int, default=96)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    def problems():
        loss, params = mlp_problem([8, 24, 24, 1], 128)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        dense = np.asarray(jax.hessian(lambda p: loss(unravel(p)))(flat))
        yield "MLP", lazyhess.hessian(loss, params, sparsity=None), dense
        for name in args.sparse:
            f, x0 = PROBLEMS[name].make(args.sparse_n)
            yield name, lazyhess.hessian(f, x0), np.asarray(jax.hessian(f)(x0))

    print_table(
        "Relative error against HVP budget (mean over keys)",
        [
            "problem",
            "n",
            "colors",
            "budget",
            "trace HVPs (ours)",
            "trace: Hutch++ (colored)",
            "trace: plain Hutchinson",
            "diagonal: Diag++ (colored)",
            "diagonal: plain Hutchinson",
        ],
        (
            row
            for label, H, dense in problems()
            for row in error_rows(label, H, dense, args.budgets, args.keys)
        ),
    )
    print_table(
        "Top-5 eigenvalues of an MLP loss Hessian",
        ["method", "n", "HVPs", "max rel. diff. vs eigsh", "max residual", "best", "median"],
        eigen_rows(args.mlp_width, 256, args.steps, args.rounds),
    )


if __name__ == "__main__":
    main()
