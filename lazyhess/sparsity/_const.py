"""Concrete evaluation of equations whose operands are all known constants.

Common index arithmetic runs in NumPy (no compilation); anything else is bound as a JAX
primitive on the concrete values.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np


def _int_div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
        return np.where((a < 0) != (b < 0), -q, q)
    return np.true_divide(a, b)


def _rem(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.fmod(a, np.where(b == 0, 1, b))
    return np.fmod(a, b)


def _iota(dtype, shape, dimension, **_):
    r = np.arange(shape[dimension], dtype=dtype)
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    return np.broadcast_to(r.reshape(expanded), shape)


def _broadcast(x, *, shape, broadcast_dimensions, **_):
    expanded = [1] * len(shape)
    for src, dst in enumerate(broadcast_dimensions):
        expanded[dst] = x.shape[src]
    return np.broadcast_to(x.reshape(expanded), shape)


def _select_n(pred, *cases):
    return np.choose(pred.astype(np.int64), np.broadcast_arrays(*cases)) if cases[1:] else cases[0]


def _slice(x, *, start_indices, limit_indices, strides, **_):
    strides = strides or (1,) * x.ndim
    return x[tuple(slice(*a) for a in zip(start_indices, limit_indices, strides, strict=True))]


_UNARY = {
    "neg": np.negative,
    "abs": np.abs,
    "sign": np.sign,
    "floor": np.floor,
    "ceil": np.ceil,
    "not": np.invert,
    "exp": np.exp,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
    "sqrt": np.sqrt,
    "copy": np.copy,
    "copy_p": np.copy,
    "stop_gradient": np.asarray,
    "is_finite": np.isfinite,
}
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": _int_div,
    "rem": _rem,
    "max": np.maximum,
    "min": np.minimum,
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
    "shift_left": np.left_shift,
    "shift_right_arithmetic": np.right_shift,
}


def _unary(f: Callable) -> Callable:
    return lambda x, **_: f(x)


def _binary(f: Callable) -> Callable:
    return lambda x, y, **_: f(x, y)


_NUMPY: dict[str, Callable] = {
    **{k: _unary(f) for k, f in _UNARY.items()},
    **{k: _binary(f) for k, f in _BINARY.items()},
    "integer_pow": lambda x, *, y, **_: x**y if y >= 0 else 1 / x ** (-y),
    "convert_element_type": lambda x, **_: x,
    "iota": lambda **p: _iota(**p),
    "broadcast_in_dim": _broadcast,
    "reshape": lambda x, *, new_sizes, **_: x.reshape(new_sizes),
    "squeeze": lambda x, *, dimensions, **_: np.squeeze(x, tuple(dimensions)),
    "expand_dims": lambda x, *, dimensions, **_: np.expand_dims(x, tuple(dimensions)),
    "transpose": lambda x, *, permutation, **_: np.transpose(x, permutation),
    "rev": lambda x, *, dimensions, **_: np.flip(x, tuple(dimensions)),
    "slice": _slice,
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, axis=dimension),
    "select_n": lambda pred, *cases, **_: _select_n(pred, *cases),
    "clamp": lambda lo, x, hi, **_: np.clip(x, lo, hi),
    "reduce_sum": lambda x, *, axes, **_: np.sum(x, axis=tuple(axes)),
    "reduce_max": lambda x, *, axes, **_: np.max(x, axis=tuple(axes)),
    "reduce_min": lambda x, *, axes, **_: np.min(x, axis=tuple(axes)),
}


def evaluate(eqn, values: list[np.ndarray]) -> list[np.ndarray]:
    """The outputs of ``eqn`` on concrete operand ``values``, as NumPy arrays."""
    avals = [v.aval for v in eqn.outvars]
    fn = _NUMPY.get(eqn.primitive.name)
    if fn is not None:
        with np.errstate(all="ignore"):
            out = fn(*values, **eqn.params)
        return [np.asarray(out).astype(avals[0].dtype, copy=False).reshape(avals[0].shape)]
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)
    with jax.ensure_compile_time_eval():
        out = eqn.primitive.bind(*subfuns, *values, **params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [np.asarray(o) for o in outs]
