"""A user's pattern smaller than the truth raises instead of giving wrong numbers (issue 11.3).

Whole-Hessian requests check a given pattern once per function: the recovered matrix
against the exact HVP of one random probe (one extra HVP), and on a mismatch the unit HVPs
of the disagreeing rows, which name a missing entry.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from benchmarks.problems import PROBLEMS


def hvps(H):
    return H.cache_info().hvps


def product(x):
    return x[0] * x[1] + 0.0 * x[2]


EYE = np.eye(3, dtype=bool)
WHOLE = {
    "H[:]": lambda H: H[:],
    "to_dense": lambda H: H.to_dense(),
    "to_sparse": lambda H: H.to_sparse("csr"),
    "asarray": lambda H: np.asarray(H),
}


@pytest.mark.parametrize("whole", list(WHOLE))
def test_a_pattern_missing_an_entry_is_named(whole):
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=EYE)
    with pytest.raises(ValueError, match=r"misses entry \(0, 1\).* H\[0, 1\] = 1\.0"):
        WHOLE[whole](H)
    assert hvps(H) == 1 + 1 + 1  # the one color, the probe, row 0's unit HVP


def test_verify_false_keeps_the_old_behaviour():
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=EYE, verify=False)
    np.testing.assert_array_equal(H[:], np.diag([1.0, 1.0, 0.0]))  # wrong, as asked
    assert hvps(H) == 1


def test_requests_that_are_not_whole_are_not_checked():
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=EYE)
    H[0]
    H[1:, 1:]
    H.diagonal()
    assert hvps(H) <= 3


def _random_problem(seed, n=12):
    """A quartic with a random symmetric coupling graph, its true pattern and edges."""
    rng = np.random.default_rng(seed)
    edges = {tuple(sorted(e)) for e in rng.integers(0, n, size=(2 * n, 2)) if e[0] != e[1]}
    edges = sorted(edges)
    a = jnp.asarray([i for i, _ in edges])
    b = jnp.asarray([j for _, j in edges])
    w = jnp.asarray(rng.uniform(0.5, 2.0, len(edges)))

    def f(x):
        return jnp.sum(w * (x[a] * x[b]) ** 2) + jnp.sum(jnp.cos(x))

    truth = np.eye(n, dtype=bool)
    for i, j in edges:
        truth[i, j] = truth[j, i] = True
    x = jnp.asarray(rng.uniform(0.5, 1.5, n))
    return f, x, truth, edges, rng


@pytest.mark.parametrize(
    "seed", [0, 1, 2] + [pytest.param(s, marks=pytest.mark.slow) for s in (3, 4, 5)]
)
@pytest.mark.slow
def test_random_under_specified_patterns_name_a_missing_entry(seed):
    f, x, truth, edges, rng = _random_problem(seed)
    drop = [edges[k] for k in rng.choice(len(edges), size=1 + seed % 3, replace=False)]
    given = truth.copy()
    for i, j in drop:
        given[i, j] = given[j, i] = False
    H = lazyhess.hessian(f, x, sparsity=given)
    with pytest.raises(ValueError, match="misses entr") as info:
        H.to_sparse("csr")
    named = re.search(r"entry \((\d+), (\d+)\).* = ([-\d.e+]+) at", str(info.value))
    assert named is not None
    i, j = int(named[1]), int(named[2])
    assert truth[i, j] and not given[i, j]
    ref = np.asarray(jax.hessian(f)(x))
    np.testing.assert_allclose(float(named[3]), ref[i, j], rtol=1e-12)


@pytest.mark.parametrize("seed", [0] + [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2)])
def test_correct_and_larger_patterns_pass_once_per_function(seed):
    f, x, truth, _, rng = _random_problem(seed)
    ref = np.asarray(jax.hessian(f)(x))
    larger = truth | (rng.random(truth.shape) < 0.1)
    for given in (truth, larger | larger.T):
        H = lazyhess.hessian(f, x, sparsity=given)
        colors = H.cost(slice(None)).new_hvps  # the whole Hessian's colors
        np.testing.assert_allclose(H.to_sparse("dense"), ref, rtol=1e-12, atol=1e-12)
        assert hvps(H) == colors + 1  # the colors and one probe
        np.testing.assert_allclose(H[:], ref, rtol=1e-12, atol=1e-12)
        assert hvps(H) == colors + 1  # checked once: no second probe
        moved = H.at(x + 0.25)
        np.testing.assert_allclose(moved[:], jax.hessian(f)(x + 0.25), rtol=1e-12, atol=1e-12)
        assert hvps(moved) == colors  # other points share the verified pattern


@pytest.mark.slow
@pytest.mark.parametrize("name", ["GENROSE", "ARWHEAD", "CLPLATEA", "SPARSINE", "BAND9"])
def test_true_patterns_of_the_benchmark_problems_pass(name):
    problem = PROBLEMS[name]
    f, x = problem.make(64)
    x = x + 0.1 * jnp.sin(jnp.arange(x.size, dtype=x.dtype))
    H = lazyhess.hessian(f, x, sparsity=problem.pattern(64))
    np.testing.assert_allclose(H.to_sparse("dense"), jax.hessian(f)(x), rtol=1e-10, atol=1e-10)


def per_sample(z):
    return z[..., 0] * z[..., 1] + jnp.sum(z**2, axis=-1)


XS = jnp.stack([jnp.arange(3.0), jnp.ones(3)])


@pytest.mark.slow
def test_batch_with_a_pattern_missing_an_entry():
    H = lazyhess.hessian(per_sample, XS, batch_axis=0, sparsity=EYE)
    with pytest.raises(ValueError, match=r"misses entry \(0, 1\)"):
        H[:]


@pytest.mark.slow
def test_batch_with_a_correct_pattern():
    tri = EYE | np.eye(3, k=1, dtype=bool) | np.eye(3, k=-1, dtype=bool)
    H = lazyhess.hessian(per_sample, XS, batch_axis=0, sparsity=tri)
    np.testing.assert_allclose(H[:], jax.vmap(jax.hessian(per_sample))(XS), rtol=1e-12)
    assert not H._engine.structure.unverified


def test_a_full_pattern_needs_no_check():
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=np.ones((3, 3), dtype=bool))
    np.testing.assert_allclose(H[:], jax.hessian(product)(jnp.arange(3.0)))
    assert hvps(H) == 3 and not H._engine.structure.unverified


def test_verify_must_be_a_bool():
    with pytest.raises(TypeError, match="verify must be True or False"):
        lazyhess.hessian(product, jnp.arange(3.0), sparsity=EYE, verify="yes")


def test_a_first_whole_request_under_jit_checks_the_pattern():
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=EYE)
    with pytest.raises(ValueError, match=r"misses entry \(0, 1\)"):
        jax.jit(lambda: H.to_sparse("dense"))()
    good = EYE | np.eye(3, k=1, dtype=bool) | np.eye(3, k=-1, dtype=bool)
    H = lazyhess.hessian(product, jnp.arange(3.0), sparsity=good)
    colors = H.cost(slice(None)).new_hvps
    with jax.check_tracer_leaks(True):
        jax.jit(lambda: H.to_sparse("dense"))()
    assert not H._engine.structure.unverified and hvps(H) == colors + 1
    fresh = lazyhess.hessian(product, jnp.arange(3.0), sparsity=good)
    moved = jax.jit(lambda y: fresh.at(y)[:])(jnp.ones(3))
    np.testing.assert_allclose(moved, jax.hessian(product)(jnp.ones(3)))
    assert fresh._engine.structure.unverified  # a traced point's values cannot be checked
