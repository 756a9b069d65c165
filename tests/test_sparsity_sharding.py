"""Detection sees through shard_map: a sharded function keeps its exact pattern.

Simulated devices need XLA_FLAGS before JAX starts, so the checks run in a fresh
interpreter with 8 CPU devices.
"""

import textwrap

import pytest
from helpers import run_fresh

SCRIPT = textwrap.dedent(
    """
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    import lazyhess

    warnings.simplefilter("error")
    assert jax.device_count() == 8 and jax.config.jax_enable_x64
    auto = jax.sharding.AxisType.Auto
    line = jax.make_mesh((8,), ("x",), axis_types=(auto,))
    grid = jax.make_mesh((4, 2), ("x", "y"), axis_types=(auto, auto))
    n = 64


    def genrose(x):
        return 1.0 + jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[1:]) ** 2)


    def genrose_block(v):
        # The right neighbour's first element closes each block's chain; the last device
        # has none (ppermute sends it zeros) and drops that term.
        right = jax.lax.ppermute(v[:1], "x", [(i, i - 1) for i in range(1, 8)])
        ext = jnp.concatenate([v, right])
        terms = 100.0 * (ext[1:] - ext[:-1] ** 2) ** 2 + (1.0 - ext[1:]) ** 2
        last = jax.lax.axis_index("x") == 7
        terms = jnp.where(last, terms.at[-1].set(0.0), terms)
        return jax.lax.psum(jnp.sum(terms), "x")


    def genrose_sharded(x):
        return 1.0 + jax.shard_map(genrose_block, mesh=line, in_specs=P("x"), out_specs=P())(x)


    def gathered(x):
        # Each device's output reads the whole gathered vector reversed times its own block.
        def block(v):
            whole = jax.lax.all_gather(v, "x", tiled=True)
            return v * whole[::-1][: v.size] + jax.lax.psum(v, "x") ** 2

        out = jax.shard_map(block, mesh=line, in_specs=P("x"), out_specs=P("x"))(x)
        return jnp.sum(jnp.sin(out))


    def grid_fn(a):
        # A (8, 6) matrix sharded over both mesh axes; rows are reduced over 'y'.
        def block(m):
            return jax.lax.psum(jnp.sum(m**2 * m[:, ::-1], axis=1), "y")

        out = jax.shard_map(block, mesh=grid, in_specs=P("x", "y"), out_specs=P("x"))(a)
        return jnp.sum(jnp.tanh(out))


    def truth(f, shape, k=3):
        points = np.random.default_rng(0).normal(size=(k, *shape))
        hs = np.asarray(jax.jit(jax.vmap(jax.hessian(f)))(points))
        size = int(np.prod(shape))
        return np.any(hs.reshape(k, size, size) != 0, axis=0)


    x = np.random.default_rng(1).normal(size=n)
    np.testing.assert_allclose(genrose_sharded(x), genrose(x), rtol=1e-13)
    sharded = lazyhess.hessian_sparsity(genrose_sharded, jnp.zeros(n)).to_dense()
    unsharded = lazyhess.hessian_sparsity(genrose, jnp.zeros(n)).to_dense()
    np.testing.assert_array_equal(sharded, unsharded)
    # A tridiagonal pattern: 3 colors (HVPs) for the whole Hessian, not n.
    assert lazyhess.hessian_coloring(genrose_sharded, jnp.zeros(n)).num_colors == 3

    pattern = lazyhess.hessian_sparsity(gathered, jnp.zeros(16)).to_dense()
    expected = truth(gathered, (16,))
    assert not (expected & ~pattern).any()
    assert pattern.sum() < 16 * 16, pattern.sum()
    np.testing.assert_array_equal(pattern, expected)

    pattern = lazyhess.hessian_sparsity(grid_fn, jnp.zeros((8, 6))).to_dense()
    np.testing.assert_array_equal(pattern, truth(grid_fn, (8, 6)))
    print("ok")
    """
)


@pytest.mark.slow
def test_shard_map_keeps_the_exact_pattern():
    assert run_fresh(SCRIPT).strip().endswith("ok")
