"""The symmetric boolean sparsity pattern of a Hessian, stored in CSR form."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .._csr import entry_rows, sorted_unique

_FORMAT_VERSION = 1


def _canonical_csr(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, duplicate-free CSR arrays (indptr, indices) of the coordinates (rows, cols)."""
    keys = (
        sorted_unique(rows.astype(np.int64) * n + cols.astype(np.int64))
        if n
        else np.zeros(0, np.int64)
    )
    r, c = np.divmod(keys, n) if n else (keys, keys)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    return indptr, c


def _first_asymmetric(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[int, int] | None:
    """An entry (i, j) whose mirror (j, i) is missing, or None when the pattern is symmetric."""
    rows = entry_rows(indptr, np.int64)
    keys = rows * n + indices
    mirror = indices * n + rows
    present = np.isin(mirror, keys, assume_unique=True)
    if present.all():
        return None
    k = int(np.flatnonzero(~present)[0])
    return int(rows[k]), int(indices[k])


def _leaf_offsets(leaf_offsets: Sequence[int] | None, n: int) -> tuple[int, ...] | None:
    """``leaf_offsets`` as a tuple, checked to rise from 0 to ``n``."""
    if leaf_offsets is None:
        return None
    offsets = tuple(int(o) for o in leaf_offsets)
    if (
        offsets[0] != 0
        or offsets[-1] != n
        or any(a > b for a, b in zip(offsets, offsets[1:], strict=False))
    ):
        raise ValueError(f"leaf_offsets must rise from 0 to n={n}; got {offsets}.")
    return offsets


class SparsityPattern:
    """The set of structurally nonzero entries of a symmetric N×N Hessian.

    Stored as CSR arrays with sorted column indices and no duplicates: ``indptr`` (N+1) and
    ``indices`` (nnz). Memory and every conversion cost O(N + nnz). Patterns built by
    `hessian_sparsity` also know the flat offsets of the input leaves, so ``block(i, j)``
    selects the block of leaves i and j.

    Example:
        >>> p = SparsityPattern.from_coordinates([0, 1, 1], [1, 0, 1], 2)
        >>> p
        SparsityPattern(n=2, nnz=3, density=7.5e-01)
        >>> p.row_indices(1).tolist()
        [0, 1]
    """

    __slots__ = ("_n", "_indptr", "_indices", "_leaf_offsets", "_rows", "_hash", "_full")

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        n: int,
        *,
        leaf_offsets: Sequence[int] | None = None,
        _trusted: bool = False,
    ):
        """Wraps canonical CSR arrays; prefer the ``from_*`` constructors.

        Args:
            indptr: row pointers, length ``n + 1``.
            indices: column indices, sorted within each row, no duplicates.
            n: the matrix is ``n × n``.
            leaf_offsets: optional flat offsets of input leaves (first 0, last ``n``).
            _trusted: skip validation (internal use).
        """
        n = int(n)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        if not _trusted:
            if n < 0:
                raise ValueError(f"n must be non-negative; got n={n}.")
            if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise ValueError(
                    f"indptr must be a non-decreasing array of length n + 1 = {n + 1} starting "
                    f"at 0; got shape {indptr.shape}."
                )
            if indices.shape != (int(indptr[-1]),):
                raise ValueError(
                    f"indices must have length indptr[-1] = {int(indptr[-1])}; "
                    f"got {indices.shape}."
                )
            if indices.size and (indices.min() < 0 or indices.max() >= n):
                raise ValueError(f"column indices must lie in [0, {n}).")
            rows = entry_rows(indptr, np.int64)
            keys = rows * n + indices
            if keys.size and np.any(np.diff(keys) <= 0):
                indptr, indices = _canonical_csr(rows, indices, n)
            bad = _first_asymmetric(indptr, indices, n)
            if bad is not None:
                raise ValueError(
                    f"pattern is not symmetric: entry {bad} is present but "
                    f"{bad[::-1]} is not; pass symmetrize=True to add the transpose."
                )
        self._n = n
        self._indptr = indptr
        self._indices = indices
        self._leaf_offsets = _leaf_offsets(leaf_offsets, n)
        self._rows = None
        self._hash = None
        self._full = False
        indptr.setflags(write=False)
        indices.setflags(write=False)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_coordinates(
        cls, rows: Any, cols: Any, n: int, *, symmetrize: bool = False
    ) -> SparsityPattern:
        """The pattern with nonzeros at ``(rows[k], cols[k])``; duplicates are merged.

        Args:
            rows: integer row indices.
            cols: integer column indices, same length as ``rows``.
            n: the matrix is ``n × n``.
            symmetrize: add the transpose instead of raising on an asymmetric entry.

        Raises:
            TypeError: if the indices are not integers.
            ValueError: on mismatched lengths, out-of-range indices or an asymmetric entry
                without ``symmetrize=True``.
        """
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        for name, a in (("rows", rows), ("cols", cols)):
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{name} must hold integers; got dtype {a.dtype}.")
        rows = rows.astype(np.int64).ravel()
        cols = cols.astype(np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(
                f"rows and cols must have the same length; got {rows.size} and {cols.size}."
            )
        n = int(n)
        for name, a in (("rows", rows), ("cols", cols)):
            if a.size and (a.min() < 0 or a.max() >= n):
                raise ValueError(
                    f"{name} must lie in [0, {n}); got values in [{a.min()}, {a.max()}]."
                )
        if symmetrize:
            rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        indptr, indices = _canonical_csr(rows, cols, n)
        return cls(indptr, indices, n)

    @classmethod
    def dense(cls, n: int, *, leaf_offsets: Sequence[int] | None = None) -> SparsityPattern:
        """The pattern with every entry nonzero, built in O(1).

        Its CSR arrays (N² indices) are made only if someone reads them; ``nnz``,
        ``density`` and ``is_dense`` are known without them, so a caller can switch to
        dense evaluation for free.

        Example:
            >>> SparsityPattern.dense(3)
            SparsityPattern(n=3, nnz=9, density=1.0e+00)
        """
        pattern = cls.__new__(cls)
        pattern._n = int(n)
        pattern._indptr = pattern._indices = pattern._rows = pattern._hash = None
        pattern._leaf_offsets = _leaf_offsets(leaf_offsets, pattern._n)
        pattern._full = True
        return pattern

    @classmethod
    def from_dense(cls, matrix: Any, *, symmetrize: bool = False) -> SparsityPattern:
        """The pattern of the nonzero entries of a square dense array."""
        a = np.asarray(matrix)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"expected a square 2-D array; got shape {a.shape}.")
        r, c = np.nonzero(a)
        return cls.from_coordinates(r, c, a.shape[0], symmetrize=symmetrize)

    @classmethod
    def from_scipy(cls, matrix: Any, *, symmetrize: bool = False) -> SparsityPattern:
        """The pattern of the stored nonzero entries of a square scipy sparse array/matrix."""
        if not sp.issparse(matrix):
            raise TypeError(
                f"expected a scipy sparse array or matrix; got {type(matrix).__name__}."
            )
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix; got shape {matrix.shape}.")
        coo = sp.coo_array(matrix)
        keep = coo.data != 0
        return cls.from_coordinates(
            coo.row[keep], coo.col[keep], matrix.shape[0], symmetrize=symmetrize
        )

    @classmethod
    def from_bcoo(cls, matrix: Any, *, symmetrize: bool = False) -> SparsityPattern:
        """The pattern of the stored nonzero entries of a square 2-D ``BCOO`` array."""
        if (
            getattr(matrix, "n_batch", 0)
            or getattr(matrix, "n_dense", 0)
            or not hasattr(matrix, "indices")
        ):
            raise TypeError(
                "expected a jax.experimental.sparse.BCOO with n_batch=0 and n_dense=0; "
                f"got {type(matrix).__name__}."
            )
        shape = tuple(matrix.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"expected a square matrix; got shape {shape}.")
        idx = np.asarray(matrix.indices)
        data = np.asarray(matrix.data)
        keep = (data != 0) & np.all(idx < shape[0], axis=1)
        return cls.from_coordinates(idx[keep, 0], idx[keep, 1], shape[0], symmetrize=symmetrize)

    # ------------------------------------------------------------------ attributes

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, N)``."""
        return (self._n, self._n)

    @property
    def n(self) -> int:
        """N, the number of flat inputs."""
        return self._n

    @property
    def nnz(self) -> int:
        """The number of structurally nonzero entries (both triangles and the diagonal)."""
        return self._n**2 if self._full else int(self.indices.size)

    @property
    def density(self) -> float:
        """``nnz / N²`` (0 for an empty matrix)."""
        return self.nnz / self._n**2 if self._n else 0.0

    @property
    def is_dense(self) -> bool:
        """Whether every entry is nonzero (``nnz == N²``): dense evaluation is the better way.

        Known in O(1), also for `SparsityPattern.dense` patterns whose arrays were never made.
        """
        return self.nnz == self._n**2

    @property
    def indptr(self) -> np.ndarray:
        """CSR row pointers (read-only int64, length N + 1)."""
        if self._indptr is None:
            self._materialize()
        return self._indptr

    @property
    def indices(self) -> np.ndarray:
        """CSR column indices, sorted within each row (read-only int64, length nnz)."""
        if self._indices is None:
            self._materialize()
        return self._indices

    def _materialize(self) -> None:
        """Builds the CSR arrays of a `SparsityPattern.dense` pattern (O(N²))."""
        n = self._n
        indptr = np.arange(n + 1, dtype=np.int64) * n
        indices = np.tile(np.arange(n, dtype=np.int64), n)
        indptr.setflags(write=False)
        indices.setflags(write=False)
        self._indptr, self._indices = indptr, indices

    @property
    def rows(self) -> np.ndarray:
        """Row index of every nonzero, row-major order (read-only int64)."""
        if self._rows is None:
            rows = entry_rows(self.indptr, np.int64)
            rows.setflags(write=False)
            self._rows = rows
        return self._rows

    @property
    def cols(self) -> np.ndarray:
        """Column index of every nonzero, row-major order (same array as ``indices``)."""
        return self.indices

    @property
    def leaf_offsets(self) -> tuple[int, ...] | None:
        """Flat offsets of the input leaves (``len(leaves) + 1`` values), when known."""
        return self._leaf_offsets

    def row_indices(self, i: int) -> np.ndarray:
        """The columns j with (i, j) nonzero (a read-only view, sorted). O(1)."""
        i = int(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"row {i} is out of range for n={self._n}.")
        i %= self._n
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    # ----------------------------------------------------------------- conversions

    def to_dense(self) -> np.ndarray:
        """The pattern as an N×N boolean NumPy array. O(N²) memory."""
        out = np.zeros((self._n, self._n), dtype=bool)
        out[self.rows, self.indices] = True
        return out

    def to_scipy(self, format: Literal["csr", "csc", "coo"] = "csr") -> sp.sparray:
        """The pattern as a boolean scipy sparse array in ``format`` ("csr", "csc" or "coo")."""
        if format not in ("csr", "csc", "coo"):
            raise ValueError(f"format must be one of 'csr', 'csc', 'coo'; got {format!r}.")
        a = sp.csr_array(
            (np.ones(self.nnz, bool), self.indices.copy(), self.indptr.copy()),
            shape=self.shape,
        )
        return a.asformat(format)

    def to_bcoo(self) -> Any:
        """The pattern as a boolean ``jax.experimental.sparse.BCOO`` (sorted, unique)."""
        import jax.numpy as jnp
        from jax.experimental import sparse as jsparse

        idx = np.stack([self.rows, self.indices], axis=1)
        return jsparse.BCOO(
            (jnp.ones(self.nnz, bool), jnp.asarray(idx)),
            shape=self.shape,
            indices_sorted=True,
            unique_indices=True,
        )

    def block(self, rows: int | slice, cols: int | slice) -> sp.csr_array:
        """The sub-pattern for a row range and a column range, as a boolean scipy CSR array.

        Args:
            rows: a slice of flat rows, or an int selecting an input leaf (its flat range
                from ``leaf_offsets``, recorded when the pattern comes from a function).
            cols: same, for columns.

        Returns:
            A (possibly rectangular) ``scipy.sparse.csr_array`` of booleans. Cost
            O(rows selected + nnz in them).
        """
        r = self._range(rows, "rows")
        c = self._range(cols, "cols")
        lo, hi = self.indptr[r.start], self.indptr[r.stop]
        band = sp.csr_array(
            (
                np.ones(int(hi - lo), bool),
                self.indices[lo:hi].copy(),
                self.indptr[r.start : r.stop + 1] - lo,
            ),
            shape=(r.stop - r.start, self._n),
        )
        return band[:, c]

    def _range(self, key: int | slice, name: str) -> slice:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if step != 1:
                raise ValueError(f"{name} must be a contiguous slice (step 1); got step {step}.")
            return slice(start, max(start, stop))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if self._leaf_offsets is None:
                raise ValueError(
                    f"{name}={key} selects an input leaf, but this pattern has no leaf "
                    "offsets; pass a slice of flat indices instead."
                )
            nleaves = len(self._leaf_offsets) - 1
            if not -nleaves <= key < nleaves:
                raise IndexError(f"leaf {key} is out of range for {nleaves} leaves.")
            key %= nleaves
            return slice(self._leaf_offsets[key], self._leaf_offsets[key + 1])
        raise TypeError(f"{name} must be an int (leaf) or a slice; got {type(key).__name__}.")

    # ------------------------------------------------------------------- protocol

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparsityPattern):
            return NotImplemented
        if self._n != other._n or self.nnz != other.nnz:
            return False
        return (self._full and other._full) or (
            np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self._n, self.indptr.tobytes(), self.indices.tobytes()))
        return self._hash

    def __repr__(self) -> str:
        return f"SparsityPattern(n={self._n}, nnz={self.nnz}, density={self.density:.1e})"

    # --------------------------------------------------------------------- storage

    def save(self, path: str | os.PathLike) -> None:
        """Writes the pattern (and leaf offsets) to an ``.npz`` file."""
        extra = {}
        if self._leaf_offsets is not None:
            extra["leaf_offsets"] = np.asarray(self._leaf_offsets, np.int64)
        np.savez(
            path,
            format_version=np.int64(_FORMAT_VERSION),
            n=np.int64(self._n),
            indptr=self.indptr,
            indices=self.indices,
            **extra,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SparsityPattern:
        """Reads a pattern written by `save`, validating it."""
        with np.load(path) as f:
            if "format_version" not in f or int(f["format_version"]) != _FORMAT_VERSION:
                raise ValueError(f"{os.fspath(path)!r} is not a lazyhess sparsity pattern file.")
            offsets = f["leaf_offsets"].tolist() if "leaf_offsets" in f else None
            return cls(f["indptr"], f["indices"], int(f["n"]), leaf_offsets=offsets)
