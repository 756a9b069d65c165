"""Navigation: the blocks and levels of a Hessian's nesting, over one point's engine.

A view holds the :class:`~lazyhess._engine.Engine` of its point and the flat offsets of
what it shows; indexing a block turns the key into a flat request (``_index``) and asks the
engine. Views never hold the :class:`~lazyhess.Hessian` they came from, so no reference
cycle ties a point to its views.
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _estimators
from ._engine import Cost, Engine
from ._estimators import (
    DIAGONAL_METHODS,
    DiagonalMethod,
    Eigen,
    Estimate,
    SpectralDensity,
    TraceMethod,
    Which,
    check_choice,
)
from ._index import entry, grid, line, resolve
from ._tree import BlockSpec, LeafInfo


class _ArrayOps(abc.ABC):
    """Arithmetic on a block: it is evaluated densely and behaves as the array would.

    Subclasses define ``_dense()``, the block as one array, ``shape`` and indexing.
    """

    @property
    @abc.abstractmethod
    def shape(self) -> Any:
        """The array's shape."""

    @abc.abstractmethod
    def _dense(self) -> Any:
        """The block as one array."""

    @abc.abstractmethod
    def __getitem__(self, key: Any) -> Any:
        """``array[key]`` with numpy's semantics."""

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self._dense(), dtype=dtype)

    def __len__(self) -> int:
        shape = self.shape
        if not shape:
            raise TypeError("len() of a 0-d Hessian block")
        return shape[0]

    def __iter__(self) -> Iterator[jax.Array]:
        return (self[i] for i in range(len(self)))

    __hash__ = None  # pyright: ignore[reportAssignmentType] - unhashable, as arrays are


def _binary(op: Callable, reflected: bool = False) -> Callable:
    def method(self: _ArrayOps, other: Any) -> Any:
        if isinstance(other, _ArrayOps):
            other = other._dense()
        return op(other, self._dense()) if reflected else op(self._dense(), other)

    return method


for _name, _op in {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
}.items():
    setattr(_ArrayOps, f"__{_name}__", _binary(_op))
    setattr(_ArrayOps, f"__r{_name}__", _binary(_op, reflected=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(_ArrayOps, f"__{_name}__", _binary(getattr(operator, _name)))


def _unary(op: Callable) -> Callable:
    return lambda self: op(self._dense())


for _name in ("neg", "pos", "abs"):
    setattr(_ArrayOps, f"__{_name}__", _unary(getattr(operator, _name)))


class HessianBlock(_ArrayOps):
    """One block ``d²f[out] / dx_row dx_col`` of a :class:`Hessian`, indexed lazily.

    ``block[key]`` equals ``np.asarray(dense_block)[key]`` for every numpy key; only the HVP
    directions the selected entries need are evaluated: a row or a column costs one.
    """

    def __init__(
        self,
        engine: Engine,
        prefix: tuple[int, ...],
        p_offset: int,
        rows: LeafInfo,
        cols: LeafInfo,
        dtype: np.dtype,
        name: str,
    ):
        self._engine = engine
        self._prefix = prefix
        self._p_offset = p_offset
        self._rows = rows
        self._cols = cols
        self._name = name
        self.dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """``out (or batch) + row input + column input`` shape."""
        return self._prefix + self._rows.shape + self._cols.shape

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of entries."""
        return math.prod(self.shape)

    def _entries(self, p, r, c, diagonal: bool = False) -> jax.Array:
        values = self._engine.entries(
            self._p_offset + p.ravel(),
            self._rows.offset + r.ravel(),
            self._cols.offset + c.ravel(),
            diagonal,
        )
        return self._answer(values, p.shape)

    def _answer(self, values: Any, shape: tuple[int, ...]) -> jax.Array:
        if isinstance(values, np.ndarray):
            array = values.reshape(shape).astype(self.dtype, copy=False)
            return self._engine.answer(array)
        return values.reshape(shape).astype(self.dtype)

    def _request(self, key: Any) -> tuple:
        """The flat request of ``key``: ``(kind, p, rows, cols, shape)``, kind grid or entries."""
        shapes = (self._prefix, self._rows.shape, self._cols.shape)
        selected = grid(key, *shapes)
        if selected is not None:
            P, rows, cols, shape = selected
            return (
                "grid",
                self._p_offset + P,
                self._rows.offset + rows,
                self._cols.offset + cols,
                shape,
            )
        p, r, c = resolve(key, *shapes)
        return (
            "entries",
            self._p_offset + p.ravel(),
            self._rows.offset + r.ravel(),
            self._cols.offset + c.ravel(),
            p.shape,
        )

    def __getitem__(self, key: Any) -> jax.Array:
        engine = self._engine
        one = entry(key, self._prefix, self._rows.shape, self._cols.shape)
        if one is not None:
            p, r, c = (
                self._p_offset + one[0],
                self._rows.offset + one[1],
                self._cols.offset + one[2],
            )
            value = engine.entry(p, r, c)
            if value is not None:
                # On the host first: jnp.asarray with a dtype costs a second dispatch.
                return engine.answer(np.asarray(value, dtype=self.dtype))
            # Planned as the one entry it is: no index arrays from the key, no grid.
            return self._answer(engine.entries(np.array([p]), np.array([r]), np.array([c])), ())
        row = line(key, self._prefix, self._rows.shape)
        if row is not None:
            start = self._cols.offset
            values = engine.row(
                self._p_offset + row[0], self._rows.offset + row[1], start, self._cols.stop
            )
            if values is not None:
                return self._answer(values, self._cols.shape)
        kind, p, r, c, shape = self._request(key)
        values = engine.grid(p, r, c) if kind == "grid" else engine.entries(p, r, c)
        return self._answer(values, shape)

    def cost(self, key: Any = Ellipsis) -> Cost:
        """What ``block[key]`` would cost, computing no HVP.

        New HVPs, HVPs served from the cache, the result's bytes and the largest chunk of
        HVP results held at once. Planning may detect the pattern and color it.
        """
        kind, p, r, c, _ = self._request(key)
        return self._engine.cost(p if kind == "grid" else None, r, c)

    def to_dense(self) -> jax.Array:
        """The whole block as a jax array (one HVP per row or column, the fewer)."""
        return self[...]

    def _dense(self) -> jax.Array:
        return self.to_dense()

    def diagonal(
        self,
        *,
        method: DiagonalMethod = "exact",
        num_probes: int = 30,
        key: Any = None,
        coloring: bool = True,
    ) -> Any:
        """The second derivatives ``d²f / dx_k²``, shaped ``out (or batch) + x.shape``.

        Only for square blocks (row and column input the same). ``method="exact"`` (default)
        returns the array: one HVP per color of a distance-1 coloring of the pattern, one
        per entry on the dense engine.

        The other methods return an :class:`Estimate` from at most ``num_probes`` HVPs:
        when the colors of the block's distance-1 coloring (its entries, without a pattern)
        fit, the exact diagonal above. Otherwise ``"diag++"`` spends a third of them on a
        low-rank sketch, whose diagonal is exact, and probes the rest with random signs;
        ``"hutchinson"`` probes it all with random signs. With ``coloring=True`` the probes
        are random signs per color. Needs one scalar output without a batch.

        Args:
            method: ``"exact"``, ``"diag++"`` or ``"hutchinson"``.
            num_probes: the HVP budget of the estimators.
            key: a jax PRNG key or an int seed (``None``: seed 0).
            coloring: probe the colors of the sparsity pattern, where there is one.
        """
        check_choice("method", method, DIAGONAL_METHODS)
        if method != "exact":
            what = f"diagonal(method={method!r})"
            return _estimators.diagonal(self._operator(what), method, num_probes, key, coloring)
        if self._rows != self._cols:
            raise ValueError(
                f"diagonal() needs a square block (the same input twice); {self._name} "
                "pairs two different inputs."
            )
        P = self._p_offset + np.arange(math.prod(self._prefix))
        start = self._rows.offset
        values = self._engine.diagonal(P, start, start + self._rows.size)
        return self._answer(values, self._prefix + self._rows.shape)

    def _product(self, v: Any, rows: LeafInfo, cols: LeafInfo) -> jax.Array:
        """``block @ v`` contracting the ``cols`` axes, by HVPs; v may carry a trailing k."""
        lay = self._engine.layout
        v = jnp.asarray(v)
        matrix = v.shape != cols.shape
        k = v.shape[-1] if matrix else 1
        seeds = jnp.zeros((k, lay.n), lay.dtype)
        seeds = seeds.at[:, cols.offset : cols.stop].set(v.reshape(cols.size, k).T)
        if lay.batch is not None:
            seeds = jnp.broadcast_to(seeds[:, None, :], (k, lay.batch, lay.n))
        out = self._engine.matvec(seeds.reshape(k, lay.d))
        p_count = math.prod(self._prefix)
        part = out[:, self._p_offset : self._p_offset + p_count, rows.offset : rows.stop]
        part = part.reshape((k,) + self._prefix + rows.shape).astype(self.dtype)
        return jnp.moveaxis(part, 0, -1) if matrix else part[0]

    def _vector_like(self, v: Any, cols: LeafInfo) -> bool:
        shape = np.shape(v)
        return shape == cols.shape or (shape[:-1] == cols.shape and len(shape) > 0)

    def hvp(self, v: Any) -> jax.Array:
        """``block @ v`` by HVPs, without forming the block.

        ``v`` has the column input's shape (a vector) or that shape plus a trailing axis of
        ``k`` vectors; the result has shape ``out (or batch) + row input (+ (k,))``. Costs one
        HVP per vector.
        """
        if not self._vector_like(v, self._cols):
            raise ValueError(
                f"hvp needs v of shape {self._cols.shape} (or that plus a trailing axis of "
                f"vectors) for {self._name}; got {np.shape(v)}."
            )
        return self._product(v, self._rows, self._cols)

    def _operator(self, what: str) -> _estimators.Operator:
        """This square block as the estimators see it (products by :meth:`hvp`).

        The one place estimators read the structure: a distance-1 coloring's colors of this
        block's columns (an HVP of a color's seed holds the diagonal of all its columns).
        """
        if self._prefix or self._rows != self._cols:
            raise ValueError(
                f"{what} needs a square block of one scalar output without a batch; "
                f"{self._name} has shape {self.shape}. Select a block d²f/dx² of one input "
                "(e.g. H['w']['w']) of a scalar function."
            )
        if not jnp.issubdtype(self.dtype, jnp.floating):
            raise TypeError(f"{what} needs a real block; {self._name} has dtype {self.dtype}.")
        shape, n = self._cols.shape, self._cols.size

        def matmat(v: jax.Array) -> jax.Array:
            return self.hvp(v.reshape(shape + v.shape[-1:])).reshape(n, v.shape[-1])

        def colors() -> np.ndarray | None:
            structure = self._engine.structure
            if structure.dense:
                return None
            return structure.diagonal_family.labels[self._cols.offset : self._cols.stop]

        def spent() -> int:
            return self._engine.info().hvps

        return _estimators.Operator(
            shape, np.dtype(self.dtype), matmat, colors, self.diagonal, spent, self._name
        )

    def trace(
        self,
        *,
        num_probes: int = 30,
        key: Any = None,
        method: TraceMethod = "hutch++",
        coloring: bool = True,
    ) -> Estimate:
        """An estimate of the trace ``sum_k d²f / dx_k²`` from at most ``num_probes`` HVPs.

        Exact when the colors of the block's distance-1 coloring (its entries, without a
        pattern) fit in ``num_probes``: then it is the sum of :meth:`diagonal`, one HVP per
        color, cached like any request. Otherwise ``"hutch++"``
        spends a third of the budget on a low-rank sketch, whose trace is exact, and
        estimates the rest by random signs (Hutchinson); ``"hutchinson"`` uses only random
        signs. Needs a square block of one scalar output without a batch.

        Args:
            num_probes: the HVP budget.
            key: a jax PRNG key or an int seed (``None``: seed 0).
            method: ``"hutch++"`` or ``"hutchinson"``.
            coloring: probe the colors of the sparsity pattern, where there is one.
        """
        return _estimators.trace(self._operator("trace()"), num_probes, key, method, coloring)

    def frobenius_norm(self, *, num_probes: int = 30, key: Any = None) -> Estimate:
        """An estimate of ``||block||_F`` from exactly ``num_probes`` HVPs.

        ``||H||_F^2 = ||Q^T H||_F^2 + E||(I - Q Q^T) H g||^2`` with ``Q`` a sketch of a third
        of the budget and random signs ``g``; exact when ``num_probes`` reaches the block's
        size. Needs a square block of one scalar output without a batch.
        """
        return _estimators.frobenius_norm(self._operator("frobenius_norm()"), num_probes, key)

    def eigh(
        self,
        k: int = 6,
        *,
        which: Which = "LA",
        num_hvps: int | None = None,
        key: Any = None,
        vectors: bool = True,
    ) -> Eigen:
        """``k`` extreme eigenvalues and eigenvectors by Lanczos, one HVP per step.

        Lanczos with full reorthogonalisation from a random start, ``num_hvps`` steps
        (default ``max(5k, 40)``, at most the block's size: then exact), each one HVP
        through the Hessian's compiled kernels and one compiled reorthogonalisation on the
        device (``O(num_hvps * n)`` memory). Needs a square block of one scalar output
        without a batch.

        Args:
            k: how many eigenpairs.
            which: ``"LA"`` largest, ``"SA"`` smallest (algebraic), ``"LM"`` largest
                magnitude (as ``scipy.sparse.linalg.eigsh``).
            num_hvps: Lanczos steps (HVPs); at least ``k``.
            key: a jax PRNG key or an int seed for the start (``None``: seed 0).
            vectors: also return the eigenvectors.
        """
        return _estimators.eigh(self._operator("eigh()"), k, which, num_hvps, key, vectors)

    def spectral_density(
        self,
        *,
        num_probes: int = 8,
        steps: int = 40,
        key: Any = None,
        grid: Any = 512,
        sigma: float | None = None,
    ) -> SpectralDensity:
        """The eigenvalue density by stochastic Lanczos quadrature: ``num_probes * steps`` HVPs.

        From each random-sign probe, ``steps`` Lanczos steps (all probes advanced together,
        one batched HVP call per step) give a Gauss quadrature of the spectral measure; their
        average, smoothed by Gaussians of width ``sigma`` (default a hundredth of the
        spectrum's width), is the density. Needs a square block of one scalar output
        without a batch.

        Args:
            num_probes: random probes (at least 2, for the standard error).
            steps: Lanczos steps per probe (at most the block's size).
            key: a jax PRNG key or an int seed (``None``: seed 0).
            grid: a number of points spanning the spectrum, or the points.
            sigma: the smoothing width.
        """
        op = self._operator("spectral_density()")
        return _estimators.spectral_density(op, num_probes, steps, key, grid, sigma)

    def __matmul__(self, other: Any) -> Any:
        if not isinstance(other, _ArrayOps) and self._vector_like(other, self._cols):
            return self.hvp(other)
        return self._dense() @ (other._dense() if isinstance(other, _ArrayOps) else other)

    def __rmatmul__(self, other: Any) -> Any:
        if not self._prefix and np.shape(other) == self._rows.shape and self._rows.shape:
            return self._product(other, self._cols, self._rows)
        return other @ self._dense()

    def __repr__(self) -> str:
        return f"HessianBlock({self._name}, shape={self.shape}, dtype={self.dtype})"


class HessianNode:
    """A level of a :class:`Hessian`'s nesting: index it to go down, ``[:]`` to evaluate."""

    def __init__(self, engine: Engine, tree: Any, name: str):
        self._engine = engine
        self._tree = tree
        self._name = name

    def __getitem__(self, key: Any) -> HessianNode | HessianBlock | Any:
        if key is Ellipsis or key == slice(None):
            return self.to_dense()
        if isinstance(key, slice):
            raise TypeError(
                f"{self._name} holds blocks; select one with an int or key (e.g. [0] or "
                "['w']), or evaluate them all with [:]."
            )
        try:
            child = self._tree[key]
        except (KeyError, IndexError, TypeError) as err:
            keys = list(self._tree.keys()) if isinstance(self._tree, dict) else None
            if keys is None:
                size = len(self._tree) if hasattr(self._tree, "__len__") else 0
                raise IndexError(
                    f"{self._name} has no block {key!r}; valid indices are 0..{size - 1}."
                ) from err
            raise KeyError(f"{self._name} has no block {key!r}; the keys are {keys}.") from err
        return view(self._engine, child, f"{self._name}[{key!r}]")

    def __len__(self) -> int:
        return len(self._tree)

    def __iter__(self) -> Iterator:
        keys = self._tree.keys() if isinstance(self._tree, dict) else range(len(self._tree))
        return (self[k] for k in keys)

    def keys(self) -> list:
        """The keys (dicts) or indices (sequences) of this level."""
        return list(self._tree.keys() if isinstance(self._tree, dict) else range(len(self._tree)))

    @property
    def shape(self) -> Any:
        """The blocks' shapes, nested like the blocks."""
        lay = self._engine.layout
        return jax.tree_util.tree_map(lay.block_shape, self._tree)

    @property
    def dtype(self) -> Any:
        """The blocks' dtypes (jax.hessian's: the row input's), nested like the blocks."""
        inputs = self._engine.layout.inputs
        return jax.tree_util.tree_map(lambda spec: inputs[spec.row].dtype, self._tree)

    def to_dense(self) -> Any:
        """Every block below this level, evaluated together: jax.hessian's pytree."""
        return evaluate(self._engine, self._tree)

    def __repr__(self) -> str:
        count = len(jax.tree_util.tree_leaves(self._tree))
        return f"HessianNode({self._name}, {type(self._tree).__name__} of {count} block(s))"


def view(engine: Engine, tree: Any, name: str) -> HessianNode | HessianBlock:
    """The view of ``tree`` (a level of the nesting, or one :class:`BlockSpec`)."""
    if not isinstance(tree, BlockSpec):
        return HessianNode(engine, tree, name)
    lay = engine.layout
    p_offset = 0 if lay.batch is not None else lay.outputs[tree.out].offset
    rows, cols = lay.inputs[tree.row], lay.inputs[tree.col]
    return HessianBlock(engine, lay.prefix(tree.out), p_offset, rows, cols, rows.dtype, name)


def flat(engine: Engine) -> HessianBlock:
    """All inputs as one flat vector: the block ``lead + (n, n)``."""
    lay = engine.layout
    whole = LeafInfo("flat", (lay.n,), lay.dtype, 0)
    return HessianBlock(engine, lay.lead, 0, whole, whole, lay.dtype, "H.flat")


def evaluate(engine: Engine, tree: Any) -> Any:
    """Every block of ``tree`` from one request over the flat Hessian's rows and columns."""
    specs = jax.tree_util.tree_leaves(tree)
    lay = engine.layout
    outs = sorted({spec.out for spec in specs})
    inputs = sorted({i for spec in specs for i in (spec.row, spec.col)})

    def flat_range(leaves, info):
        return np.concatenate([np.arange(info(k).offset, info(k).stop) for k in leaves])

    p_index = (
        np.arange(lay.p) if lay.batch is not None else flat_range(outs, lambda o: lay.outputs[o])
    )
    index = flat_range(inputs, lambda i: lay.inputs[i])
    values = engine.grid(p_index, index, index)
    where = np.full(max(lay.n, 1), -1)
    where[index] = np.arange(index.size)
    p_where = np.full(max(lay.p, 1), -1)
    p_where[p_index] = np.arange(p_index.size)
    blocks = []
    for spec in specs:
        block = view(engine, spec, "")
        assert isinstance(block, HessianBlock)  # a BlockSpec views as a block
        rows, cols = lay.inputs[spec.row], lay.inputs[spec.col]
        start = p_where[block._p_offset]
        part = values[
            start : start + math.prod(block._prefix),
            where[rows.offset] : where[rows.offset] + rows.size,
            where[cols.offset] : where[cols.offset] + cols.size,
        ]
        blocks.append(block._answer(part, block.shape))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), blocks)
