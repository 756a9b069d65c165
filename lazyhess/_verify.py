"""Checking a user's sparsity pattern against the Hessian it claims to describe.

A pattern smaller than the truth makes the colored recovery fold the missing entries into
others: wrong values, silently. The engine calls :func:`check_pattern` on the first
whole-Hessian request at a concrete point while the structure is ``unverified``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ._structure import Structure

# Rows a failed check reads whole (one HVP each), looking for a missing entry.
CHECK_ROWS = 8

_SKIP = "verify=False skips this check"


def pattern_product(csr: sp.csr_array, values: np.ndarray) -> Callable[[np.ndarray], Any]:
    """``v -> (R v, |R| |v|)`` for ``R`` with the pattern ``csr`` and stored ``values``.

    ``values`` is ``(p, nnz)`` in the pattern's order; results are ``(p, n)``. O(p nnz).
    """
    rows = sp.csr_array(
        (np.ones(csr.nnz), np.arange(csr.nnz), csr.indptr), shape=(csr.indptr.size - 1, csr.nnz)
    )

    def product(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms = values * v[csr.indices]
        return (rows @ terms.T).T, (rows @ np.abs(terms).T).T

    return product


def check_pattern(
    structure: Structure,
    dtype: np.dtype,
    hvps: Callable[[np.ndarray], np.ndarray],
    product: Callable[[np.ndarray], Any],
) -> None:
    """Check the pattern: the recovered flat Hessian ``R`` against one exact HVP.

    ``hvps(v)`` gives the exact products ``(k, p, n)`` of directions ``v`` ``(k, n)``;
    ``product(v)`` gives ``(R v, |R| |v|)``. An entry the pattern misses but that is
    nonzero here makes ``R v`` differ from ``H v`` (for a random probe ``v``) in the rows
    it folds into, beyond rounding; the unit HVP of such a row shows it (first
    ``CHECK_ROWS`` rows, one HVP each). Marks the structure verified when the products
    agree, so the check runs once per function: an entry the pattern misses that is zero
    at the point checked is not seen. At a point where a product is not finite nothing can
    be told, and the check waits for the next whole request.

    Cost: one HVP when the pattern holds, up to ``CHECK_ROWS`` more when it does not.

    Raises:
        ValueError: naming the first missing entry found (flat row and column).
    """
    if structure.dense:  # every entry: nothing can be missing
        structure.unverified = False
        return
    n = structure.n
    probe = np.random.default_rng(0).standard_normal(n).astype(dtype)
    exact = hvps(probe[None])[0]
    mine, scale = product(probe)
    if not (np.isfinite(exact).all() and np.isfinite(mine).all()):
        return
    eps = float(jnp.finfo(dtype).eps)  # jnp's: it knows bfloat16
    scale = scale + np.abs(exact)
    wrong = np.abs(exact - mine) > 1024 * eps * (scale + scale.max() / 1024)
    rows = np.flatnonzero(wrong.any(axis=0))
    if not rows.size:
        structure.unverified = False
        return
    csr = structure.stored_csr
    for i in rows[:CHECK_ROWS]:
        unit = np.zeros((1, n), dtype=dtype)
        unit[0, i] = 1
        true = hvps(unit)[0]  # column i: row i by symmetry
        size = np.abs(true).max(axis=0)
        outside = np.ones(n, dtype=bool)
        outside[csr.indices[csr.indptr[i] : csr.indptr[i + 1]]] = False
        missing = np.flatnonzero(outside & (size > 1024 * eps * size.max()))
        if missing.size:
            j = int(missing[0])
            value = true[int(np.argmax(np.abs(true[:, j]))), j].item()
            raise ValueError(
                f"the sparsity pattern misses entry ({i}, {j}) of the flat Hessian: an HVP "
                f"gives H[{i}, {j}] = {value!r} at this point, but the pattern has no entry "
                "there, so the colored recovery folds it into other entries and returns wrong "
                f"values. Add it to the pattern (or use sparsity='auto'); {_SKIP}."
            )
    raise ValueError(
        "the sparsity pattern misses entries: the Hessian recovered with it disagrees with "
        f"an exact HVP of a random probe in flat rows {rows[:8].tolist()}, where the colored "
        "recovery folds missing entries into others. Use a pattern holding every nonzero "
        f"(or sparsity='auto'); {_SKIP}."
    )
