"""`hessian_sparsity`: the global Hessian sparsity pattern of a function, from its jaxpr."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .._arguments import (
    batch_size,
    check_argnums,
    check_batch_output,
    check_inputs,
    check_kwargs,
    check_options,
    is_array,
    spec,
    split_aux,
)
from .._csr import entry_rows
from . import _probe, _rules  # noqa: F401  (_rules registers the primitive rules)
from ._graph import (
    Interpreter,
    Node,
    OverBudget,
    backward,
    hessian_coordinates,
    is_float,
    largest_block,
    release_unpaired,
)
from ._maps import csr, identity_rows
from ._pattern import SparsityPattern

#: A pattern whose largest single block already covers this fraction of the N² entries is
#: returned as dense: its colorings need at least sqrt(fraction) N colors, so dense
#: evaluation costs about as many HVPs with none of the pattern's overhead, and assembling
#: an O(N²) pattern (a sparse product of dense rows, O(N³)) is skipped.
DENSE_FRACTION = 0.5
#: ... but only from this many entries in that block on: below it the exact pattern costs
#: next to nothing to assemble, and small Hessians keep their precise patterns.
DENSE_MIN_BLOCK = 2**16
#: With dense answers allowed, a dependency matrix that may hold more than this many
#: entries per input (or `BUDGET_MIN` in all) stops the detection: the Hessian is then
#: probed on `PROBE_SIZE` sampled inputs and, when dense there, reported dense; otherwise
#: detection runs again without a budget.
BUDGET_PER_INPUT = 32
BUDGET_MIN = 2**18
#: Sampled inputs of the probe: their principal submatrix of the pattern is exact.
PROBE_SIZE = 64


def _interpret(
    closed,
    leaf_sizes: Sequence[int],
    n_dynamic: int,
    seeded: np.ndarray | None = None,
    budget: int | None = None,
    shared: Interpreter | None = None,
) -> tuple[Interpreter, list[Node]]:
    """The forward and backward passes; returns the interpreter and the float outputs.

    ``seeded`` (sorted flat inputs) restricts the dependency rows to those inputs: every
    other input counts as an unknown non-differentiated value. A ``shared`` interpreter
    of an earlier pass lends its warnings given and traced rules.
    """
    n = int(sum(leaf_sizes))
    if shared is None:
        interp = Interpreter(n, budget=budget)
    else:
        interp = Interpreter(n, shared.warned, memo=shared.memo, budget=budget)
    args, off = [], 0
    invars = closed.jaxpr.invars
    for v, size in zip(invars, leaf_sizes, strict=False):
        dep = identity_rows(n, off, size)
        if seeded is not None:
            keep = np.isin(dep.indices, seeded)
            indptr = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
            dep = csr(indptr, dep.indices[keep], (size, n))
        args.append(Node.of(v.aval, dep=dep))
        off += size
    args += [Node.of(v.aval) for v in invars[len(leaf_sizes) : len(leaf_sizes) + n_dynamic]]
    outs = interp.run_closed(closed, args)
    outs = [o for o in outs if is_float(o.dtype)]
    backward(interp.ops, outs)
    return interp, outs


def probe_density(
    closed,
    leaf_sizes: Sequence[int],
    n_dynamic: int,
    seeded: np.ndarray,
    shared: Interpreter | None = None,
) -> float:
    """The density of the pattern's principal submatrix over the inputs ``seeded``.

    Exact for those inputs (sorted, distinct): the dependency rows restricted to them are
    the restrictions of the full rows, so each pair term gives exactly its entries among
    them. Up to `_probe.BITS` inputs, the bit probe (`_probe.probe_density`) answers where
    it has a rule for every primitive: a few NumPy passes over each intermediate. Else
    one pass over the jaxpr with dependency rows of at most ``len(seeded)`` entries.
    """
    if seeded.size <= _probe.BITS:
        try:
            return _probe.probe_density(closed, leaf_sizes, n_dynamic, seeded)
        except _probe.Unsupported:
            pass
    n = int(sum(leaf_sizes))
    interp, _ = _interpret(closed, leaf_sizes, n_dynamic, seeded, shared=shared)
    indptr, indices = hessian_coordinates(interp.ops, n)
    rows = entry_rows(indptr, np.int64)
    inside = np.isin(rows, seeded) & np.isin(indices, seeded)
    return int(inside.sum()) / seeded.size**2


def detect(
    closed, leaf_sizes: Sequence[int], n_dynamic: int, allow_dense: bool = False
) -> tuple[np.ndarray | None, np.ndarray | None, Node | None]:
    """Hessian pattern (CSR indptr, indices) of a closed jaxpr over its first leaves.

    The jaxpr's first ``len(leaf_sizes)`` inputs are the differentiated leaves (flat order
    concatenated); the next ``n_dynamic`` inputs are non-differentiated values, unknown.
    Returns the CSR arrays and the first output's node (for batch checks); with
    ``allow_dense``, ``None`` arrays when the pattern is (nearly) dense (`DENSE_FRACTION`):
    one block of it covers that fraction, or, once a dependency matrix outgrows the
    budget (`BUDGET_PER_INPUT`), a probe on sampled inputs finds that density.
    Cost: linear in the jaxpr size plus the nonzeros of the intermediate dependency
    matrices, plus the pattern's assembly unless it is found dense; a dense Hessian stops
    at the budget, plus one probe.
    """
    n = int(sum(leaf_sizes))
    early = allow_dense and n * n * DENSE_FRACTION >= DENSE_MIN_BLOCK
    budget = max(BUDGET_MIN, BUDGET_PER_INPUT * n) if early else None
    context = Interpreter(n)  # warnings given and rules traced, shared by every pass
    try:
        interp, outs = _interpret(closed, leaf_sizes, n_dynamic, budget=budget, shared=context)
    except OverBudget:
        # Sampled inputs seeded by N: the same answer every time.
        sample = np.sort(np.random.default_rng(n).choice(n, min(n, PROBE_SIZE), replace=False))
        if probe_density(closed, leaf_sizes, n_dynamic, sample, context) >= DENSE_FRACTION:
            return None, None, None
        interp, outs = _interpret(closed, leaf_sizes, n_dynamic, shared=context)
    release_unpaired(interp.ops, outs)
    if early and largest_block(interp.ops) >= DENSE_FRACTION * n * n:
        return None, None, (outs[0] if outs else None)
    indptr, indices = hessian_coordinates(interp.ops, n)
    return indptr, indices, (outs[0] if outs else None)


def hessian_sparsity(
    fun: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    batch_axis: int | None = None,
    **kwargs: Any,
) -> SparsityPattern:
    """The global sparsity pattern of the Hessian of ``fun`` with respect to ``args[argnums]``.

    The pattern holds for every value of the inputs (only shapes and dtypes are used): it
    contains every entry that ``jax.hessian(fun, argnums)(*args)`` can make nonzero, over
    the flat N×N matrix of the differentiated inputs in ``ravel_pytree`` order. For a
    non-scalar output it is the union over output elements. It is found by interpreting
    the jaxpr, never by evaluating derivatives: cost is linear in the program size plus the
    nonzeros of the intermediate first-order dependency sets.

    Piecewise-linear operations (``abs``, ``max``, ``relu``, ``where``, ``sort``) count as
    linear, since their second derivative is zero wherever it exists. Values of
    non-differentiated array arguments are not used, so the pattern also holds for all of
    them; constants captured by ``fun`` are used (their zeros stay zero). An operation
    without a rule gets the conservative rule and a `SparsityWarning`.

    A (nearly) dense Hessian is noticed before its N² entries are assembled: when one
    block of it already covers half of the matrix (and at least 2**16 entries), or when
    an intermediate dependency matrix outgrows 32 entries per input (and 2**18 in all)
    and the pattern restricted to 64 sampled inputs is at least half full, the result is
    `SparsityPattern.dense` (``is_dense`` is true), which costs nothing until its arrays
    are read; dense evaluation is then the better way to compute it.

    Args:
        fun: function to differentiate.
        *args: example arguments (arrays or ``jax.ShapeDtypeStruct``; values are ignored).
        argnums: positional argument(s) to differentiate, as in `jax.hessian`.
        has_aux: whether ``fun`` returns ``(output, aux)``; aux is ignored.
        batch_axis: ``None``, or ``0`` when every differentiated leaf has a leading axis of
            B independent samples and ``fun`` returns shape ``(B,)`` or ``(B, 1)``. Then the
            per-sample pattern is returned (N = size of one sample) after checking that the
            samples do not interact.
        **kwargs: passed to ``fun``; not differentiated.

    Returns:
        A `SparsityPattern` with ``leaf_offsets`` of the differentiated leaves.

    Raises:
        ValueError: bad ``argnums`` or ``batch_axis``, or samples that interact.
        TypeError: bad ``argnums`` type, non-floating-point differentiated inputs, or a
            ``has_aux`` function that does not return a pair.

    Example:
        >>> import jax.numpy as jnp
        >>> hessian_sparsity(lambda x: jnp.sum(x[1:] * x[:-1]), jnp.ones(4)).nnz
        6
    """
    check_options(fun, batch_axis=batch_axis, has_aux=has_aux)
    nums, sequence = check_argnums(argnums, len(args))
    check_kwargs(fun, kwargs)
    single = not sequence
    diff = args[nums[0]] if single else tuple(args[a] for a in nums)
    paths_leaves = check_inputs(diff, nums, sequence, holomorphic=None)
    b = None if batch_axis is None else batch_size(paths_leaves, nums, sequence)

    rest = ([a for k, a in enumerate(args) if k not in nums], kwargs)
    rest_leaves, rest_def = jax.tree_util.tree_flatten(rest)
    dynamic = [k for k, leaf in enumerate(rest_leaves) if is_array(leaf)]

    def call(d: Any, dyn_leaves: list) -> Any:
        filled = list(rest_leaves)
        for k, leaf in zip(dynamic, dyn_leaves, strict=True):
            filled[k] = leaf
        others, kw = jax.tree_util.tree_unflatten(rest_def, filled)
        others = iter(others)
        call_args = [
            (d if single else d[nums.index(k)]) if k in nums else next(others)
            for k in range(len(args))
        ]
        return split_aux(fun(*call_args, **kw), has_aux)[0]

    return call_sparsity(call, diff, [rest_leaves[k] for k in dynamic], b)


def call_sparsity(
    call: Callable[[Any, list], Any], primals: Any, dyn: list, batch: int | None = None
) -> SparsityPattern:
    """The Hessian pattern of ``call(primals, dyn)``'s output over the leaves of ``primals``.

    ``dyn`` are the non-differentiated array arguments (their values are not used). The
    entry point for callers that have parsed ``fun``'s arguments already (a lazy
    ``Hessian``); ``hessian_sparsity`` parses them and comes here. With ``batch``, the
    per-sample pattern, checked as in ``hessian_sparsity``'s ``batch_axis=0``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(primals)
    specs = [spec(leaf) for leaf in leaves]

    def flat_fun(diff_leaves, dyn_leaves):
        out = call(jax.tree_util.tree_unflatten(treedef, diff_leaves), dyn_leaves)
        if batch is not None:
            check_batch_output(out, batch)
        return jax.tree_util.tree_leaves(out)

    closed = jax.make_jaxpr(flat_fun)(specs, [spec(leaf) for leaf in dyn])
    sizes = [math.prod(s.shape) for s in specs]
    if batch is None:
        indptr, indices, _ = detect(closed, sizes, len(dyn), allow_dense=True)
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if indptr is None or indices is None:
            return SparsityPattern.dense(int(offsets[-1]), leaf_offsets=offsets.tolist())
        return SparsityPattern(
            indptr, indices, int(offsets[-1]), leaf_offsets=offsets.tolist(), _trusted=True
        )
    return _batched(closed, batch, sizes, len(dyn))


def _batched(closed, b: int, sizes, n_dynamic) -> SparsityPattern:
    """Per-sample pattern of a function over a leading batch axis of size ``b``.

    Raises the ``ValueError`` of a batch whose samples interact.
    """
    per = [s // b if b else 0 for s in sizes]
    local_off = np.concatenate([[0], np.cumsum(per, dtype=np.int64)])
    sample = np.concatenate(
        [np.arange(s, dtype=np.int64) // max(p, 1) for s, p in zip(sizes, per, strict=True)]
        or [np.zeros(0, np.int64)]
    )
    local = np.concatenate(
        [
            o + np.arange(s, dtype=np.int64) % max(p, 1)
            for s, p, o in zip(sizes, per, local_off[:-1], strict=True)
        ]
        or [np.zeros(0, np.int64)]
    )
    indptr, indices, out = detect(closed, sizes, n_dynamic)
    assert indptr is not None and indices is not None  # allow_dense is off
    if out is not None and out.dep is not None:
        d = out.dep.tocsr()
        rows = entry_rows(d.indptr, np.int64)
        bad = np.flatnonzero(sample[d.indices] != rows)
        if bad.size:
            r, c = int(rows[bad[0]]), int(d.indices[bad[0]])
            raise ValueError(
                f"sample {min(r, sample[c])} and sample {max(r, sample[c])} interact: the "
                f"output of sample {r} depends on entry {local[c]} of sample {sample[c]}. "
                "batch_axis=0 needs every sample's output to depend only on that sample."
            )
    rows = entry_rows(indptr, np.int64)
    cross = np.flatnonzero(sample[rows] != sample[indices])
    if cross.size:
        r, c = rows[cross[0]], indices[cross[0]]
        raise ValueError(
            f"sample {min(sample[r], sample[c])} and sample {max(sample[r], sample[c])} "
            f"interact: the Hessian couples entry {local[r]} of sample {sample[r]} with entry "
            f"{local[c]} of sample {sample[c]}."
        )
    n = int(local_off[-1])
    pattern = SparsityPattern.from_coordinates(local[rows], local[indices], n)
    return SparsityPattern(
        pattern.indptr, pattern.indices, n, leaf_offsets=local_off.tolist(), _trusted=True
    )
