"""Constant Hessians: told from the traced HVP, and shared by every point of the function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from lazyhess.sparsity import depends

A = jnp.asarray(np.random.default_rng(0).normal(size=(6, 6)))
PAIRS = (jnp.array([0, 2, 5]), jnp.array([1, 4, 3]))

QUADRATIC = {
    "form": lambda x: x @ A @ x + 3.0 * jnp.sum(x),
    "square": lambda x: jnp.sum(jnp.square(x - 1.0)) + jnp.mean(x) ** 2 + jnp.var(x),
    "products": lambda x: jnp.sum(x[PAIRS[0]] * x[PAIRS[1]]) + jnp.sum(x[:-1] * x[1:]),
    "einsum": lambda x: jnp.einsum("i,ij,j->", x, A, x),
    "outer": lambda x: jnp.sum(jnp.outer(x, x) * A),
    "jitted": lambda x: jax.jit(lambda z: jnp.sum(z**2))(x),
    "checkpointed": lambda x: jax.checkpoint(lambda z: jnp.sum(z * (A @ z)))(x),
}
OTHERS = {
    "cubic": lambda x: jnp.sum(x**3),
    "sin": lambda x: jnp.sum(jnp.sin(x)),
    "piecewise": lambda x: jnp.sum(jnp.where(x > 0, x**2, 3.0 * x**2)),
    "relu": lambda x: jnp.sum(jax.nn.relu(x) ** 2),
}
MODES = ("fwd_over_rev", "rev_over_rev", "rev_over_fwd")


def _hessians(f, points):
    return [np.asarray(jax.hessian(f)(p)) for p in points]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(QUADRATIC) + sorted(OTHERS))
def test_a_constant_hessian_is_told_soundly(name, mode):
    f = {**QUADRATIC, **OTHERS}[name]
    rng = np.random.default_rng(1)
    points = [jnp.asarray(rng.normal(size=6)) for _ in range(3)]
    H = lazyhess.hessian(f, points[0], mode=mode)
    constant = H._engine.kernels.constant(points[0], [])
    first, *rest = _hessians(f, points)
    if constant:  # sound: never claimed for a Hessian that changes
        for other in rest:
            np.testing.assert_array_equal(other, first)
    assert constant == (name in QUADRATIC)


def test_depends_follows_data_flow_into_calls():
    def f(a, b, c):
        inner = jax.jit(lambda u, w: (u * 2.0, w + 1.0))(a, b)
        return inner[0], inner[1] * c, jnp.cos(c)

    closed = jax.make_jaxpr(f)(1.0, 2.0, 3.0)
    assert depends(closed, [True, False, False]) == [True, False, False]
    assert depends(closed, [False, True, False]) == [False, True, False]
    assert depends(closed, [False, False, True]) == [False, True, True]
    looped = jax.make_jaxpr(lambda a, b: jax.lax.fori_loop(0, 3, lambda i, s: s + b, a))
    assert depends(looped(1.0, 2.0), [False, True]) == [True]  # loops: all inputs, sound


def _form(x):
    return 0.5 * x @ A @ x + jnp.sum(x[:-1] * x[1:])


X = jnp.linspace(-1.0, 1.0, 6)


def test_points_of_a_constant_hessian_share_their_results():
    H = lazyhess.hessian(_form, X)
    np.testing.assert_allclose(H[2], jax.hessian(_form)(X)[2], rtol=1e-12)
    spent = H.cache_info().hvps
    moved = H.at(X + 1.0)
    assert moved.cost(2).new_hvps == 0
    np.testing.assert_allclose(moved[2], jax.hessian(_form)(X + 1.0)[2], rtol=1e-12)
    assert moved.cache_info().hvps == 0 and moved.cache_info().hits > 0
    dense = moved.to_dense()  # computed at the new point, served at the first
    np.testing.assert_allclose(dense, jax.hessian(_form)(X + 1.0), rtol=1e-12)
    spent_at_moved = moved.cache_info().hvps
    assert spent_at_moved > 0
    again = H.at(X - 2.0)
    np.testing.assert_allclose(again.to_sparse("csr").toarray(), dense, rtol=1e-12)
    np.testing.assert_allclose(H.to_dense(), dense, rtol=1e-12)
    assert again.cache_info().hvps == 0
    assert H.cache_info().hvps == spent
    # Each point answers its own first-order values.
    np.testing.assert_allclose(again.grad, jax.grad(_form)(X - 2.0), rtol=1e-12)


def test_a_diagonal_at_another_point_reads_the_shared_seeds():
    x = jnp.linspace(-1.0, 1.0, 30)
    H = lazyhess.hessian(_band, x)
    np.testing.assert_allclose(H.diagonal(), np.diag(jax.hessian(_band)(x)), rtol=1e-12)
    moved = H.at(x + 1.0)
    np.testing.assert_allclose(moved.diagonal(), np.diag(jax.hessian(_band)(x + 1.0)), rtol=1e-12)
    assert moved.cache_info().hvps == 0


def _band(x):
    return jnp.sum(x**2) + jnp.sum(x[:-1] * x[1:]) + 2.0 * jnp.sum(x[:-2] * x[2:])


def test_hessians_scaled_by_another_argument_are_not_shared():
    def lagrangian(x, lam):
        return lam * jnp.sum(x**2) + jnp.sum(x[:-1] * x[1:])

    H = lazyhess.hessian(lagrangian, X, jnp.asarray(2.0))
    H.to_sparse()
    moved = H.at(X, jnp.asarray(5.0))
    ref = jax.hessian(lagrangian)(X, 5.0)
    np.testing.assert_allclose(moved.to_sparse("csr").toarray(), ref, rtol=1e-12)
    assert moved.cache_info().hvps > 0


def test_an_argument_outside_the_second_derivative_keeps_it_constant():
    def shifted(x, c):
        return jnp.sum((x - c) ** 2) + jnp.sum(x[:-1] * x[1:])

    H = lazyhess.hessian(shifted, X, jnp.ones(6))
    H.to_sparse()
    moved = H.at(X + 3.0, 4.0 * jnp.ones(6))
    ref = jax.hessian(shifted)(X + 3.0, 4.0 * jnp.ones(6))
    np.testing.assert_allclose(moved.to_sparse("dense"), ref, rtol=1e-12)
    assert moved.cache_info().hvps == 0


def test_nonconstant_hessians_recompute_at_new_points():
    H = lazyhess.hessian(OTHERS["cubic"], X)
    H.to_sparse()
    moved = H.at(X + 1.0)
    np.testing.assert_allclose(
        moved.to_sparse("dense"), jax.hessian(OTHERS["cubic"])(X + 1.0), rtol=1e-12
    )
    assert moved.cache_info().hvps > 0


def test_shared_results_with_pytrees_and_samples():
    def pair(p):
        return jnp.sum(p["a"] * p["b"][:3]) + jnp.sum(p["b"] ** 2)

    params = {"a": jnp.arange(3.0), "b": jnp.arange(4.0)}
    H = lazyhess.hessian(pair, params)
    H["a"]["b"]
    moved_params = {"a": params["a"] + 1.0, "b": params["b"] - 1.0}
    moved = H.at(moved_params)
    ref = jax.hessian(pair)(moved_params)
    np.testing.assert_allclose(moved["a"]["b"], ref["a"]["b"], rtol=1e-12)
    np.testing.assert_allclose(moved["b"]["b"], ref["b"]["b"], rtol=1e-12)

    def sample(x):
        return jnp.sum(x**2) + x[0] * x[1]

    xs = jnp.arange(12.0).reshape(4, 3)
    per = lazyhess.hessian(jax.vmap(sample), xs, batch_axis=0)
    per[:]
    moved_per = per.at(xs * 2.0)
    np.testing.assert_allclose(moved_per[:], jax.vmap(jax.hessian(sample))(xs * 2.0))
    assert moved_per.cache_info().hvps == 0


def test_nonfinite_marks_are_shared_with_the_results():
    def f(x):
        return jnp.nan * x[0] * x[1] + jnp.sum(x**2)

    # Column 0 (its own seed) is finite past the first two entries, row 0 is NaN
    # everywhere (nan * 0 in every other column): read at the second point, the cached
    # seed's row must not pass for its column.
    H = lazyhess.hessian(f, X, sparsity=None)
    ref = np.asarray(jax.hessian(f)(X + 1.0))
    np.testing.assert_array_equal(H[:, 0], ref[:, 0])
    assert H.cache_info().hvps == 1
    moved = H.at(X + 1.0)
    np.testing.assert_array_equal(moved[0], ref[0])


def test_traced_points_do_not_share():
    H = lazyhess.hessian(_form, X)
    H.to_sparse()
    spent = H.cache_info()

    @jax.jit
    def at(z):
        return H.at(z).to_sparse("dense")

    np.testing.assert_allclose(at(X + 1.0), jax.hessian(_form)(X + 1.0), rtol=1e-12)
    assert H.cache_info() == spent


def test_without_a_cache_constancy_is_not_asked():
    traces = []

    def f(x):
        traces.append(1)
        return _form(x)

    H = lazyhess.hessian(f, X, cache_bytes=0)
    H[1]
    count = len(traces)
    moved = H.at(X + 1.0)
    assert len(traces) == count  # no trace of the HVP to tell constancy
    np.testing.assert_allclose(moved[1], jax.hessian(_form)(X + 1.0)[1], rtol=1e-12)
    assert moved.cache_info().hvps == 1
