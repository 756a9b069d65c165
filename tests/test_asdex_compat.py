"""lazyhess.asdex against asdex itself: same names, defaults, layouts, return shapes, numbers."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax.experimental.sparse import BCOO
from jax.flatten_util import ravel_pytree

import lazyhess
import lazyhess.asdex as ours

asdex = pytest.importorskip("asdex")

FORMATS = ["bcoo", "dense", "numpy_dense", "scipy_coo", "scipy_csr", "scipy_csc"]
MODES = ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"]


def _vector(x):
    return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum(jnp.sin(x))


def _matrix(x):
    return jnp.sum(x**3) + x[0, 0] * x[1, 2] + jnp.sum(jnp.cos(x[:, 0] * x[:, 1]))


def _tree(p):
    return jnp.sum(p["a"] ** 2 * p["b"][0]) + jnp.sum(p["b"] ** 3) + p["s"] ** 2 * p["a"][1]


def _pair(x, y):
    return jnp.sum(x**2 * y[:2]) + jnp.sum(jnp.exp(y) * y[::-1])


# name: (function, arguments, argnums)
PROBLEMS = {
    "vector": (_vector, (jnp.linspace(0.1, 0.9, 5),), 0),
    "matrix": (_matrix, (jnp.linspace(-1.0, 1.0, 6).reshape(2, 3),), 0),
    "tree": (
        _tree,
        ({"a": jnp.array([1.5, -0.5]), "b": jnp.array([[0.7, 0.2], [0.3, 1.1]]), "s": 2.0},),
        0,
    ),
    "pair": (_pair, (jnp.array([2.0, 0.5]), jnp.array([0.3, 1.2, -0.4])), (0, 1)),
    "pair_second": (_pair, (jnp.array([2.0, 0.5]), jnp.array([0.3, 1.2, -0.4])), 1),
    "pair_one_tuple": (_pair, (jnp.array([2.0, 0.5]), jnp.array([0.3, 1.2, -0.4])), (1,)),
    "pair_reversed": (_pair, (jnp.array([2.0, 0.5]), jnp.array([0.3, 1.2, -0.4])), (1, 0)),
}


def _jitted(fn, output_format="dense"):
    """``fn`` under jax.jit when its output can leave a jit (jax formats): fast references."""
    return jax.jit(fn) if output_format in ("bcoo", "dense") else fn


def _host_dense(matrix):
    """A BCOO densified with numpy (no compilation per shape)."""
    data = np.asarray(matrix.data)
    if not matrix.shape:
        return data.sum(dtype=data.dtype)
    dense = np.zeros(matrix.shape, data.dtype)
    np.add.at(dense, tuple(np.asarray(matrix.indices).T), data)
    return dense


def _to_numpy(matrix):
    if isinstance(matrix, BCOO):
        return _host_dense(matrix)
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _as_leaf(a):
    return isinstance(a, BCOO) or sp.issparse(a)


def assert_same(mine, theirs):
    """Equal nesting, leaf types, shapes and values (BCOO and scipy compared densely)."""
    leaves, tree = jax.tree_util.tree_flatten(mine, is_leaf=_as_leaf)
    expected, expected_tree = jax.tree_util.tree_flatten(theirs, is_leaf=_as_leaf)
    assert tree == expected_tree
    for a, b in zip(leaves, expected, strict=True):
        if isinstance(b, BCOO):
            assert isinstance(a, BCOO)
            a, b = _host_dense(a), _host_dense(b)
        elif sp.issparse(b):
            assert type(a) is type(b)
            a, b = a.toarray(), b.toarray()
        elif isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray)
        elif isinstance(b, jax.Array):
            assert isinstance(a, jax.Array)
        else:
            assert a == b
            continue
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def flat_hessian(f, args, argnums):
    """jax.hessian over the differentiated inputs raveled into one vector."""
    primals = args[argnums] if isinstance(argnums, int) else tuple(args[i] for i in argnums)
    flat, unravel = ravel_pytree(primals)

    def scalar(z):
        chosen = unravel(z)
        nums, chosen = ((argnums,), (chosen,)) if isinstance(argnums, int) else (argnums, chosen)
        slots = dict(zip(nums, chosen, strict=True))
        return f(*(slots.get(i, a) for i, a in enumerate(args)))

    return np.asarray(jax.jit(jax.hessian(scalar))(flat))


def test_signatures_match_asdex():
    for name in ours.__all__:
        theirs = getattr(asdex, name)
        if not inspect.isfunction(theirs):
            continue
        mine = [
            (p.name, p.kind, p.default)
            for p in inspect.signature(getattr(ours, name)).parameters.values()
        ]
        expected = [
            (p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()
        ]
        assert mine == expected, name
    for name in ("SparsityPattern", "ColoredPattern"):
        mine = list(inspect.signature(getattr(ours, name)).parameters)
        assert mine == list(inspect.signature(getattr(asdex, name)).parameters), name
    assert ours.VerificationError is lazyhess.VerificationError
    assert set(ours.HessianMode.__args__) == set(asdex.HessianMode.__args__)


LAYOUT_CASES = (
    [("vector", fmt) for fmt in FORMATS]
    + [("tree", fmt) for fmt in ("bcoo", "dense", "numpy_dense", "scipy_csr")]
    + [(name, "bcoo") for name in PROBLEMS if name not in ("vector", "tree")]
)


@pytest.mark.parametrize(("name", "output_format"), LAYOUT_CASES)
def test_hessian_layout_and_values(name, output_format):
    f, args, argnums = PROBLEMS[name]
    scipy_ok = name in ("vector", "pair_second")
    if output_format.startswith("scipy") and not scipy_ok:
        with pytest.raises(ValueError):
            asdex.hessian(f, *args, argnums=argnums, output_format=output_format)(*args)
        with pytest.raises(ValueError, match="single flat"):
            ours.hessian(f, *args, argnums=argnums, output_format=output_format)(*args)
        return
    theirs = _jitted(
        asdex.hessian(f, *args, argnums=argnums, output_format=output_format), output_format
    )(*args)
    mine = ours.hessian(f, *args, argnums=argnums, output_format=output_format)(*args)
    assert_same(mine, theirs)
    if output_format == "bcoo" and name in ("tree", "pair"):
        jitted = jax.jit(ours.hessian(f, *args, argnums=argnums, output_format=output_format))
        assert_same(jitted(*args), theirs)


@pytest.mark.parametrize("name", ["tree", "pair"])
def test_matches_jax_hessian(name):
    f, args, argnums = PROBLEMS[name]
    mine = ours.hessian(f, *args, argnums=argnums, output_format="dense")(*args)
    assert_same(mine, jax.jit(jax.hessian(f, argnums=argnums))(*args))


@pytest.mark.parametrize(
    ("name", "mode"), [("matrix", MODES[0]), ("pair", MODES[1]), ("pair", MODES[2])]
)
def test_modes_and_chunks(name, mode):
    f, args, argnums = PROBLEMS[name]
    theirs = jax.jit(
        asdex.value_and_hessian(f, *args, argnums=argnums, mode=mode, output_format="dense")
    )(*args)
    coloring = ours.hessian_coloring(f, *args, argnums=argnums, mode=mode)
    assert coloring.mode == mode
    for chunk_size in (None, 2):
        options = dict(argnums=argnums, mode=mode, chunk_size=chunk_size)
        mine = jax.jit(ours.value_and_hessian(f, *args, **options, output_format="dense"))(*args)
        assert_same(mine, theirs)
    value, B = ours.value_and_compressed_hessian(f, *args, **options)(*args)
    np.testing.assert_allclose(value, theirs[0], rtol=1e-12)
    assert B.shape == (coloring.num_colors, coloring.sparsity.n)
    np.testing.assert_allclose(
        ours.decompress(B, coloring, "numpy_dense"), flat_hessian(f, args, argnums), rtol=1e-10
    )


def _aux_fun(x):
    return _vector(x), {"norm": jnp.sum(x**2), "label": "run-1", "count": 3}


@pytest.mark.slow
def test_has_aux_everywhere():
    x = jnp.linspace(0.1, 0.9, 5)
    reference = jax.jit(jax.hessian(_vector))(x)
    # asdex under jit (fast), so with the aux's arrays only; it returns the others as given.
    arrays_only = lambda z: (_aux_fun(z)[0], {"norm": _aux_fun(z)[1]["norm"]})  # noqa: E731
    H_ref, norm_ref = jax.jit(asdex.hessian(arrays_only, x, has_aux=True, output_format="dense"))(
        x
    )
    np.testing.assert_allclose(H_ref, reference, rtol=1e-10)
    aux_ref = {"norm": norm_ref["norm"], "label": "run-1", "count": 3}
    for output_format in ("bcoo", "dense", "numpy_dense", "scipy_csr"):
        H, aux = ours.hessian(_aux_fun, x, has_aux=True, output_format=output_format)(x)
        assert_same(aux, aux_ref)
        np.testing.assert_allclose(_to_numpy(H), reference, rtol=1e-10)
    (value, aux), H = ours.value_and_hessian(_aux_fun, x, has_aux=True)(x)
    np.testing.assert_allclose(value, _vector(x), rtol=1e-12)
    assert_same(aux, aux_ref)
    B, aux = ours.compressed_hessian(_aux_fun, x, has_aux=True)(x)
    assert_same(aux, aux_ref)
    (value, aux), B2 = ours.value_and_compressed_hessian(_aux_fun, x, has_aux=True)(x)
    np.testing.assert_allclose(B2, B)
    assert aux["label"] == "run-1"
    coloring = ours.hessian_coloring(_aux_fun, x, has_aux=True)
    H, aux = ours.hessian_from_coloring(_aux_fun, coloring, "dense", has_aux=True)(x)
    np.testing.assert_allclose(H, reference, rtol=1e-10)
    (value, aux), H = ours.value_and_hessian_from_coloring(_aux_fun, coloring, has_aux=True)(x)
    np.testing.assert_allclose(_host_dense(H), reference, rtol=1e-10)
    B3, aux = ours.compressed_hessian_from_coloring(_aux_fun, coloring, has_aux=True)(x)
    (value, aux), B4 = ours.value_and_compressed_hessian_from_coloring(
        _aux_fun, coloring, has_aux=True
    )(x)
    np.testing.assert_allclose(B3, B)
    np.testing.assert_allclose(B4, B)
    assert aux["count"] == 3


def _transplant(coloring):
    """asdex's coloring rebuilt with lazyhess.asdex's constructors (same colors)."""
    s = coloring.sparsity
    sparsity = ours.SparsityPattern.from_coo(
        s.rows, s.cols, s.shape, input_avals=s.input_avals, argnums=s.argnums
    )
    return ours.ColoredPattern(
        sparsity, coloring.colors, coloring.num_colors, coloring.symmetric, coloring.mode
    )


@pytest.mark.parametrize(
    ("name", "symmetric"), [("vector", True), ("tree", False), ("pair", True)]
)
@pytest.mark.slow
def test_from_coloring_with_asdex_colors(name, symmetric):
    f, args, argnums = PROBLEMS[name]
    theirs = asdex.hessian_coloring(f, *args, argnums=argnums, symmetric=symmetric)
    mine = _transplant(theirs)
    B_ref = jax.jit(asdex.compressed_hessian_from_coloring(f, theirs))(*args)
    B = ours.compressed_hessian_from_coloring(f, mine)(*args)
    np.testing.assert_allclose(B, B_ref, rtol=1e-12, atol=1e-12)
    value, B2 = ours.value_and_compressed_hessian_from_coloring(f, mine)(*args)
    np.testing.assert_allclose(B2, B_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value, f(*args), rtol=1e-12)
    np.testing.assert_allclose(
        ours.decompress_data(B, mine), asdex.decompress_data(B_ref, theirs), rtol=1e-12
    )
    for output_format in FORMATS:
        assert_same(
            ours.decompress(B, mine, output_format),
            asdex.decompress(B_ref, theirs, output_format),
        )
    assert_same(
        ours.hessian_from_coloring(f, mine)(*args),
        jax.jit(asdex.hessian_from_coloring(f, theirs))(*args),
    )
    assert_same(
        ours.value_and_hessian_from_coloring(f, mine, "dense")(*args),
        jax.jit(asdex.value_and_hessian_from_coloring(f, theirs, "dense"))(*args),
    )


@pytest.mark.parametrize("name", PROBLEMS)
def test_sparsity_and_coloring_objects(name):
    f, args, argnums = PROBLEMS[name]
    mine = ours.hessian_sparsity(f, *args, argnums=argnums)
    theirs = asdex.hessian_sparsity(f, *args, argnums=argnums)
    np.testing.assert_array_equal(mine.todense(), theirs.todense())
    for attribute in ("shape", "nnz", "m", "n", "density", "leaf_shapes", "leaf_sizes", "argnums"):
        assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
    assert mine.example_input == theirs.example_input
    assert mine.input_treedef == theirs.input_treedef
    np.testing.assert_array_equal(_host_dense(mine.to_bcoo()), _host_dense(theirs.to_bcoo()))
    coloring = ours.hessian_coloring(f, *args, argnums=argnums)
    assert coloring.sparsity.argnums == theirs.argnums
    assert coloring.mode == "fwd_over_rev" and coloring.symmetric
    assert coloring.colors.shape == (mine.n,)
    assert coloring.num_colors <= asdex.hessian_coloring(f, *args, argnums=argnums).num_colors


@pytest.mark.slow
def test_pattern_constructors():
    dense = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    for build in ("from_dense", "from_bcoo"):
        source = dense if build == "from_dense" else BCOO.fromdense(dense)
        mine, theirs = (
            getattr(ours.SparsityPattern, build)(source),
            getattr(asdex.SparsityPattern, build)(source),
        )
        np.testing.assert_array_equal(mine.todense(), theirs.todense())
        assert mine.input_avals == theirs.input_avals
    for source in (dense, BCOO.fromdense(dense), ours.SparsityPattern.from_dense(dense)):
        for symmetric in (True, False):
            coloring = ours.hessian_coloring_from_sparsity(
                source, symmetric=symmetric, mode="rev_over_rev", postprocess=True
            )
            assert coloring.symmetric is symmetric and coloring.mode == "rev_over_rev"
    unsorted = ours.SparsityPattern.from_coo([2, 0, 1, 0], [2, 1, 0, 0], (3, 3))
    coloring = ours.hessian_coloring_from_sparsity(unsorted)
    B = jnp.arange(coloring.num_colors * 3.0).reshape(coloring.num_colors, 3)
    full = np.asarray(ours.decompress(B, coloring, "numpy_dense"))
    np.testing.assert_array_equal(
        ours.decompress_data(B, coloring), full[unsorted.rows, unsorted.cols]
    )


def test_coloring_carries_argnums_mode_and_shapes():
    f, args, _ = PROBLEMS["pair"]
    coloring = ours.hessian_coloring(f, *args, argnums=1, mode="rev_over_rev")
    H = ours.hessian_from_coloring(f, coloring, "dense")(*args)
    np.testing.assert_allclose(H, jax.jit(jax.hessian(f, argnums=1))(*args), rtol=1e-10)
    assert coloring._native.mode == "rev_over_rev"
    with pytest.raises(
        ValueError, match=r"shape \(3,\) and dtype float64; this call passes shape \(4,\)"
    ):
        ours.hessian_from_coloring(f, coloring)(args[0], jnp.ones(4))
    with pytest.raises(ValueError, match="dtype float32"):
        ours.hessian_from_coloring(f, coloring)(args[0], args[1].astype(jnp.float32))
    matrix = ours.hessian_coloring(_matrix, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        ours.hessian_from_coloring(_matrix, matrix)(jnp.ones(6))


@pytest.mark.slow
def test_check_hessian_correctness_unpacks_argnums():
    f, args, argnums = PROBLEMS["pair"]
    coloring = ours.hessian_coloring(f, *args, argnums=argnums)
    for method in ("matvec", "dense"):
        ours.check_hessian_correctness(f, args, coloring, method=method)
    wrong = ours.ColoredPattern(
        ours.SparsityPattern.from_coo(
            np.arange(5),
            np.arange(5),
            (5, 5),
            input_avals=coloring.sparsity.input_avals,
            argnums=argnums,
        ),
        np.zeros(5, np.int32),
        1,
        True,
        "fwd_over_rev",
    )
    with pytest.raises(ours.VerificationError):
        ours.check_hessian_correctness(f, args, wrong)


@pytest.mark.slow
def test_squeezes_one_element_outputs_and_rejects_bad_options():
    x = jnp.linspace(0.1, 0.9, 5)
    f = lambda z: _vector(z).reshape(1, 1)  # noqa: E731
    assert_same(
        ours.value_and_hessian(f, x, output_format="dense")(x),
        asdex.value_and_hessian(f, x, output_format="dense")(x),
    )
    with pytest.raises(TypeError, match="allow_int"):
        ours.hessian(_vector, x, allow_int=True)
    with pytest.raises(ValueError, match="output_format"):
        ours.hessian(_vector, x, output_format="csr")
    with pytest.raises(ValueError, match="mode"):
        ours.hessian(_vector, x, mode="fwd")
    with pytest.raises(ValueError, match="not a valid star"):
        ours.ColoredPattern(
            ours.SparsityPattern.from_dense(np.ones((2, 2))),
            np.zeros(2, np.int32),
            1,
            True,
            "fwd_over_rev",
        )
