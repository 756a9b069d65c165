"""Elementwise maps: linear, without derivative, and nonlinear in one or several operands."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._graph import Interpreter, Node, is_float
from .._maps import IndexMap
from ._common import bidx, register


@register(
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
    """Linear or piecewise-linear elementwise maps, with numpy broadcasting.

    First order: ``out[i]`` depends on element ``bidx(i)`` of each floating operand (integer
    operands, such as a ``rem`` divisor's dtype or ``clamp`` bounds of int type, carry no
    derivative). ``optimization_barrier`` and other multi-result primitives map output ``k`` to
    operand ``k`` only.

    Second order: nothing. ``a + b``, ``-a``, a dtype conversion or a sharding change is linear;
    ``max``, ``min``, ``abs``, ``clamp`` and ``rem`` (``a - b * trunc(a / b)``) are linear on
    each piece, so their second derivative is zero wherever it exists, as in `jax.hessian`.
    The modulus of a complex number is the exception: ``|a|`` is nonlinear in ``(re a, im a)``,
    and its dependency row pairs with itself.
    """
    outs = []
    multi = eqn.primitive.multiple_results
    for k, v in enumerate(eqn.outvars):
        srcs = [ins[k]] if multi else [i for i in ins if is_float(i.dtype)]
        ctx.check_broadcast(v.aval.size, srcs)
        out = ctx.link(v.aval, [(i, IndexMap(bidx(i, v.aval.shape))) for i in srcs])
        if eqn.primitive.name == "abs" and jnp.issubdtype(ins[0].dtype, np.complexfloating):
            ctx.nonlinear(out)
        outs.append(out)
    return outs


@register(
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
    """Piecewise-constant or non-differentiable outputs: no dependency at all.

    First order: the derivative of ``sign``, ``floor``, ``argmax`` and the like is zero wherever
    it exists, and ``stop_gradient`` is defined to have none; the outputs are treated as
    constants of unknown value. Second order: nothing, as there is no first-order dependency
    to carry it.
    """
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


@register(*_UNARY_NONLINEAR)
def _unary_nonlinear(ctx, eqn, ins):
    """Smooth nonlinear functions of one operand, ``out[i] = f(a[i])``.

    First order: ``out[i]`` depends on ``a[i]`` only (the same dependency row).

    Second order: ``d²out[i] = f''(a[i]) da[i] da[i]ᵀ + f'(a[i]) d²a[i]``; the first term
    pairs the row of ``a[i]`` with itself (``ctx.nonlinear``), the second is ``a``'s own term,
    recorded where ``a`` was computed. Example: ``sin(x0 + x1)`` has the dependency row
    ``{0, 1}``, so it gives the full block ``{0, 1} × {0, 1}``; ``sin(x0) + sin(x1)`` gives only
    the diagonal.
    """
    (v,) = eqn.outvars
    out = ctx.link(v.aval, [(ins[0], IndexMap(None))])
    ctx.nonlinear(out)
    return [out]


@register(
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
    """Smooth nonlinear functions of several operands, ``out[i] = f(a[i], b[i], ...)``.

    First order: ``out[i]`` depends on the broadcast element of each floating operand.

    Second order: every mixed and pure second derivative of ``f`` may be nonzero, so the union
    of the operands' rows pairs with itself. Example: ``pow(x0, x1)`` gives all of
    ``{0, 1} × {0, 1}`` (``∂²/∂x0∂x1 x0**x1 = x0**(x1-1) (1 + x1 log x0)``).
    """
    (v,) = eqn.outvars
    srcs = [i for i in ins if is_float(i.dtype)]
    ctx.check_broadcast(v.aval.size, srcs)
    out = ctx.link(v.aval, [(i, IndexMap(bidx(i, v.aval.shape))) for i in srcs])
    ctx.nonlinear(out)
    return [out]
