"""Any sequence of requests on any pattern: every answer equals the dense reference, every
charge stays within its bound and equals what ``cost`` announced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazyhess

settings.register_profile(
    "requests",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def patterns(draw):
    """A symmetric pattern with empty rows, dense rows, and blocks, over 1-3 leaves."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    n = sum(sizes)
    mask = np.zeros((n, n), dtype=bool)
    for _ in range(draw(st.integers(0, 2 * n))):
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        mask[i, j] = mask[j, i] = True
    if draw(st.booleans()):
        k = draw(st.integers(0, n - 1))
        mask[k, :] = mask[:, k] = True
    if draw(st.booleans()) and len(sizes) > 1:
        a, b = sizes[0], sizes[0] + sizes[1]
        mask[:a, a:b] = mask[a:b, :a] = True
    empty = draw(st.integers(0, n - 1))
    mask[empty, :] = mask[:, empty] = False
    return sizes, mask


def _function(mask, seed, quadratic=False):
    """``f(x) = sum over stored (i <= j) of w_ij x_i x_j (1 + x_i x_j / 7)``: H has ``mask``.

    ``quadratic``: ``w_ij x_i x_j`` alone, a constant Hessian (its points share a cache).
    """
    rows, cols = np.nonzero(np.triu(mask))
    w = np.random.default_rng(seed).uniform(0.5, 2.0, rows.size)

    def f(leaves):
        x = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])
        t = x[rows] * x[cols]
        return jnp.sum(w * t) if quadratic else jnp.sum(w * t * (1.0 + t / 7.0))

    return f


def _keys(draw, n):
    ints = st.integers(-n, n - 1)
    index_list = st.lists(st.integers(0, n - 1), min_size=0, max_size=n)
    step = st.slices(n)
    return draw(
        st.lists(
            st.one_of(
                ints.map(lambda i: i),
                st.tuples(st.just(slice(None)), ints),
                st.tuples(ints, ints),
                st.tuples(step, step),
                st.tuples(index_list.map(lambda v: np.array(v, dtype=np.intp)), step),
                st.tuples(step, index_list),
                st.tuples(index_list, index_list.map(lambda v: v[::-1])).filter(
                    lambda k: len(k[0]) == len(k[1])
                ),
                st.tuples(st.just(Ellipsis), st.lists(st.booleans(), min_size=n, max_size=n)),
                st.just("diagonal"),
                st.just("to_sparse"),
                st.just("blocks"),
                st.just("move"),
            ),
            min_size=1,
            max_size=6,
        )
    )


@pytest.mark.slow
@settings(settings.get_profile("requests"))
@given(
    data=st.data(),
    pattern=patterns(),
    cache=st.sampled_from([256 * 2**20, 300, 0]),
    quadratic=st.booleans(),
)
def test_any_requests_match_the_dense_reference(data, pattern, cache, quadratic):
    sizes, mask = pattern
    n = int(mask.shape[0])
    f = _function(mask, seed=n, quadratic=quadratic)
    hessian = jax.jit(jax.hessian(f))
    leaves = tuple(jnp.linspace(-1.0, 1.0 + k, s) for k, s in enumerate(sizes))
    ref = hessian(leaves)
    dense = np.block([[np.asarray(block) for block in row] for row in ref])
    H = lazyhess.hessian(f, leaves, cache_bytes=cache)
    mask = H.sparsity.to_scipy("csr").toarray()
    assert not (dense[~mask]).any()
    for key in _keys(data.draw, n):
        if key == "move":  # a new point: shared results if the Hessian is constant
            leaves = tuple(leaf * 0.5 + 0.25 for leaf in leaves)
            ref = hessian(leaves)
            dense = np.block([[np.asarray(block) for block in row] for row in ref])
            H = H.at(leaves)
            continue
        flat = H.flat
        before = H.cache_info().hvps
        if key == "diagonal":
            cost_new = None
            np.testing.assert_allclose(flat.diagonal(), np.diagonal(dense), rtol=1e-12)
            bound = int(np.count_nonzero(np.diagonal(mask)))
        elif key == "to_sparse":
            cost_new = None
            np.testing.assert_allclose(H.to_sparse("dense"), dense, rtol=1e-12, atol=1e-12)
            bound = lazyhess.hessian_coloring_from_sparsity(H.sparsity).num_colors
        elif key == "blocks":
            cost_new = H.cost().new_hvps
            got = H[:]
            for i in range(len(sizes)):
                for j in range(len(sizes)):
                    np.testing.assert_allclose(got[i][j], ref[i][j], rtol=1e-12, atol=1e-12)
            bound = n
        else:
            cost_new = flat.cost(key).new_hvps
            np.testing.assert_allclose(flat[key], dense[key], rtol=1e-12, atol=1e-12)
            rows, cols = (np.broadcast_to(a, (n, n))[key] for a in np.ogrid[:n, :n])
            inside = mask[rows, cols]
            bound = min(np.unique(rows[inside]).size, np.unique(cols[inside]).size)
        spent = H.cache_info().hvps - before
        assert spent <= bound, (key, spent, bound)
        if cost_new is not None:
            assert spent == cost_new, (key, spent, cost_new)


NONFINITE = {
    "sqrt reversed": lambda x: jnp.sum(jnp.sqrt(x) * x[::-1]) + jnp.sum(x**2),
    "log chain": lambda x: jnp.sum(jnp.log(x[1:]) * x[:-1] ** 2),
    "inverse": lambda x: jnp.sum(1.0 / x) * x[0] + jnp.sum(x[1:] * x[:-1]),
}


@pytest.mark.slow
@settings(settings.get_profile("requests"))
@given(
    data=st.data(),
    name=st.sampled_from(sorted(NONFINITE)),
    points=st.lists(
        st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.nan, np.inf]), min_size=6, max_size=6),
        min_size=1,
        max_size=3,
    ),
    cache=st.sampled_from([256 * 2**20, 300, 0]),
    chunk=st.sampled_from([None, 2]),
    mode=st.sampled_from(["fwd_over_rev", "rev_over_rev", "rev_over_fwd"]),
)
def test_any_requests_at_non_finite_points_match_the_reference(
    data, name, points, cache, chunk, mode
):
    # The dense engine reads a row from its unit seed by symmetry only where that seed's
    # product is finite; NaN and inf must land where jax.hessian puts them, whichever
    # request computed or cached the seeds (chunk 2: H[:] in one compiled call). The
    # other modes differentiate in another order: there every request must equal the
    # same mode's whole Hessian, computed with no cache (docs/indexing.md).
    f = NONFINITE[name]
    if mode == "fwd_over_rev":
        hessian = jax.hessian(f)  # not jitted: XLA may turn one of its NaNs into an inf
    else:

        def hessian(x):
            return lazyhess.hessian(f, x, sparsity=None, mode=mode, cache_bytes=0)[:]

    x = jnp.asarray(points[0])
    H = lazyhess.hessian(f, x, sparsity=None, cache_bytes=cache, chunk_size=chunk, mode=mode)
    rest = iter(points[1:])
    for key in _keys(data.draw, x.size):
        if key == "move":
            x = jnp.asarray(next(rest, points[0]))
            H = H.at(x)
            continue
        ref = np.asarray(hessian(x))
        if key == "diagonal":
            got, want = H.diagonal(), np.diagonal(ref)
        elif key in ("to_sparse", "blocks"):
            got, want = H.to_sparse("dense") if key == "to_sparse" else H[:], ref
        else:
            got, want = H[key], ref[key]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_off_diagonal_block_of_a_bilinear_function():
    f = lambda a, b: 3 * jnp.sum(a[:3] * b[:3])  # noqa: E731
    a, b = jnp.ones(4), jnp.ones(5)
    H = lazyhess.hessian(f, a, b, argnums=(0, 1))
    ref = jax.jit(jax.hessian(f, argnums=(0, 1)))(a, b)
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(H[i][j][:], ref[i][j])
    assert H.cache_info().hvps <= 3


def test_block_after_rows_on_a_large_banded_problem():
    n = 100_000

    def f(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (x[:-1] - 1.0) ** 2)

    x = jnp.linspace(0.0, 1.0, n)
    H = lazyhess.hessian(f, x)
    rows = np.random.default_rng(0).choice(n, size=100, replace=False)
    got = H[rows]
    assert H.cache_info().hvps <= 3
    b = 5_000
    block = H[b : b + 100, b : b + 100]
    i = np.arange(99)
    h = np.asarray(block)
    hv = H @ jnp.zeros(n).at[b + 50].set(1.0)
    np.testing.assert_allclose(h[:, 50], np.asarray(hv)[b : b + 100], rtol=1e-12)
    np.testing.assert_allclose(h[i, i + 1], h[i + 1, i], rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(got)[:, rows], np.asarray(got)[:, rows].T, rtol=1e-12, atol=1e-12
    )
