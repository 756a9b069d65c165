"""The lazy Hessian: a façade over navigation (``_views``) and one point's engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from . import _display
from ._arguments import Mode, check_mesh, check_new_point, check_options, other_inputs_hint
from ._cache import CacheInfo, format_bytes
from ._engine import Cost, Engine, concretely
from ._estimators import DiagonalMethod, Eigen, Estimate, SpectralDensity, TraceMethod, Which
from ._formats import (
    Format,
    check_format,
    host_data,
    pattern_output,
    scipy_shell,
    tril_shell,
)
from ._setup import Shared, engine_at, share
from ._tree import Signature
from ._views import HessianBlock, _ArrayOps, flat, view
from .sparsity import SparsityPattern


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
        shared, signature = share(fun, args, kwargs, options)
        self._point(shared, signature, args, kwargs)

    def _point(
        self,
        shared: Shared,
        signature: Signature,
        args: tuple,
        kwargs: dict,
        previous: Engine | None = None,
    ) -> None:
        self._shared = shared
        self._signature = signature
        self._args = args
        self._kwargs = kwargs
        self._engine = engine = engine_at(shared, signature, args, kwargs, previous)
        self._root = view(engine, engine.layout.structure, "H")

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
        return self._root.dtype

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
        ``(M,)`` over all output elements for a pytree output.
        """
        return flat(self._engine)

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
        layout = self._engine.layout
        seeds, matrix = layout.vectors(v)
        return layout.products(self._engine.matvec(seeds), matrix)

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
        engine = self._engine
        return _display.hessian_html(engine, self.shape, engine.layout.lead, self.cost)

    def spy(self, ax: Any = None, colors: Any = None) -> Any:
        """Plot the flat sparsity pattern with seeded rows and columns; see lazyhess.spy."""
        return _display.spy(self, ax=ax, colors=colors)

    def _spy_source(self) -> tuple[sp.csr_array | None, int, np.ndarray | None, np.ndarray]:
        """``(csr, n, colors, seeded)`` for ``lazyhess.spy``; see :func:`_display.engine_spy`."""
        return _display.engine_spy(self._engine)

    # --- the point -----------------------------------------------------------------------

    @property
    def value(self) -> Any:
        """``fun`` at the point (its output, without aux); computed once, on first access."""
        return self._engine.first_order[0]

    @property
    def grad(self) -> Any:
        """The gradient (``jax.jacrev``'s result; with a batch, each sample's gradient)."""
        return self._engine.first_order[1]

    @property
    def aux(self) -> Any:
        """The auxiliary output of ``fun`` (with ``has_aux=True``)."""
        if not self._shared.options["has_aux"]:
            raise AttributeError("H.aux needs has_aux=True when building the Hessian.")
        return self._engine.first_order[2]

    def at(self, *args: Any, **kwargs: Any) -> Hessian:
        """The same function and options at a new point, with a fresh cache.

        Inputs must keep their shapes and dtypes; compiled kernels are reused when the
        non-array arguments are the same. A constant Hessian (the function is at most
        quadratic in the differentiated inputs, with no other argument in its second
        derivative; decided from the traced HVP at the first ``at``) is the same at every
        point: the new point's cache holds this one's results, and what either computes
        serves both (``cache_info`` still counts each point's own HVPs and hits).
        """
        old = self._signature
        check_new_point((self._args, self._kwargs), (args, kwargs))
        signature = old.at(args, kwargs)
        shared = self._shared
        if signature is old or signature.same_statics(old):
            new = object.__new__(Hessian)
            new._point(shared, signature, args, kwargs, self._engine)
            return new
        return Hessian(shared.fun, *args, **shared.options, **kwargs)

    def _stored(self) -> tuple[sp.csr_array, Any]:
        """The flat pattern and every stored entry's value, shaped ``lead + (nnz,)``."""
        csr, values = self._engine.stored()
        return csr, values.reshape(self._engine.layout.lead + (csr.nnz,))

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
        name = check_format(format)
        engine = self._engine
        lead = engine.layout.lead
        scipy = name in ("csr", "csc", "coo") and not lead
        if scipy and not engine.traced and not engine.structure.dense:
            # Built while the HVPs run; see Engine.pattern_values.
            csr = engine.structure.stored_csr
            matrix = engine.pattern_values(lambda data: scipy_shell(csr, name, data[0]))
            return matrix.tocsc() if name == "csc" else matrix
        csr, values = self._stored()
        return pattern_output(values, csr, format, lead)

    def tril(self) -> sp.coo_array:
        """The lower triangle of the flat Hessian as a scipy COO array.

        Its coordinates (row-major order, explicit zeros kept) are the same at every point:
        the triplet structure Ipopt-style solvers ask for once. Costs what
        :meth:`to_sparse` costs.
        """
        self._scalar("tril()")
        engine = self._engine
        if not engine.traced and not engine.structure.dense:
            # Built while the HVPs run; see Engine.pattern_values.
            csr = engine.structure.stored_csr
            values, (matrix, positions) = engine.pattern_values(
                lambda data: (data, tril_shell(csr, data.dtype))
            )
        else:
            csr, stored = self._stored()
            values = host_data(stored, "tril()")
            matrix, positions = tril_shell(csr, values.dtype)
        np.take(values.reshape(-1), positions, out=matrix.data)
        return matrix

    def as_linear_operator(self) -> LinearOperator:
        """The flat Hessian as a symmetric scipy ``LinearOperator``; products are HVPs.

        ``matvec`` costs one HVP, ``matmat`` one per column; nothing is cached.
        """
        self._scalar("as_linear_operator()")
        layout = self._engine.layout
        return _FlatOperator(self.flat, layout.n, layout.dtype)

    def _scalar(self, what: str) -> None:
        lead = self._engine.layout.lead
        if lead:
            raise ValueError(
                f"{what} needs one scalar output without a batch; this Hessian has leading "
                f"axes {lead}. Use to_sparse('bcoo') or to_sparse('dense')."
            )

    @property
    def sparsity(self) -> SparsityPattern | None:
        """The flat pattern (detected now if ``sparsity="auto"`` and not yet known).

        ``None`` for a dense Hessian (``sparsity=None``).
        """
        return self._engine.structure.pattern

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
        """Drop every cached HVP result (counters are kept), at every point sharing them.

        Only the points of a constant Hessian share results (see :meth:`at`).
        """
        self._engine.cache.clear()

    def __repr__(self) -> str:
        info = self.cache_info()
        if isinstance(self._root, HessianBlock):
            what = f"shape={self.shape}, dtype={self.dtype}"
        else:
            count = len(jax.tree_util.tree_leaves(self._root._tree))
            what = f"blocks={count}, flat={self.flat.shape}, dtype={self._engine.layout.dtype}"
        return (
            f"Hessian({what}, engine={self._engine.structure.describe()}, hvps={info.hvps}, "
            f"cache={format_bytes(info.bytes)}/{format_bytes(info.max_bytes)})"
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
