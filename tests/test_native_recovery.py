"""Recovery by substitution of a jax ``B`` on CPU by the compiled loop (``coloring._native``).

Every answer is compared with the Hessian's entries, with the host recovery of a numpy
``B`` (the sequential substitution of the textbook method) and with XLA's own scan.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from tests.test_coloring_acyclic import band, edge_cases, random_hessian


def patterns():
    rng = np.random.default_rng(3)
    random = rng.random((40, 40)) < 0.08
    random = random | random.T | np.eye(40, dtype=bool)
    arrow = np.eye(30, dtype=bool)
    arrow[-1, :] = arrow[:, -1] = True
    cases = {"band 2": band(2)(60), "random": random, "arrowhead": arrow}
    cases.update({name: edge_cases()[name] for name in ("paths and a triangle", "star tree")})
    return cases


def acyclic(pattern):
    return lazyhess.hessian_coloring_from_sparsity(pattern, "acyclic")


def compressed(colored, pattern, dtype=np.float64, seed=0):
    hessian = random_hessian(pattern, seed=seed).astype(dtype)
    return (colored.seeds(dtype) @ hessian).astype(dtype), hessian[colored.rows, colored.cols]


@pytest.mark.parametrize("name", list(patterns()))
def test_values_match_host_and_xla(name):
    pattern = patterns()[name]
    colored = acyclic(pattern)
    B, expected = compressed(colored, pattern)
    host = colored.decompress_data(B)
    native = np.asarray(jax.jit(colored.decompress_data)(jnp.asarray(B)))
    xla = np.asarray(jax.jit(colored.substitution.solve)(jnp.asarray(B)))
    np.testing.assert_allclose(host, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(native, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(native, xla, rtol=1e-12, atol=1e-12)


def test_cpu_programs_call_the_loop():
    pattern = band(2)(60)
    colored = acyclic(pattern)
    B, _ = compressed(colored, pattern)
    hlo = jax.jit(colored.decompress_data).lower(jnp.asarray(B)).compile().as_text()
    assert 'custom_call_target="lazyhess_recover"' in hlo
    star = lazyhess.hessian_coloring_from_sparsity(pattern, "star")
    B, _ = compressed(star, pattern)
    hlo = jax.jit(star.decompress_data).lower(jnp.asarray(B)).compile().as_text()
    assert "lazyhess_recover" not in hlo  # a gather XLA can fuse and fold


def test_float32():
    pattern = band(2)(60)
    colored = acyclic(pattern)
    B, expected = compressed(colored, pattern, np.float32)
    values = jax.jit(colored.decompress_data)(jnp.asarray(B))
    assert values.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-4, atol=1e-5)


def test_batches():
    pattern = patterns()["random"]
    colored = acyclic(pattern)
    parts = [compressed(colored, pattern, seed=seed) for seed in range(6)]
    B = jnp.asarray(np.stack([b for b, _ in parts]).reshape(2, 3, *parts[0][0].shape))
    expected = np.stack([e for _, e in parts]).reshape(2, 3, -1)
    once = jax.jit(jax.vmap(colored.decompress_data))(B[0])
    twice = jax.jit(jax.vmap(jax.vmap(colored.decompress_data)))(B)
    np.testing.assert_allclose(np.asarray(once), expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(twice), expected, rtol=1e-12, atol=1e-12)


def test_derivatives_are_the_recovery_of_the_tangent():
    pattern = patterns()["random"]
    colored = acyclic(pattern)
    B, _ = compressed(colored, pattern)
    dB, _ = compressed(colored, pattern, seed=1)
    B, dB = jnp.asarray(B), jnp.asarray(dB)
    _, tangent = jax.jvp(colored.decompress_data, (B,), (dB,))
    np.testing.assert_allclose(
        np.asarray(tangent), colored.decompress_data(np.asarray(dB)), rtol=1e-12, atol=1e-12
    )
    weights = jnp.asarray(np.random.default_rng(2).normal(size=colored.nnz))
    grad = jax.grad(lambda b: jnp.vdot(weights, colored.decompress_data(b)))(B)
    expected = jax.grad(lambda b: jnp.vdot(weights, colored.substitution.solve(b)))(B)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-12, atol=1e-12)


def test_other_dtypes_diagonals_and_empty_patterns():
    pattern = band(1)(20)
    colored = acyclic(pattern)
    B, expected = compressed(colored, pattern)
    complex_B = jnp.asarray(B * (1 + 2j))
    values = jax.jit(colored.decompress_data)(complex_B)
    np.testing.assert_allclose(np.asarray(values), expected * (1 + 2j), rtol=1e-12, atol=1e-12)
    diagonal = acyclic(np.eye(5, dtype=bool))
    assert jax.jit(diagonal.decompress_data)(jnp.ones((1, 5))).tolist() == [1.0] * 5
    empty = acyclic(np.zeros((5, 5), bool))
    assert jax.jit(empty.decompress_data)(jnp.zeros((0, 5))).shape == (0,)


def test_indices_past_32_bits_take_xla_recovery():
    from lazyhess.coloring import _native

    pattern = band(2)(60)
    colored = acyclic(pattern)
    B, expected = compressed(colored, pattern)
    steps = _native.Steps(colored.nnz, colored.num_colors * colored.n, colored.substitution)
    assert steps.narrow
    steps.narrow = False  # as when num_colors * n or nnz reaches 2**31

    def recover(b):
        return _native.recover(b, steps, colored.substitution.solve)

    hlo = jax.jit(recover).lower(jnp.asarray(B)).compile().as_text()
    assert "lazyhess_recover" not in hlo
    values = np.asarray(jax.jit(recover)(jnp.asarray(B)))
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-12)
