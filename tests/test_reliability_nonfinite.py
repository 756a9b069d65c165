"""At points where the Hessian has NaN or inf, requests agree with jax.hessian (issue 11.4).

A row read from its unit seed is that seed's column by symmetry, which fails where the
Hessian is not finite; ``jax.hessian`` (forward over reverse) assembles columns. With
``sparsity=None`` every request must equal ``jax.hessian(f)(x)[key]``, NaNs in place.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODES

import lazyhess

FUNCTIONS = {
    "sqrt reversed": lambda x: jnp.sum(jnp.sqrt(x) * x[::-1]) + jnp.sum(x**2),
    "log chain": lambda x: jnp.sum(jnp.log(x[1:]) * x[:-1] ** 2),
    "inverse": lambda x: jnp.sum(1.0 / x) * x[0] + jnp.sum(x[1:] * x[:-1]),
    "where": lambda x: jnp.sum(jnp.where(x > 0, jnp.sqrt(x), x) * jnp.roll(x, 2)),
}
POINTS = {
    "negative and zero": jnp.array([1.0, 2.0, 0.0, -1.0, 3.0]),
    "nan": jnp.array([0.5, jnp.nan, 2.0, 1.0, -0.5]),
    "inf": jnp.array([jnp.inf, 1.0, 0.0, 2.0, 0.3]),
}


def same(got, want):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # NaN matches NaN


QUICK = {("sqrt reversed", "negative and zero"), ("inverse", "nan")}
CASES = [
    pytest.param(name, point, marks=() if (name, point) in QUICK else pytest.mark.slow)
    for name in FUNCTIONS
    for point in POINTS
]


@pytest.mark.parametrize(("name", "point"), CASES)
def test_rows_entries_and_blocks_equal_jax_hessian(name, point):
    f, x = FUNCTIONS[name], POINTS[point]
    ref = np.asarray(jax.hessian(f)(x))
    assert not np.isfinite(ref).all()
    H0 = lazyhess.hessian(f, x, sparsity=None)
    for k in range(x.size):
        H = H0.at(x)  # a fresh cache, the same compiled kernels
        same(H[k], ref[k])
        same(H[k], ref[k])  # a second look, from the cache
        H = H0.at(x)
        same([H[k, j] for j in range(x.size)], ref[k])  # single entries, some from cache
    H = H0.at(x)
    same(H[[3, 0, 1, 4], [0, 3, 4, 2]], ref[[3, 0, 1, 4], [0, 3, 4, 2]])
    same(H[1:4, 0:2], ref[1:4, 0:2])
    same(H.diagonal(), np.diagonal(ref))
    same(H[:], ref)


@pytest.mark.parametrize("mode", MODES)
def test_a_row_and_the_whole_hessian_agree_in_every_mode(mode):
    f, x = FUNCTIONS["sqrt reversed"], POINTS["negative and zero"]
    H0 = lazyhess.hessian(f, x, sparsity=None, mode=mode)
    whole = H0[:]
    for k in range(x.size):
        same(H0.at(x)[k], whole[k])


def test_a_row_costs_its_columns_only_where_the_point_is_not_finite():
    f = FUNCTIONS["sqrt reversed"]
    H = lazyhess.hessian(f, jnp.array([1.0, 2.0, 0.5, 1.0, 3.0]), sparsity=None)
    H[3]
    assert H.cache_info().hvps == 1
    # At x[3] = -1 the gradient's rows 1..3 are NaN, and nan * 0 puts them in every
    # column: no unit seed is finite, so a row is read from all five columns.
    H = lazyhess.hessian(f, POINTS["negative and zero"], sparsity=None)
    H[0]
    assert H.cache_info().hvps == 5
    H[3]
    H[2, 4]
    assert H.cache_info().hvps == 5


@pytest.mark.parametrize("point", POINTS)
def test_requests_after_the_whole_hessian_in_one_call_equal_jax_hessian(point):
    # With n > chunk_size, H[:] computes every unit seed in one compiled call
    # (Engine._all_units), whose results must be checked like a chunk's before a
    # later row reads one of them as its row.
    f, x = FUNCTIONS["sqrt reversed"], POINTS[point]
    ref = np.asarray(jax.hessian(f)(x))
    H = lazyhess.hessian(f, x, sparsity=None, chunk_size=2)
    same(H[:], ref)
    assert H.cache_info().hvps == x.size
    for k in range(x.size):
        same(H[k], ref[k])
        same(H[:, k], ref[:, k])
        same([H[k, j] for j in range(x.size)], ref[k])
    same(H[1:4, 0:2], ref[1:4, 0:2])
    same(H.diagonal(), np.diagonal(ref))
    assert H.cache_info().hvps == x.size  # all of it read from the cached columns
