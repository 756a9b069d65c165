"""Boolean dependency matrices and the structural maps that move them between variables.

A dependency matrix ``D`` of a variable with m elements is an m×N boolean CSR array: row e
holds the flat inputs that element e depends on to first order. A map describes the local
first-order structure of one operand of an operation: which operand elements each output
element depends on. Each map moves dependency rows forward (`apply`) and output liveness
backward (`pull`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._csr import shape_of, sorted_unique


def csr(indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int]) -> sp.csr_array:
    """A boolean CSR array from its index arrays, without copies or checks."""
    a = sp.csr_array((np.ones(indices.size, bool), indices, indptr), shape=shape, copy=False)
    return a


def identity_rows(n_total: int, start: int, size: int) -> sp.csr_array:
    """The dependency matrix of inputs ``start .. start + size`` of ``n_total`` flat inputs."""
    return csr(
        np.arange(size + 1, dtype=np.int64),
        np.arange(start, start + size, dtype=np.int64),
        (size, n_total),
    )


def take_rows(d: sp.csr_array, idx: np.ndarray | None) -> sp.csr_array:
    """Rows ``idx`` of ``d`` (an index of -1 gives an empty row). O(len(idx) + nnz taken)."""
    if idx is None:
        return d
    indptr = d.indptr
    if idx.size >= indptr.size:  # many rows taken: one gather from a table of lengths
        table = np.zeros(indptr.size, np.int64)  # its last entry answers for -1
        table[:-1] = np.diff(indptr)
        lens = table[idx]
    else:
        safe = np.maximum(idx, 0)
        lens = np.where(idx >= 0, indptr[safe + 1] - indptr[safe], 0)
    new_indptr = np.zeros(idx.size + 1, np.int64)
    np.cumsum(lens, out=new_indptr[1:])
    total = int(new_indptr[-1])
    if total == 0:
        return csr(new_indptr, np.zeros(0, np.int64), (idx.size, shape_of(d)[1]))
    hit = np.flatnonzero(lens)  # often few: the rows with entries
    starts = indptr[idx[hit]].astype(np.int64) - new_indptr[hit]
    offs = np.repeat(starts, lens[hit]) + np.arange(total, dtype=np.int64)
    return csr(new_indptr, d.indices[offs], (idx.size, shape_of(d)[1]))


def union(mats: list[sp.csr_array | None]) -> sp.csr_array | None:
    """Elementwise OR of equally shaped dependency matrices (None for an empty list)."""
    present = [m for m in mats if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out + m
    return out


def row_counts(d: sp.csr_array) -> np.ndarray:
    """The number of inputs each row of ``d`` depends on (int64)."""
    return np.diff(d.indptr).astype(np.int64)


def row_union(d: sp.csr_array) -> np.ndarray:
    """The sorted set of columns used by any row of ``d``."""
    return sorted_unique(d.indices)


class IndexMap:
    """Output element e depends on operand element ``idx[e]`` only (none where -1).

    ``idx=None`` is the identity. Covers elementwise operations, broadcasting, reshapes,
    slicing, transposes, padding and gathers with known indices.
    """

    __slots__ = ("idx",)

    def __init__(self, idx: np.ndarray | None):
        self.idx = None if idx is None else np.asarray(idx, dtype=np.int64).ravel()

    def apply(self, d: sp.csr_array) -> sp.csr_array:
        return take_rows(d, self.idx)

    def bound(self, d: sp.csr_array, limit: int | None = None) -> int:
        """The stored entries of ``apply(d)``, from the row counts alone.

        Counting stops once past ``limit`` (the result then only exceeds it). O(len(idx)),
        or O(limit) for a map past it: a broadcast far over the budget is not counted whole.
        """
        counts = np.append(row_counts(d), 0)  # index -1 reads the 0
        if self.idx is None:
            return int(counts.sum())
        step = self.idx.size if limit is None else max(limit, 2**16)
        total = 0
        for start in range(0, self.idx.size, max(step, 1)):
            total += int(counts[self.idx[start : start + step]].sum())
            if limit is not None and total > limit:
                break
        return total

    def pull(self, live_out: np.ndarray, live_in: np.ndarray) -> None:
        if self.idx is None:
            live_in |= live_out
        else:
            sel = self.idx[live_out]
            live_in[sel[sel >= 0]] = True


class MatrixMap:
    """Output element e depends on the operand elements in row e of the boolean CSR ``mat``."""

    __slots__ = ("mat",)

    def __init__(self, mat: sp.csr_array):
        self.mat = mat

    def apply(self, d: sp.csr_array) -> sp.csr_array:
        return self.mat @ d

    def bound(self, d: sp.csr_array, limit: int | None = None) -> int:  # noqa: ARG002
        """An upper bound on the stored entries of ``apply(d)`` (rows counted with repeats).

        O(entries of ``mat``), computing no product; ``limit`` is not used.
        """
        uses = np.bincount(self.mat.indices, minlength=shape_of(self.mat)[1])
        return int(uses @ row_counts(d))

    def pull(self, live_out: np.ndarray, live_in: np.ndarray) -> None:
        live_in[take_rows(self.mat, np.flatnonzero(live_out)).indices] = True


class GroupMap:
    """Output element e depends on every operand element i with ``g_in[i] == g_out[e]``.

    Groups model reductions onto a broadcast (sort along an axis, operations with unknown
    indices, the conservative rule: one group holding everything). -1 means no group.
    """

    __slots__ = ("g_in", "g_out", "ngroups")

    def __init__(self, g_in: np.ndarray, g_out: np.ndarray, ngroups: int):
        self.g_in = np.asarray(g_in, dtype=np.int64).ravel()
        self.g_out = np.asarray(g_out, dtype=np.int64).ravel()
        self.ngroups = int(ngroups)

    @classmethod
    def everything(cls, m_in: int, m_out: int) -> GroupMap:
        """Every output element depends on every operand element."""
        return cls(np.zeros(m_in, np.int64), np.zeros(m_out, np.int64), 1)

    def apply(self, d: sp.csr_array) -> sp.csr_array:
        keep = np.flatnonzero(self.g_in >= 0)
        gather = sp.csr_array(
            (np.ones(keep.size, bool), (self.g_in[keep], keep)),
            shape=(self.ngroups, self.g_in.size),
        )
        return take_rows(gather @ d, self.g_out)

    def bound(self, d: sp.csr_array, limit: int | None = None) -> int:  # noqa: ARG002
        """An upper bound on the stored entries of ``apply(d)``; ``limit`` is not used.

        O(operand + output size).
        """
        keep = self.g_in >= 0
        per_group = np.bincount(
            self.g_in[keep], weights=row_counts(d)[keep], minlength=self.ngroups
        )
        return int(per_group[self.g_out[self.g_out >= 0]].sum())

    def pull(self, live_out: np.ndarray, live_in: np.ndarray) -> None:
        hit = np.zeros(self.ngroups + 1, bool)
        hit[self.g_out[live_out]] = True
        hit[-1] = False
        live_in |= hit[self.g_in]
