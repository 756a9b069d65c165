"""Custom derivative rules: the pattern follows the rule that jax.hessian differentiates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from custom_rules import coupled, mixing, nonlinear_bwd, reversed_vjp, straight_through

import lazyhess
from lazyhess import SparsityWarning, hessian_sparsity

N = 6
WEIGHTS = np.arange(1.0, N + 1)

FUNCTIONS = {
    "straight_through": lambda x: jnp.sum(WEIGHTS * straight_through(x) ** 2),
    "straight_through_product": lambda x: jnp.sum(straight_through(x) * x[::-1]),
    "mixing": lambda x: jnp.sum(mixing(x)),
    "mixing_slice": lambda x: mixing(x)[0] + jnp.sin(x[1]),
    "coupled": lambda x: jnp.sum(coupled(x)),
    "coupled_jit_scan": lambda x: jax.jit(
        lambda v: jax.lax.scan(lambda c, _: (coupled(c) * 0.5, None), v, length=2)[0]
    )(x).sum(),
    "reversed_vjp": lambda x: jnp.sum(jnp.sin(x) * reversed_vjp(x**2, 2.0)),
    "relu": lambda x: jnp.sum(jax.nn.relu(x) ** 2),
    "softmax": lambda x: jnp.sum(jax.nn.softmax(x[:3]) * x[3:]),
}


# A rule that is not the derivative of the function whose values differentiation sees can
# make jax.hessian asymmetric (mixing_slice: H[j, 0] = 2 but H[0, j] = 0; the composed and
# reversed rules likewise). The pattern still contains both sides; lazyhess's values assume
# a symmetric Hessian, so these are left out of the value comparison.
ASYMMETRIC = {"mixing_slice", "coupled_jit_scan", "reversed_vjp"}


def truth(f, seed=0, k=4):
    """Union of jax.hessian's nonzeros at k random points."""
    points = np.random.default_rng(seed).normal(scale=2.0, size=(k, N))
    return np.any(np.asarray(jax.jit(jax.vmap(jax.hessian(f)))(points)) != 0, axis=0)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_pattern_contains_every_nonzero_of_jax_hessian(name):
    f = FUNCTIONS[name]
    pattern = hessian_sparsity(f, jnp.zeros(N)).to_dense()
    missing = truth(f) & ~pattern
    assert not missing.any(), np.argwhere(missing).tolist()


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - ASYMMETRIC))
def test_values_through_the_pattern_equal_jax_hessian(name):
    f = FUNCTIONS[name]
    x = np.random.default_rng(1).normal(size=N)
    np.testing.assert_allclose(
        np.asarray(lazyhess.hessian(f, x)[:]),
        np.asarray(jax.jit(jax.hessian(f))(x)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_rules_keep_their_precision():
    # The patterns are exactly jax.hessian's nonzeros, not a dense fallback.
    for name in ("straight_through", "mixing", "coupled", "reversed_vjp"):
        f = FUNCTIONS[name]
        np.testing.assert_array_equal(hessian_sparsity(f, jnp.zeros(N)).to_dense(), truth(f))
    # relu's rule calls relu: the pattern stays diagonal.
    relu = hessian_sparsity(FUNCTIONS["relu"], jnp.zeros(N)).to_dense()
    np.testing.assert_array_equal(relu, np.eye(N, dtype=bool))


def test_straight_through_rule_is_followed_not_the_primal():
    # round() has no derivative, but the rule's identity makes sum(w * q(x)**2) have 2 diag(w).
    f = FUNCTIONS["straight_through"]
    x = np.array([0.2, 1.7, -2.4, 3.1, 0.0, -0.6])
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.hessian(f))(x)), 2 * np.diag(WEIGHTS))
    H = lazyhess.hessian(f, x)
    np.testing.assert_array_equal(np.asarray(H[:]), 2 * np.diag(WEIGHTS))
    assert H.cache_info().hvps == 1


def test_backward_pass_that_cannot_be_transposed_falls_back_with_a_warning():
    f = lambda x: jnp.sum(nonlinear_bwd(x[:3])) + jnp.sum(x[3:] ** 2)  # noqa: E731
    with pytest.warns(SparsityWarning, match="derivative rule of a 'custom_vjp_call'"):
        pattern = hessian_sparsity(f, jnp.zeros(N)).to_dense()
    expected = np.zeros((N, N), bool)
    expected[:3, :3] = True
    expected[np.arange(3, N), np.arange(3, N)] = True
    np.testing.assert_array_equal(pattern, expected)
    assert not (truth(f) & ~pattern).any()


@pytest.mark.parametrize("name", sorted(ASYMMETRIC))
def test_rules_left_out_of_the_value_test_are_asymmetric(name):
    h = np.asarray(jax.jit(jax.hessian(FUNCTIONS[name]))(np.random.default_rng(1).normal(size=N)))
    assert not np.allclose(h, h.T)
