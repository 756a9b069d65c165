"""Coloring entry points: whole-pattern colorings and the planner's partial colorings.

Whole patterns are colored by a portfolio of methods and greedy orders.
"""

from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._arguments import argnums_key
from .._csr import entry_rows, segments, shape_of, sorted_unique
from . import _greedy
from ._colored import METHODS, ColoredPattern, Method
from ._normalize import square_csr, symmetric_csr
from ._orders import ORDERS, Order, vertex_order

MethodOption = Literal["auto"] | Method
OrderOption = Literal["auto"] | Order
METHOD_OPTIONS: tuple[str, ...] = ("auto", *METHODS)
ORDER_OPTIONS: tuple[str, ...] = ("auto", *ORDERS)
# Orders tried by order="auto", best first on the benchmark suite; "random" is left out
# because it is never better there and its scattered memory access is slow.
AUTO_ORDERS: tuple[Order, ...] = ("largest_first", "smallest_last", "incidence_degree", "natural")
# The modelled cost of one HVP per input element, in steps of substitution (a gather, a
# term of a scan, a gather, all compiled): (nnz / n)**2 / HVP_STEPS_SCALE. Fitted to the
# jitted steady state of the seven problems whose colors drop (benchmarks/bench_coloring.py
# --steady 10000, CPU): acyclic was faster on BAND9 and FMINSRF2 (it wins in the model
# below scales of 80), star on CLPLATEA, PENTADIAG, WOODS and GENROSE (acyclic wins in
# the model below 33, 25, 13 and 9); 50 sits between.
HVP_STEPS_SCALE = 50.0


def hessian_coloring_from_sparsity(
    pattern, method: MethodOption = "auto", order: OrderOption = "auto", *, whole: bool = False
) -> ColoredPattern:
    """A coloring of the columns of a symmetric sparsity pattern, with recovery data.

    ``num_colors`` Hessian-vector products with the seeds of the result give every entry
    of the Hessian (``"star"``, ``"column"``, ``"acyclic"``) or its diagonal
    (``"diagonal"``); see ``ColoredPattern``. ``method="auto"`` colors with ``"star"`` and
    ``"column"`` and keeps the fewest colors (ties go to ``"star"``): every entry is then
    read from one color, which lazy, partial use of the seeds needs. With
    ``whole=True`` it also tries ``"acyclic"`` (fewer colors, entries recovered by
    substitution from all of ``B`` at once) and keeps it when ``whole_cost`` says its
    fewer HVPs outweigh the substitution. ``order="auto"`` tries several greedy orders and
    keeps the fewest colors. Star colorings are post-processed: color classes that are
    only ever read from the other side of their entries become neutral (-1).

    Cost: per method and order O(nnz) for star and diagonal colorings, O(sum of squared
    row counts) for column colorings, plus O(nnz log nnz) to normalise the pattern. The
    portfolio stops early once a lower bound is reached, skips column colorings that
    cannot beat the best star coloring (they need at least the largest row count), and
    abandons a candidate as soon as it needs as many colors as the best so far. Acyclic
    colorings cost O(sum of squared degrees) union-find steps per order, and O(nnz) to
    root their two-colored forests.

    Args:
        pattern: symmetric sparsity pattern: a scipy sparse matrix or array, a dense
            boolean numpy array, or an object with ``to_scipy(format)`` such as
            ``lazyhess.SparsityPattern``.
        method: ``"auto"``, ``"star"``, ``"column"``, ``"diagonal"`` or ``"acyclic"``.
        order: ``"auto"``, ``"natural"``, ``"largest_first"``, ``"smallest_last"``,
            ``"incidence_degree"`` or ``"random"`` (fixed seed, deterministic).
        whole: whether the coloring is only ever used for the whole Hessian (all of
            ``B`` at once); lets ``method="auto"`` choose ``"acyclic"``.

    Returns:
        A ``ColoredPattern``.

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> tridiagonal = sp.diags_array([np.ones(9), np.ones(10), np.ones(9)], offsets=[-1, 0, 1])
        >>> lazyhess.hessian_coloring_from_sparsity(tridiagonal).num_colors
        3
        >>> offsets = range(-4, 5)
        >>> band = sp.diags_array([np.ones(20 - abs(k)) for k in offsets], offsets=offsets)
        >>> lazyhess.hessian_coloring_from_sparsity(band).num_colors
        9
        >>> lazyhess.hessian_coloring_from_sparsity(band, whole=True).num_colors
        5
    """
    check_options(method, order)
    csr = symmetric_csr(pattern)
    return _color(csr, method, order, pattern if hasattr(pattern, "to_scipy") else None, whole)


def input_avals(args: tuple, argnums) -> Any:
    """The shapes and dtypes of ``args[argnums]`` (a tuple for a sequence of argnums)."""
    key = argnums_key(argnums)
    primals = args[key] if isinstance(key, int) else tuple(args[a] for a in key)
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), primals
    )


def partial_coloring(pattern, rows, cols) -> np.ndarray:
    """A coloring of the columns ``cols`` that recovers the block ``H[rows][:, cols]``.

    With ``s_c`` the indicator of the columns ``cols[k]`` of color ``c``, every stored
    entry ``(i, j)`` of the pattern with ``i`` in ``rows`` and ``j`` in ``cols`` equals
    ``(H @ s_c)[i]`` for ``c = colors[k]`` where ``cols[k] == j``: a greedy distance-2
    coloring of the bipartite graph ``rows x cols``, in natural order (optimal on banded
    patterns), then largest column count first unless the first reached the largest row
    count (a lower bound). Any
    pattern is accepted, symmetric or not; to color the other orientation, swap the
    arguments.

    Cost: O(nnz of the selected rows * log |cols|) to extract the block, then
    O(sum over ``rows`` of squared row counts within ``cols``); nothing is O(n).

    Args:
        pattern: a ``ColoredPattern`` (its ``csr`` is used as is, the fastest input) or
            anything ``hessian_coloring_from_sparsity`` accepts.
        rows: 1-D int array of row indices ``R`` (repeats allowed).
        cols: 1-D int array of column indices ``C`` (repeats get the same color).

    Returns:
        int32 array of the same length as ``cols``: colors ``0 .. k - 1``, and -1 for
        columns with no entry in ``rows`` (they need no seed).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> tridiagonal = sp.diags_array([np.ones(9), np.ones(10), np.ones(9)], offsets=[-1, 0, 1])
        >>> lazyhess.coloring.partial_coloring(tridiagonal, [4], [3, 4, 5, 8]).tolist()
        [0, 1, 2, -1]
    """
    csr = pattern.csr if isinstance(pattern, ColoredPattern) else square_csr(pattern)
    n = shape_of(csr)[0]
    rows = _check_indices("rows", rows, n)
    cols = _check_indices("cols", cols, n)
    unique_cols, position = np.unique(cols, return_inverse=True)
    unique_rows = sorted_unique(rows)
    i, j = _block(csr, unique_rows, unique_cols)
    return block_coloring(i, j, unique_rows.size, unique_cols.size)[position.reshape(-1)]


def block_coloring(i: np.ndarray, j: np.ndarray, num_rows: int, num_cols: int) -> np.ndarray:
    """A coloring of a block's columns that recovers its stored entries ``(i[e], j[e])``.

    The block is ``num_rows x num_cols``, given by its stored entries in any order. Two
    columns sharing a row get different colors, so entry ``(i, j)`` is row ``i`` of the
    block times the indicator of the columns of ``j``'s color. Greedy distance-2 coloring
    in natural order (optimal on banded blocks), then largest column count first unless
    the first reached the largest row count (a lower bound).

    Cost: O(entries log entries) to index the block, then O(sum over rows of squared row
    counts); nothing is O(n).

    Returns:
        int32 colors ``0 .. k - 1`` per column; -1 for columns with no entry.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    row_counts = np.bincount(i, minlength=num_rows)
    col_counts = np.bincount(j, minlength=num_cols)
    by_column, by_row = np.argsort(j, kind="stable"), np.argsort(i, kind="stable")
    structure = (_pointers(col_counts), i[by_column], _pointers(row_counts), j[by_row])
    bound = int(row_counts.max(initial=0))
    natural = np.arange(num_cols, dtype=np.int64)
    best = _greedy.bipartite_distance2(*structure, natural, num_cols)
    if best.max(initial=-1) + 1 > bound:
        by_count = np.argsort(-col_counts, kind="stable").astype(np.int64)
        colors = _greedy.bipartite_distance2(*structure, by_count, int(best.max()))
        if colors.max() < best.max():
            best = colors
    return best


def _pointers(counts: np.ndarray) -> np.ndarray:
    """Compressed-row pointers (``indptr``) of rows holding ``counts`` entries."""
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def _block(csr: sp.csr_array, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """The stored entries of ``csr[rows][:, cols]`` (sorted unique ``rows`` and ``cols``).

    Returns ``(i, j)``, indices into ``rows`` and ``cols``, row-major. O(selected nnz).
    """
    at, counts = segments(csr.indptr, rows)
    found = csr.indices[at]
    position = np.searchsorted(cols, found)
    keep = np.zeros(found.size, dtype=bool)
    if len(cols):
        keep = cols[np.minimum(position, len(cols) - 1)] == found
    return np.repeat(np.arange(rows.size), counts)[keep], position[keep]


def check_options(method: str, order: str) -> None:
    """Raise a ValueError naming the valid values if ``method`` or ``order`` is not one.

    Callers that detect a pattern before coloring it check first, so a typo fails before
    the detection's cost.
    """
    if method not in METHOD_OPTIONS:
        raise ValueError(f"method={method!r} is not one of {METHOD_OPTIONS}")
    if order not in ORDER_OPTIONS:
        raise ValueError(f"order={order!r} is not one of {ORDER_OPTIONS}")


def _check_indices(name: str, index, n: int) -> np.ndarray:
    array = np.asarray(index)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{name} must be a 1-D array of integer indices; got dtype {array.dtype} and "
            f"shape {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() >= n):
        bad = array[(array < 0) | (array >= n)][0]
        raise IndexError(f"{name} contains {bad}, outside 0 .. {n - 1} for a pattern of size {n}")
    return array.astype(np.int64)


def _color(csr: sp.csr_array, method: str, order: str, pattern, whole: bool) -> ColoredPattern:
    """Run the portfolio for the resolved options and build the cheapest ``ColoredPattern``."""
    graph = _Graph.of(csr)
    orders: tuple[Order, ...] = AUTO_ORDERS if order == "auto" else (cast(Order, order),)
    if method != "auto":
        _, method, order, colors = _portfolio(graph, (cast(Method, method),), orders)
        return ColoredPattern(csr, colors, method, order, pattern=pattern)
    best = _portfolio(graph, ("star", "column"), orders)
    direct = ColoredPattern(csr, best[3], best[1], best[2], pattern=pattern)
    return _whole_candidates(graph, direct, orders)[0] if whole else direct


def whole_coloring(direct: ColoredPattern) -> ColoredPattern:
    """The coloring a whole Hessian should use, given the direct one partial requests use.

    An acyclic coloring with fewer colors than ``direct`` when ``whole_cost`` says its
    fewer HVPs outweigh recovery by substitution, else ``direct`` itself (so its seeds,
    and any HVPs already computed with them, serve the whole Hessian too). Cost: the
    acyclic part of ``hessian_coloring_from_sparsity(..., whole=True)``.
    """
    return whole_candidates(direct)[0]


def whole_candidates(direct: ColoredPattern) -> list[ColoredPattern]:
    """The colorings worth trying for a whole Hessian, ``whole_cost``'s preferred first.

    ``direct``, and an acyclic coloring when one needs fewer colors. The model knows the
    pattern only; a caller that can time both whole Hessians (as ``sparse_hessian`` does)
    keeps the faster. Cost: as :func:`whole_coloring`.
    """
    return _whole_candidates(_Graph.of(direct.csr), direct, AUTO_ORDERS)


def _whole_candidates(
    graph: "_Graph", direct: ColoredPattern, orders: tuple[Order, ...]
) -> list[ColoredPattern]:
    # Substitution only pays with fewer colors: the acyclic search stops at best - 1.
    best = (direct.num_colors, direct.method, direct.order, direct.colors)
    _, method, order, colors = _portfolio(graph, ("acyclic",), orders, best)
    if method != "acyclic":
        return [direct]
    acyclic = ColoredPattern(graph.csr, colors, "acyclic", order, pattern=direct.pattern)
    return sorted([direct, acyclic], key=whole_cost)  # stable: a tie keeps direct


def whole_cost(colored: ColoredPattern) -> float:
    """The modelled cost of a whole Hessian with ``colored``, in substitution steps.

    ``num_colors`` HVPs at ``(nnz / n)**2 / HVP_STEPS_SCALE`` steps per input element each
    (an HVP's work grows with the variables each one is coupled to), plus one step per
    edge solved by substitution (none for direct recovery; the final gather of ``nnz``
    entries is common to all methods and left out). A model of the pattern alone: how
    costly the function's HVPs really are is not known here.
    """
    n = max(colored.n, 1)
    hvp_steps = (colored.nnz / n) ** 2 / HVP_STEPS_SCALE
    solved = 0
    if colored.substitution is not None:
        solved = int(np.count_nonzero(~colored.substitution.direct)) // 2
    return colored.num_colors * n * hvp_steps + solved


def _portfolio(
    graph: "_Graph", methods: tuple[Method, ...], orders: tuple[Order, ...], best=None
) -> tuple[int, Method, Order, np.ndarray]:
    """The fewest colors over ``methods`` x ``orders``: ``(count, method, order, colors)``.

    With ``best`` given, a candidate must beat it; ``best`` is returned if none does.
    """
    csr = graph.csr
    column_bound = int(np.diff(csr.indptr).max(initial=0))
    for candidate in methods:
        if candidate == "column" and best is not None and column_bound >= best[0]:
            continue
        bound = column_bound if candidate == "column" else int(csr.nnz > 0)
        for name in orders:
            # A later candidate only matters if it needs fewer colors: stop it early.
            limit = shape_of(csr)[0] + 1 if best is None else best[0] - 1
            ordered = vertex_order(name, graph.indptr, graph.indices)
            colors = graph.color(candidate, ordered, limit)
            num_colors = int(colors.max(initial=-1)) + 1
            if num_colors <= limit and (best is None or num_colors < best[0]):
                best = (num_colors, candidate, name, colors)
            if best is not None and best[0] <= bound:
                break
    assert best is not None
    return best


class _Graph(NamedTuple):
    """What every coloring of one pattern needs, computed once per portfolio."""

    csr: sp.csr_array
    rows: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    has_diagonal: np.ndarray
    has_entry: np.ndarray

    @classmethod
    def of(cls, csr: sp.csr_array) -> "_Graph":
        """The pattern's graph (entries minus the diagonal, int64 CSR) and vertex flags."""
        n = shape_of(csr)[0]
        rows = entry_rows(csr.indptr)
        on_diagonal = rows == csr.indices
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[~on_diagonal], minlength=n), out=indptr[1:])
        indices = csr.indices[~on_diagonal].astype(np.int64)
        has_diagonal = np.zeros(n, dtype=bool)
        has_diagonal[rows[on_diagonal]] = True
        return cls(csr, rows, indptr, indices, has_diagonal, np.diff(csr.indptr) > 0)

    def color(self, method: Method, order: np.ndarray, limit: int) -> np.ndarray:
        """Colors for one method and vertex order; vertices that need no seed are -1.

        Star and column colorings stop as soon as a vertex needs color ``limit``; the
        result then has more than ``limit`` colors and must not be used.
        """
        if method == "column":
            indptr = self.csr.indptr.astype(np.int64)
            indices = self.csr.indices.astype(np.int64)
            return _greedy.bipartite_distance2(indptr, indices, indptr, indices, order, limit)
        if method == "diagonal":
            return _greedy.distance1(self.indptr, self.indices, order[self.has_diagonal[order]])
        if method == "acyclic":
            positions = np.arange(len(self.indices), dtype=np.int64)
            shape = (len(self.indptr) - 1,) * 2
            mirror = sp.csr_array((positions, self.indices, self.indptr), shape=shape).tocsc().data
            edge = np.minimum(positions, mirror)
            return _greedy.acyclic(
                self.indptr, self.indices, edge, order[self.has_entry[order]], limit
            )
        colors = _greedy.star(self.indptr, self.indices, order[self.has_entry[order]], limit)
        if colors.max(initial=-1) >= limit:
            return colors
        return self.neutralize(colors)

    def neutralize(self, colors: np.ndarray) -> np.ndarray:
        """Drop star color classes whose entries can all be read from the other side.

        A vertex j can be left out of every seed when it has no diagonal entry and its
        neighbours have pairwise different colors (each H[i, j] is then
        B[colors[i], j]). A class of such vertices is dropped unless an edge joins it to
        another dropped class; classes are dropped greedily, fewest conflicts first.
        Returns renumbered colors. Cost O(nnz).
        """
        colored = colors >= 0
        if not (colored & ~self.has_diagonal).any():
            return colors
        num_colors = int(colors.max()) + 1
        csr, rows = self.csr, self.rows
        alone = _greedy.unique_in_row(csr.indptr, csr.indices, colors)
        shared = np.bincount(rows[~alone], minlength=shape_of(csr)[0]) > 0
        leaf_only = colored & ~self.has_diagonal & ~shared
        candidate = np.bincount(colors[colored & ~leaf_only], minlength=num_colors) == 0
        if not candidate.any():
            return colors
        a, b = colors[rows], colors[csr.indices]
        both = (rows != csr.indices) & (a >= 0) & (b >= 0)
        both[both] = candidate[a[both]] & candidate[b[both]]
        pairs = np.unique(np.stack([a[both], b[both]], axis=1), axis=0)
        conflicts = np.bincount(pairs[:, 0], minlength=num_colors)
        dropped = np.zeros(num_colors, dtype=bool)
        for c in np.flatnonzero(candidate)[np.argsort(conflicts[candidate], kind="stable")]:
            if not dropped[pairs[pairs[:, 0] == c, 1]].any():
                dropped[c] = True
        renumber = np.where(dropped, -1, np.cumsum(~dropped) - 1).astype(np.int32)
        return np.where(colored, renumber[np.maximum(colors, 0)], -1).astype(np.int32)
