"""Acyclic colorings: validity by brute force, recovery by substitution, the cost portfolio.

Validity is checked without the coloring code: adjacent vertices differ, and for every
pair of colors the edges between them form a forest (edges = vertices - components,
counted with scipy's connected components).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

import lazyhess
from benchmarks.bench_coloring import PATTERNS, arrowhead, band, tridiagonal
from benchmarks.problems import PROBLEMS
from lazyhess.coloring import ColoredPattern

ORDERS = ("natural", "largest_first", "smallest_last", "incidence_degree", "random")
SMALL_SUITE = {name: build(200) for name, build in PATTERNS.items()}
color = lazyhess.hessian_coloring_from_sparsity


def assert_acyclic(pattern, colors):
    """Distance-1 proper, and every two-colored subgraph is a forest."""
    coo = sp.coo_array(sp.csr_array(pattern))
    off = coo.row != coo.col
    i, j = coo.row[off], coo.col[off]
    has_entry = np.zeros(coo.shape[0], bool)
    has_entry[coo.row] = True
    assert np.all(colors[has_entry] >= 0)
    assert not np.any(colors[i] == colors[j]), "adjacent vertices share a color"
    upper = i < j
    i, j = i[upper], j[upper]
    for a, b in itertools.combinations(range(int(colors.max(initial=-1)) + 1), 2):
        pair = ((colors[i] == a) & (colors[j] == b)) | ((colors[i] == b) & (colors[j] == a))
        if not pair.any():
            continue
        vertices, local = np.unique(np.concatenate([i[pair], j[pair]]), return_inverse=True)
        edges = int(pair.sum())
        graph = sp.coo_array(
            (np.ones(edges), (local[:edges], local[edges:])), shape=(len(vertices),) * 2
        )
        components = connected_components(graph, directed=False)[0]
        assert edges == len(vertices) - components, f"colors {a} and {b} close a cycle"


def random_hessian(pattern, seed=0):
    mask = sp.csr_array(pattern).toarray() != 0
    rng = np.random.default_rng(seed)
    values = rng.uniform(1, 2, mask.shape) * rng.choice([-1, 1], mask.shape)
    return np.where(mask, np.triu(values) + np.triu(values, 1).T, 0.0)


def assert_substitution_recovers(colored, hessian, rtol=1e-12, traced=True):
    """``decompress_data`` on numpy (host loop) and, if ``traced``, jitted jax inputs."""
    B = colored.seeds() @ hessian
    expected = hessian[colored.rows, colored.cols]
    np.testing.assert_allclose(colored.decompress_data(B), expected, rtol=rtol, atol=1e-12)
    if traced:
        values = jax.jit(colored.decompress_data)(jnp.asarray(B))
        np.testing.assert_allclose(np.asarray(values), expected, rtol=rtol, atol=1e-12)
    direct = colored.recover_color >= 0
    np.testing.assert_array_equal(
        B[colored.recover_color[direct], colored.recover_index[direct]], expected[direct]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL_SUITE))
def test_suite_every_order(name):
    pattern = SMALL_SUITE[name]
    hessian = random_hessian(pattern)
    for order in ORDERS:
        colored = color(pattern, "acyclic", order)
        assert colored.method == "acyclic"
        assert_acyclic(pattern, colored.colors)
        assert_substitution_recovers(colored, hessian, traced=order == "largest_first")
        assert colored.num_colors <= color(pattern, "star", order).num_colors + (order == "random")


@st.composite
def symmetric_patterns(draw):
    n = draw(st.integers(1, 24))
    density = draw(st.floats(0, 0.6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    upper = np.triu(rng.random((n, n)) < density)
    np.fill_diagonal(upper, rng.random(n) < 0.5)
    return upper | upper.T


@settings(max_examples=60, deadline=None)
@given(symmetric_patterns(), st.sampled_from(ORDERS))
def test_random_patterns(pattern, order):
    colored = color(pattern, "acyclic", order)
    assert_acyclic(pattern, colored.colors)
    # The jitted solve is checked on the suite and the edge cases below (one compilation
    # per pattern would make this test slow).
    assert_substitution_recovers(colored, random_hessian(pattern), traced=False)


def edge_cases():
    star_tree = np.eye(7, dtype=bool)
    star_tree[0, :] = star_tree[:, 0] = True
    forest = np.zeros((9, 9), bool)
    for a, b in [(0, 1), (1, 2), (2, 3), (4, 5), (6, 7), (7, 8), (6, 8)]:
        forest[a, b] = forest[b, a] = True
    single = np.array([[False, True], [True, False]])
    return {
        "empty": np.zeros((4, 4), bool),
        "diagonal": np.eye(4, dtype=bool),
        "one edge, no diagonal": single,
        "star tree": star_tree,
        "paths and a triangle": forest,
        "dense": np.ones((6, 6), bool),
    }


@pytest.mark.parametrize("name", list(edge_cases()))
def test_edge_cases(name):
    pattern = edge_cases()[name]
    colored = color(pattern, "acyclic")
    assert_acyclic(pattern, colored.colors)
    assert_substitution_recovers(colored, random_hessian(pattern))
    assert np.all(colored.colors[~pattern.any(axis=1)] == -1)


@pytest.mark.parametrize(
    ("half_width", "star", "acyclic"), [(1, 3, 2), (2, 5, 3), (3, 7, 4), (4, 9, 5)]
)
def test_band_counts(half_width, star, acyclic):
    pattern = band(half_width)(2000)
    assert color(pattern, "star").num_colors == star
    assert color(pattern, "acyclic").num_colors == acyclic
    direct, whole = color(pattern), color(pattern, whole=True)
    assert direct.method == "star"
    cost = lazyhess.coloring.whole_cost
    cheaper = cost(color(pattern, "acyclic")) < cost(direct)
    assert whole.method == ("acyclic" if cheaper else "star")
    assert cheaper == (half_width == 4)  # the tridiagonal's HVPs are too cheap to pay


def test_portfolio_keeps_direct_without_gain():
    # Arrowhead: star needs 2 colors, the lower bound, so substitution cannot pay.
    assert color(arrowhead(500), whole=True).method == "star"
    # Diagonal only: one color either way.
    assert color(np.eye(6, dtype=bool), whole=True).method == "star"
    for name, pattern in SMALL_SUITE.items():
        direct, whole = color(pattern), color(pattern, whole=True)
        assert direct.method in ("star", "column"), name
        assert whole.num_colors <= direct.num_colors, name
        if whole.method == "acyclic":
            cost = lazyhess.coloring.whole_cost
            assert whole.num_colors < direct.num_colors and cost(whole) < cost(direct), name


def test_save_load_and_empty(tmp_path):
    colored = color(tridiagonal(50), "acyclic")
    colored.save(tmp_path / "c.npz")
    loaded = ColoredPattern.load(tmp_path / "c.npz")
    assert (loaded.method, loaded.num_colors) == ("acyclic", 2)
    assert_substitution_recovers(loaded, random_hessian(tridiagonal(50)))
    empty = color(np.zeros((3, 3), bool), "acyclic")
    assert empty.num_colors == 0
    assert empty.decompress_data(np.zeros((0, 3))).shape == (0,)


def test_substitution_is_differentiable():
    colored = color(band(2)(30), "acyclic")
    B = jnp.asarray(colored.seeds() @ random_hessian(band(2)(30)))
    weights = jnp.arange(colored.nnz, dtype=B.dtype)
    grad = jax.jit(jax.grad(lambda b: jnp.sum(colored.decompress_data(b) * weights)))(B)
    # The gradient of <weights, data(B)> is the adjoint of data applied to the weights:
    # <weights, data(V)> == <grad, V> for any V, checked against the host solve.
    V = np.random.default_rng(0).normal(size=B.shape)
    np.testing.assert_allclose(
        np.sum(np.asarray(grad) * V), np.dot(np.asarray(weights), colored.decompress_data(V))
    )


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_problem_suite_matches_jax_hessian(name):
    f, x0 = PROBLEMS[name].make(60)
    x = x0 + 0.1 * jnp.sin(jnp.arange(x0.size))
    coloring = lazyhess.hessian_coloring(f, x0, method="acyclic")
    expected = np.asarray(jax.jit(jax.hessian(f))(x))
    tol = dict(rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    hess = jax.jit(lazyhess.sparse_hessian_from_coloring(f, coloring, "dense"))
    np.testing.assert_allclose(hess(x), expected, **tol)
    # The host path: B from exact HVPs, solved on numpy arrays.
    hvp = jax.jit(jax.vmap(lambda s: jax.jvp(jax.grad(f), (x,), (s,))[1]))
    B = np.asarray(hvp(jnp.asarray(coloring.seeds())))
    np.testing.assert_allclose(coloring.decompress(B, "numpy"), expected, **tol)


def test_sparse_hessian_uses_the_whole_portfolio():
    f, x0 = PROBLEMS["BAND9"].make(40)
    hess = lazyhess.compressed_hessian(f, x0)
    assert (hess.coloring.method, hess.coloring.num_colors) == ("acyclic", 5)
    dense = jax.jit(lazyhess.sparse_hessian(f, x0, output_format="dense"))
    np.testing.assert_allclose(dense(x0), jax.jit(jax.hessian(f))(x0), rtol=1e-10, atol=1e-9)
