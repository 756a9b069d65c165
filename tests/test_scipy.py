"""lazyhess.scipy with scipy.optimize, Ipopt-style triplets and jax's conjugate gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from jax.flatten_util import ravel_pytree

import lazyhess
import lazyhess.scipy
from benchmarks.problems import PROBLEMS


def _counted(f):
    """``f`` and a list that grows by one each time ``f`` is traced or called in Python."""
    calls = []

    def wrapped(x, *args):
        calls.append(1)
        return f(x, *args)

    return wrapped, calls


def _value(f):
    compiled = jax.jit(f)
    return lambda x, *args: float(compiled(x, *args))


def _trust_constr(f, x0, **options):
    """``f`` minimised by trust-constr with lazyhess's gradient and sparse Hessian."""
    return scipy.optimize.minimize(
        _value(f),
        np.asarray(x0),
        method="trust-constr",
        jac=lazyhess.scipy.jac(f),
        hess=lazyhess.scipy.hess(f),
        options=options,
    )


def _genrose_near(n):
    """GENROSE with a start inside the basin of x = 1 (f* = 1), a few Newton steps away."""
    f, _ = PROBLEMS["GENROSE"].make(n)
    return f, np.asarray(1.0 + 0.3 * np.sin(np.arange(n)))


def test_hess_matches_jax_hessian_and_reuses_pattern():
    f, x0 = PROBLEMS["GENROSE"].make(40)
    counted, calls = _counted(f)
    hess = lazyhess.scipy.hess(counted)
    x0 = np.asarray(x0)
    first = hess(x0)
    for warm in (0.25, 0.125):  # the first points settle and compile how the whole
        hess(x0 + warm)  # Hessian is computed at once (Engine._at_once)
    traced = len(calls)
    points = [x0, x0 + 0.5, np.cos(np.arange(40.0))]
    for x in points:
        H = hess(x)
        assert isinstance(H, sp.csr_array)
        np.testing.assert_array_equal(H.indptr, first.indptr)
        np.testing.assert_array_equal(H.indices, first.indices)
        np.testing.assert_allclose(
            H.toarray(), jax.jit(jax.hessian(f))(jnp.asarray(x)), rtol=1e-12
        )
    assert len(calls) == traced, "a new point re-traced fun: pattern or kernels not reused"


@pytest.mark.slow
def test_hess_passes_minimize_args():
    def f(x, a, scale):
        return scale * jnp.sum((x - a) ** 4) + jnp.sum(x[1:] * x[:-1])

    a, x = np.linspace(0.0, 1.0, 6), np.linspace(-1.0, 1.0, 6)
    for scale in (1.0, 3.0):
        H = lazyhess.scipy.hess(f)(x, a, scale)
        np.testing.assert_allclose(H.toarray(), jax.jit(jax.hessian(f))(x, a, scale), rtol=1e-12)


def test_trust_constr_genrose_1e4():
    n = 10_000
    f, x0 = _genrose_near(n)
    res = _trust_constr(f, x0, gtol=1e-8, xtol=1e-12, maxiter=200)
    assert res.fun == pytest.approx(1.0, abs=1e-10)
    assert np.linalg.norm(res.grad) < 1e-5
    np.testing.assert_allclose(res.x, np.ones(n), atol=1e-6)


def test_trust_constr_genrose_standard_start():
    f, x0 = PROBLEMS["GENROSE"].make(100)
    res = _trust_constr(f, x0, gtol=1e-8, xtol=1e-12, maxiter=1000)
    assert res.fun == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(res.x, np.ones(100), atol=1e-6)


@pytest.mark.parametrize("form", ["hessp", "linear_operator"])
def test_newton_cg_genrose_1e4(form):
    n = 10_000
    f, x0 = _genrose_near(n)
    second = (
        dict(hessp=lazyhess.scipy.hessp(f))
        if form == "hessp"
        else dict(hess=lazyhess.scipy.linear_operator(f))
    )
    res = scipy.optimize.minimize(
        _value(f),
        x0,
        method="Newton-CG",
        jac=lazyhess.scipy.jac(f),
        options=dict(xtol=1e-12, maxiter=200),
        **second,
    )
    assert res.success, res.message
    assert res.fun == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.norm(jax.grad(f)(jnp.asarray(res.x))) < 1e-6
    np.testing.assert_allclose(res.x, np.ones(n), atol=1e-8)


@pytest.mark.slow
def test_hessp_is_one_hvp_and_exact():
    f, x0 = PROBLEMS["ARWHEAD"].make(30)
    hessp = lazyhess.scipy.hessp(f)
    x, p = np.asarray(x0) * 0.7, np.sin(np.arange(30.0))
    dense = jax.jit(jax.hessian(f))(jnp.asarray(x))
    np.testing.assert_allclose(hessp(x, p), dense @ p, rtol=1e-12)
    np.testing.assert_allclose(hessp(x, 2 * p), dense @ (2 * p), rtol=1e-12)


@pytest.mark.slow
def test_trust_constr_clplatea():
    f, x0 = PROBLEMS["CLPLATEA"].make(2500)
    res = _trust_constr(f, x0, gtol=1e-9, xtol=1e-14, maxiter=200)
    assert res.status == 1, res.message  # gtol reached
    assert np.linalg.norm(res.grad) < 1e-8
    # A strictly convex problem: the minimum found by L-BFGS to tight tolerance is the same.
    ref = scipy.optimize.minimize(
        _value(f),
        np.asarray(x0),
        method="L-BFGS-B",
        jac=lazyhess.scipy.jac(f),
        options=dict(gtol=1e-12, ftol=1e-15, maxiter=5000),
    )
    assert res.fun == pytest.approx(ref.fun, rel=1e-9)
    assert res.fun < 0.0


def test_scipy_helpers_refuse_bad_input():
    f = lambda x: jnp.sum(x**4)  # noqa: E731
    with pytest.raises(ValueError, match="1-D array"):
        lazyhess.scipy.hess(f)(np.ones((2, 2)))
    with pytest.raises(ValueError, match="p of the same shape"):
        lazyhess.scipy.hessp(f)(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="fun must be callable"):
        lazyhess.scipy.hessp(3)
    with pytest.raises(ValueError, match="mode='fwd' is not a valid mode"):
        lazyhess.scipy.hess(f, mode="fwd")
    with pytest.raises(ValueError, match="sparsity='dense' is not supported"):
        lazyhess.scipy.hess(f, sparsity="dense")


@pytest.mark.slow
def test_tril_triplets_stable_across_points():
    f, x0 = PROBLEMS["BDQRTIC"].make(60)
    H = lazyhess.hessian(f, x0)
    structure = H.tril()
    rows, cols = structure.coords
    assert np.all(rows >= cols)
    reference = sp.coo_array(sp.tril(H.sparsity.to_scipy("csr").astype(float)))
    assert len(rows) == reference.nnz
    # x = 0 zeroes some stored entries: they stay, as explicit zeros, at their coordinates.
    for x in (x0, jnp.zeros_like(x0), jnp.linspace(-2.0, 2.0, x0.size)):
        values = H.at(x).tril()
        np.testing.assert_array_equal(values.coords[0], rows)
        np.testing.assert_array_equal(values.coords[1], cols)
        dense = np.asarray(jax.jit(jax.hessian(f))(x))
        np.testing.assert_allclose(values.data, dense[rows, cols], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.tril(dense), values.toarray(), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_jax_cg_accepts_a_hessian():
    f, _ = PROBLEMS["GENROSE"].make(50)
    x = jnp.ones(50) + 0.01 * jnp.sin(jnp.arange(50.0))  # positive definite here
    H = lazyhess.hessian(f, x)
    b = jnp.cos(jnp.arange(50.0))
    dense = jax.jit(jax.hessian(f))(x)
    expected = np.linalg.solve(dense, b)
    np.testing.assert_allclose(H @ b, dense @ b, rtol=1e-12)
    solution, _ = jax.scipy.sparse.linalg.cg(H, b, tol=1e-12, maxiter=2000)
    np.testing.assert_allclose(solution, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_jax_cg_accepts_a_flat_pytree_hessian():
    def f(p):
        return jnp.sum(3 * p["a"] ** 2 + jnp.exp(p["a"])) + jnp.sum(p["b"] ** 4 + p["b"] ** 2)

    params = {"a": jnp.linspace(0.0, 1.0, 5), "b": jnp.linspace(-1.0, 1.0, 3)}
    H = lazyhess.hessian(f, params)
    flat, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda v: f(unravel(v))))(flat)
    b = jnp.arange(8.0)
    np.testing.assert_allclose(H.flat @ b, dense @ b, rtol=1e-12)
    solution, _ = jax.scipy.sparse.linalg.cg(H.flat, b, tol=1e-12)
    np.testing.assert_allclose(solution, np.linalg.solve(dense, b), rtol=1e-10)
    jitted = jax.jit(lambda b: jax.scipy.sparse.linalg.cg(H.flat, b, tol=1e-12)[0])
    np.testing.assert_allclose(jitted(b), np.linalg.solve(dense, b), rtol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_jax_cg_as_first_use(jit):
    f = lambda x: jnp.sum(x**4 + x**2)  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 6)
    H = lazyhess.hessian(f, x)
    b = jnp.ones(6)
    dense = jax.jit(jax.hessian(f))(x)
    expected = np.linalg.solve(dense, b)
    solve = lambda b: jax.scipy.sparse.linalg.cg(H, b, tol=1e-12)[0]  # noqa: E731
    np.testing.assert_allclose((jax.jit(solve) if jit else solve)(b), expected, rtol=1e-10)
    np.testing.assert_allclose(H @ b, dense @ b, rtol=1e-12)
