"""The colored pattern: a coloring of a Hessian pattern and how to read the Hessian back."""

import functools
import json
import os
import warnings
from typing import Any, Literal, cast, get_args

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._csr import entry_rows, lookup, shape_of
from .._formats import Format, pattern_output
from . import _greedy
from ._substitution import Substitution, take

Method = Literal["star", "column", "diagonal", "acyclic"]
METHODS: tuple[str, ...] = get_args(Method)
_FILE_VERSION = 1


class ColoredPattern:
    """A symmetric sparsity pattern with a coloring of its columns, ready for decompression.

    Seed ``c`` is ``s_c = indicator(colors == c)``; the compressed Hessian ``B`` has shape
    ``(num_colors, n)`` with ``B[c, :] = H @ s_c``, one Hessian-vector product per color.
    Stored entry ``k`` of the pattern (row-major order, ``rows[k], cols[k]``) is
    ``H[rows[k], cols[k]] == B[recover_color[k], recover_index[k]]``.

    * ``"star"``: every entry is recoverable. ``(i, j)`` is read as
      ``B[colors[j], i]`` when ``j`` is the only column of its color in row ``i``, otherwise
      as ``B[colors[i], j]``; both ``(i, j)`` and ``(j, i)`` read the same element, so
      decompressed Hessians are exactly symmetric. Columns colored ``-1`` ("neutral")
      are in no seed: they have no diagonal entry and each of their entries is read from
      the other side.
    * ``"column"``: every entry is recoverable as ``B[colors[j], i]``.
    * ``"diagonal"``: only diagonal entries are recoverable, as ``B[colors[i], i]``;
      ``recover_color`` and ``recover_index`` are ``-1`` on off-diagonal entries.
    * ``"acyclic"``: every entry is recoverable from the whole of ``B``, not color by
      color: the colors of every cycle of the pattern's graph number at least three, so
      the entries between two colors form a forest, solved leaves first (substitution,
      see ``decompress_data``). Diagonal entries and leaf edges are read directly and
      have ``recover_color``/``recover_index``; the others have ``-1`` there. Fewer
      colors than a star coloring (a band of half-width w: w + 1 instead of 2w + 1), for
      whole Hessians only; ``substitution`` holds the solve's index arrays.

    Columns without any entry are neutral (``-1``) in every method. ``entry_index``
    finds ``k`` for requested ``(i, j)`` pairs.

    Attributes:
        pattern: the pattern as given if it had a ``to_scipy`` method, else ``csr``.
        csr: the pattern as a boolean ``scipy.sparse.csr_array`` with sorted indices.
        method: ``"star"``, ``"column"``, ``"diagonal"`` or ``"acyclic"``.
        order: the vertex order that produced ``colors``.
        colors: int32 array of shape ``(n,)``, values in ``-1 .. num_colors - 1``.
        num_colors: number of seeds (HVPs) needed.
        n: the Hessian is ``n x n``.
        nnz: number of stored entries of the pattern.
        rows, cols: int32 coordinates of the stored entries, row-major sorted.
        recover_color, recover_index: int32 arrays of length ``nnz`` as described above.
        argnums: the ``argnums`` the pattern was detected for (``None`` when unknown, as for
            a coloring of a given pattern).
        inputs: the differentiated inputs it was detected for, as a pytree of
            ``jax.ShapeDtypeStruct`` shaped like ``jax.hessian``'s ``argnums`` selection
            (``None`` when unknown); functions built from the coloring refuse other shapes.
        mode: the HVP mode it was built for (``None``: the default, ``"fwd_over_rev"``).
    """

    def __init__(
        self,
        csr: sp.csr_array,
        colors: np.ndarray,
        method: Method,
        order: str,
        *,
        pattern=None,
        recovery: tuple[np.ndarray, np.ndarray] | None = None,
        argnums: int | tuple[int, ...] | None = None,
        inputs: Any = None,
        mode: str | None = None,
    ):
        self.csr = csr
        self.argnums = argnums
        self.inputs = inputs
        self.mode = mode
        self.pattern = csr if pattern is None else pattern
        self.method = method
        self.order = order
        self.colors = np.asarray(colors, dtype=np.int32)
        self.n = shape_of(csr)[0]
        self.nnz = csr.nnz
        self.num_colors = int(self.colors.max(initial=-1)) + 1
        self.rows = entry_rows(csr.indptr)
        self.cols = csr.indices
        self.substitution = None
        if method == "acyclic":
            self.substitution = Substitution.build(csr, self.colors, self.num_colors)
            recovery = _direct_part(self.substitution, self.n)
        elif recovery is None:
            recovery = _recovery(csr, self.rows, self.colors, method)
        self.recover_color, self.recover_index = recovery
        self._flat_index = self.recover_color.astype(np.int64) * self.n + self.recover_index
        for array in (self.colors, self.rows, self.recover_color, self.recover_index):
            array.flags.writeable = False
        self._keys = None
        self._steps = None
        self._decompress_compiled = None

    def __repr__(self) -> str:
        return (
            f"ColoredPattern(n={self.n}, nnz={self.nnz}, method={self.method!r}, "
            f"order={self.order!r}, num_colors={self.num_colors})"
        )

    def entry_index(self, rows, cols) -> np.ndarray:
        """The position ``k`` of each entry ``(rows[m], cols[m])`` among the stored entries.

        ``-1`` marks entries outside the pattern (structural zeros). With ``k >= 0`` the
        entry is ``B[recover_color[k], recover_index[k]]``. Cost O(m log nnz).

        Args:
            rows: int array of row indices, any shape.
            cols: int array of column indices, broadcastable with ``rows``.

        Returns:
            int64 array of the broadcast shape.
        """
        rows, cols = np.broadcast_arrays(np.asarray(rows, np.int64), np.asarray(cols, np.int64))
        if self._keys is None:
            self._keys = self.rows.astype(np.int64) * self.n + self.cols
        found, position = lookup(self._keys, rows * self.n + cols)
        return np.where(found, position, -1)

    def seeds(self, dtype=np.float64) -> np.ndarray:
        """The seed matrix S^T: row ``c`` is the indicator of the columns of color ``c``.

        Dense, shape ``(num_colors, n)``; meant for small ``n``. ``B = (H @ S).T``.
        """
        seeds = np.zeros((self.num_colors, self.n), dtype=dtype)
        colored = np.flatnonzero(self.colors >= 0)
        seeds[self.colors[colored], colored] = 1
        return seeds

    def decompress_data(self, compressed):
        """The Hessian's stored entries in pattern order, read from the compressed matrix.

        A gather with constant index arrays: jit-able and differentiable in
        ``compressed``. Cost O(nnz). For an ``"acyclic"`` coloring the off-diagonal
        entries are solved by substitution, also O(nnz): on a numpy ``B`` a host loop
        over the forest edges leaves first; on a jax ``B`` (traced or not) prefix sums,
        run on CPU by one compiled loop inside the program (``_native``) and elsewhere
        by a gather, a cumulative sum and two gathers, with rounding errors that grow
        with the size of the trees (see the coloring guide for float32).

        Args:
            compressed: ``B``, shape ``(num_colors, n)``, ``B[c] = H @ s_c``.

        Returns:
            Length ``nnz``, ``H[rows[k], cols[k]]`` at position ``k``: a numpy array for a
            numpy ``compressed``, otherwise a jax array.
        """
        self._require_full_recovery("decompress_data")
        compressed = self._check_compressed(compressed)
        if isinstance(compressed, np.ndarray):
            if self.substitution is not None:
                return self.substitution.solve(compressed)
            return compressed.reshape(-1)[self._flat_index]
        if not isinstance(compressed, jax.core.Tracer):
            # A concrete jax B: one compiled call. Op by op, its gathers and reshapes took
            # ~0.5 ms of a 0.86 ms unjitted sparse_hessian(f, x)(x) (GENROSE, n = 1e4;
            # jitted, the call takes 0.16 ms).
            if self._decompress_compiled is None:
                self._decompress_compiled = jax.jit(self._decompress_jax)
            return self._decompress_compiled(compressed)
        return self._decompress_jax(compressed)

    def _decompress_jax(self, compressed: jax.Array) -> Any:
        if self.substitution is None:
            return take(compressed.reshape(-1), self._flat_index)
        native = _native_module()
        if native is None:
            return self.substitution.solve(compressed)
        if self._steps is None:
            width = self.num_colors * self.n
            self._steps = native.Steps(self.nnz, width, self.substitution)
        return native.recover(compressed, self._steps, self.substitution.solve)

    def decompress_diagonal(self, compressed):
        """The Hessian's diagonal, read from the compressed matrix (any method).

        Diagonal positions outside the pattern are 0. Jit-able and differentiable.

        Args:
            compressed: ``B``, shape ``(num_colors, n)``.

        Returns:
            Shape ``(n,)``: a numpy array for a numpy ``compressed``, otherwise a jax array.
        """
        compressed = self._check_compressed(compressed)
        on_diagonal = self.rows == self.cols
        vertices = self.rows[on_diagonal]
        values = compressed[self.colors[vertices], vertices]
        if isinstance(compressed, np.ndarray):
            diagonal = np.zeros(self.n, compressed.dtype)
            diagonal[vertices] = values
            return diagonal
        return jnp.zeros(self.n, compressed.dtype).at[vertices].set(values)

    def decompress(self, compressed, format: Format = "csr"):
        """The Hessian rebuilt from its compressed form.

        Sparse outputs have exactly the pattern's coordinates (explicit zeros kept), in
        the same order at every call. Cost O(nnz), plus O(n^2) for dense outputs.

        Args:
            compressed: ``B``, shape ``(num_colors, n)``, ``B[c] = H @ s_c``.
            format: ``"csr"``, ``"csc"``, ``"coo"`` (scipy sparse arrays), ``"numpy"``
                (dense numpy array), ``"dense"`` (dense jax array) or ``"bcoo"``
                (``jax.experimental.sparse.BCOO``), or asdex's names (``"scipy_csr"``,
                ``"scipy_csc"``, ``"scipy_coo"``, ``"numpy_dense"``). ``"dense"`` and
                ``"bcoo"`` are jit-able.

        Returns:
            The ``n x n`` Hessian in the requested format.
        """
        return pattern_output(self.decompress_data(compressed), self.csr, format)

    def save(self, path: str | os.PathLike) -> None:
        """Write the colored pattern to ``path`` as an uncompressed ``.npz`` file.

        The file holds the CSR structure, colors and recovery arrays (about
        ``4 * (n + 4 * nnz)`` bytes), and ``argnums``, ``mode`` and ``inputs`` (inputs made
        of dicts, lists and tuples of arrays; other pytrees are not recorded); ``load``
        restores it without recoloring.
        """
        with open(path, "wb") as file:
            np.savez(
                file,
                version=np.int64(_FILE_VERSION),
                n=np.int64(self.n),
                indptr=self.csr.indptr,
                indices=self.csr.indices,
                colors=self.colors,
                method=np.str_(self.method),
                order=np.str_(self.order),
                recover_color=self.recover_color,
                recover_index=self.recover_index,
                record=np.str_(json.dumps(self._record())),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ColoredPattern":
        """Read a colored pattern written by ``save``; ``pattern`` becomes the CSR array."""
        with np.load(path, allow_pickle=False) as file:
            version = int(file["version"])
            if version != _FILE_VERSION:
                raise ValueError(
                    f"{os.fspath(path)!r} has colored-pattern file version {version}; this "
                    f"lazyhess reads version {_FILE_VERSION}. Recolor and save again."
                )
            n = int(file["n"])
            data = np.ones(len(file["indices"]), dtype=bool)
            csr = sp.csr_array((data, file["indices"], file["indptr"]), shape=(n, n))
            record = json.loads(str(file["record"])) if "record" in file.files else {}
            argnums = record.get("argnums")
            return cls(
                csr,
                file["colors"],
                cast(Method, str(file["method"])),
                str(file["order"]),
                recovery=(file["recover_color"], file["recover_index"]),
                argnums=tuple(argnums) if isinstance(argnums, list) else argnums,
                inputs=_decode_inputs(record.get("inputs")),
                mode=record.get("mode"),
            )

    def _record(self) -> dict:
        try:
            inputs = _encode_inputs(self.inputs)
        except TypeError:
            inputs = None
        return {"argnums": self.argnums, "mode": self.mode, "inputs": inputs}

    def _require_full_recovery(self, caller: str) -> None:
        if self.method == "diagonal" and np.any(self.recover_color < 0):
            raise ValueError(
                f"{caller} needs every entry of the pattern, but a 'diagonal' coloring "
                f"recovers only the diagonal and this pattern has off-diagonal entries. "
                f"Use decompress_diagonal, or color with method='star' or 'column'."
            )

    def _check_compressed(self, compressed):
        if not isinstance(compressed, np.ndarray):
            compressed = jnp.asarray(compressed)
        if compressed.shape != (self.num_colors, self.n):
            raise ValueError(
                f"the compressed Hessian must have shape (num_colors, n) = "
                f"{(self.num_colors, self.n)}; got {compressed.shape}"
            )
        return compressed


@functools.cache
def _native_module() -> Any:
    """``_native`` (recovery on CPU in one compiled loop), or None without numba.

    A jax whose FFI refuses the target (a future API version) also gets None, with a
    warning: recovery then runs in XLA's own gather and scan, correct but slower.
    """
    try:
        from . import _native
    except ImportError:
        return None
    except RuntimeError as error:
        warnings.warn(
            f"lazyhess could not register its CPU recovery loop with XLA ({error}); "
            "decompression falls back to XLA's gather, which is slower.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _native


def _direct_part(substitution: Substitution, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``recover_color`` and ``recover_index`` of an acyclic coloring: -1 where solved."""
    direct = substitution.direct
    color = np.where(direct, substitution.source // max(n, 1), -1).astype(np.int32)
    index = np.where(direct, substitution.source % max(n, 1), -1).astype(np.int32)
    return color, index


def _encode_inputs(tree: Any) -> Any:
    """JSON for a pytree of ``jax.ShapeDtypeStruct`` in dicts, lists and tuples.

    Raises:
        TypeError: for any other pytree node.
    """
    if tree is None or isinstance(tree, jax.ShapeDtypeStruct):
        return None if tree is None else {"shape": list(tree.shape), "dtype": str(tree.dtype)}
    if isinstance(tree, dict) and all(isinstance(k, str | int) for k in tree):
        return {"dict": [[k, _encode_inputs(v)] for k, v in tree.items()]}
    if type(tree) in (list, tuple):
        return {type(tree).__name__: [_encode_inputs(v) for v in tree]}
    raise TypeError(f"cannot record {type(tree).__name__} inputs")


def _decode_inputs(data: Any) -> Any:
    """The inverse of ``_encode_inputs``."""
    if data is None:
        return None
    if "shape" in data:
        return jax.ShapeDtypeStruct(tuple(data["shape"]), jnp.dtype(data["dtype"]))
    if "dict" in data:
        return {k: _decode_inputs(v) for k, v in data["dict"]}
    kind = tuple if "tuple" in data else list
    return kind(_decode_inputs(v) for v in data[kind.__name__])


def _transpose_perm(csr: sp.csr_array) -> np.ndarray:
    """For each stored entry (i, j) of a symmetric pattern, the position of (j, i).

    Equivalently, the CSR positions in column-major order. Cost O(nnz + n).
    """
    positions = np.arange(csr.nnz, dtype=np.int32)
    return sp.csr_array((positions, csr.indices, csr.indptr), shape=csr.shape).tocsc().data


def _recovery(
    csr: sp.csr_array, rows: np.ndarray, colors: np.ndarray, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    """Where each stored entry is read in the compressed matrix; see ``ColoredPattern``.

    Raises:
        RuntimeError: if ``colors`` cannot recover some entry that ``method`` promises
            (a bug in the coloring, never a user error).
    """
    cols = csr.indices
    if method == "diagonal":
        on_diagonal = rows == cols
        recover_color = np.where(on_diagonal, colors[rows], -1).astype(np.int32)
        recover_index = np.where(on_diagonal, rows, -1).astype(np.int32)
        valid = _greedy.unique_in_row(csr.indptr, cols, colors)[on_diagonal]
    else:
        # forward[k]: colors[j] is alone in row i, so H[i, j] = B[colors[j], i].
        forward = _greedy.unique_in_row(csr.indptr, cols, colors)
        if method == "column":
            use_forward, valid = np.ones(csr.nnz, dtype=bool), forward
        else:
            # backward[k]: colors[i] is alone in row j, so H[i, j] = H[j, i] = B[colors[i], j].
            # Entry (i, j) with i <= j decides; its mirror reads the same element.
            backward = forward[_transpose_perm(csr)]
            use_forward = np.where(rows <= cols, forward, ~backward)
            valid = np.where(use_forward, forward, backward)
        recover_color = np.where(use_forward, colors[cols], colors[rows]).astype(np.int32)
        recover_index = np.where(use_forward, rows, cols).astype(np.int32)
    if not np.all(valid):
        k = int(np.argmin(valid))
        raise RuntimeError(
            f"internal error: the {method} coloring does not recover entry number {k} of "
            f"the pattern; please report this with the pattern"
        )
    return recover_color, recover_index
