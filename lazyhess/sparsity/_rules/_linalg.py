"""Linear algebra: contractions (bilinear) and factorizations or solves (dense)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .. import _structure as st
from .._graph import Node
from .._maps import GroupMap, MatrixMap
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
    dependencies, so ``A @ x`` follows the sparsity of ``A``. Without such zeros each output
    reads a whole fiber of the operand, recorded as a group map in O(operand + output)
    rather than one entry per product term.

    Second order: bilinear, so when both operands depend on the inputs each product term
    ``lhs[b, i, c] rhs[b, j, c]`` pairs the two rows; a constant operand contributes nothing.
    Example: ``x @ A @ x`` with constant ``A`` is ``dot(dot(x, A), x)``: the inner product pairs
    row ``x_i`` with the row of ``(x A)_i``, which depends on ``x_k`` for ``A[k, i] ≠ 0``,
    giving the pattern of ``A + Aᵀ``.
    """
    (v,) = eqn.outvars
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = ins

    def layout(node: Node, other: Node, contract, batch):
        """Positions of an operand read by a rule: one that depends, or zeros of a constant."""
        reads_zeros = other.dep is not None and node.value is not None and not np.all(node.value)
        return (
            _dot_layout(node.shape, contract, batch)
            if node.dep is not None or reads_zeros
            else None
        )

    lp = layout(lhs, rhs, lc, lb)
    rp = layout(rhs, lhs, rc, rb)
    nb = math.prod(lhs.shape[d] for d in lb)
    ni = math.prod(n for d, n in enumerate(lhs.shape) if d not in lc and d not in lb)
    nj = math.prod(n for d, n in enumerate(rhs.shape) if d not in rc and d not in rb)
    m = v.aval.size

    def jac(pos_self, other: Node, pos_other, self_is_lhs: bool):
        """Local Jacobian of the output with respect to one operand."""
        nz = (
            None
            if other.dep is not None or other.value is None or np.all(other.value)
            else (np.ravel(other.value)[pos_other] != 0)
        )
        n_self = pos_self.shape[1]
        if nz is None or nz.all():
            # Every product term may be nonzero: out[b, i, j] reads the whole fiber
            # self[b, i or j, :], a group, in O(operand + output) instead of O(flops).
            fiber = np.arange(nb)[:, None] * n_self + np.arange(n_self)[None, :]
            g_in = np.empty(pos_self.size, np.int64)
            g_in[pos_self.ravel()] = np.broadcast_to(fiber[:, :, None], pos_self.shape).ravel()
            b, i, j = np.indices((nb, ni, nj), sparse=True)
            g_out = b * n_self + (i if self_is_lhs else j)
            return GroupMap(g_in, np.broadcast_to(g_out, (nb, ni, nj)), nb * n_self)
        b, k, c = np.nonzero(nz)
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
    if lhs.dep is not None and rhs.dep is not None and lp is not None and rp is not None:
        left, right, e = product_terms(
            np.diff(lhs.dep.indptr)[lp] > 0, np.diff(rhs.dep.indptr)[rp] > 0
        )
        ctx.pair(out, lhs, lp.ravel()[left], rhs, rp.ravel()[right], e)
    return [out]


def product_terms(lhs: np.ndarray, rhs: np.ndarray):
    """``(left, right, e)``: the terms ``lhs[b, i, c] rhs[b, j, c]`` of ``out[b, i, j]``.

    ``lhs`` (shape ``(nb, ni, nc)``) and ``rhs`` (``(nb, nj, nc)``) mark the operand
    elements that depend on the inputs; only terms whose two elements are both marked add
    a pair. ``left`` and ``right`` index the flattened operands, ``e`` the flattened
    ``(nb, ni, nj)`` output. Cost O(those terms), the product's flops when every element
    is marked.
    """
    _, ni, nc = lhs.shape
    nj = rhs.shape[1]
    bl, il, cl = np.nonzero(lhs)
    br, jr, cr = np.nonzero(rhs)
    key_r = br * nc + cr
    order = np.argsort(key_r, kind="stable")
    key_l = bl * nc + cl
    start = np.searchsorted(key_r[order], key_l, side="left")
    count = np.searchsorted(key_r[order], key_l, side="right") - start
    left = np.repeat(np.arange(key_l.size), count)
    first = np.repeat(start - (np.cumsum(count) - count), count)
    right = order[first + np.arange(left.size)]
    bl, il, cl = bl[left], il[left], cl[left]
    br, jr, cr = br[right], jr[right], cr[right]
    return (bl * ni + il) * nc + cl, (br * nj + jr) * nc + cr, (bl * ni + il) * nj + jr


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
