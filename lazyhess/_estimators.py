"""Estimators on a symmetric Hessian block known only by its HVPs.

Trace, diagonal and Frobenius norm from a fixed budget of random probes, deflated by a
randomised low-rank sketch (Hutch++ and Diag++ class) and exact once the budget covers a
basis; extreme eigenpairs by Lanczos with full reorthogonalisation; the spectral density by
stochastic Lanczos quadrature. Every product is one call of the block's ``hvp`` (the
Hessian's compiled, chunked kernels, counted in ``cache_info().hvps``); the linear algebra
between products runs as compiled JAX on the device.

Where the Hessian has a sparsity pattern, trace and diagonal probe the compressed space of
a distance-1 coloring: column ``j`` of color ``c`` is seeded by ``s_c``, the sum of the unit
vectors of its color, and ``H[j, j] = (H s_c)[j]``. The ``k`` colors then play the role of
the ``n`` coordinates: ``k`` HVPs give the exact diagonal and trace, and fewer probes are
random signs per color, ``v = sum_c w_c s_c``, whose ``w_c (H v)[j]`` is unbiased for
``H[j, j]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TraceMethod = Literal["hutch++", "hutchinson"]
DiagonalMethod = Literal["exact", "diag++", "hutchinson"]
Which = Literal["LA", "SA", "LM"]

TRACE_METHODS = ("hutch++", "hutchinson")
DIAGONAL_METHODS = ("exact", "diag++", "hutchinson")
WHICH = ("LA", "SA", "LM")

# A Lanczos step whose new direction keeps less than this many rounding units of ``H v``
# has found an invariant subspace; the iteration continues from a fresh random direction.
_BREAKDOWN = 1e3


class Estimate(NamedTuple):
    """A randomised estimate with its standard error.

    Attributes:
        value: the estimate: a scalar (trace, Frobenius norm) or shaped like the block's
            input (diagonal).
        stderr: its standard error, shaped like ``value``; zero where the value is exact.
            The estimate is a mean over independent probes, so ``|value - truth|`` exceeds
            ``3 * stderr`` rarely.
        hvps: Hessian-vector products spent.
        exact: whether ``value`` is exact up to rounding (the budget covered every color,
            or every coordinate).
    """

    value: jax.Array
    stderr: jax.Array
    hvps: int
    exact: bool


class Eigen(NamedTuple):
    """Eigenpairs (Ritz pairs) of a symmetric block from Lanczos.

    Attributes:
        values: the ``k`` selected eigenvalues, in the order ``which`` asks for (largest
            first for ``"LA"`` and ``"LM"``, smallest first for ``"SA"``).
        vectors: unit eigenvectors shaped like the block's input plus a trailing axis of
            ``k`` (``vectors[..., i]`` belongs to ``values[i]``), or ``None`` if not asked.
        residuals: ``||H x_i - values[i] x_i||`` as Lanczos measures it; each
            ``values[i]`` is within ``residuals[i]`` of an eigenvalue of the block.
        hvps: Hessian-vector products spent.
    """

    values: jax.Array
    vectors: jax.Array | None
    residuals: jax.Array
    hvps: int


class SpectralDensity(NamedTuple):
    """The eigenvalue density of a symmetric block by stochastic Lanczos quadrature.

    Attributes:
        grid: points ``t`` at which the density is given.
        density: the smoothed density ``(1/n) sum_i N(t; lambda_i, sigma^2)`` at ``grid``,
            estimated; it integrates to one (``n * density`` counts eigenvalues).
        stderr: its standard error at each grid point, over the probes.
        nodes: the quadrature nodes (Ritz values), ``(num_probes, steps)``.
        weights: their weights, ``(num_probes, steps)``; each row sums to one.
        sigma: the width of the Gaussian smoothing (a scalar array).
        hvps: Hessian-vector products spent.
    """

    grid: jax.Array
    density: jax.Array
    stderr: jax.Array
    nodes: jax.Array
    weights: jax.Array
    sigma: jax.Array
    hvps: int


@dataclasses.dataclass(frozen=True)
class Operator:
    """A symmetric ``n x n`` block as the estimators see it.

    Attributes:
        shape: the shape of a vector the block acts on (its input's shape); ``n`` elements.
        dtype: a real floating dtype.
        matmat: ``(n, k) -> (n, k)`` products with the block, one HVP per column.
        colors: called when probes may use the pattern: the color of each of the ``n``
            columns in a distance-1 coloring (``-1``: no diagonal entry), or ``None``
            without a pattern.
        diagonal: the exact diagonal, shaped ``shape``, through the Hessian's planned and
            cached requests.
        spent: HVPs the Hessian has spent so far (its ``cache_info().hvps``).
        name: how errors name the block.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    matmat: Callable[[jax.Array], jax.Array]
    colors: Callable[[], np.ndarray | None]
    diagonal: Callable[[], jax.Array]
    spent: Callable[[], int]
    name: str

    @property
    def n(self) -> int:
        """Number of rows (and columns)."""
        return math.prod(self.shape)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the valid choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; use one of {', '.join(choices)}.")


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _key(key: Any) -> jax.Array:
    """A PRNG key from ``None`` (seed 0), an int seed, or a key (either kind)."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(
        f"key must be a jax PRNG key (jax.random.key(0)), an int seed or None; got {key!r}."
    )


def _signs(key: jax.Array, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
    return jax.random.rademacher(key, shape, dtype=dtype)


def _colors(op: Operator, coloring: bool) -> tuple[int, jax.Array, jax.Array]:
    """``(k, index, colored)``: each column's color among ``k`` (0 where uncolored).

    Without a pattern (or ``coloring=False``) every column is its own color.
    """
    labels = op.colors() if coloring else None
    if labels is None:
        labels = np.arange(op.n)
    colored = labels >= 0
    used, compact = np.unique(labels[colored], return_inverse=True)
    index = np.zeros(op.n, dtype=np.int64)
    index[colored] = compact
    return used.size, jnp.asarray(index), jnp.asarray(colored)


def _lift(w: jax.Array, index: jax.Array, flips: jax.Array) -> jax.Array:
    """``S w``: row ``j`` is ``flips[j]`` times row ``index[j]`` of ``w``."""
    return flips[:, None] * w[index]


@partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _random_seeds(
    key: jax.Array,
    index: jax.Array,
    colored: jax.Array,
    k: int,
    sketch: int,
    residual: int,
    dtype: np.dtype,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Random column signs ``flips``, signs per color ``(k, residual)``, and seeds.

    The seeds are ``S W`` for the sketch and ``S G`` for the residual probes, with
    ``S = diag(flips) S_0`` the colors' indicator with its columns' signs flipped.
    """
    key_flips, key_sketch, key_probes = jax.random.split(key, 3)
    flips = jnp.where(colored, _signs(key_flips, colored.shape, dtype), 0)
    signs = _signs(key_probes, (k, residual), dtype)
    sketch_seeds = _lift(_signs(key_sketch, (k, sketch), dtype), index, flips)
    return flips, signs, sketch_seeds, _lift(signs, index, flips)


@jax.jit
def _orthonormal(y: jax.Array) -> jax.Array:
    return jnp.linalg.qr(y)[0]


def _restrict(z: jax.Array, index: jax.Array, flips: jax.Array, k: int) -> jax.Array:
    """``S^T z``: rows summed into their colors, with their signs."""
    return jax.ops.segment_sum(flips[:, None] * z, index, num_segments=k)


@jax.jit
def _deflated_diagonal(
    q: jax.Array,
    hq: jax.Array,
    products: jax.Array,
    signs: jax.Array,
    index: jax.Array,
    flips: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``diag(Q Q^T H)`` and the residual's samples ``((H - Q Q^T H) S g)[j] (S g)[j]``."""
    w = _restrict(hq, index, flips, signs.shape[0])  # (Q^T H S)^T
    low = jnp.sum(q * _lift(w, index, flips), axis=1)
    return low, _lift(signs, index, flips) * (products - q @ (w.T @ signs))


@jax.jit
def _samples(products: jax.Array, signs: jax.Array, index: jax.Array, flips: jax.Array):
    """The samples ``(H S g)[j] (S g)[j]`` of the diagonal."""
    return _lift(signs, index, flips) * products


@partial(jax.jit, static_argnums=3)
def _compressed_range(
    y: jax.Array, index: jax.Array, flips: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """An orthonormal basis ``Q`` ``(k, s)`` of ``S^T Y``, and the seeds ``S Q``."""
    q = jnp.linalg.qr(_restrict(y, index, flips, k))[0]
    return q, _lift(q, index, flips)


@jax.jit
def _deflated_trace(
    q: jax.Array,
    hsq: jax.Array,
    products: jax.Array,
    signs: jax.Array,
    index: jax.Array,
    flips: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Hutch++ on ``C = S^T H S``: ``tr(Q^T C Q)`` and samples ``g'^T C g'``.

    ``g' = (I - Q Q^T) g``; ``C g' = S^T (H S g - (H S Q) Q^T g)`` needs no further HVP.
    """
    k = signs.shape[0]
    low = jnp.sum(q * _restrict(hsq, index, flips, k))
    coefficients = q.T @ signs
    projected = signs - q @ coefficients
    applied = _restrict(products - hsq @ coefficients, index, flips, k)
    return low, jnp.sum(projected * applied, axis=0)


class _Draw(NamedTuple):
    """Random probes of a block and their products (see :func:`_draw`).

    ``colors`` is each column's color (``index`` elsewhere).
    """

    colors: jax.Array
    flips: jax.Array
    signs: jax.Array
    sketch_seeds: jax.Array
    products: jax.Array


def _draw(
    op: Operator, num_probes: int, key: Any, deflate: bool, coloring: bool, what: str
) -> _Draw | None:
    """Probes of the colors (or columns), or ``None`` when their count fits the budget.

    With ``k`` colors (``k = n`` without a pattern) and ``num_probes >= k`` the diagonal is
    read exactly instead, as the Hessian's own cached request (one HVP per color of the
    distance-1 coloring, one per column without a pattern). Otherwise the colors' seeds get
    random signs per column (``S = diag(flips) S_0``, fixed per call): a color's seed then
    sums its columns' entries of a row with random signs instead of coherently, so the
    compressed ``S^T H S`` keeps the off-diagonal mass of ``H`` on average (plain
    Hutchinson's variance), while ``(H S)[j, c] S[j, c]`` is still ``H[j, j]`` for ``j`` of
    color ``c`` and ``tr(S^T H S) = tr(H)``. The residual probes ``S G`` (random signs
    ``G``, ``(k, residual)``) are multiplied now; the sketch seeds ``S W`` are left to the
    caller.
    """
    k, index, colored = _colors(op, coloring)
    if num_probes >= k:
        return None
    sketch, residual = _split(num_probes, deflate)
    if residual < 2:
        raise ValueError(
            f"{what} with num_probes={num_probes} below the {k} "
            f"{'colors' if k < op.n else 'columns'} of {op.name} is random and needs at "
            "least 2 probes for a standard error; raise num_probes."
        )
    flips, signs, sketch_seeds, seeds = _random_seeds(
        _key(key), index, colored, k, sketch, residual, op.dtype
    )
    return _Draw(index, flips, signs, sketch_seeds, op.matmat(seeds))


def _split(num_probes: int, deflate: bool) -> tuple[int, int]:
    """Sketch size and residual probes: a third each for the sketch and its product."""
    sketch = num_probes // 3 if deflate and num_probes >= 4 else 0
    return sketch, num_probes - 2 * sketch


def _diagonal_parts(
    op: Operator, num_probes: int, key: Any, deflate: bool, coloring: bool, what: str
) -> tuple[jax.Array, jax.Array | None]:
    """The diagonal as a low-rank part plus per-probe residual samples.

    Returns ``(low, samples)``: ``diag(H) = low + E[samples[:, t]]``; ``samples`` is
    ``None`` when ``low`` is exact (see :func:`_draw`). With a sketch, ``Y = H S W`` gives
    an orthonormal ``Q``; with ``Z = H Q`` the part ``diag(Q Q^T H)`` is exact, and the
    rest ``R = H - Q Q^T H`` is probed: ``(R S g)[j] (S g)[j]`` has mean ``H[j, j] - low[j]``.
    """
    draw = _draw(op, num_probes, key, deflate, coloring, what)
    if draw is None:
        return op.diagonal().reshape(op.n), None
    index, flips, signs, sketch_seeds, products = draw
    if not sketch_seeds.shape[1]:
        return jnp.zeros(op.n, op.dtype), _samples(products, signs, index, flips)
    q = _orthonormal(op.matmat(sketch_seeds))
    return _deflated_diagonal(q, op.matmat(q), products, signs, index, flips)


@partial(jax.jit, static_argnums=1)
def _mean_stderr(samples: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    count = samples.shape[axis]
    return samples.mean(axis), samples.std(axis, ddof=1) / math.sqrt(count)


@jax.jit
def _sum_estimate(low: jax.Array, samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``low + mean(samples)`` and its standard error."""
    mean, stderr = _mean_stderr(samples, 0)
    return low + mean, stderr


def trace(
    op: Operator, num_probes: int, key: Any, method: TraceMethod, coloring: bool
) -> Estimate:
    """``tr(H)``: see :meth:`lazyhess.HessianBlock.trace`."""
    check_choice("method", method, TRACE_METHODS)
    num_probes = _count("num_probes", num_probes, 1)
    before = op.spent()
    draw = _draw(op, num_probes, key, method == "hutch++", coloring, "trace()")
    if draw is None:
        value = jnp.sum(op.diagonal())
        return Estimate(value, jnp.zeros((), op.dtype), op.spent() - before, True)
    index, flips, signs, sketch_seeds, products = draw
    if sketch_seeds.shape[1]:
        q, seeds = _compressed_range(op.matmat(sketch_seeds), index, flips, signs.shape[0])
        low, samples = _deflated_trace(q, op.matmat(seeds), products, signs, index, flips)
    else:
        low, samples = jnp.zeros((), op.dtype), jnp.sum(_samples(products, signs, index, flips), 0)
    value, stderr = _sum_estimate(low, samples)
    return Estimate(value, stderr, op.spent() - before, False)


def diagonal(
    op: Operator, method: DiagonalMethod, num_probes: int, key: Any, coloring: bool
) -> Estimate:
    """``diag(H)``: see :meth:`lazyhess.HessianBlock.diagonal`."""
    num_probes = _count("num_probes", num_probes, 1)
    what = f"diagonal(method={method!r})"
    before = op.spent()
    low, samples = _diagonal_parts(op, num_probes, key, method == "diag++", coloring, what)
    if samples is None:
        zero = jnp.zeros(op.shape, op.dtype)
        return Estimate(low.reshape(op.shape), zero, op.spent() - before, True)
    mean, stderr = _mean_stderr(samples, 1)
    value = (low + mean).reshape(op.shape)
    return Estimate(value, stderr.reshape(op.shape), op.spent() - before, False)


@jax.jit
def _frobenius(
    q: jax.Array | None, hq: jax.Array | None, products: jax.Array, seeds: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``||H||_F`` from ``||Q^T H||_F^2`` and samples ``||(I - Q Q^T) H g||^2``; stderr."""
    low = jnp.zeros((), products.dtype)
    if q is not None and hq is not None:
        low = jnp.sum(hq**2)
        products = products - q @ (hq.T @ seeds)
    mean, stderr = _mean_stderr(jnp.sum(products**2, axis=0), 0)
    value = jnp.sqrt(low + mean)
    return value, stderr / (2 * value)


def frobenius_norm(op: Operator, num_probes: int, key: Any) -> Estimate:
    """``||H||_F``: see :meth:`lazyhess.HessianBlock.frobenius_norm`."""
    num_probes = _count("num_probes", num_probes, 1)
    n, dtype = op.n, op.dtype
    if num_probes >= n:
        value = jnp.linalg.norm(op.matmat(jnp.eye(n, dtype=dtype)))
        return Estimate(value, jnp.zeros((), dtype), n, True)
    sketch, residual = _split(num_probes, True)
    if residual < 2:
        raise ValueError(
            f"frobenius_norm() with num_probes={num_probes} below the {n} columns of "
            f"{op.name} is random and needs at least 2 probes for a standard error."
        )
    everything = jnp.ones(n, dtype=bool)
    _, _, sketch_seeds, seeds = _random_seeds(
        _key(key), jnp.arange(n), everything, n, sketch, residual, dtype
    )
    products = op.matmat(seeds)
    q = hq = None
    if sketch:
        q = _orthonormal(op.matmat(sketch_seeds))
        hq = op.matmat(q)
    value, stderr = _frobenius(q, hq, products, seeds)
    return Estimate(value, stderr, 2 * sketch + residual, False)


@partial(jax.jit, donate_argnums=0)
def _lanczos_step(
    state: tuple[jax.Array, jax.Array, jax.Array], j: jax.Array, products: jax.Array
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], jax.Array]:
    """Step ``j`` of Lanczos on each of a batch of Krylov bases ``(p, steps, n)``.

    ``state`` is ``(bases, alphas, betas)``; ``products[i]`` is ``H bases[i, j]``. Its
    component along the basis is removed twice (full reorthogonalisation: Gram-Schmidt
    repeated keeps the basis orthonormal to rounding); the remainder, normalised, becomes
    ``bases[i, j + 1]`` and is returned as the next vector to multiply. When nothing is
    left (an invariant subspace), the unit vector least represented in the basis,
    orthogonalised, continues the iteration and the off-diagonal entry is zero.
    """
    bases, alphas, betas = state

    def orthogonal(v: jax.Array) -> jax.Array:
        for _ in range(2):
            v = v - jnp.einsum("pmn,pm->pn", bases, jnp.einsum("pmn,pn->pm", bases, v))
        return v

    alpha = jnp.sum(bases[:, j] * products, axis=1)
    scale = jnp.linalg.norm(products, axis=1)
    products = orthogonal(products)
    beta = jnp.linalg.norm(products, axis=1)
    broke = beta <= _BREAKDOWN * jnp.finfo(products.dtype).eps * scale
    following = products / jnp.where(broke, 1, beta)[:, None]

    def restart(following: jax.Array) -> jax.Array:
        least = jnp.argmin(jnp.sum(bases**2, axis=1), axis=1)
        fresh = orthogonal(jax.nn.one_hot(least, products.shape[1], dtype=products.dtype))
        fresh = fresh / jnp.linalg.norm(fresh, axis=1, keepdims=True)
        return jnp.where(broke[:, None], fresh, following)

    following = jax.lax.cond(jnp.any(broke), restart, lambda f: f, following)
    state = (
        bases.at[:, j + 1].set(following, mode="drop"),
        alphas.at[:, j].set(alpha),
        betas.at[:, j].set(jnp.where(broke, 0, beta)),
    )
    return state, following


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _lanczos_start(
    key: jax.Array, count: int, n: int, steps: int, dtype: np.dtype
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], jax.Array]:
    """Empty Lanczos state for ``count`` random-sign starts, and the normalised starts."""
    starts = _signs(key, (count, n), dtype) / math.sqrt(n)
    bases = jnp.zeros((count, steps, n), dtype).at[:, 0].set(starts)
    zeros = jnp.zeros((count, steps), dtype)
    return (bases, zeros, zeros), starts


def _lanczos(
    op: Operator, key: jax.Array, count: int, steps: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``steps`` Lanczos steps from each of ``count`` random-sign starts, batched.

    Each step is one ``matmat`` of ``count`` vectors (``count`` HVPs in one call) and one
    compiled reorthogonalisation. Returns the bases ``(count, steps, n)`` and the
    tridiagonal matrices' diagonals and off-diagonals, ``(count, steps)`` each (the last
    off-diagonal entry is the residual norm).
    """
    state, vectors = _lanczos_start(key, count, op.n, steps, op.dtype)
    for j in range(steps):
        state, vectors = _lanczos_step(state, jnp.int32(j), op.matmat(vectors.T).T)
    return state


@jax.jit
def _ritz(alphas: jax.Array, betas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues and eigenvectors of the tridiagonal matrices of ``alphas``, ``betas``."""
    steps = alphas.shape[-1]
    upper = jnp.eye(steps, k=1, dtype=alphas.dtype)
    off = betas.at[..., -1].set(0)
    tridiagonal = (
        alphas[..., None] * jnp.eye(steps, dtype=alphas.dtype)
        + off[..., :, None] * upper
        + off[..., None, :] * upper.T
    )
    return jnp.linalg.eigh(tridiagonal)


@partial(jax.jit, static_argnums=(3, 4))
def _extreme(
    basis: jax.Array, alphas: jax.Array, betas: jax.Array, k: int, which: Which
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ``k`` Ritz values that ``which`` selects, their vectors and residual norms."""
    values, small = _ritz(alphas, betas)
    key = {"LA": -values, "SA": values, "LM": -jnp.abs(values)}[which]
    chosen = jnp.argsort(key)[:k]
    residuals = jnp.abs(betas[-1] * small[-1, chosen])
    return values[chosen], basis.T @ small[:, chosen], residuals


def eigh(
    op: Operator, k: int, which: Which, num_hvps: int | None, key: Any, vectors: bool
) -> Eigen:
    """Extreme eigenpairs: see :meth:`lazyhess.HessianBlock.eigh`."""
    check_choice("which", which, WHICH)
    n = op.n
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in 1..{n} (the size of {op.name}); got {k!r}.")
    k = int(k)
    steps = min(n, max(5 * k, 40)) if num_hvps is None else num_hvps
    steps = min(_count("num_hvps", steps, k), n)
    basis, alphas, betas = _lanczos(op, _key(key), 1, steps)
    values, found, residuals = _extreme(basis[0], alphas[0], betas[0], k, which)
    return Eigen(values, found.reshape(op.shape + (k,)) if vectors else None, residuals, steps)


@jax.jit
def _smoothed(
    nodes: jax.Array, weights: jax.Array, points: jax.Array, sigma: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The Gaussian-smoothed quadrature at ``points``: mean and stderr over the probes."""
    gauss = jnp.exp(-0.5 * ((points[:, None, None] - nodes) / sigma) ** 2)
    per_probe = jnp.sum(weights * gauss, axis=2) / (sigma * math.sqrt(2 * math.pi))
    return _mean_stderr(per_probe, 1)


def spectral_density(
    op: Operator,
    num_probes: int,
    steps: int,
    key: Any,
    grid: int | Any,
    sigma: float | None,
) -> SpectralDensity:
    """The eigenvalue density: see :meth:`lazyhess.HessianBlock.spectral_density`."""
    num_probes = _count("num_probes", num_probes, 2)
    steps = min(_count("steps", steps, 1), op.n)
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be a positive width; got {sigma!r}.")
    count = None
    if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
        count = _count("grid", grid, 2)
    elif np.ndim(grid) != 1:
        raise ValueError(
            f"grid must be a number of points or a 1-D array of points; got shape "
            f"{np.shape(grid)}."
        )
    _, alphas, betas = _lanczos(op, _key(key), num_probes, steps)
    nodes, small = _ritz(alphas, betas)
    weights = small[:, 0, :] ** 2
    low, high = jnp.min(nodes), jnp.max(nodes)
    width = jnp.asarray(
        jnp.where(high > low, high - low, jnp.maximum(jnp.abs(high), 1)) / 100
        if sigma is None
        else sigma,
        op.dtype,
    )
    if count is None:
        points = jnp.asarray(grid, op.dtype)
    else:
        points = jnp.linspace(low - 3 * width, high + 3 * width, count)
    density, stderr = _smoothed(nodes, weights, points, width)
    return SpectralDensity(points, density, stderr, nodes, weights, width, num_probes * steps)
