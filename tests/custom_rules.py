"""Functions with custom derivative rules whose derivatives couple what their primals do not.

Shared by the sparsity tests (tests/test_sparsity_custom.py, tests/test_sparsity_random.py).
"""

import jax
import jax.numpy as jnp


@jax.custom_jvp
def straight_through(x):
    """Rounding with the straight-through estimator: the derivative is the identity."""
    return jnp.round(x)


@straight_through.defjvp
def _straight_through_jvp(primals, tangents):
    return straight_through(primals[0]), tangents[0]


@jax.custom_jvp
def mixing(x):
    """Elementwise square whose rule mixes every element into every tangent."""
    return x**2


@mixing.defjvp
def _mixing_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return mixing(x), 2 * x * jnp.sum(dx)


@jax.custom_vjp
def coupled(x):
    """Elementwise sine whose backward pass couples the inputs.

    The backward pass is the VJP of ``sin(x) + x * sum(x**2) / 2``, so the Hessians that
    differentiation builds through it are symmetric, but the primal couples nothing.
    """
    return jnp.sin(x)


def _coupled_fwd(x):
    return jnp.sin(x), x


def _coupled_bwd(x, g):
    return (jnp.cos(x) * g + 0.5 * jnp.sum(x**2) * g + x * jnp.sum(x * g),)


coupled.defvjp(_coupled_fwd, _coupled_bwd)


@jax.custom_vjp
def reversed_vjp(x, scale):
    """Identity whose backward pass reverses the cotangent (and ignores ``scale``)."""
    return x * scale


def _reversed_fwd(x, scale):
    return x * scale, scale


def _reversed_bwd(scale, g):
    return g[::-1] * scale, None


reversed_vjp.defvjp(_reversed_fwd, _reversed_bwd)


@jax.custom_vjp
def nonlinear_bwd(x):
    """A backward pass that is not linear in its cotangent: no derivative program."""
    return jnp.sin(x)


nonlinear_bwd.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.cos(x) * g**2,))
