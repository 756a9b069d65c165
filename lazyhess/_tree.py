"""Pytree layout: the arguments' split, the flat vector over the inputs, jax.hessian's nesting."""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._arguments import is_array


@dataclasses.dataclass(frozen=True)
class LeafInfo:
    """One leaf of a flattened pytree: where it sits in the flat vector and its shape.

    For batched inputs ``shape`` is the per-sample shape (the batch axis removed).
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def size(self) -> int:
        """Number of elements per sample."""
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        """End of the leaf's range in the flat vector."""
        return self.offset + self.size


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A leaf of the Hessian's nesting: the block d²f[out] / d x[row] d x[col]."""

    out: int
    row: int
    col: int


def leaf_infos(leaves_with_paths, drop_leading: bool) -> tuple[LeafInfo, ...]:
    """Offsets of ``(path, leaf)`` pairs laid end to end, optionally without a batch axis."""
    infos, offset = [], 0
    for path, leaf in leaves_with_paths:
        if not hasattr(leaf, "dtype"):
            leaf = jnp.asarray(leaf)
        shape = tuple(leaf.shape[1:] if drop_leading else leaf.shape)
        info = LeafInfo(jax.tree_util.keystr(path), shape, np.dtype(leaf.dtype), offset)
        infos.append(info)
        offset = info.stop
    return tuple(infos)


_NOTHING_ELSE = jax.tree_util.tree_structure(([], {}))


class Signature:
    """How ``fun`` is called: which arguments are differentiated, traced or static.

    Differentiated arguments are replaced by the flat vector ``x``; the other positional
    arguments and the keyword arguments are split into array leaves (passed to compiled
    kernels as traced values, so a new point reuses the kernels) and everything else (baked
    into the kernels as Python constants).
    """

    def __init__(self, args: tuple, kwargs: dict, argnums: tuple[int, ...], sequence: bool):
        self.nargs = len(args)
        self.argnums = argnums
        self.sequence = sequence
        others = ([a for i, a in enumerate(args) if i not in argnums], kwargs)
        leaves, self.other_tree = jax.tree_util.tree_flatten(others)
        self.dynamic_mask = tuple(is_array(leaf) for leaf in leaves)
        self.static_leaves = tuple(
            None if d else leaf for d, leaf in zip(self.dynamic_mask, leaves, strict=True)
        )

    def primals(self, args: tuple) -> Any:
        """The differentiated arguments, shaped as jax.hessian's ``argnums`` shapes them."""
        if self.sequence:
            return tuple(args[i] for i in self.argnums)
        return args[self.argnums[0]]

    def at(self, args: tuple, kwargs: dict) -> Signature:
        """The signature of the call with ``args`` and ``kwargs``, structured as this one's.

        This one itself when every argument is differentiated: nothing else to compare.
        """
        if self.other_tree == _NOTHING_ELSE:
            return self
        return Signature(args, kwargs, self.argnums, self.sequence)

    def dynamic(self, args: tuple, kwargs: dict) -> list:
        """The array leaves of the non-differentiated arguments."""
        if not any(self.dynamic_mask):
            return []
        others = ([a for i, a in enumerate(args) if i not in self.argnums], kwargs)
        leaves = jax.tree_util.tree_leaves(others)
        return [leaf for d, leaf in zip(self.dynamic_mask, leaves, strict=True) if d]

    def same_statics(self, other: Signature) -> bool:
        """Whether ``other`` bakes the same Python constants into the kernels."""
        if (self.other_tree, self.dynamic_mask, self.argnums, self.sequence) != (
            other.other_tree,
            other.dynamic_mask,
            other.argnums,
            other.sequence,
        ):
            return False
        return all(
            _same_static(a, b)
            for a, b in zip(self.static_leaves, other.static_leaves, strict=True)
        )

    def call(self, fun: Callable, primals: Any, dynamic: Sequence) -> Any:
        """``fun`` evaluated with ``primals`` in the differentiated slots."""
        dyn = iter(dynamic)
        leaves = [
            next(dyn) if d else s
            for d, s in zip(self.dynamic_mask, self.static_leaves, strict=True)
        ]
        others, kwargs = jax.tree_util.tree_unflatten(self.other_tree, leaves)
        others = iter(others)
        slots = primals if self.sequence else (primals,)
        by_slot = dict(zip(self.argnums, slots, strict=True))
        args = [by_slot[i] if i in by_slot else next(others) for i in range(self.nargs)]
        return fun(*args, **kwargs)


def _same_static(a: Any, b: Any) -> bool:
    """Whether two Python constants give ``fun`` the same program.

    Same type and equal value, floats by bit pattern: ``0.0`` and ``-0.0`` (or ``True``
    and ``1``) compare equal but can make different programs (``1 / x``, ``x ** p``).
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, float | complex):
        return struct.pack("<2d", complex(a).real, complex(a).imag) == struct.pack(
            "<2d", complex(b).real, complex(b).imag
        )
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an odd __eq__ just means "not provably the same"
        return False


class Layout:
    """The flat coordinates of a Hessian and the nesting of jax.hessian's output.

    The differentiated leaves are laid end to end in ``jax.flatten_util.ravel_pytree`` order
    into a flat vector of ``n`` elements per sample. HVP results are ``(p, n)`` arrays whose
    first axis runs over the output elements (or over the samples, with a batch).
    """

    def __init__(
        self,
        in_tree: Any,
        inputs: tuple[LeafInfo, ...],
        out_tree: Any,
        outputs: tuple[LeafInfo, ...],
        batch: int | None,
    ):
        self.in_tree = in_tree
        self.inputs = inputs
        self.out_tree = out_tree
        self.outputs = outputs
        self.batch = batch
        self.n = inputs[-1].stop if inputs else 0
        self.p = batch if batch is not None else sum(o.size for o in outputs)
        self.dtype = np.dtype(jnp.result_type(*(leaf.dtype for leaf in inputs)))

    @cached_property
    def lead(self) -> tuple[int, ...]:
        """The leading axes of the flat view: the batch, the output's shape, or all outputs."""
        if self.batch is not None:
            return (self.batch,)
        if len(self.outputs) == 1:
            return self.outputs[0].shape
        return (self.p,)

    @property
    def d(self) -> int:
        """Length of the flat vector over all samples."""
        return self.n * (self.batch or 1)

    def ravel(self, leaves: Sequence) -> jax.Array:
        """The flat vector (``(d,)``) of input ``leaves``, in the common dtype."""
        if (
            len(leaves) == 1
            and isinstance(leaves[0], jax.Array)
            and leaves[0].dtype == self.dtype
            and leaves[0].ndim == 1
        ):
            return leaves[0]  # already the flat vector: no copy, no dispatch
        lead = () if self.batch is None else (self.batch,)
        parts = [jnp.reshape(jnp.asarray(leaf, self.dtype), lead + (-1,)) for leaf in leaves]
        if not parts:
            return jnp.zeros((self.d,), self.dtype)
        return jnp.concatenate(parts, axis=-1).reshape(-1)

    def unravel(self, x: jax.Array) -> Any:
        """The input pytree for a flat vector ``x`` (leaves cast back to their dtypes)."""
        lead = () if self.batch is None else (self.batch,)
        x = x.reshape(lead + (self.n,))
        leaves = [
            x[..., leaf.offset : leaf.stop].reshape(lead + leaf.shape).astype(leaf.dtype)
            for leaf in self.inputs
        ]
        return jax.tree_util.tree_unflatten(self.in_tree, leaves)

    def vectors(self, v: Any) -> tuple[jax.Array, bool]:
        """``v``, a pytree like the inputs, as flat seeds ``(k, d)``; and whether it held k.

        Leaves have the inputs' full shapes (with a batch, one vector per sample), or each
        those plus the same trailing axis of ``k`` vectors.
        """
        leaves, tree = jax.tree_util.tree_flatten(v)
        if tree != self.in_tree:
            raise ValueError(
                f"hvp needs v structured like the inputs ({self.in_tree}); got {tree}."
            )
        lead = () if self.batch is None else (self.batch,)
        shapes = [lead + leaf.shape for leaf in self.inputs]
        matrix = [np.shape(a) != s for a, s in zip(leaves, shapes, strict=True)]
        ks = {np.shape(a)[-1] for a, m in zip(leaves, matrix, strict=True) if m}
        if (
            any(np.shape(a)[: len(s)] != s for a, s in zip(leaves, shapes, strict=True))
            or len(ks) > 1
            or (ks and not all(matrix))
        ):
            got = [np.shape(a) for a in leaves]
            raise ValueError(
                f"hvp needs leaves of shapes {shapes} (or each with the same trailing axis of "
                f"vectors); got {got}."
            )
        k = ks.pop() if ks else 1
        cols = [
            jnp.asarray(a, self.dtype).reshape(lead + (leaf.size, k))
            for a, leaf in zip(leaves, self.inputs, strict=True)
        ]
        seeds = jnp.moveaxis(jnp.concatenate(cols, axis=-2), -1, 0).reshape(k, self.d)
        return seeds, any(matrix)

    def products(self, out: jax.Array, matrix: bool) -> Any:
        """HVP results ``(k, p, n)`` nested as ``jax.jacrev``'s output.

        Leaves ``out + x_i.shape``, with a trailing ``(k,)`` when ``matrix``.
        """
        k = out.shape[0]
        blocks = []
        for o, out_leaf in enumerate(self.outputs):
            prefix = self.prefix(o)
            start = 0 if self.batch is not None else out_leaf.offset
            row = []
            for leaf in self.inputs:
                part = out[:, start : start + math.prod(prefix), leaf.offset : leaf.stop]
                part = part.reshape((k,) + prefix + leaf.shape).astype(leaf.dtype)
                row.append(jnp.moveaxis(part, 0, -1) if matrix else part[0])
            blocks.append(jax.tree_util.tree_unflatten(self.in_tree, row))
        return jax.tree_util.tree_unflatten(self.out_tree, blocks)

    def block_shape(self, spec: BlockSpec) -> tuple[int, ...]:
        """Shape of one block, as jax.hessian (or its vmap, with a batch) gives it."""
        return self.prefix(spec.out) + self.inputs[spec.row].shape + self.inputs[spec.col].shape

    def prefix(self, out: int) -> tuple[int, ...]:
        """The leading axes of blocks for output leaf ``out``: its shape, or the batch."""
        return (self.batch,) if self.batch is not None else self.outputs[out].shape

    @cached_property
    def structure(self) -> Any:
        """jax.hessian's nesting with a :class:`BlockSpec` at every leaf (immutable)."""
        k = len(self.inputs)

        def per_output(o: int) -> Any:
            rows = [
                jax.tree_util.tree_unflatten(self.in_tree, [BlockSpec(o, i, j) for j in range(k)])
                for i in range(k)
            ]
            return jax.tree_util.tree_unflatten(self.in_tree, rows)

        return jax.tree_util.tree_unflatten(
            self.out_tree, [per_output(o) for o in range(len(self.outputs))]
        )
