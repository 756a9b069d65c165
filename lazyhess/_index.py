"""Numpy-style keys on a virtual ``prefix + rows + cols`` array, resolved to entries."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from numpy.lib.stride_tricks import as_strided


def _concrete(part: Any) -> Any:
    if isinstance(part, jax.core.Tracer):
        raise TypeError(
            "Hessian indices must be concrete: got a traced index array. Index with numpy "
            "arrays, Python ints or slices (the point may be traced, the key may not)."
        )
    if isinstance(part, jax.Array):
        return np.asarray(part)
    return part


def normalize_key(key: Any) -> Any:
    """The key with jax arrays turned into numpy arrays (tracers refused)."""
    if isinstance(key, tuple):
        return tuple(_concrete(k) for k in key)
    return _concrete(key)


def _axis_group(shape: tuple[int, ...], start: int, stop: int) -> np.ndarray:
    """A zero-copy array of ``shape`` holding the raveled index over axes ``[start, stop)``."""
    group = shape[start:stop]
    base = np.arange(max(math.prod(group), 1), dtype=np.intp)
    strides = [0] * len(shape)
    step = base.itemsize
    for axis in reversed(range(start, stop)):
        strides[axis] = step
        step *= shape[axis]
    return as_strided(base, shape=shape, strides=strides, writeable=False)


def resolve(
    key: Any, prefix: tuple[int, ...], rows: tuple[int, ...], cols: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``key`` to the virtual array of shape ``prefix + rows + cols``.

    Numpy does the indexing (so its semantics and its errors are exact) on three zero-copy
    index arrays; the result holds, for every element of ``array[key]``, its raveled prefix
    index, raveled row index and raveled column index, each of the result's shape.
    """
    shape = prefix + rows + cols
    a, b = len(prefix), len(prefix) + len(rows)
    key = normalize_key(key)
    return tuple(
        np.asarray(_axis_group(shape, start, stop)[key])
        for start, stop in ((0, a), (a, b), (b, len(shape)))
    )
