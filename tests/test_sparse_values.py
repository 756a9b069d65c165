"""With the default sparsity="auto", every corpus function gives jax.hessian's values."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_sparsity_corpus import CORPUS, FORWARD_ONLY, _points, _reference

import lazyhess


@pytest.mark.parametrize("name", sorted(set(CORPUS) - set(FORWARD_ONLY)))
def test_default_hessian_on_the_corpus(name):
    f = CORPUS[name]
    x = jnp.asarray(_points(name, np.random.default_rng(7), 1)[0])
    H = lazyhess.hessian(f, x)
    np.testing.assert_allclose(H[:], _reference(name, f)(x), rtol=1e-10, atol=1e-10)
    assert H.sparsity is not None
    assert H.cache_info().hvps == (H._structure.colored.num_colors if H.sparsity.nnz else 0)
