"""Colorings, recovery data and decompression, checked against dense numpy references.

Validity is checked independently of the coloring code: a random symmetric H with the
pattern, B = S^T H formed densely from ``colors`` alone, then every stored entry must be
read back exactly.
"""

import doctest
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental.sparse import BCOO

import lazyhess
from benchmarks.bench_coloring import PATTERNS, arrowhead, grid5, grid9, tridiagonal
from lazyhess.coloring import ColoredPattern

hessian_coloring_from_sparsity = lazyhess.hessian_coloring_from_sparsity

METHODS = ("star", "column", "diagonal", "auto")
ORDERS = ("natural", "largest_first", "smallest_last", "incidence_degree", "random", "auto")
SMALL_SUITE = {name: build(300) for name, build in PATTERNS.items()}


def random_hessian(pattern, seed=0):
    """A symmetric matrix with nonzero values exactly on ``pattern``."""
    mask = sp.csr_array(pattern).toarray() != 0
    rng = np.random.default_rng(seed)
    values = rng.uniform(1, 2, mask.shape) * rng.choice([-1, 1], mask.shape)
    return np.where(mask, np.triu(values) + np.triu(values, 1).T, 0.0)


def compressed(hessian, colors):
    """B[c] = H @ indicator(colors == c), built from the colors only."""
    num_colors = int(colors.max(initial=-1)) + 1
    seeds = np.zeros((num_colors, len(colors)))
    colored = np.flatnonzero(colors >= 0)
    seeds[colors[colored], colored] = 1.0
    return seeds @ hessian.T


def assert_recovers(colored, hessian):
    """Every entry the method promises is read back exactly from B."""
    B = compressed(hessian, colored.colors)
    rows, cols = np.nonzero(sp.csr_array(colored.csr).toarray())
    np.testing.assert_array_equal(colored.rows, rows)
    np.testing.assert_array_equal(colored.cols, cols)
    np.testing.assert_array_equal(np.asarray(colored.decompress_diagonal(B)), np.diag(hessian))
    if colored.method == "diagonal":
        on = rows == cols
        got = B[colored.recover_color[on], colored.recover_index[on]]
        np.testing.assert_array_equal(got, hessian[rows[on], cols[on]])
        assert np.all(colored.recover_color[~on] == -1)
        return
    np.testing.assert_array_equal(
        B[colored.recover_color, colored.recover_index], hessian[rows, cols]
    )
    np.testing.assert_array_equal(colored.decompress(B, "numpy"), hessian)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL_SUITE))
@pytest.mark.parametrize("method", METHODS)
def test_suite_patterns_every_order(name, method):
    pattern = SMALL_SUITE[name]
    hessian = random_hessian(pattern)
    for order in ORDERS:
        colored = hessian_coloring_from_sparsity(pattern, method=method, order=order)
        assert colored.num_colors == int(colored.colors.max(initial=-1)) + 1
        assert_recovers(colored, hessian)


@st.composite
def symmetric_patterns(draw):
    n = draw(st.integers(1, 24))
    density = draw(st.floats(0, 0.5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density)
    diagonal = draw(st.sampled_from(["all", "none", "random"]))
    np.fill_diagonal(upper, {"all": True, "none": False, "random": rng.random(n) < 0.5}[diagonal])
    return upper | upper.T


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(symmetric_patterns(), st.sampled_from(METHODS), st.sampled_from(ORDERS))
def test_random_patterns(pattern, method, order):
    colored = hessian_coloring_from_sparsity(pattern, method=method, order=order)
    assert_recovers(colored, random_hessian(pattern))
    assert colored.colors[~pattern.any(axis=1)].tolist() == [-1] * int(
        (~pattern.any(axis=1)).sum()
    )


def test_auto_is_best_of_portfolio():
    pattern = SMALL_SUITE["9-point grid (FMINSRF2)"]
    auto = hessian_coloring_from_sparsity(pattern)
    for method in ("star", "column"):
        for order in ORDERS:
            assert (
                auto.num_colors
                <= hessian_coloring_from_sparsity(pattern, method, order).num_colors
            )
    assert (auto.method, auto.num_colors) == ("column", 9)
    assert auto.order in ORDERS


def test_known_counts():
    assert hessian_coloring_from_sparsity(tridiagonal(1000), "star").num_colors == 3
    assert hessian_coloring_from_sparsity(tridiagonal(1000), "diagonal").num_colors == 2
    assert hessian_coloring_from_sparsity(tridiagonal(1000), "column").num_colors == 3
    assert hessian_coloring_from_sparsity(arrowhead(1000), "star").num_colors == 2
    assert hessian_coloring_from_sparsity(arrowhead(1000), "column").num_colors == 1000
    assert hessian_coloring_from_sparsity(grid5(10_000), "star").num_colors == 5
    assert hessian_coloring_from_sparsity(grid5(10_000), "column").num_colors <= 7  # optimum 5
    assert hessian_coloring_from_sparsity(grid9(10_000)).num_colors == 9
    assert hessian_coloring_from_sparsity(np.eye(5, dtype=bool)).num_colors == 1
    assert hessian_coloring_from_sparsity(np.zeros((4, 4), bool)).num_colors == 0


def test_neutral_vertices():
    # An arrowhead without diagonal on the leaves: one HVP (the hub's column) gives all.
    n = 50
    pattern = np.zeros((n, n), bool)
    pattern[0, :] = pattern[:, 0] = True
    colored = hessian_coloring_from_sparsity(pattern, "star")
    assert colored.num_colors == 1
    assert colored.colors[0] == 0 and np.all(colored.colors[1:] == -1)
    assert_recovers(colored, random_hessian(pattern))
    # Isolated vertices are neutral in every method.
    pattern = np.zeros((4, 4), bool)
    pattern[1, 1] = pattern[1, 2] = pattern[2, 1] = True
    for method in ("star", "column", "diagonal"):
        colors = hessian_coloring_from_sparsity(pattern, method).colors
        assert colors[0] == colors[3] == -1


def test_star_decompression_is_exactly_symmetric():
    pattern = SMALL_SUITE["SPARSINE"]
    colored = hessian_coloring_from_sparsity(pattern, "star")
    rng = np.random.default_rng(1)
    B = rng.standard_normal((colored.num_colors, colored.n))  # any B, not only a true H S
    dense = colored.decompress(B, "numpy")
    np.testing.assert_array_equal(dense, dense.T)


def test_input_types_and_pattern_attribute():
    dense = tridiagonal(20).toarray()

    class Pattern:
        def to_scipy(self, format):
            return sp.csr_matrix(dense) if format == "csr" else None

    user = Pattern()
    inputs = [dense, sp.csr_matrix(dense), sp.coo_array(dense), sp.csc_array(dense), user]
    results = [hessian_coloring_from_sparsity(p) for p in inputs]
    for result in results:
        np.testing.assert_array_equal(result.colors, results[0].colors)
        assert result.csr.dtype == bool and result.csr.has_sorted_indices
    assert results[-1].pattern is user
    assert results[0].pattern is results[0].csr
    # Explicit zeros in a numeric matrix are not part of the pattern.
    numeric = sp.csr_array(dense.astype(float))
    numeric.data[:] = 0
    assert hessian_coloring_from_sparsity(numeric).nnz == 0


def test_entry_index():
    pattern = SMALL_SUITE["ARROW(2)"]
    colored = hessian_coloring_from_sparsity(pattern)
    dense = pattern.toarray()
    i, j = np.meshgrid(np.arange(colored.n), np.arange(colored.n), indexing="ij")
    k = colored.entry_index(i, j)
    assert k.shape == (colored.n, colored.n)
    np.testing.assert_array_equal(k >= 0, dense)
    np.testing.assert_array_equal(colored.rows[k[dense]], i[dense])
    np.testing.assert_array_equal(colored.cols[k[dense]], j[dense])
    empty = hessian_coloring_from_sparsity(np.zeros((3, 3), bool))
    assert empty.entry_index([0, 2], 1).tolist() == [-1, -1]


def test_repr():
    colored = hessian_coloring_from_sparsity(tridiagonal(10), "star", "natural")
    assert repr(colored) == (
        "ColoredPattern(n=10, nnz=28, method='star', order='natural', num_colors=3)"
    )


def test_seeds():
    colored = hessian_coloring_from_sparsity(SMALL_SUITE["ARROW(2)"])
    seeds = colored.seeds(np.float32)
    assert seeds.shape == (colored.num_colors, colored.n) and seeds.dtype == np.float32
    np.testing.assert_array_equal(seeds.sum(axis=0), colored.colors >= 0)
    np.testing.assert_array_equal(
        np.argmax(seeds, axis=0)[colored.colors >= 0], colored.colors[colored.colors >= 0]
    )


def test_save_load_round_trip(tmp_path):
    for method in ("star", "column", "diagonal"):
        colored = hessian_coloring_from_sparsity(SMALL_SUITE["SPARSINE"], method)
        path = tmp_path / f"{method}.npz"
        colored.save(path)
        loaded = ColoredPattern.load(path)
        assert repr(loaded) == repr(colored)
        for attribute in ("colors", "rows", "cols", "recover_color", "recover_index"):
            np.testing.assert_array_equal(getattr(loaded, attribute), getattr(colored, attribute))
        assert (loaded.csr != colored.csr).nnz == 0
    path = tmp_path / "no_suffix"
    colored.save(path)
    assert ColoredPattern.load(path).num_colors == colored.num_colors


def test_load_rejects_other_versions(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, version=np.int64(0))
    with pytest.raises(ValueError, match="file version 0"):
        ColoredPattern.load(path)


@pytest.mark.parametrize("method", ["star", "column"])
def test_decompress_formats(method):
    pattern = SMALL_SUITE["band 3 + dense row (BDQRTIC)"]
    colored = hessian_coloring_from_sparsity(pattern, method)
    first = random_hessian(pattern, seed=1)
    second = random_hessian(pattern, seed=2)
    second[colored.rows[::7], colored.cols[::7]] = 0.0  # zeros on the pattern stay stored
    second = np.triu(second) + np.triu(second, 1).T
    coordinates = {}
    for hessian in (first, second):
        B = compressed(hessian, colored.colors)
        for format in ("csr", "csc", "coo"):
            out = colored.decompress(B, format)
            assert out.format == format and out.nnz == colored.nnz
            np.testing.assert_array_equal(out.toarray(), hessian)
            coords = (out.indptr, out.indices) if format != "coo" else (out.row, out.col)
            if format in coordinates:
                for a, b in zip(coordinates[format], coords, strict=True):
                    np.testing.assert_array_equal(a, b)
            coordinates[format] = coords
        coo = colored.decompress(B, "coo")
        np.testing.assert_array_equal(coo.row, colored.rows)
        np.testing.assert_array_equal(coo.col, colored.cols)
        dense = colored.decompress(B, "dense")
        assert isinstance(dense, jax.Array)
        np.testing.assert_array_equal(np.asarray(dense), hessian)
        bcoo = colored.decompress(B, "bcoo")
        assert isinstance(bcoo, BCOO) and bcoo.nse == colored.nnz
        np.testing.assert_array_equal(np.asarray(bcoo.todense()), hessian)
        numpy_out = colored.decompress(B, "numpy")
        assert isinstance(numpy_out, np.ndarray)
        np.testing.assert_array_equal(numpy_out, hessian)


@pytest.mark.slow
def test_decompress_data_jit_and_grad():
    pattern = SMALL_SUITE["5-point grid (CLPLATEA)"]
    colored = hessian_coloring_from_sparsity(pattern)
    hessian = random_hessian(pattern)
    B = jnp.asarray(compressed(hessian, colored.colors))
    numpy_data = colored.decompress_data(np.asarray(B))
    assert isinstance(numpy_data, np.ndarray)
    np.testing.assert_array_equal(numpy_data, hessian[colored.rows, colored.cols])
    data = jax.jit(colored.decompress_data)(B)
    assert isinstance(data, jax.Array)
    np.testing.assert_array_equal(np.asarray(data), hessian[colored.rows, colored.cols])
    dense = jax.jit(lambda b: colored.decompress(b, "dense"))(B)
    np.testing.assert_array_equal(np.asarray(dense), hessian)
    bcoo = jax.jit(lambda b: colored.decompress(b, "bcoo"))(B)
    np.testing.assert_array_equal(np.asarray(bcoo.todense()), hessian)
    diagonal = jax.jit(colored.decompress_diagonal)(B)
    np.testing.assert_array_equal(np.asarray(diagonal), np.diag(hessian))
    weights = jnp.arange(colored.nnz, dtype=B.dtype)
    grad = jax.grad(lambda b: jnp.dot(colored.decompress_data(b), weights))(B)
    expected = np.zeros(B.shape)
    np.add.at(expected, (colored.recover_color, colored.recover_index), np.asarray(weights))
    np.testing.assert_array_equal(np.asarray(grad), expected)


def test_diagonal_method_refuses_off_diagonal_decompression():
    colored = hessian_coloring_from_sparsity(tridiagonal(10), "diagonal")
    B = np.zeros((colored.num_colors, 10))
    for call in (lambda: colored.decompress(B), lambda: colored.decompress_data(B)):
        with pytest.raises(ValueError, match="decompress_diagonal"):
            call()
    only_diagonal = hessian_coloring_from_sparsity(np.eye(4), "diagonal")
    np.testing.assert_array_equal(only_diagonal.decompress(np.ones((1, 4)), "numpy"), np.eye(4))


def test_bad_inputs():
    good = tridiagonal(5)
    with pytest.raises(ValueError, match="square; got shape \\(3, 4\\)"):
        hessian_coloring_from_sparsity(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        hessian_coloring_from_sparsity(np.ones(3))
    with pytest.raises(ValueError, match="symmetric.*\\(0, 1\\) is True but \\(1, 0\\) is False"):
        hessian_coloring_from_sparsity(np.triu(np.ones((3, 3))))
    with pytest.raises(TypeError, match="got list"):
        hessian_coloring_from_sparsity([[1]])
    with pytest.raises(ValueError, match="method='starr' is not one of .*'star', 'column'"):
        hessian_coloring_from_sparsity(good, method="starr")
    with pytest.raises(ValueError, match="order='best' is not one of .*'smallest_last'"):
        hessian_coloring_from_sparsity(good, order="best")
    colored = hessian_coloring_from_sparsity(good)
    with pytest.raises(ValueError, match="shape \\(num_colors, n\\) = \\(3, 5\\); got \\(5, 3\\)"):
        colored.decompress_data(np.zeros((5, 3)))
    with pytest.raises(
        ValueError, match="format='csx' is not a valid format; use one of bcoo, csr"
    ):
        colored.decompress(np.zeros((3, 5)), "csx")


@pytest.mark.slow
def test_hessian_coloring_from_function():
    if not hasattr(lazyhess, "hessian_sparsity"):
        pytest.skip("lazyhess.hessian_sparsity is not available yet")

    def rosenbrock(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    colored = lazyhess.hessian_coloring(rosenbrock, jnp.ones(30), method="star")
    assert colored.num_colors == 3 and colored.n == 30
    hessian = np.asarray(jax.jit(jax.hessian(rosenbrock))(jnp.linspace(0, 1, 30)))
    assert_recovers(colored, hessian)
    with pytest.raises(ValueError, match="method='x' is not one of"):
        lazyhess.hessian_coloring(rosenbrock, jnp.ones(30), method="x")


@pytest.mark.slow
def test_never_more_colors_than_asdex_star():
    asdex = pytest.importorskip("asdex")
    for build in PATTERNS.values():
        for n in (100, 1000):
            pattern = build(n)
            coo = pattern.tocoo()
            sparsity = asdex.SparsityPattern.from_coo(coo.row, coo.col, coo.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", asdex.DenseColoringWarning)
                theirs = asdex.hessian_coloring_from_sparsity(sparsity).num_colors
            ours = hessian_coloring_from_sparsity(pattern)
            assert ours.num_colors <= theirs, (build.__name__, n)
            star = hessian_coloring_from_sparsity(pattern, "star", "largest_first")
            assert star.num_colors <= theirs, (build.__name__, n)


def test_docs_page_examples():
    page = Path(__file__).parent.parent / "docs" / "coloring.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})


def test_docstring_examples():
    from lazyhess.coloring import _api

    result = doctest.testmod(_api, extraglobs={"lazyhess": lazyhess}, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
