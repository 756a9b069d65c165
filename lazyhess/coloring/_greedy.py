"""Greedy coloring kernels (sequential, compiled by numba when available).

All kernels take vertices in a given order and give each the smallest color allowed by
the colors already assigned; a color is an int >= 0, -1 means "not colored".
"""

import numpy as np

from ._jit import kernel


@kernel
def distance1(indptr, indices, order):
    """Greedy distance-1 coloring: adjacent vertices get different colors.

    Args:
        indptr: CSR row pointers of an undirected graph without self-loops.
        indices: CSR column indices of that graph.
        order: the vertices to color, in visiting order; others stay -1.

    Returns:
        int32 colors. Cost O(n + edges).
    """
    n = len(indptr) - 1
    colors = np.full(n, -1, np.int32)
    mark = np.full(n + 1, -1, np.int64)
    for v in order:
        for p in range(indptr[v], indptr[v + 1]):
            c = colors[indices[p]]
            if c >= 0:
                mark[c] = v
        c = 0
        while mark[c] == v:
            c += 1
        colors[v] = c
    return colors


@kernel
def bipartite_distance2(col_ptr, col_rows, row_ptr, row_cols, order):
    """Greedy distance-2 coloring of the columns of a sparse matrix A.

    Two columns sharing a nonzero row get different colors, so every A[i, j] equals the
    i-th entry of A @ indicator(colors == colors[j]).

    Args:
        col_ptr: CSC column pointers of A.
        col_rows: CSC row indices of A (rows of each column).
        row_ptr: CSR row pointers of A.
        row_cols: CSR column indices of A (columns of each row).
        order: the columns to color, in visiting order; columns without entries stay -1.

    Returns:
        int32 colors, one per column. Cost O(sum over rows of nnz(row)^2).
    """
    ncols = len(col_ptr) - 1
    colors = np.full(ncols, -1, np.int32)
    mark = np.full(ncols + 1, -1, np.int64)
    for j in order:
        if col_ptr[j] == col_ptr[j + 1]:
            continue
        for p in range(col_ptr[j], col_ptr[j + 1]):
            i = col_rows[p]
            for q in range(row_ptr[i], row_ptr[i + 1]):
                c = colors[row_cols[q]]
                if c >= 0:
                    mark[c] = j
        c = 0
        while mark[c] == j:
            c += 1
        colors[j] = c
    return colors


@kernel
def _lowest_clear_bit(words):
    for k in range(len(words)):
        free = ~words[k]
        if free != 0:
            b = 0
            while ((free >> np.uint64(b)) & np.uint64(1)) == 0:
                b += 1
            return 64 * k + b
    return 64 * len(words)


@kernel
def _has_bit(sets, v, c):
    return ((sets[v, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)) != 0


@kernel
def _set_bit(sets, v, c):
    sets[v, c >> 6] |= np.uint64(1) << np.uint64(c & 63)


@kernel
def _widen(sets):
    wider = np.zeros((sets.shape[0], 2 * sets.shape[1]), np.uint64)
    wider[:, : sets.shape[1]] = sets
    return wider


@kernel
def star(indptr, indices, order):
    """Greedy star coloring: every path on four vertices gets at least three colors.

    A star coloring is a distance-1 coloring whose two-colored subgraphs are all stars.
    Three color sets per vertex, kept as bit sets, make each step cost O(degree):
    ``seen[w]`` holds the colors among w's colored neighbours, ``twice[w]`` those seen
    at least twice, ``hubs[w]`` the colors c of neighbours x of w that are hubs towards
    w's color (x has two or more neighbours colored like w). A vertex v may not take

    * a color of a neighbour (distance-1);
    * a color in ``hubs[w]`` for a colored neighbour w (path v-w-x-y, colors abab);
    * a color in ``seen[x]`` for a colored neighbour x whose color v sees twice
      (path w-v-x-y, colors baba).

    Args:
        indptr: CSR row pointers of an undirected graph without self-loops.
        indices: CSR column indices of that graph.
        order: the vertices to color, in visiting order; others stay -1.

    Returns:
        int32 colors. Cost O(edges * (1 + colors / 64)) plus, once per vertex and
        neighbour color that becomes repeated, one scan of that vertex's neighbours.
    """
    n = len(indptr) - 1
    colors = np.full(n, -1, np.int32)
    seen = np.zeros((n, 1), np.uint64)
    twice = np.zeros((n, 1), np.uint64)
    hubs = np.zeros((n, 1), np.uint64)
    forbid = np.zeros(1, np.uint64)
    for v in order:
        width = seen.shape[1]
        forbid[:] = 0
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if cw >= 0:
                forbid[cw >> 6] |= np.uint64(1) << np.uint64(cw & 63)
                forbid |= hubs[w]
                if _has_bit(twice, v, cw):
                    forbid |= seen[w]
        c = _lowest_clear_bit(forbid)
        if c >= 64 * width:
            seen = _widen(seen)
            twice = _widen(twice)
            hubs = _widen(hubs)
            forbid = np.zeros(2 * width, np.uint64)
        colors[v] = c
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if not _has_bit(seen, w, c):
                _set_bit(seen, w, c)
                continue
            first_repeat = not _has_bit(twice, w, c)
            _set_bit(twice, w, c)
            if cw < 0:
                continue
            _set_bit(hubs, v, cw)
            if first_repeat:
                for q in range(indptr[w], indptr[w + 1]):
                    x = indices[q]
                    if x != v and colors[x] == c:
                        _set_bit(hubs, x, cw)
                        break
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if cw >= 0 and _has_bit(twice, v, cw):
                _set_bit(hubs, w, c)
    return colors


@kernel
def unique_in_row(indptr, indices, colors):
    """For each stored entry (i, j): is colors[j] >= 0 and the only such color in row i?

    Args:
        indptr: CSR row pointers (rows may include their diagonal).
        indices: CSR column indices.
        colors: int colors of the columns, -1 for uncolored.

    Returns:
        bool array aligned with ``indices``. Cost O(nnz + colors).
    """
    ncols = len(colors)
    count = np.zeros(ncols + 1, np.int64)
    out = np.zeros(len(indices), np.bool_)
    for i in range(len(indptr) - 1):
        for p in range(indptr[i], indptr[i + 1]):
            c = colors[indices[p]]
            if c >= 0:
                count[c] += 1
        for p in range(indptr[i], indptr[i + 1]):
            c = colors[indices[p]]
            out[p] = c >= 0 and count[c] == 1
        for p in range(indptr[i], indptr[i + 1]):
            c = colors[indices[p]]
            if c >= 0:
                count[c] = 0
    return out
