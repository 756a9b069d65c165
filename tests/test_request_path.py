"""The request path: cache hits, costs announced before paying, threads, what is computed."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess


def genrose(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (x[:-1] - 1.0) ** 2)


X = jnp.linspace(-1.0, 1.5, 40)
REF = np.asarray(jax.jit(jax.hessian(genrose))(X))


def test_cached_entries_cost_no_hvp():
    H = lazyhess.hessian(genrose, X)
    H[7]
    assert H.cache_info().hvps == 1
    for j in range(40):
        np.testing.assert_allclose(H[7, j], REF[7, j], rtol=1e-12)
        np.testing.assert_allclose(H[j, 7], REF[j, 7], rtol=1e-12)
    assert H[3, 30] == 0.0  # a structural zero: no HVP, no plan
    assert H.cache_info().hvps == 1
    H.to_sparse()
    spent = H.cache_info().hvps
    for i, j in [(0, 1), (20, 20), (39, 38), (-1, -2)]:
        np.testing.assert_allclose(H[i, j], REF[i, j], rtol=1e-12)
    assert H.cache_info().hvps == spent
    assert H[np.int64(5), 6].dtype == H.dtype


def test_a_first_whole_row_or_column_does_not_wait_for_detection():
    def f(x):  # x[3] is only in a linear term: an empty row and column
        return genrose(x.at[3].set(0.0)) + 2.0 * x[3]

    ref = np.asarray(jax.hessian(f)(X))
    for key in (7, (slice(None), 7), 3, -1):
        H = lazyhess.hessian(f, X)
        np.testing.assert_allclose(H[key], ref[key], rtol=1e-12, atol=0)
        assert "pattern not detected yet" in repr(H)
        assert H.cache_info().hvps == 1
        np.testing.assert_allclose(H[2:5, 1:6], ref[2:5, 1:6], rtol=1e-12, atol=0)
        assert "engine=sparse" in repr(H)  # the block needed the pattern
    # Samples are checked for independence by detection: it comes first.
    Hb = lazyhess.hessian(jax.vmap(genrose), X.reshape(4, 10), batch_axis=0)
    per = np.asarray(jax.vmap(jax.hessian(genrose))(X.reshape(4, 10)))
    np.testing.assert_allclose(Hb[:, 5], per[:, 5], rtol=1e-12)
    assert "engine=sparse" in repr(Hb)


def test_a_whole_row_after_other_unit_seeds_is_its_own_seed_without_planning(monkeypatch):
    from lazyhess import _engine

    planned = []
    plan = _engine.plan
    monkeypatch.setattr(_engine, "plan", lambda *a, **k: planned.append(1) or plan(*a, **k))
    H = lazyhess.hessian(_zero_corner, X)
    ref = np.asarray(jax.hessian(_zero_corner)(X))
    H[4, 5]  # an entry: its column's unit seed
    H[9]
    spent, planned_before = H.cache_info().hvps, len(planned)
    for key in (11, (slice(None), 12)):
        cost = H.cost(key)
        assert (cost.new_hvps, cost.cached_hvps) == (1, 0)
        np.testing.assert_allclose(H[key], ref[key], rtol=1e-12, atol=1e-12)
    assert H.cache_info().hvps == spent + 2 and len(planned) == planned_before
    # Its columns asked out of order, a row is filled cell by cell from its plan, which
    # reads its entries in the held seeds of rows 9 and 11: priced the same way.
    before, cost = H.cache_info(), H.cost((10, slice(None, None, -1)))
    np.testing.assert_allclose(H[10, ::-1], ref[10, ::-1], rtol=1e-12, atol=1e-12)
    after = H.cache_info()
    assert (cost.new_hvps, cost.cached_hvps) == (
        after.hvps - before.hvps,
        after.hits - before.hits,
    )
    assert cost.cached_hvps > 0
    # x[-1]'s diagonal entry is a structural zero: with every other entry of its row held
    # in its neighbours' unit seeds, the planner finds it costs nothing.
    neighbours = np.flatnonzero(ref[-1])
    for j in neighbours:
        H[:, int(j)]
    spent = H.cache_info().hvps
    assert H.cost(-1).new_hvps == 0
    np.testing.assert_allclose(H[-1], ref[-1], rtol=1e-12, atol=1e-12)
    assert H.cache_info().hvps == spent
    # With a coloring's seeds held the planner decides: the block's colors serve row 21.
    H[20:24, 20:24]
    spent = H.cache_info().hvps
    assert H.cost(21).new_hvps == 0
    np.testing.assert_allclose(H[21], ref[21], rtol=1e-12, atol=1e-12)
    assert H.cache_info().hvps == spent


def test_a_request_repeated_at_new_points_is_planned_once(monkeypatch):
    from lazyhess import _engine

    planned = []
    plan = _engine.plan
    monkeypatch.setattr(_engine, "plan", lambda *a, **k: planned.append(1) or plan(*a, **k))
    H0 = lazyhess.hessian(genrose, X)
    rows = np.array([30, 2, 17, 3])
    for step in range(4):
        point = X + 0.1 * step
        ref = np.asarray(jax.hessian(genrose)(point))
        H = H0.at(point)
        np.testing.assert_allclose(H[rows], ref[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(H[5:12, 4:9], ref[5:12, 4:9], rtol=1e-12, atol=1e-12)
    # The rows at a fresh point: planned at the first only. The block after them: the
    # rows' seeds are cached, so it is planned with them, at every point.
    assert len(planned) == 1 + 4
    for point in (X, X - 0.1):
        ref = np.asarray(jax.hessian(genrose)(point))
        np.testing.assert_allclose(H0.at(point)[5:12, 4:9], ref[5:12, 4:9], rtol=1e-12, atol=1e-12)
    assert len(planned) == 1 + 4 + 1  # the block first at a fresh point: once
    for kept, (i, j) in H0._engine.structure._fresh_plans.values():
        assert not any(a.flags.writeable for a in (kept.slot, kept.read, i, j))


def test_one_entry_after_another_costs_one_hvp_each_unless_a_held_seed_serves_it():
    H = lazyhess.hessian(genrose, X)
    H[0, :2]  # part of a row: planned, so the pattern is detected
    H = H.at(X)
    entries = [(5, 6), (9, 9), (20, 19), (33, 34)]
    for count, (i, j) in enumerate(entries, 1):
        np.testing.assert_allclose(H[i, j], REF[i, j], rtol=1e-12)
        assert H.cache_info().hvps == count  # each its column's unit seed
    np.testing.assert_allclose(H[6, 5], REF[6, 5], rtol=1e-12)  # column 6 is row 6
    np.testing.assert_allclose(H[2, 30], 0.0)  # outside the pattern
    assert H.cache_info().hvps == len(entries)
    # The diagonal's seeds (a distance-1 coloring, neither unit nor global) hold every
    # diagonal entry: an entry they serve must not cost a unit seed of its own.
    H = H.at(X)
    H.diagonal()
    spent = H.cache_info().hvps
    for k in (0, 17, 39):
        np.testing.assert_allclose(H[k, k], REF[k, k], rtol=1e-12)
    assert H.cache_info().hvps == spent


@pytest.mark.parametrize("sparsity", ["auto", None])
def test_rows_and_columns_asked_unsorted_or_repeated_come_back_in_that_order(sparsity):
    # A grid is computed over distinct sorted lines; on a sparse pattern each stored cell
    # is written at every position its row and column were asked at (Engine._fill_grid).
    keys = [
        [7, 3, 7, 30],
        [4, 4],
        (slice(None), [9, 2, 2]),
        np.ix_([5, 1, 5], [6, 0, 6, 4]),
        (np.array([39, 0, 20]), slice(30, None)),
        ([4, 4], [5, 3]),
    ]
    H = lazyhess.hessian(genrose, X, sparsity=sparsity)
    for key in keys:
        np.testing.assert_allclose(H.at(X)[key], REF[key], rtol=1e-12, atol=0)
        np.testing.assert_allclose(H[key], REF[key], rtol=1e-12, atol=0)


def test_entry_keys_keep_numpy_errors():
    H = lazyhess.hessian(genrose, X)
    with pytest.raises(IndexError):
        H[40, 0]
    with pytest.raises(IndexError):
        H[0, -41]
    with pytest.raises(IndexError):
        H[0, 0, 0]


@pytest.mark.parametrize(
    "key",
    [3, (slice(None), 7), (slice(2, 30, 3), [0, 4, 9]), np.arange(40) % 3 == 0, ([1, 5], [2, 6])],
)
@pytest.mark.parametrize("sparsity", ["auto", None])
def test_cost_announces_what_the_request_spends(key, sparsity):
    H = lazyhess.hessian(genrose, X, sparsity=sparsity)
    H[10:14]
    before = H.cache_info()
    cost = H.cost(key)
    assert H.cache_info() == before  # pricing computes nothing
    got = H[key]
    after = H.cache_info()
    np.testing.assert_allclose(got, REF[key], rtol=1e-12)
    assert cost.new_hvps == after.hvps - before.hvps
    assert cost.cached_hvps == after.hits - before.hits
    assert cost.result_bytes == REF[key].nbytes
    assert cost.chunk_bytes <= max(cost.new_hvps, 1) * 40 * 8


def test_cost_of_pytree_blocks():
    f = lambda p: jnp.sum(p["a"] ** 2 * p["b"][0]) + jnp.sum(jnp.sin(p["b"]))  # noqa: E731
    params = {"a": jnp.arange(3.0), "b": jnp.ones(2)}
    H = lazyhess.hessian(f, params, sparsity=None)
    assert H["a"]["a"].cost().new_hvps == 3
    assert H["b"]["a"].cost().new_hvps == 2
    assert H.cost().new_hvps == 5
    with pytest.raises(TypeError, match="select the block first"):
        H.cost(0)


def test_a_row_does_not_wait_for_a_global_coloring():
    H = lazyhess.hessian(genrose, X)
    H[3]
    H[5, 6]
    structure = H._engine.structure
    assert structure.known and not structure.colored_known
    H[2:9]
    assert structure.colored_known


def test_threads_share_one_hessian_with_a_small_cache():
    H = lazyhess.hessian(genrose, X, cache_bytes=3 * 40 * 8)
    rng = np.random.default_rng(0)
    keys = [int(k) for k in rng.integers(0, 40, 200)]
    errors = []

    def work(part):
        try:
            for i in part:
                np.testing.assert_allclose(H[i], REF[i], rtol=1e-12)
                np.testing.assert_allclose(H[i, (i + 1) % 40], REF[i, (i + 1) % 40], rtol=1e-12)
        except Exception as err:  # noqa: BLE001 - reported below with its thread's keys
            errors.append(err)

    threads = [threading.Thread(target=work, args=(keys[t::8],)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert H.cache_info().entries <= 3


def test_threads_at_points_of_one_function_share_its_kept_plans():
    H0 = lazyhess.hessian(genrose, X)
    H0[2:5]
    rng = np.random.default_rng(1)
    # More index sets than the plans kept: they are evicted while other threads read.
    asks = [np.sort(rng.choice(40, size=5, replace=False)) for _ in range(40)]
    errors = []

    def work(t):
        try:
            for rows in asks[t::4] * 3:
                np.testing.assert_allclose(H0.at(X)[rows], REF[rows], rtol=1e-12)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


@pytest.mark.slow
def test_a_detected_dense_pattern_switches_to_the_dense_engine():
    n = 400
    A = jax.random.normal(jax.random.PRNGKey(0), (n, n)) / n
    f = lambda x: jnp.sum(jnp.tanh(A @ x))  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, n)
    H = lazyhess.hessian(f, x)
    assert H.cost(3).new_hvps == 1
    assert H.sparsity.is_dense and "dense (detected" in repr(H)
    ref = np.asarray(jax.jit(jax.hessian(f))(x))
    np.testing.assert_allclose(H[3], ref[3], rtol=1e-10)
    np.testing.assert_allclose(H[:, [5, 9]], ref[:, [5, 9]], rtol=1e-10)
    assert H.cache_info().hvps == 3


def test_a_request_larger_than_memory_is_refused_before_anything_is_built():
    n = 1_000_000
    H = lazyhess.hessian(lambda x: jnp.sum(jnp.sin(x)) ** 2, jnp.ones(n), sparsity=None)
    assert H.cost().result_bytes == 8 * n * n  # pricing it is fine
    for request in (lambda: H[:], lambda: np.asarray(H), lambda: H.to_dense()):
        with pytest.raises(ValueError, match=r"7\.3 TiB.*H\[i\].*to_sparse.*cost"):
            request()
    assert H.cache_info().hvps == 0
    assert H[5].shape == (n,)  # a row is fine


@pytest.mark.slow
def test_large_chunks_run_seed_after_seed_when_that_was_faster():
    def f(x):  # gathers: the case where lax.map can beat vmap
        idx = (jnp.arange(x.size) * 7) % x.size
        return jnp.sum(jnp.sin(x * x[idx])) + jnp.sum(x**3)

    x = jnp.linspace(0.1, 1.0, 40)
    ref = np.asarray(jax.hessian(f)(x))
    H = lazyhess.hessian(f, x, sparsity=None, chunk_size=16)
    kernels = H._engine.kernels
    key = ("seeded", True, 16)
    assert not kernels.serial(key) and not kernels.serial(("seeded", True, 8))
    kernels.timed(key, False, 1.0)  # the first run of each way compiles: not compared
    kernels.timed(key, False, 0.010)
    assert kernels.serial(key)  # vmap timed: try lax.map
    kernels.timed(key, True, 1.0)
    kernels.timed(key, True, 0.012)
    assert not kernels.serial(key)  # not faster by the margin: back to vmap
    kernels.timed(key, True, 0.002)
    assert kernels.serial(key)
    H[0]  # the point's first request; then chunks of 16 unit seeds, mapped
    np.testing.assert_allclose(H[:, 1:33], ref[:, 1:33], rtol=1e-12, atol=1e-12)
    assert H.cache_info().hvps == 33


def test_small_slow_chunks_try_lax_map():
    kernels = lazyhess.hessian(genrose, X)._engine.kernels
    slow, fast = ("once", False, 4), ("once", False, 6)
    for key, seconds in ((slow, 0.02), (fast, 0.002)):
        kernels.timed(key, False, 1.0)  # compiles: not compared
        kernels.timed(key, False, seconds)
    assert kernels.serial(slow)  # 20 ms vmapped: try lax.map
    assert not kernels.serial(fast)  # 2 ms: not worth another compile
    kernels.timed(slow, True, 1.0)
    kernels.timed(slow, True, 0.019)
    assert not kernels.serial(slow)  # not faster by the margin: back to vmap
    kernels.timed(slow, True, 0.01)
    assert kernels.serial(slow)
    one = ("once", True, 1)
    kernels.timed(one, False, 1.0)
    kernels.timed(one, False, 0.05)
    assert not kernels.serial(one)  # a single seed has nothing to map over


def test_a_race_settles_the_way_once():
    kernels = lazyhess.hessian(genrose, X)._engine.kernels
    key = ("once", False, 4)
    kernels.timed(key, False, 1.0)
    kernels.timed(key, False, 0.02)
    assert kernels.serial(key) and kernels.unsettled(key)  # slow vmapped runs: try lax.map
    ways = []

    def run(serial):
        ways.append(serial)
        time.sleep(0.004 if serial else 0.001)

    assert not kernels.race(key, run)  # vmap ran faster
    assert set(ways) == {False, True} and ways.count(True) >= 3
    assert not kernels.unsettled(key)
    kernels.timed(key, True, 1.0)
    kernels.timed(key, True, 0.001)
    assert not kernels.serial(key)  # recorded runs no longer decide


@pytest.mark.parametrize("winner", [0, 1])
def test_later_one_seed_chunks_race_once_against_the_kept_linearisation(monkeypatch, winner):
    import lazyhess._hvp as hvp

    raced = []

    def fastest(runs):
        raced.append([jax.block_until_ready(run()) for run in runs])
        return winner

    monkeypatch.setattr(hvp, "fastest_of", fastest)
    H0 = lazyhess.hessian(genrose, X)
    H0[0]
    for point in (X, 0.5 * X):
        ref = np.asarray(jax.hessian(genrose)(point))
        H = H0.at(point)
        for i, j in ((5, 6), (20, 19), (33, 33)):  # the first is the point's first request
            np.testing.assert_allclose(H[i, j], ref[i, j], rtol=1e-12)
        assert H.cache_info().hvps == 3  # the race's runs are not the request's
    # The race needed the first point's linearisation; once settled, a later point keeps
    # none unless it serves.
    assert (H._engine._point_state is None) == (winner == 0)
    assert len(raced) == 1  # one race per function and kind of seed
    once, seeded = (np.asarray(r).reshape(-1) for r in raced[0])
    np.testing.assert_allclose(once, seeded, rtol=1e-12)


def test_requests_race_when_they_would_try_lax_map(monkeypatch):
    H = lazyhess.hessian(genrose, X)
    kernels = H._engine.kernels
    colors = H._engine.structure.global_family.size
    key = ("fixed", False, colors)
    kernels.timed(key, False, 1.0)
    kernels.timed(key, False, 0.02)  # as if vmapped whole Hessians were slow
    raced = []
    race = kernels.race

    def spy(key, run):
        raced.append(key)
        return race(key, run)

    monkeypatch.setattr(kernels, "race", spy)
    for point in (X, X * 0.5):
        at = H.at(point)
        expected = np.asarray(jax.hessian(genrose)(point))
        np.testing.assert_allclose(at.to_sparse("numpy"), expected, rtol=1e-12, atol=1e-12)
        assert at.cache_info().hvps == colors  # the race's runs are not the request's
    # Once, at the first request that would try lax.map; then, once, the combined
    # program of the next new point is chosen among its ways (Engine._read_at_once).
    assert raced == [key]
    serial = kernels.serial(key)  # as raced
    assert [k[:2] for k in kernels._chosen if k[0] == "values"] == [("values", (colors, serial))]


def test_several_processes_never_choose_by_timing(monkeypatch):
    # Each process times its own runs: one choosing lax.map while another runs vmap would
    # compile different programs around the same collectives, and deadlock.
    kernels = lazyhess.hessian(genrose, X)._engine.kernels
    key = ("once", False, 4)
    kernels.timed(key, False, 1.0)
    kernels.timed(key, False, 0.02)
    assert kernels.serial(key)  # one process: slow vmapped chunks try lax.map
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert not kernels.serial(key)
    kernels.timed(key, True, 1.0)
    kernels.timed(key, True, 0.001)
    assert not kernels.serial(key)


def test_large_results_are_exact_and_independent():
    """Results of 4 MiB or more are built in fresh pages and handed to jax without a copy."""
    n = 20_000

    def chain(x):
        return jnp.sum(x**4) / 4 + jnp.sum(x[:-1] * x[1:])

    def reference(x, rows):
        # Closed form: 3 x_i^2 on the diagonal, 1 beside it.
        out = np.zeros((rows.size, n))
        out[np.arange(rows.size), rows] = 3 * np.asarray(x)[rows] ** 2
        for shift in (-1, 1):
            inside = (rows + shift >= 0) & (rows + shift < n)
            out[np.flatnonzero(inside), rows[inside] + shift] = 1.0
        return out

    x = jnp.linspace(-1.0, 1.0, n)
    rows = np.sort(np.random.default_rng(0).choice(n, 210, replace=False))
    H = lazyhess.hessian(chain, x)
    first = H[rows]
    assert first.nbytes >= 2**22
    second = H.at(2 * x)[rows]
    third = H[rows]  # from the cache, into a new result
    np.testing.assert_array_equal(first, reference(x, rows))
    np.testing.assert_array_equal(second, reference(2 * x, rows))
    np.testing.assert_array_equal(third, first)


def test_a_row_handed_over_without_a_copy_leaves_the_cache_intact():
    # A fresh point's row is the HVP kernel's own output, whose memory the cache reads:
    # deleting it or donating it to another program must not change later answers.
    H0 = lazyhess.hessian(genrose, X)
    H0[0]
    H = H0.at(X)
    row = H[5]
    np.testing.assert_allclose(row, REF[5], rtol=1e-12)
    assert np.shares_memory(np.asarray(row), H._engine.cache.take((H._engine.structure.unit, 5)))
    row.delete()
    jax.jit(lambda a: a * 0.0, donate_argnums=0)(H[5])
    jnp.ones(X.size).block_until_ready()  # new buffers may reuse freed memory
    np.testing.assert_allclose(H[5], REF[5], rtol=1e-12)
    np.testing.assert_allclose(H[:, 5], REF[:, 5], rtol=1e-12)
    assert H.cache_info().hvps == 1


def _batched(x):
    return jnp.sum(jnp.sin(x[:, 1:] * x[:, :-1]), axis=1) + jnp.sum(x**3, axis=1)


@pytest.mark.parametrize(
    "fun, x, options",
    [
        (genrose, X, {}),
        (genrose, X, {"argnums": 0}),
        (_batched, jnp.linspace(0.1, 1.2, 24).reshape(3, 8), {"batch_axis": 0}),
    ],
)
def test_a_whole_hessian_at_a_new_point_is_computed_once_and_answers_everything(fun, x, options):
    H0 = lazyhess.hessian(fun, x, **options)
    H0.to_sparse()  # the first point compiles the whole family's HVP program
    y = x * 1.1 - 0.05
    dense = np.asarray(jax.jit(jax.hessian(fun))(y))
    if "batch_axis" in options:
        ref = np.stack([dense[b, b, :, b, :] for b in range(y.shape[0])])
    else:
        ref = dense
    H = H0.at(y)
    sparse = H.to_sparse("bcoo")
    np.testing.assert_allclose(sparse.todense().reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)
    spent = H.cache_info().hvps
    assert spent == H._engine.structure.whole_family.size  # one HVP per color, nothing else
    for key in [1, (slice(0, 2), [0, 2]), (1, 2)]:
        assert H.cost(key).new_hvps == 0
        np.testing.assert_allclose(H[key], ref[key], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        H.diagonal(), np.diagonal(ref, axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        H.to_sparse("numpy").reshape(ref.shape), ref, rtol=1e-12, atol=1e-12
    )
    assert H.cache_info().hvps == spent


def test_whole_hessian_outputs_do_not_share_the_cached_values():
    H0 = lazyhess.hessian(genrose, X)
    H0.to_sparse("csr")
    H = H0.at(X)
    first = H.to_sparse("csr")
    first.data[:] = 7.0  # the caller owns what it was given
    again = H.to_sparse("csr")
    np.testing.assert_allclose(again.toarray(), REF, rtol=1e-12)
    np.testing.assert_allclose(H[4], REF[4], rtol=1e-12)
    tril = H.tril()
    tril.data[:] = -1.0
    np.testing.assert_allclose(H.tril().toarray(), np.tril(REF), rtol=1e-12)
    assert H.cache_info().hvps == H._engine.structure.whole_family.size


@pytest.mark.parametrize("materialise", [False, True])
def test_both_ways_of_the_combined_program_recover_the_same_values(materialise, monkeypatch):
    H0 = lazyhess.hessian(genrose, X)
    H0.to_sparse()
    engine = H0._engine
    family, _ = engine._whole()
    kernels = engine.kernels
    fixed_key = engine._fixed_key(family)
    shift = 0.0
    while not kernels.decided(fixed_key):  # earlier points settle the HVP program's way
        shift += 0.125
        H0.at(X + shift).to_sparse()
    serial = kernels.serial(fixed_key)
    # The first candidate's two ways: B fused into its reads, then written out first.
    monkeypatch.setattr(kernels, "chosen", lambda key, runs: int(materialise))
    engine = H0.at(X)._engine
    colored = engine._colored(family)
    values = engine.pattern_values()
    np.testing.assert_allclose(values[0], REF[colored.rows, colored.cols], rtol=1e-12)
    assert engine.info().hvps == family.size
    assert ("values", serial, materialise) in kernels._fixed[family]
    assert ("values", serial, not materialise) not in kernels._fixed[family]


def _pytree_fun(t):
    a, b = t["a"], t["b"]
    # b[0] and b[3] enter linearly: their diagonal entries are structural zeros.
    return jnp.sum(a**4) + jnp.sum(a[:5] * b) + jnp.sum(jnp.sin(b[1:3]) ** 2) + b[4] ** 3


def _vector_fun(x):
    return jnp.stack([genrose(x), jnp.sum(jnp.cos(x[1:] * x[:-1]))])


def _zero_corner(x):
    # x[-2] and x[-1] meet only in a product: their diagonal entries are structural zeros.
    return genrose(x[:-2]) + x[-2] * x[-1] + jnp.sum(jnp.cos(x[:-2]) * x[-1])


@pytest.mark.parametrize("materialise", [False, True])
@pytest.mark.parametrize("fun", [genrose, _zero_corner, _vector_fun])
def test_fresh_diagonals_run_one_program_and_keep_the_diagonal(fun, materialise, monkeypatch):
    H0 = lazyhess.hessian(fun, X)
    H0[0]
    engine, kernels = H0._engine, H0._engine.kernels
    structure = engine.structure
    reading = structure.diagonal_reading(0, X.size)
    key = engine._chunk_kind(reading.family, reading.needed, once=True)[0]
    # The reading's first two ways: B fused into the gather, then written out first.
    monkeypatch.setattr(kernels, "chosen", lambda key, runs: int(materialise))
    for step in range(6):
        point = X + 0.1 * step
        ref = np.asarray(jax.hessian(fun)(point))
        H = H0.at(point)
        np.testing.assert_allclose(
            H.diagonal(), np.diagonal(ref, axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12
        )
        spent = H.cache_info().hvps
        assert spent == reading.needed.size
        np.testing.assert_allclose(  # a second look and the diagonal's entries are free
            H.diagonal(), np.diagonal(ref, axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(H[..., 5, 5], ref[..., 5, 5], rtol=1e-12, atol=1e-12)
        assert H.cache_info().hvps == spent
        np.testing.assert_allclose(H[..., 6, :], ref[..., 6, :], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(H[..., 2:9, 2:9], ref[..., 2:9, 2:9], rtol=1e-12, atol=1e-12)
    # The earlier points settled the chunk's way; the later ones ran the kept program.
    assert kernels.fresh(structure.diagonal_values) is not None
    H = H0.at(X)
    H.diagonal()
    assert not H._engine.computed_columns().any()  # the picture: a diagonal is no column
    programs = kernels._fixed[reading.family]
    assert ("diagonal values", kernels.serial(key), materialise) in programs
    assert ("diagonal values", kernels.serial(key), not materialise) not in programs


def test_a_fresh_batched_diagonal_reads_every_sample():
    W = X.reshape(4, 10)
    Hb = lazyhess.hessian(jax.vmap(genrose), W, batch_axis=0)
    for step in range(4):
        point = W + 0.1 * step
        ref = np.asarray(jax.vmap(jax.hessian(genrose))(point))
        got = Hb.at(point).diagonal()
        np.testing.assert_allclose(got, np.diagonal(ref, axis1=-2, axis2=-1), rtol=1e-12)
    assert Hb._engine.kernels.fresh(Hb._engine.structure.diagonal_values) is not None


def _planned_hvps(H, lines):
    """HVPs the planner would spend on the diagonal entries of ``lines`` at a fresh point."""
    engine = H._engine
    request, _ = engine._plan_entries(lines, lines, diagonal=True)
    return len(request.seeds)


TREE = {"a": jnp.linspace(0.5, 1.5, 7), "b": jnp.linspace(-1.0, 1.0, 5)}


@pytest.mark.parametrize("chunk_size", [None, 1])
@pytest.mark.parametrize(
    "fun, x, name, lines",
    [
        (genrose, X, None, np.arange(40)),
        (_vector_fun, X, None, np.arange(40)),
        (_pytree_fun, TREE, "a", np.arange(7)),
        (_pytree_fun, TREE, "b", np.arange(7, 12)),
    ],
)
def test_a_fresh_diagonal_is_read_like_the_planner_would(fun, x, name, lines, chunk_size):
    H0 = lazyhess.hessian(fun, x, chunk_size=chunk_size)
    H0.sparsity  # noqa: B018 (detect)
    ref = jax.jit(jax.hessian(fun))(x)
    if name is not None:
        ref = ref[name][name]
    H = H0.at(x)
    view = H if name is None else H[name][name]
    diagonal = view.diagonal()
    np.testing.assert_allclose(
        diagonal, np.diagonal(np.asarray(ref), axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12
    )
    assert H.cache_info().hvps == _planned_hvps(H0.at(x), lines)
    spent = H.cache_info().hvps
    np.testing.assert_array_equal(view.diagonal(), diagonal)  # its seeds held: read again
    assert H.cache_info().hvps == spent
    if name is not None:  # the other leaf's diagonal, planned around what is held
        other = "b" if name == "a" else "a"
        ref_other = jax.jit(jax.hessian(fun))(x)[other][other]
        np.testing.assert_allclose(
            H[other][other].diagonal(), np.diagonal(np.asarray(ref_other)), rtol=1e-12
        )


def test_a_diagonal_after_a_row_reads_its_seeds_directly():
    H0 = lazyhess.hessian(genrose, X)
    H0.sparsity  # noqa: B018 (detect)
    H = H0.at(X)
    np.testing.assert_allclose(H[5], REF[5], rtol=1e-12)
    spent = H.cache_info().hvps
    np.testing.assert_allclose(H.diagonal(), np.diagonal(REF), rtol=1e-12)
    assert H.cache_info().hvps - spent == _planned_hvps(H0.at(X), np.arange(40))


def test_a_diagonal_whose_seeds_the_cache_replaces_costs_no_hvp():
    H = lazyhess.hessian(genrose, X)
    for i in range(40):  # every row's own seed: they recover every diagonal entry
        H[i]
    spent = H.cache_info().hvps
    np.testing.assert_allclose(H.diagonal(), np.diagonal(REF), rtol=1e-12)
    assert H.cache_info().hvps == spent


def test_the_diagonal_after_the_whole_hessian_costs_no_hvp():
    H = lazyhess.hessian(_vector_fun, X)
    H.to_sparse()
    spent = H.cache_info().hvps
    ref = np.asarray(jax.jit(jax.hessian(_vector_fun))(X))
    np.testing.assert_allclose(
        H.diagonal(), np.diagonal(ref, axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12
    )
    assert H.cache_info().hvps == spent
