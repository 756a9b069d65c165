"""Windowed operations: pooling and convolutions."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .. import _structure as st
from .._graph import Node
from .._maps import MatrixMap
from ._common import register


def _conv_taps(x, y, k, stride, lo, lhs_dil, rhs_dil) -> np.ndarray:
    """Input position read by output position y through kernel tap k (-1 for padding)."""
    pos = np.arange(y)[:, None] * stride + np.arange(k)[None, :] * rhs_dil - lo
    inside = (pos >= 0) & (pos < (x - 1) * lhs_dil + 1) & (pos % lhs_dil == 0)
    return np.where(inside, pos // lhs_dil, -1)


@register("reduce_window_sum", "reduce_window_max", "reduce_window_min")
def _reduce_window(ctx, eqn, ins):
    """Pooling (``reduce_window`` sum, max, min): each output reads a window of the operand.

    The windows are strided, dilated and padded.

    First order: each output element depends on every element of its window (padding reads
    nothing). Second order: a sum is linear and max/min piecewise linear: nothing of their own.
    """
    (v,) = eqn.outvars
    p = eqn.params
    shape = ins[0].shape
    rank = len(shape)
    taps = [
        _conv_taps(
            shape[d],
            v.aval.shape[d],
            p["window_dimensions"][d],
            p["window_strides"][d],
            p["padding"][d][0],
            (p["base_dilation"] or (1,) * rank)[d],
            (p["window_dilation"] or (1,) * rank)[d],
        )
        for d in range(rank)
    ]
    grids = np.ix_(
        *[np.arange(n) for n in v.aval.shape], *[np.arange(w) for w in p["window_dimensions"]]
    )
    ys, ks = grids[:rank], grids[rank:]
    xs = [t[y, k] for t, y, k in zip(taps, ys, ks, strict=True)]
    valid = np.ones((), bool)
    for x in xs:
        valid = valid & (x >= 0)
    cols = st.positions(shape)[tuple(np.maximum(x, 0) for x in xs)]
    rows = st.positions(v.aval.shape)[ys]
    full = np.broadcast_shapes(cols.shape, rows.shape, valid.shape)
    keep = np.broadcast_to(valid, full).ravel()
    rows = np.broadcast_to(rows, full).ravel()[keep]
    cols = np.broadcast_to(cols, full).ravel()[keep]
    mat = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(v.aval.size, ins[0].size))
    return [ctx.link(v.aval, [(ins[0], MatrixMap(mat))])]


def _bilinear(ctx, aval, lhs: Node, rhs: Node, e, ia, ib) -> Node:
    """``out[e[k]] += lhs[ia[k]] * rhs[ib[k]]`` (entries with a -1 index are absent)."""
    ok = (ia >= 0) & (ib >= 0)
    e, ia, ib = e[ok], ia[ok], ib[ok]
    m = math.prod(aval.shape)
    sources = []
    for node, own, other_node, other in ((lhs, ia, rhs, ib), (rhs, ib, lhs, ia)):
        if node.dep is None:
            continue
        keep = slice(None)
        if other_node.dep is None and other_node.value is not None:
            keep = np.ravel(other_node.value)[other] != 0
        mat = sp.csr_array(
            (np.ones(e[keep].size, bool), (e[keep], own[keep])), shape=(m, node.size)
        )
        sources.append((node, MatrixMap(mat)))
    out = ctx.link(aval, sources)
    ctx.pair(out, lhs, ia, rhs, ib, e)
    return out


@register("conv_general_dilated")
def _conv(ctx, eqn, ins):
    """Convolution: ``out[b, o, y] = Σ_{i, k} lhs[b, i', y s + k d - p] rhs[o, i, k]``.

    ``i'`` is input channel ``i`` of output channel ``o``'s feature group.

    First order: each output depends on its receptive field in ``lhs`` through the kernel taps
    that may be nonzero, and on those taps of ``rhs`` whose input element is not padding; a
    constant operand's known zeros drop dependencies (see `_bilinear`). Second order: the
    convolution is bilinear, so for every term ``lhs[ia] rhs[ib]`` feeding an output, the rows
    of ``lhs[ia]`` and ``rhs[ib]`` pair; a row never pairs with itself unless the same variable
    sits on both sides. ``batch_group_count > 1`` falls back to the conservative rule.
    """
    (v,) = eqn.outvars
    p = eqn.params
    lhs, rhs = ins
    dn = p["dimension_numbers"]
    if p["batch_group_count"] != 1:
        return ctx.conservative(eqn, ins)
    lp = st.positions(lhs.shape).transpose(dn.lhs_spec)
    rp = st.positions(rhs.shape).transpose(dn.rhs_spec)
    op = st.positions(v.aval.shape).transpose(dn.out_spec)
    nsp = lp.ndim - 2
    n_b, n_o, n_i = lp.shape[0], rp.shape[0], rp.shape[1]
    og = n_o // p["feature_group_count"]
    taps = [
        _conv_taps(
            lp.shape[2 + d],
            op.shape[2 + d],
            rp.shape[2 + d],
            p["window_strides"][d],
            p["padding"][d][0],
            (p["lhs_dilation"] or (1,) * nsp)[d],
            (p["rhs_dilation"] or (1,) * nsp)[d],
        )
        for d in range(nsp)
    ]
    grids = np.ix_(
        np.arange(n_b),
        np.arange(n_o),
        np.arange(n_i),
        *[np.arange(op.shape[2 + d]) for d in range(nsp)],
        *[np.arange(rp.shape[2 + d]) for d in range(nsp)],
    )
    b, o, i = grids[:3]
    ys, ks = grids[3 : 3 + nsp], grids[3 + nsp :]
    xs = [t[y, k] for t, y, k in zip(taps, ys, ks, strict=True)]
    valid = np.ones((), bool)
    for x in xs:
        valid = valid & (x >= 0)
    ia = lp[(b, (o // og) * n_i + i, *[np.maximum(x, 0) for x in xs])]
    shape = np.broadcast_shapes(ia.shape, valid.shape)
    ia = np.where(valid, ia, -1)
    e = np.broadcast_to(op[(b, o, *ys)], shape).ravel()
    ib = np.broadcast_to(rp[(o, i, *ks)], shape).ravel()
    return [_bilinear(ctx, v.aval, lhs, rhs, e, np.broadcast_to(ia, shape).ravel(), ib)]
