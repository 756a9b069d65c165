"""Values of every kind of Hessian against jax.hessian and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODES, assert_tree_close, mixed, rosen
from jax.flatten_util import ravel_pytree

import lazyhess

KEY = jax.random.PRNGKey(0)


def rand(shape, k=0, dtype=jnp.float64):
    return jax.random.normal(jax.random.fold_in(KEY, k), shape, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(), (1,), (5,), (3, 4), (2, 3, 2)])
def test_array_inputs_of_any_rank(shape, mode):
    x = rand(shape)
    H = lazyhess.hessian(mixed, x, mode=mode)
    ref = jax.jit(jax.hessian(mixed))(x)
    assert H.shape == ref.shape == shape + shape
    assert H.ndim == len(shape) * 2 and H.dtype == ref.dtype
    assert_tree_close(H[...], ref)
    assert_tree_close(H.to_dense(), ref)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_nonscalar_outputs(mode):
    def f(x):
        return (
            jnp.stack([jnp.sum(x**3), x[0] * x[1], jnp.sum(jnp.sin(x))]).reshape(3, 1)
            * x[None, :3]
        )

    x = rand((4,))
    H = lazyhess.hessian(f, x, mode=mode)
    ref = jax.jit(jax.hessian(f))(x)
    assert H.shape == ref.shape == (3, 3, 4, 4)
    assert_tree_close(H[:], ref)
    assert_tree_close(H[1, 2], ref[1, 2])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_pytree_output_is_outermost_level(mode):
    def f(x):
        return {"c": jnp.sum(x**2) * x[0], "d": x**3}

    x = rand((3,))
    H = lazyhess.hessian(f, x, mode=mode)
    ref = jax.jit(jax.hessian(f))(x)
    assert_tree_close(H[:], ref)
    assert_tree_close(H["d"][1], ref["d"][1])


def _tree_fun(p):
    leaves = jax.tree_util.tree_leaves(p)
    flat = jnp.concatenate([jnp.ravel(a) for a in leaves])
    return jnp.sum(jnp.tanh(flat) * flat[::-1]) + jnp.prod(flat[:4]) + jnp.sum(flat**3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tree",
    [
        (rand((2,), 1), rand((3,), 2)),
        [rand((2, 2), 3), rand((), 4)],
        {"w": rand((2, 3), 5), "b": rand((3,), 6)},
        {"layer": [rand((2,), 7), {"w": rand((1, 2), 8)}], "s": rand((), 9)},
    ],
    ids=["tuple", "list", "dict", "nested"],
)
@pytest.mark.parametrize("mode", MODES)
def test_pytree_inputs(tree, mode):
    H = lazyhess.hessian(_tree_fun, tree, mode=mode)
    ref = jax.jit(jax.hessian(_tree_fun))(tree)
    assert_tree_close(H[:], ref)
    assert_tree_close(H.to_dense(), ref)
    flat, unravel = ravel_pytree(tree)
    assert_tree_close(H.flat[:], jax.jit(jax.hessian(lambda z: _tree_fun(unravel(z))))(flat))


@pytest.mark.slow
def test_nested_navigation_mirrors_jax():
    tree = {"layer": [rand((2,), 7), {"w": rand((1, 2), 8)}], "s": rand((), 9)}
    H = lazyhess.hessian(_tree_fun, tree)
    ref = jax.jit(jax.hessian(_tree_fun))(tree)
    block = H["layer"][1]["w"]["s"]
    assert isinstance(block, lazyhess.HessianBlock)
    assert block.shape == ref["layer"][1]["w"]["s"].shape == (1, 2)
    assert_tree_close(block[:], ref["layer"][1]["w"]["s"])
    assert_tree_close(H["layer"][0]["layer"][:], ref["layer"][0]["layer"])
    assert_tree_close(H["s"][...], ref["s"])


@pytest.mark.slow
@pytest.mark.parametrize("argnums", [(0, 1), [1, 0], (1,), 1, (-1, 0)])
def test_argnums_sequences(argnums):
    def f(a, b, scale):
        return scale * jnp.sum(a**2 * b[:2]) + jnp.sum(jnp.exp(b) * a[0])

    args = (rand((2,), 1), rand((3,), 2), 1.5)
    H = lazyhess.hessian(f, *args, argnums=argnums)
    assert_tree_close(H[:], jax.jit(jax.hessian(f, argnums=argnums))(*args))


def test_kwargs_are_passed_not_differentiated():
    def f(x, *, w, power):
        return jnp.sum(w * x**power)

    x, w = rand((4,)), rand((4,), 1)
    H = lazyhess.hessian(f, x, w=w, power=3)
    assert_tree_close(H[:], jax.jit(jax.hessian(lambda z: f(z, w=w, power=3)))(x))


def test_has_aux():
    def f(x):
        return jnp.sum(x**3), {"norm": jnp.linalg.norm(x)}

    x = rand((3,))
    H = lazyhess.hessian(f, x, has_aux=True)
    ref, aux = jax.jit(jax.hessian(f, has_aux=True))(x)
    assert_tree_close(H[:], ref)
    assert_tree_close(H.aux, aux)
    assert_tree_close(H.value, f(x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_complex_holomorphic(mode):
    def f(z):
        return jnp.sum(z**3) + z[0] * jnp.sin(z[1])

    z = rand((3,)) + 1j * rand((3,), 1)
    H = lazyhess.hessian(f, z, holomorphic=True, mode=mode)
    ref = jax.jit(jax.hessian(f, holomorphic=True))(z)
    assert H.dtype == ref.dtype
    assert_tree_close(H[:], ref)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("out_shape", ["(B,)", "(B,1)"])
def test_batch_matches_vmapped_hessian(mode, out_shape):
    def per_sample(p):
        w, b = p["w"], p["b"]
        return jnp.sum(jnp.sin(w) ** 2) * b + jnp.sum(w**3) * b**2

    def batched(p):
        out = jax.vmap(per_sample)(p)
        return out if out_shape == "(B,)" else out[:, None]

    params = {"w": rand((4, 2, 3)), "b": rand((4,), 1)}
    H = lazyhess.hessian(batched, params, batch_axis=0, mode=mode)
    ref = jax.jit(jax.vmap(jax.hessian(per_sample)))(params)
    assert_tree_close(H[:], ref)
    assert H["w"]["b"].shape == (4, 2, 3)
    assert H.flat.shape == (4, 7, 7)


def test_closed_form_polynomial():
    H = lazyhess.hessian(lambda x: x[0] ** 3 - 2 * x[0] * x[1] - x[1] ** 6, jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(H[:], [[6.0, -2.0], [-2.0, -480.0]])


def test_closed_form_power_dict():
    # jax's documented example: jax.hessian(lambda d: {"c": d["a"] ** d["b"]}) ... nested dicts.
    def f(d):
        return {"c": d["a"] ** d["b"]}

    d = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([2.0, 3.0])}
    H = lazyhess.hessian(f, d)
    a, b = np.array([1.0, 2.0]), np.array([2.0, 3.0])
    aa = b * (b - 1) * a ** (b - 2)
    ab = a ** (b - 1) * (1 + b * np.log(a))
    bb = a**b * np.log(a) ** 2
    np.testing.assert_allclose(
        H["c"]["a"]["a"][:], np.einsum("i,ij,ik->ijk", aa, np.eye(2), np.eye(2))
    )
    np.testing.assert_allclose(
        H["c"]["a"]["b"][:], np.einsum("i,ij,ik->ijk", ab, np.eye(2), np.eye(2))
    )
    np.testing.assert_allclose(
        H["c"]["b"]["b"][:], np.einsum("i,ij,ik->ijk", bb, np.eye(2), np.eye(2))
    )
    assert_tree_close(H[:], jax.jit(jax.hessian(f))(d))


def test_finite_differences_of_gradient():
    x = rand((5,))
    H = lazyhess.hessian(rosen, x)
    g = jax.grad(rosen)
    eps = 1e-6
    fd = np.stack([(g(x.at[j].add(eps)) - g(x.at[j].add(-eps))) / (2 * eps) for j in range(5)], 1)
    np.testing.assert_allclose(H[:], fd, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_mixed_dtypes_follow_jax():
    def f(a, b):
        return jnp.sum(a**2) * jnp.sum(b**3)

    a, b = jnp.ones(2, jnp.float32), jnp.arange(3.0)
    H = lazyhess.hessian(f, a, b, argnums=(0, 1))
    ref = jax.jit(jax.hessian(f, argnums=(0, 1)))(a, b)
    assert jax.tree_util.tree_map(lambda z: z.dtype, H[:]) == jax.tree_util.tree_map(
        lambda z: z.dtype, ref
    )
    assert_tree_close(H[:], ref, rtol=1e-6, atol=1e-5)


def test_nan_propagates():
    def f(z):
        return jnp.sum(z**3) + z[0] * z[2]

    x = jnp.array([1.0, jnp.nan, 2.0])
    # jax.hessian's columns, jvp(grad) along each basis vector, with the basis passed at run
    # time: a jitted jax.hessian folds its constant basis and gives 0, not nan, off the diagonal.
    hvp = lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1]  # noqa: E731
    ref = jax.jit(jax.vmap(hvp, in_axes=(None, 1), out_axes=1))(x, jnp.eye(3))
    np.testing.assert_array_equal(
        np.isnan(lazyhess.hessian(f, x, sparsity=None)[:]), np.isnan(ref)
    )
    sparse = lazyhess.hessian(f, x)[:]  # structurally zero entries are exactly zero
    assert np.isnan(sparse[1, 1]) and not np.isnan(sparse[0, 2])


def test_size_zero_input():
    x = jnp.zeros((0,))
    H = lazyhess.hessian(lambda z: jnp.sum(z**2), x)
    assert H.shape == (0, 0)
    assert H[:].shape == (0, 0)


def test_aux_keeps_leaves_that_are_not_arrays():
    def f(x):
        return jnp.sum(x**3), {"note": "cubic", "scale": 3, "twice": 2 * x}

    x = jnp.arange(3.0)
    H = lazyhess.hessian(f, x, has_aux=True)
    assert H.aux["note"] == "cubic" and H.aux["scale"] == 3
    np.testing.assert_allclose(H.aux["twice"], 2 * x)
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(lambda z: f(z)[0]))(x))
    traced = jax.jit(lambda z: lazyhess.hessian(f, z, has_aux=True).aux["twice"])(x + 1)
    np.testing.assert_allclose(traced, 2 * (x + 1))
