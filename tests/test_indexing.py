"""H[key] equals the dense numpy array's [key] for every key numpy accepts, errors included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mixed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lazyhess

SHAPES = {
    "vector": ((6,), ()),
    "matrix": ((2, 3), ()),
    "output": ((4,), (2,)),
}


def _fun(out):
    if not out:
        return mixed
    return lambda x: jnp.stack([mixed(x), jnp.sum(jnp.ravel(x) ** 3)])


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request):
    shape, out = SHAPES[request.param]
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    fun = _fun(out)
    return lazyhess.hessian(fun, x), np.asarray(jax.jit(jax.hessian(fun))(x))


def _check(H, ref, key):
    try:
        expected = ref[key]
    except Exception as err:  # numpy refused the key: H must refuse it the same way
        with pytest.raises(type(err)):
            H[key]
        return
    got = H[key]
    assert isinstance(got, jax.Array)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


def keys_for(shape):
    n = len(shape)
    ints = st.integers(-2 * max(shape) - 1, 2 * max(shape) + 1)
    index_arrays = st.lists(ints, min_size=0, max_size=4).map(np.array)
    part = st.one_of(
        ints,
        st.slices(max(shape) + 2),
        st.just(Ellipsis),
        st.none(),
        index_arrays,
        st.lists(ints, min_size=1, max_size=3),
    )
    return st.one_of(
        hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True),
        hnp.integer_array_indices(shape),
        hnp.arrays(bool, shape),
        hnp.arrays(bool, shape[:1]).map(lambda m: (m, Ellipsis)),
        st.lists(part, min_size=0, max_size=n + 1).map(tuple),
        part,
    )


@pytest.mark.slow
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_keys_match_numpy(case, data):
    H, ref = case
    _check(H, ref, data.draw(keys_for(ref.shape)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    [
        3,
        -1,
        (slice(None), 4),
        (slice(2, 9), [0, 4]),
        (slice(None, None, -1), slice(5, 0, -2)),
        ([1, 2], [3, 4]),
        ([[0], [5]], [1, 2, 3]),
        (Ellipsis, 2),
        (None, 1, None),
        np.arange(6) % 2 == 0,
        (np.array([True, False] * 3), slice(1, 3)),
        (1, [0, 0, 2]),
        (),
        (7,),
        (0, -7),
        (0, 1, 2),
        (slice(None), [6]),
        1.5,
        "a",
    ],
)
def test_listed_keys(key):
    x = jax.random.normal(jax.random.PRNGKey(2), (6,))
    H = lazyhess.hessian(mixed, x)
    _check(H, np.asarray(jax.jit(jax.hessian(mixed))(x)), key)


@pytest.mark.slow
def test_jax_array_keys_and_chained_indexing():
    x = jax.random.normal(jax.random.PRNGKey(3), (5,))
    H = lazyhess.hessian(mixed, x)
    ref = np.asarray(jax.jit(jax.hessian(mixed))(x))
    np.testing.assert_allclose(H[jnp.array([1, 3])], ref[[1, 3]])
    np.testing.assert_allclose(H[0][1], ref[0, 1])


def test_zero_dim_hessian():
    H = lazyhess.hessian(lambda s: jnp.sin(s) * s**2, 0.7)
    ref = np.asarray(jax.jit(jax.hessian(lambda s: jnp.sin(s) * s**2))(0.7))
    assert H.shape == ()
    np.testing.assert_allclose(H[()], ref)
    np.testing.assert_allclose(H[...], ref)
    with pytest.raises(IndexError):
        H[0]


def test_traced_key_is_refused():
    H = lazyhess.hessian(mixed, jnp.ones(4))
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda i: H[i])(1)
