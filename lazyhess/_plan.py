"""Choosing the seed directions that a request for Hessian entries needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._csr import entry_rows, lookup
from ._progress import stage


class Structure:
    """Where the flat ``n x n`` Hessian can be nonzero, and the seed families that fit it.

    ``pattern`` is ``None`` (every entry may be nonzero), a ``SparsityPattern`` or a
    callable returning one (detection, run on first need). The pattern, its colorings and
    the unit family are computed once and shared by every point of a function.
    """

    def __init__(self, n: int, pattern: Any = None, progress: bool = False):
        self.n = n
        self._source = pattern
        self.progress = progress

    @cached_property
    def pattern(self) -> Any:
        """The sparsity pattern, or ``None`` when every entry may be nonzero."""
        if not callable(self._source):
            return self._source
        with stage("detecting sparsity", self.progress):
            return self._source()

    @cached_property
    def csr(self) -> sp.csr_array | None:
        """The pattern as a boolean CSR array, or ``None`` when dense."""
        return None if self.pattern is None else sp.csr_array(self.pattern.to_scipy("csr"))

    @property
    def dense(self) -> bool:
        """Whether every entry may be nonzero."""
        return self.csr is None

    @cached_property
    def _keys(self) -> np.ndarray:
        csr = self.csr
        rows = entry_rows(csr.indptr, np.int64)
        return rows * self.n + csr.indices.astype(np.int64)

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Mask of the entries ``(rows[e], cols[e])`` that may be nonzero.

        When the entries share few rows (or, by symmetry, few columns), as in a request
        for whole rows, those rows are laid out as a bitmap at most 8 bytes per entry large;
        otherwise each entry is looked up among the sorted stored keys.
        """
        if self.dense:
            return np.ones(rows.shape, dtype=bool)
        for i, j in ((rows, cols), (cols, rows)):
            few = _distinct(i, self.n)
            if few.size * self.n <= 8 * i.size:
                selected = self.csr[few]
                bitmap = np.zeros((few.size, self.n), dtype=bool)
                bitmap[entry_rows(selected.indptr), selected.indices] = True
                position = np.zeros(self.n, dtype=np.intp)
                position[few] = np.arange(few.size)
                return bitmap[position[i], j]
        return lookup(self._keys, rows.astype(np.int64) * self.n + cols)[0]

    def block_degree(self, rows: np.ndarray, cols: np.ndarray) -> int:
        """The most stored entries any of ``rows`` has among ``cols`` (distinct, sorted).

        A column coloring of the block ``rows x cols`` needs at least this many colors.
        Only for a sparse structure.
        """
        selected = self.csr[rows]
        inside = np.concatenate(([0], np.cumsum(lookup(cols, selected.indices)[0])))
        return int(np.diff(inside[selected.indptr]).max(initial=0))

    @cached_property
    def unit(self) -> SeedFamily:
        """Unit seeds ``e_j``: seed ``j`` is column ``j`` (and, by symmetry, row ``j``)."""
        return SeedFamily("unit", np.arange(self.n), unit=True)

    @cached_property
    def colored(self) -> Any:
        """The global coloring (a ``ColoredPattern``): fewest colors of star and column."""
        from .coloring import hessian_coloring_from_sparsity

        with stage("coloring", self.progress):
            return hessian_coloring_from_sparsity(self.csr)

    @cached_property
    def global_family(self) -> SeedFamily:
        """The global coloring as a seed family."""
        return SeedFamily("global", np.asarray(self.colored.colors, dtype=np.int64), fixed=True)

    @cached_property
    def entries_by_color(self) -> tuple[np.ndarray, np.ndarray]:
        """The pattern's stored entries grouped by the global color they are read from.

        ``order[bounds[c]:bounds[c + 1]]`` are the entries read from color ``c``.
        """
        color = self.colored.recover_color
        order = np.argsort(color, kind="stable")
        bounds = np.searchsorted(color[order], np.arange(self.colored.num_colors + 1))
        return order, bounds

    @cached_property
    def diagonal_family(self) -> SeedFamily:
        """A distance-1 coloring: its seeds recover every diagonal entry."""
        from .coloring import hessian_coloring_from_sparsity

        with stage("coloring the diagonal", self.progress):
            colors = hessian_coloring_from_sparsity(self.csr, method="diagonal").colors
        return SeedFamily("diagonal", np.asarray(colors, dtype=np.int64), fixed=True)

    def partial(self, rows: np.ndarray, cols: np.ndarray) -> SeedFamily:
        """A fresh coloring of ``cols`` recovering every nonzero of ``rows x cols``."""
        from .coloring import partial_coloring

        labels = np.full(self.n, -1, dtype=np.int64)
        labels[cols] = partial_coloring(self.colored, rows, cols)
        return SeedFamily("partial", labels)


@dataclasses.dataclass(eq=False)
class SeedFamily:
    """Seeds ``s_t = indicator(labels == t)`` over the flat columns (``-1``: in no seed).

    Unit vectors are the family with ``labels = arange(n)``; a coloring's colors, or a
    partial coloring of some columns, are others. ``(family, t)`` names seed ``t`` in the
    cache. A ``fixed`` family (a global coloring) is evaluated whole at every point, so its
    chunks are compiled at their exact size instead of padded.
    """

    key: Hashable
    labels: np.ndarray
    unit: bool = False
    fixed: bool = False
    size: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.size = int(self.labels.max(initial=-1)) + 1

    def recovers(self, structure: Structure, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Mask of entries ``H[i, j]`` readable as ``(H @ s_{labels[j]})[i]``.

        That holds when ``j`` is in a seed and no other column of that seed is a nonzero of
        row ``i``. Only unit families serve a dense structure. Cost O(m log m) for ``m``
        queried entries plus the stored entries of their distinct rows: nothing is O(n).
        """
        lab = self.labels[j]
        if self.unit:
            return lab >= 0
        size = max(self.size, 1)
        rows = np.unique(i)
        selected = structure.csr[rows]
        row_of = rows.astype(np.int64)[entry_rows(selected.indptr)]
        nz_labels = self.labels[selected.indices]
        seeded = nz_labels >= 0
        keys, counts = np.unique(row_of[seeded] * size + nz_labels[seeded], return_counts=True)
        found, at = lookup(keys, i.astype(np.int64) * size + lab)
        return (lab >= 0) & found & (counts[at] == 1)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where every requested entry comes from.

    ``seeds`` lists ``(family, label)`` by slot: the first ``reused`` are cached, the rest
    are to be computed. Entry ``e`` is zero when ``slot[e] == -1`` (structurally zero), else
    ``R[slot[e]][p[e], read[e]]`` where ``R[s]`` is the ``(p, n)`` HVP result of seed ``s``.
    """

    seeds: list[tuple[SeedFamily, int]]
    reused: int
    slot: np.ndarray
    read: np.ndarray

    @property
    def new(self) -> list[tuple[SeedFamily, int]]:
        """The seeds to compute."""
        return self.seeds[self.reused :]


def _distinct(values: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``values`` (in ``[0, n)``).

    O(size log size) for a few values, O(size + n) with marks for many.
    """
    if values.size * 64 < n:
        return np.unique(values)
    mark = np.zeros(n, dtype=bool)
    mark[values] = True
    return np.flatnonzero(mark)


def plan(
    rows: np.ndarray,
    cols: np.ndarray,
    structure: Structure,
    unit: SeedFamily,
    cached: dict[SeedFamily, np.ndarray],
    colorings: Iterable[Callable[[], SeedFamily]] = (),
    partial: Callable[[np.ndarray, np.ndarray], SeedFamily] | None = None,
) -> Plan:
    """The fewest new seeds recovering the entries ``(rows[e], cols[e])`` of a symmetric H.

    Structurally zero entries are free. Entries readable from a cached seed (in either
    orientation, by symmetry) are free. The rest are covered by the cheapest of: unit seeds
    on their distinct columns, or on their distinct rows (``min(|I|, |J|)``); the colors of
    a global coloring that they need; a partial coloring of their columns (or rows) fitted
    to the request. Ties prefer global colorings, whose seeds later requests can reuse.

    Args:
        rows: flat row index of each entry (1-D).
        cols: flat column index of each entry (1-D).
        structure: where H may be nonzero.
        unit: the unit-vector family.
        cached: for each family with cached seeds, a mask over its labels.
        colorings: lazy global colorings worth trying (called only when more than one unit
            seed would be needed).
        partial: builds a partial coloring ``(rows, cols) -> family`` of ``cols`` recovering
            every nonzero of ``rows x cols``; ``None`` on a dense structure.
    """
    total = rows.size
    inside = np.flatnonzero(structure.contains(rows, cols))
    rows, cols = rows[inside], cols[inside]
    n = structure.n
    size = rows.size
    fam_of = np.full(size, -1, dtype=np.int64)
    label = np.zeros(size, dtype=np.int64)
    read = np.zeros(size, dtype=np.int64)
    families: list[SeedFamily] = []

    def assign(where: np.ndarray, family: SeedFamily, labels: np.ndarray, reads: np.ndarray):
        if family not in families:
            families.append(family)
        fam_of[where] = families.index(family)
        label[where] = labels
        read[where] = reads

    open_ = np.arange(size)
    for family, mask in cached.items():
        for i, j in ((rows, cols), (cols, rows)):
            r, c = i[open_], j[open_]
            lab = family.labels[c]
            ok = (lab >= 0) & mask[np.maximum(lab, 0)] & family.recovers(structure, r, c)
            if ok.any():
                assign(open_[ok], family, lab[ok], r[ok])
                open_ = open_[~ok]

    if open_.size:
        r, c = rows[open_], cols[open_]
        distinct_cols, distinct_rows = _distinct(c, n), _distinct(r, n)
        options = [
            (distinct_cols.size, lambda: assign(open_, unit, c, r)),
            (distinct_rows.size, lambda: assign(open_, unit, r, c)),
        ]
        best = min(options[0][0], options[1][0])
        if best > 1:
            for make in colorings:
                options.insert(0, _global_option(make(), structure, open_, r, c, assign))
            best = min(cost for cost, _ in options)
            if partial is not None:
                for i, j, rows_i, cols_j in (
                    (r, c, distinct_rows, distinct_cols),
                    (c, r, distinct_cols, distinct_rows),
                ):
                    if structure.block_degree(rows_i, cols_j) < best:
                        family = partial(i, j)
                        options.append(
                            (
                                family.size,
                                lambda f=family, i=i, j=j: assign(open_, f, f.labels[j], i),
                            )
                        )
        min(options, key=lambda option: option[0])[1]()

    return _slots(fam_of, label, read, families, cached, inside, total)


def _global_option(family, structure, open_, r, c, assign):
    by_col = family.recovers(structure, r, c)
    by_row = ~by_col & family.recovers(structure, c, r)
    if not (by_col | by_row).all():
        return (np.inf, None)
    lab = np.where(by_col, family.labels[c], family.labels[r])
    cost = _distinct(lab, max(family.size, 1)).size

    def take():
        assign(open_, family, lab, np.where(by_col, r, c))

    return (cost, take)


def _slots(fam_of, label, read, families, cached, inside, total) -> Plan:
    """The plan for ``total`` entries of which those at ``inside`` were assigned a seed."""
    width = max((f.size for f in families), default=1) + 1
    seeds_code, inverse = np.unique(fam_of * width + label, return_inverse=True)
    seeds = [(families[s // width], int(s % width)) for s in seeds_code]
    is_cached = np.array(
        [f in cached and bool(cached[f][t]) for f, t in seeds], dtype=bool
    ).reshape(-1)
    order = np.argsort(~is_cached, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    slot = np.full(total, -1, dtype=np.int64)
    slot[inside] = rank[inverse.reshape(-1)]
    reads = np.zeros(total, dtype=np.int64)
    reads[inside] = read
    return Plan(
        seeds=[seeds[k] for k in order],
        reused=int(is_cached.sum()),
        slot=slot,
        read=reads,
    )
