"""Control flow: calls, conditionals and loops, interpreted through their bodies."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..._csr import sorted_unique
from .._graph import MAX_FIXED_POINT_SWEEPS, LoopOp, Node, is_float
from .._maps import GroupMap, IndexMap, row_union, union
from ._common import register


def _sub_jaxpr(params):
    """The body of a call-like equation, under whichever parameter name it uses."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in params:
            return params[key]
    raise KeyError("no sub-jaxpr")


@register(
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "remat",
    "remat2",
    "checkpoint",
    "named_call",
    inline=True,
)
def _call(ctx, eqn, ins):
    """Calls (``jit``, ``remat``, named calls) are inlined: their body is interpreted in place.

    First and second order are exactly those of the body's equations, so a jitted function has
    the pattern of the function it wraps.
    """
    sub = _sub_jaxpr(eqn.params)
    if hasattr(sub, "consts"):
        return ctx.run_closed(sub, ins[: len(sub.jaxpr.invars)])
    return ctx.run(sub, [], ins[: len(sub.invars)])


@register("cond", inline=True)
def _cond(ctx, eqn, ins):
    """``lax.cond`` / ``lax.switch``: the branch that the index selects, or the union of all.

    With an index known at detection time, only that branch is interpreted. Otherwise every
    branch is interpreted on the same operands and each output depends on the union of the
    branches' outputs (first order); each branch records its own second-order terms, which
    count where its output is live. The index is an integer: no derivative. `jax.hessian`
    differentiates the selected branch at each point, so the union covers every point.
    """
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
    """Nodes shaped like ``nodes`` with dependency matrices ``deps`` (new carry nodes)."""
    return [Node(n.shape, n.dtype, d) for n, d in zip(nodes, deps, strict=True)]


def _saturated(n: int, carry: list[Node], entering: list[Node]) -> list:
    """Carried dependencies when every carried element may depend on all that enters."""
    cols = sorted_unique(
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
        new = [union([c.dep, o.dep]) for c, o in zip(carry, outs[: len(init)], strict=True)]
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


@register("while", inline=True)
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


@register("scan", inline=True)
def _scan(ctx, eqn, ins):
    """``lax.scan``: unrolled when short, else the fixed point of its carried dependencies.

    Unrolled (length × body size ≤ `UNROLL_BUDGET`): step ``t`` runs the body on slice ``t``
    of ``xs`` and the carry of step ``t - 1``, so first and second order are exactly those of
    the unrolled program. Longer scans run the body once on carries whose dependencies are the
    fixed point of ``carry ∪ body(carry)`` and on slices that depend on every step's slice
    (`_loop`), recording a `LoopOp`; each ``ys`` element depends on the body's output at its
    position, for every step (a superset).
    """
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
    """A scan as ``length`` copies of its body (exact); ``xs`` sliced per step."""
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
