"""Other libraries' calling conventions: jax.hessian's ``hessian(f)(x)``, torch's ``strict``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess


def _g(x):
    return jnp.sum(jnp.sin(x) ** 2 * x[::-1]) + x[0] * x[-1] ** 3


def _two(x, y, scale=1.0):
    return scale * (jnp.sum(x**2 * y[:2]) + jnp.sum(jnp.exp(y)))


def test_jax_calling_convention():
    x = jnp.linspace(-1.0, 1.0, 4)
    hess = lazyhess.hessian(_g)
    H = hess(x)
    assert isinstance(H, lazyhess.Hessian)
    assert H.cache_info().hvps == 0
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(_g))(x), rtol=1e-12)
    np.testing.assert_allclose(hess(2 * x)[1], jax.jit(jax.hessian(_g))(2 * x)[1], rtol=1e-12)


def test_jax_calling_convention_with_options():
    x, y = jnp.array([0.5, 2.0]), jnp.array([0.1, -0.3, 0.7])
    hess = lazyhess.hessian(_two, argnums=(0, 1), sparsity=None, mode="rev_over_rev")
    H = hess(x, y, scale=2.0)
    expected = jax.jit(jax.hessian(_two, argnums=(0, 1)))(x, y, scale=2.0)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(H[i][j][:], expected[i][j], rtol=1e-12)

    def with_aux(z):
        return _g(z), {"n": z.size}

    H = lazyhess.hessian(with_aux, has_aux=True)(x)
    assert H.aux == {"n": 2}
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(_g))(x), rtol=1e-12)
    z = jnp.array([0.3 + 0.1j, -0.2 + 0.5j])
    f = lambda w: jnp.sum(w**3)  # noqa: E731
    H = lazyhess.hessian(f, holomorphic=True)(z)
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(f, holomorphic=True))(z), rtol=1e-12)


def test_jax_calling_convention_errors():
    with pytest.raises(TypeError, match="callable"):
        lazyhess.hessian(3.0)
    with pytest.raises(ValueError, match="mode="):
        lazyhess.hessian(_g, mode="forward")
    with pytest.raises(TypeError, match="without arguments returns a function"):
        lazyhess.hessian(_two, scale=2.0)


def test_strict_names_the_input_that_does_not_affect_the_gradient():
    x, y = jnp.array([0.5, 2.0]), jnp.array([0.1, -0.3, 0.7])

    def linear_in_y(x, s, y):
        return jnp.sum(x**3) + s * jnp.sum(y)

    for sparsity in ("auto", None):
        with pytest.raises(ValueError, match=r"does not depend on args\[2\]"):
            lazyhess.hessian(
                linear_in_y, x, 2.0, y, argnums=(0, 2), strict=True, sparsity=sparsity
            )
    H = lazyhess.hessian(linear_in_y, x, 2.0, y, argnums=(0, 2))
    np.testing.assert_allclose(H[1][1][:], np.zeros((3, 3)))
    lazyhess.hessian(linear_in_y, x, 2.0, y, argnums=0, strict=True)
    tree = {"a": x, "b": y}
    with pytest.raises(ValueError, match=r"args\[0\]\['b'\]"):
        lazyhess.hessian(lambda p: jnp.sum(p["a"] ** 2) + p["b"][0], tree, strict=True)
    with pytest.raises(ValueError, match=r"args\[0\]"):
        lazyhess.hessian(lambda v: jnp.sum(3.0 * v), x, strict=True)
    with pytest.raises(TypeError, match="strict must be"):
        lazyhess.hessian(_g, x, strict="yes")
    H = lazyhess.hessian(_g, strict=True)(x)
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(_g))(x), rtol=1e-12)
