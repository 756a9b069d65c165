"""One rule per primitive family: how outputs depend on operands, to first and second order.

A rule receives the interpreter, the equation and its operand nodes (at least one of which
depends on the inputs) and returns the output nodes, recording links and pair terms.
Piecewise-linear operations (abs, max, min, clamp, select, sort, comparisons folded into
selects) are treated as linear: their second derivative is zero wherever it exists, which is
what `jax.hessian` returns.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import scipy.sparse as sp
from jax import lax

from . import _structure as st
from ._graph import (
    MAX_FIXED_POINT_SWEEPS,
    RULES,
    Interpreter,
    LoopOp,
    Node,
    is_float,
)
from ._maps import GroupMap, IndexMap, MatrixMap, row_union, union


def _register(*names, inline=False):
    def deco(fn):
        fn.inline = inline
        for name in names:
            RULES[name] = fn
        return fn

    return deco


def _bidx(node: Node, shape):
    """Index map of an elementwise operand broadcast (numpy rules) to ``shape``."""
    if node.shape == tuple(shape):
        return None
    pos = st.positions(node.shape).reshape((1,) * (len(shape) - len(node.shape)) + node.shape)
    return np.broadcast_to(pos, shape).ravel()


def _mask(idx, shape, keep: np.ndarray | None):
    """``idx`` (None = identity) with -1 where ``keep`` (broadcast to shape) is False."""
    if keep is None:
        return idx
    base = np.arange(math.prod(shape), dtype=np.int64) if idx is None else idx
    return np.where(keep, base, -1)


def _nonzero(node: Node, shape):
    """Where a constant operand is nonzero, broadcast to ``shape`` and flat.

    None when the operand depends on the inputs or its value is unknown.
    """
    if node.dep is not None or node.value is None:
        return None
    return np.broadcast_to(np.asarray(node.value) != 0, shape).ravel()


# ---------------------------------------------------------------- elementwise


@_register(
    "add",
    "sub",
    "add_any",
    "neg",
    "convert_element_type",
    "copy",
    "copy_p",
    "real",
    "imag",
    "conj",
    "reduce_precision",
    "max",
    "min",
    "abs",
    "clamp",
    "rem",
    "complex",
    "optimization_barrier",
    "device_put",
    "sharding_constraint",
    "mesh_cast",
    "reshard",
)
def _linear_elementwise(ctx: Interpreter, eqn, ins):
    """Linear (or piecewise linear) elementwise maps, with numpy broadcasting.

    The modulus of a complex number is the exception: it is nonlinear.
    """
    outs = []
    multi = eqn.primitive.multiple_results
    for k, v in enumerate(eqn.outvars):
        srcs = [ins[k]] if multi else [i for i in ins if is_float(i.dtype)]
        out = ctx.link(v.aval, [(i, IndexMap(_bidx(i, v.aval.shape))) for i in srcs])
        if eqn.primitive.name == "abs" and jax.dtypes.issubdtype(ins[0].dtype, np.complexfloating):
            ctx.nonlinear(out)
        outs.append(out)
    return outs


@_register("reshape", "squeeze", "expand_dims")
def _reshape(ctx, eqn, ins):
    """Reshapes keep the flat (row-major) order."""
    (v,) = eqn.outvars
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        idx = st.transpose(ins[0].shape, eqn.params["dimensions"])
        return [ctx.link(v.aval, [(ins[0], IndexMap(idx))])]
    return [ctx.link(v.aval, [(ins[0], IndexMap(None))])]


@_register(
    "stop_gradient",
    "sign",
    "floor",
    "ceil",
    "round",
    "is_finite",
    "nextafter",
    "argmax",
    "argmin",
    "random_bits",
    "random_seed",
    "random_wrap",
    "random_unwrap",
    "bitcast_convert_type",
)
def _no_derivative(ctx, eqn, ins):
    """Zero derivative everywhere it exists: no dependency."""
    return [Node.of(v.aval) for v in eqn.outvars]


_UNARY_NONLINEAR = (
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "acosh",
    "atanh",
    "exp",
    "exp2",
    "log",
    "log1p",
    "expm1",
    "sqrt",
    "rsqrt",
    "cbrt",
    "logistic",
    "erf",
    "erfc",
    "erf_inv",
    "lgamma",
    "digamma",
    "bessel_i0e",
    "bessel_i1e",
    "square",
)


@_register(*_UNARY_NONLINEAR)
def _unary_nonlinear(ctx, eqn, ins):
    (v,) = eqn.outvars
    out = ctx.link(v.aval, [(ins[0], IndexMap(None))])
    ctx.nonlinear(out)
    return [out]


@_register(
    "pow",
    "atan2",
    "igamma",
    "igammac",
    "igamma_grad_a",
    "random_gamma_grad",
    "polygamma",
    "zeta",
    "regularized_incomplete_beta",
    "hypot",
)
def _nonlinear_elementwise(ctx, eqn, ins):
    """Nonlinear elementwise functions of several operands: every pair of operands couples."""
    (v,) = eqn.outvars
    out = ctx.link(
        v.aval, [(i, IndexMap(_bidx(i, v.aval.shape))) for i in ins if is_float(i.dtype)]
    )
    ctx.nonlinear(out)
    return [out]


@_register("integer_pow")
def _integer_pow(ctx, eqn, ins):
    (v,) = eqn.outvars
    y = eqn.params["y"]
    if y == 0:
        return [Node.of(v.aval)]
    out = ctx.link(v.aval, [(ins[0], IndexMap(None))])
    if y != 1:
        ctx.nonlinear(out)
    return [out]


@_register("mul")
def _mul(ctx, eqn, ins):
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    ia = _mask(_bidx(a, shape), shape, _nonzero(b, shape))
    ib = _mask(_bidx(b, shape), shape, _nonzero(a, shape))
    out = ctx.link(v.aval, [(a, IndexMap(ia)), (b, IndexMap(ib))])
    ctx.pair(out, a, ia, b, ib)
    return [out]


@_register("div")
def _div(ctx, eqn, ins):
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    ia = _bidx(a, shape)
    ib = _mask(_bidx(b, shape), shape, _nonzero(a, shape))
    out = ctx.link(v.aval, [(a, IndexMap(ia)), (b, IndexMap(ib))])
    ctx.pair(out, a, ia, b, ib)
    ctx.pair(out, b, ib, b, ib)
    return [out]


@_register("select_n")
def _select_n(ctx, eqn, ins):
    (v,) = eqn.outvars
    shape = v.aval.shape
    pred, cases = ins[0], ins[1:]
    if pred.value is not None:
        which = np.broadcast_to(np.asarray(pred.value).astype(np.int64), shape).ravel()
        maps = [_mask(_bidx(c, shape), shape, which == k) for k, c in enumerate(cases)]
    else:
        maps = [_bidx(c, shape) for c in cases]
    return [ctx.link(v.aval, [(c, IndexMap(m)) for c, m in zip(cases, maps, strict=True)])]


# ------------------------------------------------------------------ movement


def _moved(ctx, eqn, sources):
    """An output copied from operands: ``sources`` are (node, index array) pairs."""
    (v,) = eqn.outvars
    return [ctx.link(v.aval, [(s, IndexMap(idx)) for s, idx in sources])]


@_register("broadcast_in_dim")
def _broadcast_in_dim(ctx, eqn, ins):
    p = eqn.params
    idx = st.broadcast_in_dim(ins[0].shape, p["shape"], p["broadcast_dimensions"])
    return _moved(ctx, eqn, [(ins[0], idx)])


@_register("transpose")
def _transpose(ctx, eqn, ins):
    return _moved(ctx, eqn, [(ins[0], st.transpose(ins[0].shape, eqn.params["permutation"]))])


@_register("rev")
def _rev(ctx, eqn, ins):
    return _moved(ctx, eqn, [(ins[0], st.rev(ins[0].shape, eqn.params["dimensions"]))])


@_register("slice")
def _slice(ctx, eqn, ins):
    p = eqn.params
    idx = st.slice_(ins[0].shape, p["start_indices"], p["limit_indices"], p["strides"])
    return _moved(ctx, eqn, [(ins[0], idx)])


@_register("concatenate")
def _concatenate(ctx, eqn, ins):
    idxs = st.concatenate([i.shape for i in ins], eqn.params["dimension"])
    return _moved(ctx, eqn, list(zip(ins, idxs, strict=True)))


@_register("stack")
def _stack(ctx, eqn, ins):
    axis = eqn.params["axis"]
    shapes = [i.shape[:axis] + (1,) + i.shape[axis:] for i in ins]
    idxs = st.concatenate(shapes, axis)
    return _moved(ctx, eqn, list(zip(ins, idxs, strict=True)))


@_register("pad")
def _pad(ctx, eqn, ins):
    op, padval = ins
    idx = st.pad(op.shape, eqn.params["padding_config"])
    return _moved(ctx, eqn, [(op, idx), (padval, np.where(idx < 0, 0, -1))])


@_register("split")
def _split(ctx, eqn, ins):
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
    return [int(n.value) for n in nodes] if all(n.value is not None for n in nodes) else None


@_register("dynamic_slice")
def _dynamic_slice(ctx, eqn, ins):
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


@_register("dynamic_update_slice")
def _dynamic_update_slice(ctx, eqn, ins):
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


def _is_clip(mode) -> bool:
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


@_register("gather")
def _gather(ctx, eqn, ins):
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


@_register(
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
            if np.unique(targets).size < targets.size:
                ctx.nonlinear(out)
        return [out]
    if name in ("scatter-mul", "scatter_mul"):
        ctx.nonlinear(out)
    return [out]


# ---------------------------------------------------------------- reductions


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


@_register(
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_and",
    "reduce_or",
    "reduce_xor",
)
def _reduce(ctx, eqn, ins):
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


@_register("top_k")
def _top_k(ctx, eqn, ins):
    """The k largest along an axis: each value comes from somewhere in its fiber."""
    values, indices = eqn.outvars
    axis = eqn.params.get("axis", -1) % len(ins[0].shape)
    g_in, m = _reduce_groups(ins[0].shape, (axis,))
    g_out, _ = _reduce_groups(values.aval.shape, (axis,))
    return [ctx.link(values.aval, [(ins[0], GroupMap(g_in, g_out, m))]), Node.of(indices.aval)]


@_register(
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
    """Factorizations and solves: every output depends nonlinearly on every operand."""
    return ctx.conservative(eqn, ins, warn=False)


@_register("reduce_window_sum", "reduce_window_max", "reduce_window_min")
def _reduce_window(ctx, eqn, ins):
    """Pooling: each output reads its (strided, dilated, padded) window, linearly."""
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


@_register("sort")
def _sort(ctx, eqn, ins):
    g, m = _reduce_groups(ins[0].shape, (eqn.params["dimension"],))
    return [
        ctx.link(v.aval, [(i, GroupMap(g, g, m))]) for v, i in zip(eqn.outvars, ins, strict=True)
    ]


#: Cumulative operations along axes longer than this use whole-fiber groups instead of
#: prefix sets (same cost order, fewer index arrays).
_PREFIX_LIMIT = 512


@_register("cumsum", "cummax", "cummin", "cumprod", "cumlogsumexp")
def _cumulative(ctx, eqn, ins):
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


# ------------------------------------------------------------------- products


def _dot_layout(shape, contract, batch):
    """Positions of an operand arranged as (batch, free, contract)."""
    free = [d for d in range(len(shape)) if d not in contract and d not in batch]
    pos = st.positions(shape).transpose(list(batch) + free + list(contract))
    nb = math.prod(shape[d] for d in batch)
    nf = math.prod(shape[d] for d in free)
    nc = math.prod(shape[d] for d in contract)
    return pos.reshape(nb, nf, nc)


@_register("dot_general")
def _dot_general(ctx, eqn, ins):
    """Bilinear: out[b,i,j] = Σ_c lhs[b,i,c] rhs[b,j,c]; constant zeros drop dependencies."""
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


def _conv_taps(x, y, k, stride, lo, lhs_dil, rhs_dil) -> np.ndarray:
    """Input position read by output position y through kernel tap k (-1 for padding)."""
    pos = np.arange(y)[:, None] * stride + np.arange(k)[None, :] * rhs_dil - lo
    inside = (pos >= 0) & (pos < (x - 1) * lhs_dil + 1) & (pos % lhs_dil == 0)
    return np.where(inside, pos // lhs_dil, -1)


@_register("conv_general_dilated")
def _conv(ctx, eqn, ins):
    """Bilinear in (lhs, rhs): each output reads its receptive field through the kernel."""
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


# --------------------------------------------------------------- control flow


def _sub_jaxpr(params):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in params:
            return params[key]
    raise KeyError("no sub-jaxpr")


@_register(
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
    "custom_lin",
    "named_call",
    inline=True,
)
def _call(ctx, eqn, ins):
    """Calls are inlined: their body is interpreted in place."""
    sub = _sub_jaxpr(eqn.params)
    if hasattr(sub, "consts"):
        return ctx.run_closed(sub, ins[: len(sub.jaxpr.invars)])
    return ctx.run(sub, [], ins[: len(sub.invars)])


@_register("cond", inline=True)
def _cond(ctx, eqn, ins):
    """The union over the branches that the index can select."""
    index, ops = ins[0], ins[1:]
    branches = eqn.params["branches"]
    if index.value is not None:
        return ctx.run_closed(branches[int(np.clip(index.value, 0, len(branches) - 1))], ops)
    if all(o.dep is None for o in ops):
        return ctx.fold(eqn, ins)
    results = [ctx.run_closed(b, ops) for b in branches]
    outs = []
    for k, v in enumerate(eqn.outvars):
        outs.append(ctx.link(v.aval, [(r[k], IndexMap(None)) for r in results]))
    return outs


def _fresh(nodes, deps):
    return [Node(n.shape, n.dtype, d) for n, d in zip(nodes, deps, strict=True)]


def _saturated(n: int, carry: list[Node], entering: list[Node]) -> list:
    """Carried dependencies when every carried element may depend on all that enters."""
    cols = np.unique(
        np.concatenate(
            [row_union(e.dep) for e in entering if e.dep is not None] or [np.zeros(0, np.int64)]
        )
    )
    deps = []
    for c in carry:
        if not is_float(c.dtype) or cols.size == 0:
            deps.append(None)
            continue
        indptr = np.arange(c.size + 1, dtype=np.int64) * cols.size
        deps.append(
            sp.csr_array(
                (np.ones(c.size * cols.size, bool), np.tile(cols, c.size), indptr),
                shape=(c.size, n),
            )
        )
    return deps


def _loop(ctx, body, consts, init, xs_slices, num_ys):
    """Fixed point of a loop body ``(consts, carry, xs) -> (carry, ys)``; records a LoopOp.

    Returns (carry nodes after the loop, body ys nodes).
    """
    deps = [c.dep for c in init]
    for _ in range(MAX_FIXED_POINT_SWEEPS):
        carry = _fresh(init, deps)
        sub = ctx.child()
        outs = sub.run_closed(body, [*consts, *carry, *xs_slices])
        new = [union([c.dep, o.dep]) for c, o in zip(carry, outs, strict=True)]
        if all(
            (a is None and b is None) or (a is not None and b is not None and a.nnz == b.nnz)
            for a, b in zip(deps, new, strict=True)
        ):
            break
        deps = new
    else:
        entering = [*consts, *init, *xs_slices]
        carry = _fresh(init, _saturated(ctx.n, init, entering))
        sub = ctx.child()
        outs = sub.run_closed(body, [*consts, *carry, *xs_slices])
    for c, i in zip(carry, init, strict=True):
        ctx.pull_link(c, i)
    ncarry = len(init)
    ctx.ops.append(LoopOp(sub.ops, carry, outs[:ncarry]))
    return carry, outs[ncarry : ncarry + num_ys]


@_register("while", inline=True)
def _while(ctx, eqn, ins):
    """A while loop, unrolled as long as its condition folds to a constant.

    Unrolling stops at `UNROLL_BUDGET`; from there (or from the first condition that
    depends on unknown values) the fixed point of the carried dependencies takes over.
    """
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts, carry = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
    if all(i.dep is None for i in ins):
        return ctx.fold(eqn, ins)
    body, cond = p["body_jaxpr"], p["cond_jaxpr"]
    cost = max(len(body.jaxpr.eqns), 1)
    for _ in range(UNROLL_BUDGET // cost):
        (go,) = ctx.child().run_closed(cond, [*cond_consts, *carry])
        if go.value is None:
            break
        if not bool(go.value):
            return carry
        carry = ctx.run_closed(body, [*body_consts, *carry])
    carry, _ = _loop(ctx, body, body_consts, carry, [], 0)
    return carry


#: Scans whose length times body size is at most this are unrolled (exact); longer ones
#: use the fixed point of their carried dependencies.
UNROLL_BUDGET = 4096


@_register("scan", inline=True)
def _scan(ctx, eqn, ins):
    p = eqn.params
    if all(i.dep is None for i in ins):
        return ctx.fold(eqn, ins)
    body, length = p["jaxpr"], p["length"]
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, init, xs = (
        ins[:n_consts],
        ins[n_consts : n_consts + n_carry],
        ins[n_consts + n_carry :],
    )
    ys_avals = [v.aval for v in eqn.outvars[n_carry:]]
    if length * max(len(body.jaxpr.eqns), 1) <= UNROLL_BUDGET:
        return _scan_unrolled(ctx, eqn, consts, init, xs, ys_avals)
    slices = []
    for x, var in zip(xs, body.jaxpr.invars[n_consts + n_carry :], strict=True):
        m = var.aval.size
        node = Node.of(var.aval)
        if x.dep is not None:
            g = np.arange(x.size, dtype=np.int64) % max(m, 1)
            node = ctx.link(var.aval, [(x, GroupMap(g, np.arange(m), m))])
        slices.append(node)
    carry, ys_body = _loop(ctx, body, consts, init, slices, len(ys_avals))
    ys = []
    for y, aval in zip(ys_body, ys_avals, strict=True):
        m = y.size
        ys.append(ctx.link(aval, [(y, IndexMap(np.tile(np.arange(m), length)))]))
    return [*carry, *ys]


def _scan_unrolled(ctx, eqn, consts, init, xs, ys_avals):
    p = eqn.params
    body, length = p["jaxpr"], p["length"]
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    carry = list(init)
    per_step = [None] * length
    for t in order:
        slices = []
        for x in xs:
            m = x.size // length if length else 0
            idx = np.arange(t * m, (t + 1) * m, dtype=np.int64)
            value = None if x.value is None else np.ravel(x.value)[idx].reshape(x.shape[1:])
            node = Node(x.shape[1:], x.dtype, value=value)
            if x.dep is not None:
                node = ctx.link(x.shape[1:], [(x, IndexMap(idx))], dtype=x.dtype)
            slices.append(node)
        outs = ctx.run_closed(body, [*consts, *carry, *slices])
        carry = outs[: len(init)]
        per_step[t] = outs[len(init) :]
    ys = []
    for k, aval in enumerate(ys_avals):
        m = aval.size // length if length else 0
        steps = [per_step[t][k] for t in range(length)]
        if all(s.dep is None for s in steps):
            if all(s.value is not None for s in steps):
                ys.append(
                    Node.of(aval, value=np.stack([s.value for s in steps]).reshape(aval.shape))
                )
            else:
                ys.append(Node.of(aval))
            continue
        sources = []
        for t, s in enumerate(steps):
            idx = np.full(aval.size, -1, np.int64)
            idx[t * m : (t + 1) * m] = np.arange(m)
            sources.append((s, IndexMap(idx)))
        ys.append(ctx.link(aval, sources))
    return [*carry, *ys]
