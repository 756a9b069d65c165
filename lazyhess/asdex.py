"""asdex's Hessian API, backed by lazyhess: ``import lazyhess.asdex as asdex`` and run unchanged.

The functions, parameters, defaults, output layouts and return shapes are asdex's (0.5):
``hessian(f, *sample_args, ...)`` detects the sparsity pattern and colors it once and returns
a function of ``f``'s arguments giving the Hessian nested like ``jax.hessian``'s output (one
block per pair of input leaves) in ``output_format``; ``*_from_coloring`` reuse a coloring,
``compressed_*`` stop at ``B[c] = H @ s_c`` and ``value_and_*`` return ``f``'s value too. The
detection and coloring are lazyhess's, so colorings may need fewer colors than asdex's (and so
``B`` may have fewer rows); the Hessians are equal. Each call costs ``num_colors`` HVPs and
one trace of ``f`` per input shapes; wrap the returned function in ``jax.jit`` for repeated
use. A coloring records ``argnums``, ``mode`` and the input shapes and dtypes it was built for;
calls at other shapes or dtypes raise.

Differences from asdex: ``postprocess`` is accepted but lazyhess always prunes star-coloring
colors that are never read (fewer or equal HVPs, the same values); ``allow_int=True`` raises
as in asdex. Only the Hessian half of asdex is here (no Jacobians).

Example:
    >>> import jax.numpy as jnp
    >>> import lazyhess.asdex as asdex
    >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)
    >>> asdex.hessian(f, jnp.zeros(4), output_format="dense")(jnp.ones(4)).shape
    (4, 4)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Literal, TypeAlias, get_args

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental.sparse import BCOO

from . import _functional
from ._formats import pattern_output
from ._functional import Program, VerificationError, format_name
from ._hvp import MODES
from ._hvp import Mode as HessianMode
from ._tree import is_array
from .coloring import ColoredPattern as _NativeColoring
from .coloring import hessian_coloring_from_sparsity as _color
from .sparsity import SparsityPattern as _NativePattern
from .sparsity import hessian_sparsity as _detect

OutputFormat: TypeAlias = Literal[
    "bcoo", "dense", "numpy_dense", "scipy_coo", "scipy_csr", "scipy_csc"
]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

__all__ = [
    "ColoredPattern",
    "HessianMode",
    "OutputFormat",
    "SparsityPattern",
    "VerificationError",
    "check_hessian_correctness",
    "compressed_hessian",
    "compressed_hessian_from_coloring",
    "decompress",
    "decompress_data",
    "hessian",
    "hessian_coloring",
    "hessian_coloring_from_sparsity",
    "hessian_from_coloring",
    "hessian_sparsity",
    "value_and_compressed_hessian",
    "value_and_compressed_hessian_from_coloring",
    "value_and_hessian",
    "value_and_hessian_from_coloring",
]


def _aval(leaf: Any) -> Any:
    if is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct | int | float | complex):
        return jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf))
    return leaf


@dataclasses.dataclass(frozen=True)
class SparsityPattern:
    """The nonzero entries ``(rows[k], cols[k])`` of an ``m x n`` matrix, asdex's way.

    Attributes:
        rows: int32 row indices of the entries, shape ``(nnz,)``.
        cols: int32 column indices, shape ``(nnz,)``.
        shape: ``(m, n)``.
        input_avals: one pytree of ``jax.ShapeDtypeStruct`` per positional argument of the
            function the pattern belongs to (default: one vector of ``n`` floats).
        argnums: the differentiated positions among them, an int or a tuple of ints.
    """

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]
    input_avals: tuple[Any, ...] = ()
    argnums: int | tuple[int, ...] = 0
    _default_avals: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the coordinates; fill in the default ``input_avals``."""
        if len(self.rows) != len(self.cols):
            raise ValueError(
                f"rows and cols must have the same length; got {len(self.rows)} and "
                f"{len(self.cols)}."
            )
        if not self.input_avals:
            default = (jax.ShapeDtypeStruct((self.n,), jnp.dtype(float)),)
            object.__setattr__(self, "input_avals", default)
            object.__setattr__(self, "_default_avals", True)

    @classmethod
    def from_coo(
        cls,
        rows: Any,
        cols: Any,
        shape: tuple[int, int],
        *,
        input_avals: tuple[Any, ...] = (),
        argnums: int | tuple[int, ...] = 0,
    ) -> SparsityPattern:
        """The pattern with entries at ``(rows[k], cols[k])``."""
        return cls(
            np.asarray(rows, dtype=np.int32),
            np.asarray(cols, dtype=np.int32),
            (int(shape[0]), int(shape[1])),
            input_avals,
            argnums,
        )

    @classmethod
    def from_dense(cls, dense: Any) -> SparsityPattern:
        """The pattern of the nonzero entries of a 2-D array."""
        dense = np.asarray(dense)
        rows, cols = np.nonzero(dense)
        return cls.from_coo(rows, cols, (dense.shape[0], dense.shape[1]))

    @classmethod
    def from_bcoo(cls, bcoo: BCOO) -> SparsityPattern:
        """The pattern of the stored entries of a 2-D ``BCOO`` matrix."""
        indices = np.asarray(bcoo.indices).reshape(-1, 2)
        return cls.from_coo(indices[:, 0], indices[:, 1], (bcoo.shape[0], bcoo.shape[1]))

    @property
    def nnz(self) -> int:
        """Number of entries."""
        return len(self.rows)

    @property
    def m(self) -> int:
        """Number of rows."""
        return self.shape[0]

    @property
    def n(self) -> int:
        """Number of columns."""
        return self.shape[1]

    @property
    def density(self) -> float:
        """Fraction of the ``m * n`` entries that are in the pattern."""
        total = self.m * self.n
        return self.nnz / total if total else 0.0

    @property
    def dyn_avals(self) -> tuple[Any, ...]:
        """The differentiated arguments' avals."""
        nums = (self.argnums,) if isinstance(self.argnums, int) else self.argnums
        return tuple(self.input_avals[i] for i in nums)

    @property
    def example_input(self) -> Any:
        """The differentiated avals as ``jax.hessian`` receives them (tuple for tuples)."""
        return self.dyn_avals[0] if isinstance(self.argnums, int) else self.dyn_avals

    @property
    def leaf_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the differentiated leaves."""
        return [tuple(a.shape) for a in jax.tree_util.tree_leaves(self.dyn_avals)]

    @property
    def leaf_sizes(self) -> list[int]:
        """Sizes of the differentiated leaves."""
        return [int(np.prod(shape)) for shape in self.leaf_shapes]

    @property
    def input_treedef(self) -> Any:
        """The pytree structure of ``dyn_avals``."""
        return jax.tree_util.tree_structure(self.dyn_avals)

    def todense(self) -> np.ndarray:
        """The pattern as an int8 array with ones at the entries."""
        dense = np.zeros(self.shape, dtype=np.int8)
        dense[self.rows, self.cols] = 1
        return dense

    def to_bcoo(self, data: Any = None) -> BCOO:
        """The pattern as a ``BCOO`` matrix holding ``data`` (default: int8 ones)."""
        if data is None:
            data = jnp.ones(self.nnz, dtype=jnp.int8)
        indices = np.stack([self.rows, self.cols], axis=1)
        return BCOO((jnp.asarray(data), jnp.asarray(indices)), shape=self.shape)

    def __repr__(self) -> str:
        return f"SparsityPattern(shape={self.shape}, nnz={self.nnz})"

    @cached_property
    def _native(self) -> _NativePattern:
        if self.m != self.n:
            raise ValueError(f"a Hessian pattern must be square; got shape {self.shape}.")
        return _NativePattern.from_coordinates(self.rows, self.cols, self.n)


@dataclasses.dataclass(frozen=True, repr=False)
class ColoredPattern:
    """A coloring of a Hessian pattern's columns: seed ``c`` sums the columns of color ``c``.

    Built by :func:`hessian_coloring` or directly from a pattern and valid colors (star
    colors when ``symmetric``, distance-2 column colors otherwise; ``-1`` marks a column in
    no seed). ``B[c] = H @ s_c`` for every color, ``num_colors`` HVPs, recovers every entry.

    Attributes:
        sparsity: the colored :class:`SparsityPattern`.
        colors: int32 color of each column, shape ``(n,)``.
        num_colors: number of seeds (HVPs).
        symmetric: star (``True``) or column (``False``) coloring.
        mode: the HVP mode functions built from the coloring use.
        star_set: always ``None`` here (lazyhess recovers entries without it).

    Raises:
        ValueError: if the colors cannot recover every entry of the pattern.
    """

    sparsity: SparsityPattern
    colors: np.ndarray
    num_colors: int
    symmetric: bool
    mode: HessianMode
    star_set: None = None
    _native: _NativeColoring = dataclasses.field(init=False, repr=False, compare=False)
    _order: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the mode and the colors against the pattern."""
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not a Hessian mode; use one of {MODES}.")
        colors = np.asarray(self.colors, dtype=np.int32)
        if colors.shape != (self.sparsity.n,) or int(colors.max(initial=-1)) + 1 > max(
            self.num_colors, 0
        ):
            raise ValueError(
                f"colors must have shape ({self.sparsity.n},) with values below num_colors="
                f"{self.num_colors}; got shape {colors.shape}."
            )
        object.__setattr__(self, "colors", colors)
        csr = sp.csr_array(self.sparsity._native.to_scipy("csr"))
        sparsity = self.sparsity
        default = sparsity._default_avals
        try:
            native = _NativeColoring(
                csr,
                colors,
                "star" if self.symmetric else "column",
                "given",
                argnums=sparsity.argnums,
                inputs=None if default else sparsity.example_input,
                mode=self.mode,
            )
        except RuntimeError:
            kind = "star" if self.symmetric else "column (distance-2)"
            raise ValueError(
                f"these colors are not a valid {kind} coloring of the pattern: some entry "
                "cannot be read from the compressed Hessian. Color with hessian_coloring."
            ) from None
        object.__setattr__(self, "_native", native)
        order = native.entry_index(sparsity.rows, sparsity.cols)
        object.__setattr__(self, "_order", order)

    def __repr__(self) -> str:
        m, n = self.sparsity.shape
        s = "" if self.num_colors == 1 else "s"
        return (
            f"ColoredPattern({m}x{n}, nnz={self.sparsity.nnz}, mode={self.mode!r}, "
            f"{self.num_colors} color{s})"
        )


def _wrap(native: _NativeColoring, sparsity: SparsityPattern, symmetric: bool, mode) -> Any:
    mode = "fwd_over_rev" if mode is None else mode
    return ColoredPattern(sparsity, native.colors, native.num_colors, symmetric, mode)


def _check_flags(**flags: Any) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False; got {flag!r}.")


def _check_mode(mode: Any) -> None:
    if mode is not None and mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Expected one of {', '.join(MODES)}.")


def _check_output_format(output_format: Any) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"Unknown output_format {output_format!r}. Expected one of "
            f"{', '.join(map(repr, OUTPUT_FORMATS))}."
        )


def _positional(f: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Keyword arguments that name positional parameters of ``f`` moved into ``args``."""
    if not kwargs:
        return args, kwargs
    try:
        bound = inspect.signature(f).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    return tuple(bound.args), dict(bound.kwargs)


def hessian_sparsity(
    f: Callable, *args: Any, argnums: int | Sequence[int] = 0, has_aux: bool = False, **kwargs: Any
) -> SparsityPattern:
    """The global sparsity pattern of ``f``'s Hessian over the flattened ``args[argnums]``.

    Found from the jaxpr by lazyhess's detection (values of ``args`` are not used); cost
    linear in the program size. ``SparsityPattern.input_avals`` records every positional
    argument's shapes and dtypes.
    """
    argnums = argnums if isinstance(argnums, int) else tuple(argnums)
    args, kwargs = _positional(f, args, kwargs)
    native = _detect(f, *args, argnums=argnums, has_aux=has_aux, **kwargs)
    n = native.n
    return SparsityPattern.from_coo(
        native.rows,
        native.cols,
        (n, n),
        input_avals=tuple(jax.tree_util.tree_map(_aval, a) for a in args),
        argnums=argnums,
    )


def hessian_coloring_from_sparsity(
    sparsity: SparsityPattern | np.ndarray | BCOO,
    *,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    postprocess: bool = False,
) -> ColoredPattern:
    """A star (``symmetric``) or column coloring of a Hessian pattern; see the module notes.

    Cost O(nnz) per greedy order tried for star colorings.
    """
    _check_mode(mode)
    _check_flags(symmetric=symmetric, postprocess=postprocess)
    if isinstance(sparsity, BCOO):
        sparsity = SparsityPattern.from_bcoo(sparsity)
    elif not isinstance(sparsity, SparsityPattern):
        sparsity = SparsityPattern.from_dense(sparsity)
    native = _color(sparsity._native, method="star" if symmetric else "column")
    return _wrap(native, sparsity, symmetric, mode)


def hessian_coloring(
    f: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    postprocess: bool = False,
    **kwargs: Any,
) -> ColoredPattern:
    """:func:`hessian_sparsity` followed by :func:`hessian_coloring_from_sparsity`."""
    sparsity = hessian_sparsity(f, *args, argnums=argnums, has_aux=has_aux, **kwargs)
    return hessian_coloring_from_sparsity(
        sparsity, mode=mode, symmetric=symmetric, postprocess=postprocess
    )


def _program(f, coloring, has_aux, holomorphic, allow_int, chunk_size) -> Program:
    if not isinstance(coloring, ColoredPattern):
        raise TypeError(
            f"coloring must be a lazyhess.asdex.ColoredPattern; got {type(coloring).__name__}. "
            "Build one with lazyhess.asdex.hessian_coloring(f, *args)."
        )
    _check_flags(has_aux=has_aux, holomorphic=holomorphic, allow_int=allow_int)
    if allow_int:
        raise TypeError(
            "allow_int=True is not supported for Hessians: integer inputs cannot be "
            "differentiated twice (as in jax.hessian)."
        )
    native = coloring._native
    return Program(f, native, native.argnums, has_aux, holomorphic, coloring.mode, chunk_size)


def _blocks(data: Any, native: _NativeColoring, inputs: Any, output_format: str) -> Any:
    """The Hessian from its entries (lazyhess's pattern order), nested like ``jax.hessian``.

    One block ``shape_i + shape_j`` per pair of differentiated leaves; a single 1-D input
    gives the plain ``n x n`` matrix, the only layout scipy formats can hold.
    """
    leaves, tree = jax.tree_util.tree_flatten(inputs)
    shapes = [tuple(leaf.shape) for leaf in leaves]
    format = format_name(output_format)
    single = len(shapes) == 1 and isinstance(inputs, jax.ShapeDtypeStruct)
    if single and len(shapes[0]) == 1:
        return pattern_output(data, native.csr, format)
    if format in ("coo", "csr", "csc"):
        raise ValueError(
            f"output_format={output_format!r} holds one 2-D matrix: it needs the input to be "
            f"a single flat (1D) array; these inputs have leaf shapes {shapes}. Use 'bcoo', "
            "'dense' or 'numpy_dense'."
        )
    offsets = np.concatenate([[0], np.cumsum([int(np.prod(s)) for s in shapes])])
    if format == "bcoo":
        row_leaf = np.searchsorted(offsets, native.rows, side="right") - 1
        col_leaf = np.searchsorted(offsets, native.cols, side="right") - 1

        def block(i: int, j: int) -> Any:
            sel = np.flatnonzero((row_leaf == i) & (col_leaf == j))
            r = _unravel(native.rows[sel] - offsets[i], shapes[i])
            c = _unravel(native.cols[sel] - offsets[j], shapes[j])
            indices = np.zeros((sel.size, len(shapes[i] + shapes[j])), dtype=np.int32)
            for axis, coordinate in enumerate((*r, *c)):
                indices[:, axis] = coordinate
            return BCOO(
                (jnp.asarray(data)[sel], jnp.asarray(indices)), shape=shapes[i] + shapes[j]
            )
    else:
        matrix = pattern_output(data, native.csr, format)

        def block(i: int, j: int) -> Any:
            part = matrix[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            return part.reshape(shapes[i] + shapes[j])

    count = len(shapes)
    rows = [
        jax.tree_util.tree_unflatten(tree, [block(i, j) for j in range(count)])
        for i in range(count)
    ]
    return jax.tree_util.tree_unflatten(tree, rows)


def _unravel(flat: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    return np.unravel_index(flat, shape) if shape else ()


class _Evaluator:
    """Calls of one function with one coloring, in asdex's shapes."""

    def __init__(self, f, coloring, has_aux, holomorphic, allow_int, chunk_size):
        self.f = f
        self.program = _program(f, coloring, has_aux, holomorphic, allow_int, chunk_size)
        self.has_aux = has_aux
        self._layouts: dict[tuple, Callable] = {}

    def __call__(self, args: tuple, kwargs: dict) -> _functional.Point:
        args, kwargs = _positional(self.f, args, kwargs)
        return self.program(args, kwargs)

    def hessian(self, point: _functional.Point, output_format: str) -> Any:
        """The Hessian from ``B``: one compiled gather and layout for the jax formats."""
        native = self.program.coloring

        def layout(compressed: jax.Array) -> Any:
            return _blocks(native.decompress_data(compressed), native, point.inputs, output_format)

        if output_format not in ("bcoo", "dense"):
            return layout(point.compressed)
        leaves, tree = jax.tree_util.tree_flatten(point.inputs)
        key = (tuple(leaves), tree, output_format)
        if key not in self._layouts:
            self._layouts[key] = jax.jit(layout)
        return self._layouts[key](point.compressed)

    def value(self, point: _functional.Point) -> Any:
        return (point.value, point.aux) if self.has_aux else point.value

    def with_aux(self, out: Any, point: _functional.Point) -> Any:
        return (out, point.aux) if self.has_aux else out


def hessian_from_coloring(
    f: Callable[..., Any],
    coloring: ColoredPattern,
    output_format: OutputFormat = "bcoo",
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """A function of ``f``'s arguments returning its sparse Hessian, from a coloring.

    The Hessian is nested like ``jax.hessian(f, coloring.sparsity.argnums)``'s output, each
    block in ``output_format``; with ``has_aux``, calls return ``(H, aux)``. Each call costs
    ``coloring.num_colors`` HVPs.
    """
    _check_output_format(output_format)
    evaluate = _Evaluator(f, coloring, has_aux, holomorphic, allow_int, chunk_size)

    def hess_fn(*args: Any, **kwargs: Any) -> Any:
        point = evaluate(args, kwargs)
        return evaluate.with_aux(evaluate.hessian(point, output_format), point)

    return hess_fn


def value_and_hessian_from_coloring(
    f: Callable[..., Any],
    coloring: ColoredPattern,
    output_format: OutputFormat = "bcoo",
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Like :func:`hessian_from_coloring`; calls return ``(value, H)``.

    With ``has_aux``: ``((value, aux), H)``. The value comes from the same trace of ``f``.
    """
    _check_output_format(output_format)
    evaluate = _Evaluator(f, coloring, has_aux, holomorphic, allow_int, chunk_size)

    def val_hess_fn(*args: Any, **kwargs: Any) -> Any:
        point = evaluate(args, kwargs)
        return evaluate.value(point), evaluate.hessian(point, output_format)

    return val_hess_fn


def compressed_hessian_from_coloring(
    f: Callable[..., Any],
    coloring: ColoredPattern,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """A function returning ``B`` of shape ``(num_colors, n)``, ``B[c] = H @ s_c``.

    With ``has_aux``: ``(B, aux)``. Recover the Hessian with :func:`decompress`.
    """
    evaluate = _Evaluator(f, coloring, has_aux, holomorphic, allow_int, chunk_size)

    def compressed_fn(*args: Any, **kwargs: Any) -> Any:
        point = evaluate(args, kwargs)
        return evaluate.with_aux(point.compressed, point)

    return compressed_fn


def value_and_compressed_hessian_from_coloring(
    f: Callable[..., Any],
    coloring: ColoredPattern,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Like :func:`compressed_hessian_from_coloring`; calls return ``(value, B)``.

    With ``has_aux``: ``((value, aux), B)``.
    """
    evaluate = _Evaluator(f, coloring, has_aux, holomorphic, allow_int, chunk_size)

    def compressed_fn(*args: Any, **kwargs: Any) -> Any:
        point = evaluate(args, kwargs)
        return evaluate.value(point), point.compressed

    return compressed_fn


def _detected(f, sample_args, sample_kwargs, argnums, has_aux, mode, symmetric, chunk_size):
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}.")
    _check_mode(mode)
    return hessian_coloring(
        f,
        *sample_args,
        argnums=argnums,
        has_aux=has_aux,
        mode=mode,
        symmetric=symmetric,
        **sample_kwargs,
    )


def hessian(
    f: Callable[..., Any],
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    output_format: OutputFormat = "bcoo",
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """A function of ``f``'s arguments computing its sparse Hessian, colored once here.

    Sparsity is detected from the sample arguments' shapes and dtypes (values are not
    used) and colored; each call then costs ``num_colors`` HVPs. ``f`` may return any
    one-element array (squeezed). See :func:`hessian_from_coloring`.
    """
    _check_output_format(output_format)
    coloring = _detected(
        f, sample_args, sample_kwargs, argnums, has_aux, mode, symmetric, chunk_size
    )
    return hessian_from_coloring(
        f,
        coloring,
        output_format,
        has_aux=has_aux,
        holomorphic=holomorphic,
        allow_int=allow_int,
        chunk_size=chunk_size,
    )


def value_and_hessian(
    f: Callable[..., Any],
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    output_format: OutputFormat = "bcoo",
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Like :func:`hessian`; calls return ``(value, H)`` (``((value, aux), H)``)."""
    _check_output_format(output_format)
    coloring = _detected(
        f, sample_args, sample_kwargs, argnums, has_aux, mode, symmetric, chunk_size
    )
    return value_and_hessian_from_coloring(
        f,
        coloring,
        output_format,
        has_aux=has_aux,
        holomorphic=holomorphic,
        allow_int=allow_int,
        chunk_size=chunk_size,
    )


def compressed_hessian(
    f: Callable[..., Any],
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Like :func:`hessian`, but calls return ``B`` (``(B, aux)``), shape ``(num_colors, n)``."""
    coloring = _detected(
        f, sample_args, sample_kwargs, argnums, has_aux, mode, symmetric, chunk_size
    )
    return compressed_hessian_from_coloring(
        f,
        coloring,
        has_aux=has_aux,
        holomorphic=holomorphic,
        allow_int=allow_int,
        chunk_size=chunk_size,
    )


def value_and_compressed_hessian(
    f: Callable[..., Any],
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    mode: HessianMode | None = None,
    symmetric: bool = True,
    chunk_size: int | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Like :func:`compressed_hessian`; calls return ``(value, B)`` (``((value, aux), B)``)."""
    coloring = _detected(
        f, sample_args, sample_kwargs, argnums, has_aux, mode, symmetric, chunk_size
    )
    return value_and_compressed_hessian_from_coloring(
        f,
        coloring,
        has_aux=has_aux,
        holomorphic=holomorphic,
        allow_int=allow_int,
        chunk_size=chunk_size,
    )


def decompress_data(compressed: jax.Array, coloring: ColoredPattern) -> jax.Array:
    """The entries of the Hessian in ``coloring.sparsity``'s order, gathered from ``B``.

    A gather with constant indices: jit-able and differentiable. Cost O(nnz).
    """
    native = coloring._native
    return jnp.asarray(native.decompress_data(jnp.asarray(compressed)))[coloring._order]


def decompress(
    compressed: jax.Array, coloring: ColoredPattern, output_format: OutputFormat = "bcoo"
) -> Any:
    """The flat ``n x n`` Hessian from ``B`` in ``output_format`` (whatever the inputs' tree)."""
    _check_output_format(output_format)
    native = coloring._native
    data = native.decompress_data(jnp.asarray(compressed))
    return pattern_output(data, native.csr, format_name(output_format))


def check_hessian_correctness(
    f: Callable[..., Any],
    x: Any,
    coloring: ColoredPattern,
    *,
    method: Literal["matvec", "dense"] = "matvec",
    num_probes: int = 25,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Check the sparse Hessian from ``coloring`` against JAX at ``x``.

    ``x`` is ``f``'s one argument, or the tuple of all its positional arguments when the
    coloring's ``argnums`` is a tuple. ``"matvec"`` compares products with ``num_probes``
    random vectors (O(probes) HVPs), ``"dense"`` the whole matrix (O(n^2) memory).

    Raises:
        VerificationError: if they disagree.
    """
    _functional.check_hessian_correctness(
        f,
        x,
        coloring._native,
        method=method,
        num_probes=num_probes,
        seed=seed,
        rtol=rtol,
        atol=atol,
    )
