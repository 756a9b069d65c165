"""The asdex-style functional API: jit-able sparse Hessians from a coloring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from benchmarks.problems import PROBLEMS


@pytest.fixture(scope="module", params=["GENROSE", "ARWHEAD", "CLPLATEA", "SPARSINE"])
def problem(request):
    f, x = PROBLEMS[request.param].make(64)
    x = x + 0.1 * jax.random.normal(jax.random.PRNGKey(0), x.shape)
    return f, x, np.asarray(jax.hessian(f)(x))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"])
def test_sparse_hessian_matches_jax_under_jit(problem, mode):
    f, x, ref = problem
    hess = jax.jit(lazyhess.sparse_hessian(f, x, mode=mode))
    np.testing.assert_allclose(hess(x).todense(), ref, rtol=1e-10, atol=1e-8)
    dense = jax.jit(
        lazyhess.sparse_hessian(f, x, output_format="dense", symmetric=False, chunk_size=2)
    )
    np.testing.assert_allclose(dense(x), ref, rtol=1e-10, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("format", ["numpy", "csr", "csc", "coo", "scipy_csr", "numpy_dense"])
def test_host_formats(problem, format):
    f, x, ref = problem
    out = lazyhess.sparse_hessian(f, x, output_format=format)(x)
    np.testing.assert_allclose(
        out if isinstance(out, np.ndarray) else out.toarray(), ref, rtol=1e-10, atol=1e-8
    )


@pytest.mark.slow
def test_value_and_compressed_and_decompress(problem):
    f, x, ref = problem
    value, H = jax.jit(lazyhess.value_and_sparse_hessian(f, x, output_format="dense"))(x)
    np.testing.assert_allclose(value, f(x), rtol=1e-12)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-8)
    compressed = lazyhess.compressed_hessian(f, x)
    B = jax.jit(compressed)(x)
    coloring = compressed.coloring
    assert B.shape == (coloring.num_colors, x.size)
    np.testing.assert_allclose(B, coloring.seeds() @ ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(
        lazyhess.decompress(B, coloring, "numpy"), ref, rtol=1e-10, atol=1e-8
    )
    data = jax.jit(lazyhess.decompress_data, static_argnums=1)(B, coloring)
    np.testing.assert_allclose(data, ref[coloring.rows, coloring.cols], rtol=1e-10, atol=1e-8)


@pytest.mark.slow
def test_from_coloring_with_aux_and_gradients():
    def f(x):
        return jnp.sum(x[1:] ** 2 * x[:-1] ** 2) + jnp.sum(jnp.sin(x)), {"s": jnp.sum(x)}

    x = jnp.linspace(0.1, 1.0, 9)
    coloring = lazyhess.hessian_coloring(f, x, has_aux=True)
    hess = jax.jit(lazyhess.sparse_hessian_from_coloring(f, coloring, "dense", has_aux=True))
    H, aux = hess(x)
    np.testing.assert_allclose(H, jax.hessian(lambda z: f(z)[0])(x), rtol=1e-12)
    np.testing.assert_allclose(aux["s"], jnp.sum(x))
    third = jax.grad(lambda z: hess(z)[0][2, 3])(x)
    np.testing.assert_allclose(
        third, jax.grad(lambda z: jax.hessian(lambda w: f(w)[0])(z)[2, 3])(x), rtol=1e-10
    )


@pytest.mark.slow
def test_check_hessian_correctness(problem):
    f, x, _ = problem
    coloring = lazyhess.hessian_coloring(f, x)
    lazyhess.check_hessian_correctness(f, x, coloring)
    lazyhess.check_hessian_correctness(f, x, coloring, method="dense")
    wrong = lazyhess.hessian_coloring_from_sparsity(np.eye(x.size, dtype=bool))
    with pytest.raises(lazyhess.VerificationError, match="does not fit fun"):
        lazyhess.check_hessian_correctness(f, x, wrong)
    with pytest.raises(lazyhess.VerificationError):
        lazyhess.check_hessian_correctness(f, x, wrong, method="dense")


def test_functional_errors():
    f, x = PROBLEMS["GENROSE"].make(8)
    with pytest.raises(ValueError, match="valid format"):
        lazyhess.sparse_hessian(f, x, output_format="lil")
    with pytest.raises(TypeError, match="ColoredPattern"):
        lazyhess.sparse_hessian_from_coloring(f, np.eye(8), sample_args=(x,))
    diagonal = lazyhess.hessian_coloring_from_sparsity(np.eye(8, dtype=bool), method="diagonal")
    with pytest.raises(ValueError, match="diagonal"):
        lazyhess.sparse_hessian_from_coloring(f, diagonal, sample_args=(x,))
    with pytest.raises(ValueError, match="scalar output"):
        lazyhess.sparse_hessian(lambda z: z**2, x)
    with pytest.raises(ValueError, match="method="):
        lazyhess.check_hessian_correctness(f, x, lazyhess.hessian_coloring(f, x), method="exact")
