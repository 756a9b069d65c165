"""Inside jax.jit, jax.grad and jax.vmap: traced, differentiable values, nothing cached."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODES, mixed

import lazyhess

X = jax.random.normal(jax.random.PRNGKey(0), (5,))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_under_jit(mode):
    f = jax.jit(lambda x: lazyhess.hessian(mixed, x, mode=mode)[1:3, [0, 4]])
    np.testing.assert_allclose(f(X), np.asarray(jax.jit(jax.hessian(mixed))(X))[1:3, [0, 4]])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_third_derivatives_through_indexing(mode):
    got = jax.grad(lambda x: lazyhess.hessian(mixed, x, mode=mode)[0, 1])(X)
    want = jax.jit(jax.grad(lambda x: jax.hessian(mixed)(x)[0, 1]))(X)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    jac = jax.jacfwd(lambda x: lazyhess.hessian(mixed, x, mode=mode).diagonal())(X)
    want = jax.jit(jax.jacfwd(lambda x: jnp.diagonal(jax.hessian(mixed)(x))))(X)
    np.testing.assert_allclose(jac, want, rtol=1e-10)


@pytest.mark.slow
def test_under_vmap():
    xs = jnp.stack([X, X + 1, X * 2])
    got = jax.vmap(lambda x: lazyhess.hessian(mixed, x)[2])(xs)
    np.testing.assert_allclose(got, jax.jit(jax.vmap(lambda x: jax.hessian(mixed)(x)[2]))(xs))


def test_traced_point_caches_nothing():
    seen = {}

    def inside(x):
        H = lazyhess.hessian(mixed, x)
        out = H[0] + H[0] + H @ x
        seen["info"] = H.cache_info()
        return out

    jax.jit(inside)(X)
    info = seen["info"]
    assert info.entries == 0 and info.bytes == 0 and info.hvps == 3


@pytest.mark.slow
def test_concrete_hessian_used_inside_jit():
    H = lazyhess.hessian(mixed, X)
    out = jax.jit(lambda v: H @ v)(jnp.ones(5))
    np.testing.assert_allclose(out, np.asarray(jax.jit(jax.hessian(mixed))(X)) @ np.ones(5))


@pytest.mark.slow
def test_concrete_hessian_first_used_inside_jit():
    ref = np.asarray(jax.jit(jax.hessian(mixed))(X))
    H = lazyhess.hessian(mixed, X)
    np.testing.assert_allclose(jax.jit(lambda: H[1:3])(), ref[1:3])
    H2 = lazyhess.hessian(mixed, X)
    np.testing.assert_allclose(jax.jit(lambda v: H2 @ v)(jnp.ones(5)), ref @ np.ones(5))
    np.testing.assert_allclose(H2[2], ref[2])  # the state computed under jit is concrete
    np.testing.assert_allclose(jax.jit(lambda: H2.grad)(), jax.grad(mixed)(X))


def test_traced_non_differentiated_argument():
    f = lambda x, w: jnp.sum(w * x**3)  # noqa: E731
    got = jax.jit(lambda w: lazyhess.hessian(f, X, w)[:])(X)
    np.testing.assert_allclose(got, jax.jit(jax.hessian(f))(X, X))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_sparse_batch_under_jit(mode):
    def f(x):
        return jnp.sum(x[..., 1:] * x[..., :-1] ** 2, axis=-1) + jnp.sum(jnp.sin(x), axis=-1)

    xs = jnp.stack([X, X + 1, X * 2])
    got = jax.jit(lambda x: lazyhess.hessian(f, x, batch_axis=0, mode=mode)[:, 1:4])(xs)
    want = jax.jit(jax.vmap(jax.hessian(f)))(xs)[:, 1:4]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    whole = jax.jit(lambda x: lazyhess.hessian(f, x, batch_axis=0, mode=mode).to_sparse("dense"))
    full = whole(xs)
    np.testing.assert_allclose(full, jax.jit(jax.vmap(jax.hessian(f)))(xs), rtol=1e-12)


def test_concrete_sparse_hessian_first_evaluated_whole_inside_jit():
    def f(x):
        return jnp.sum(x[1:] * x[:-1] ** 2) + jnp.sum(jnp.sin(x))

    ref = np.asarray(jax.jit(jax.hessian(f))(X))
    H = lazyhess.hessian(f, X)
    np.testing.assert_allclose(jax.jit(lambda: H.to_sparse("dense"))(), ref, rtol=1e-12)
    np.testing.assert_allclose(H[2], ref[2], rtol=1e-12)  # the state kept is concrete
    hess = lazyhess.sparse_hessian(f, X, output_format="dense")
    np.testing.assert_allclose(jax.jit(lambda: hess(X))(), ref, rtol=1e-12)


@pytest.mark.parametrize("limit", [0, 2**20])
def test_traced_to_sparse_with_device_or_constant_seeds(monkeypatch, limit):
    monkeypatch.setattr(lazyhess._engine, "CONSTANT_SEED_BYTES", limit)

    def f(x):
        return jnp.sum(x[1:] * x[:-1] ** 2) + jnp.sum(jnp.sin(x)) * x[0]

    H = lazyhess.hessian(f, X)
    hess = jax.jit(lambda x: H.at(x).to_sparse("dense"))
    np.testing.assert_allclose(hess(X + 0.5), jax.jit(jax.hessian(f))(X + 0.5), rtol=1e-12)
