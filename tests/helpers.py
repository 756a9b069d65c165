"""Shared test functions and the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev")


def assert_tree_close(actual, expected, rtol=1e-10, atol=1e-10):
    a_leaves, a_tree = jax.tree_util.tree_flatten(actual)
    e_leaves, e_tree = jax.tree_util.tree_flatten(expected)
    assert a_tree == e_tree
    for a, e in zip(a_leaves, e_leaves, strict=True):
        assert np.shape(a) == np.shape(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def mixed(x):
    """A scalar function of any-shaped x with a dense, asymmetric-looking Hessian."""
    flat = jnp.ravel(x)
    return (
        jnp.sum(jnp.sin(flat) ** 2 * flat[::-1])
        + flat[0] * jnp.sum(flat**3)
        + jnp.prod(jnp.cos(flat[:3]))
    )
