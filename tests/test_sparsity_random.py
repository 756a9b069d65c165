"""Random programs: the detected pattern contains every nonzero of jax.hessian.

The programs mix elementwise, movement, reduction and product operations with custom
derivative rules (custom_jvp, custom_vjp), cond/switch, while_loop (with a counter, and with
a condition on the data) and scan.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from custom_rules import coupled, mixing, reversed_vjp, straight_through
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lazyhess import hessian_sparsity

N = 6
SCALE = np.array([1.0, 0.0, 2.0, 0.0, -1.0, 3.0])
MASK = np.array([True, False, True, True, False, False])
PERM = np.array([3, 0, 5, 1, 1, 2])
A = np.where(np.random.default_rng(0).random((N, N)) < 0.3, 1.0, 0.0)

UNARY = [
    jnp.sin,
    lambda v: jnp.exp(0.1 * v),
    lambda v: v**2,
    lambda v: v**3,
    lambda v: SCALE * v,
    lambda v: jnp.roll(v, 2),
    lambda v: v[::-1],
    jnp.cumsum,
    jnp.abs,
    jnp.tanh,
    lambda v: jnp.pad(v[1:], (0, 1)),
    lambda v: v[PERM],
    lambda v: jnp.where(MASK, v, 0.0),
    jnp.sort,
    lambda v: jnp.max(v) * jnp.ones(N),
    jax.nn.relu,
    lambda v: A @ v,
    lambda v: jax.lax.fori_loop(0, 3, lambda i, c: c * 0.5 + v[i] * c[::-1], v),
    straight_through,
    lambda v: straight_through(v) * v[::-1],
    mixing,
    coupled,
    lambda v: reversed_vjp(jnp.sin(v), 0.5),
    lambda v: jax.lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 0.5 + jnp.tanh(c[1][::-1])), (0, v)
    )[1],
    lambda v: jax.lax.while_loop(
        lambda c: (c[0] < 4) & (jnp.sum(c[1] ** 2) < 50.0),
        lambda c: (c[0] + 1, jnp.roll(c[1], 1) * c[1]),
        (0, v),
    )[1],
    lambda v: jax.lax.scan(lambda c, x: (jnp.sin(c) * x, c * x), 0.1 * v[0], v)[1],
    lambda v: jax.lax.scan(lambda c, x: (c[::-1] * x + c, None), v, v[:3])[0],
]
BINARY = [
    jnp.add,
    jnp.multiply,
    lambda a, b: a / (1.0 + b**2),
    jnp.maximum,
    lambda a, b: jnp.dot(a, b) * jnp.ones(N),
    lambda a, b: jnp.where(a > 0, a * b, b),
    lambda a, b: jax.lax.cond(a[0] > 0, lambda: a * b[0], lambda: jnp.sin(b)),
    lambda a, b: jax.lax.switch(
        jnp.argmax(b[:3]), [lambda: a * b, lambda: mixing(a) + b, lambda: coupled(a * b)]
    ),
    lambda a, b: coupled(a) * straight_through(b),
]

program = st.lists(
    st.tuples(st.booleans(), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
    min_size=1,
    max_size=5,
)


def build(prog):
    def f(x):
        stack = [x]
        for binary, op, i, j in prog:
            if binary:
                stack.append(
                    BINARY[op % len(BINARY)](stack[i % len(stack)], stack[j % len(stack)])
                )
            else:
                stack.append(UNARY[op % len(UNARY)](stack[i % len(stack)]))
        return jnp.sum(stack[-1]) + stack[len(stack) // 2][0] * stack[-1][1]

    return f


def reference(f, points):
    """jax.hessian at each point; forward over forward where reverse mode cannot go (while)."""
    for hessian in (jax.hessian, lambda g: jax.jacfwd(jax.jacfwd(g))):
        try:
            return np.asarray(jax.jit(jax.vmap(hessian(f)))(points))
        except (TypeError, ValueError):  # while_loop has no reverse mode, custom_vjp no forward
            continue
    assume(False)


@pytest.mark.slow
@settings(max_examples=20)
@given(program)
def test_random_program_superset(prog):
    f = build(prog)
    pattern = hessian_sparsity(f, jnp.zeros(N)).to_dense()
    points = np.random.default_rng(len(prog)).normal(size=(3, N))
    missing = np.any(reference(f, points) != 0, axis=0) & ~pattern
    assert not missing.any(), np.argwhere(missing).tolist()
