"""Custom derivative rules: detection follows the rule that differentiation follows.

`jax.hessian` never differentiates the primal body of a ``custom_jvp`` or ``custom_vjp``
function. Its gradient goes through the rule: ``T(x) dx``, the JVP rule's tangent output
(for ``custom_vjp``, the transpose of ``bwd(res(x), g)`` in ``g``). Its second derivative
then differentiates, by ordinary autodiff, what the rule computed:

``H = Σ_k g_k ∂²T_k/∂x∂dx  +  Tᵀ ∇²s J_y``

for ``f = s ∘ custom``, with ``g = ∇s`` and ``J_y`` the derivative of the rule's primal
output. So a rule whose derivative couples entries that the primal does not (a
straight-through estimator, a rule that mixes elements, a ``bwd`` that couples inputs)
gives a Hessian that the primal's pattern misses.

Detection therefore interprets the *derivative program* of the call, the jaxpr of
``(x, dx) -> (y, T(x) dx)`` that JAX builds from the rule (``jax.jvp`` for ``custom_jvp``,
``jax.vjp`` then ``jax.linear_transpose`` for ``custom_vjp``), with the tangent ``dx``
given the same dependency rows as the primal ``x``. Then:

* first order: each output depends on what the rule's primal output depends on and on
  what its tangent output depends on (through ``x`` or ``dx``), a superset of both ``J_y``
  and ``T``;
* second order: the bilinear terms between ``x`` and ``dx`` recorded inside ``T(x) dx``
  are the entries of ``∂²T/∂x∂dx``; liveness reaches the rule only through the tangent
  output, so second derivatives of the primal output alone (which the Hessian never uses)
  add nothing.

A rule that calls its own function (``relu``'s rule returns ``relu(x)``) meets the call
again inside its derivative program; that inner call gets the current estimate of the
outer call's dependencies and the outer call is re-run until the estimate settles. A rule
JAX cannot trace into a derivative program (a ``bwd`` that is not linear in its
cotangent, for instance) falls back to the conservative rule with a `SparsityWarning`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import scipy.sparse as sp

from .._graph import MAX_FIXED_POINT_SWEEPS, Interpreter, Node, is_float
from .._maps import GroupMap, union
from ._common import register

#: Custom rules nested deeper than this inside each other's derivative programs (each a
#: different function or on different operands) fall back to the conservative rule.
MAX_CUSTOM_DEPTH = 16


@dataclasses.dataclass(eq=False)
class _Frame:
    """A custom call being analysed: its identity, operand rows and output estimate."""

    key: tuple
    deps: list
    estimate: list
    reentered: bool = False


def _key(eqn) -> tuple:
    """Identifies the custom function of a call: its primal body and where it was defined."""
    params = eqn.params
    body = params.get("call_jaxpr", params.get("fun_jaxpr"))
    info = getattr(getattr(body, "jaxpr", None), "debug_info", None)
    where = getattr(info, "func_src_info", None) or getattr(info, "func_name", None)
    return (eqn.primitive.name, where, str(body), tuple(str(v.aval) for v in eqn.invars))


def _sorted(m: sp.csr_array) -> sp.csr_array:
    """A copy of ``m`` with sorted, duplicate-free indices, so ``nnz`` counts its entries."""
    m = sp.csr_array(m, copy=True)
    m.sum_duplicates()
    return m


def _canonical(m: sp.csr_array | None) -> sp.csr_array | None:
    return None if m is None else _sorted(m)


def _covers(estimate: sp.csr_array | None, found: sp.csr_array | None) -> bool:
    """Whether every entry of ``found`` is in ``estimate`` (sorted, duplicate-free)."""
    if found is None or found is estimate:
        return True
    if estimate is None:
        return False
    return (estimate + found).nnz == estimate.nnz


def _same(a: sp.csr_array | None, b: sp.csr_array | None) -> bool:
    """Whether two dependency matrices (``None``: no dependency) hold the same entries."""
    if a is b:
        return True
    if a is None or b is None or a.shape != b.shape:
        return False
    a, b = _sorted(a), _sorted(b)
    return bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices))


def _derivative_program(eqn, transpose: bool):
    """The closed jaxpr of ``(x, dx_float) -> (y, dy)`` through the call's own rule.

    ``dx_float`` holds the tangents of the floating operands only; the others get zero
    (float0) tangents. ``transpose`` builds the tangent map from the reverse rule:
    ``dy = linear_transpose(vjp(call))(dx)``.
    """
    avals = [v.aval for v in eqn.invars]
    floats = [k for k, a in enumerate(avals) if is_float(a.dtype)]
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    bind_params = eqn.primitive.get_bind_params(eqn.params)

    def call(*args):
        return list(eqn.primitive.bind(*args, **bind_params))

    def program(primals, float_tangents):
        tangents = [np.zeros(a.shape, jax.dtypes.float0) for a in avals]
        for k, t in zip(floats, float_tangents, strict=True):
            tangents[k] = t
        if not transpose:
            return jax.jvp(call, primals, tangents)
        outs, pullback = jax.vjp(call, *primals)
        out_specs = [jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs]
        (dy,) = jax.linear_transpose(pullback, out_specs)(tuple(tangents))
        return outs, dy

    return jax.make_jaxpr(program)(specs, [specs[k] for k in floats]), floats


def _memo(ctx: Interpreter, eqn, what: str, make):
    """``make()`` computed once per equation and ``what`` during one detection."""
    cached = ctx.memo.get((id(eqn), what))
    if cached is None or cached[0] is not eqn:
        cached = ctx.memo[(id(eqn), what)] = (eqn, make())
    return cached[1]


def _program(eqn, transpose: bool):
    """`_derivative_program`, or ``None`` when JAX cannot build it."""
    try:
        return _derivative_program(eqn, transpose)
    except Exception:  # noqa: BLE001  (any tracing failure: use the conservative rule)
        return None


def _custom(ctx: Interpreter, eqn, ins: list[Node], transpose: bool) -> list[Node]:
    if all(i.dep is None for i in ins):
        body = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
        return ctx.run_closed(body, ins[: len(body.jaxpr.invars)])
    key = _memo(ctx, eqn, "key", lambda: _key(eqn))
    deps = [i.dep for i in ins]
    for frame in reversed(ctx.frames):
        if frame.key == key and all(_same(a, b) for a, b in zip(frame.deps, deps, strict=True)):
            frame.reentered = True
            return _reentry(ctx, eqn, ins, frame)
    name = eqn.primitive.name
    built = None
    if len(ctx.frames) < MAX_CUSTOM_DEPTH:
        built = _memo(ctx, eqn, "program", lambda: _program(eqn, transpose))
    if built is None:
        return ctx.conservative(
            eqn, ins, reason=f"lazyhess cannot trace the derivative rule of a {name!r} call"
        )
    program, floats = built
    nout = len(eqn.outvars)
    frame = _Frame(key, deps, [None] * nout)
    if _memo(ctx, eqn, "self_call", lambda: _calls_itself(program, key)):
        # Start from the primal body's dependencies: for rules such as relu's, whose
        # derivative depends on no more than the primal, one sweep then settles.
        body = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
        primal = ctx.child().run_closed(body, ins[: len(body.jaxpr.invars)])
        frame.estimate = [_canonical(o.dep) for o in primal]
    ctx.frames.append(frame)
    try:
        for _ in range(MAX_FIXED_POINT_SWEEPS):
            sub = ctx.child()
            outs = sub.run_closed(program, [*ins, *(ins[k] for k in floats)])
            primal, tangent = outs[:nout], outs[nout:]
            found = [union([p.dep, t.dep]) for p, t in zip(primal, tangent, strict=True)]
            if not frame.reentered or all(
                _covers(e, f) for e, f in zip(frame.estimate, found, strict=True)
            ):
                break
            frame.estimate = [
                _canonical(union([e, f])) for e, f in zip(frame.estimate, found, strict=True)
            ]
            frame.reentered = False
        else:
            return ctx.conservative(
                eqn, ins, reason=f"the derivative rule of a {name!r} call did not settle"
            )
    finally:
        ctx.frames.pop()
    ctx.ops.extend(sub.ops)
    results = []
    for v, dep, t in zip(eqn.outvars, found, tangent, strict=True):
        out = Node.of(v.aval, dep=dep if is_float(v.aval.dtype) else None)
        if out.dep is not None:
            ctx.pull_link(out, t)
        results.append(out)
    return results


def _calls_itself(program, key: tuple) -> bool:
    """Whether the derivative program calls the same custom function (at its top level)."""
    return any(
        e.primitive.name in ("custom_jvp_call", "custom_vjp_call") and _key(e) == key
        for e in program.jaxpr.eqns
    )


def _reentry(ctx: Interpreter, eqn, ins: list[Node], frame: _Frame) -> list[Node]:
    """A call met again inside its own rule: the outer call's current estimate.

    Its value is differentiated through the same rule, so its first-order dependencies are
    those of the outer call; liveness reaches every operand (a superset).
    """
    outs = []
    for v, dep in zip(eqn.outvars, frame.estimate, strict=True):
        out = Node.of(v.aval, dep=dep if is_float(v.aval.dtype) else None)
        if out.dep is not None:
            for i in ins:
                ctx.pull_link(out, i, GroupMap.everything(i.size, out.size))
        outs.append(out)
    return outs


@register("custom_jvp_call", inline=True)
def _custom_jvp(ctx, eqn, ins):
    """``custom_jvp`` functions, through their JVP rule (see the module docstring).

    Example: a rounding with the straight-through rule ``(q(x), dx)`` (``q`` itself in the
    primal output) has a primal without derivative, yet ``sum(q(x) ** 2)`` has the Hessian
    ``2 I``: the rule's tangent makes ``q(x)`` depend on ``x``, so the pattern is the
    diagonal. A rule with tangent ``2 x sum(dx)`` couples every pair of elements through
    the bilinear term ``x × dx``, although its primal ``x ** 2`` is elementwise.
    """
    return _custom(ctx, eqn, ins, transpose=False)


@register("custom_vjp_call", "custom_vjp_call_jaxpr", inline=True)
def _custom_vjp(ctx, eqn, ins):
    """``custom_vjp`` functions, through ``fwd`` and ``bwd`` (see the module docstring).

    The tangent map is the transpose of ``bwd`` in its cotangent, so what ``bwd`` couples
    the pattern couples. Example: primal ``sin(x)`` (elementwise) with
    ``bwd(x, g) = cos(x) g + sum(g x) x`` has the tangent map ``cos(x) dx + x sum(x dx)``,
    whose terms ``x × dx`` couple every pair of elements.
    """
    return _custom(ctx, eqn, ins, transpose=True)
