"""What every rule family shares: registration and the index maps of broadcast operands."""

from __future__ import annotations

import math

import numpy as np

from .. import _structure as st
from .._graph import RULES, Node


def register(*names, inline=False):
    """Registers the decorated rule for the primitives ``names``.

    ``inline`` rules (calls, control flow) run even when no operand depends on the inputs:
    their bodies may hold values that later folds need.
    """

    def deco(fn):
        fn.inline = inline
        for name in names:
            RULES[name] = fn
        return fn

    return deco


def bidx(node: Node, shape):
    """Index map of an elementwise operand broadcast (numpy rules) to ``shape``."""
    if node.shape == tuple(shape):
        return None
    pos = st.positions(node.shape).reshape((1,) * (len(shape) - len(node.shape)) + node.shape)
    return np.broadcast_to(pos, shape).ravel()


def mask(idx, shape, keep: np.ndarray | None):
    """``idx`` (None = identity) with -1 where ``keep`` (broadcast to shape) is False."""
    if keep is None:
        return idx
    base = np.arange(math.prod(shape), dtype=np.int64) if idx is None else idx
    return np.where(keep, base, -1)


def nonzero(node: Node, shape):
    """Where a constant operand is nonzero, broadcast to ``shape`` and flat.

    None when the operand depends on the inputs or its value is unknown.
    """
    if node.dep is not None or node.value is None:
        return None
    return np.broadcast_to(np.asarray(node.value) != 0, shape).ravel()
