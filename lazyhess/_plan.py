"""Choosing the seed directions that a request for Hessian entries needs.

``plan`` takes the request (the entries inside the pattern, as flat rows, columns and
pattern positions), the structure and the cache's coverage, and returns a :class:`Plan`:
for every entry the seed it is read from and where. Work is proportional to the request;
nothing is O(n) per cached family, nothing scans the cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._csr import lookup
from ._structure import SeedFamily, Structure, distinct, distinct_inverse


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where every requested entry comes from.

    ``seeds`` lists ``(family, label)`` by slot: the first ``reused`` are cached, the rest
    are to be computed. Entry ``e`` is ``R[slot[e]][p, read[e]]`` where ``R[s]`` is the
    ``(p, n)`` HVP result of seed ``s``.
    """

    seeds: list[tuple[SeedFamily, int]]
    reused: int
    slot: np.ndarray
    read: np.ndarray

    @property
    def new(self) -> list[tuple[SeedFamily, int]]:
        """The seeds to compute."""
        return self.seeds[self.reused :]


def readings(
    family: SeedFamily,
    structure: Structure,
    r: np.ndarray,
    c: np.ndarray,
    pos: np.ndarray | None,
) -> list[tuple[np.ndarray | None, np.ndarray, np.ndarray]]:
    """``(valid, label, read)`` ways to read entries ``(r, c)`` from ``family``'s seeds.

    ``valid`` is ``None`` when every entry can be read that way.
    """
    if family.unit:
        return [(None, c, r), (None, r, c)]
    if pos is None:  # a dense structure: only unit seeds
        return []
    if family.key == "values":  # every stored entry, read at its pattern position
        return [(None, np.zeros_like(c), pos)]
    if family.key == "diagonal values":  # every diagonal entry, read at its column
        return [(r == c, np.zeros_like(c), r)]
    if family.key == "global":
        colored = structure.colored
        return [(None, colored.recover_color[pos], colored.recover_index[pos])]
    if family.rows is None:  # the diagonal family: distance-1 colors recover H[k, k]
        return [(r == c, family.labels[c], r)]
    out = []
    for i, j in ((r, c), (c, r)):
        label = family.labels[j]
        out.append((lookup(family.rows, i)[0] & (label >= 0), label, i))
    return out


def plan(
    rows: np.ndarray,
    cols: np.ndarray,
    pos: np.ndarray | None,
    structure: Structure,
    coverage: Iterable[tuple[SeedFamily, np.ndarray]],
    diagonal: bool = False,
) -> Plan:
    """The fewest new seeds recovering the entries ``(rows[e], cols[e])`` of a symmetric H.

    Entries readable from a cached seed (in either orientation, by symmetry) are free. The
    rest are covered by the cheapest of: unit seeds on their distinct columns, or on their
    distinct rows (``min(|I|, |J|)``); the colors of the global coloring that they need;
    for the diagonal, the colors of a distance-1 coloring; a partial coloring of their
    columns (or rows) fitted to the request. Ties prefer global colorings, whose seeds
    later requests can reuse. Colorings are only computed when more than one seed is
    needed.

    Args:
        rows: flat row index of each entry (1-D), all inside the pattern.
        cols: flat column index of each entry (1-D).
        pos: each entry's position in the pattern; ``None`` for a dense structure.
        structure: where H may be nonzero.
        coverage: ``(family, held mask)`` of the seeds cached now.
        diagonal: every entry is on the diagonal.
    """
    size = rows.size
    family_of = np.full(size, -1, dtype=np.int64)
    label = np.zeros(size, dtype=np.int64)
    read = np.zeros(size, dtype=np.int64)
    families: list[SeedFamily] = []
    held_by: dict[int, np.ndarray] = {}

    def assign(where, family, labels, reads, held=None):
        if family not in families:
            families.append(family)
        k = families.index(family)
        if held is not None:
            held_by[k] = held
        family_of[where] = k
        label[where] = labels
        read[where] = reads

    open_ = np.arange(size)
    for family, held in coverage:
        if not open_.size:
            break
        p = None if pos is None else pos[open_]
        remaining = np.ones(open_.size, dtype=bool)
        for valid, lab, at in readings(family, structure, rows[open_], cols[open_], p):
            ok = remaining & (lab >= 0)
            ok &= held[np.maximum(lab, 0)]
            if valid is not None:
                ok &= valid
            if ok.any():
                assign(open_[ok], family, lab[ok], at[ok], held)
                remaining &= ~ok
        open_ = open_[remaining]

    if open_.size:
        _cover(open_, rows[open_], cols[open_], pos, structure, diagonal, assign)
    return _slots(family_of, label, read, families, held_by)


def _cover(open_, r, c, pos, structure, diagonal, assign) -> None:
    """Assign the cheapest new seeds to the open entries ``(r, c)``."""
    n = structure.n
    distinct_cols, distinct_rows = distinct(c, n), distinct(r, n)
    unit = structure.unit
    options: list[tuple[float, Any]] = [
        (distinct_cols.size, lambda: assign(open_, unit, c, r)),
        (distinct_rows.size, lambda: assign(open_, unit, r, c)),
    ]
    best = min(distinct_cols.size, distinct_rows.size)
    if best > 1 and pos is not None:
        p = pos[open_]
        if diagonal:
            diag = structure.diagonal_family
            lab = diag.labels[c]
            options.insert(0, (distinct(lab, diag.size).size, lambda: assign(open_, diag, lab, r)))
        colored = structure.colored
        glob = structure.global_family
        color, index = colored.recover_color[p], colored.recover_index[p]
        options.insert(
            0,
            (
                distinct(color, max(glob.size, 1)).size,
                lambda: assign(open_, glob, color, index),
            ),
        )
        best = min(cost for cost, _ in options)
        # A partial coloring for every row is a coloring of the whole matrix: the global
        # one (fewest of star and column) already is no worse. For the diagonal a
        # distance-1 coloring needs no more colors than a partial (distance-2) one.
        if not diagonal and min(distinct_rows.size, distinct_cols.size) < n:
            # The block rows x cols; by symmetry its transpose is the block cols x rows.
            bi, bj, _ = structure.cells(distinct_rows, distinct_cols)
            for i, j, rows_i, cols_j, cells in (
                (r, c, distinct_rows, distinct_cols, (bi, bj)),
                (c, r, distinct_cols, distinct_rows, (bj, bi)),
            ):
                # A column coloring needs at least as many colors as a row has entries.
                if rows_i.size == n or np.bincount(cells[0]).max(initial=0) >= best:
                    continue
                partial = structure.partial(rows_i, cols_j, cells)
                options.append(
                    (
                        partial.size,
                        lambda f=partial, i=i, j=j: assign(open_, f, f.labels[j], i),
                    )
                )
                best = min(best, partial.size)  # the other orientation must beat it
    min(options, key=lambda option: option[0])[1]()


def _slots(family_of, label, read, families, held_by) -> Plan:
    """The plan once every entry has a ``(family, label)``: cached seeds first."""
    width = max((f.size for f in families), default=1) + 1
    codes, inverse = distinct_inverse(family_of * width + label, len(families) * width)
    fam, lab = codes // width, codes % width
    is_cached = np.zeros(codes.size, dtype=bool)
    for k, held in held_by.items():
        here = fam == k
        is_cached[here] = held[lab[here]]
    order = np.argsort(~is_cached, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    seeds = [(families[int(fam[s])], int(lab[s])) for s in order]
    return Plan(
        seeds=seeds,
        reused=int(is_cached.sum()),
        slot=rank[inverse],
        read=read,
    )
