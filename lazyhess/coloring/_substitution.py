"""Recovery by substitution: a Hessian's entries from an acyclic coloring's compressed form.

With an acyclic coloring, the edges of colors a and b form a forest. For a vertex v of
color a in a tree of that forest, ``B[b, v]`` is the sum of ``H[v, w]`` over its tree
neighbours w (all colored b, none in v's row besides them). Rooting every tree, the edge
from a non-root vertex v to its parent p is

    x_v = H[v, p] = B[b, v] - sum of x_u over the children u of v,

so leaves are read directly and every other edge after its children: an alternating sum
over v's subtree. Listing the steps in post-order makes each subtree one contiguous run,
and with ``y_k = sign_k * B[b, v_k]`` (``sign`` the parity of the depth) the whole solve
is one prefix sum: ``x_k = sign_k * (Q[k + 1] - Q[first_k])`` with ``Q`` the running sum
of ``y``. That is what runs inside compiled programs (a gather, a cumulative sum, two
gathers); on the host the same steps run as the sequential loop of the textbook method.
Each root adds a step of its own (``B[a, root]``, the sum over its children), so that
every tree's signed total is zero: the running sum returns to rounding noise between
trees instead of drifting, and its rounding errors stay those of one tree.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._csr import shape_of
from ._jit import kernel


@kernel
def _forests(indptr, indices, colors):
    """Root every tree of the two-colored forests and list its edges in post-order.

    Args:
        indptr: CSR row pointers of a symmetric pattern (diagonal entries allowed).
        indices: CSR column indices.
        colors: int colors of an acyclic coloring.

    Returns:
        ``(vertex, reads, down, up, first, depth, count)``: step k is vertex
        ``vertex[k]`` of a tree whose other color is ``reads[k]``; unless the vertex is
        the root (``down[k] == -1``, the last step of its tree) it is the edge to its
        parent, stored at CSR position ``down[k]`` (the entry ``(parent, vertex)``).
        ``up[k]`` is the step of the parent's edge (-1 when the parent is the root),
        ``first[k]`` the first step of the vertex's subtree (the whole tree for a root),
        ``depth[k]`` its depth. ``count`` is the number of steps, or -1 if some
        two-colored subgraph has a cycle.
    """
    n = len(indptr) - 1
    m = len(indices)
    vertex = np.empty(m, np.int64)
    parent = np.empty(m, np.int64)
    down = np.empty(m, np.int64)
    reads = np.empty(m, np.int64)
    up_step = np.empty(m, np.int64)
    first = np.empty(m, np.int64)
    depth = np.empty(m, np.int64)
    done = np.zeros(m, np.bool_)
    stamp = np.full(n, -1, np.int64)
    up = np.full(n, -1, np.int64)
    slot = np.zeros(n, np.int64)
    step_of = np.full(n, -1, np.int64)
    enter = np.zeros(n, np.int64)
    level = np.zeros(n, np.int64)
    stack = np.empty(n, np.int64)
    cursor = np.empty(n, np.int64)
    steps = 0
    trees = 0
    for r in range(n):
        for p in range(indptr[r], indptr[r + 1]):
            if indices[p] == r or done[p]:
                continue
            a, b = colors[r], colors[indices[p]]
            start = steps
            stamp[r] = trees
            up[r] = -1
            level[r] = 0
            stack[0] = r
            cursor[0] = indptr[r]
            top = 1
            while top > 0:
                u = stack[top - 1]
                other = b if colors[u] == a else a
                pushed = False
                while cursor[top - 1] < indptr[u + 1]:
                    q = cursor[top - 1]
                    cursor[top - 1] += 1
                    y = indices[q]
                    if y == u or colors[y] != other or y == up[u]:
                        continue
                    if stamp[y] == trees:
                        return vertex, reads, down, up_step, first, depth, -1
                    done[q] = True
                    stamp[y] = trees
                    up[y] = u
                    slot[y] = q
                    enter[y] = steps
                    level[y] = level[u] + 1
                    stack[top] = y
                    cursor[top] = indptr[y]
                    top += 1
                    pushed = True
                    break
                if pushed:
                    continue
                top -= 1
                vertex[steps] = u
                parent[steps] = up[u]
                reads[steps] = other
                down[steps] = slot[u] if u != r else -1
                first[steps] = enter[u] if u != r else start
                depth[steps] = level[u]
                step_of[u] = steps
                steps += 1
                for q in range(indptr[u], indptr[u + 1]):
                    if indices[q] == up[u] or stamp[indices[q]] == trees:
                        done[q] = True
            for k in range(start, steps):
                up_step[k] = -1 if parent[k] == r or parent[k] < 0 else step_of[parent[k]]
            trees += 1
    return vertex, reads, down, up_step, first, depth, steps


@kernel
def _substitute(flat, read, up, source, out):
    """The sequential solve, then every entry gathered in order into ``out``.

    ``x[k] = B[read[k]] - sum of x[j] over j with up[j] == k`` (in post-order each edge's
    children come first); entry ``p`` is ``B[source[p]]``, or ``x[source[p] - B.size]``
    when it is solved. The entries are written in order: writing each edge to its two
    positions as it is solved took 4.4 ms against 2.4 ms (BAND9 at n = 1e5, whose fresh
    pages were then touched out of order).
    """
    x = np.empty(len(read), flat.dtype)
    for k in range(len(read)):
        x[k] = flat[read[k]]
    for k in range(len(read)):
        if up[k] >= 0:
            x[up[k]] -= x[k]
    width = len(flat)
    for p in range(len(source)):
        at = source[p]
        out[p] = flat[at] if at < width else x[at - width]


class Substitution(NamedTuple):
    """Index arrays of a substitution solve, all NumPy (never traced).

    Attributes:
        read: flat index ``b * n + v`` into ``B`` for each step, in post-order (the
            roots' steps read the sum over their children).
        up: the step of each step's parent edge, -1 when the parent is a tree root.
        first: the first step of each step's subtree.
        sign: +1 or -1, the parity of each step's depth.
        source: for each stored entry of the pattern, its index into
            ``concatenate([B.ravel(), x])``: leaves and diagonal entries read ``B``,
            the others the solved ``x``.
        direct: bool per stored entry, True where ``source`` reads ``B`` itself.
        edge: for each step, the position of its entry ``(parent, vertex)`` among the
            stored entries, -1 for a root's step.
        mirror: for each step, the position of the entry ``(vertex, parent)``, -1 for a
            root's step.
        kept: the positions of the entries no step solves (the diagonal's), read from
            ``B`` at ``source``.
    """

    read: np.ndarray
    up: np.ndarray
    first: np.ndarray
    sign: np.ndarray
    source: np.ndarray
    direct: np.ndarray
    edge: np.ndarray
    mirror: np.ndarray
    kept: np.ndarray

    @classmethod
    def build(cls, csr: sp.csr_array, colors: np.ndarray, num_colors: int) -> "Substitution":
        """Root the two-colored forests of ``colors`` and precompute the solve. O(nnz).

        Raises:
            RuntimeError: if ``colors`` is not an acyclic coloring of ``csr`` (a bug in
                the coloring, never a user error).
        """
        n = shape_of(csr)[0]
        indptr, indices = csr.indptr.astype(np.int64), csr.indices.astype(np.int64)
        vertex, other, down, up, first, depth, count = _forests(indptr, indices, colors)
        vertex, other, down, up, first, depth = (
            a[: max(count, 0)] for a in (vertex, other, down, up, first, depth)
        )
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        diagonal = rows == indices
        clash = (colors[rows] < 0) | (~diagonal & (colors[rows] == colors[indices]))
        edge = down >= 0
        if count < 0 or clash.any() or 2 * edge.sum() != np.count_nonzero(~diagonal):
            raise RuntimeError(
                "internal error: the coloring is not an acyclic coloring of the pattern; "
                "please report this with the pattern"
            )
        read = other * n + vertex
        mirror = _mirror(csr)
        leaf = first == np.arange(count)
        source = np.empty(csr.nnz, np.int64)
        source[diagonal] = colors[rows[diagonal]].astype(np.int64) * n + rows[diagonal]
        solved = np.where(leaf, read, num_colors * n + np.arange(count))[edge]
        source[down[edge]] = solved
        source[mirror[down[edge]]] = solved
        direct = source < num_colors * n
        sign = np.where(depth % 2 == 0, 1, -1).astype(np.int8)
        mirrors = np.where(edge, mirror[down], -1)
        return cls(read, up, first, sign, source, direct, down, mirrors, np.flatnonzero(diagonal))

    def solve(self, compressed):
        """The pattern's stored entries from ``B`` (numpy: host loop; jax: prefix sum)."""
        flat = compressed.reshape(-1)
        if isinstance(compressed, np.ndarray):
            out = np.empty(len(self.source), compressed.dtype)
            _substitute(flat, self.read, self.up, self.source, out)
            return out
        sign = jnp.asarray(self.sign, compressed.dtype)
        # A log-depth scan: its partial sums are sums of contiguous runs of steps, and
        # measured faster on CPU than jnp.cumsum's reduce_window.
        running = jax.lax.associative_scan(jnp.add, take(flat, self.read) * sign)
        partial = jnp.concatenate([jnp.zeros(1, compressed.dtype), running])
        x = sign * (partial[1:] - take(partial, self.first))
        return take(jnp.concatenate([flat, x]), self.source)


def take(array: jax.Array, index: np.ndarray) -> jax.Array:
    """``array[index]`` for constant in-bounds indices: a gather without bounds handling.

    Measured about twice as fast on CPU as ``array[index]``, which clamps or masks.
    """
    return array.at[index].get(mode="promise_in_bounds")


def _mirror(csr: sp.csr_array) -> np.ndarray:
    """For each stored entry (i, j) of a symmetric pattern, the position of (j, i)."""
    positions = np.arange(csr.nnz, dtype=np.int64)
    return sp.csr_array((positions, csr.indices, csr.indptr), shape=csr.shape).tocsc().data
