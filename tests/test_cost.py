"""The dense engine's laziness, pinned by counting HVP directions, cache hits, compilations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mixed

import lazyhess


def dense(fun, *args, **kwargs):
    return lazyhess.hessian(fun, *args, sparsity=None, **kwargs)


X = jax.random.normal(jax.random.PRNGKey(0), (10,))
REF = np.asarray(jax.jit(jax.hessian(mixed))(X))


def hvps(H):
    return H.cache_info().hvps


def test_construction_evaluates_nothing():
    H = dense(mixed, X)
    assert H.cache_info() == lazyhess.CacheInfo(0, 0, 0, 0, 256 * 2**20, 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, cost",
    [
        (3, 1),
        ((slice(None), 7), 1),
        ((slice(2, 9), [0, 4]), 2),
        ((slice(0, 3), slice(None)), 3),
        ((slice(None), slice(None)), 10),
        (([1, 2], [3, 4]), 2),
        ((4, 5), 1),
        ((np.arange(10) < 2, slice(4, 9)), 2),
    ],
)
def test_request_costs_min_of_rows_and_columns(key, cost):
    H = dense(mixed, X)
    np.testing.assert_allclose(H[key], REF[key])
    assert hvps(H) == cost


@pytest.mark.slow
def test_repeated_and_overlapping_requests_reuse_directions():
    H = dense(mixed, X)
    H[2]
    H[2]
    assert hvps(H) == 1
    H[1:4]  # rows 1, 3 new, row 2 cached
    assert hvps(H) == 3
    info = H.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 3, 3)


def test_symmetry_cached_row_serves_column():
    H = dense(mixed, X)
    H[6]
    np.testing.assert_allclose(H[:, 6], REF[:, 6])
    np.testing.assert_allclose(H[[1, 2, 3], 6], REF[[1, 2, 3], 6])
    assert hvps(H) == 1


@pytest.mark.slow
def test_partially_cached_block_costs_only_the_rest():
    H = dense(mixed, X)
    H[[0, 1]]
    np.testing.assert_allclose(H[0:5, 0:5], REF[0:5, 0:5])
    assert hvps(H) == 2 + 3


@pytest.mark.slow
def test_blocks_share_directions():
    def f(a, b):
        return jnp.sum(jnp.sin(a) * b[:3]) * jnp.sum(b**2) + jnp.sum(a**3)

    a, b = jnp.arange(3.0), jnp.arange(4.0)
    H = dense(f, a, b, argnums=(0, 1))
    ref = jax.jit(jax.hessian(f, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(H[0][0][1], ref[0][0][1])
    np.testing.assert_allclose(H[0][1][1], ref[0][1][1])
    assert hvps(H) == 1
    H[:]
    assert hvps(H) == 7


@pytest.mark.slow
def test_batch_and_outputs_do_not_multiply_the_count():
    Hb = dense(lambda X: jnp.sum(jnp.sin(X) * X**2, axis=1), jnp.ones((50, 4)), batch_axis=0)
    Hb[:, 2]
    assert hvps(Hb) == 1
    Hb[...]
    assert hvps(Hb) == 4
    Ho = dense(lambda x: jnp.outer(x, x) ** 2, jnp.arange(5.0))
    Ho[..., 3]
    assert hvps(Ho) == 1


def test_eviction_under_a_small_budget_keeps_results_right():
    row_bytes = 10 * 8
    H = dense(mixed, X, cache_bytes=3 * row_bytes)
    for i in range(6):
        np.testing.assert_allclose(H[i], REF[i])
    info = H.cache_info()
    assert info.entries == 3 and info.bytes == 3 * row_bytes
    np.testing.assert_allclose(H[0], REF[0])  # evicted: computed again
    np.testing.assert_allclose(H[5], REF[5])  # still cached
    assert hvps(H) == 7
    H.clear_cache()
    assert H.cache_info().entries == 0 and H.cache_info().hvps == 7


def test_no_cache():
    H = dense(mixed, X, cache_bytes=0)
    H[1]
    H[1]
    assert hvps(H) == 2 and H.cache_info().entries == 0
    np.testing.assert_allclose(H[:], REF)


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
def test_chunks_give_the_same_values(chunk_size):
    H = dense(mixed, X, chunk_size=chunk_size)
    np.testing.assert_allclose(H[:], REF)
    assert hvps(H) == 10


@pytest.mark.slow
def test_varied_requests_do_not_retrace():
    traces = []

    def f(x):
        traces.append(1)
        return mixed(x)

    # Kernels compile per chunk size, not per request: once the sizes have been seen,
    # other requests and other points trace nothing.
    H = dense(f, X, chunk_size=8)
    keys = [0, (slice(1, 3),), (slice(None), [4, 5, 6]), (slice(None),), ([7, 8], [9, 9])]
    for key in keys:
        H.at(X)[key]  # each kind as a point's first request
        H[key]  # and as a later one
    first = len(traces)
    for key in [3, (slice(2, 4),), (slice(None), [1, 2, 8]), ([0, 5], [2, 2]), (slice(None),)]:
        H[key]
        H.at(X - 1.0)[key]
    H2 = H.at(X + 1.0)
    reference = np.asarray(jax.jit(jax.hessian(mixed))(X + 1.0))
    np.testing.assert_allclose(H2[:], reference)
    np.testing.assert_allclose(H2[4], reference[4])
    assert len(traces) == first


def test_diagonal_dense_costs_one_hvp_per_entry():
    H = dense(mixed, X)
    np.testing.assert_allclose(H.diagonal(), np.diag(REF))
    assert hvps(H) == 10


def test_hvp_costs_one_direction_per_vector():
    H = dense(mixed, X)
    V = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(H @ V, REF @ V)
    assert hvps(H) == 3 and H.cache_info().misses == 0
