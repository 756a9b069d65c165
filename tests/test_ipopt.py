"""Lagrangian Hessians with runtime multipliers, and the cyipopt problem interface.

Values are compared with a dense ``jax.hessian`` of the Lagrangian; reuse is pinned by
counting detections (calls of the detector) and traces of the function.
"""

import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
import lazyhess._setup
from lazyhess.ipopt import IpoptProblem


def objective(x):
    return jnp.sum((x - 1.0) ** 2) + jnp.sum(x[:-1] ** 2 * x[1:])


def constraints(x):
    # Couples x[0] with x[-1] and x[i] with x[i + 2]: entries the objective does not have.
    return jnp.stack([x[0] * x[-1] - 1.0, jnp.sum(x[:-2] ** 2 * x[2:]), jnp.sum(x**2) - 4.0])


def dense_lagrangian_hessian(x, lam, sigma):
    def lagrangian(z):
        return sigma * objective(z) + lam @ constraints(z)

    return np.asarray(jax.jit(jax.hessian(lagrangian))(x))


@pytest.fixture
def counted(monkeypatch):
    """Counts of detector calls and of traces of the Lagrangian."""
    counts = {"detections": 0, "traces": 0}
    detect = lazyhess._setup.call_sparsity

    def counting_detect(*args, **kwargs):
        counts["detections"] += 1
        return detect(*args, **kwargs)

    monkeypatch.setattr(lazyhess._setup, "call_sparsity", counting_detect)

    def lagrangian(x, lam):
        counts["traces"] += 1
        return objective(x) + lam @ constraints(x)

    return counts, lagrangian


def test_multipliers_are_runtime_arguments(counted):
    counts, lagrangian = counted
    n = 8
    x = jnp.linspace(0.5, 1.5, n)
    H = lazyhess.hessian(lagrangian, x, jnp.zeros(3), argnums=0)  # zeros at detection
    first = H.to_sparse("numpy")
    np.testing.assert_allclose(first, dense_lagrangian_hessian(x, np.zeros(3), 1.0), atol=1e-12)
    pattern = H.sparsity.to_scipy("csr").toarray()
    assert pattern[0, n - 1] and pattern[0, 2]  # couplings that only the constraints make
    detections = counts["detections"]
    assert detections == 1
    rng = np.random.default_rng(0)
    for step in range(5):
        if step == 2:
            # The first points settle how the HVPs run and compile the program that
            # computes and recovers the whole Hessian at once (Engine._at_once); later
            # ones only run it.
            traces = counts["traces"]
        x2 = jnp.asarray(rng.uniform(0.5, 1.5, n))
        lam = jnp.asarray(rng.normal(size=3))
        H2 = H.at(x2, lam)
        np.testing.assert_allclose(
            H2.to_sparse("numpy"), dense_lagrangian_hessian(x2, lam, 1.0), rtol=1e-10, atol=1e-12
        )
        assert H2.sparsity is H.sparsity
    assert counts["detections"] == detections
    assert counts["traces"] == traces  # pattern, coloring and compiled kernels reused


class FakeIpopt:
    """Calls the problem interface as Ipopt does: structures once, values per iterate."""

    def __init__(self, problem):
        self.problem = problem
        self.hessian_structure = problem.hessianstructure()
        self.jacobian_structure = problem.jacobianstructure()

    def iterate(self, x, lam, sigma):
        p = self.problem
        return (
            p.objective(x),
            p.gradient(x),
            p.constraints(x),
            p.jacobian(x),
            p.hessian(x, lam, sigma),
        )


def test_adapter_against_a_fake_ipopt():
    n = 7
    problem = IpoptProblem(objective, np.ones(n), constraints)
    ipopt = FakeIpopt(problem)
    rows, cols = ipopt.hessian_structure
    assert np.all(rows >= cols)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)
    jrows, jcols = ipopt.jacobian_structure
    gradient, jacobian = jax.jit(jax.grad(objective)), jax.jit(jax.jacfwd(constraints))
    rng = np.random.default_rng(1)
    for sigma in (1.0, 0.0, 2.5):
        x, lam = rng.uniform(0.5, 1.5, n), rng.normal(size=3)
        f, g, c, jac, hess = ipopt.iterate(x, lam, sigma)
        np.testing.assert_allclose(f, objective(x), rtol=1e-12)
        np.testing.assert_allclose(g, gradient(x), rtol=1e-12)
        np.testing.assert_allclose(c, constraints(x), rtol=1e-12)
        dense_jac = np.asarray(jacobian(x))
        np.testing.assert_allclose(jac, dense_jac[jrows, jcols], rtol=1e-12)
        mask = np.zeros_like(dense_jac, bool)
        mask[jrows, jcols] = True
        assert np.all(dense_jac[~mask] == 0)
        expected = dense_lagrangian_hessian(x, lam, sigma)
        np.testing.assert_allclose(hess, expected[rows, cols], rtol=1e-10, atol=1e-12)
        lower = np.tril(np.ones((n, n), bool))
        lower[rows, cols] = False
        assert np.all(expected[lower] == 0)  # the structure misses no entry
        assert all(
            np.array_equal(a, b)
            for a, b in zip(problem.hessianstructure(), ipopt.hessian_structure, strict=True)
        )


def test_adapter_errors():
    with pytest.raises(ValueError, match="x0 must be a 1-D array"):
        IpoptProblem(objective, np.ones((2, 2)))
    with pytest.raises(ValueError, match="constraints must return a 1-D array"):
        IpoptProblem(objective, np.ones(3), lambda x: jnp.sum(x))
    problem = IpoptProblem(objective, np.ones(3))
    assert problem.m == 0 and problem.jacobian(np.ones(3)).shape == (0,)
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        problem.gradient(np.ones(4))


def test_cyipopt_solves_hs071():
    pytest.importorskip("cyipopt")

    def f(x):
        return x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2]

    def c(x):
        return jnp.stack([jnp.prod(x), jnp.sum(x**2)])

    problem = IpoptProblem(f, np.array([1.0, 5.0, 5.0, 1.0]), c)
    nlp = problem.problem(lb=1.0, ub=5.0, cl=[25.0, 40.0], cu=[np.inf, 40.0])
    nlp.add_option("print_level", 0)
    nlp.add_option("sb", "yes")
    x, info = nlp.solve(np.array([1.0, 5.0, 5.0, 1.0]))
    assert info["status"] == 0
    np.testing.assert_allclose(info["obj_val"], 17.0140173, rtol=1e-6)
    np.testing.assert_allclose(x, [1.0, 4.7429994, 3.8211503, 1.3794082], rtol=1e-6)


def test_example_solves_with_ipopt(capsys):
    pytest.importorskip("cyipopt")
    path = Path(__file__).resolve().parent.parent / "examples" / "ipopt_lagrangian.py"
    x, info = runpy.run_path(str(path))["main"](n=20, k=3)
    out = capsys.readouterr().out
    assert "Lagrangian Hessian: 39 entries in the lower triangle" in out
    assert info["status"] == 0
    residual = x[:3] * x[1:4] - x[1:4] ** 2 + 0.1
    np.testing.assert_allclose(residual, 0, atol=1e-8)
    assert np.sum(x**2) <= 10 + 1e-8
