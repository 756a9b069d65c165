"""Choosing the seed directions that a request for Hessian entries needs."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where every requested entry comes from.

    Slots number the directions a request reads: first the cached ones (``reused``), then
    the ones to compute (``new``). Entry ``e`` is ``R[slot[e]][p[e], other[e]]`` where ``R[s]``
    is the ``(p, n)`` HVP result of slot ``s``'s direction.
    """

    reused: np.ndarray
    new: np.ndarray
    slot: np.ndarray
    other: np.ndarray

    @property
    def directions(self) -> np.ndarray:
        """Direction ids by slot."""
        return np.concatenate([self.reused, self.new])


def _members(index: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``index`` (values in ``[0, n)``), in O(size + n)."""
    mark = np.zeros(n, dtype=bool)
    mark[index] = True
    return np.flatnonzero(mark)


def plan_unit(rows: np.ndarray, cols: np.ndarray, cached: np.ndarray) -> Plan:
    """Unit seed directions covering the entries ``(rows[e], cols[e])`` of a symmetric H.

    Direction ``j`` (seed ``e_j``) yields column ``j``, and by symmetry row ``j``, so an entry
    is covered by either of its indices. Entries already covered by a ``cached`` direction
    are free; the rest are covered by their distinct columns or their distinct rows,
    whichever are fewer: ``min(|I|, |J|)`` new directions at most.

    Args:
        rows: flat row index of each entry (1-D).
        cols: flat column index of each entry (1-D).
        cached: boolean mask over the flat indices of directions already cached.
    """
    n = cached.shape[0]
    by_col = cached[cols]
    by_row = ~by_col & cached[rows]
    open_ = ~(by_col | by_row)
    open_rows = _members(rows[open_], n)
    open_cols = _members(cols[open_], n)
    if open_cols.size <= open_rows.size:
        new, by_col = open_cols, by_col | open_
    else:
        new, by_row = open_rows, by_row | open_
    source = np.where(by_col, cols, rows)
    other = np.where(by_col, rows, cols)
    is_new = np.zeros(n, dtype=bool)
    is_new[new] = True
    reused = _members(source[~is_new[source]], n)
    slot_of = np.full(n, -1, dtype=np.intp)
    slot_of[reused] = np.arange(reused.size)
    slot_of[new] = reused.size + np.arange(new.size)
    return Plan(reused=reused, new=new, slot=slot_of[source], other=other)
