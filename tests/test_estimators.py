"""Trace, diagonal, Frobenius norm, eigenpairs and spectral density estimators.

Exact cases are compared exactly and their HVPs pinned; random ones are compared with the
dense ``jax.hessian`` reference within stated multiples of the reported standard error, with
fixed keys.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess

N_BAND = 200


def _banded(n, width):
    """A symmetric banded matrix with ``width`` off-diagonals each side, diagonal nonzero."""
    rng = np.random.default_rng(0)
    a = np.zeros((n, n))
    for k in range(width + 1):
        band = rng.normal(size=n - k)
        a += np.diag(band, k) + (np.diag(band, -k) if k else 0)
    return a


def _quadratic(a):
    a = jnp.asarray(a)
    return lambda x: 0.5 * x @ a @ x


def _loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2) + 0.01 * jnp.sum(params["w1"] ** 4)


@pytest.fixture(scope="module")
def network():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "w1": jax.random.normal(k1, (4, 10)),
        "b1": jnp.full(10, 0.1),
        "w2": jax.random.normal(k2, (10,)),
    }
    x = jax.random.normal(k3, (32, 4))
    y = jnp.sin(x[:, 0])
    H = lazyhess.hessian(_loss, params, x, y, sparsity=None)
    flat_params, unravel = jax.flatten_util.ravel_pytree(params)
    dense = np.asarray(jax.jit(jax.hessian(lambda p: _loss(unravel(p), x, y)))(flat_params))
    return H, dense


def _spent(H, estimate_fn):
    before = H.cache_info().hvps
    result = estimate_fn()
    return result, H.cache_info().hvps - before


# --- exact through colored probes -----------------------------------------------------------


@pytest.mark.parametrize("width, colors", [(1, 2), (2, 3)])
@pytest.mark.parametrize("method", ["hutchinson", "diag++"])
def test_colored_diagonal_exact(width, colors, method):
    a = _banded(N_BAND, width)
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(N_BAND))
    est, spent = _spent(H, lambda: H.diagonal(method=method, num_probes=colors))
    assert est.exact and est.hvps == spent == colors
    np.testing.assert_allclose(np.asarray(est.value), np.diag(a), rtol=0, atol=1e-12)
    assert not np.asarray(est.stderr).any()


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_colored_trace_exact(method):
    a = _banded(N_BAND, 2)
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(N_BAND))
    est, spent = _spent(H, lambda: H.trace(num_probes=30, method=method))
    assert est.exact and est.hvps == spent == 3  # 3 colors, not the budget of 30
    assert abs(float(est.value) - np.trace(a)) < 1e-10
    assert float(est.stderr) == 0
    # It was the Hessian's own diagonal request: cached, so asking again is free.
    again, spent = _spent(H, lambda: H.trace(num_probes=30, method=method))
    assert again.hvps == spent == 0 and float(again.value) == float(est.value)
    assert _spent(H, H.diagonal)[1] == 0


@pytest.mark.slow
def test_below_the_colors_is_random_within_its_stderr():
    a = _banded(N_BAND, 10)  # 11 colors
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(N_BAND))
    est, spent = _spent(H, lambda: H.diagonal(method="hutchinson", num_probes=8, key=1))
    assert not est.exact and est.hvps == spent == 8
    err = np.asarray(est.value) - np.diag(a)
    # Per entry only 8 samples stand behind each standard error; over all 200 entries the
    # squared errors and the reported variances agree (over keys 0..9 the ratio is 0.8-1.5).
    assert 0.5 < np.sum(err**2) / np.sum(np.asarray(est.stderr) ** 2) < 2
    trace = H.trace(num_probes=8, key=2)
    assert not trace.exact
    assert abs(float(trace.value) - np.trace(a)) <= 4 * float(trace.stderr)


def test_without_coloring_a_sparse_trace_is_random():
    a = _banded(N_BAND, 1)
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(N_BAND))
    est = H.trace(num_probes=12, key=0, coloring=False)
    assert not est.exact and est.hvps == 12
    assert abs(float(est.value) - np.trace(a)) <= 4 * float(est.stderr)


@pytest.mark.slow
def test_dense_budget_covering_every_column_is_exact(network):
    H, dense = network
    block = H.flat
    n = dense.shape[0]
    est, spent = _spent(H, lambda: block.trace(num_probes=n))
    assert est.exact and spent == n
    assert abs(float(est.value) - np.trace(dense)) < 1e-10
    diag = block.diagonal(method="diag++", num_probes=n + 5)
    assert diag.exact and diag.hvps == 0  # the trace's diagonal, cached
    np.testing.assert_allclose(np.asarray(diag.value), np.diag(dense), atol=1e-10)
    fro = block.frobenius_norm(num_probes=n)
    assert fro.exact and abs(float(fro.value) - np.linalg.norm(dense)) < 1e-10


# --- random estimates against the dense reference -------------------------------------------


def _w1(dense):
    return dense[:40, :40]  # ravel_pytree order: b1 (10), w1 (40), w2 (10)


def _w1_block(dense):
    return dense[10:50, 10:50]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_of_a_network_block_within_4_stderr(network, method):
    H, dense = network
    block = H["w1"]["w1"]
    reference = np.trace(_w1_block(dense))
    for seed in range(3):
        est, spent = _spent(H, lambda s=seed: block.trace(num_probes=15, key=s, method=method))
        assert not est.exact and est.hvps == spent == 15
        assert abs(float(est.value) - reference) <= 4 * float(est.stderr)


@pytest.mark.slow
def test_hutchpp_stderr_is_calibrated(network):
    """Over many keys, the spread of the estimates matches the reported standard error."""
    H, dense = network
    block = H.flat
    estimates = [block.trace(num_probes=15, key=s) for s in range(40)]
    values = np.array([float(e.value) for e in estimates])
    reported = np.sqrt(np.mean([float(e.stderr) ** 2 for e in estimates]))
    assert 0.5 < values.std(ddof=1) / reported < 2
    assert abs(values.mean() - np.trace(dense)) <= 4 * reported / np.sqrt(len(values))


@pytest.mark.parametrize("method", ["diag++", "hutchinson"])
def test_diagonal_of_a_network_block_within_its_stderr(network, method):
    H, dense = network
    block = H["w1"]["w1"]
    est, spent = _spent(H, lambda: block.diagonal(method=method, num_probes=15, key=3))
    assert est.value.shape == est.stderr.shape == (4, 10)
    assert est.hvps == spent == 15
    z = (
        np.abs(np.asarray(est.value).ravel() - np.diag(_w1_block(dense)))
        / np.asarray(est.stderr).ravel()
    )
    assert z.max() <= 5
    assert np.mean(z <= 2) >= 0.8  # about 95 % of a normal's mass lies within 2


def test_frobenius_norm_within_4_stderr(network):
    H, dense = network
    est, spent = _spent(H, lambda: H["w1"]["w1"].frobenius_norm(num_probes=15, key=2))
    assert not est.exact and est.hvps == spent == 15
    assert abs(float(est.value) - np.linalg.norm(_w1_block(dense))) <= 4 * float(est.stderr)


# --- eigenpairs ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.slow
def test_eigh_with_every_step_is_exact(network, which):
    H, dense = network
    n = dense.shape[0]
    eig, spent = _spent(H, lambda: H.flat.eigh(4, which=which, num_hvps=n))
    assert eig.hvps == spent == n
    reference = np.linalg.eigvalsh(dense)
    expected = {
        "LA": reference[::-1][:4],
        "SA": reference[:4],
        "LM": reference[np.argsort(-np.abs(reference))][:4],
    }[which]
    np.testing.assert_allclose(np.asarray(eig.values), expected, rtol=1e-9, atol=1e-9)
    vectors = np.asarray(eig.vectors)
    np.testing.assert_allclose(dense @ vectors, vectors * np.asarray(eig.values), atol=1e-8)


def test_eigh_of_a_block_converges_within_its_residuals(network):
    H, dense = network
    block = H["w1"]["w1"]
    eig, spent = _spent(H, lambda: block.eigh(3, num_hvps=25, key=1))
    assert eig.hvps == spent == 25
    assert eig.vectors.shape == (4, 10, 3)
    reference = np.linalg.eigvalsh(_w1_block(dense))[::-1][:3]
    error = np.abs(np.asarray(eig.values) - reference)
    assert np.all(error <= np.asarray(eig.residuals) + 1e-10)
    assert error[0] < 1e-8 * abs(reference[0])
    vectors = np.asarray(eig.vectors).reshape(40, 3)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-10)


def test_eigh_through_a_repeated_eigenvalue():
    """An invariant subspace ends the Krylov space early; Lanczos restarts and goes on."""
    a = np.diag(np.r_[np.full(6, 2.0), np.arange(3.0, 9.0)])
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(12), sparsity=None)
    eig = H.eigh(12, num_hvps=12, which="SA", vectors=False)
    np.testing.assert_allclose(np.asarray(eig.values), np.sort(np.diag(a)), atol=1e-10)
    assert eig.vectors is None


# --- spectral density ----------------------------------------------------------------------


@pytest.mark.slow
def test_spectral_density_against_the_dense_spectrum(network):
    H, dense = network
    n = dense.shape[0]
    sd, spent = _spent(H, lambda: H.flat.spectral_density(num_probes=6, steps=n, key=0))
    assert sd.hvps == spent == 6 * n
    assert sd.nodes.shape == sd.weights.shape == (6, n)
    np.testing.assert_allclose(np.asarray(sd.weights).sum(axis=1), 1, atol=1e-10)
    grid = np.asarray(sd.grid)
    eigenvalues = np.linalg.eigvalsh(dense)
    gauss = np.exp(-0.5 * ((grid[:, None] - eigenvalues) / sd.sigma) ** 2)
    reference = gauss.sum(axis=1) / (n * sd.sigma * np.sqrt(2 * np.pi))
    assert abs(np.trapezoid(np.asarray(sd.density), grid) - 1) < 1e-3
    # Pointwise, each error over its stderr follows Student's t with 5 degrees of freedom
    # (heavy tails); integrated over the grid, squared errors and variances agree (over keys
    # 0..7 the ratio is 0.3-1.2).
    err = np.asarray(sd.density) - reference
    assert np.sum(err**2) <= 3 * np.sum(np.asarray(sd.stderr) ** 2)


@pytest.mark.slow  # the unrolled Lanczos loops compile into one program
def test_estimators_under_jit_equal_eager():
    f = lambda x: jnp.sum(jnp.sin(x) * x[::-1]) + jnp.sum(x**4)  # noqa: E731

    def estimates(x):
        H = lazyhess.hessian(f, x, sparsity=None)
        return (
            H.trace(num_probes=4, key=1).value,
            H.eigh(1, num_hvps=3).values,
            H.spectral_density(num_probes=2, steps=2, grid=8).density,
        )

    x = jnp.linspace(0.0, 1.0, 6)
    for eager, jitted in zip(estimates(x), jax.jit(estimates)(x), strict=True):
        np.testing.assert_allclose(jitted, eager, rtol=1e-10)


# --- delegation and errors ---------------------------------------------------------------------


@pytest.mark.slow
def test_single_block_hessian_delegates():
    a = _banded(20, 1)
    H = lazyhess.hessian(_quadratic(a), jnp.zeros(20))
    assert abs(float(H.trace().value) - np.trace(a)) < 1e-12
    np.testing.assert_allclose(np.asarray(H.diagonal()), np.diag(a))  # exact default unchanged
    assert float(H.eigh(1, num_hvps=20).values[0]) == pytest.approx(np.linalg.eigvalsh(a)[-1])


def test_errors(network):
    H, _ = network
    with pytest.raises(TypeError, match="select one first"):
        H.trace()
    with pytest.raises(ValueError, match="square block"):
        H["w1"]["b1"].trace()
    with pytest.raises(ValueError, match="method='hutch' is not valid; use one of hutch"):
        H.flat.trace(method="hutch")
    with pytest.raises(ValueError, match="method='xdiag' is not valid; use one of exact"):
        H.flat.diagonal(method="xdiag")
    with pytest.raises(ValueError, match="num_probes must be an int >= 1; got 0"):
        H.flat.trace(num_probes=0)
    with pytest.raises(ValueError, match="at least 2 probes"):
        H.flat.trace(num_probes=1)
    with pytest.raises(TypeError, match="key must be a jax PRNG key"):
        H.flat.trace(key="0")
    with pytest.raises(ValueError, match="k must be an int in 1..60"):
        H.flat.eigh(61)
    with pytest.raises(ValueError, match="which='BE' is not valid"):
        H.flat.eigh(2, which="BE")
    with pytest.raises(ValueError, match="num_hvps must be an int >= 3"):
        H.flat.eigh(3, num_hvps=2)
    before = H.cache_info().hvps
    with pytest.raises(ValueError, match="num_probes must be an int >= 2; got 1"):
        H.flat.spectral_density(num_probes=1)
    with pytest.raises(ValueError, match="sigma must be a positive width; got -1.0"):
        H.flat.spectral_density(sigma=-1.0)
    with pytest.raises(ValueError, match=r"1-D array of points; got shape \(2, 2\)"):
        H.flat.spectral_density(grid=np.ones((2, 2)))
    assert H.cache_info().hvps == before  # refused before any HVP
    batched = lazyhess.hessian(lambda x: jnp.sum(x**3, axis=1), jnp.ones((4, 3)), batch_axis=0)
    with pytest.raises(ValueError, match=r"one scalar output without a batch; H has shape"):
        batched.eigh(1)
