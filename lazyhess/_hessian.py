"""The lazy Hessian object, its blocks and its nodes."""

from __future__ import annotations

import abc
import math
import operator
import weakref
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental.sparse import BCOO
from scipy.sparse.linalg import LinearOperator

from . import _display, _estimators
from ._arguments import (
    Mode,
    batch_size,
    check_argnums,
    check_flag,
    check_inputs,
    check_kwargs,
    check_mesh,
    check_options,
    check_outputs,
    check_sample_independence,
    is_array,
    other_inputs_hint,
    split_aux,
)
from ._cache import CacheInfo, DirectionCache, format_bytes
from ._engine import Cost, Engine, concretely, is_traced
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
from ._formats import Format, check_format, coordinates, pattern_output
from ._hvp import Kernels
from ._index import entry, grid, line, resolve
from ._mesh import Placement, chunk_budget
from ._progress import resolve as resolve_progress
from ._structure import Structure
from ._tree import BlockSpec, Layout, LeafInfo, Signature, leaf_infos
from .sparsity import SparsityPattern, call_sparsity

_CHUNK_BYTES = 64 * 2**20
_MAX_CHUNK = 128


def _user_pattern(sparsity: Any, n: int) -> SparsityPattern:
    """The user's pattern as a validated ``n x n`` symmetric :class:`SparsityPattern`."""
    if isinstance(sparsity, SparsityPattern):
        pattern = sparsity
    elif sp.issparse(sparsity):
        pattern = SparsityPattern.from_scipy(sparsity)
    elif isinstance(sparsity, BCOO):
        pattern = SparsityPattern.from_bcoo(sparsity)
    elif isinstance(sparsity, np.ndarray | jax.Array) and np.ndim(sparsity) == 2:
        pattern = SparsityPattern.from_dense(np.asarray(sparsity))
    else:
        raise TypeError(
            "sparsity must be 'auto', None, a SparsityPattern, a scipy sparse matrix or a 2-D "
            f"boolean array; got {type(sparsity).__name__}."
        )
    if pattern.shape != (n, n):
        raise ValueError(
            f"sparsity pattern has shape {pattern.shape}, but the flat Hessian over the "
            f"differentiated inputs is {n} x {n}; give a pattern over the flat inputs "
            "(ravel_pytree order, one sample with batch_axis=0)."
        )
    return pattern


def _probed(
    pattern: Any, call: Callable, layout: Layout, batch: int, primals, dyn, holomorphic: bool
) -> Callable[[], Any]:
    """A source giving ``pattern`` on first need, once the samples are seen not to interact.

    For ``batch_axis=0`` without detection (``sparsity=None`` or a user pattern), which
    would otherwise never check it; see :func:`check_sample_independence` for the cost.
    """
    x = layout.ravel(jax.tree_util.tree_leaves(primals))

    def source() -> Any:
        outputs = lambda z: call(layout.unravel(z), dyn)[0]  # noqa: E731
        check_sample_independence(outputs, x, batch, holomorphic)
        return pattern

    return source


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
        hessian: Hessian,
        prefix: tuple[int, ...],
        p_offset: int,
        rows: LeafInfo,
        cols: LeafInfo,
        dtype: np.dtype,
        name: str,
    ):
        self._hessian = hessian
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
        values = self._hessian._engine.entries(
            self._p_offset + p.ravel(),
            self._rows.offset + r.ravel(),
            self._cols.offset + c.ravel(),
            diagonal,
        )
        return self._answer(values, p.shape)

    def _answer(self, values: Any, shape: tuple[int, ...]) -> jax.Array:
        if isinstance(values, np.ndarray):
            array = values.reshape(shape).astype(self.dtype, copy=False)
            return self._hessian._engine.answer(array)
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
        engine = self._hessian._engine
        one = entry(key, self._prefix, self._rows.shape, self._cols.shape)
        if one is not None:
            p, r, c = one
            value = engine.cached_entry(
                self._p_offset + p, self._rows.offset + r, self._cols.offset + c
            )
            if value is not None:
                # On the host first: jnp.asarray with a dtype costs a second dispatch.
                return engine.answer(np.asarray(value, dtype=self.dtype))
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
        return self._hessian._engine.cost(p if kind == "grid" else None, r, c)

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
        values = self._hessian._engine.diagonal(P, start, start + self._rows.size)
        return self._answer(values, self._prefix + self._rows.shape)

    def _product(self, v: Any, rows: LeafInfo, cols: LeafInfo) -> jax.Array:
        """``block @ v`` contracting the ``cols`` axes, by HVPs; v may carry a trailing k."""
        lay = self._hessian._layout
        v = jnp.asarray(v)
        matrix = v.shape != cols.shape
        k = v.shape[-1] if matrix else 1
        seeds = jnp.zeros((k, lay.n), lay.dtype)
        seeds = seeds.at[:, cols.offset : cols.stop].set(v.reshape(cols.size, k).T)
        if lay.batch is not None:
            seeds = jnp.broadcast_to(seeds[:, None, :], (k, lay.batch, lay.n))
        out = self._hessian._engine.matvec(seeds.reshape(k, lay.d))
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
            structure = self._hessian._structure
            if structure.dense:
                return None
            return structure.diagonal_family.labels[self._cols.offset : self._cols.stop]

        def spent() -> int:
            return self._hessian.cache_info().hvps

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

    def __init__(self, hessian: Hessian, tree: Any, name: str):
        self._hessian = hessian
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
        return self._hessian._view(child, f"{self._name}[{key!r}]")

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
        lay = self._hessian._layout
        return jax.tree_util.tree_map(lay.block_shape, self._tree)

    def to_dense(self) -> Any:
        """Every block below this level, evaluated together: jax.hessian's pytree."""
        return self._hessian._evaluate_tree(self._tree)

    def __repr__(self) -> str:
        count = len(jax.tree_util.tree_leaves(self._tree))
        return f"HessianNode({self._name}, {type(self._tree).__name__} of {count} block(s))"


class Hessian(_ArrayOps):
    """The Hessian of ``fun`` at ``args``, evaluated lazily.

    Nothing is differentiated at construction (shapes come from ``jax.eval_shape``). Indexing
    evaluates only the Hessian-vector products (HVPs) that the selected entries need and caches
    their results within ``cache_bytes``: a row or column costs one HVP, ``H[I, J]`` costs
    ``min(|I|, |J|)`` minus directions already cached.

    ``H`` mirrors the nesting of ``jax.hessian(fun, argnums)(*args)``: with one array input
    and one array output it is itself an indexable block of shape ``out + x.shape + x.shape``;
    with pytree inputs or outputs, ``H[i][j]`` or ``H["a"]["b"]`` walks down to a block, and
    ``H[:]`` evaluates the pytree. ``H.flat`` views all inputs as one flat vector.

    Args:
        fun: the function; its output (first of a pair with ``has_aux``) is differentiated.
        *args: the point; ``args[argnums]`` are differentiated.
        argnums: int or sequence of ints, as in ``jax.hessian``.
        has_aux: ``fun`` returns ``(output, aux)``; ``aux`` is available as ``H.aux``.
        holomorphic: complex inputs and outputs, as in ``jax.hessian``.
        batch_axis: ``0`` for per-sample Hessians: every input has a leading sample axis ``B``,
            ``fun`` returns ``(B,)`` or ``(B, 1)``, and blocks have shape
            ``(B,) + x_i.shape[1:] + x_j.shape[1:]``. One HVP serves every sample.
        sparsity: ``"auto"`` (default): the pattern is detected from the jaxpr on first need;
            structurally zero entries then cost nothing and requests are colored. ``None``:
            every entry may be nonzero. Or a pattern over the flat inputs
            (:class:`SparsityPattern`, scipy sparse, 2-D boolean array), validated.
        mode: ``"fwd_over_rev"`` (default), ``"rev_over_fwd"`` or ``"rev_over_rev"``.
        chunk_size: directions per compiled HVP call (default: sized to about 64 MiB).
        cache_bytes: budget for cached HVP results; ``0`` disables the cache.
        progress: show tqdm progress bars for requests spanning several chunks and for
            detection and coloring (``None``: the default set by
            :func:`lazyhess.set_progress_default`, off unless changed).
        strict: raise a ``ValueError`` when an input leaf does not affect the gradient (its
            rows of the detected pattern are empty), as torch's ``strict=True`` does for a
            whole input. Detects the pattern now (also with ``sparsity=None``).
        verify: check a pattern given as ``sparsity=`` on the first whole-Hessian request
            (``H[:]``, ``to_dense``, ``to_sparse``, ``np.asarray(H)``) at a concrete point:
            the recovered matrix against the exact HVP of a random probe, one extra HVP
            (a few more when it fails). A pattern missing an entry that is nonzero there
            raises a ``ValueError`` naming the entry. Checked once per function (points
            from ``H.at`` share it): an entry missing from the pattern but zero at that
            point is not seen.
        mesh: a ``jax.sharding.Mesh`` whose ``seed_axis`` shares out each chunk's seed
            directions, one slice per device; the point keeps its own sharding (replicated
            along an explicit seed axis). ``None`` (default): HVPs follow the inputs'
            sharding, as ``jax.hessian`` does. ``chunk_size`` is then per device; by
            default a device's chunk of results takes 1/64 of the memory it reports
            (about 64 MiB where it reports none, as on CPU).
        seed_axis: the mesh axis name (default: the mesh's only axis).
        **kwargs: passed to ``fun``, not differentiated.

    Example:
        >>> import jax.numpy as jnp, lazyhess
        >>> H = lazyhess.hessian(lambda x: jnp.sum(x**3), jnp.arange(4.0))
        >>> H[2]
        Array([ 0.,  0., 12.,  0.], dtype=float32)
        >>> H.cache_info().hvps
        1
    """

    def __init__(
        self,
        fun: Callable,
        *args: Any,
        argnums: int | Sequence[int] = 0,
        has_aux: bool = False,
        holomorphic: bool = False,
        batch_axis: int | None = None,
        sparsity: Any = "auto",
        mode: Mode = "fwd_over_rev",
        chunk_size: int | None = None,
        cache_bytes: int = 256 * 2**20,
        progress: bool | None = None,
        strict: bool = False,
        verify: bool = True,
        mesh: Any = None,
        seed_axis: str | None = None,
        **kwargs: Any,
    ):
        show = resolve_progress(progress)
        placement = Placement(mesh, check_mesh(mesh, seed_axis))
        check_options(
            fun,
            mode=mode,
            batch_axis=batch_axis,
            sparsity=sparsity,
            chunk_size=chunk_size,
            cache_bytes=cache_bytes,
            has_aux=has_aux,
            holomorphic=holomorphic,
        )
        argnums_t, sequence = check_argnums(argnums, len(args))
        check_flag("verify", verify)
        check_kwargs(fun, kwargs)
        self._fun = fun
        self._options: dict[str, Any] = dict(
            argnums=argnums,
            has_aux=has_aux,
            holomorphic=holomorphic,
            batch_axis=batch_axis,
            sparsity=sparsity,
            mode=mode,
            chunk_size=chunk_size,
            cache_bytes=cache_bytes,
            progress=progress,
            strict=strict,
            verify=verify,
            mesh=mesh,
            seed_axis=seed_axis,
        )
        signature = Signature(args, kwargs, argnums_t, sequence)
        primals = signature.primals(args)
        paths = check_inputs(primals, argnums_t, sequence, holomorphic)
        batch = batch_size(paths, argnums_t, sequence) if batch_axis is not None else None
        inputs = leaf_infos(paths, drop_leading=batch is not None)
        in_tree = jax.tree_util.tree_structure(primals)

        def call(prims: Any, dyn: Any) -> tuple[Any, Any]:
            return split_aux(signature.call(fun, prims, dyn), has_aux)

        dyn = signature.dynamic(args, kwargs)
        out_shape = jax.eval_shape(lambda prims, d: call(prims, d)[0], primals, dyn)
        check_outputs(out_shape, holomorphic, batch)
        out_paths, out_tree = jax.tree_util.tree_flatten_with_path(out_shape)
        layout = Layout(in_tree, inputs, out_tree, leaf_infos(out_paths, False), batch)
        kernels = Kernels(call, layout, mode, holomorphic, placement)

        def detect() -> SparsityPattern:
            return call_sparsity(lambda p, d: call(p, d)[0], primals, dyn, batch)

        if isinstance(sparsity, str):
            structure = Structure(layout.n, detect, progress=show)
        else:
            pattern = None if sparsity is None else _user_pattern(sparsity, layout.n)
            if batch is not None and not is_traced((args, kwargs)):
                pattern = _probed(pattern, call, layout, batch, primals, dyn, holomorphic)
            structure = Structure(
                layout.n, pattern, progress=show, verify=verify and sparsity is not None
            )
        self._init_point(signature, kernels, structure, args, kwargs)
        if strict is not False:
            _check_strict(self, strict, detect)

    def _init_point(
        self,
        signature: Signature,
        kernels: Kernels,
        structure: Structure,
        args: tuple,
        kwargs: dict,
    ):
        self._signature = signature
        self._kernels = kernels
        self._structure = structure
        self._layout = layout = kernels.layout
        self._args = args
        self._kwargs = kwargs
        leaves = jax.tree_util.tree_leaves(signature.primals(args))
        x = layout.ravel(leaves)
        per_direction = max(layout.p * layout.n + layout.d, 1) * layout.dtype.itemsize
        budget = chunk_budget(kernels.placement, _CHUNK_BYTES)
        chunk = self._options["chunk_size"] or min(
            _MAX_CHUNK, 1 << max((budget // per_direction).bit_length() - 1, 0)
        )
        chunk *= kernels.placement.devices
        cache = DirectionCache(self._options["cache_bytes"])
        dyn = signature.dynamic(args, kwargs)
        self._engine = Engine(kernels, x, dyn, chunk, cache, structure, structure.progress)
        # The root view holds this Hessian weakly: a strong reference would tie the two into
        # a cycle, and every point's cache would then wait for the garbage collector (an
        # optimisation loop's H.at(x) would hold many). Views made from it hold it strongly.
        self._root = self._view(layout.structure, "H", weakref.proxy(self))

    def _view(self, tree: Any, name: str, owner: Any = None) -> HessianNode | HessianBlock:
        owner = self if owner is None else owner
        if not isinstance(tree, BlockSpec):
            return HessianNode(owner, tree, name)
        lay = self._layout
        p_offset = 0 if lay.batch is not None else lay.outputs[tree.out].offset
        rows, cols = lay.inputs[tree.row], lay.inputs[tree.col]
        return HessianBlock(owner, lay.prefix(tree.out), p_offset, rows, cols, rows.dtype, name)

    def _evaluate_tree(self, tree: Any) -> Any:
        """Every block of ``tree`` from one request over the flat Hessian's rows and columns."""
        specs = jax.tree_util.tree_leaves(tree)
        lay = self._layout
        outs = sorted({spec.out for spec in specs})
        inputs = sorted({i for spec in specs for i in (spec.row, spec.col)})

        def flat_range(leaves, info):
            return np.concatenate([np.arange(info(k).offset, info(k).stop) for k in leaves])

        p_index = (
            np.arange(lay.p)
            if lay.batch is not None
            else flat_range(outs, lambda o: lay.outputs[o])
        )
        index = flat_range(inputs, lambda i: lay.inputs[i])
        values = self._engine.grid(p_index, index, index)
        where = np.full(max(lay.n, 1), -1)
        where[index] = np.arange(index.size)
        p_where = np.full(max(lay.p, 1), -1)
        p_where[p_index] = np.arange(p_index.size)
        blocks = []
        for spec in specs:
            block = self._view(spec, "")
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

    # --- navigation and arrays -------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._root[key]
        except IndexError as err:
            sig = self._signature
            hint = other_inputs_hint(self._args, sig.argnums, sig.sequence)
            if not hint:
                raise
            raise IndexError(f"{err}.{hint}") from err

    def _block(self, what: str) -> HessianBlock:
        if isinstance(self._root, HessianBlock):
            return self._root
        raise TypeError(
            f"{what} needs a single block, but this Hessian is a {type(self._root._tree).__name__}"
            " of blocks; select one first (e.g. H[0][1]) or use H.flat."
        )

    @property
    def shape(self) -> Any:
        """``out + x.shape + x.shape`` for one input; the blocks' shapes nested otherwise."""
        return self._root.shape

    @property
    def dtype(self) -> Any:
        """The block's dtype (jax.hessian's: the row input's dtype); nested for pytrees."""
        if isinstance(self._root, HessianBlock):
            return self._root.dtype
        return jax.tree_util.tree_map(lambda s: self._layout.inputs[s.row].dtype, self._root._tree)

    @property
    def ndim(self) -> int:
        """Number of axes of the (single) block."""
        return self._block("ndim").ndim

    @property
    def size(self) -> int:
        """Number of entries of the (single) block."""
        return self._block("size").size

    @property
    def flat(self) -> HessianBlock:
        """All inputs as one flat vector (``ravel_pytree`` order): shape ``lead + (N, N)``.

        ``lead`` is the batch ``(B,)``, the output's shape for one output array, or
        ``(M,)`` over all output elements for a pytree output. A new view at each access
        (kept, it would tie this Hessian into a reference cycle).
        """
        lay = self._layout
        whole = LeafInfo("flat", (lay.n,), lay.dtype, 0)
        return HessianBlock(self, self._lead, 0, whole, whole, lay.dtype, "H.flat")

    @cached_property
    def _lead(self) -> tuple[int, ...]:
        """The leading axes of ``H.flat``: the batch, the output's shape, or all outputs."""
        lay = self._layout
        if lay.batch is not None:
            return (lay.batch,)
        if len(lay.outputs) == 1:
            return lay.outputs[0].shape
        return (lay.p,)

    def to_dense(self) -> Any:
        """The whole Hessian, as jax.hessian returns it."""
        return self._root.to_dense()

    def _dense(self) -> jax.Array:
        return self._block("arithmetic").to_dense()

    def diagonal(
        self,
        *,
        method: DiagonalMethod = "exact",
        num_probes: int = 30,
        key: Any = None,
        coloring: bool = True,
    ) -> Any:
        """Diagonal of the (single, square) block; see :meth:`HessianBlock.diagonal`."""
        return self._block("diagonal()").diagonal(
            method=method, num_probes=num_probes, key=key, coloring=coloring
        )

    def trace(
        self,
        *,
        num_probes: int = 30,
        key: Any = None,
        method: TraceMethod = "hutch++",
        coloring: bool = True,
    ) -> Estimate:
        """Trace of the (single) block; see :meth:`HessianBlock.trace` (or use H.flat)."""
        return self._block("trace()").trace(
            num_probes=num_probes, key=key, method=method, coloring=coloring
        )

    def frobenius_norm(self, *, num_probes: int = 30, key: Any = None) -> Estimate:
        """Frobenius norm of the (single) block; see :meth:`HessianBlock.frobenius_norm`."""
        return self._block("frobenius_norm()").frobenius_norm(num_probes=num_probes, key=key)

    def eigh(
        self,
        k: int = 6,
        *,
        which: Which = "LA",
        num_hvps: int | None = None,
        key: Any = None,
        vectors: bool = True,
    ) -> Eigen:
        """Extreme eigenpairs of the (single) block; see :meth:`HessianBlock.eigh`."""
        return self._block("eigh()").eigh(
            k, which=which, num_hvps=num_hvps, key=key, vectors=vectors
        )

    def spectral_density(
        self,
        *,
        num_probes: int = 8,
        steps: int = 40,
        key: Any = None,
        grid: Any = 512,
        sigma: float | None = None,
    ) -> SpectralDensity:
        """Eigenvalue density of the (single) block; see :meth:`HessianBlock.spectral_density`."""
        return self._block("spectral_density()").spectral_density(
            num_probes=num_probes, steps=steps, key=key, grid=grid, sigma=sigma
        )

    def hvp(self, v: Any) -> Any:
        """``H @ v`` by HVPs, without forming H: v is a pytree like the inputs.

        Leaves of ``v`` have the inputs' full shapes (with a batch, one vector per sample:
        each sample's Hessian meets its own vector), or those plus a trailing axis of ``k``
        vectors. The result is nested like ``jax.jacrev(fun)``'s output with leaves
        ``out + x_i.shape (+ (k,))``. One HVP per vector, whatever the batch size.
        """
        lay = self._layout
        leaves, tree = jax.tree_util.tree_flatten(v)
        if tree != lay.in_tree:
            raise ValueError(
                f"hvp needs v structured like the inputs ({lay.in_tree}); got {tree}."
            )
        lead = () if lay.batch is None else (lay.batch,)
        shapes = [lead + leaf.shape for leaf in lay.inputs]
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
            jnp.asarray(a, lay.dtype).reshape(lead + (leaf.size, k))
            for a, leaf in zip(leaves, lay.inputs, strict=True)
        ]
        seeds = jnp.moveaxis(jnp.concatenate(cols, axis=-2), -1, 0).reshape(k, lay.d)
        out = self._engine.matvec(seeds)
        blocks = []
        for o, out_leaf in enumerate(lay.outputs):
            prefix = lay.prefix(o)
            start = 0 if lay.batch is not None else out_leaf.offset
            row = []
            for leaf in lay.inputs:
                part = out[:, start : start + math.prod(prefix), leaf.offset : leaf.stop]
                part = part.reshape((k,) + prefix + leaf.shape).astype(leaf.dtype)
                row.append(jnp.moveaxis(part, 0, -1) if any(matrix) else part[0])
            blocks.append(jax.tree_util.tree_unflatten(lay.in_tree, row))
        return jax.tree_util.tree_unflatten(lay.out_tree, blocks)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(self._root, HessianBlock):
            return self._root @ other
        return self.hvp(other)

    def __rmatmul__(self, other: Any) -> Any:
        return other @ self._block("@")

    def __len__(self) -> int:
        return len(self._root)

    def __iter__(self) -> Iterator:
        return iter(self._root)

    def _repr_html_(self) -> str:
        """An HTML summary for notebooks: shape, pattern, colors, HVPs, cache and a picture."""
        return _display.hessian_html(self._engine, self.shape, self._lead, self.cost)

    def spy(self, ax: Any = None, colors: Any = None) -> Any:
        """Plot the flat sparsity pattern with seeded rows and columns; see lazyhess.spy."""
        return _display.spy(self, ax=ax, colors=colors)

    # --- the point -----------------------------------------------------------------------

    def _spy_source(self) -> tuple[sp.csr_array | None, int, np.ndarray | None, np.ndarray]:
        """``(csr, n, colors, seeded)`` for ``spy``.

        The pattern (detected if not yet), the global coloring's colors if known, and the
        columns whose seed is cached.
        """
        pattern = self.sparsity
        structure = self._structure
        colored = structure.colored if structure.colored_known else None
        return (
            None if pattern is None else structure.csr,
            self._layout.n,
            None if colored is None else colored.colors,
            self._engine.computed_columns(),
        )

    @cached_property
    def _first_order(self) -> tuple[Any, Any, Any]:
        engine = self._engine
        if engine.traced:
            return self._kernels.first_order(engine.x, engine.dyn)
        with concretely():
            return self._kernels.first_order(engine.x, engine.dyn)

    @property
    def value(self) -> Any:
        """``fun`` at the point (its output, without aux); computed once, on first access."""
        return self._first_order[0]

    @property
    def grad(self) -> Any:
        """The gradient (``jax.jacrev``'s result; with a batch, each sample's gradient)."""
        return self._first_order[1]

    @property
    def aux(self) -> Any:
        """The auxiliary output of ``fun`` (with ``has_aux=True``)."""
        if not self._options["has_aux"]:
            raise AttributeError("H.aux needs has_aux=True when building the Hessian.")
        return self._first_order[2]

    def at(self, *args: Any, **kwargs: Any) -> Hessian:
        """The same function and options at a new point, with a fresh cache.

        Inputs must keep their shapes and dtypes; compiled kernels are reused when the
        non-array arguments are the same.
        """
        old = self._signature
        signature = Signature(args, kwargs, old.argnums, old.sequence)
        mine = jax.tree_util.tree_flatten_with_path((self._args, self._kwargs))
        theirs = jax.tree_util.tree_flatten_with_path((args, kwargs))
        if mine[1] != theirs[1]:
            raise ValueError(
                f"H.at needs arguments structured as the original ({mine[1]}); got {theirs[1]}. "
                "Build a new Hessian with lazyhess.hessian for a different structure."
            )
        for (path, a), (_, b) in zip(mine[0], theirs[0], strict=True):
            if not (is_array(a) or is_array(b)):
                continue
            dtype = getattr(a, "dtype", None)
            if dtype is not None and dtype == getattr(b, "dtype", None) and a.shape == b.shape:
                continue  # arrays alike: no dtype resolution needed
            sa, sb = (jnp.shape(a), jnp.result_type(a)), (jnp.shape(b), jnp.result_type(b))
            if sa != sb:
                raise ValueError(
                    f"H.at: argument {jax.tree_util.keystr(path)[1:]} has shape {sb[0]} and "
                    f"dtype {sb[1]}, but the Hessian was built with {sa[0]} and {sa[1]}; "
                    "keep shapes and dtypes, or build a new Hessian."
                )
        if signature.same_statics(old):
            new = object.__new__(Hessian)
            new._fun, new._options = self._fun, self._options
            new._init_point(signature, self._kernels, self._structure, args, kwargs)
            return new
        return Hessian(self._fun, *args, **self._options, **kwargs)

    def _pattern_csr(self) -> sp.csr_array:
        csr = self._structure.csr
        if csr is None:
            n = self._layout.n
            return sp.csr_array(np.ones((n, n), dtype=bool))
        return csr

    def _pattern_values(self) -> tuple[sp.csr_array, Any]:
        """The flat pattern and every stored entry's value, shaped ``lead + (nnz,)``."""
        csr = self._pattern_csr()
        lead = self._lead
        if self._structure.dense:
            everything = np.arange(self._layout.n)
            values = self._engine.grid(np.arange(self._layout.p), everything, everything)
        else:
            values = self._engine.pattern_values()
        return csr, values.reshape(lead + (csr.nnz,))

    def to_sparse(self, format: Format = "bcoo") -> Any:
        """The flat Hessian (``H.flat``) in a sparse or dense format.

        Costs one HVP per color of the global coloring (a handful for banded problems),
        shared by all output elements and samples. Sparse formats keep the pattern's
        coordinates, explicit zeros included, in the same order at every point, so an
        optimiser can read the structure once.

        Args:
            format: ``"bcoo"`` (jax, batched over output elements or samples when there are
                any), ``"csr"``, ``"csc"``, ``"coo"`` (scipy sparse arrays; one scalar output
                and no batch), ``"dense"`` (jax array) or ``"numpy"``; asdex's names
                ``"scipy_csr"``, ``"scipy_csc"``, ``"scipy_coo"`` and ``"numpy_dense"`` too.
        """
        check_format(format)
        csr, values = self._pattern_values()
        return pattern_output(values, csr, format, self._lead)

    def tril(self) -> sp.coo_array:
        """The lower triangle of the flat Hessian as a scipy COO array.

        Its coordinates (row-major order, explicit zeros kept) are the same at every point:
        the triplet structure Ipopt-style solvers ask for once. Costs what
        :meth:`to_sparse` costs.
        """
        self._scalar("tril()")
        csr, values = self._pattern_values()
        _, rows, cols = coordinates(csr)
        lower = rows >= cols
        n = self._layout.n
        return sp.coo_array((np.asarray(values)[lower], (rows[lower], cols[lower])), shape=(n, n))

    def as_linear_operator(self) -> LinearOperator:
        """The flat Hessian as a symmetric scipy ``LinearOperator``; products are HVPs.

        ``matvec`` costs one HVP, ``matmat`` one per column; nothing is cached.
        """
        self._scalar("as_linear_operator()")
        return _FlatOperator(self.flat, self._layout.n, self._layout.dtype)

    def _scalar(self, what: str) -> None:
        if self._lead:
            raise ValueError(
                f"{what} needs one scalar output without a batch; this Hessian has leading "
                f"axes {self._lead}. Use to_sparse('bcoo') or to_sparse('dense')."
            )

    @property
    def sparsity(self) -> SparsityPattern | None:
        """The flat pattern (detected now if ``sparsity="auto"`` and not yet known).

        ``None`` for a dense Hessian (``sparsity=None``).
        """
        return self._structure.pattern

    def _engine_name(self) -> str:
        structure = self._structure
        if not structure.known:
            return "auto (pattern not detected yet)"
        if structure.pattern is None:
            return "dense"
        if structure.dense:
            return "dense (detected: every entry may be nonzero)"
        return f"sparse (nnz={structure.pattern.nnz})"

    # --- cost ----------------------------------------------------------------------------

    def cost(self, key: Any = Ellipsis) -> Cost:
        """What ``H[key]`` would cost, computing no HVP; see :meth:`HessianBlock.cost`.

        For pytree inputs or outputs, ``H.cost()`` (``H[:]``) sums over the blocks.
        """
        if isinstance(self._root, HessianBlock):
            return self._root.cost(key)
        if key is not Ellipsis and key != slice(None):
            raise TypeError(
                "cost of a block of a pytree Hessian: select the block first, e.g. "
                "H['w']['w'].cost(key); H.cost() alone prices H[:]."
            )
        return self.flat.cost()

    def cache_info(self) -> CacheInfo:
        """HVP directions spent, cache hits and misses, and the cache's use."""
        return self._engine.info()

    def clear_cache(self) -> None:
        """Drop every cached HVP result (counters are kept)."""
        self._engine.cache.clear()

    def __repr__(self) -> str:
        info = self.cache_info()
        if isinstance(self._root, HessianBlock):
            what = f"shape={self.shape}, dtype={self.dtype}"
        else:
            count = len(jax.tree_util.tree_leaves(self._root._tree))
            what = f"blocks={count}, flat={self.flat.shape}, dtype={self._layout.dtype}"
        return (
            f"Hessian({what}, engine={self._engine_name()}, hvps={info.hvps}, "
            f"cache={format_bytes(info.bytes)}/{format_bytes(info.max_bytes)})"
        )


def _check_strict(H: Hessian, strict: Any, detect: Callable[[], SparsityPattern]) -> None:
    """Raise when a differentiated leaf does not affect the gradient (torch's ``strict``).

    A leaf whose rows of the sparsity pattern are all empty has an all-zero Hessian row and
    column of blocks, whatever the point. Costs one detection (``detect``) when the
    Hessian has no pattern.
    """
    check_flag("strict", strict)
    pattern = H._structure.pattern
    if pattern is None:
        pattern = detect()
    indptr = pattern.indptr
    signature = H._signature
    paths = jax.tree_util.tree_flatten_with_path(signature.primals(H._args))[0]
    for (path, _), leaf in zip(paths, H._layout.inputs, strict=True):
        if leaf.size and indptr[leaf.stop] == indptr[leaf.offset]:
            if signature.sequence:
                path, number = path[1:], signature.argnums[path[0].idx]
            else:
                number = signature.argnums[0]
            where = f"args[{number}]{jax.tree_util.keystr(path)}"
            raise ValueError(
                f"strict=True, but the gradient does not depend on {where}: its "
                "rows of the Hessian's sparsity pattern are empty, so every block with it is "
                "zero. Leave it out of argnums, or pass strict=False to get the zero blocks."
            )


def hessian(
    fun: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    batch_axis: int | None = None,
    sparsity: Any = "auto",
    mode: Mode = "fwd_over_rev",
    chunk_size: int | None = None,
    cache_bytes: int = 256 * 2**20,
    progress: bool | None = None,
    strict: bool = False,
    verify: bool = True,
    mesh: Any = None,
    seed_axis: str | None = None,
    **kwargs: Any,
) -> Any:
    """The Hessian of ``fun`` at ``args`` as a lazy, indexable :class:`Hessian`.

    Same arguments as :class:`Hessian`. Nothing is evaluated until the result is indexed.
    Without ``args`` it follows ``jax.hessian``'s convention: ``hessian(fun, argnums=...)``
    returns a function of ``fun``'s arguments that returns the lazy :class:`Hessian`, so
    ``lazyhess.hessian(g)(x)[:]`` equals ``jax.hessian(g)(x)``.

    Example:
        >>> import jax.numpy as jnp, lazyhess
        >>> H = lazyhess.hessian(lambda x: x[0] ** 3 - 2 * x[0] * x[1] - x[1] ** 6,
        ...                      jnp.array([1.0, 2.0]))
        >>> H[:]
        Array([[   6.,   -2.],
               [  -2., -480.]], dtype=float32)
        >>> lazyhess.hessian(lambda x: jnp.sum(x**3))(jnp.arange(3.0))[1, 1]
        Array(6., dtype=float32)
    """
    options = dict(
        argnums=argnums,
        has_aux=has_aux,
        holomorphic=holomorphic,
        batch_axis=batch_axis,
        sparsity=sparsity,
        mode=mode,
        chunk_size=chunk_size,
        cache_bytes=cache_bytes,
        progress=progress,
        strict=strict,
        verify=verify,
        mesh=mesh,
        seed_axis=seed_axis,
    )
    if args:
        return Hessian(fun, *args, **options, **kwargs)
    check_options(
        fun,
        mode=mode,
        batch_axis=batch_axis,
        sparsity=sparsity,
        chunk_size=chunk_size,
        cache_bytes=cache_bytes,
        has_aux=has_aux,
        holomorphic=holomorphic,
    )
    check_mesh(mesh, seed_axis)
    if kwargs:
        raise TypeError(
            f"hessian(fun, ...) without arguments returns a function of fun's arguments (as "
            f"jax.hessian does); pass {sorted(kwargs)} to that function, or give the point: "
            "hessian(fun, *args, **kwargs)."
        )

    def hessian_at(*args: Any, **kwargs: Any) -> Hessian:
        """The lazy Hessian of ``fun`` at ``args`` (see :func:`lazyhess.hessian`)."""
        return Hessian(fun, *args, **options, **kwargs)

    return hessian_at


class _FlatOperator(LinearOperator):
    """The flat Hessian as a symmetric scipy operator: every product is HVPs."""

    def __init__(self, flat: HessianBlock, n: int, dtype: np.dtype):
        super().__init__(dtype=dtype, shape=(n, n))
        self._flat = flat

    def _matvec(self, x: Any) -> Any:
        # scipy hands numpy arrays: the product is evaluated now, even inside a trace.
        with concretely():
            return np.asarray(self._flat @ jnp.asarray(x))

    def _rmatvec(self, x: Any) -> Any:
        return self._matvec(x)

    def _matmat(self, X: Any) -> Any:
        return self._matvec(X)

    def _rmatmat(self, X: Any) -> Any:
        return self._matvec(X)
