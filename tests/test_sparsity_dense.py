"""Dense Hessians are noticed early: a pattern marked dense, cheap to build and to ask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.problems import PROBLEMS
from lazyhess import SparsityPattern, hessian_sparsity
from lazyhess.sparsity import _detect, _probe


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


def _all_pairs(x):
    y = x.reshape(-1, 3)
    d = y[:, None, :] - y[None, :, :]
    return jnp.sum(1.0 / jnp.sqrt(jnp.sum(d * d, -1) + 1.0))


def _all_pairs_mapped(x):
    y = x.reshape(-1, 3)

    def one(yi):
        d = y - yi
        return jnp.sum(1.0 / jnp.sqrt(jnp.sum(d * d, -1) + 1.0))

    return jnp.sum(jax.lax.map(jax.checkpoint(one), y, batch_size=16))


_W = np.random.default_rng(0).normal(size=(20, 300))
_MASK = np.where(np.arange(300) % 4 == 0, 0.0, 1.5)

# Each exercises rules of the bit probe: broadcasts, masks of constant zeros, quotients,
# selects, transposes, slices, concatenation, reductions, contractions, calls and scans.
BIT_PROBED = {
    "band": lambda x: jnp.sum(x[1:] * x[:-1]) + jnp.sum(x[:120]) ** 2,
    "dense map": lambda x: jnp.sum(jnp.tanh(_W @ x)),
    "masks": lambda x: (
        jnp.sum(jnp.sin(_MASK * x) * x[::-1]) + jnp.sum(jnp.where(_MASK > 0, x**2, x))
    ),
    "quotients": lambda x: jnp.sum(x[:150] / (1.0 + x[150:] ** 2)) + jnp.sum(0.0 / x),
    "x.T @ x": lambda x: jnp.sum(jnp.exp(x.reshape(10, 30).T @ x.reshape(10, 30))),
    "concatenate": lambda x: jnp.sum(
        jnp.concatenate([x[:100] * x[100:200], jnp.zeros(5), x[200:]]) ** 3
    ),
    "reductions": lambda x: (
        jnp.sum(jnp.max(x.reshape(30, 10), axis=1) ** 2) + jnp.sum(x.reshape(30, 10), 0).sum() ** 2
    ),
    "all pairs": _all_pairs,
    "all pairs, lax.map": _all_pairs_mapped,
    "map, partly read": lambda x: jnp.sum(
        jax.lax.map(lambda r: jnp.sum(jnp.tanh(r * x[:3])), x.reshape(-1, 3))[:40] ** 2
    ),
    "jit": lambda x: jax.jit(lambda y: jnp.sum(jnp.tanh(y[:50]) * y[50:100]))(x) + jnp.sum(x**2),
    "scans": lambda x: (
        jax.lax.scan(lambda c, xi: (c * jnp.sin(xi), c + xi), 1.0, x[:50])[0]
        + jnp.sum(jax.lax.scan(lambda c, xi: (c, c * xi), 0.5, x)[1])
    ),
    "batched einsum": lambda x: jnp.sum(
        jnp.tanh(
            jnp.einsum("bij,bjk->bik", x[:288].reshape(2, 12, 12), x[:288].reshape(2, 12, 12))
        )
    ),
}


@pytest.mark.parametrize("name", list(BIT_PROBED))
def test_bit_probe_gives_the_exact_pattern_on_its_sampled_inputs(name, monkeypatch):
    # The bit probe answers alone (no fallback to the CSR probe) and equals the
    # submatrix of the full pattern on its sample.
    f, n = BIT_PROBED[name], 300
    full = hessian_sparsity(f, jnp.zeros(n)).to_dense()
    sample = np.sort(np.random.default_rng(3).choice(n, 64, replace=False))
    monkeypatch.setattr(_detect, "_interpret", lambda *a, **k: pytest.fail("CSR probe ran"))
    density = _detect.probe_density(_closed(f, jnp.zeros(n)), [n], 0, sample)
    assert density == full[np.ix_(sample, sample)].mean()


def test_bit_probe_falls_back_where_it_has_no_rule():
    # A constant with zeros in a contraction, and a product reduction: the CSR probe
    # answers, exactly.
    n = 200
    w = np.where(np.arange(n) % 3 == 0, 0.0, 1.0) * np.ones((4, n))
    f = lambda x: jnp.sum(jnp.tanh(w @ x)) + jnp.prod(x[:5])  # noqa: E731
    closed = _closed(f, jnp.zeros(n))
    sample = np.sort(np.random.default_rng(4).choice(n, 64, replace=False))
    with pytest.raises(_probe.Unsupported):
        _probe.probe_density(closed, [n], 0, sample)
    full = hessian_sparsity(f, jnp.zeros(n)).to_dense()
    assert _detect.probe_density(closed, [n], 0, sample) == full[np.ix_(sample, sample)].mean()


def test_long_map_over_rows_is_detected():
    # lax.map over 1400 rows is a scan too long to unroll (its ys were once refused): the
    # fixed point of its carried dependencies gives a superset of the arrow pattern
    # d²/dr_c dx_c tanh(r_c x_c) (rows r, the first row x_0..2 shared).
    def f(x):
        return jnp.sum(jax.lax.map(lambda r: jnp.sum(jnp.tanh(r * x[:3])), x.reshape(-1, 3)))

    n = 4200
    pattern = hessian_sparsity(f, jnp.zeros(n))
    i = np.arange(n)
    rows, cols = np.concatenate([i, i, i % 3]), np.concatenate([i, i % 3, i])
    held = np.repeat(i, np.diff(pattern.indptr)) * n + pattern.indices
    assert np.isin(rows * n + cols, held).all()
