"""Dense Hessians are noticed early: a pattern marked dense, cheap to build and to ask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.problems import PROBLEMS
from lazyhess import SparsityPattern, hessian_sparsity
from lazyhess.sparsity import _detect


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


def _closed(f, x):
    """The jaxpr detection interprets for ``f`` of one flat array ``x``."""
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.make_jaxpr(lambda leaves, dyn: [f(leaves[0])])([spec], [])


def test_probe_gives_the_exact_pattern_on_its_sampled_inputs():
    n = 300
    f = lambda x: jnp.sum(x[:120]) ** 2 + jnp.sum(x[1:] * x[:-1])  # noqa: E731
    full = hessian_sparsity(f, jnp.zeros(n)).to_dense()
    sample = np.sort(np.random.default_rng(3).choice(n, 40, replace=False))
    density = _detect.probe_density(_closed(f, jnp.zeros(n)), [n], 0, sample)
    assert density == full[np.ix_(sample, sample)].mean()


def test_a_dense_function_stops_at_the_budget(monkeypatch):
    # Its dependency matrices outgrow the budget: the probe answers, and the pattern is
    # never assembled (the full pass never finishes).
    probes = []
    probe = _detect.probe_density
    monkeypatch.setattr(
        _detect, "probe_density", lambda *a: probes.append(probe(*a)) or probes[-1]
    )
    monkeypatch.setattr(_detect, "release_unpaired", lambda *a: pytest.fail("full pass ran"))
    loss, params = mlp_loss(sizes=(8, 64, 64, 4))
    pattern = hessian_sparsity(loss, params)
    assert pattern.is_dense and pattern.n == 4996
    assert len(probes) == 1 and probes[0] > 0.99  # the last layer's outputs never meet


def test_a_sparse_function_over_the_budget_stays_exact(monkeypatch):
    # cumsum over 1000 inputs has a dense (linear) dependency matrix, over the budget;
    # the probe finds a sparse sample, so detection runs again, exactly.
    probes = []
    probe = _detect.probe_density
    monkeypatch.setattr(
        _detect, "probe_density", lambda *a: probes.append(probe(*a)) or probes[-1]
    )
    n = 1000
    f = lambda x: jnp.sum(x[1:] * x[:-1]) + jnp.sum(jnp.cumsum(x))  # noqa: E731
    pattern = hessian_sparsity(f, jnp.zeros(n))
    assert len(probes) == 1 and probes[0] < 0.1
    i = np.arange(n - 1)
    assert pattern == SparsityPattern.from_coordinates(i, i + 1, n, symmetrize=True)


@pytest.mark.parametrize("zeros", [False, True])
def test_batched_contraction_with_a_constant(zeros):
    # A dense constant makes each output read a whole fiber (a group map); a constant
    # with zero columns keeps its exact entries. Pattern: one block per batch element,
    # over the inputs its nonzero columns read.
    b, i, j = 3, 4, 5
    a = np.random.default_rng(0).normal(size=(b, i, j)) + 2.0
    if zeros:
        a[:, :, 1] = 0.0
    f = lambda x: jnp.sum(jnp.tanh(jnp.einsum("bij,bj->bi", a, x.reshape(b, j))))  # noqa: E731
    used = np.array([c != 1 or not zeros for c in range(j)])
    block = np.outer(used, used)
    expected = np.kron(np.eye(b, dtype=bool), block)
    got = hessian_sparsity(f, jnp.zeros(b * j)).to_dense()
    np.testing.assert_array_equal(got, expected)


def test_product_of_two_dependent_matrices_pairs_their_entries():
    # (X @ Y)[i, k] = Σ_c X[i, c] Y[c, k]: the bilinear terms pair X[i, c] with Y[c, k];
    # tanh makes each output's row pair with itself. Compared with jax.hessian's nonzeros
    # at a generic point.
    def f(x):
        xm, ym = x[:6].reshape(2, 3), x[6:].reshape(3, 2)
        return jnp.sum(jnp.tanh(xm @ ym)[0]) + jnp.sum(xm[1] @ ym)

    x = jnp.asarray(np.random.default_rng(1).normal(size=12))
    numeric = np.asarray(jax.jit(jax.hessian(f))(x)) != 0
    np.testing.assert_array_equal(hessian_sparsity(f, x).to_dense(), numeric)
