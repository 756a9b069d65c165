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
def bipartite_distance2(col_ptr, col_rows, row_ptr, row_cols, order, limit):
    """Greedy distance-2 coloring of the columns of a sparse matrix A.

    Two columns sharing a nonzero row get different colors, so every A[i, j] equals the
    i-th entry of A @ indicator(colors == colors[j]).

    Args:
        col_ptr: CSC column pointers of A.
        col_rows: CSC row indices of A (rows of each column).
        row_ptr: CSR row pointers of A.
        row_cols: CSR column indices of A (columns of each row).
        order: the columns to color, in visiting order; columns without entries stay -1.
        limit: stop as soon as a column needs color ``limit`` (the result then has
            ``limit + 1`` colors and is incomplete); pass ``len(order)`` for no limit.

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
        if c >= limit:
            break
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


_SEEN, _TWICE, _HUBS = 0, 1, 2


@kernel
def _has_bit(sets, v, kind, c):
    return ((sets[v, kind, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)) != 0


@kernel
def _set_bit(sets, v, kind, c):
    sets[v, kind, c >> 6] |= np.uint64(1) << np.uint64(c & 63)


@kernel
def _widen(sets):
    wider = np.zeros((sets.shape[0], sets.shape[1], 2 * sets.shape[2]), np.uint64)
    wider[:, :, : sets.shape[2]] = sets
    return wider


@kernel
def star(indptr, indices, order, limit):
    """Greedy star coloring: every path on four vertices gets at least three colors.

    A star coloring is a distance-1 coloring whose two-colored subgraphs are all stars.
    Three color sets per vertex, kept as bit sets side by side in memory, make each step
    cost O(degree): ``seen`` holds the colors among w's colored neighbours, ``twice``
    those seen at least twice, ``hubs`` the colors c of neighbours x of w that are hubs
    towards w's color (x has two or more neighbours colored like w). A vertex v may not
    take

    * a color of a neighbour (distance-1);
    * a color in ``hubs`` of a colored neighbour w (path v-w-x-y, colors abab);
    * a color in ``seen`` of a colored neighbour x whose color v sees twice
      (path w-v-x-y, colors baba).

    Args:
        indptr: CSR row pointers of an undirected graph without self-loops.
        indices: CSR column indices of that graph.
        order: the vertices to color, in visiting order; others stay -1.
        limit: stop as soon as a vertex needs color ``limit`` (the result then has
            ``limit + 1`` colors and is incomplete); pass ``len(order)`` for no limit.

    Returns:
        int32 colors. Cost O(edges * (1 + colors / 64)) plus, once per vertex and
        neighbour color that becomes repeated, one scan of that vertex's neighbours.
    """
    n = len(indptr) - 1
    colors = np.full(n, -1, np.int32)
    sets = np.zeros((n, 3, 1), np.uint64)
    forbid = np.zeros(1, np.uint64)
    for v in order:
        width = sets.shape[2]
        forbid[:] = 0
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if cw < 0:
                continue
            forbid[cw >> 6] |= np.uint64(1) << np.uint64(cw & 63)
            if _has_bit(sets, v, _TWICE, cw):
                for k in range(width):
                    forbid[k] |= sets[w, _HUBS, k] | sets[w, _SEEN, k]
            else:
                for k in range(width):
                    forbid[k] |= sets[w, _HUBS, k]
        c = _lowest_clear_bit(forbid)
        colors[v] = c
        if c >= limit:
            break
        if c >= 64 * width:
            sets = _widen(sets)
            forbid = np.zeros(2 * width, np.uint64)
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if cw >= 0 and _has_bit(sets, v, _TWICE, cw):
                _set_bit(sets, w, _HUBS, c)
            if not _has_bit(sets, w, _SEEN, c):
                _set_bit(sets, w, _SEEN, c)
                continue
            first_repeat = not _has_bit(sets, w, _TWICE, c)
            _set_bit(sets, w, _TWICE, c)
            if cw < 0:
                continue
            _set_bit(sets, v, _HUBS, cw)
            if first_repeat:
                for q in range(indptr[w], indptr[w + 1]):
                    x = indices[q]
                    if x != v and colors[x] == c:
                        _set_bit(sets, x, _HUBS, cw)
                        break
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


@kernel
def _find(parent, e):
    root = e
    while parent[root] != root:
        root = parent[root]
    while parent[e] != root:
        up = parent[e]
        parent[e] = root
        e = up
    return root


@kernel
def _union(parent, a, b):
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[ra] = rb


@kernel
def _tree_edge(indptr, length, list_color, list_edge, w, c):
    """An edge joining w to its neighbours colored c, or -1 if it has none yet."""
    for k in range(indptr[w], indptr[w] + length[w]):
        if list_color[k] == c:
            return list_edge[k]
    return -1


@kernel
def _join(indptr, length, list_color, list_edge, parent, w, c, e):
    """Put edge e (between w and a vertex colored c) into w's tree towards color c."""
    known = _tree_edge(indptr, length, list_color, list_edge, w, c)
    if known >= 0:
        _union(parent, e, known)
        return
    k = indptr[w] + length[w]
    list_color[k] = c
    list_edge[k] = e
    length[w] += 1


@kernel
def acyclic(indptr, indices, edge, order, limit):
    """Greedy acyclic coloring: every cycle gets at least three colors.

    An acyclic coloring is a distance-1 coloring whose two-colored subgraphs are all
    forests. The trees of those forests are kept as disjoint sets of edges (union-find
    with path compression). A colored vertex w lies in one tree per color among its
    colored neighbours; w keeps one edge of each (a short list, at most one entry per
    color). A vertex v may not take

    * a color of a neighbour (distance-1);
    * a color c such that two colored neighbours w1 != w2 of v, both of one color, lie
      in one tree of the forest of that color and c: v would close a two-colored cycle.
      Every colored neighbour w of v visits its trees; the first neighbour of v to reach
      a tree is remembered in the tree, and a second one forbids the tree's other color.

    After v takes color c, each edge (v, w) joins v's tree towards w's color and w's
    tree towards c.

    Args:
        indptr: CSR row pointers of an undirected graph without self-loops.
        indices: CSR column indices of that graph.
        edge: for each CSR position, an id shared with its mirror position (an int in
            ``0 .. len(indices) - 1``).
        order: the vertices to color, in visiting order; others stay -1.
        limit: stop as soon as a vertex needs color ``limit`` (the result then has
            ``limit + 1`` colors and is incomplete); pass ``len(order)`` for no limit.

    Returns:
        int32 colors. Cost O(sum over vertices of degree times colors) union-find steps.
    """
    n = len(indptr) - 1
    colors = np.full(n, -1, np.int32)
    parent = np.arange(len(indices))
    first_v = np.full(len(indices), -1, np.int64)
    first_w = np.full(len(indices), -1, np.int64)
    mark = np.full(n + 1, -1, np.int64)
    length = np.zeros(n, np.int64)
    list_color = np.empty(len(indices), np.int64)
    list_edge = np.empty(len(indices), np.int64)
    for v in order:
        for p in range(indptr[v], indptr[v + 1]):
            c = colors[indices[p]]
            if c >= 0:
                mark[c] = v
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            if colors[w] < 0:
                continue
            for k in range(indptr[w], indptr[w] + length[w]):
                cx = list_color[k]
                if mark[cx] == v:
                    continue
                t = _find(parent, list_edge[k])
                if first_v[t] != v:
                    first_v[t] = v
                    first_w[t] = w
                elif first_w[t] != w:
                    mark[cx] = v
        c = 0
        while mark[c] == v:
            c += 1
        colors[v] = c
        if c >= limit:
            break
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            cw = colors[w]
            if cw >= 0:
                _join(indptr, length, list_color, list_edge, parent, v, cw, edge[p])
                _join(indptr, length, list_color, list_edge, parent, w, c, edge[p])
    return colors
