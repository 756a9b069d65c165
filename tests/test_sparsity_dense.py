"""Dense Hessians are noticed early: a pattern marked dense, cheap to build and to ask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.problems import PROBLEMS
from lazyhess import SparsityPattern, hessian_sparsity


def mlp_loss(sizes=(8, 24, 24, 4), batch=16):
    """A tanh MLP's mean squared output over a fixed batch, as a function of its params."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(sizes[0], batch))
    params = {
        f"layer{k}": (jnp.zeros((b, a)), jnp.zeros(b))
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))
    }

    def loss(p):
        z = inputs
        for k in range(len(sizes) - 1):
            w, b = p[f"layer{k}"]
            z = w @ z + b[:, None]
            if k < len(sizes) - 2:
                z = jnp.tanh(z)
        return jnp.mean(z**2)

    return loss, params


def test_dense_pattern_costs_nothing_until_read():
    p = SparsityPattern.dense(5, leaf_offsets=[0, 2, 5])
    assert p.is_dense and p.nnz == 25 and p.density == 1.0 and p.n == 5
    assert p.leaf_offsets == (0, 2, 5)
    assert p == SparsityPattern.from_dense(np.ones((5, 5)))
    np.testing.assert_array_equal(p.to_dense(), np.ones((5, 5), bool))
    np.testing.assert_array_equal(p.row_indices(3), np.arange(5))
    assert p.block(0, 1).shape == (2, 3) and p.block(0, 1).nnz == 6
    assert hash(p) == hash(SparsityPattern.dense(5))
    assert not SparsityPattern.from_dense(np.eye(5)).is_dense
    with pytest.raises(ValueError, match="leaf_offsets must rise from 0 to n=5"):
        SparsityPattern.dense(5, leaf_offsets=[0, 6, 5])


def test_tanh_of_a_dense_linear_map_is_dense():
    n = 600
    a = np.random.default_rng(1).normal(size=(n, n))
    pattern = hessian_sparsity(lambda x: jnp.sum(jnp.tanh(a @ x)), jnp.zeros(n))
    assert pattern.is_dense and pattern.nnz == n * n


def test_a_dense_block_over_most_inputs_makes_the_pattern_dense():
    # The exact pattern is a 480 x 480 block and a diagonal (64 % of the entries); the
    # block alone passes the threshold, so detection stops there and says dense.
    n, k = 600, 480
    a = np.random.default_rng(1).normal(size=(k, k))
    f = lambda x: jnp.sum(jnp.tanh(a @ x[:k])) + jnp.sum(x[k:] ** 2)  # noqa: E731
    pattern = hessian_sparsity(f, jnp.zeros(n))
    assert pattern.is_dense and pattern.nnz == n * n


def test_mlp_is_dense():
    loss, params = mlp_loss()
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    pattern = hessian_sparsity(loss, params)
    # The exact pattern is not full (the last layer's rows never meet), so this is the
    # early answer, not an assembled pattern that happens to be full.
    assert pattern.is_dense and pattern.n == n
    assert pattern.leaf_offsets[-1] == n and len(pattern.leaf_offsets) == 7


def test_nearly_dense_block_below_the_threshold_stays_exact():
    # One dense block over 0.4 of the inputs covers 16 % of the matrix: not dense.
    n = 1000
    k = 400
    f = lambda x: jnp.sum(x[:k]) ** 2 + jnp.sum(x[k:] ** 2)  # noqa: E731
    pattern = hessian_sparsity(f, jnp.zeros(n))
    assert not pattern.is_dense
    assert pattern.nnz == k * k + (n - k)


def test_large_sparse_function_is_not_dense():
    f, x = PROBLEMS["GENROSE"].make(2000)
    pattern = hessian_sparsity(f, x)
    assert not pattern.is_dense and pattern.nnz == 3 * 2000 - 2
