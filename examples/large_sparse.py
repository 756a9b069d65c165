"""A Hessian too large to form densely: rows, a block and the full sparse matrix at n = 1e6.

A 2-D grid problem (5-point stencil, CLPLATEA-like) on a p x p grid. The dense Hessian would
take n² * 8 bytes (8 TB at n = 1e6); the sparse one costs a handful of HVPs (one per color)
and memory proportional to its nonzeros. Peak memory is read from ``resource.getrusage``.
"""

import math
import resource
import sys
import time

import jax
import jax.numpy as jnp

import lazyhess

jax.config.update("jax_enable_x64", True)


def membrane(x):
    """Energy of a p x p membrane with quartic springs between grid neighbours."""
    p = math.isqrt(x.size)
    u = x.reshape(p, p)
    dx, dy = jnp.diff(u, axis=0), jnp.diff(u, axis=1)
    springs = jnp.sum(dx**2 + 0.5 * dx**4) + jnp.sum(dy**2 + 0.5 * dy**4)
    return springs + jnp.sum(u**2) - 0.1 * u[p // 2, p // 2]


def peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(n: int = 1_000_000) -> None:
    p = math.isqrt(n)
    n = p * p
    x = jnp.sin(jnp.arange(n, dtype=float))
    H = lazyhess.hessian(membrane, x)
    print(f"n = {n} ({p} x {p} grid); a dense Hessian would need {n * n * 8 / 2**30:,.0f} GiB")

    def step(label, request):
        before, start = H.cache_info().hvps, time.perf_counter()
        value = request()
        jax.block_until_ready(value)
        seconds = time.perf_counter() - start
        spent = H.cache_info().hvps - before
        print(f"{label:38s} {seconds:7.2f} s  {spent:3d} HVPs  peak {peak_mib():8.1f} MiB")
        return value

    step("pattern (detected once)", lambda: H.sparsity)
    print(f"  nnz = {H.sparsity.nnz} ({H.sparsity.nnz / n:.1f} per row)")
    rows = step("H[[0, n // 2]] (two rows)", lambda: H[[0, n // 2]])
    print(f"  nonzeros in row n // 2: {int(jnp.count_nonzero(rows[1]))}")
    step("H[p:p+8, p:p+8] (a block)", lambda: H[p : p + 8, p : p + 8])
    sparse = step('H.to_sparse("csr") (the whole Hessian)', lambda: H.to_sparse("csr"))
    print(f"  {sparse.shape[0]} x {sparse.shape[1]} CSR, nnz = {sparse.nnz}")
    print(H.cache_info())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
