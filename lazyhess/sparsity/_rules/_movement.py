"""Data movement: every output element is a copy of an operand element, or a constant.

Copies are linear: first order, each output element depends on the element it copies
(an `IndexMap`, -1 where it copies nothing that depends on the inputs); second order,
nothing of their own. Where the copied position is not known (dynamic slices with traced
starts), the output depends on every position it may copy (a `MatrixMap`), still linearly.
"""

from __future__ import annotations

import numpy as np

from .. import _structure as st
from .._maps import IndexMap, MatrixMap
from ._common import register


@register("reshape", "squeeze", "expand_dims")
def _reshape(ctx, eqn, ins):
    """Reshapes (``squeeze``, ``expand_dims``) keep the flat row-major order: ``out[i] = a[i]``.

    A ``reshape`` with ``dimensions`` first transposes the operand. Linear: no second order.
    """
    (v,) = eqn.outvars
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        idx = st.transpose(ins[0].shape, eqn.params["dimensions"])
        return [ctx.link(v.aval, [(ins[0], IndexMap(idx))])]
    return [ctx.link(v.aval, [(ins[0], IndexMap(None))])]


def _moved(ctx, eqn, sources):
    """An output copied from operands: ``sources`` are (node, index array) pairs."""
    (v,) = eqn.outvars
    return [ctx.link(v.aval, [(s, IndexMap(idx)) for s, idx in sources])]


@register("broadcast_in_dim")
def _broadcast_in_dim(ctx, eqn, ins):
    """Each output element copies the operand element it broadcasts from; linear."""
    p = eqn.params
    idx = st.broadcast_in_dim(ins[0].shape, p["shape"], p["broadcast_dimensions"])
    return _moved(ctx, eqn, [(ins[0], idx)])


@register("transpose")
def _transpose(ctx, eqn, ins):
    """``out`` is ``a`` with permuted axes: a permutation of elements; linear."""
    return _moved(ctx, eqn, [(ins[0], st.transpose(ins[0].shape, eqn.params["permutation"]))])


@register("rev")
def _rev(ctx, eqn, ins):
    """``out`` is ``a`` reversed along some axes: a permutation of elements; linear."""
    return _moved(ctx, eqn, [(ins[0], st.rev(ins[0].shape, eqn.params["dimensions"]))])


@register("slice")
def _slice(ctx, eqn, ins):
    """``out`` is a strided window of ``a``: each element copies one; linear."""
    p = eqn.params
    idx = st.slice_(ins[0].shape, p["start_indices"], p["limit_indices"], p["strides"])
    return _moved(ctx, eqn, [(ins[0], idx)])


@register("concatenate")
def _concatenate(ctx, eqn, ins):
    """Each output element copies one element of one operand; linear."""
    idxs = st.concatenate([i.shape for i in ins], eqn.params["dimension"])
    return _moved(ctx, eqn, list(zip(ins, idxs, strict=True)))


@register("stack")
def _stack(ctx, eqn, ins):
    """Stacking is concatenation along a new unit axis; linear."""
    axis = eqn.params["axis"]
    shapes = [i.shape[:axis] + (1,) + i.shape[axis:] for i in ins]
    idxs = st.concatenate(shapes, axis)
    return _moved(ctx, eqn, list(zip(ins, idxs, strict=True)))


@register("pad")
def _pad(ctx, eqn, ins):
    """``out`` is ``a`` with (possibly negative or interior) padding filled by ``padval``.

    First order: elements inside copy ``a``; padding elements copy the scalar ``padval``
    (which may depend on the inputs). Linear: no second order.
    """
    op, padval = ins
    idx = st.pad(op.shape, eqn.params["padding_config"])
    return _moved(ctx, eqn, [(op, idx), (padval, np.where(idx < 0, 0, -1))])


@register("split")
def _split(ctx, eqn, ins):
    """Each output copies one contiguous slice of the operand along ``axis``; linear."""
    axis, sizes = eqn.params["axis"], eqn.params["sizes"]
    shape = ins[0].shape
    outs, start = [], 0
    for v, size in zip(eqn.outvars, sizes, strict=True):
        lo = [0] * len(shape)
        hi = list(shape)
        lo[axis], hi[axis] = start, start + size
        start += size
        outs.append(ctx.link(v.aval, [(ins[0], IndexMap(st.slice_(shape, lo, hi, None)))]))
    return outs


def _known(nodes) -> list[int] | None:
    """The concrete values of scalar nodes, or None if any is unknown."""
    return [int(n.value) for n in nodes] if all(n.value is not None for n in nodes) else None


@register("dynamic_slice")
def _dynamic_slice(ctx, eqn, ins):
    """``out = a[starts : starts + sizes]`` with starts clamped into range.

    First order: with known starts, a copy. With unknown starts along some dimensions, each
    output element may read any operand position its window can reach along those
    dimensions, so it depends on all of them (a superset, still linear). The starts are
    integers: no derivative. Second order: nothing of its own.
    """
    (v,) = eqn.outvars
    op, starts = ins[0], ins[1:]
    sizes = eqn.params["slice_sizes"]
    known = _known(starts)
    if known is not None:
        return _moved(ctx, eqn, [(op, st.dynamic_slice(op.shape, known, sizes))])
    zero = [0 if s.value is None else int(s.value) for s in starts]
    unknown = [d for d, s in enumerate(starts) if s.value is None and sizes[d] < op.shape[d]]
    base = st.dynamic_slice(op.shape, zero, sizes)
    return [ctx.link(v.aval, [(op, MatrixMap(st.shifted(op.shape, base, sizes, unknown)))])]


@register("dynamic_update_slice")
def _dynamic_update_slice(ctx, eqn, ins):
    """``out`` is ``a`` with the window at ``starts`` overwritten by ``upd``.

    First order: with known starts, elements inside the window copy ``upd`` and the others
    copy ``a``. With unknown starts, every element may keep ``a`` or receive any update
    element that can land on it (a superset). Linear: no second order.
    """
    (v,) = eqn.outvars
    op, upd, starts = ins[0], ins[1], ins[2:]
    known = _known(starts)
    if known is not None:
        i_op, i_upd = st.dynamic_update_slice(op.shape, upd.shape, known)
        return _moved(ctx, eqn, [(op, i_op), (upd, i_upd)])
    zero = [0 if s.value is None else int(s.value) for s in starts]
    unknown = [d for d, s in enumerate(starts) if s.value is None and upd.shape[d] < op.shape[d]]
    base = st.dynamic_slice(op.shape, zero, upd.shape)
    where = st.shifted(op.shape, base, upd.shape, unknown).T.tocsr()
    return [ctx.link(v.aval, [(op, IndexMap(None)), (upd, MatrixMap(where))])]
