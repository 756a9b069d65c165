"""What is known about a function's Hessian: its pattern and the seed families that fit it.

A :class:`Structure` is shared by every point of one function (``H.at`` reuses it). Each
part is computed on first need and says whether it is known yet, so a picture or a cost
estimate can report without triggering detection or coloring.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

import jax
import numpy as np
import scipy.sparse as sp
from cachetools import LRUCache

from ._csr import entry_rows, lookup, segments, sorted_unique
from ._progress import stage


@dataclasses.dataclass(eq=False)
class SeedFamily:
    """Seeds ``s_t = indicator(labels == t)`` over the flat columns (``-1``: in no seed).

    Unit vectors are the family with ``labels = arange(n)``; a coloring's colors, or a
    partial coloring of some columns, are others. ``(family, t)`` names seed ``t`` in the
    cache. A ``fixed`` family (a global coloring) is evaluated whole at every point, so its
    chunks are compiled at their exact size instead of padded. A partial family recovers
    the entries of its ``rows`` (sorted) in the columns it labels.
    """

    key: Hashable
    labels: np.ndarray
    unit: bool = False
    fixed: bool = False
    rows: np.ndarray | None = None
    size: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.size = int(self.labels.max(initial=-1)) + 1


def distinct(values: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``values`` (in ``[0, n)``).

    O(size log size) for a few values, O(size + n) with marks for many.
    """
    if values.size * 16 < n:
        return sorted_unique(values)
    mark = np.zeros(n, dtype=bool)
    mark[values] = True
    return np.flatnonzero(mark)


def distinct_inverse(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct values, inverse)`` of ``values`` in ``[0, n)``, as ``np.unique``.

    ``found[inverse] == values``. Marks instead of a sort when ``n`` is at most 16 times
    the count: O(size + n) instead of O(size log size) (a 3 ms sort for 1e5 values).
    """
    if values.size * 16 < n:
        found, inverse = np.unique(values, return_inverse=True)
        return found, inverse.reshape(-1)
    mark = np.zeros(n, dtype=bool)
    mark[values] = True
    return np.flatnonzero(mark), (np.cumsum(mark) - 1)[values]


class DiagonalReading(NamedTuple):
    """How the diagonal entries of some lines are read from one family's seeds.

    Entry ``inside[e]`` of the lines (``None``: every line) is ``B[slot[e], :, read[e]]``
    where ``B`` holds the products of ``family``'s seeds ``needed``.
    """

    family: SeedFamily
    needed: np.ndarray
    slot: np.ndarray
    read: np.ndarray
    inside: np.ndarray | None


_T = TypeVar("_T")
# Plans of requests at fresh points kept per pattern (see Structure.fresh_plan).
FRESH_PLANS = 16
FRESH_PLAN_LINES = 4096


def _frozen(value: _T) -> _T:
    """``value`` with every numpy array in it (through tuples and dataclasses) read-only."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for item in value:
            _frozen(item)
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            _frozen(getattr(value, field.name))
    return value


class Structure:
    """Where the flat ``n x n`` Hessian can be nonzero, and the seed families that fit it.

    ``source`` is ``None`` (every entry may be nonzero), a ``SparsityPattern``, or a
    callable returning one (detection, run on first need). The pattern, its colorings and
    the unit family are computed once and shared by every point of a function.
    ``unverified`` says the pattern is the user's and has not yet been checked against an
    HVP (the engine checks it on the first whole-Hessian request at a concrete point).
    """

    def __init__(self, n: int, source: Any = None, progress: bool = False, verify: bool = False):
        self.n = n
        self._source = source
        self.progress = progress
        self.unverified = verify
        self._device_labels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._diagonal_readings: dict[tuple[int, int], DiagonalReading | None] = {}
        self._fresh_plans: LRUCache = LRUCache(maxsize=FRESH_PLANS)
        self._plans_lock = threading.Lock()  # points in several threads share the plans

    @property
    def known(self) -> bool:
        """Whether the pattern is known without running detection."""
        return not callable(self._source) or "pattern" in self.__dict__

    @property
    def colored_known(self) -> bool:
        """Whether the global coloring has been computed."""
        return "colored" in self.__dict__

    @cached_property
    def pattern(self) -> Any:
        """The sparsity pattern, or ``None`` when every entry may be nonzero."""
        if not callable(self._source):
            return self._source
        with stage("detecting sparsity", self.progress):
            return self._source()

    @cached_property
    def csr(self) -> sp.csr_array | None:
        """The pattern as a boolean CSR array, or ``None`` when dense.

        A pattern with every entry (detection returns one when the Hessian is dense, in
        O(1)) is served by the dense engine: rows and columns of unit seeds, no planning.
        """
        pattern = self.pattern
        if pattern is None or pattern.is_dense:
            return None
        return sp.csr_array(pattern.to_scipy("csr"))

    @property
    def dense(self) -> bool:
        """Whether every entry may be nonzero."""
        return self.csr is None

    def describe(self) -> str:
        """What serves requests, for a repr: auto (not detected yet), dense or sparse."""
        if not self.known:
            return "auto (pattern not detected yet)"
        if self.pattern is None:
            return "dense"
        if self.dense:
            return "dense (detected: every entry may be nonzero)"
        return f"sparse (nnz={self.pattern.nnz})"

    @cached_property
    def stored_csr(self) -> sp.csr_array:
        """The pattern's CSR array, built also for a detected dense pattern when asked.

        Only a pattern stores entries: ``sparsity=None`` has none to color.
        """
        csr = self.csr
        if csr is not None:
            return csr
        if self.pattern is None:
            raise ValueError("sparsity=None has no pattern to color; pass a pattern or 'auto'.")
        return sp.csr_array(self.pattern.to_scipy("csr"))

    @cached_property
    def _indptr(self) -> np.ndarray:
        return self.stored_csr.indptr.astype(np.int64)

    @cached_property
    def _keys(self) -> np.ndarray:
        csr = self.stored_csr
        return entry_rows(csr.indptr, np.int64) * self.n + csr.indices.astype(np.int64)

    def row_entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, counts)`` of the stored entries of ``rows``; see :func:`segments`."""
        return segments(self._indptr, rows)

    def row_size(self, row: int) -> int:
        """How many entries row ``row`` stores (two reads: a row request asks it first)."""
        indptr = self._indptr
        return int(indptr[row + 1] - indptr[row])

    def positions(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The pattern position of each entry ``(rows[e], cols[e])``; ``-1`` outside it.

        Entries that share few rows (a request for whole rows) are placed through a
        table of those rows, at most 8 entries per request entry; others are looked up
        among the sorted stored keys, O(m log nnz).
        """
        few = distinct(rows, self.n)
        if few.size * self.n <= 8 * rows.size:
            table = np.full((few.size, self.n), -1, dtype=np.int64)
            at, counts = self.row_entries(few)
            table[np.repeat(np.arange(few.size), counts), self.stored_csr.indices[at]] = at
            return table[np.searchsorted(few, rows), cols]
        found, at = lookup(self._keys, rows.astype(np.int64) * self.n + cols)
        return np.where(found, at, -1)

    def position(self, row: int, col: int) -> int:
        """The pattern position of the entry ``(row, col)``; ``-1`` outside the pattern."""
        lo, hi = self._indptr[row], self._indptr[row + 1]
        at = lo + int(np.searchsorted(self.stored_csr.indices[lo:hi], col))
        return at if at < hi and self.stored_csr.indices[at] == col else -1

    @cached_property
    def diagonal_positions(self) -> np.ndarray:
        """The pattern position of each diagonal entry ``(k, k)``; ``-1`` where it is absent."""
        csr = self.stored_csr
        rows = entry_rows(csr.indptr, np.int64)
        on = np.flatnonzero(rows == csr.indices)
        out = np.full(self.n, -1, dtype=np.int64)
        out[rows[on]] = on
        return out

    def cells(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """The stored entries of the grid ``rows x cols`` (both distinct and sorted).

        Returns ``(i, j, pos)``: indices into ``rows`` and ``cols`` and pattern positions.
        Cost O(stored entries of ``rows`` + ``len(cols)``), or O(n) for scattered columns.
        """
        at, counts = self.row_entries(rows)
        found = self.stored_csr.indices[at].astype(np.int64)
        i = np.repeat(np.arange(rows.size), counts)
        if cols.size and cols[-1] - cols[0] + 1 == cols.size:  # a range of columns
            keep = (found >= cols[0]) & (found <= cols[-1])
            j = found[keep] - cols[0]
        elif cols.size * 16 < self.n:
            keep = lookup(cols, found)[0]
            j = np.searchsorted(cols, found[keep])
        else:
            where = np.full(self.n, -1, dtype=np.int64)
            where[cols] = np.arange(cols.size)
            j = where[found]
            keep = j >= 0
            j = j[keep]
        return i[keep], j, at[keep]

    def device_labels(self, family: SeedFamily) -> jax.Array | np.ndarray:
        """``family.labels`` as the kernels take them (int32), shared by every point.

        Sent to the device once, except a partial family's: made for one request, its
        labels go as a host array that the compiled call's own dispatch transfers. A
        ``jax.device_put`` right after a program ran took 114 us (RANDSP2 n = 1e4, 100
        rows: 1.28 -> 1.20 ms a request), against 28 us on an idle runtime.
        """
        if family.key == "partial":
            return family.labels.astype(np.int32)
        labels = self._device_labels.get(family)
        if labels is None:
            # Converted on the host: a conversion on the device is a second dispatch.
            labels = jax.device_put(family.labels.astype(np.int32))
            self._device_labels[family] = labels
        return labels

    @cached_property
    def unit(self) -> SeedFamily:
        """Unit seeds ``e_j``: seed ``j`` is column ``j`` (and, by symmetry, row ``j``)."""
        return SeedFamily("unit", np.arange(self.n), unit=True)

    @cached_property
    def colored(self) -> Any:
        """The global coloring (a ``ColoredPattern``): fewest colors of star and column."""
        from .coloring import hessian_coloring_from_sparsity

        with stage("coloring", self.progress):
            return hessian_coloring_from_sparsity(self.stored_csr)

    @cached_property
    def global_family(self) -> SeedFamily:
        """The global coloring as a seed family."""
        return SeedFamily("global", np.asarray(self.colored.colors, dtype=np.int64), fixed=True)

    @cached_property
    def whole_candidates(self) -> list[tuple[SeedFamily, Any]]:
        """The colorings worth racing for a whole Hessian, as ``(family, coloring)``.

        ``colored`` (as ``global_family``) and an acyclic coloring when it needs fewer
        colors (``coloring.whole_candidates``), the one ``whole_cost`` prefers first.
        Acyclic colorings need fewer HVPs but recover entries from all of ``B`` at once
        (substitution), so they serve only requests for every stored entry.
        """
        from .coloring import whole_candidates

        with stage("coloring for the whole Hessian", self.progress):
            colorings = whole_candidates(self.colored)
        return [
            (self.global_family, c)
            if c is self.colored
            else (SeedFamily("whole", np.asarray(c.colors, np.int64), fixed=True), c)
            for c in colorings
        ]

    @cached_property
    def whole_colored(self) -> Any:
        """The coloring whole-Hessian requests use: acyclic when it pays, else ``colored``."""
        return self.whole_candidates[0][1]

    @cached_property
    def whole_family(self) -> SeedFamily:
        """``whole_colored`` as a seed family: ``global_family`` when they are the same."""
        return self.whole_candidates[0][0]

    @cached_property
    def values_family(self) -> SeedFamily:
        """Every stored entry's value at a point, cached as one result ``(p, nnz)``.

        Not a seed: the cache keeps ``Engine.pattern_values``'s result under
        ``(values_family, 0)``, from which each entry inside the pattern is read at its
        pattern position, with no HVP. Every column is labelled 0: the result covers all.
        """
        return SeedFamily("values", np.zeros(self.n, dtype=np.int64), fixed=True)

    @cached_property
    def diagonal_values(self) -> SeedFamily:
        """Every diagonal entry's value at a point, cached as one result ``(p, n)``.

        Not a seed: ``Engine`` keeps a whole diagonal it computed in one program under
        ``(diagonal_values, 0)``, from which ``H[p, k, k]`` is read at column ``k``.
        """
        return SeedFamily("diagonal values", np.zeros(self.n, dtype=np.int64), fixed=True)

    def fresh_plan(self, rows: np.ndarray, cols: np.ndarray, make: Callable[[], _T]) -> _T:
        """``make()``, the plan of the grid ``rows x cols`` with nothing cached, kept.

        ``rows`` and ``cols`` are distinct and sorted. With nothing cached a plan depends
        on the pattern alone, so a request repeated at every new point (an optimiser's
        block or rows, each iteration) is planned once: DIXMAANE's 100 rows at n = 1e4
        spent ~300 of ~1100 us planning (a partial coloring, the block's cells). Kept for
        the last ``FRESH_PLANS`` requests of at most ``FRESH_PLAN_LINES`` rows and columns
        each (or every one); the kept arrays are read-only.
        """
        n = self.n
        if any(FRESH_PLAN_LINES < lines.size < n for lines in (rows, cols)):
            return make()
        key = tuple(b"all" if lines.size == n else lines.tobytes() for lines in (rows, cols))
        with self._plans_lock:
            kept = self._fresh_plans.get(key)
        if kept is None:
            kept = _frozen(make())
            with self._plans_lock:
                self._fresh_plans[key] = kept
        return kept

    def diagonal_reading(self, start: int, stop: int) -> DiagonalReading | None:
        """How the diagonal of lines ``start..stop-1`` is read when nothing is cached.

        The planner's choice for those entries, made once per range: the fewest of the
        global coloring's colors that recover them, the distance-1 (diagonal) coloring's,
        or one unit seed per line, preferring them in that order on ties. ``None`` for unit
        seeds (the planner serves them) or a dense structure. Needs the pattern.
        """
        key = (start, stop)
        if key not in self._diagonal_readings:
            self._diagonal_readings[key] = self._read_diagonal(np.arange(start, stop))
        return self._diagonal_readings[key]

    def _read_diagonal(self, lines: np.ndarray) -> DiagonalReading | None:
        if self.dense:
            return None
        pos = self.diagonal_positions[lines]
        inside = np.flatnonzero(pos >= 0)
        if inside.size <= 1:
            return None
        colored, glob, diag = self.colored, self.global_family, self.diagonal_family
        color, index = colored.recover_color[pos[inside]], colored.recover_index[pos[inside]]
        label = diag.labels[lines[inside]]
        glob_count = distinct(color, max(glob.size, 1)).size
        diag_count = distinct(label, diag.size).size
        if min(glob_count, diag_count) > inside.size:
            return None
        family = glob
        if diag_count < glob_count:
            family, color, index = diag, label, lines[inside]
        needed, slot = distinct_inverse(color, family.size)
        every = inside.size == lines.size
        return DiagonalReading(family, needed, slot, index, None if every else inside)

    @cached_property
    def diagonal_family(self) -> SeedFamily:
        """A distance-1 coloring: seed ``labels[k]`` read at row ``k`` is ``H[k, k]``."""
        from .coloring import hessian_coloring_from_sparsity

        with stage("coloring the diagonal", self.progress):
            colors = hessian_coloring_from_sparsity(self.stored_csr, method="diagonal").colors
        return SeedFamily("diagonal", np.asarray(colors, dtype=np.int64), fixed=True)

    def partial(
        self, rows: np.ndarray, cols: np.ndarray, cells: tuple[np.ndarray, np.ndarray]
    ) -> SeedFamily:
        """A fresh coloring of ``cols`` recovering every stored entry of ``rows x cols``.

        ``rows`` and ``cols`` are distinct and sorted; ``cells`` are the block's stored
        entries ``(i, j)``, indices into them (see :meth:`cells`).
        """
        from .coloring import block_coloring

        i, j = cells
        labels = np.full(self.n, -1, dtype=np.int64)
        labels[cols] = block_coloring(i, j, rows.size, cols.size)
        return SeedFamily("partial", labels, rows=rows)
