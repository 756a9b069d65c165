"""One argument vocabulary: every entry point accepts and rejects the same arguments."""

import re
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess

X = jnp.arange(1.0, 4.0)


def cube(x):
    return jnp.sum(x**3)


def pair_less(x):
    return jnp.sum(x**2)


def _coloring_entry(fun, x, **options):
    coloring = lazyhess.hessian_coloring_from_sparsity(np.ones((x.size, x.size), dtype=bool))
    return lazyhess.sparse_hessian_from_coloring(fun, coloring, **options)(x)


ENTRY_POINTS = {
    "hessian": lambda fun, x, **o: lazyhess.hessian(fun, x, **o)[:],
    "hessian_sparsity": lambda fun, x, **o: lazyhess.hessian_sparsity(fun, x, **o),
    "hessian_coloring": lambda fun, x, **o: lazyhess.hessian_coloring(fun, x, **o),
    "sparse_hessian": lambda fun, x, **o: lazyhess.sparse_hessian(fun, x, **o),
    "value_and_sparse_hessian": lambda fun, x, **o: lazyhess.value_and_sparse_hessian(fun, x, **o),
    "compressed_hessian": lambda fun, x, **o: lazyhess.compressed_hessian(fun, x, **o),
    "sparse_hessian_from_coloring": _coloring_entry,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    "argnums, error, match",
    [
        (True, TypeError, "argnums must be an int or a sequence of ints; got True"),
        (False, TypeError, "argnums must be an int or a sequence of ints; got False"),
        ((0, True), TypeError, "argnums must be an int or a sequence of ints"),
        ((0, 0), ValueError, r"argnums=\(0, 0\) repeats an argument"),
        ((0, -2), ValueError, r"argnums=\(0, -2\) repeats an argument"),
        (2, ValueError, "argnums=2 but fun is called with 2 positional arguments"),
    ],
)
def test_argnums_rejected_alike(entry, argnums, error, match):
    fun = lambda x, y: cube(x) * jnp.sum(y)  # noqa: E731
    with pytest.raises(error, match=match):
        if entry == "sparse_hessian_from_coloring":
            coloring = lazyhess.hessian_coloring_from_sparsity(np.eye(3, dtype=bool))
            lazyhess.sparse_hessian_from_coloring(fun, coloring, argnums=argnums)(X, X)
        else:
            getattr(lazyhess, entry)(fun, X, X, argnums=argnums)


def test_numpy_int_argnums_accepted_alike():
    fun = lambda x, y: cube(y)  # noqa: E731
    one = np.int64(1)
    reference = np.asarray(jax.jit(jax.hessian(cube))(X))
    np.testing.assert_allclose(lazyhess.hessian(fun, X, X, argnums=one)[:], reference)
    np.testing.assert_array_equal(
        lazyhess.hessian_sparsity(fun, X, X, argnums=one).to_dense(), reference != 0
    )
    coloring = lazyhess.hessian_coloring(fun, X, X, argnums=one)
    assert coloring.num_colors == 1
    dense = lazyhess.sparse_hessian(fun, X, X, argnums=one, output_format="dense")(X, X)
    np.testing.assert_allclose(dense, reference)
    value, H = lazyhess.value_and_sparse_hessian(fun, X, X, argnums=one)(X, X)
    np.testing.assert_allclose(H.todense(), reference)
    B = lazyhess.compressed_hessian(fun, X, X, argnums=one)(X, X)
    np.testing.assert_allclose(lazyhess.decompress(B, coloring, "numpy"), reference)
    hess = lazyhess.sparse_hessian_from_coloring(fun, coloring, "dense", argnums=one)
    np.testing.assert_allclose(hess(X, X), reference)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    "fun, got",
    [
        (pair_less, "one array of shape ()"),
        (lambda x: (jnp.sum(x**2),), "a tuple of length 1"),
        (lambda x: [jnp.sum(x**2), x, x], "a list of length 3"),
    ],
)
def test_has_aux_without_a_pair_is_a_type_error_everywhere(entry, fun, got):
    match = r"has_aux=True needs fun to return a pair \(output, aux\); it returned "
    with pytest.raises(TypeError, match=match + re.escape(got)):
        ENTRY_POINTS[entry](fun, X, has_aux=True)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_has_aux_list_pair_accepted_everywhere(entry):
    fun = lambda x: [cube(x), {"x": x}]  # noqa: E731
    ENTRY_POINTS[entry](fun, X, has_aux=True)


@pytest.mark.parametrize("batch_axis", [0.0, False, True, 1, -1, "0", np.float64(0.0)])
@pytest.mark.parametrize("entry", ["hessian", "hessian_sparsity", "hessian_coloring"])
def test_batch_axis_must_be_the_int_0(entry, batch_axis):
    batched = lambda x: jnp.sum(x**2, axis=1)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(f"batch_axis={batch_axis!r} is not supported")):
        ENTRY_POINTS[entry](batched, jnp.ones((4, 2)), batch_axis=batch_axis)


@pytest.mark.parametrize("batch_axis", [0, np.int64(0)])
def test_batch_axis_int_0_accepted(batch_axis):
    batched = lambda x: jnp.sum(x**3, axis=1)  # noqa: E731
    x = jnp.arange(8.0).reshape(4, 2)
    H = lazyhess.hessian(batched, x, batch_axis=batch_axis)
    np.testing.assert_allclose(H[:], jax.jit(jax.vmap(jax.hessian(cube)))(x))
    assert lazyhess.hessian_sparsity(batched, x, batch_axis=batch_axis).nnz == 2


@pytest.mark.parametrize("entry", ["hessian", "hessian_sparsity"])
def test_batch_sizes_named_by_argument(entry):
    fun = lambda a, b, c: a[:, 0] + c[:4, 0]  # noqa: E731
    with pytest.raises(ValueError, match=r"got args\[0\]: 4, args\[2\]: 5"):
        getattr(lazyhess, entry)(
            fun, jnp.ones((4, 2)), 1.0, jnp.ones((5, 2)), argnums=(0, 2), batch_axis=0
        )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_fun_must_be_callable_everywhere(entry):
    with pytest.raises(TypeError, match="fun must be callable; got float"):
        ENTRY_POINTS[entry](3.0, X)


def test_scipy_adapters_check_options_by_keyword():
    with pytest.raises(ValueError, match="sparsity='banded' is not supported"):
        lazyhess.scipy.hess(cube, sparsity="banded")
    with pytest.raises(TypeError, match="did you mean"):
        lazyhess.scipy.hessp(lambda x, *, scale: scale * cube(x), scael=2.0)


# ---------------------------------------------------- keywords meant for lazyhess or a peer


@pytest.mark.parametrize(
    "key, match",
    [
        ("batch_axes", "lazyhess calls it batch_axis="),
        ("chunksize", "did you mean chunk_size=?"),
        ("cache_byte", "did you mean cache_bytes=?"),
        ("create_graph", "torch's create_graph="),
        ("vectorize", "torch's vectorize=.*chunk_size="),
        ("outer_jacobian_strategy", "mode='fwd_over_rev'"),
        ("colour", "fun takes no such parameter"),
    ],
)
@pytest.mark.parametrize("entry", ["hessian", "hessian_sparsity", "sparse_hessian"])
def test_unknown_keyword_says_what_lazyhess_calls_it(entry, key, match):
    prefix = f"{key}= is not an option of this lazyhess function"
    with pytest.raises(TypeError, match=f"{prefix}.*{match}"):
        ENTRY_POINTS[entry](cube, X, **{key: 1})


def test_asdex_output_format_points_to_sparse_hessian():
    with pytest.raises(TypeError, match=r"lazyhess.sparse_hessian\(fun, x, output_format=...\)"):
        lazyhess.hessian(cube, X, output_format="dense")


def test_strict_is_an_option_of_hessian_only():
    with pytest.raises(TypeError, match="only lazyhess.hessian takes strict=True"):
        lazyhess.hessian_sparsity(cube, X, strict=True)
    np.testing.assert_allclose(
        lazyhess.hessian(cube, X, strict=True)[:], jax.jit(jax.hessian(cube))(X)
    )


@pytest.mark.parametrize("key", ["batch_axes", "create_graph", "output_format"])
def test_peer_option_caught_under_var_kwargs(key):
    fun = lambda x, **kwargs: cube(x)  # noqa: E731
    with pytest.raises(TypeError, match=f"{key}= is not an option of this lazyhess function"):
        lazyhess.hessian(fun, X, **{key: 0})


def test_keywords_fun_takes_are_passed_on():
    seen = {}

    def fun(x, vectorize=False, **kwargs):
        seen.update(vectorize=vectorize, **kwargs)
        return cube(x)

    H = lazyhess.hessian(fun, X, vectorize=True, scale=2.0)
    np.testing.assert_allclose(H[:], jax.jit(jax.hessian(cube))(X))
    assert seen == {"vectorize": True, "scale": 2.0}


# -------------------------------------------------------------- calls in other libraries' shapes


def test_paddle_style_call_shows_the_lazyhess_call():
    H = lazyhess.hessian(lambda a, b: a * b * b, 1.0, 2.0)
    with pytest.raises(IndexError, match=r"argnums=\(0, 1\)\) and index H\[0\]\[1\]"):
        H[0][1]
    H2 = lazyhess.hessian(lambda a, b: a * b * b, 1.0, 2.0, argnums=(0, 1))
    np.testing.assert_allclose(H2[0][1], 4.0)


def test_index_error_without_other_inputs_has_no_hint():
    H = lazyhess.hessian(lambda a, n: a**3 * n, 1.0, 2)
    with pytest.raises(IndexError) as info:
        H[0]
    assert "argnums" not in str(info.value)


# ---------------------------------------------------- H.at() and static arguments


def test_at_recompiles_for_minus_zero():
    fun = lambda x, s: jnp.sum(x**2) * jnp.copysign(1.0, s)  # noqa: E731
    H = lazyhess.hessian(fun, X, 0.0)
    np.testing.assert_allclose(H[:], 2 * np.eye(3))
    np.testing.assert_allclose(H.at(X, -0.0)[:], -2 * np.eye(3))
    np.testing.assert_allclose(H.at(X, 0.0)[:], 2 * np.eye(3))


def test_at_recompiles_for_true_and_1():
    fun = lambda x, s: jnp.sum(x**2) * (2.0 if s is True else 1.0)  # noqa: E731
    H = lazyhess.hessian(fun, X, True)
    np.testing.assert_allclose(H[:], 4 * np.eye(3))
    np.testing.assert_allclose(H.at(X, 1)[:], 2 * np.eye(3))


def test_at_reuses_kernels_for_the_same_statics():
    fun = lambda x, s, name: jnp.sum(x**2) * s  # noqa: E731
    H = lazyhess.hessian(fun, X, 1.5, "a")
    assert H.at(2 * X, 1.5, "a")._engine.kernels is H._engine.kernels
    assert H.at(2 * X, float("1.5"), "a")._engine.kernels is H._engine.kernels
    assert H.at(2 * X, 1.5, "b")._engine.kernels is not H._engine.kernels


# ---------------------------------------------------- batches whose samples interact


def _roll(x):
    return jnp.sum(x**2, axis=1) * jnp.roll(x[:, 0], -1)


@pytest.mark.parametrize("sparsity", [None, "pattern", "auto"])
@pytest.mark.slow
def test_interacting_samples_raise_for_every_sparsity(sparsity):
    x = jnp.arange(10.0).reshape(5, 2) + 1.0
    if sparsity == "pattern":
        sparsity = np.ones((2, 2), dtype=bool)
    H = lazyhess.hessian(_roll, x, batch_axis=0, sparsity=sparsity)
    with pytest.raises(ValueError, match=r"sample 0 .*interact|interact.* sample 0"):
        H[:]


@pytest.mark.slow
def test_one_coupled_pair_among_many_samples_is_found():
    def fun(x):
        out = jnp.sum(jnp.sin(x) ** 2, axis=1)
        return out.at[30].add(x[5, 1] * x[30, 0])

    H = lazyhess.hessian(fun, jnp.ones((37, 2)), batch_axis=0, sparsity=None)
    with pytest.raises(ValueError, match="output of sample 30 .* inputs of sample 5"):
        H[0]


def test_first_order_coupling_is_found():
    fun = lambda x: x[:, 0] ** 2 + x[::-1, 1]  # noqa: E731
    H = lazyhess.hessian(fun, jnp.ones((4, 2)), batch_axis=0, sparsity=None)
    with pytest.raises(ValueError, match="sample 0 .* inputs of sample 3"):
        H[0]


@pytest.mark.slow
def test_independent_samples_pass_and_cost_no_extra_hvps():
    fun = lambda x: jnp.sum(x**3, axis=1) * x[:, 0]  # noqa: E731
    x = jnp.arange(12.0).reshape(6, 2) - 3.0
    reference = jax.jit(jax.vmap(jax.hessian(lambda r: jnp.sum(r**3) * r[0])))(x)
    H = lazyhess.hessian(fun, x, batch_axis=0, sparsity=None)
    np.testing.assert_allclose(H[:, 1], reference[:, 1])
    assert H.cache_info().hvps == 1
    np.testing.assert_allclose(
        H.at(2 * x)[:], jax.jit(jax.vmap(jax.hessian(lambda r: jnp.sum(r**3) * r[0])))(2 * x)
    )


# ---------------------------------------------------------------- output formats and options


def _tridiagonal(x):
    return jnp.sum(x[1:] * x[:-1] ** 2) + jnp.sum(x**4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "alias, format",
    [("numpy_dense", "numpy"), ("scipy_coo", "coo"), ("scipy_csr", "csr"), ("scipy_csc", "csc")],
)
def test_asdex_format_names_accepted_everywhere(alias, format):
    x = jnp.arange(1.0, 6.0)
    reference = np.asarray(jax.jit(jax.hessian(_tridiagonal))(x))
    H = lazyhess.hessian(_tridiagonal, x)
    coloring = lazyhess.hessian_coloring(_tridiagonal, x)
    B = lazyhess.compressed_hessian(_tridiagonal, x)(x)
    results = [
        H.to_sparse(alias),
        lazyhess.sparse_hessian(_tridiagonal, x, output_format=alias)(x),
        lazyhess.decompress(B, coloring, alias),
        coloring.decompress(B, alias),
    ]
    for out in results:
        assert type(out) is type(H.to_sparse(format))
        dense = out if isinstance(out, np.ndarray) else out.toarray()
        np.testing.assert_allclose(dense, reference)


@pytest.mark.parametrize("format", ["scipy", "CSR", None])
def test_bad_format_lists_every_name(format):
    H = lazyhess.hessian(_tridiagonal, X)
    coloring = lazyhess.hessian_coloring(_tridiagonal, X)
    calls = [
        lambda: H.to_sparse(format),
        lambda: lazyhess.sparse_hessian(_tridiagonal, X, output_format=format),
        lambda: coloring.decompress(jnp.zeros((coloring.num_colors, 3)), format),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="use one of bcoo, .*, scipy_csc"):
            call()


def test_option_types_exported():
    assert typing.get_args(lazyhess.Mode) == ("fwd_over_rev", "rev_over_fwd", "rev_over_rev")
    assert {"bcoo", "csr", "scipy_csr", "numpy_dense"} <= set(typing.get_args(lazyhess.Format))
    assert {"Mode", "Format"} <= set(lazyhess.__all__)
    for mode in typing.get_args(lazyhess.Mode):
        np.testing.assert_allclose(lazyhess.hessian(cube, X, mode=mode)[0], [6.0, 0.0, 0.0])
