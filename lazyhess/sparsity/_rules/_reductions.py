"""Reductions along axes: sums, extrema, products, sorts and cumulative operations."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .. import _structure as st
from .._graph import Node
from .._maps import GroupMap, MatrixMap
from ._common import register


def _reduce_groups(shape, axes):
    """Output element of each operand element for a reduction over ``axes``.

    With one axis these are the fibers along it (sort, cumulative operations, top_k).
    """
    keep = [d for d in range(len(shape)) if d not in axes]
    coords = np.indices(shape, sparse=True)
    g = np.zeros(shape, np.int64)
    for d in keep:
        g = g * shape[d] + coords[d]
    return np.broadcast_to(g, shape).ravel(), math.prod(shape[d] for d in keep)


@register(
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_and",
    "reduce_or",
    "reduce_xor",
)
def _reduce(ctx, eqn, ins):
    """Reductions over ``axes``: ``sum``, ``max``, ``min``, ``prod`` (boolean ones carry nothing).

    First order: each output element depends on every element of its group (the operand
    elements reduced into it).

    Second order: a sum is linear and ``max``/``min`` piecewise linear (the result is one of
    the elements): nothing of their own. A product is linear in each factor, so only distinct
    factors pair: ``d²/dxp dxq prod(x) = prod(x_r, r ≠ p, q)`` for ``p ≠ q`` and zero for
    ``p = q`` (see `_product_pairs`). Example: ``prod([x0, x1, x2])`` gives every off-diagonal
    entry and no diagonal; ``prod([x0, x0])`` (one variable in two positions) gives ``(0, 0)``.
    """
    (v,) = eqn.outvars
    g, m = _reduce_groups(ins[0].shape, tuple(eqn.params["axes"]))
    out = ctx.link(v.aval, [(ins[0], GroupMap(g, np.arange(m), m))])
    if eqn.primitive.name == "reduce_prod":
        members = np.argsort(g, kind="stable").reshape(m, -1)
        _product_pairs(ctx, out, ins[0], np.arange(m), members)
    return [out]


#: Products of more factors than this couple all their factors, diagonal included, instead
#: of enumerating the distinct pairs.
_PAIR_LIMIT = 32


def _product_pairs(ctx, out: Node, src: Node, e: np.ndarray, members: np.ndarray) -> None:
    """``out[e[r]]`` is the product of ``src[members[r, :]]``: distinct factors couple.

    A product has no second derivative in any single factor, so only distinct positions
    pair up (a variable that occupies two positions still gets its diagonal entry).
    """
    k = members.shape[1]
    if k > _PAIR_LIMIT:
        ctx.nonlinear(out)
        return
    p, q = np.nonzero(~np.eye(k, dtype=bool))
    ctx.pair(out, src, members[:, p].ravel(), src, members[:, q].ravel(), np.repeat(e, p.size))


@register("top_k")
def _top_k(ctx, eqn, ins):
    """The ``k`` largest values along the last axis, and their (integer) indices.

    First order: each value is some element of its fiber, which one depending on the data, so
    it depends on the whole fiber (a superset). The indices carry no derivative. Second order:
    nothing of its own (piecewise a selection, so linear).
    """
    values, indices = eqn.outvars
    axis = eqn.params.get("axis", -1) % len(ins[0].shape)
    g_in, m = _reduce_groups(ins[0].shape, (axis,))
    g_out, _ = _reduce_groups(values.aval.shape, (axis,))
    return [ctx.link(values.aval, [(ins[0], GroupMap(g_in, g_out, m))]), Node.of(indices.aval)]


@register("sort")
def _sort(ctx, eqn, ins):
    """Sorting along ``dimension`` (several operands sorted by the first's keys).

    First order: each sorted element is some element of its fiber: it depends on the whole
    fiber. Second order: nothing of its own; sorting is a data-dependent permutation, linear
    on each piece. Example: ``jnp.sort(x) ** 2`` has rows equal to the whole fiber, so
    ``x``'s block is full; ``jnp.sum(jnp.sort(x) ** 2)`` is diagonal at any point, but the
    pattern cannot know which element lands where.
    """
    g, m = _reduce_groups(ins[0].shape, (eqn.params["dimension"],))
    return [
        ctx.link(v.aval, [(i, GroupMap(g, g, m))]) for v, i in zip(eqn.outvars, ins, strict=True)
    ]


#: Cumulative operations along axes longer than this use whole-fiber groups instead of
#: prefix sets (same cost order, fewer index arrays).
_PREFIX_LIMIT = 512


@register("cumsum", "cummax", "cummin", "cumprod", "cumlogsumexp")
def _cumulative(ctx, eqn, ins):
    """Cumulative sum, max, min, product and logsumexp along ``axis`` (forward or reverse).

    First order: element ``t`` of a fiber depends on the prefix ``0 .. t`` (the suffix when
    reversed); along axes longer than ``_PREFIX_LIMIT`` on the whole fiber, a superset.

    Second order: ``cumsum`` is linear and ``cummax``/``cummin`` piecewise linear: nothing.
    ``cumprod`` is a product of its prefix, so distinct prefix members pair (``_reduce``'s
    reasoning, per prefix), and on long axes the output's whole row pairs with itself.
    ``cumlogsumexp`` is smooth and nonlinear in every prefix member: its row pairs with itself.
    Example: ``cumprod([x0, x1, x2])[2]`` couples ``(0, 1), (0, 2), (1, 2)``, no diagonal.
    """
    (v,) = eqn.outvars
    shape, axis = ins[0].shape, eqn.params["axis"]
    length = shape[axis]
    if length > _PREFIX_LIMIT:
        g, m = _reduce_groups(shape, (axis,))
        map_ = GroupMap(g, g, m)
    else:
        pos = np.moveaxis(st.positions(shape), axis, -1).reshape(-1, length)
        t, s = np.tril_indices(length)
        if eqn.params["reverse"]:
            t, s = s, t
        rows, cols = pos[:, t].ravel(), pos[:, s].ravel()
        map_ = MatrixMap(
            sp.csr_array(
                (np.ones(rows.size, bool), (rows, cols)), shape=(ins[0].size, ins[0].size)
            )
        )
    out = ctx.link(v.aval, [(ins[0], map_)])
    if eqn.primitive.name == "cumlogsumexp" or (
        eqn.primitive.name == "cumprod" and length > _PAIR_LIMIT
    ):
        ctx.nonlinear(out)
    elif eqn.primitive.name == "cumprod":
        pos = np.moveaxis(st.positions(shape), axis, -1).reshape(-1, length)
        r = np.arange(length)
        upto = (r[None, :] >= r[:, None]) if eqn.params["reverse"] else (r[None, :] <= r[:, None])
        t, a, b = np.nonzero(upto[:, :, None] & upto[:, None, :] & ~np.eye(length, dtype=bool))
        ctx.pair(out, ins[0], pos[:, a].ravel(), ins[0], pos[:, b].ravel(), pos[:, t].ravel())
    return [out]
