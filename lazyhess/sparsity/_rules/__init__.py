"""One rule per primitive, grouped by family: how outputs depend on operands.

A rule receives the interpreter, the equation and its operand nodes (at least one of which
depends on the inputs) and returns the output nodes. It records two things:

* first order, with ``ctx.link``: which operand elements each output element depends on
  (the rows of its Jacobian that can be nonzero);
* second order, with ``ctx.pair`` or ``ctx.nonlinear``: which pairs of dependency rows meet
  in the output's second derivative. The Hessian pattern is the union, over the live
  outputs' pair terms ``(A, B)``, of ``Aᵀ B`` and its transpose.

A rule states nothing about its operands' own second derivatives: those were recorded by
the rules that computed the operands, and count only where the output needs the operand
(liveness, the backward pass). Piecewise-linear operations (abs, max, min, clamp, select,
sort, comparisons folded into selects) are linear: their second derivative is zero wherever
it exists, which is what `jax.hessian` returns.

Families: `_elementwise` (linear, derivative-free and nonlinear maps), `_arithmetic`
(mul, div, integer_pow, select_n), `_movement` (reshapes, slices, pads, dynamic slices),
`_indexing` (gather, scatter), `_reductions` (sums, extrema, products, sort, cumulative),
`_windows` (pooling, convolution), `_linalg` (dot_general, factorizations), `_control`
(calls, cond, while, scan), `_custom` (custom_jvp and custom_vjp functions, through their
rules) and `_sharding` (shard_map and its collectives). Importing this package registers
every rule in `_graph.RULES`.
"""

from . import (  # noqa: F401  (each module registers its rules on import)
    _arithmetic,
    _control,
    _custom,
    _elementwise,
    _indexing,
    _linalg,
    _movement,
    _reductions,
    _sharding,
    _windows,
)
