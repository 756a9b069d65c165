"""The dense engine: the whole Hessian in one compiled call, a block by its columns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODES, assert_tree_close

import lazyhess


def mlp():
    """A tanh MLP's mean squared output over a dict of layers: 32 parameters."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(16, 3))
    params = {
        f"layer{k}": {
            "w": jnp.asarray(rng.normal(size=(a, b))),
            "b": jnp.asarray(rng.normal(size=b)),
        }
        for k, (a, b) in enumerate([(3, 5), (5, 2)])
    }

    def loss(p):
        h = jnp.tanh(inputs @ p["layer0"]["w"] + p["layer0"]["b"])
        return jnp.mean((h @ p["layer1"]["w"] + p["layer1"]["b"]) ** 2)

    return loss, params


LOSS, PARAMS = mlp()
N = 32
REF = jax.jit(jax.hessian(LOSS))(PARAMS)


@pytest.mark.parametrize(
    ("mode", "chunk_size"), [(mode, 5) for mode in MODES] + [("fwd_over_rev", 8)]
)
def test_whole_hessian_matches_jax(mode, chunk_size):
    # n > chunk_size: every unit seed in one call, chunked on the device (5 pads the last).
    H = lazyhess.hessian(LOSS, PARAMS, sparsity=None, chunk_size=chunk_size, mode=mode)
    assert_tree_close(H[:], REF)
    info = H.cache_info()
    assert info.hvps == N and info.entries == N
    assert_tree_close(H.to_dense(), REF)
    assert H.cache_info().hvps == N  # all of it was cached


def test_a_new_point_reuses_the_traced_program():
    traces = []

    def loss(p):
        traces.append(1)
        return LOSS(p)

    H = lazyhess.hessian(loss, PARAMS, sparsity=None, chunk_size=8)
    H[:]
    count = len(traces)
    moved = jax.tree_util.tree_map(lambda a: a + 0.5, PARAMS)
    assert_tree_close(H.at(moved)[:], jax.jit(jax.hessian(LOSS))(moved))
    # The first new point traces the HVP once more, to tell whether the Hessian is constant
    # (Kernels.constant); the kernels themselves are not traced again, at any point.
    assert len(traces) == count + 1
    again = jax.tree_util.tree_map(lambda a: a - 0.25, PARAMS)
    assert_tree_close(H.at(again)[:], jax.jit(jax.hessian(LOSS))(again))
    assert len(traces) == count + 1


def test_a_small_cache_keeps_the_last_columns_of_the_whole():
    column = N * 8
    H = lazyhess.hessian(LOSS, PARAMS, sparsity=None, chunk_size=8, cache_bytes=4 * column)
    flat = np.asarray(H.flat[:])
    info = H.cache_info()
    assert info.entries == 4 and info.bytes == 4 * column
    np.testing.assert_allclose(H.flat[N - 1], flat[N - 1])  # cached
    assert H.cache_info().hvps == N
    np.testing.assert_allclose(H.flat[0], flat[0])  # evicted: one HVP
    assert H.cache_info().hvps == N + 1


def test_a_pytree_block_costs_its_columns():
    H = lazyhess.hessian(LOSS, PARAMS, sparsity=None, chunk_size=8)
    np.testing.assert_allclose(H["layer1"]["w"]["layer1"]["w"], REF["layer1"]["w"]["layer1"]["w"])
    assert H.cache_info().hvps == 10
    # The columns of w1 also hold its rows: a block with them costs nothing more.
    np.testing.assert_allclose(H["layer0"]["b"]["layer1"]["w"], REF["layer0"]["b"]["layer1"]["w"])
    assert H.cache_info().hvps == 10
    # An off-diagonal block on its own: one HVP per row or per column, the fewer (5 rows).
    H = H.at(PARAMS)
    np.testing.assert_allclose(H["layer0"]["b"]["layer1"]["w"], REF["layer0"]["b"]["layer1"]["w"])
    assert H.cache_info().hvps == 5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_whole_batch_matches_vmapped_hessian(mode):
    def per_sample(p):
        return jnp.sum(jnp.sin(p["w"]) ** 2) * p["b"] + jnp.sum(p["w"] ** 3) * p["b"] ** 2

    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(4, 2, 3))), "b": jnp.asarray(rng.normal(size=4))}
    batched = jax.vmap(per_sample)
    H = lazyhess.hessian(batched, params, batch_axis=0, sparsity=None, chunk_size=2, mode=mode)
    assert_tree_close(H[:], jax.jit(jax.vmap(jax.hessian(per_sample)))(params))
    assert H.cache_info().hvps == 7


@pytest.mark.slow
def test_nan_propagates_as_in_jax():
    def f(z):
        return jnp.sum(z**3) + z[0] * z[2]

    x = jnp.array([1.0, jnp.nan, 2.0, 0.5])
    ref = np.asarray(jax.hessian(f)(x))  # eager: jit lets XLA drop nan * 0
    got = np.asarray(lazyhess.hessian(f, x, sparsity=None, chunk_size=1)[:])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)])
