"""Argument checks shared by every entry point (the bottom layer: jax, numpy and `_errors`).

``hessian``, ``hessian_sparsity``, the functional API and the scipy adapters validate
their arguments here, so one mistake gets one error wherever it is made. Options of
other libraries that users bring along live in :data:`PEER_OPTIONS`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

Mode = Literal["fwd_over_rev", "rev_over_fwd", "rev_over_rev"]
MODES: tuple[str, ...] = get_args(Mode)

#: The keyword options of lazyhess's entry points, offered as close matches for typos.
OPTIONS = (
    "argnums",
    "has_aux",
    "holomorphic",
    "batch_axis",
    "sparsity",
    "mode",
    "chunk_size",
    "cache_bytes",
    "progress",
    "strict",
    "verify",
    "symmetric",
    "output_format",
    "method",
    "order",
    "mesh",
    "seed_axis",
)

#: Options of other Hessian libraries that a keyword passed on to ``fun`` may really be,
#: with what lazyhess calls (or does instead of) each. A name listed here raises even when
#: ``fun`` takes ``**kwargs``, unless ``fun`` names it as a parameter.
PEER_OPTIONS = {
    "batch_axes": "lazyhess calls it batch_axis= (None, or 0 for a leading sample axis)",
    "in_axes": "jax.vmap's in_axes=; for per-sample Hessians lazyhess takes batch_axis=0",
    "create_graph": (
        "torch's create_graph=; lazyhess needs none: its results are jax arrays that jax "
        "differentiates further"
    ),
    "strict": (
        "torch's strict=; only lazyhess.hessian takes strict=True (it raises for an input "
        "the gradient does not depend on)"
    ),
    "vectorize": (
        "torch's vectorize=; lazyhess always evaluates HVPs in vectorized chunks "
        "(chunk_size= sets their size)"
    ),
    "outer_jacobian_strategy": (
        "torch's outer_jacobian_strategy=; lazyhess takes mode='fwd_over_rev' (default), "
        "'rev_over_fwd' or 'rev_over_rev'"
    ),
    "output_format": (
        "asdex's output_format=; for asdex's hessian use lazyhess.sparse_hessian(fun, x, "
        "output_format=...), or H.to_sparse(format) on a lazyhess.Hessian"
    ),
}


def is_array(leaf: Any) -> bool:
    """Whether ``leaf`` is an array (jax, numpy, a numpy scalar or a shape-dtype struct).

    Arrays are traced through compiled kernels; any other leaf (a Python number, a
    string) is a static constant of ``fun``.
    """
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def spec(leaf: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of ``leaf`` (an array, a shape-dtype struct or a Python number).

    A JAX array keeps its sharding type, which names its explicit mesh axes: a function
    that reads them (``shard_map``'s ``in_specs``) is traced as it will be called.
    """
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=jax.typeof(leaf).sharding)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
    a = jnp.asarray(leaf)
    return jax.ShapeDtypeStruct(a.shape, a.dtype)


def _index(a: Any) -> int | None:
    if isinstance(a, bool | np.bool_):
        return None
    try:
        return operator.index(a)
    except TypeError:
        return None


def check_argnums(argnums: Any, nargs: int) -> tuple[tuple[int, ...], bool]:
    """``argnums`` as distinct indices in ``range(nargs)``, and whether it was a sequence.

    Ints (numpy ints included) are accepted, ``bool`` is not (``argnums=True`` is a
    mistake, not argument 1); an argument may be listed once.
    """
    sequence = not isinstance(argnums, int | np.integer)
    items = tuple(argnums) if isinstance(argnums, Sequence) and sequence else (argnums,)
    if isinstance(argnums, str) or any(_index(a) is None for a in items):
        raise TypeError(f"argnums must be an int or a sequence of ints; got {argnums!r}.")
    if not items:
        raise ValueError(
            "argnums=() selects nothing to differentiate; name at least one argument."
        )
    bad = [a for a in items if not -nargs <= a < nargs]
    if bad:
        raise ValueError(
            f"argnums={argnums!r} but fun is called with {nargs} positional argument"
            f"{'s' if nargs != 1 else ''}; pick indices in range({nargs})."
        )
    normal = tuple(int(a) % nargs for a in items)
    if len(set(normal)) != len(normal):
        raise ValueError(f"argnums={argnums!r} repeats an argument; list each one once.")
    return normal, sequence


def argnums_key(argnums: Any) -> int | tuple[int, ...]:
    """``argnums`` (already checked) as a plain int or tuple of ints, comparable and storable."""
    if isinstance(argnums, int | np.integer):
        return operator.index(argnums)
    return tuple(operator.index(a) for a in argnums)


def check_batch_axis(batch_axis: Any) -> None:
    """``batch_axis`` must be ``None`` or the int ``0`` (not ``False``, not ``0.0``)."""
    if batch_axis is not None and (_index(batch_axis) is None or batch_axis != 0):
        raise ValueError(
            f"batch_axis={batch_axis!r} is not supported; use batch_axis=None (no batch) or "
            "batch_axis=0 (the int 0: the leading axis of every input is the sample axis)."
        )


def check_options(
    fun: Any,
    *,
    mode: Any = "fwd_over_rev",
    batch_axis: Any = None,
    sparsity: Any = "auto",
    chunk_size: Any = None,
    cache_bytes: Any = 0,
    has_aux: Any = False,
    holomorphic: Any = False,
) -> None:
    """Check ``fun`` and the options of ``lazyhess.hessian`` (defaults pass)."""
    if not callable(fun):
        raise TypeError(f"fun must be callable; got {type(fun).__name__}.")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a valid mode; use one of {', '.join(MODES)}.")
    check_batch_axis(batch_axis)
    if isinstance(sparsity, str) and sparsity != "auto":
        raise ValueError(
            f"sparsity={sparsity!r} is not supported; use 'auto' (detect from the jaxpr), None "
            "(dense), or a pattern (SparsityPattern, scipy sparse, boolean array)."
        )
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive int or None (automatic); got {chunk_size!r}."
        )
    if not isinstance(cache_bytes, int) or isinstance(cache_bytes, bool):
        raise TypeError(f"cache_bytes must be an int number of bytes; got {cache_bytes!r}.")
    if cache_bytes < 0:
        raise ValueError(f"cache_bytes must be >= 0 (0 disables the cache); got {cache_bytes}.")
    check_flag("has_aux", has_aux)
    check_flag("holomorphic", holomorphic)


def check_mesh(mesh: Any, seed_axis: Any) -> str | None:
    """The mesh axis seed directions are sharded over (``None`` without a mesh).

    Raises:
        TypeError: if ``mesh`` is not a ``jax.sharding.Mesh``.
        ValueError: if ``seed_axis`` is not one of its axes, is given without a mesh, or is
            left out on a mesh of several axes.
    """
    if mesh is None:
        if seed_axis is not None:
            raise ValueError(
                f"seed_axis={seed_axis!r} needs mesh=: pass the jax.sharding.Mesh that has "
                "this axis, or leave seed_axis out."
            )
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((8,), ('dirs',))); got "
            f"{type(mesh).__name__}."
        )
    names = tuple(mesh.axis_names)
    if seed_axis is None:
        if len(names) != 1:
            raise ValueError(
                f"the mesh has axes {names}; say which one shares out seed directions with "
                f"seed_axis= (one of {', '.join(map(repr, names))})."
            )
        return names[0]
    if seed_axis not in names:
        raise ValueError(
            f"seed_axis={seed_axis!r} is not an axis of the mesh; its axes are {names}."
        )
    return seed_axis


def check_flag(name: str, flag: Any) -> None:
    """A boolean option must be ``True`` or ``False``."""
    if not isinstance(flag, bool):
        raise TypeError(f"{name} must be True or False; got {flag!r}.")


def check_new_point(old: tuple[tuple, dict], new: tuple[tuple, dict]) -> None:
    """``H.at``'s arguments ``new`` are structured as ``old``, arrays alike in shape, dtype."""
    if not (old[1] or new[1]) and len(old[0]) == len(new[0]):
        if all(_same_array_type(a, b) for a, b in zip(old[0], new[0], strict=True)):
            return  # jax arrays alike: the common case, without flattening
    mine = jax.tree_util.tree_flatten_with_path(old)
    theirs = jax.tree_util.tree_flatten_with_path(new)
    if mine[1] != theirs[1]:
        raise ValueError(
            f"H.at needs arguments structured as the original ({mine[1]}); got {theirs[1]}. "
            "Build a new Hessian with lazyhess.hessian for a different structure."
        )
    for (path, a), (_, b) in zip(mine[0], theirs[0], strict=True):
        if not (is_array(a) or is_array(b)):
            continue
        dtype = getattr(a, "dtype", None)
        if dtype is not None and dtype == getattr(b, "dtype", None) and a.shape == b.shape:
            continue  # arrays alike: no dtype resolution needed
        sa, sb = (jnp.shape(a), jnp.result_type(a)), (jnp.shape(b), jnp.result_type(b))
        if sa != sb:
            raise ValueError(
                f"H.at: argument {jax.tree_util.keystr(path)[1:]} has shape {sb[0]} and "
                f"dtype {sb[1]}, but the Hessian was built with {sa[0]} and {sa[1]}; "
                "keep shapes and dtypes, or build a new Hessian."
            )


def _same_array_type(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are jax arrays of one shape and dtype."""
    return (
        isinstance(a, jax.Array)
        and isinstance(b, jax.Array)
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def check_kwargs(fun: Callable, kwargs: dict) -> None:
    """Keywords passed on to ``fun`` must be its parameters.

    A keyword ``fun`` does not take raises a ``TypeError`` saying what lazyhess calls it
    (a close match among lazyhess's :data:`OPTIONS` and ``fun``'s parameters, or the
    lazyhess way for a peer library's option in
    :data:`PEER_OPTIONS`). When ``fun`` takes ``**kwargs`` (or its signature cannot be
    read) only peer options raise. Cost: one ``inspect.signature``.
    """
    if not kwargs:
        return
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    named = {
        p.name for p in parameters or () if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    open_ = parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters)
    for key in kwargs:
        if key in named or (open_ and key not in PEER_OPTIONS):
            continue
        if key in PEER_OPTIONS:
            hint = PEER_OPTIONS[key]
        else:
            close = difflib.get_close_matches(key, [*OPTIONS, *named], n=1)
            hint = f"did you mean {close[0]}=?" if close else "fun takes no such parameter"
        raise TypeError(
            f"{key}= is not an option of this lazyhess function, so it would be passed on to fun "
            f"({', '.join(sorted(named)) or 'no keyword parameters'}): {hint}."
        )


def leaf_name(path: tuple, argnums: tuple[int, ...], sequence: bool) -> str:
    """``args[i]...`` for a leaf of the differentiated arguments at ``path``."""
    if sequence and path:
        return f"args[{argnums[path[0].idx]}]" + jax.tree_util.keystr(path[1:])
    return f"args[{argnums[0]}]" + jax.tree_util.keystr(path)


def check_inputs(
    primals: Any, argnums: tuple[int, ...], sequence: bool, holomorphic: bool | None
) -> list:
    """The ``(path, leaf)`` pairs of the differentiated arguments, checked.

    Every leaf must be floating point; complex exactly when ``holomorphic`` (``None``
    accepts both, for sparsity detection, which only reads shapes).
    """
    paths = jax.tree_util.tree_flatten_with_path(primals)[0]
    if not paths:
        raise ValueError(
            f"argnums={argnums if sequence else argnums[0]!r} selects arguments with no array "
            "leaves to differentiate."
        )
    for path, leaf in paths:
        name = leaf_name(path, argnums, sequence)
        dtype = spec(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name} has dtype {dtype}; a Hessian needs floating-point inputs (as jax.grad). "
                "Convert it, e.g. x.astype(float), or leave it out of argnums."
            )
        if holomorphic is None:
            continue
        complex_ = jnp.issubdtype(dtype, jnp.complexfloating)
        if complex_ and not holomorphic:
            raise TypeError(
                f"{name} has complex dtype {dtype}; pass holomorphic=True for a holomorphic "
                "function (as jax.hessian requires)."
            )
        if holomorphic and not complex_:
            raise TypeError(
                f"holomorphic=True needs complex inputs, but {name} has dtype {dtype}; "
                "convert it with x.astype(complex) or drop holomorphic=True."
            )
    return paths


def batch_size(paths: list, argnums: tuple[int, ...], sequence: bool) -> int:
    """The common leading (sample) size of the differentiated leaves, for ``batch_axis=0``."""
    sizes = {
        leaf_name(path, argnums, sequence): (spec(leaf).shape[:1] or ("scalar",))[0]
        for path, leaf in paths
    }
    if "scalar" in sizes.values() or len(set(sizes.values())) != 1:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            "batch_axis=0 needs every differentiated input to have the same leading "
            f"(sample) size; got {listed}."
        )
    return int(next(iter(sizes.values())))


def check_outputs(out: Any, holomorphic: bool, batch: int | None) -> None:
    """``fun``'s output (shapes) has a Hessian: floating point, one value per sample."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        name = "output" + jax.tree_util.keystr(path)
        kind = jnp.complexfloating if holomorphic else jnp.floating
        if not jnp.issubdtype(leaf.dtype, kind):
            need = "complex" if holomorphic else "real floating-point"
            raise TypeError(
                f"fun's {name} has dtype {leaf.dtype}; a Hessian needs {need} outputs"
                + ("" if holomorphic else " (for complex outputs use holomorphic=True)")
                + "."
            )
    if batch is not None:
        check_batch_output(out, batch)


def check_batch_output(out: Any, batch: int) -> None:
    """With ``batch_axis=0``, ``fun`` returns one array of shape ``(B,)`` or ``(B, 1)``."""
    leaves = jax.tree_util.tree_leaves(out)
    shape = tuple(out.shape) if hasattr(out, "shape") else None
    if len(leaves) != 1 or leaves[0] is not out or shape not in ((batch,), (batch, 1)):
        got = shape if shape is not None else jax.tree_util.tree_structure(out)
        raise ValueError(
            f"batch_axis=0 needs fun to return one array of shape ({batch},) or "
            f"({batch}, 1), one value per sample; got {got}."
        )


def split_aux(out: Any, has_aux: bool) -> tuple[Any, Any]:
    """``(output, aux)`` from what ``fun`` returned (``aux`` is ``None`` without has_aux).

    As in jax, a ``has_aux`` function returns a tuple or list of two; anything else is a
    ``TypeError``.
    """
    if not has_aux:
        return out, None
    pair = isinstance(out, tuple | list)
    if not (pair and len(out) == 2):
        got = f"a {type(out).__name__} of length {len(out)}" if pair else type(out).__name__
        if hasattr(out, "shape") and not pair:
            got = f"one array of shape {tuple(out.shape)}"
        raise TypeError(
            f"has_aux=True needs fun to return a pair (output, aux); it returned {got}."
        )
    return out[0], out[1]


def other_inputs_hint(args: tuple, argnums: tuple[int, ...], sequence: bool) -> str:
    """A hint for a Hessian indexed as if every positional argument were differentiated.

    Paddle's ``hessian(f, [x1, x2])`` and torch's ``hessian(f, (x1, x2))`` nest blocks over
    all inputs; ``lazyhess.hessian(f, x1, x2)`` differentiates ``x1`` only, as jax does.
    Empty unless several positional arguments are floating-point arrays and only one is
    differentiated.
    """
    floats = [
        k
        for k, a in enumerate(args)
        if isinstance(a, float | complex) or is_array(a) and jnp.issubdtype(a.dtype, jnp.inexact)
    ]
    if sequence or len(floats) < 2:
        return ""
    listed = ", ".join(f"x{k + 1}" for k in range(len(args)))
    return (
        f" lazyhess.hessian(f, {listed}) differentiates args[{argnums[0]}] only "
        f"(argnums={argnums[0]}, as jax.hessian); the other arguments are held fixed. For the "
        f"blocks over several inputs (Paddle's hessian(f, [{listed}]), torch's hessian(f, "
        f"({listed}))) call lazyhess.hessian(f, {listed}, argnums={tuple(floats)}) and index "
        "H[0][1]."
    )


def check_sample_independence(
    fun: Callable[[jax.Array], jax.Array], x: jax.Array, batch: int, holomorphic: bool = False
) -> None:
    """Raise a ``ValueError`` when the samples of a ``batch_axis=0`` function interact.

    ``fun`` maps the flat point ``x`` (``batch * n`` values) to one output per sample.
    Samples ``b != c`` interact when output ``b`` depends on sample ``c``'s inputs (a
    Jacobian entry) or when the summed output couples them (a Hessian entry): either way
    the per-sample blocks would be wrong. Each of ``ceil(log2 batch)`` bits of the sample
    index splits the samples in two; a random direction on each side, pushed through
    ``fun`` and its gradient by one forward-over-reverse pass, must leave the other side
    untouched, and every pair of distinct samples differs in some bit. Cost: the
    gradient's linearisation and ``2 ceil(log2 batch)`` HVPs, once per function. A coupling
    whose derivatives vanish exactly at ``x`` is not seen.
    """
    if batch < 2:
        return
    bits = math.ceil(math.log2(batch))
    side = (np.arange(batch)[None, :] >> np.arange(bits)[:, None]) & 1
    sides = np.concatenate([side, 1 - side]).astype(bool)
    n = x.size // batch
    noise = np.random.default_rng(0).standard_normal((len(sides), batch, n))
    seeds = (noise * sides[:, :, None]).reshape(len(sides), -1)

    def both(z: jax.Array) -> tuple[jax.Array, jax.Array]:
        total = lambda w: jnp.sum(fun(w))  # noqa: E731
        return jnp.reshape(fun(z), (batch,)), jax.grad(total, holomorphic=holomorphic)(z)

    # Evaluated now even inside someone else's trace (a first request under jax.jit).
    with jax.ensure_compile_time_eval():
        seeds = jnp.asarray(seeds, x.dtype)
        _, pushed = jax.linearize(both, x)
        jv, hv = jax.vmap(pushed)(seeds)
    eps = np.finfo(np.dtype(x.dtype)).eps
    leaks = []
    for part in (np.abs(np.asarray(jv)), np.abs(np.asarray(hv))):
        reach = part.reshape(len(sides), batch, -1).max(axis=-1, initial=0.0)
        leaks.append((reach > 64 * eps * reach.max(axis=1, keepdims=True)) & ~sides)
    leak = next((leak for leak in leaks if leak.any()), None)
    if leak is None:
        return
    b = int(np.flatnonzero(leak.any(axis=0))[0])
    across = [j for j in range(bits) if leak[j + bits * side[j, b], b]]
    c = b ^ sum(1 << j for j in across)
    other = f"sample {c}" if c != b and c < batch else "other samples"
    raise ValueError(
        f"samples interact: the output of sample {b} (or its Hessian) depends on the inputs "
        f"of {other}. batch_axis=0 needs every sample's output to depend only on that "
        "sample; found by probing derivatives at this point."
    )
