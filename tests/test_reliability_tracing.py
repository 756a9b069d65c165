"""A Hessian first used inside someone else's trace stores nothing traced (issue 11 item 8).

Each entry point is first reached under ``jax.jit`` (or inside ``jax.scipy``'s ``cg``), with
``jax.check_tracer_leaks`` on; the same Hessian is then used outside the trace and compared
with ``jax.hessian``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess


def chain(x):
    return jnp.sum(x[1:] * x[:-1] ** 2) + jnp.sum(jnp.sin(x)) + 0.5 * jnp.sum(x**2)


X = jnp.linspace(0.1, 1.0, 6)
B = jnp.cos(jnp.arange(6.0))
REF = np.asarray(jax.hessian(chain)(X))


def cg(H):
    return jax.scipy.sparse.linalg.cg(H, B, maxiter=3)[0]


FIRST = {
    "hvp": lambda H: jax.jit(H.hvp)(B),
    "matmul": lambda H: jax.jit(lambda v: H @ v)(B),
    "grad": lambda H: jax.grad(lambda v: v @ (H @ v))(B),
    "vmap": lambda H: jax.vmap(lambda v: H @ v)(jnp.stack([B, 2 * B])),
    "vmap row": lambda H: jax.vmap(lambda s: s * H[3])(jnp.arange(2.0)),
    "cg": cg,
    "cg under jit": lambda H: jax.jit(lambda: cg(H))(),
    "row": lambda H: jax.jit(lambda: H[3])(),
    "whole": lambda H: jax.jit(lambda: H[:])(),
    "to_sparse": lambda H: jax.jit(lambda: H.to_sparse("dense"))(),
    "diagonal": lambda H: jax.jit(H.diagonal)(),
    "at": lambda H: jax.jit(lambda y: H.at(y)[3] + H.at(y).to_sparse("dense")[0])(X + 0.1),
    "at hvp": lambda H: jax.jit(lambda y: H.at(y) @ B)(X + 0.1),
    "trace": lambda H: jax.jit(lambda: H.trace(num_probes=4).value)(),
    "eigh": lambda H: jax.jit(lambda: H.eigh(1, num_hvps=4).values)(),
    "linear operator": lambda H: jax.jit(lambda: H.as_linear_operator() @ np.ones(6))(),
}


def _usable_outside(H, ref=REF, b=B):
    np.testing.assert_allclose(np.asarray(H @ b), ref @ np.asarray(b), rtol=1e-12)
    np.testing.assert_allclose(H[3], ref[3], rtol=1e-12)
    np.testing.assert_allclose(H.to_sparse("dense"), ref, rtol=1e-12)


def _first_under_a_trace(first, sparsity):
    H = lazyhess.hessian(chain, X, sparsity=sparsity)
    with jax.check_tracer_leaks(True):
        FIRST[first](H)
    _usable_outside(H)
    moved = H.at(X + 0.2)
    np.testing.assert_allclose(moved[:], jax.hessian(chain)(X + 0.2), rtol=1e-12)


@pytest.mark.parametrize("first", ["cg under jit", "linear operator"])
def test_first_use_under_a_trace_stores_nothing_traced(first):
    _first_under_a_trace(first, "auto")


@pytest.mark.slow
@pytest.mark.parametrize("first", list(FIRST))
@pytest.mark.parametrize("sparsity", ["auto", None])
def test_every_entry_point_first_used_under_a_trace(first, sparsity):
    _first_under_a_trace(first, sparsity)


@pytest.mark.parametrize(
    "sparsity", [None] + [pytest.param(s, marks=pytest.mark.slow) for s in ("user", "auto")]
)
@pytest.mark.slow
def test_batch_check_first_made_under_jit(sparsity):
    def per_sample(z):
        return jnp.sum(z[..., 1:] * z[..., :-1] ** 2, axis=-1)

    xs = jnp.stack([X, X + 1.0, X * 2.0])
    ref = jax.vmap(jax.hessian(per_sample))(xs)
    pattern = np.abs(REF) > 0 if sparsity == "user" else sparsity
    H = lazyhess.hessian(per_sample, xs, batch_axis=0, sparsity=pattern)
    with jax.check_tracer_leaks(True):
        np.testing.assert_allclose(jax.jit(lambda: H[:, 2])(), ref[:, 2], rtol=1e-12)
    np.testing.assert_allclose(H[:], ref, rtol=1e-12)


def test_batch_check_first_made_under_jit_still_raises():
    def mixes(z):
        return jnp.sum(z * jnp.roll(z, 1, axis=0) ** 2, axis=-1)

    xs = jnp.stack([X, X + 1.0, X * 2.0])
    H = lazyhess.hessian(mixes, xs, batch_axis=0, sparsity=None)
    with pytest.raises(ValueError, match="samples interact"):
        jax.jit(lambda: H[:, 2])()


def test_aux_first_read_under_jit():
    H = lazyhess.hessian(lambda z: (chain(z), {"s": jnp.sum(z), "note": "kept"}), X, has_aux=True)
    with jax.check_tracer_leaks(True):
        jax.jit(lambda: H.aux["s"])()
    assert H.aux["note"] == "kept"
    np.testing.assert_allclose(H.aux["s"], np.sum(X))
    _usable_outside(H)
