"""With a pattern, requests cost only the seeds they need: zeros free, colorings shared."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import rosen

import lazyhess
from benchmarks.problems import PROBLEMS
from lazyhess import _engine, _hvp, _mesh
from lazyhess._hvp import maps_small_batches


def hvps(H):
    return H.cache_info().hvps


def tridiagonal_problem(n):
    x = jnp.linspace(-1.0, 1.0, n)
    return rosen, x


@pytest.fixture(scope="module")
def banded():
    f, x = tridiagonal_problem(10_000)
    return f, x, lazyhess.hessian(f, x).sparsity


@pytest.mark.slow
def test_single_row_and_column_cost_one(banded):
    f, x, pattern = banded
    H = lazyhess.hessian(f, x, sparsity=pattern)
    row = H[5000]
    assert hvps(H) == 1
    # Row 5000 only meets the terms inside the window 4998..5002.
    np.testing.assert_allclose(
        row[4998:5003], jax.jit(jax.hessian(f))(x[4998:5003])[2], rtol=1e-12
    )
    assert not np.any(row[:4999]) and not np.any(row[5002:])
    H[:, 17]
    assert hvps(H) == 2


def test_structurally_zero_block_is_free(banded):
    f, x, pattern = banded
    H = lazyhess.hessian(f, x, sparsity=pattern)
    block = H[100:200, 5000:5100]
    assert hvps(H) == 0
    assert block.shape == (100, 100) and not np.any(block)


def test_hundred_random_rows_of_a_banded_hessian(banded):
    f, x, pattern = banded
    H = lazyhess.hessian(f, x, sparsity=pattern)
    rows = np.random.default_rng(0).choice(10_000, size=100, replace=False)
    got = H[rows]
    assert hvps(H) <= 3
    dense = H.to_sparse("csr")[rows].toarray()
    np.testing.assert_allclose(got, dense)


@pytest.mark.slow
def test_full_sparse_hessian_costs_the_colors():
    f, x = tridiagonal_problem(200)
    H = lazyhess.hessian(f, x)
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(f))(x), rtol=1e-12, atol=1e-12)
    assert hvps(H) == 3
    H.to_sparse("csr")
    assert hvps(H) == 3  # the colors are cached


@pytest.mark.slow
def test_full_sparse_hessian_reuses_each_cached_color():
    f, x = tridiagonal_problem(500)
    ref = sp.csr_array(np.asarray(jax.jit(jax.hessian(f))(x)))
    H = lazyhess.hessian(f, x, cache_bytes=2 * 500 * 8)  # room for two of the three colors
    first = H.to_sparse("csr")
    assert hvps(H) == 3 and H.cache_info().entries == 2
    second = H.to_sparse("csr")
    assert hvps(H) == 4  # only the evicted color is computed again
    for M in (first, second):
        np.testing.assert_allclose(M.toarray(), ref.toarray(), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_whole_hessian_is_solved_from_fewer_acyclic_colors():
    f, x = PROBLEMS["BAND9"].make(40)
    ref = np.asarray(jax.hessian(f)(x))
    H = lazyhess.hessian(f, x)
    np.testing.assert_allclose(H.to_sparse("csr").toarray(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.tril().toarray(), np.tril(ref), rtol=1e-12, atol=1e-12)
    structure = H._engine.structure
    assert (structure.colored.num_colors, structure.whole_colored.num_colors) == (9, 5)
    assert hvps(H) == 5  # acyclic colors: a 9-band needs 5, star 9
    traced = jax.jit(lambda y: lazyhess.hessian(f, y).to_sparse("dense"))(x)
    np.testing.assert_allclose(traced, ref, rtol=1e-12, atol=1e-12)
    # H[:] is the whole Hessian too, priced and served the same way.
    G = H.at(x + 0.1)
    assert G.cost(slice(None)).new_hvps == 5
    np.testing.assert_allclose(G[:], jax.hessian(f)(x + 0.1), rtol=1e-12, atol=1e-12)
    assert hvps(G) == 5
    # Once the star colors are cached (a block needed them), they serve the whole Hessian.
    K = H.at(x + 0.2)
    K[1:39]
    assert hvps(K) == 9 and K.cost(slice(None)) == (0, 9, 8 * 40 * 40, 0)
    ref = np.asarray(jax.hessian(f)(x + 0.2))
    np.testing.assert_allclose(K.to_sparse("numpy"), ref, rtol=1e-12, atol=1e-12)
    assert hvps(K) == 9


@pytest.mark.slow
def test_whole_hessian_of_several_outputs_by_substitution():
    band, x = PROBLEMS["BAND9"].make(30)

    def f(y):
        return jnp.stack([band(y), band(y**2)])

    H = lazyhess.hessian(f, x)
    np.testing.assert_allclose(H.to_sparse("dense"), jax.hessian(f)(x), rtol=1e-12, atol=1e-12)
    assert hvps(H) == H._engine.structure.whole_colored.num_colors == 5


@pytest.mark.slow
def test_whole_hessians_at_new_points_compile_once():
    traces = []

    def f(x):
        traces.append(1)
        return rosen(x)

    x = jnp.linspace(-1.0, 1.0, 50)
    H = lazyhess.hessian(f, x)
    H.to_sparse("csr")
    first = len(traces)
    # The first new point traces the HVP to tell whether the Hessian is constant
    # (Kernels.constant) and the rows' linearisation; the next, once the HVP program's way
    # was settled, the program that computes and recovers the whole Hessian at once, each
    # way it races for each coloring (Engine._read_at_once: two, and lax.map too where
    # maps_small_batches, for the star coloring and the acyclic one).
    assert len(H._engine.structure.whole_candidates) == 2
    traced = first + 2 + 2 * (3 if maps_small_batches() else 2)
    for shift in (0.1, 0.2, 0.3, 0.4):
        if shift == 0.3:
            assert len(traces) == traced
        fresh = H.at(x + shift)
        kept = H._engine.kernels.fresh(H._engine.structure.values_family)
        ref = np.asarray(jax.jit(jax.hessian(rosen))(x + shift))
        np.testing.assert_allclose(fresh.to_sparse("csr").toarray(), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fresh[7], ref[7], rtol=1e-12)  # served by the cached values
        np.testing.assert_allclose(H.at(x + shift)[7], ref[7], rtol=1e-12)
        assert hvps(fresh) == (3 if kept is None else kept[0])  # star's 3 or the kept program's
    assert len(traces) == traced  # nothing more from the third point on


@pytest.mark.slow
def test_tridiagonal_diagonal_costs_two():
    f, x = tridiagonal_problem(300)
    H = lazyhess.hessian(f, x)
    np.testing.assert_allclose(H.diagonal(), jnp.diagonal(jax.jit(jax.hessian(f))(x)), rtol=1e-12)
    assert hvps(H) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["ARWHEAD", "BDQRTIC", "CLPLATEA", "FMINSRF2", "RANDSP2", "ARROW2"]
)
def test_no_request_costs_more_than_rows_columns_or_colors(name):
    f, x = PROBLEMS[name].make(100)
    n = x.size
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    pattern = lazyhess.hessian_sparsity(f, x)
    colors = lazyhess.hessian_coloring_from_sparsity(pattern)
    rng = np.random.default_rng(1)
    for _ in range(6):
        rows = rng.choice(n, size=rng.integers(1, 12), replace=False)
        cols = rng.choice(n, size=rng.integers(1, 12), replace=False)
        H = lazyhess.hessian(f, x, sparsity=pattern)
        got = H[np.ix_(rows, cols)]
        np.testing.assert_allclose(got, ref[np.ix_(rows, cols)], rtol=1e-10, atol=1e-8)
        block = pattern.to_scipy("csr")[rows][:, cols]
        needed = np.unique(colors.colors[cols[np.unique(block.nonzero()[1])]]) if block.nnz else []
        assert hvps(H) <= min(len(rows), len(cols))
        assert hvps(H) <= max(len(needed), colors.num_colors if block.nnz else 0)


def test_cached_colors_serve_later_requests_and_eviction_keeps_values():
    f, x = tridiagonal_problem(500)
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    H = lazyhess.hessian(f, x)
    H.to_sparse("coo")
    H[3]
    H[17:40, 10:50]
    assert hvps(H) == 3
    small = lazyhess.hessian(f, x, cache_bytes=500 * 8)
    for key in [np.s_[:], np.s_[3], np.s_[17:40, 10:50], np.s_[:]]:
        np.testing.assert_allclose(small[key], ref[key], rtol=1e-12, atol=1e-12)
    assert small.cache_info().entries == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_rev", "rev_over_fwd"])
def test_whole_hessians_at_fresh_points_from_constant_seeds(mode):
    """A fresh point's whole Hessian: its coloring's seeds are constants of one program."""
    f, x = PROBLEMS["BAND9"].make(40)
    H = lazyhess.hessian(f, x, mode=mode)
    H.to_sparse()
    reference = jax.jit(jax.hessian(f))
    for shift in (0.1, 0.2):
        fresh = H.at(x + shift)
        kept = H._engine.kernels.fresh(H._engine.structure.values_family)
        dense = fresh.to_sparse("dense")
        np.testing.assert_allclose(dense, reference(x + shift), rtol=1e-12, atol=1e-12)
        assert hvps(fresh) == (
            H._engine.structure.whole_colored.num_colors if kept is None else kept[0]
        )
    # One family's programs for the first fresh point, each whole coloring's once raced.
    assert len(H._engine.kernels._fixed) == len(H._engine.structure.whole_candidates) == 2

    def per(w):
        return jnp.sum(w[1:] ** 2 * w[:-1] ** 2) + jnp.sum(jnp.cos(w))

    W = jax.random.normal(jax.random.PRNGKey(1), (3, 20))
    Hb = lazyhess.hessian(jax.vmap(per), W, batch_axis=0, mode=mode)
    Hb.to_sparse("bcoo")
    batched = Hb.at(W + 0.5).to_sparse("bcoo").todense()
    expected = jax.jit(jax.vmap(jax.hessian(per)))(W + 0.5)
    np.testing.assert_allclose(batched, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_batch_one_coloring_serves_every_sample():
    def per(w):
        return jnp.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)

    W = jax.random.normal(jax.random.PRNGKey(0), (8, 30))
    H = lazyhess.hessian(jax.vmap(per), W, batch_axis=0)
    np.testing.assert_allclose(
        H[:], jax.jit(jax.vmap(jax.hessian(per)))(W), rtol=1e-12, atol=1e-12
    )
    assert hvps(H) == 3
    assert H.sparsity.shape == (30, 30)


def test_batch_coupling_is_refused():
    with pytest.raises(ValueError, match="interact"):
        lazyhess.hessian(
            lambda X: jnp.sum(X, axis=1) * jnp.sum(X**2), jnp.ones((3, 2)), batch_axis=0
        )[0]


@pytest.mark.slow
def test_user_patterns_are_validated_and_used():
    f, x = tridiagonal_problem(6)
    tri = sp.diags_array([np.ones(5), np.ones(6), np.ones(5)], offsets=[-1, 0, 1]).astype(bool)
    for given in [tri, tri.toarray(), lazyhess.SparsityPattern.from_scipy(tri)]:
        H = lazyhess.hessian(f, x, sparsity=given)
        np.testing.assert_allclose(H[:], jax.jit(jax.hessian(f))(x), rtol=1e-12)
        assert hvps(H) == 3 + 1  # the colors, and one probe checking the given pattern
    with pytest.raises(ValueError, match=r"shape \(5, 5\), but the flat Hessian .* is 6 x 6"):
        lazyhess.hessian(f, x, sparsity=np.eye(5, dtype=bool))
    with pytest.raises(ValueError, match="not symmetric"):
        lazyhess.hessian(f, x, sparsity=np.triu(np.ones((6, 6), bool)))
    with pytest.raises(TypeError, match="sparsity must be"):
        lazyhess.hessian(f, x, sparsity=3)


def test_sparse_formats_have_stable_coordinates():
    f, x = tridiagonal_problem(50)
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    H = lazyhess.hessian(f, x)
    for format in ["csr", "csc", "coo"]:
        M = H.to_sparse(format)
        np.testing.assert_allclose(M.toarray(), ref, rtol=1e-12)
        assert M.nnz == 148
    np.testing.assert_allclose(H.to_sparse("bcoo").todense(), ref, rtol=1e-12)
    np.testing.assert_allclose(H.to_sparse("dense"), ref, rtol=1e-12)
    np.testing.assert_allclose(H.to_sparse("numpy"), ref, rtol=1e-12)
    a = H.to_sparse("coo")
    b = H.at(jnp.ones(50)).to_sparse("coo")  # at x = 1 some entries vanish: kept as zeros
    np.testing.assert_array_equal(a.coords[0], b.coords[0])
    np.testing.assert_array_equal(a.coords[1], b.coords[1])
    t1, t2 = H.tril(), H.at(jnp.ones(50)).tril()
    np.testing.assert_array_equal(t1.coords, t2.coords)
    np.testing.assert_allclose(t1.toarray(), np.tril(ref), rtol=1e-12)
    with pytest.raises(ValueError, match="valid format"):
        H.to_sparse("lil")


def test_bcoo_coordinates_go_to_the_device_once_per_pattern():
    f, x = tridiagonal_problem(50)
    H = lazyhess.hessian(f, x)
    a, b = H.to_sparse("bcoo"), H.at(jnp.ones(50)).to_sparse("bcoo")
    assert a.indices is b.indices  # one device copy, not one per call
    np.testing.assert_allclose(b.todense(), jax.hessian(f)(jnp.ones(50)), rtol=1e-12)
    hess = lazyhess.sparse_hessian(f, x)
    assert hess(x).indices is hess(x + 1.0).indices


@pytest.mark.parametrize(
    "format, cache", [("bcoo", "_DEVICE_INDICES"), ("csr", "_HOST_COORDINATES")]
)
def test_coordinates_kept_per_pattern_are_released_with_it(format, cache):
    import gc

    from lazyhess import _formats

    kept = getattr(_formats, cache)
    pattern = sp.csr_array(np.eye(3, k=1) + np.eye(3))
    gc.collect()  # earlier tests' patterns, collected now rather than in the count below
    before = len(kept)
    M = _formats.pattern_output(np.arange(5.0), pattern, format)
    np.testing.assert_array_equal(M.todense(), np.array([[0, 1, 0], [0, 2, 3], [0, 0, 4.0]]))
    assert len(kept) == before + 1
    del pattern
    gc.collect()
    assert len(kept) == before  # released with its pattern


def test_scipy_outputs_own_their_coordinates():
    # One 32-bit copy of the pattern's coordinates serves every output; each output gets
    # its own, so changing one in place leaves the next intact.
    f, x = tridiagonal_problem(50)
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    H = lazyhess.hessian(f, x)
    for format in ["csr", "csc", "coo"]:
        M = H.to_sparse(format)
        coords = M.coords if format == "coo" else (M.indices, M.indptr)
        assert all(c.dtype == np.int32 for c in coords)
        M.data[:] = 0
        for c in coords:
            c[:] = 0
        np.testing.assert_allclose(H.to_sparse(format).toarray(), ref, rtol=1e-12)
    lower = H.tril()
    lower.coords[0][:] = 0
    np.testing.assert_allclose(H.tril().toarray(), np.tril(ref), rtol=1e-12)


@pytest.mark.parametrize("format", ["csr", "csc", "coo", "tril"])
def test_scipy_outputs_built_while_the_values_are_computed(format):
    # From the third fresh point on one program computes the values, and the scipy array is
    # built around its data buffer meanwhile: every point's matrix is its own and exact.
    f, x = tridiagonal_problem(50)
    H0 = lazyhess.hessian(f, x)
    family, _ = H0._engine._whole()
    kind = {"csr": sp.csr_array, "csc": sp.csc_array}.get(format, sp.coo_array)
    part = np.tril if format == "tril" else np.asarray

    def request(H):
        return H.tril() if format == "tril" else H.to_sparse(format)

    for k in range(4):
        y = x * (1.0 + 0.1 * k)
        ref = np.asarray(jax.jit(jax.hessian(f))(y))
        H = H0.at(y)
        kept = H0._engine.kernels.fresh(H0._engine.structure.values_family)
        M = request(H)
        assert type(M) is kind and M.nnz == np.count_nonzero(part(H.sparsity.to_dense()))
        np.testing.assert_allclose(M.toarray(), part(ref), rtol=1e-12)
        M.data[:] = 0
        np.testing.assert_allclose(request(H).toarray(), part(ref), rtol=1e-12)
        np.testing.assert_allclose(H[7], ref[7], rtol=1e-12)
        assert hvps(H) == (family.size if kept is None else kept[0])
    assert kept is not None  # one program, kept, computed the last point's values
    for whole, _ in H0._engine.structure.whole_candidates:
        programs = H0._engine.kernels._fixed[whole]
        assert any(key[0] == "values" for key in programs if isinstance(key, tuple))
    dense = lazyhess.hessian(f, y, sparsity=None)  # every entry stored: no pattern to run
    np.testing.assert_allclose(request(dense).toarray(), part(ref), rtol=1e-12)


@pytest.mark.slow
def test_linear_operator_and_batched_sparse_outputs():
    f, x = tridiagonal_problem(40)
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    L = lazyhess.hessian(f, x).as_linear_operator()
    V = np.random.default_rng(0).normal(size=(40, 3))
    np.testing.assert_allclose(L @ V[:, 0], ref @ V[:, 0], rtol=1e-10)
    np.testing.assert_allclose(L @ V, ref @ V, rtol=1e-10)
    W = jnp.stack([x, 2 * x])
    Hb = lazyhess.hessian(jax.vmap(f), W, batch_axis=0)
    np.testing.assert_allclose(
        Hb.to_sparse("bcoo").todense(), jax.jit(jax.vmap(jax.hessian(f)))(W), rtol=1e-12
    )
    with pytest.raises(ValueError, match="leading axes"):
        Hb.to_sparse("csr")
    with pytest.raises(ValueError, match="one scalar output"):
        Hb.as_linear_operator()


@pytest.mark.slow
def test_requests_colored_for_themselves_at_new_points_do_not_retrace():
    band, x = PROBLEMS["RANDSP2"].make(200)
    traces = []

    def f(y):
        traces.append(1)
        return band(y)

    rows = np.sort(np.random.default_rng(1).choice(200, 20, replace=False))
    H = lazyhess.hessian(f, x)
    for point in (x, x + 0.1):  # a point's first request, and a later one
        fresh = H.at(point)
        fresh[rows]
        fresh[rows[::2]]
    families = {family.key for family, _ in fresh._engine.cache.families(None)}
    assert "partial" in families  # colorings fitted to the requests, not the global one
    first = len(traces)
    for shift in (0.2, 0.3):
        fresh = H.at(x + shift)
        ref = np.asarray(jax.jit(jax.hessian(band))(x + shift))
        np.testing.assert_allclose(fresh[rows], ref[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fresh[rows[::2]], ref[rows[::2]], rtol=1e-12, atol=1e-12)
    assert len(traces) == first


@pytest.mark.parametrize("pick", range(6))
def test_fresh_points_race_both_whole_colorings(pick, monkeypatch):
    # The program kept for fresh points is the fastest of each whole coloring's ways (star
    # and acyclic here, as sparse_hessian races them); whichever wins, values are exact,
    # and cost() prices what the kept program spends.
    monkeypatch.setattr(_hvp, "fastest_of", lambda runs: min(pick, len(runs) - 1))
    f, x = tridiagonal_problem(50)
    H = lazyhess.hessian(f, x)
    H.to_sparse("csr")
    structure = H._engine.structure
    sizes = [family.size for family, _ in structure.whole_candidates]
    assert sizes == [3, 2]  # the model keeps star; acyclic needs one color fewer
    ways = 3 if maps_small_batches() else 2
    for shift in (0.1, 0.2, 0.3, 0.4):
        fresh = H.at(x + shift)
        kept = H._engine.kernels.fresh(structure.values_family)
        expected = 3 if kept is None else kept[0]  # the model's until a program is kept
        assert fresh.cost(slice(None)).new_hvps == expected
        ref = np.asarray(jax.jit(jax.hessian(f))(x + shift))
        np.testing.assert_allclose(fresh.to_sparse("csr").toarray(), ref, rtol=1e-12, atol=1e-12)
        assert hvps(fresh) == expected
    assert kept is not None and kept[0] == sizes[min(pick, 2 * ways - 1) // ways]


def test_short_kept_programs_are_polled_long_ones_block(monkeypatch):
    # A kept fresh-point program is waited for by polling once its last run was short
    # (POLL_UNDER); a long one is read blocking. Values are the same either way.
    polled = []
    monkeypatch.setattr(_engine, "poll", lambda a, seconds: polled.append(seconds))
    f, x = tridiagonal_problem(50)
    H = lazyhess.hessian(f, x)
    H.to_sparse("csr")
    kernels = H._engine.kernels
    for shift in (0.1, 0.2, 0.3):  # the third point races and keeps the program
        H.at(x + shift).to_sparse("csr")
    _, program = kernels.fresh(H._engine.structure.values_family)
    for last, expected in [(1e-4, [3e-4]), (_engine.POLL_UNDER, [])]:
        kernels.ran(program, last)
        polled.clear()
        ref = np.asarray(jax.jit(jax.hessian(f))(x + 0.5))
        M = H.at(x + 0.5).to_sparse("csr")
        np.testing.assert_allclose(M.toarray(), ref, rtol=1e-12, atol=1e-12)
        assert polled == pytest.approx(expected)
        assert 0 < kernels.last_run(program) < 10  # recorded again, in seconds


def test_poll_returns_when_ready_or_when_the_time_is_up():
    class Pending:
        def __init__(self, ready_after):
            self.asked, self.ready_after = 0, ready_after

        def is_ready(self):
            self.asked += 1
            return self.asked > self.ready_after

    soon = Pending(3)
    _mesh.poll(soon, 10.0)
    assert soon.asked == 4
    never = Pending(10**12)
    start = time.perf_counter()
    _mesh.poll(never, 0.01)
    assert 0.01 <= time.perf_counter() - start < 1.0
    _mesh.poll(object(), 10.0)  # nothing to poll (a numpy result): returns at once
