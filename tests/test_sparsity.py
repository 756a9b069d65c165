"""Sparsity detection: API, precision, pytrees, batching, errors and the pattern type."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax import lax
from jax.extend import core as jcore
from jax.flatten_util import ravel_pytree

import lazyhess
from benchmarks.problems import PROBLEMS
from lazyhess import SparsityPattern, SparsityWarning, hessian_sparsity


def dense(f, *args, **kw):
    return hessian_sparsity(f, *args, **kw).to_dense()


def reference(f, x, argnums=0, seed=0, k=3):
    """Union of jax.hessian nonzeros at k random points around x (flat)."""
    rng = np.random.default_rng(seed)
    flat, unravel = ravel_pytree(x)

    def g(v):
        return jnp.sum(jax.tree_util.tree_leaves(f(unravel(v)))[0])

    points = flat + rng.normal(size=(k, flat.size))
    return np.any(np.asarray(jax.jit(jax.vmap(jax.hessian(g)))(points)) != 0, axis=0)


# ----------------------------------------------------------------- precision


def test_linear_ops_add_nothing():
    assert hessian_sparsity(lambda x: jnp.sum(3.0 * x**1 + x[::-1]), jnp.ones(5)).nnz == 0


def test_product_couples_without_diagonal():
    p = dense(lambda x, y: jnp.sum(x * y), jnp.ones(3), jnp.ones(3), argnums=(0, 1))
    expected = np.zeros((6, 6), bool)
    expected[np.arange(3), np.arange(3) + 3] = True
    expected |= expected.T
    np.testing.assert_array_equal(p, expected)


def test_output_liveness_single_entry():
    p = hessian_sparsity(lambda x: (x**2)[0], jnp.ones(6))
    assert p.nnz == 1 and p.rows.tolist() == [0] and p.cols.tolist() == [0]


def test_quadratic_form_follows_constant_zeros():
    a = np.array(
        [[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    )
    p = dense(lambda x: x @ a @ x, jnp.ones(4))
    np.testing.assert_array_equal(p, (a + a.T) != 0)


def test_constant_folded_index_arithmetic_is_exact():
    n = 12
    p = hessian_sparsity(lambda x: jnp.sum(x * x[jnp.arange(n) * 5 % n]), jnp.ones(n))
    perm = np.arange(n) * 5 % n
    expected = np.zeros((n, n), bool)
    expected[np.arange(n), perm] = True
    np.testing.assert_array_equal(p.to_dense(), expected | expected.T)


def test_piecewise_linear_counts_as_linear():
    f = lambda x: jnp.sum(jax.nn.relu(x)) + jnp.max(x) + jnp.sum(jnp.abs(x))  # noqa: E731
    assert hessian_sparsity(f, jnp.ones(4)).nnz == 0
    # ...but still carries first-order dependencies into a nonlinearity
    g = lambda x: jnp.sin(jnp.max(jnp.abs(x[:2])))  # noqa: E731
    assert dense(g, jnp.ones(3)).sum() == 4


def test_sin_is_nonlinear_and_stop_gradient_cuts():
    p = dense(lambda x: jnp.sum(jnp.sin(x[:2])) + x[2] * lax.stop_gradient(x[3]), jnp.ones(4))
    np.testing.assert_array_equal(p, np.diag([True, True, False, False]))


def test_chain_rule_second_term_through_linear_mix():
    # g(f(x)) with f nonlinear and g linear: only f's second derivative contributes.
    p = dense(lambda x: 2.0 * jnp.sum(x[:2] ** 2) + x[2], jnp.ones(3))
    np.testing.assert_array_equal(p, np.diag([True, True, False]))


# ------------------------------------------------------------------- problems


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problem_pattern_is_exact(name):
    problem = PROBLEMS[name]
    f, x0 = problem.make(60)
    assert hessian_sparsity(f, x0) == problem.pattern(60)
    truth = problem.pattern(60).to_dense()
    np.testing.assert_array_equal(reference(f, x0), truth)


def test_problem_nnz_at_1e4_match_problems_md():
    expected = {
        "GENROSE": 29998,
        "ARWHEAD": 29998,
        "BDQRTIC": 89980,
        "CLPLATEA": 48906,
        "FMINSRF2": 88804,
        "WOODS": 25000,
        "SPARSINE": 308988,
        "DIXMAANE": 29997,
        "ARROW2": 69988,
    }
    for name, nnz in expected.items():
        f, x0 = PROBLEMS[name].make(10**4)
        p = hessian_sparsity(f, x0)
        assert p.nnz == nnz == PROBLEMS[name].nnz(10**4), name
        assert p == PROBLEMS[name].pattern(10**4), name


def test_problem_sizes_round():
    assert PROBLEMS["CLPLATEA"].size(10**4 + 5) == 10**4
    assert PROBLEMS["WOODS"].size(10) == 8
    assert PROBLEMS["DIXMAANE"].size(10**4) == 9999


# ------------------------------------------------------ pytrees, outputs, aux


def test_dict_input_leaf_offsets_and_block():
    x = {"a": jnp.ones(2), "b": jnp.ones((2, 2))}

    def f(t):
        return jnp.sum(t["a"] ** 2) + jnp.sum(t["a"] * t["b"][0])

    p = hessian_sparsity(f, x)
    assert p.leaf_offsets == (0, 2, 6)
    np.testing.assert_array_equal(p.to_dense(), reference(f, x))
    ab = p.block(0, 1).toarray()
    assert ab.shape == (2, 4)
    np.testing.assert_array_equal(ab, [[1, 0, 0, 0], [0, 1, 0, 0]])
    assert p.block(1, 1).nnz == 0
    assert p.block(slice(0, 2), slice(0, 2)).toarray().tolist() == [[True, False], [False, True]]


def test_argnums_sequence_and_static_kwargs():
    def f(x, c, y, *, power):
        return jnp.sum(x**power * y) + jnp.sum(c * y)

    p = hessian_sparsity(f, jnp.ones(2), jnp.ones(2), jnp.ones(2), argnums=(0, 2), power=2)
    expected = np.zeros((4, 4), bool)
    expected[[0, 1], [0, 1]] = True
    expected[[0, 1], [2, 3]] = True
    np.testing.assert_array_equal(p.to_dense(), expected | expected.T)
    assert p.leaf_offsets == (0, 2, 4)


def test_non_differentiated_array_values_are_not_used():
    # c is zero here, but the pattern must hold for every c.
    p = hessian_sparsity(lambda x, c: jnp.sum(c * x**2), jnp.ones(3), jnp.zeros(3))
    assert p.nnz == 3


def test_non_scalar_pytree_output_is_union():
    def f(x):
        return {"u": x[0] * x[1], "v": (jnp.sin(x[2]), jnp.arange(3))}

    np.testing.assert_array_equal(
        dense(f, jnp.ones(3)),
        [[False, True, False], [True, False, False], [False, False, True]],
    )


def test_has_aux():
    p = hessian_sparsity(lambda x: (jnp.sum(x**2), {"aux": x**3}), jnp.ones(3), has_aux=True)
    assert p.nnz == 3
    with pytest.raises(TypeError, match="has_aux=True"):
        hessian_sparsity(lambda x: jnp.sum(x), jnp.ones(3), has_aux=True)


def test_shape_dtype_struct_inputs():
    spec = jax.ShapeDtypeStruct((4,), jnp.float32)
    assert hessian_sparsity(lambda x: jnp.sum(x[1:] * x[:-1]), spec).nnz == 6


def test_prng_keys_and_bfloat16():
    key = jax.random.key(0)

    def f(x, k):
        noise = jax.random.normal(k, x.shape) + jax.random.normal(key, x.shape)
        return jnp.sum(noise * x.astype(jnp.bfloat16).astype(x.dtype) ** 2)

    assert hessian_sparsity(f, jnp.ones(3), key).nnz == 3
    assert hessian_sparsity(f, jnp.ones(3, jnp.bfloat16), jax.random.PRNGKey(1)).nnz == 3


def test_works_on_tracers_and_array_kwargs():
    @jax.jit
    def g(x, c):
        p = hessian_sparsity(lambda x, *, c: jnp.sum(c * x[1:] * x[:-1]), x, c=c)
        return p.nnz

    assert int(g(jnp.ones(5), jnp.zeros(4))) == 8


def test_empty_input():
    p = hessian_sparsity(lambda x: jnp.sum(x), jnp.ones(0))
    assert p.shape == (0, 0) and p.nnz == 0 and p.density == 0.0


# ------------------------------------------------------------------- batching


def test_batch_per_sample_pattern():
    def f(x, w):
        return jnp.sum(x[:, 1:] * x[:, :-1], axis=1) + jnp.sum(w**2, axis=1)

    p = hessian_sparsity(f, jnp.ones((5, 3)), jnp.ones((5, 2)), argnums=(0, 1), batch_axis=0)
    assert p.shape == (5, 5)
    assert p.leaf_offsets == (0, 3, 5)
    expected = np.zeros((5, 5), bool)
    expected[[0, 1], [1, 2]] = True
    expected |= expected.T
    expected[[3, 4], [3, 4]] = True
    np.testing.assert_array_equal(p.to_dense(), expected)


def test_batch_output_b_by_1():
    p = hessian_sparsity(
        lambda x: jnp.sum(x**2, axis=1, keepdims=True), jnp.ones((4, 2)), batch_axis=0
    )
    assert p.nnz == 2


def test_batch_coupling_raises():
    def f(x):
        return jnp.sum(x**2, axis=1) * jnp.roll(x[:, 0], -1)

    with pytest.raises(ValueError, match=r"sample 0 and sample 1 interact"):
        hessian_sparsity(f, jnp.ones((3, 2)), batch_axis=0)


def test_batch_errors():
    with pytest.raises(ValueError, match=r"size; got args\[0\]: 4, args\[1\]: 5"):
        hessian_sparsity(
            lambda a, b: a[:, 0] + b[:4, 0],
            jnp.ones((4, 2)),
            jnp.ones((5, 2)),
            argnums=(0, 1),
            batch_axis=0,
        )
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(4, 1\)"):
        hessian_sparsity(lambda x: jnp.sum(x), jnp.ones((4, 2)), batch_axis=0)
    with pytest.raises(ValueError, match="batch_axis=1 is not supported"):
        hessian_sparsity(lambda x: jnp.sum(x), jnp.ones((4, 2)), batch_axis=1)


# ---------------------------------------------------------------- bad inputs


def test_argnums_errors():
    with pytest.raises(ValueError, match="argnums=3 but fun is called with 2 positional"):
        hessian_sparsity(lambda x, y: jnp.sum(x), jnp.ones(2), jnp.ones(2), argnums=3)
    with pytest.raises(TypeError, match="argnums must be"):
        hessian_sparsity(lambda x: jnp.sum(x), jnp.ones(2), argnums="0")


def test_integer_input_error_names_leaf():
    with pytest.raises(TypeError, match=r"args\[0\]\['k'\] has dtype int"):
        hessian_sparsity(lambda t: jnp.sum(t["k"]), {"k": jnp.ones(2, jnp.int32)})


# ---------------------------------------------------------- unknown primitive


def _mystery_primitive():
    prim = jcore.Primitive("mystery_op")
    prim.def_impl(lambda x: x * 2.0)
    prim.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    return prim


def test_unknown_primitive_warns_and_is_conservative():
    prim = _mystery_primitive()

    def f(x):
        return jnp.sum(prim.bind(x[:2])) + x[2] ** 2

    with pytest.warns(SparsityWarning, match="mystery_op"):
        p = dense(f, jnp.ones(4))
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    expected[2, 2] = True
    np.testing.assert_array_equal(p, expected)


def test_unknown_primitive_on_constants_is_silent():
    prim = _mystery_primitive()
    assert hessian_sparsity(lambda x: jnp.sum(x**2 * prim.bind(jnp.ones(2))), jnp.ones(2)).nnz == 2


def test_warning_is_user_warning():
    assert issubclass(SparsityWarning, UserWarning)


# --------------------------------------------------------------- loops extra


def test_fixed_point_loop_reaches_all_coupled():
    def f(x):
        def body(i, c):
            return c + jnp.roll(c, 1) * 0.1

        y = lax.fori_loop(0, 2000, body, x)
        return jnp.sum(y**2)

    # every element eventually depends on every other: dense
    assert hessian_sparsity(f, jnp.ones(5)).nnz == 25


def test_while_with_constant_condition_is_unrolled():
    def f(x):
        def body(c):
            i, acc = c
            return i + 1, acc * x[i]

        return lax.while_loop(lambda c: c[0] < 3, body, (0, 1.0))[1]

    expected = np.zeros((5, 5), bool)
    expected[:3, :3] = ~np.eye(3, dtype=bool)
    np.testing.assert_array_equal(dense(f, jnp.ones(5)), expected)


def test_while_with_dynamic_bound_is_sound():
    def f(x, n):
        return lax.fori_loop(0, n, lambda i, c: c * x[:3][i % 3], 1.0)

    p = dense(f, jnp.ones(4), jnp.asarray(3))
    assert p[:3, :3].all() and not p[3].any()
    # a static bound unrolls: exact, no diagonal
    np.testing.assert_array_equal(dense(f, jnp.ones(4), 3)[:3, :3], ~np.eye(3, dtype=bool))


# --------------------------------------------------------------- pattern type


def test_from_coordinates_validation():
    with pytest.raises(ValueError, match=r"entry \(0, 1\) is present but \(1, 0\) is not"):
        SparsityPattern.from_coordinates([0], [1], 2)
    p = SparsityPattern.from_coordinates([0, 0], [1, 1], 2, symmetrize=True)
    assert p.nnz == 2 and p.rows.tolist() == [0, 1] and p.cols.tolist() == [1, 0]
    with pytest.raises(TypeError, match="integers"):
        SparsityPattern.from_coordinates([0.0], [0.0], 1)
    with pytest.raises(ValueError, match="same length"):
        SparsityPattern.from_coordinates([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        SparsityPattern.from_coordinates([2], [2], 2)


def test_constructors_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.random((7, 7)) < 0.3
    a |= a.T
    p = SparsityPattern.from_dense(a)
    assert p == SparsityPattern.from_scipy(sp.csr_array(a.astype(float)))
    assert p == SparsityPattern.from_scipy(sp.coo_matrix(a))
    assert p == SparsityPattern.from_bcoo(p.to_bcoo())
    assert p == SparsityPattern.from_scipy(p.to_scipy("csc"))
    np.testing.assert_array_equal(p.to_dense(), a)
    s = p.to_scipy()
    assert isinstance(s, sp.sparray) and s.dtype == bool and s.format == "csr"
    np.testing.assert_array_equal(p.indptr, s.indptr)
    np.testing.assert_array_equal(p.indices, s.indices)
    for i in range(7):
        np.testing.assert_array_equal(p.row_indices(i), np.flatnonzero(a[i]))
    path = tmp_path / "p.npz"
    p.save(path)
    q = SparsityPattern.load(path)
    assert q == p and hash(q) == hash(p)


def test_save_load_keeps_leaf_offsets(tmp_path):
    p = hessian_sparsity(lambda a, b: jnp.sum(a * b), jnp.ones(2), jnp.ones(3)[:2], argnums=(0, 1))
    p.save(tmp_path / "q.npz")
    assert SparsityPattern.load(tmp_path / "q.npz").leaf_offsets == (0, 2, 4)


def test_block_matches_dense_slices():
    rng = np.random.default_rng(3)
    a = rng.random((9, 9)) < 0.4
    a |= a.T
    p = SparsityPattern.from_dense(a)
    for r, c in [(slice(2, 5), slice(1, 8)), (slice(None), slice(None)), (slice(7, 3), slice(2))]:
        np.testing.assert_array_equal(p.block(r, c).toarray(), a[r, c])
    with pytest.raises(ValueError, match="contiguous"):
        p.block(slice(0, 9, 2), slice(None))


def test_pattern_validation_errors():
    with pytest.raises(ValueError, match="square"):
        SparsityPattern.from_dense(np.ones((2, 3)))
    with pytest.raises(ValueError, match="square"):
        SparsityPattern.from_scipy(sp.csr_array(np.ones((2, 3))))
    with pytest.raises(TypeError, match="scipy sparse"):
        SparsityPattern.from_scipy(np.eye(2))
    with pytest.raises(ValueError, match="not symmetric"):
        SparsityPattern.from_dense(np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="format must be"):
        SparsityPattern.from_dense(np.eye(2)).to_scipy("dok")
    with pytest.raises(ValueError, match="no leaf offsets"):
        SparsityPattern.from_dense(np.eye(2)).block(0, 0)


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="not a lazyhess sparsity pattern"):
        SparsityPattern.load(tmp_path / "x.npz")


def test_repr_density_and_equality():
    f, x0 = PROBLEMS["GENROSE"].make(10**4)
    p = hessian_sparsity(f, x0)
    assert repr(p) == "SparsityPattern(n=10000, nnz=29998, density=3.0e-04)"
    assert p != SparsityPattern.from_dense(np.eye(3))
    assert p.shape == (10000, 10000)
    assert (p == 3) is False


def test_public_namespace():
    for name in ("hessian_sparsity", "SparsityPattern", "SparsityWarning"):
        assert name in lazyhess.__all__
