"""Products, quotients, integer powers and selects: the elementwise rules with structure."""

from __future__ import annotations

import numpy as np

from .._graph import Node
from .._maps import IndexMap
from ._common import bidx, mask, nonzero, register


@register("integer_pow")
def _integer_pow(ctx, eqn, ins):
    """``out[i] = a[i] ** y`` for a fixed integer ``y``.

    First order: ``out[i]`` depends on ``a[i]``, except for ``y = 0`` (a constant 1: no
    dependency at all).

    Second order: ``d²out = y (y - 1) a**(y-2) da daᵀ + y a**(y-1) d²a``. The first term vanishes
    only for ``y = 0`` and ``y = 1``; for every other ``y`` (negative ones included) the row of
    ``a[i]`` pairs with itself. Example: ``(x0 + x1) ** 1`` adds nothing (it is linear);
    ``(x0 + x1) ** 2`` gives ``{0, 1} × {0, 1}``; ``(x0 + x1) ** -1`` too.
    """
    (v,) = eqn.outvars
    y = eqn.params["y"]
    if y == 0:
        return [Node.of(v.aval)]
    out = ctx.link(v.aval, [(ins[0], IndexMap(None))])
    if y != 1:
        ctx.nonlinear(out)
    return [out]


@register("mul")
def _mul(ctx, eqn, ins):
    """``out = a * b``, broadcast.

    First order: ``d out = b da + a db``. ``out`` depends on ``a`` only where ``b`` may be
    nonzero: where ``b`` is a known constant zero the dependency is dropped (``mask``), and
    symmetrically for ``b``. So ``0 * x`` depends on nothing, and ``where``-style masks made of
    multiplications by constant 0/1 arrays keep their zeros.

    Second order: ``d²out = da dbᵀ + db daᵀ + b d²a + a d²b``. The product itself contributes
    only the cross term: row ``ia`` of ``a`` pairs with row ``ib`` of ``b`` (``ctx.pair``), never
    a row with itself, because a product is linear in each factor. ``b d²a`` and ``a d²b`` are
    the operands' own terms, recorded where they were computed and live only where the other
    factor may be nonzero.

    Example: ``x0 * x1`` has rows ``{0}`` and ``{1}``: the pattern is ``(0, 1)`` and ``(1, 0)``,
    no diagonal. ``(x0 + x1) * x2`` pairs ``{0, 1}`` with ``{2}``: entries ``(0, 2)``,
    ``(1, 2)`` and their mirror images, but no ``(0, 1)``. ``x0 * x0`` pairs ``{0}`` with
    itself: the diagonal ``(0, 0)`` appears because both factors share the variable, which is
    right (``d²/dx0² x0² = 2``).
    """
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    ia = mask(bidx(a, shape), shape, nonzero(b, shape))
    ib = mask(bidx(b, shape), shape, nonzero(a, shape))
    out = ctx.link(v.aval, [(a, IndexMap(ia)), (b, IndexMap(ib))])
    ctx.pair(out, a, ia, b, ib)
    return [out]


@register("div")
def _div(ctx, eqn, ins):
    """``out = a / b``, broadcast.

    First order: ``d out = da / b - a db / b²``. ``out`` always depends on ``a``; it depends on
    ``b`` only where ``a`` may be nonzero (``mask``): ``0 / x`` is the constant 0.

    Second order: ``d²out = -(da dbᵀ + db daᵀ) / b² + 2 a db dbᵀ / b³`` plus the operands'
    own terms. So ``a``'s row pairs with ``b``'s row (the cross term), and ``b``'s row pairs
    with itself (the quotient is nonlinear in ``b``); ``a``'s row never pairs with itself
    (linear in ``a``). Both terms carry a factor that is zero where ``a`` is a known zero,
    which the mask of ``b``'s row already accounts for.

    Example: ``x0 / x1`` gives ``(0, 1)``, ``(1, 0)`` and ``(1, 1)``, but not ``(0, 0)``.
    ``1 / (x0 + x1)`` (a constant numerator) gives ``{0, 1} × {0, 1}`` from the ``b b`` term.
    """
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    ia = bidx(a, shape)
    ib = mask(bidx(b, shape), shape, nonzero(a, shape))
    out = ctx.link(v.aval, [(a, IndexMap(ia)), (b, IndexMap(ib))])
    ctx.pair(out, a, ia, b, ib)
    ctx.pair(out, b, ib, b, ib)
    return [out]


@register("select_n")
def _select_n(ctx, eqn, ins):
    """``out[i] = cases[pred[i]][i]``: ``where``, ``select``, and comparisons folded into selects.

    First order: the predicate is integer or boolean (piecewise constant), so it carries no
    derivative. ``out[i]`` depends on element ``i`` of every case the predicate may select:
    all of them when the predicate depends on the inputs or is unknown, and only the selected
    one where it is a known constant (the other cases' maps are masked to -1 there).

    Second order: nothing of its own; it is linear in each case on each piece. The cases'
    own second derivatives count only where they may be selected (liveness), which matches
    `jax.hessian`: at any point it differentiates the branch that is taken.

    Example: ``where(x > 0, x ** 2, x)`` has the pattern of ``x ** 2`` (the diagonal), because
    the unselected branch ``x`` is linear; ``where(MASK, x * y, 0)`` with a constant ``MASK``
    pairs ``x[i]`` with ``y[i]`` only where ``MASK[i]`` is true.
    """
    (v,) = eqn.outvars
    shape = v.aval.shape
    pred, cases = ins[0], ins[1:]
    if pred.value is not None:
        which = np.broadcast_to(np.asarray(pred.value).astype(np.int64), shape).ravel()
        maps = [mask(bidx(c, shape), shape, which == k) for k, c in enumerate(cases)]
    else:
        maps = [bidx(c, shape) for c in cases]
    return [ctx.link(v.aval, [(c, IndexMap(m)) for c, m in zip(cases, maps, strict=True)])]
