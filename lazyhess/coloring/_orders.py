"""Vertex orders for greedy coloring.

Every order is a permutation of the vertices to color, computed on an undirected graph
given in CSR form (``indptr``, ``indices``) without self-loops.
"""

from typing import Literal, get_args

import numpy as np

from ._jit import kernel

Order = Literal["natural", "largest_first", "smallest_last", "incidence_degree", "random"]
ORDERS: tuple[str, ...] = get_args(Order)
RANDOM_SEED = 0


def vertex_order(order: str, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The vertices ``0..n-1`` in the sequence a greedy coloring visits them.

    Args:
        order: one of ``ORDERS``. ``"largest_first"`` sorts by decreasing degree (stable);
            ``"smallest_last"`` is the degeneracy order (repeatedly remove a vertex of
            minimum remaining degree, visit in reverse removal order);
            ``"incidence_degree"`` repeatedly picks the vertex with the most already
            ordered neighbours; ``"random"`` is a permutation with a fixed seed.
        indptr: CSR row pointers of the graph (length n + 1).
        indices: CSR column indices of the graph, no self-loops.

    Returns:
        An int64 permutation of ``range(n)``. Cost O(n + edges), ``"largest_first"`` and
        ``"random"`` O(n log n).
    """
    n = len(indptr) - 1
    degree = np.diff(indptr)
    if order == "natural":
        return np.arange(n, dtype=np.int64)
    if order == "largest_first":
        return np.argsort(-degree, kind="stable").astype(np.int64)
    if order == "random":
        return np.random.default_rng(RANDOM_SEED).permutation(n).astype(np.int64)
    if order == "smallest_last":
        return _smallest_last(indptr.astype(np.int64), indices.astype(np.int64))
    if order == "incidence_degree":
        return _incidence_degree(indptr.astype(np.int64), indices.astype(np.int64))
    raise ValueError(f"order={order!r} is not one of {ORDERS}")


@kernel
def _bucket_insert(v, key, head, nxt, prv):
    nxt[v] = head[key]
    prv[v] = -1
    if head[key] >= 0:
        prv[head[key]] = v
    head[key] = v


@kernel
def _bucket_remove(v, key, head, nxt, prv):
    if prv[v] >= 0:
        nxt[prv[v]] = nxt[v]
    else:
        head[key] = nxt[v]
    if nxt[v] >= 0:
        prv[nxt[v]] = prv[v]


@kernel
def _smallest_last(indptr, indices):
    n = len(indptr) - 1
    key = np.empty(n, np.int64)
    head = np.full(n + 1, -1, np.int64)
    nxt = np.empty(n, np.int64)
    prv = np.empty(n, np.int64)
    for v in range(n - 1, -1, -1):
        key[v] = indptr[v + 1] - indptr[v]
        _bucket_insert(v, key[v], head, nxt, prv)
    done = np.zeros(n, np.bool_)
    out = np.empty(n, np.int64)
    low = 0
    for step in range(n - 1, -1, -1):
        while head[low] < 0:
            low += 1
        v = head[low]
        _bucket_remove(v, low, head, nxt, prv)
        done[v] = True
        out[step] = v
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            if not done[w]:
                _bucket_remove(w, key[w], head, nxt, prv)
                key[w] -= 1
                _bucket_insert(w, key[w], head, nxt, prv)
        if low > 0:
            low -= 1
    return out


@kernel
def _incidence_degree(indptr, indices):
    n = len(indptr) - 1
    key = np.zeros(n, np.int64)
    head = np.full(n + 1, -1, np.int64)
    nxt = np.empty(n, np.int64)
    prv = np.empty(n, np.int64)
    degree = indptr[1:] - indptr[:-1]
    for v in np.argsort(degree, kind="mergesort"):
        _bucket_insert(v, 0, head, nxt, prv)
    done = np.zeros(n, np.bool_)
    out = np.empty(n, np.int64)
    high = 0
    for step in range(n):
        while high > 0 and head[high] < 0:
            high -= 1
        v = head[high]
        _bucket_remove(v, high, head, nxt, prv)
        done[v] = True
        out[step] = v
        for p in range(indptr[v], indptr[v + 1]):
            w = indices[p]
            if not done[w]:
                _bucket_remove(w, key[w], head, nxt, prv)
                key[w] += 1
                _bucket_insert(w, key[w], head, nxt, prv)
                if key[w] > high:
                    high = key[w]
    return out
