"""Linear algebra: contractions (bilinear) and factorizations or solves (dense)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .. import _structure as st
from .._graph import Node
from .._maps import MatrixMap
from ._common import register


def _dot_layout(shape, contract, batch):
    """Positions of an operand arranged as (batch, free, contract)."""
    free = [d for d in range(len(shape)) if d not in contract and d not in batch]
    pos = st.positions(shape).transpose(list(batch) + free + list(contract))
    nb = math.prod(shape[d] for d in batch)
    nf = math.prod(shape[d] for d in free)
    nc = math.prod(shape[d] for d in contract)
    return pos.reshape(nb, nf, nc)


@register("dot_general")
def _dot_general(ctx, eqn, ins):
    """``dot_general``: ``out[b, i, j] = Σ_c lhs[b, i, c] rhs[b, j, c]`` (matmul, einsum, dot).

    First order: ``out[b, i, j]`` depends on ``lhs[b, i, c]`` for every ``c`` where
    ``rhs[b, j, c]`` may be nonzero, and symmetrically; a constant operand's known zeros drop
    dependencies, so ``A @ x`` follows the sparsity of ``A``.

    Second order: bilinear, so when both operands depend on the inputs each product term
    ``lhs[b, i, c] rhs[b, j, c]`` pairs the two rows; a constant operand contributes nothing.
    Example: ``x @ A @ x`` with constant ``A`` is ``dot(dot(x, A), x)``: the inner product pairs
    row ``x_i`` with the row of ``(x A)_i``, which depends on ``x_k`` for ``A[k, i] ≠ 0``,
    giving the pattern of ``A + Aᵀ``.
    """
    (v,) = eqn.outvars
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = ins
    lp = _dot_layout(lhs.shape, lc, lb)
    rp = _dot_layout(rhs.shape, rc, rb)
    nb, ni, nc = lp.shape
    nj = rp.shape[1]
    m = v.aval.size

    def jac(pos_self, other: Node, pos_other, self_is_lhs: bool):
        """Local Jacobian of the output with respect to one operand."""
        nz = (
            None
            if other.dep is not None or other.value is None
            else (np.ravel(other.value)[pos_other] != 0)
        )
        if nz is None:
            nz = np.ones(pos_other.shape, bool)
        b, k, c = np.nonzero(nz)
        n_self = pos_self.shape[1]
        s = np.arange(n_self)
        b2, k2, c2, s2 = (
            np.repeat(b, n_self),
            np.repeat(k, n_self),
            np.repeat(c, n_self),
            np.tile(s, b.size),
        )
        i, j = (s2, k2) if self_is_lhs else (k2, s2)
        rows = (b2 * ni + i) * nj + j
        cols = pos_self[b2, s2, c2]
        return MatrixMap(
            sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(m, pos_self.size))
        )

    sources = []
    if lhs.dep is not None:
        sources.append((lhs, jac(lp, rhs, rp, True)))
    if rhs.dep is not None:
        sources.append((rhs, jac(rp, lhs, lp, False)))
    out = ctx.link(v.aval, sources)
    if lhs.dep is not None and rhs.dep is not None:
        b, i, j, c = np.meshgrid(
            np.arange(nb), np.arange(ni), np.arange(nj), np.arange(nc), indexing="ij"
        )
        e = ((b * ni + i) * nj + j).ravel()
        ctx.pair(out, lhs, lp[b, i, c].ravel(), rhs, rp[b, j, c].ravel(), e)
    return [out]


@register(
    "cholesky",
    "lu",
    "qr",
    "eigh",
    "eig",
    "svd",
    "schur",
    "hessenberg",
    "tridiagonal",
    "triangular_solve",
    "tridiagonal_solve",
    "custom_linear_solve",
    "householder_product",
    "geqrf",
    "geqp3",
    "orgqr",
)
def _dense_linalg(ctx, eqn, ins):
    """Factorizations and solves (Cholesky, LU, QR, eigh, SVD, triangular solves, ...).

    First and second order: every output element depends nonlinearly on every operand
    element: the operands' rows all pair with each other. Exact for dense operands, which is
    the common case, so no warning.
    """
    return ctx.conservative(eqn, ins, warn=False)
