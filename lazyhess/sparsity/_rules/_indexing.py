"""Gathers and scatters, with known (folded) or unknown indices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from jax import lax

from ..._csr import sorted_unique
from .. import _structure as st
from .._graph import Node
from .._maps import IndexMap, MatrixMap
from ._common import register


def _is_clip(mode) -> bool:
    """Whether out-of-bounds indices are clamped (else they are dropped or filled)."""
    return (
        mode is None
        or mode
        in (
            lax.GatherScatterMode.CLIP,
            lax.GatherScatterMode.PROMISE_IN_BOUNDS,
        )
        or getattr(mode, "name", "") in ("CLIP", "PROMISE_IN_BOUNDS")
    )


def _unknown_start_map(op_shape, index_shape, dn_args, slice_sizes) -> sp.csr_array:
    """(element × operand) candidates of a gather/scatter whose start indices are unknown.

    ``dn_args`` are gather-style dimension numbers (offset dims, collapsed dims, start
    index map, operand batching dims, indices batching dims). Along the dimensions that the
    indices address, an element may read anywhere its window fits; along the others its
    position is fixed.
    """
    offset_dims, collapsed, start_map, op_batch, idx_batch = dn_args
    base = st.gather(
        op_shape,
        np.zeros(index_shape, np.int64),
        offset_dims,
        collapsed,
        start_map,
        op_batch,
        idx_batch,
        slice_sizes,
        clip=True,
    )
    return st.shifted(op_shape, base, slice_sizes, sorted(set(start_map)))


@register("gather")
def _gather(ctx, eqn, ins):
    """``out`` reads windows of the operand at start indices: ``x[idx]``, ``take``, ``x[:, perm]``.

    First order: with known (folded) indices each output element copies one operand element
    (or none, where an out-of-bounds index fills); with unknown indices it may read any
    position its window can reach along the indexed dimensions. The indices are integers: no
    derivative. Second order: nothing of its own (a copy is linear).

    Example: ``x[jnp.array([0, 0, 2])] ** 2`` has dependency rows ``{0}, {0}, {2}``: the
    pattern is the diagonal at 0 and 2.
    """
    (v,) = eqn.outvars
    op, indices = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    if indices.value is None:
        dn_args = (
            dn.offset_dims,
            dn.collapsed_slice_dims,
            dn.start_index_map,
            dn.operand_batching_dims,
            dn.start_indices_batching_dims,
        )
        cand = _unknown_start_map(op.shape, indices.shape, dn_args, p["slice_sizes"])
        return [ctx.link(v.aval, [(op, MatrixMap(cand))])]
    idx = st.gather(
        op.shape,
        np.asarray(indices.value),
        dn.offset_dims,
        dn.collapsed_slice_dims,
        dn.start_index_map,
        dn.operand_batching_dims,
        dn.start_indices_batching_dims,
        p["slice_sizes"],
        clip=_is_clip(p["mode"]),
    )
    return [ctx.link(v.aval, [(op, IndexMap(idx))])]


def _scatter_window(eqn, op: Node, upd: Node) -> list[int]:
    """The window (slice) sizes of a scatter's updates, in operand dimensions."""
    dn = eqn.params["dimension_numbers"]
    window = iter(upd.shape[d] for d in dn.update_window_dims)
    return [
        1 if d in dn.inserted_window_dims or d in dn.operand_batching_dims else next(window)
        for d in range(len(op.shape))
    ]


def _scatter_targets(eqn, op: Node, indices: np.ndarray, upd: Node):
    """(possible target of each update element, whether it surely lands there)."""
    dn = eqn.params["dimension_numbers"]
    sizes = _scatter_window(eqn, op, upd)
    args = (
        op.shape,
        indices,
        dn.update_window_dims,
        dn.inserted_window_dims,
        dn.scatter_dims_to_operand_dims,
        dn.operand_batching_dims,
        dn.scatter_indices_batching_dims,
        sizes,
    )
    clip = _is_clip(eqn.params["mode"])
    maybe = st.gather(*args, clip=clip, per_element=True)
    sure = maybe if clip else st.gather(*args, clip=False)
    return maybe, sure


@register(
    "scatter",
    "scatter-add",
    "scatter_add",
    "scatter-sub",
    "scatter_sub",
    "scatter-mul",
    "scatter_mul",
    "scatter-min",
    "scatter_min",
    "scatter-max",
    "scatter_max",
)
def _scatter(ctx, eqn, ins):
    """``out`` is the operand with updates set, added, multiplied or min/maxed in at indices.

    These are ``x.at[idx].set/add/mul/min/max``.

    First order: each output element depends on the operand element at its position (except,
    for ``scatter``, where an update surely overwrites it) and on every update element that may
    land there. Unknown indices mean an update may land anywhere its window fits.

    Second order: ``set``, ``add``, ``sub`` are linear and ``min``/``max`` piecewise linear:
    nothing of their own. ``mul`` is bilinear, ``out[t] = x[t] * prod(upd[k] for k -> t)``:
    the operand's row at ``t`` pairs with the row of each update landing on ``t``. When two
    updates land on one target they also multiply each other, and with unknown indices the
    targets are unknown: in both cases every output row pairs with itself (a superset).

    Example: ``x.at[2].mul(y0)`` pairs ``x2`` with ``y0`` only; ``x.at[jnp.array([2, 2])]
    .mul(y)`` couples ``x2``, ``y0`` and ``y1`` with each other (and, conservatively, gives
    the other elements of ``x`` their diagonal).
    """
    (v,) = eqn.outvars
    op, indices, upd = ins[0], ins[1], ins[2]
    name = eqn.primitive.name
    m = v.aval.size
    if indices.value is None:
        dn = eqn.params["dimension_numbers"]
        dn_args = (
            dn.update_window_dims,
            dn.inserted_window_dims,
            dn.scatter_dims_to_operand_dims,
            dn.operand_batching_dims,
            dn.scatter_indices_batching_dims,
        )
        cand = _unknown_start_map(op.shape, indices.shape, dn_args, _scatter_window(eqn, op, upd))
        out = ctx.link(v.aval, [(op, IndexMap(None)), (upd, MatrixMap(cand.T.tocsr()))])
    else:
        maybe, sure = _scatter_targets(eqn, op, np.asarray(indices.value), upd)
        keep = maybe >= 0
        mat = sp.csr_array(
            (np.ones(int(keep.sum()), bool), (maybe[keep], np.flatnonzero(keep))),
            shape=(m, upd.size),
        )
        op_idx = None
        if name == "scatter":
            hit = np.zeros(m, bool)
            hit[sure[sure >= 0]] = True
            op_idx = np.where(hit, -1, np.arange(m, dtype=np.int64))
        out = ctx.link(v.aval, [(op, IndexMap(op_idx)), (upd, MatrixMap(mat))])
        if name in ("scatter-mul", "scatter_mul"):
            targets = maybe[keep]
            ctx.pair(out, op, targets, upd, np.flatnonzero(keep), targets)
            if sorted_unique(targets).size < targets.size:
                ctx.nonlinear(out)
        return [out]
    if name in ("scatter-mul", "scatter_mul"):
        ctx.nonlinear(out)
    return [out]
