"""From a call to ``lazyhess.hessian`` to what a Hessian holds.

:func:`share` checks the call and builds what every point of the function shares (the
compiled kernels, the structure: pattern and colorings); :func:`engine_at` builds one
point's :class:`~lazyhess._engine.Engine` on them. ``H.at(x)`` calls only the second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import scipy.sparse as sp
from jax.experimental.sparse import BCOO

from ._arguments import (
    batch_size,
    check_argnums,
    check_flag,
    check_inputs,
    check_kwargs,
    check_mesh,
    check_options,
    check_outputs,
    check_sample_independence,
    split_aux,
)
from ._cache import DirectionCache
from ._engine import Engine, is_traced
from ._hvp import Kernels
from ._mesh import Placement, chunk_budget
from ._progress import resolve as resolve_progress
from ._structure import Structure
from ._tree import Layout, Signature, leaf_infos
from .sparsity import SparsityPattern, call_sparsity

_CHUNK_BYTES = 64 * 2**20
_MAX_CHUNK = 128


class Shared(NamedTuple):
    """What every point of one function shares."""

    fun: Callable
    options: dict[str, Any]  # the keyword options of lazyhess.hessian, as given
    kernels: Kernels
    structure: Structure
    chunk: int  # seeds per chunk, for about 64 MiB of results


def _user_pattern(sparsity: Any, n: int) -> SparsityPattern:
    """The user's pattern as a validated ``n x n`` symmetric :class:`SparsityPattern`."""
    if isinstance(sparsity, SparsityPattern):
        pattern = sparsity
    elif sp.issparse(sparsity):
        pattern = SparsityPattern.from_scipy(sparsity)
    elif isinstance(sparsity, BCOO):
        pattern = SparsityPattern.from_bcoo(sparsity)
    elif isinstance(sparsity, np.ndarray | jax.Array) and np.ndim(sparsity) == 2:
        pattern = SparsityPattern.from_dense(np.asarray(sparsity))
    else:
        raise TypeError(
            "sparsity must be 'auto', None, a SparsityPattern, a scipy sparse matrix or a 2-D "
            f"boolean array; got {type(sparsity).__name__}."
        )
    if pattern.shape != (n, n):
        raise ValueError(
            f"sparsity pattern has shape {pattern.shape}, but the flat Hessian over the "
            f"differentiated inputs is {n} x {n}; give a pattern over the flat inputs "
            "(ravel_pytree order, one sample with batch_axis=0)."
        )
    return pattern


def _probed(
    pattern: Any, call: Callable, layout: Layout, batch: int, primals, dyn, holomorphic: bool
) -> Callable[[], Any]:
    """A source giving ``pattern`` on first need, once the samples are seen not to interact.

    For ``batch_axis=0`` without detection (``sparsity=None`` or a user pattern), which
    would otherwise never check it; see :func:`check_sample_independence` for the cost.
    """
    x = layout.ravel(jax.tree_util.tree_leaves(primals))

    def source() -> Any:
        outputs = lambda z: call(layout.unravel(z), dyn)[0]  # noqa: E731
        check_sample_independence(outputs, x, batch, holomorphic)
        return pattern

    return source


def share(
    fun: Callable, args: tuple, kwargs: dict, options: dict[str, Any]
) -> tuple[Shared, Signature]:
    """Check the call and build what its points share: ``(Shared, Signature)``.

    Nothing is differentiated: shapes come from ``jax.eval_shape``; detection waits for
    the first request that needs the pattern (unless ``strict``).
    """
    sparsity, has_aux = options["sparsity"], options["has_aux"]
    holomorphic, batch_axis = options["holomorphic"], options["batch_axis"]
    show = resolve_progress(options["progress"])
    placement = Placement(options["mesh"], check_mesh(options["mesh"], options["seed_axis"]))
    check_options(
        fun,
        mode=options["mode"],
        batch_axis=batch_axis,
        sparsity=sparsity,
        chunk_size=options["chunk_size"],
        cache_bytes=options["cache_bytes"],
        has_aux=has_aux,
        holomorphic=holomorphic,
    )
    argnums, sequence = check_argnums(options["argnums"], len(args))
    check_flag("verify", options["verify"])
    check_kwargs(fun, kwargs)
    signature = Signature(args, kwargs, argnums, sequence)
    primals = signature.primals(args)
    paths = check_inputs(primals, argnums, sequence, holomorphic)
    batch = batch_size(paths, argnums, sequence) if batch_axis is not None else None
    inputs = leaf_infos(paths, drop_leading=batch is not None)
    in_tree = jax.tree_util.tree_structure(primals)

    def call(prims: Any, dyn: Any) -> tuple[Any, Any]:
        return split_aux(signature.call(fun, prims, dyn), has_aux)

    dyn = signature.dynamic(args, kwargs)
    out_shape = jax.eval_shape(lambda prims, d: call(prims, d)[0], primals, dyn)
    check_outputs(out_shape, holomorphic, batch)
    out_paths, out_tree = jax.tree_util.tree_flatten_with_path(out_shape)
    layout = Layout(in_tree, inputs, out_tree, leaf_infos(out_paths, False), batch)
    kernels = Kernels(call, layout, options["mode"], holomorphic, placement)
    per_direction = max(layout.p * layout.n + layout.d, 1) * layout.dtype.itemsize
    budget = chunk_budget(placement, _CHUNK_BYTES)
    chunk = options["chunk_size"] or min(
        _MAX_CHUNK, 1 << max((budget // per_direction).bit_length() - 1, 0)
    )

    def detect() -> SparsityPattern:
        return call_sparsity(lambda p, d: call(p, d)[0], primals, dyn, batch)

    if isinstance(sparsity, str):
        structure = Structure(layout.n, detect, progress=show)
    else:
        pattern = None if sparsity is None else _user_pattern(sparsity, layout.n)
        if batch is not None and not is_traced((args, kwargs)):
            pattern = _probed(pattern, call, layout, batch, primals, dyn, holomorphic)
        verify = options["verify"] and sparsity is not None
        structure = Structure(layout.n, pattern, progress=show, verify=verify)
    if options["strict"] is not False:
        check_flag("strict", options["strict"])
        pattern = structure.pattern  # sparsity=None has none: detected for the check alone
        _check_strict(detect() if pattern is None else pattern, signature, paths, layout)
    return Shared(fun, options, kernels, structure, chunk * placement.devices), signature


def engine_at(
    shared: Shared,
    signature: Signature,
    args: tuple,
    kwargs: dict,
    previous: Engine | None = None,
) -> Engine:
    """The engine of one point.

    Its cache is fresh, or, when the Hessian is constant (``Kernels.constant``), holds the
    results of the ``previous`` point's cache, which it shares: both points are concrete
    and caching is on (without it, constancy is not even asked).
    """
    kernels = shared.kernels
    x = kernels.layout.ravel(jax.tree_util.tree_leaves(signature.primals(args)))
    dyn = signature.dynamic(args, kwargs)
    traced = is_traced((x, dyn))
    shares = None
    if previous is not None and previous.cache.max_bytes and not previous.traced:
        if not traced and kernels.constant(x, dyn):
            shares = previous.cache
    cache = DirectionCache(shared.options["cache_bytes"], shares)
    structure = shared.structure
    return Engine(kernels, x, dyn, traced, shared.chunk, cache, structure, structure.progress)


def _check_strict(
    pattern: SparsityPattern, signature: Signature, paths: list, layout: Layout
) -> None:
    """Raise when a differentiated leaf does not affect the gradient (torch's ``strict``).

    A leaf whose rows of the sparsity pattern are all empty has an all-zero Hessian row and
    column of blocks, whatever the point.
    """
    indptr = pattern.indptr
    for (path, _), leaf in zip(paths, layout.inputs, strict=True):
        if leaf.size and indptr[leaf.stop] == indptr[leaf.offset]:
            if signature.sequence:
                path, number = path[1:], signature.argnums[path[0].idx]
            else:
                number = signature.argnums[0]
            where = f"args[{number}]{jax.tree_util.keystr(path)}"
            raise ValueError(
                f"strict=True, but the gradient does not depend on {where}: its "
                "rows of the Hessian's sparsity pattern are empty, so every block with it is "
                "zero. Leave it out of argnums, or pass strict=False to get the zero blocks."
            )
