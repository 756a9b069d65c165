"""The rest of the object: point values, products, diagonal, arrays, operators, at, repr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODES, assert_tree_close, mixed, rosen

import lazyhess

X = jax.random.normal(jax.random.PRNGKey(0), (6,))
REF = np.asarray(jax.jit(jax.hessian(mixed))(X))


def test_value_grad_computed_once():
    calls = []

    def f(x):
        calls.append(1)
        return rosen(x)

    H = lazyhess.hessian(f, X)
    before = len(calls)
    assert_tree_close(H.value, rosen(X))
    assert_tree_close(H.grad, jax.grad(rosen)(X))
    _ = H.value, H.grad
    assert len(calls) == before + 1
    assert H.cache_info().hvps == 0


def test_grad_of_pytree_and_batch():
    d = {"a": X, "b": X[:2]}
    f = lambda p: jnp.sum(p["a"] ** 3) * jnp.sum(p["b"])  # noqa: E731
    assert_tree_close(lazyhess.hessian(f, d).grad, jax.grad(f)(d))
    per = lambda w: jnp.sum(jnp.sin(w) * w)  # noqa: E731
    W = X.reshape(3, 2)
    Hb = lazyhess.hessian(jax.vmap(per), W, batch_axis=0)
    assert_tree_close(Hb.grad, jax.vmap(jax.grad(per))(W))
    assert_tree_close(Hb.value, jax.vmap(per)(W))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_matvec_vector_and_matrix(mode):
    H = lazyhess.hessian(mixed, X, mode=mode)
    v = np.arange(6.0)
    V = np.random.default_rng(1).normal(size=(6, 4))
    np.testing.assert_allclose(H @ v, REF @ v)
    np.testing.assert_allclose(H.hvp(V), REF @ V)
    np.testing.assert_allclose(v @ H, v @ REF)
    np.testing.assert_allclose(H @ H, REF @ REF)


@pytest.mark.slow
def test_hvp_on_pytrees_and_blocks():
    def f(a, b):
        return jnp.sum(jnp.sin(a) * b[:3]) * jnp.sum(b**2)

    a, b = jnp.arange(3.0), jnp.arange(1.0, 5.0)
    H = lazyhess.hessian(f, a, b, argnums=(0, 1))
    ref = jax.jit(jax.hessian(f, argnums=(0, 1)))(a, b)
    va, vb = jnp.ones(3), jnp.arange(4.0)
    expected = (ref[0][0] @ va + ref[0][1] @ vb, ref[1][0] @ va + ref[1][1] @ vb)
    assert_tree_close(H @ (va, vb), expected)
    Va, Vb = jnp.ones((3, 2)), jnp.ones((4, 2))
    assert_tree_close(H.hvp((Va, Vb))[1], ref[1][0] @ Va + ref[1][1] @ Vb)
    np.testing.assert_allclose(H[0][1] @ vb, ref[0][1] @ vb)
    np.testing.assert_allclose(va @ H[0][1], va @ ref[0][1])
    np.testing.assert_allclose(
        H.flat @ jnp.concatenate([va, vb]),
        np.block([[ref[0][0], ref[0][1]], [ref[1][0], ref[1][1]]]) @ jnp.concatenate([va, vb]),
    )


def test_matvec_on_matrix_inputs_contracts_the_input_axes():
    x = X.reshape(2, 3)
    H = lazyhess.hessian(mixed, x)
    ref = np.asarray(jax.jit(jax.hessian(mixed))(x))
    v = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(H @ v, np.einsum("abcd,cd->ab", ref, v))


@pytest.mark.slow
def test_batch_matvec_per_sample():
    per = lambda w: jnp.sum(jnp.sin(w) * w**2)  # noqa: E731
    W = X.reshape(3, 2)
    Hb = lazyhess.hessian(jax.vmap(per), W, batch_axis=0)
    ref = jax.jit(jax.vmap(jax.hessian(per)))(W)
    v = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(Hb @ v, ref @ v)
    np.testing.assert_allclose(Hb.flat @ v, ref @ v)
    V = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(Hb.hvp(V), np.einsum("bij,bj->bi", ref, V))
    assert Hb.cache_info().hvps == 3


@pytest.mark.slow
def test_diagonal_of_blocks_and_flat():
    def f(d):
        return jnp.sum(d["w"] ** 3) * jnp.sum(jnp.sin(d["b"])) + jnp.sum(d["w"] ** 2 * d["b"][0])

    d = {"w": X.reshape(2, 3), "b": X[:2]}
    H = lazyhess.hessian(f, d)
    ref = jax.jit(jax.hessian(f))(d)
    np.testing.assert_allclose(H["w"]["w"].diagonal(), np.einsum("abab->ab", ref["w"]["w"]))
    flat_diag = H.flat.diagonal()  # ravel_pytree order: "b" before "w"
    assert flat_diag.shape == (8,)
    np.testing.assert_allclose(flat_diag[:2], np.diag(ref["b"]["b"]))
    np.testing.assert_allclose(flat_diag[2:], np.einsum("abab->ab", ref["w"]["w"]).ravel())


def test_numpy_conversion_and_operators():
    H = lazyhess.hessian(mixed, X)
    np.testing.assert_allclose(np.asarray(H), REF)
    np.testing.assert_allclose(jnp.asarray(H), REF)
    assert np.asarray(H, dtype=np.float32).dtype == np.float32
    for got, want in [
        (H + 1.0, REF + 1.0),
        (1.0 - H, 1.0 - REF),
        (H * 2, REF * 2),
        (H**3, REF**3),
        (H % 1.2, REF % 1.2),
        (H / 2, REF / 2),
        (-H, -REF),
        (abs(H), abs(REF)),
        (H > 0.5, REF > 0.5),
        (H == H[:], REF == REF),
    ]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    assert len(H) == 6
    np.testing.assert_allclose(np.stack(list(H)), REF)


def test_at_gives_the_same_function_at_a_new_point():
    H = lazyhess.hessian(mixed, X)
    H[0]
    H2 = H.at(X * 2)
    assert H2.cache_info().hvps == 0
    np.testing.assert_allclose(H2[:], jax.jit(jax.hessian(mixed))(X * 2))
    np.testing.assert_allclose(H[0], REF[0])


def test_at_with_new_static_arguments_rebuilds():
    f = lambda x, p: jnp.sum(x**p)  # noqa: E731
    H = lazyhess.hessian(f, X, 3)
    np.testing.assert_allclose(H.at(X, 4)[:], jax.jit(jax.hessian(f))(X, 4))
    g = lambda x, w: jnp.sum(w * x**3)  # noqa: E731
    Hg = lazyhess.hessian(g, X, X)
    np.testing.assert_allclose(Hg.at(X, 2 * X)[:], jax.jit(jax.hessian(g))(X, 2 * X))


def test_repr():
    H = lazyhess.hessian(mixed, X, sparsity=None)
    H[0]
    assert (
        repr(H)
        == "Hessian(shape=(6, 6), dtype=float64, engine=dense, hvps=1, cache=48 B/256.0 MiB)"
    )
    Hs = lazyhess.hessian(rosen, X)
    assert "engine=auto (pattern not detected yet), hvps=0" in repr(Hs)
    Hs[0]  # a whole row is its unit seed: no pattern needed yet
    assert "engine=auto (pattern not detected yet), hvps=1" in repr(Hs)
    Hs[2, :3]
    assert "engine=sparse (nnz=16), hvps=2" in repr(Hs)
    Ht = lazyhess.hessian(lambda a, b: jnp.sum(a * b), X, X, argnums=(0, 1))
    assert repr(Ht).startswith("Hessian(blocks=4, flat=(12, 12), dtype=float64")
    assert repr(Ht[0]) == "HessianNode(H[0], tuple of 2 block(s))"
    assert repr(Ht[0][1]) == "HessianBlock(H[0][1], shape=(6, 6), dtype=float64)"
    assert Ht.shape == (((6, 6), (6, 6)), ((6, 6), (6, 6)))


def test_a_point_is_freed_when_dropped_and_its_views_outlive_it():
    """No reference cycle holds a point's cache; views handed out keep their point."""
    import gc
    import weakref

    d = {"a": X, "b": X[:2]}
    f = lambda p: jnp.sum(p["a"] ** 3) * jnp.sum(p["b"]) + jnp.sum(jnp.sin(p["a"]))  # noqa: E731
    ref = jax.jit(jax.hessian(f))(d)
    H0 = lazyhess.hessian(f, d)
    gc.disable()
    try:
        for request in (
            lambda H: H["a"]["a"][2],
            lambda H: H["a"]["b"][1, 0],
            lambda H: H.to_sparse("csr"),
            lambda H: H.flat.diagonal(),
            lambda H: H[:],
        ):
            H = H0.at(d)
            request(H)
            engine = weakref.ref(H._engine)
            del H
            assert engine() is None
        H = H0.at(d)
        block, node, flat, op = H["a"]["b"], H["a"], H.flat, H.as_linear_operator()
        del H
        np.testing.assert_allclose(block[1], ref["a"]["b"][1], rtol=1e-6)
        np.testing.assert_allclose(node["a"][0], ref["a"]["a"][0], rtol=1e-6)
        np.testing.assert_allclose(flat[0, :6], ref["a"]["a"][0], rtol=1e-6)
        np.testing.assert_allclose(op @ np.eye(8)[:, 6], flat[:, 6], rtol=1e-6)
    finally:
        gc.enable()
