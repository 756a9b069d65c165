"""The shared benchmark suite: standard sparse unconstrained problems (see PROBLEMS.md).

Every problem maps a size n to a scalar function of one flat array and a start point,
written with vectorised ``jax.numpy`` so its jaxpr is small for any n. Each also knows its
true structural Hessian pattern as a union of cliques of coupled variables, built with NumPy
independently of any detector.

Indices in PROBLEMS.md are 1-based; here everything is 0-based.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from lazyhess import SparsityPattern

Cliques = list[np.ndarray]


@dataclass(frozen=True)
class Problem:
    """A benchmark problem.

    Attributes:
        name: CUTEst-style name.
        size: rounds a requested n to a valid size (perfect square, multiple of 3 or 4...).
        build: ``build(n) -> (f, x0)`` for a valid n.
        cliques: ``cliques(n)``: integer arrays of shape (groups, k); every pair of variables
            in a row couples (diagonal included). Their union is the true pattern.
        structure: one-line description.
    """

    name: str
    size: Callable[[int], int]
    build: Callable[[int], tuple[Callable, jnp.ndarray]]
    cliques: Callable[[int], Cliques]
    structure: str

    def make(self, n: int) -> tuple[Callable, jnp.ndarray]:
        """``(f, x0)`` at the valid size nearest below ``n`` (see `size`)."""
        return self.build(self.size(n))

    def pattern(self, n: int) -> SparsityPattern:
        """The true structural Hessian pattern at size ``size(n)``."""
        n = self.size(n)
        rows, cols = [], []
        for g in self.cliques(n):
            k = g.shape[1]
            a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
            rows.append(g[:, a.ravel()].ravel())
            cols.append(g[:, b.ravel()].ravel())
        return SparsityPattern.from_coordinates(np.concatenate(rows), np.concatenate(cols), n)

    def nnz(self, n: int) -> int:
        """Structural nonzeros at size ``size(n)``."""
        return self.pattern(n).nnz


def _col(*arrays) -> np.ndarray:
    return np.stack([np.asarray(a, np.int64) for a in arrays], axis=1)


# ---------------------------------------------------------------------------- GENROSE


def _genrose(n):
    def f(x):
        return 1.0 + 100.0 * jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum((x[:-1] - 1.0) ** 2)

    return f, jnp.arange(1, n + 1) / (n + 1)


def _genrose_cliques(n):
    i = np.arange(n - 1)
    return [_col(i, i + 1)]


# ---------------------------------------------------------------------------- ARWHEAD


def _arwhead(n):
    def f(x):
        return jnp.sum((x[:-1] ** 2 + x[-1] ** 2) ** 2 - 4.0 * x[:-1] + 3.0)

    return f, jnp.ones(n)


def _arwhead_cliques(n):
    i = np.arange(n - 1)
    return [_col(i, np.full(n - 1, n - 1))]


# ---------------------------------------------------------------------------- BDQRTIC


def _bdqrtic(n):
    def f(x):
        m = n - 4
        inner = (
            x[:m] ** 2
            + 2.0 * x[1 : m + 1] ** 2
            + 3.0 * x[2 : m + 2] ** 2
            + 4.0 * x[3 : m + 3] ** 2
            + 5.0 * x[-1] ** 2
        )
        return jnp.sum((3.0 - 4.0 * x[:m]) ** 2 + inner**2)

    return f, jnp.ones(n)


def _bdqrtic_cliques(n):
    i = np.arange(n - 4)
    return [_col(i, i + 1, i + 2, i + 3, np.full(n - 4, n - 1))]


# --------------------------------------------------------------------------- CLPLATEA


def _square_size(lo):
    def size(n):
        return max(math.isqrt(max(n, 0)), lo) ** 2

    return size


def _clplatea(n):
    p = math.isqrt(n)
    h = p * p / 2.0

    def g(d):
        return 0.5 * d**2 + h * d**4

    def f(x):
        # X[i, j] (0-based) is x[i + j p]; the array below is indexed [j, i].
        r = x.reshape(p, p)
        horiz = g(r[1:, 1:] - r[:-1, 1:])
        row2 = r[1:, 1]
        vert = g(r[1:, 2:] - r[1:, 1:-1])
        return (
            -0.1 * r[p - 1, p - 1]
            + jnp.sum(horiz)
            + jnp.sum(0.5 * row2**2 + h * row2**4)
            + jnp.sum(vert)
        )

    return f, jnp.zeros(n)


def _clplatea_cliques(n):
    p = math.isqrt(n)
    i, j = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")

    def at(ii, jj):
        return (ii + jj * p).ravel()

    horiz = _col(at(i[1:, 1:], j[1:, 1:]), at(i[1:, 1:], j[1:, 1:] - 1))
    vert = _col(at(i[2:, 1:], j[2:, 1:]), at(i[2:, 1:] - 1, j[2:, 1:]))
    row2 = at(np.full(p - 1, 1), np.arange(1, p))[:, None]
    return [horiz, vert, row2]


# --------------------------------------------------------------------------- FMINSRF2


def _fminsrf2(n):
    p = math.isqrt(n)
    mid = p // 2
    c = 100.0 / (p - 1) ** 2

    def f(x):
        r = x.reshape(p, p)  # r[j, i] = X[i, j]
        d1 = r[:-1, :-1] - r[1:, 1:]
        d2 = r[:-1, 1:] - r[1:, :-1]
        s = jnp.sqrt(1.0 + 0.5 * (p - 1) ** 2 * (d1**2 + d2**2))
        return c * jnp.sum(s) + 100.0 * x[(mid - 1) + (mid - 1) * p] ** 2 / n

    x0 = np.zeros(n)
    ston, wtoe = 8.0 / (p - 1), 4.0 / (p - 1)
    i = np.arange(2, p)
    jj = np.arange(1, p + 1)
    x0[i - 1] = (i - 1) * ston + 5.0
    x0[i - 1 + (p - 1) * p] = (i - 1) * ston + 1.0
    x0[(jj - 1) * p] = (jj - 1) * wtoe + 1.0
    x0[p - 1 + (jj - 1) * p] = (jj - 1) * wtoe + 9.0
    return f, jnp.asarray(x0)


def _fminsrf2_cliques(n):
    p = math.isqrt(n)
    i, j = np.meshgrid(np.arange(p - 1), np.arange(p - 1), indexing="ij")
    base = (i + j * p).ravel()
    mid = p // 2
    return [_col(base, base + 1, base + p, base + p + 1), np.array([[mid - 1 + (mid - 1) * p]])]


# ------------------------------------------------------------------------------ WOODS


def _woods(n):
    def f(x):
        a, b, c, d = (x.reshape(-1, 4)[:, k] for k in range(4))
        return jnp.sum(
            100.0 * (b - a**2) ** 2
            + (1.0 - a) ** 2
            + 90.0 * (d - c**2) ** 2
            + (1.0 - c) ** 2
            + 10.0 * (b + d - 2.0) ** 2
            + 0.1 * (b - d) ** 2
        )

    x0 = np.where(np.arange(n) % 2 == 0, -3.0, -1.0)
    return f, jnp.asarray(x0)


def _woods_cliques(n):
    s = np.arange(0, n, 4)
    return [_col(s, s + 1), _col(s + 2, s + 3), _col(s + 1, s + 3)]


# ----------------------------------------------------------------------------- RANDSP


def _randsp_sets(n, k):
    return np.random.default_rng(20180101 + k).integers(0, n, size=(n, k))


def _randsp(k):
    def build(n):
        sets = _randsp_sets(n, k)

        def f(x):
            return jnp.sum((x - 1.0) ** 2) + jnp.sum(jnp.prod(x[sets], axis=1))

        return f, jnp.ones(n)

    def cliques(n):
        return [_randsp_sets(n, k), np.arange(n)[:, None]]

    return build, cliques


# --------------------------------------------------------------------------- SPARSINE


def _sparsine_sets(n):
    i = np.arange(1, n + 1)
    return _col(i - 1, *(((k * i - 1) % n) for k in (2, 3, 5, 7, 11)))


def _sparsine(n):
    sets = _sparsine_sets(n)
    weight = np.arange(1, n + 1, dtype=np.float64)

    def f(x):
        s = jnp.sum(jnp.sin(x[sets]), axis=1)
        return 0.5 * jnp.sum(weight * s**2)

    return f, jnp.full(n, 0.5)


# --------------------------------------------------------------------------- DIXMAANE


def _dixmaane(n):
    m = n // 3
    w = np.arange(1, n + 1) / n

    def f(x):
        return (
            1.0
            + jnp.sum(w * x**2)
            + 0.125 * jnp.sum(x[: 2 * m] ** 2 * x[m:] ** 4)
            + 0.125 * jnp.sum(w[:m] * x[:m] * x[2 * m :])
        )

    return f, jnp.full(n, 2.0)


def _dixmaane_cliques(n):
    m = n // 3
    i = np.arange(2 * m)
    j = np.arange(m)
    return [np.arange(n)[:, None], _col(i, i + m), _col(j, j + 2 * m)]


# ------------------------------------------------------------------------------ ARROW


def _arrow(k):
    def build(n):
        def f(x):
            padded = jnp.concatenate([x, jnp.zeros(k, x.dtype)])
            s = sum(padded[j : j + n] for j in range(1, k + 1))
            return jnp.sum(jnp.cos(s)) + jnp.sum((x[:, None] + x[None, :k]) ** 2)

        return f, jnp.ones(n)

    def cliques(n):
        i = np.arange(n)
        starts = np.arange(1, n - k + 1)
        band = _col(*(starts + t for t in range(k)))
        return [*(_col(i, np.full(n, j)) for j in range(k)), band]

    return build, cliques


# ----------------------------------------------------------------- PENTADIAG, BAND9


def _band(w):
    """Band of half-width w: Σ(x_i − 1)² + Σ_{i<n−w}(Σ_{t≤w} (t+1) x_{i+t}²)²."""

    def build(n):
        weights = np.arange(1, w + 2, dtype=np.float64)

        def f(x):
            m = n - w
            inner = sum(weights[t] * x[t : t + m] ** 2 for t in range(w + 1))
            return jnp.sum((x - 1.0) ** 2) + jnp.sum(inner**2)

        return f, jnp.linspace(-1.0, 1.0, n)

    def cliques(n):
        return [np.arange(n - w)[:, None] + np.arange(w + 1)]

    return build, cliques


def _multiple(q, lo):
    def size(n):
        return max(n // q * q, lo)

    return size


_randsp2, _randsp2_cliques = _randsp(2)
_randsp8, _randsp8_cliques = _randsp(8)
_arrow2, _arrow2_cliques = _arrow(2)
_band2, _band2_cliques = _band(2)
_band4, _band4_cliques = _band(4)


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in [
        Problem("GENROSE", lambda n: max(n, 2), _genrose, _genrose_cliques, "tridiagonal"),
        Problem("ARWHEAD", lambda n: max(n, 2), _arwhead, _arwhead_cliques, "arrowhead"),
        Problem(
            "BDQRTIC", lambda n: max(n, 5), _bdqrtic, _bdqrtic_cliques, "band 3 + dense last row"
        ),
        Problem("CLPLATEA", _square_size(3), _clplatea, _clplatea_cliques, "2-D 5-point"),
        Problem("FMINSRF2", _square_size(2), _fminsrf2, _fminsrf2_cliques, "2-D 9-point"),
        Problem("WOODS", _multiple(4, 4), _woods, _woods_cliques, "4×4 blocks"),
        Problem("RANDSP2", lambda n: max(n, 2), _randsp2, _randsp2_cliques, "random, K=2"),
        Problem("RANDSP8", lambda n: max(n, 8), _randsp8, _randsp8_cliques, "random, K=8"),
        Problem(
            "SPARSINE",
            lambda n: max(n, 1),
            _sparsine,
            lambda n: [_sparsine_sets(n)],
            "pseudo-random",
        ),
        Problem("DIXMAANE", _multiple(3, 3), _dixmaane, _dixmaane_cliques, "long-range pairs"),
        Problem("ARROW2", lambda n: max(n, 3), _arrow2, _arrow2_cliques, "band 2 + 2 dense rows"),
        Problem("PENTADIAG", lambda n: max(n, 3), _band2, _band2_cliques, "pentadiagonal"),
        Problem("BAND9", lambda n: max(n, 5), _band4, _band4_cliques, "9-band (half-width 4)"),
    ]
}
