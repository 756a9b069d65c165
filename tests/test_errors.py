"""Bad input fails early with an error that names the argument and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mixed

import lazyhess

X = jnp.arange(3.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mode": "forward"}, ValueError, "fwd_over_rev, rev_over_fwd, rev_over_rev"),
        ({"batch_axis": 1}, ValueError, "batch_axis=None .* batch_axis=0"),
        ({"batch_axis": True}, ValueError, "batch_axis"),
        ({"cache_bytes": -1}, ValueError, "cache_bytes must be >= 0"),
        ({"cache_bytes": 1.5}, TypeError, "cache_bytes must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"chunk_size": 2.0}, ValueError, "chunk_size must be a positive int"),
        ({"argnums": 1}, ValueError, r"argnums=1 but fun is called with 1 positional argument;"),
        ({"argnums": (0, 0)}, ValueError, "repeats"),
        ({"argnums": "0"}, TypeError, "argnums must be an int or a sequence of ints"),
        ({"argnums": (0, 1.0)}, TypeError, "argnums must be an int or a sequence of ints"),
        ({"argnums": ()}, ValueError, "selects nothing"),
        ({"has_aux": "yes"}, TypeError, "has_aux must be True or False"),
        ({"sparsity": "banded"}, ValueError, "sparsity="),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        lazyhess.hessian(mixed, X, **kwargs)


def test_fun_not_callable():
    with pytest.raises(TypeError, match="fun must be callable"):
        lazyhess.hessian(3.0, X)


@pytest.mark.parametrize("x", [jnp.arange(3), jnp.array([True, False])])
def test_integer_and_boolean_inputs(x):
    with pytest.raises(TypeError, match=r"args\[0\] has dtype .* floating-point inputs"):
        lazyhess.hessian(lambda z: jnp.sum(z), x)


def test_integer_leaf_named_by_path():
    with pytest.raises(TypeError, match=r"args\[0\]\['n'\] has dtype int"):
        lazyhess.hessian(lambda d: jnp.sum(d["w"]), {"w": X, "n": jnp.arange(2)})


def test_complex_without_holomorphic():
    with pytest.raises(TypeError, match="holomorphic=True"):
        lazyhess.hessian(lambda z: jnp.sum(z**2).real, X + 1j)


def test_holomorphic_with_real_inputs():
    with pytest.raises(TypeError, match="holomorphic=True needs complex inputs"):
        lazyhess.hessian(lambda z: jnp.sum(z**2), X, holomorphic=True)


@pytest.mark.parametrize(
    "fun, match",
    [
        (lambda z: jnp.sum(z).astype(jnp.int32), "real floating-point outputs"),
        (lambda z: jnp.sum(z) * 1j, "for complex outputs use holomorphic=True"),
    ],
)
def test_bad_output_dtypes(fun, match):
    with pytest.raises(TypeError, match=match):
        lazyhess.hessian(fun, X)


def test_has_aux_without_a_pair():
    with pytest.raises(
        TypeError, match=r"has_aux=True needs fun to return a pair \(output, aux\)"
    ):
        lazyhess.hessian(lambda z: jnp.sum(z**2), X, has_aux=True)


def test_aux_without_has_aux():
    with pytest.raises(AttributeError, match="has_aux=True"):
        _ = lazyhess.hessian(lambda z: jnp.sum(z**2), X).aux


@pytest.mark.parametrize(
    "fun, shape",
    [
        (lambda z: jnp.sum(z), "()"),
        (lambda z: z, r"\(4, 3\)"),
        (lambda z: jnp.sum(z, axis=1)[:2], r"\(2,\)"),
        (lambda z: {"a": jnp.sum(z, axis=1)}, "PyTreeDef"),
    ],
)
def test_batch_output_not_per_sample(fun, shape):
    with pytest.raises(ValueError, match=f"shape \\(4,\\) or \\(4, 1\\).*got {shape}"):
        lazyhess.hessian(fun, jnp.ones((4, 3)), batch_axis=0)


def test_batch_mismatched_leading_sizes():
    with pytest.raises(
        ValueError, match=r"same leading \(sample\) size; got .*'a'\]: 4, .*'b'\]: 5"
    ):
        lazyhess.hessian(
            lambda d: d["a"][:, 0] + d["b"][:4],
            {"a": jnp.ones((4, 2)), "b": jnp.ones(5)},
            batch_axis=0,
        )


def test_batch_scalar_input():
    with pytest.raises(ValueError, match="same leading"):
        lazyhess.hessian(lambda s: s, 1.0, batch_axis=0)


def test_missing_block_keys_are_listed():
    H = lazyhess.hessian(lambda d: jnp.sum(d["a"] * d["b"]), {"a": X, "b": X})
    with pytest.raises(KeyError, match=r"no block 'c'; the keys are \['a', 'b'\]"):
        H["c"]
    H2 = lazyhess.hessian(lambda a, b: jnp.sum(a * b), X, X, argnums=(0, 1))
    with pytest.raises(IndexError, match="valid indices are 0..1"):
        H2[0][2]
    with pytest.raises(TypeError, match="select one with an int or key"):
        H2[0:1]


def test_container_needs_a_block_for_array_operations():
    H = lazyhess.hessian(lambda a, b: jnp.sum(a * b), X, X, argnums=(0, 1))
    with pytest.raises(TypeError, match=r"select one first \(e.g. H\[0\]\[1\]\) or use H.flat"):
        H + 1.0
    with pytest.raises(TypeError, match="select one first"):
        H.diagonal()


def test_diagonal_of_a_non_square_block():
    H = lazyhess.hessian(lambda a, b: jnp.sum(a[:2] * b), X, X[:2], argnums=(0, 1))
    with pytest.raises(ValueError, match="square block"):
        H[0][1].diagonal()


def test_hvp_with_wrong_shapes():
    H = lazyhess.hessian(mixed, X)
    with pytest.raises(ValueError, match=r"hvp needs leaves of shapes \[\(3,\)\]"):
        H.hvp(jnp.ones(4))
    with pytest.raises(ValueError, match=r"hvp needs v of shape \(3,\)"):
        H.flat.hvp(jnp.ones(4))
    Ht = lazyhess.hessian(lambda d: jnp.sum(d["a"] ** 2), {"a": X})
    with pytest.raises(ValueError, match="structured like the inputs"):
        Ht.hvp([X])


def test_at_with_other_shapes_or_structure():
    H = lazyhess.hessian(mixed, X)
    with pytest.raises(
        ValueError, match=r"shape \(4,\) and dtype float64, but the Hessian was built with \(3,\)"
    ):
        H.at(jnp.arange(4.0))
    with pytest.raises(ValueError, match="dtype float32"):
        H.at(X.astype(jnp.float32))
    with pytest.raises(ValueError, match="structured as the original"):
        H.at(X, X)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):  # a numpy array, checked too
        H.at(np.arange(4.0))
    np.testing.assert_allclose(H.at(np.asarray(X) + 1.0)[0], jax.hessian(mixed)(X + 1.0)[0])


@pytest.mark.parametrize("format", ["csr", "csc", "coo", "numpy", "scipy_csr", "tril"])
def test_host_outputs_inside_a_transformation(format):
    f = lambda x: jnp.sum(x**3) + x[0] * x[1]  # noqa: E731
    x = jnp.linspace(0.1, 1.0, 5)

    def lazy(y):
        H = lazyhess.hessian(f, y)
        return H.tril() if format == "tril" else H.to_sparse(format)

    match = "cannot hold the traced values.*'bcoo' or 'dense'"
    with pytest.raises(TypeError, match=match):
        jax.jit(lazy)(x)
    if format != "tril":
        functional = lazyhess.sparse_hessian(f, x, output_format=format)
        with pytest.raises(TypeError, match=match):
            jax.jit(functional)(x)
        np.testing.assert_allclose(  # outside the transformation, the same calls work
            np.asarray(lazy(x).todense() if format != "numpy" else lazy(x)),
            jax.hessian(f)(x),
            rtol=1e-6,
        )
