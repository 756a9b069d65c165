"""The functional API's programs: how seeds are built and run, against jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from benchmarks.problems import PROBLEMS
from lazyhess import _functional
from lazyhess._functional import Program
from lazyhess._hvp import SERIAL_MIN


@pytest.fixture(scope="module")
def sparsine():
    """SPARSINE at n = 32: 20 whole-Hessian colors, enough for the serial choice."""
    f, x = PROBLEMS["SPARSINE"].make(32)
    x = x + 0.1 * jnp.sin(jnp.arange(x.size))
    return f, x, np.asarray(jax.jit(jax.hessian(f))(x))


def with_aux(f):
    def g(x):
        return f(x), {"first": x[0], "tag": "t"}

    return g


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"])
def test_vmapped_and_serial_seeds_give_the_same_program(sparsine, mode):
    f, x, ref = sparsine
    coloring = lazyhess.hessian_coloring(f, x, whole=True)
    assert coloring.num_colors >= SERIAL_MIN
    program = Program(with_aux(f), coloring, None, True, False, mode, None)
    program((x,), {})  # concrete: decides the way once, by timing both
    assert program._way is not None
    for serial in (False, True):
        value, aux, B, _ = program._jitted(serial, x, [])(x, [])
        np.testing.assert_allclose(value, f(x), rtol=1e-12)
        np.testing.assert_allclose(aux[0], x[0])
        np.testing.assert_allclose(B, coloring.seeds() @ ref, rtol=1e-10, atol=1e-10)
    hess = lazyhess.sparse_hessian_from_coloring(
        with_aux(f), coloring, "dense", has_aux=True, mode=mode
    )
    H, aux = hess(x)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-10)
    assert aux["tag"] == "t" and aux["first"] == x[0]
    H = jax.jit(lambda z: hess(z)[0])(x)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_traced_first_call_measures_with_the_sample(sparsine):
    f, x, ref = sparsine
    hess = jax.jit(lazyhess.sparse_hessian(f, x, output_format="dense"))
    np.testing.assert_allclose(hess(x + 0.0), ref, rtol=1e-10, atol=1e-10)
    coloring = lazyhess.hessian_coloring(f, x, whole=True)
    program = Program(f, coloring, None, False, False, None, None)
    jax.jit(lambda z: program((z,), {}).compressed)(x)  # traced, no sample: undecided
    assert program._way is None
    program.sampled((x,), {})
    B = jax.jit(lambda z: program((z,), {}).compressed)(x)
    assert program._way is not None
    np.testing.assert_allclose(B, coloring.seeds() @ ref, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_seeds_built_on_the_device_above_the_constant_limit(sparsine, chunk_size, monkeypatch):
    f, x, ref = sparsine
    monkeypatch.setattr(_functional, "CONSTANT_SEED_BYTES", 0)
    compressed = lazyhess.compressed_hessian(f, x, chunk_size=chunk_size)
    coloring = compressed.coloring
    B = jax.jit(compressed)(x)
    assert B.shape == (coloring.num_colors, x.size)  # one HVP per color, no more
    np.testing.assert_allclose(B, coloring.seeds() @ ref, rtol=1e-10, atol=1e-10)
    hess = lazyhess.sparse_hessian(f, x, output_format="dense", chunk_size=chunk_size)
    np.testing.assert_allclose(jax.jit(hess)(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["star", "acyclic"])
@pytest.mark.parametrize("materialise", [False, True])
def test_decompression_under_vmap_and_grad(method, materialise):
    f, x = PROBLEMS["PENTADIAG"].make(12)
    coloring = lazyhess.hessian_coloring(f, x, method=method)
    program = Program(f, coloring, None, False, False, None, None)
    program._way = (False, materialise)  # as if measured
    rows, cols = coloring.rows, coloring.cols
    weights = jnp.linspace(1.0, 2.0, rows.size)

    def data(z):
        return program.data(program((z,), {}))

    def reference(z):
        return jax.hessian(f)(z)[rows, cols]

    np.testing.assert_allclose(jax.jit(data)(x), reference(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        jax.jit(jax.grad(lambda z: jnp.sum(data(z) * weights)))(x),
        jax.grad(lambda z: jnp.sum(reference(z) * weights))(x),
        rtol=1e-10,
        atol=1e-10,
    )
    points = jnp.stack([x, 0.5 * x, x + 1.0])
    batched = jax.jit(jax.vmap(data))(points)
    np.testing.assert_allclose(batched, jax.vmap(reference)(points), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pick", [0, 1, 2])
def test_each_way_of_a_small_program_is_raced_and_exact(pick, monkeypatch):
    # On CPU every program of two seeds or more races lax.map too (XLA splits a vmapped
    # batch's fusion across threads); whichever way wins gives the same Hessian.
    f, x = PROBLEMS["PENTADIAG"].make(12)
    x = x + 0.1 * jnp.sin(jnp.arange(x.size))
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    raced = []

    def choose(runs, warmup, incumbent):
        raced.append(len(runs))
        return min(pick, len(runs) - 1)

    monkeypatch.setattr(_functional, "fastest_of", choose)
    for method, chunk_size in [("star", None), ("acyclic", None), ("star", 1)]:
        coloring = lazyhess.hessian_coloring(f, x, method=method)
        hess = lazyhess.sparse_hessian_from_coloring(f, coloring, "dense", chunk_size=chunk_size)
        np.testing.assert_allclose(hess(x), ref, rtol=1e-10, atol=1e-10)
        y = x + 1.0
        np.testing.assert_allclose(jax.jit(hess)(y), jax.hessian(f)(y), rtol=1e-10, atol=1e-10)
    cpu = jax.default_backend() == "cpu"
    assert raced == ([3, 3] if cpu else [2, 2]) + [2]  # one seed a batch: nothing to map
