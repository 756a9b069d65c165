"""Partial colorings for requested blocks H[R][:, C], checked with dense references."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import lazyhess
from benchmarks.bench_coloring import PATTERNS, tridiagonal
from lazyhess.coloring import block_coloring, partial_coloring


def assert_block_recovered(pattern, rows, cols, colors):
    """Every stored (i, j) with i in rows, j in cols equals (H @ s_c)[i], c = color of j."""
    rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
    assert colors.shape == cols.shape and colors.dtype == np.int32
    hessian = sp.csr_array(pattern, dtype=float)
    hessian.data = np.random.default_rng(0).uniform(1, 2, hessian.nnz)
    num_colors = int(colors.max(initial=-1)) + 1
    assert set(colors[colors >= 0].tolist()) == set(range(num_colors))
    colored = np.flatnonzero(colors >= 0)
    seeds = np.zeros((hessian.shape[0], num_colors))
    seeds[cols[colored], colors[colored]] = 1.0
    products = hessian @ seeds
    block = hessian[rows][:, cols].tocoo()
    assert np.all(colors[block.col] >= 0)
    np.testing.assert_array_equal(products[rows[block.row], colors[block.col]], block.data)


@st.composite
def requests(draw):
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    upper = np.triu(rng.random((n, n)) < draw(st.floats(0, 0.4)))
    pattern = upper | upper.T
    rows = rng.choice(n, size=draw(st.integers(0, n)), replace=draw(st.booleans()))
    cols = rng.choice(n, size=draw(st.integers(0, n)), replace=draw(st.booleans()))
    return pattern, rows, cols


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(requests())
def test_random_requests_both_orientations(request):
    pattern, rows, cols = request
    assert_block_recovered(pattern, rows, cols, partial_coloring(pattern, rows, cols))
    assert_block_recovered(pattern, cols, rows, partial_coloring(pattern, cols, rows))


@settings(max_examples=40, deadline=None)
@given(requests())
def test_block_entries_in_any_order(request):
    """The planner's route: the block's stored entries, shuffled, instead of a pattern."""
    pattern, rows, cols = request
    rows, cols = np.unique(rows), np.unique(cols)
    block = sp.coo_array(pattern[np.ix_(rows, cols)])
    order = np.random.default_rng(rows.size).permutation(block.nnz)
    colors = block_coloring(block.row[order], block.col[order], rows.size, cols.size)
    assert_block_recovered(pattern, rows, cols, colors)
    assert colors.max(initial=-1) == partial_coloring(pattern, rows, cols).max(initial=-1)


@pytest.mark.parametrize("name", ["9-point grid (FMINSRF2)", "ARROW(2)", "SPARSINE"])
def test_suite_blocks(name):
    pattern = PATTERNS[name](400)
    n = pattern.shape[0]
    rng = np.random.default_rng(3)
    rows, cols = rng.choice(n, 40, replace=False), rng.choice(n, 120, replace=False)
    assert_block_recovered(pattern, rows, cols, partial_coloring(pattern, rows, cols))


def test_random_rows_of_tridiagonal():
    n = 10_000
    pattern = tridiagonal(n)
    colored = lazyhess.hessian_coloring_from_sparsity(pattern)
    rows = np.random.default_rng(0).choice(n, 100, replace=False)
    cols = np.unique(np.clip(np.concatenate([rows - 1, rows, rows + 1]), 0, n - 1))
    for source in (pattern, colored):
        colors = partial_coloring(source, rows, cols)
        assert colors.max() + 1 <= 3
        assert_block_recovered(pattern, rows, cols, colors)
        assert_block_recovered(pattern, cols, rows, partial_coloring(source, cols, rows))


def test_large_request_memory_is_proportional_to_the_request():
    """Host work follows the request, never n: counted in bytes allocated, not seconds.

    At n = 1e6 a request of 1000 rows and columns allocates about 140 KB; one O(n) mask
    alone would take 1 MB.
    """
    n = 1_000_000
    pattern = lazyhess.hessian_coloring_from_sparsity(tridiagonal(n), "column", "natural")
    rng = np.random.default_rng(1)
    rows = rng.choice(n, 1000, replace=False)
    cols = rng.choice(n, 1000, replace=False)
    partial_coloring(pattern, rows, cols)
    tracemalloc.start()
    try:
        colors = partial_coloring(pattern, rows, cols)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n // 4
    assert colors.max() + 1 <= 3


def test_examples():
    pattern = tridiagonal(10)
    assert partial_coloring(pattern, [4], [3, 4, 5, 8]).tolist() == [0, 1, 2, -1]
    assert partial_coloring(pattern, [4], [5, 5]).tolist() == [0, 0]
    assert partial_coloring(pattern, [], [1, 2]).tolist() == [-1, -1]
    assert partial_coloring(pattern, [1], []).tolist() == []


def test_bad_requests():
    pattern = tridiagonal(10)
    with pytest.raises(IndexError, match="cols contains 10, outside 0 .. 9"):
        partial_coloring(pattern, [1], [10])
    with pytest.raises(IndexError, match="rows contains -1"):
        partial_coloring(pattern, [-1], [1])
    with pytest.raises(ValueError, match="rows must be a 1-D array of integer indices"):
        partial_coloring(pattern, [[1]], [1])
    with pytest.raises(
        ValueError, match="cols must be a 1-D array of integer indices; got dtype float64"
    ):
        partial_coloring(pattern, [1], [1.0])
    with pytest.raises(ValueError, match="square"):
        partial_coloring(np.ones((2, 3)), [1], [1])
