"""CSR helpers shared by every layer: entry coordinates, rows' segments, sorted-key lookups.

The bottom of the house: it imports nothing of lazyhess, so the leaf packages
(``sparsity/``, ``coloring/``) and the modules above them can all use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def entry_rows(indptr: np.ndarray, dtype: Any = np.int32) -> np.ndarray:
    """The row index of every stored entry of a CSR structure, aligned with its indices.

    ``dtype=np.int64`` where the rows enter keys such as ``row * n + col``. Cost O(nnz).
    """
    return np.repeat(np.arange(len(indptr) - 1, dtype=dtype), np.diff(indptr))


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each query is among ``sorted_keys``, and its position there (if it is).

    Cost O(m log k) for ``m`` queries among ``k`` keys.
    """
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=bool), np.zeros(queries.shape, dtype=np.intp)
    at = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.size - 1)
    return sorted_keys[at] == queries, at


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``values`` (flattened), as ``np.unique(values)``.

    By a sort and one comparison: numpy 2.3+ finds ``np.unique``'s values by hashing
    before it sorts them, 13x slower on integers (3000 of them: 200 us against 15 us).
    """
    out = np.sort(values, axis=None)
    if out.size > 1:
        keep = np.empty(out.size, dtype=bool)
        keep[0] = True
        np.not_equal(out[1:], out[:-1], out=keep[1:])
        out = out[keep]
    return out


def segments(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the stored entries of ``rows`` (concatenated), and each row's count.

    Cost O(len(rows) + their stored entries).
    """
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.arange(shift.size, dtype=np.int64) + shift, counts


def shape_of(matrix: Any) -> tuple[int, int]:
    """The ``(rows, columns)`` of a scipy sparse matrix (its stubs leave ``shape`` optional)."""
    rows, cols = matrix.shape
    return int(rows), int(cols)
