"""Jit-able function factories: sparse Hessians from a coloring, asdex-style."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from ._formats import check_format, pattern_output
from ._hessian import Hessian
from ._hvp import Mode
from ._plan import SeedFamily
from .coloring import ColoredPattern, hessian_coloring

_ASDEX_FORMATS = {
    "numpy_dense": "numpy",
    "scipy_coo": "coo",
    "scipy_csr": "csr",
    "scipy_csc": "csc",
}


class VerificationError(AssertionError):
    """A sparse Hessian disagrees with its dense reference (see ``check_hessian_correctness``)."""


def _format(output_format: str) -> str:
    format = _ASDEX_FORMATS.get(output_format, output_format)
    check_format(format)
    return format


class _Compressed:
    """``B = (H S)^T`` for one function and coloring, at any point of the sample's shapes."""

    def __init__(self, fun, coloring: ColoredPattern, sample_args, sample_kwargs, options):
        _check_coloring(coloring)
        self.coloring = coloring
        colors = np.asarray(coloring.colors, dtype=np.int64)
        self.family = SeedFamily("coloring", colors, fixed=True)
        self.sample = Hessian(fun, *sample_args, sparsity=None, **options, **sample_kwargs)
        if self.sample.flat._prefix:
            raise ValueError(
                "sparse Hessian functions need a scalar output (shape () or (1,)); this "
                f"function's output adds axes {self.sample.flat._prefix}. Use "
                "lazyhess.hessian(...).to_sparse('bcoo') for batched or vector outputs."
            )
        if coloring.n != self.sample._layout.n:
            raise ValueError(
                f"the coloring is for n = {coloring.n} inputs, but the differentiated inputs "
                f"have {self.sample._layout.n} elements; color this function's pattern."
            )

    def at(self, args: tuple, kwargs: dict) -> tuple[Hessian, jax.Array]:
        H = self.sample.at(*args, **kwargs)
        return H, H._engine.compressed(self.family)[:, 0, :]

    def decompress(self, compressed: jax.Array, format: str) -> Any:
        return pattern_output(self.coloring.decompress_data(compressed), self.coloring.csr, format)


def _check_coloring(coloring: Any) -> None:
    if not isinstance(coloring, ColoredPattern):
        raise TypeError(
            f"coloring must be a lazyhess.ColoredPattern; got {type(coloring).__name__}. "
            "Build one with lazyhess.hessian_coloring(fun, *args)."
        )
    if coloring.method == "diagonal":
        raise ValueError(
            "a 'diagonal' coloring recovers only the diagonal; color with method='star' "
            "or 'column' for the whole Hessian."
        )


def _factory(
    fun, sample_args, sample_kwargs, coloring, argnums, has_aux, holomorphic, mode, chunk_size
) -> _Compressed:
    options = dict(
        argnums=argnums, has_aux=has_aux, holomorphic=holomorphic, mode=mode, chunk_size=chunk_size
    )
    return _Compressed(fun, coloring, sample_args, sample_kwargs, options)


def _detected(fun, sample_args, sample_kwargs, argnums, has_aux, symmetric) -> ColoredPattern:
    return hessian_coloring(
        fun,
        *sample_args,
        argnums=argnums,
        has_aux=has_aux,
        method="auto" if symmetric else "column",
        whole=True,
        **sample_kwargs,
    )


def sparse_hessian_from_coloring(
    fun: Callable,
    coloring: ColoredPattern,
    output_format: str = "bcoo",
    *,
    sample_args: Sequence = (),
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    chunk_size: int | None = None,
    sample_kwargs: dict | None = None,
) -> Callable[..., Any]:
    """A function ``(*args, **kwargs) -> H`` computing the sparse Hessian with ``coloring``.

    Each call costs ``coloring.num_colors`` HVPs (one linearisation of the gradient shared by
    all of them) and a gather: the physical floor. Wrap it in ``jax.jit`` for repeated use;
    ``"bcoo"`` and ``"dense"`` outputs are jit-able and differentiable.

    Args:
        fun: scalar-valued function.
        coloring: a star or column coloring of the Hessian's pattern.
        output_format: ``"bcoo"``, ``"dense"``, ``"numpy"``, ``"csr"``, ``"csc"``, ``"coo"``
            (asdex's ``"numpy_dense"`` and ``"scipy_*"`` names are accepted too).
        sample_args: arguments with the shapes and dtypes of later calls (only needed
            before the first call; default: taken from the first call).
        argnums: as in :func:`lazyhess.hessian`.
        has_aux: as in :func:`lazyhess.hessian`; calls then return ``(H, aux)``.
        holomorphic: as in :func:`lazyhess.hessian`.
        mode: as in :func:`lazyhess.hessian`.
        chunk_size: colors per compiled HVP call (bounds memory).
        sample_kwargs: keyword arguments with the shapes of later calls.

    Returns:
        With ``has_aux``, calls return ``(H, aux)``.
    """
    format = _format(output_format)
    _check_coloring(coloring)
    built: dict[str, _Compressed] = {}

    def build(args: tuple, kwargs: dict) -> _Compressed:
        if "compressed" not in built:
            built["compressed"] = _factory(
                fun, args, kwargs, coloring, argnums, has_aux, holomorphic, mode, chunk_size
            )
        return built["compressed"]

    if sample_args:
        build(tuple(sample_args), sample_kwargs or {})

    def hess(*args: Any, **kwargs: Any) -> Any:
        compressed = build(args, kwargs)
        H, B = compressed.at(args, kwargs)
        out = compressed.decompress(B, format)
        return (out, H.aux) if has_aux else out

    return hess


def sparse_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    output_format: str = "bcoo",
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Detect the sparsity of ``fun``'s Hessian, color it, and return ``(*args) -> H``.

    Detection and coloring run once here, from the shapes of ``sample_args`` (values are
    not used). Each call of the result costs ``num_colors`` HVPs; see
    :func:`sparse_hessian_from_coloring`. ``symmetric=True`` uses the cheapest coloring
    for whole Hessians (``hessian_coloring(..., whole=True)``: acyclic with substitution
    when its fewer colors pay, else star or column), ``False`` a column (distance-2)
    coloring.

    Example:
        >>> import jax, jax.numpy as jnp, lazyhess
        >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)
        >>> hess = jax.jit(lazyhess.sparse_hessian(f, jnp.zeros(5), output_format="dense"))
        >>> hess(jnp.ones(5)).shape
        (5, 5)
    """
    coloring = _detected(fun, sample_args, sample_kwargs, argnums, has_aux, symmetric)
    return sparse_hessian_from_coloring(
        fun,
        coloring,
        output_format,
        sample_args=sample_args,
        argnums=argnums,
        has_aux=has_aux,
        holomorphic=holomorphic,
        mode=mode,
        chunk_size=chunk_size,
        sample_kwargs=sample_kwargs,
    )


def value_and_sparse_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    output_format: str = "bcoo",
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Like :func:`sparse_hessian`, but calls return ``(value, H)``.

    With ``has_aux`` they return ``((value, aux), H)``.
    """
    format = _format(output_format)
    coloring = _detected(fun, sample_args, sample_kwargs, argnums, has_aux, symmetric)
    compressed = _factory(
        fun, sample_args, sample_kwargs, coloring, argnums, has_aux, holomorphic, mode, chunk_size
    )

    def value_and_hess(*args: Any, **kwargs: Any) -> Any:
        H, B = compressed.at(args, kwargs)
        value = (H.value, H.aux) if has_aux else H.value
        return value, compressed.decompress(B, format)

    return value_and_hess


def compressed_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., jax.Array]:
    """Detect, color, and return ``(*args) -> B`` with ``B[c] = H @ s_c``.

    ``B`` has shape ``(num_colors, n)``, one HVP per color. The coloring is the result's
    ``coloring`` attribute; recover H with :func:`decompress` or :func:`decompress_data`.
    """
    coloring = _detected(fun, sample_args, sample_kwargs, argnums, has_aux, symmetric)
    compressed = _factory(
        fun, sample_args, sample_kwargs, coloring, argnums, has_aux, holomorphic, mode, chunk_size
    )

    def compute(*args: Any, **kwargs: Any) -> jax.Array:
        return compressed.at(args, kwargs)[1]

    compute.coloring = coloring
    return compute


def decompress(compressed: Any, coloring: ColoredPattern, format: str = "bcoo") -> Any:
    """The Hessian from its compressed form ``B`` (``(num_colors, n)``) in ``format``.

    Sparse formats keep the pattern's coordinates, explicit zeros included. Jit-able for
    ``"bcoo"`` and ``"dense"``.
    """
    return pattern_output(coloring.decompress_data(compressed), coloring.csr, _format(format))


def decompress_data(compressed: Any, coloring: ColoredPattern) -> Any:
    """The Hessian's stored entries in pattern (row-major) order, gathered from ``B``.

    A gather with constant indices: jit-able and differentiable.
    """
    return coloring.decompress_data(compressed)


def check_hessian_correctness(
    fun: Callable,
    x: Any,
    coloring: ColoredPattern,
    *,
    method: Literal["matvec", "dense"] = "matvec",
    num_probes: int = 25,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Check the sparse Hessian of ``fun`` at ``x`` built with ``coloring`` against JAX.

    ``"matvec"`` compares ``H @ v`` with exact HVPs for ``num_probes`` random probes (cost
    O(probes) HVPs); ``"dense"`` compares with ``jax.hessian`` (O(n^2) memory).

    Raises:
        VerificationError: if they disagree (e.g. the coloring does not fit ``fun``).
    """
    if method not in ("matvec", "dense"):
        raise ValueError(f"method={method!r} is not valid; use 'matvec' or 'dense'.")
    sparse = sparse_hessian_from_coloring(fun, coloring, "dense")(x)
    flat, unravel = ravel_pytree(x)
    scalar = lambda z: fun(unravel(z))  # noqa: E731
    if method == "dense":
        reference = jax.hessian(scalar)(flat)
        tol = dict(rtol=1e-7 if rtol is None else rtol, atol=1e-7 if atol is None else atol)
        problem = "differs from jax.hessian"
    else:
        probes = jax.random.normal(jax.random.PRNGKey(seed), (num_probes, flat.size), flat.dtype)
        hvp = jax.vmap(lambda v: jax.jvp(jax.grad(scalar), (flat,), (v,))[1])
        reference, sparse = hvp(probes), probes @ sparse
        tol = dict(rtol=1e-5 if rtol is None else rtol, atol=1e-5 if atol is None else atol)
        problem = f"gives other products than exact HVPs on {num_probes} random probes"
    try:
        np.testing.assert_allclose(np.asarray(sparse), np.asarray(reference), **tol)
    except AssertionError as err:
        raise VerificationError(
            f"the sparse Hessian from this coloring {problem}; the coloring or its pattern "
            f"does not fit fun at this point.\n{err}"
        ) from None
