"""Jit-able function factories: sparse Hessians from a coloring, asdex-style."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from ._arguments import (
    Mode,
    argnums_key,
    check_argnums,
    check_kwargs,
    check_mesh,
    check_options,
    is_array,
    split_aux,
)
from ._engine import CONSTANT_SEED_BYTES, concretely, is_traced
from ._errors import VerificationError
from ._formats import Format, check_format, pattern_output
from ._hvp import RACE_WARMUP, Kernels, fastest_of, maps_small_batches, materialised
from ._mesh import NO_MESH, Placement, gather_results, place_point, place_seeds, shard_rows
from ._tree import Layout, Signature, leaf_infos
from .coloring import (
    ColoredPattern,
    MethodOption,
    OrderOption,
    hessian_coloring_from_sparsity,
    input_avals,
    whole_candidates,
)
from .coloring import check_options as check_coloring_options
from .sparsity import hessian_sparsity


def format_name(output_format: Any) -> Format:
    """The lazyhess name of a format; asdex's names (``"scipy_csr"``, ...) are mapped."""
    return cast(Format, check_format(output_format))


def scalar_output(out: Any) -> jax.Array:
    """``out`` as a 0-d array: any array of one element (``()``, ``(1,)``, ``(1, 1)``, ...).

    Raises:
        ValueError: for outputs with more than one element or pytree outputs.
    """
    if not (is_array(out) or isinstance(out, float | complex)) or np.size(out) != 1:
        got = np.shape(out) if is_array(out) else jax.tree_util.tree_structure(out)
        raise ValueError(
            "sparse Hessian functions need a scalar output (shape (), (1,) or any shape of "
            f"one element); this function returns {got}. Use "
            "lazyhess.hessian(...).to_sparse('bcoo') for batched or vector outputs."
        )
    return jnp.reshape(out, ())


def _check_coloring(coloring: Any) -> None:
    if not isinstance(coloring, ColoredPattern):
        raise TypeError(
            f"coloring must be a lazyhess.ColoredPattern; got {type(coloring).__name__}. "
            "Build one with lazyhess.hessian_coloring(fun, *args)."
        )
    if coloring.method == "diagonal":
        raise ValueError(
            "a 'diagonal' coloring recovers only the diagonal; color with method='star' "
            "or 'column' for the whole Hessian."
        )


def hessian_coloring(
    fun,
    *args,
    argnums=0,
    method: MethodOption = "auto",
    order: OrderOption = "auto",
    whole: bool = False,
    **kwargs,
) -> ColoredPattern:
    """A coloring of the Hessian sparsity pattern of ``fun`` with respect to ``argnums``.

    ``lazyhess.hessian_sparsity(fun, *args, argnums=argnums, **kwargs)`` followed by
    ``hessian_coloring_from_sparsity(pattern, method, order, whole=whole)``; only shapes
    and dtypes of ``args`` matter. ``method`` and ``order`` are checked before the
    detection's cost.

    Args:
        fun: scalar function of JAX arrays.
        *args: example arguments (arrays or ``jax.ShapeDtypeStruct``).
        argnums: which positional argument(s) to differentiate, as in ``jax.hessian``.
        method: see ``hessian_coloring_from_sparsity``.
        order: see ``hessian_coloring_from_sparsity``.
        whole: the coloring serves whole Hessians only (it may recover by substitution);
            see ``hessian_coloring_from_sparsity``.
        **kwargs: forwarded to ``lazyhess.hessian_sparsity``: its options (such as
            ``has_aux``) and keyword arguments of ``fun``.

    Returns:
        A ``ColoredPattern`` whose ``pattern`` is the detected ``SparsityPattern``; it
        records ``argnums`` and the shapes and dtypes of the differentiated inputs.
    """
    check_coloring_options(method, order)
    pattern = hessian_sparsity(fun, *args, argnums=argnums, **kwargs)
    colored = hessian_coloring_from_sparsity(pattern, method=method, order=order, whole=whole)
    colored.argnums = argnums_key(argnums)
    colored.inputs = input_avals(args, argnums)
    return colored


def _avals_key(tree: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(a), str(jnp.result_type(a))) for a in leaves)


class Point(NamedTuple):
    """What one evaluation of a :class:`Program` returns.

    ``compressed`` is ``B``, or with a reducing program on a mesh the Hessian's stored
    entries (``nnz`` values in pattern order). ``anchor`` is the sum of the point's
    elements (see :meth:`Program.data`; ``None`` on a mesh).
    """

    value: jax.Array
    aux: Any
    compressed: jax.Array
    inputs: Any
    anchor: jax.Array | None = None


class Program:
    """``f``, its aux and ``B`` (``B[c] = H @ s_c`` over a coloring's seeds), in one trace.

    ``f`` is traced once per input shapes and non-array arguments; the HVPs come from the
    lazy object's kernels (``Kernels.products``: the gradient linearised, pulled back or
    differentiated per seed, by ``mode``), and the value and aux from that same trace.
    Seeds enter the program as constants (up to ``CONSTANT_SEED_BYTES``, as in the lazy
    object's traced requests: XLA folds them through the derivative) or are built on the
    device from the colors. They run vmapped, ``chunk_size`` per batch, or seed after seed
    (``lax.map``) where that measured faster (``Kernels.serial``'s rule), and ``B`` is
    materialised before its decompression where that measured faster: the first call with
    concrete arguments (the call's own, else the sample's) times the ways once and keeps
    the choice (see ``_choose``; it costs two or three more compilations). The compiled
    program is kept for calls with the same non-array arguments; inside a caller's
    ``jax.jit`` it is traced into the caller's program.
    """

    def __init__(
        self,
        fun: Callable,
        coloring: ColoredPattern,
        argnums: int | Sequence[int] | None,
        has_aux: bool,
        holomorphic: bool,
        mode: Mode | None,
        chunk_size: int | None,
        placement: Placement = NO_MESH,
        reduce: bool = False,
    ):
        _check_coloring(coloring)
        recorded = coloring.argnums
        if argnums is None:
            argnums = 0 if recorded is None else recorded
        elif recorded is not None and argnums_key(argnums) != argnums_key(recorded):
            raise ValueError(
                f"argnums={argnums!r}, but the coloring was built for argnums={recorded!r}; "
                "leave argnums out (the coloring knows it) or color for these argnums."
            )
        resolved = cast(Mode, mode or coloring.mode or "fwd_over_rev")
        check_options(
            fun, mode=resolved, chunk_size=chunk_size, has_aux=has_aux, holomorphic=holomorphic
        )
        self.fun = fun
        self.coloring = coloring
        self.argnums = argnums
        self.has_aux = has_aux
        self.holomorphic = holomorphic
        self.mode: Mode = resolved
        self.chunk_size = chunk_size
        self.placement = placement
        self.reduce = reduce and placement.mesh is not None
        if self.reduce and coloring.substitution is not None:
            raise ValueError(
                "a coloring recovered by substitution (method='acyclic') cannot be decompressed "
                "per device; color with method='star' or 'column' for a mesh."
            )
        self.sample: tuple[tuple, dict] | None = None
        self._compiled: tuple[Signature, Kernels, dict[tuple, tuple]] | None = None
        self._way: tuple[bool, bool] | None = None
        self._static_aux: dict[tuple, tuple] = {}

    def check(self, args: tuple, kwargs: dict) -> tuple[Signature, Any]:
        """The call's signature and differentiated inputs, checked against the coloring.

        Raises:
            ValueError: if the inputs' structure, shapes or dtypes are not those the
                coloring was built for.
        """
        nums, sequence = check_argnums(self.argnums, len(args))
        check_kwargs(self.fun, kwargs)
        signature = Signature(args, kwargs, nums, sequence)
        primals = signature.primals(args)
        got = input_avals(args, self.argnums)
        expected = self.coloring.inputs
        fix = "build a coloring for these inputs with lazyhess.hessian_coloring(fun, *args)."
        if expected is not None:
            mine, theirs = (jax.tree_util.tree_flatten_with_path(t) for t in (expected, got))
            if mine[1] != theirs[1]:
                raise ValueError(
                    f"the coloring was built for inputs structured as {mine[1]}; this call "
                    f"passes {theirs[1]}: {fix}"
                )
            for (path, a), (_, b) in zip(mine[0], theirs[0], strict=True):
                if (a.shape, a.dtype) != (b.shape, b.dtype):
                    where = "input" + jax.tree_util.keystr(path)
                    raise ValueError(
                        f"the coloring was built for {where} of shape {a.shape} and dtype "
                        f"{a.dtype}; this call passes shape {b.shape} and dtype {b.dtype}: {fix}"
                    )
        n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(got))
        if n != self.coloring.n:
            raise ValueError(
                f"the coloring is for n = {self.coloring.n} inputs, but the differentiated "
                f"inputs have {n} elements: {fix}"
            )
        return signature, primals

    def sampled(self, args: tuple, kwargs: dict) -> None:
        """Check sample arguments now and keep them for the seeds' measurement.

        Only concrete samples are kept (not tracers or ``jax.ShapeDtypeStruct``).
        """
        self.check(args, kwargs)
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if not is_traced(leaves) and not any(isinstance(a, jax.ShapeDtypeStruct) for a in leaves):
            self.sample = (args, kwargs)

    def __call__(self, args: tuple, kwargs: dict) -> Point:
        """``f``'s value and aux, and ``B`` of shape ``(num_colors, n)``, at ``args``."""
        primals, dyn = self._prepared(args, kwargs)
        serial = self._choose(args, kwargs)[0]
        # Inside a caller's trace the program is traced inline: a nested jit's seeds reach
        # XLA as the inner call's operands, which it then folds less (CLPLATEA star at
        # n = 1e4: 276 against 130 us).
        traced = is_traced((args, kwargs))
        if traced:
            assert self._compiled is not None
            run = self._program(self._compiled[1], serial)
        else:
            run = self._jitted(serial, primals, dyn)
        value, aux, compressed, anchor = run(primals, dyn)
        if self.has_aux:
            treedef, static = self._static_aux[_avals_key((primals, dyn))]
            arrays = iter(aux)
            aux = jax.tree_util.tree_unflatten(
                treedef, [next(arrays) if s is None else s[0] for s in static]
            )
        return Point(value, aux, compressed, input_avals(args, self.argnums), anchor)

    def _prepared(self, args: tuple, kwargs: dict) -> tuple[Any, list]:
        """``(primals, dyn)`` of checked ``args``, the kernels built for their statics."""
        signature, primals = self.check(args, kwargs)
        if self._compiled is None or not self._compiled[0].same_statics(signature):
            self._static_aux.clear()
            self._compiled = (signature, self._kernels(signature, primals), {})
        return primals, signature.dynamic(args, kwargs)

    def _kernels(self, signature: Signature, primals: Any) -> Kernels:
        """The HVP kernels of ``fun`` as a scalar of the flat differentiated inputs.

        Non-array leaves of the aux are kept aside (by input shapes) and put back by
        ``__call__``, so only arrays travel through the derivatives.
        """
        fun, has_aux = self.fun, self.has_aux

        def call(prims: Any, dyn: list) -> tuple[jax.Array, list]:
            out = signature.call(fun, prims, dyn)
            if not has_aux:
                return scalar_output(out), []
            out, aux = split_aux(out, True)
            leaves, treedef = jax.tree_util.tree_flatten(aux)
            dynamic = [is_array(leaf) for leaf in leaves]
            static = [None if d else (leaf,) for d, leaf in zip(dynamic, leaves, strict=True)]
            self._static_aux[_avals_key((prims, dyn))] = (treedef, static)
            return scalar_output(out), [leaf for d, leaf in zip(dynamic, leaves, strict=True) if d]

        paths = jax.tree_util.tree_flatten_with_path(primals)[0]
        inputs = leaf_infos(paths, drop_leading=False)
        dtype = jnp.result_type(*(leaf.dtype for leaf in inputs)) if inputs else float
        scalar = jax.ShapeDtypeStruct((), dtype)
        outputs = leaf_infos([((), scalar)], drop_leading=False)
        tree = jax.tree_util.tree_structure(primals)
        layout = Layout(tree, inputs, jax.tree_util.tree_structure(scalar), outputs, None)
        return Kernels(call, layout, self.mode, self.holomorphic)

    def _traced(self, serial: bool, primals: Any, dyn: list) -> Callable:
        """The program from one trace of ``fun`` per input shapes, to jit in several ways.

        The compiled program and the measurements of :meth:`_choose` evaluate this one
        trace's equations inline, so ``fun`` is traced once however many are compiled.
        """
        assert self._compiled is not None
        programs = self._compiled[2]
        key = (serial, _avals_key((primals, dyn)))
        if key not in programs:
            program = self._program(self._compiled[1], serial)
            closed, shape = jax.make_jaxpr(program, return_shape=True)(primals, dyn)
            # Constants (the seeds) as host arrays: jit embeds those in the program, where
            # XLA folds them; device arrays it passes as operands, which it cannot fold.
            consts = [np.asarray(c) if isinstance(c, jax.Array) else c for c in closed.consts]
            body = jaxpr_as_fun(ClosedJaxpr(closed.jaxpr, consts))
            tree = jax.tree_util.tree_structure(shape)

            def traced(primals: Any, dyn: list) -> Any:
                return jax.tree_util.tree_unflatten(
                    tree, body(*jax.tree_util.tree_leaves((primals, dyn)))
                )

            programs[key] = (traced, jax.jit(traced))
        return programs[key][0]

    def _jitted(self, serial: bool, primals: Any, dyn: list) -> Callable:
        """The compiled program for concrete calls, one per way of running the seeds."""
        self._traced(serial, primals, dyn)
        assert self._compiled is not None
        return self._compiled[2][serial, _avals_key((primals, dyn))][1]

    def _per_batch(self) -> int:
        count = self.coloring.num_colors
        return min(self.chunk_size or count, count)

    def _choose(self, args: tuple, kwargs: dict) -> tuple[bool, bool]:
        """``(serial, materialise)``: how the seeds run and ``B`` is read, measured once.

        The candidates are :meth:`candidates`, raced by :func:`_race` (the vmapped fused
        way the incumbent, ``RACE_SWITCH_SHARE``). The measurement needs concrete
        arguments: this call's, else host copies of the sample's; without them the
        defaults (vmapped, materialised) serve, undecided.
        Never on a mesh, whose devices share each chunk's seeds and reduce what they read,
        nor with several processes (each would time, and might choose, differently).
        """
        if self._way is not None:
            return self._way
        if self.placement.mesh is not None:
            self._way = (False, False)
            return self._way
        if jax.process_count() > 1:
            # Every process must compile the same program; timings would differ.
            self._way = (False, True)
            return self._way
        raced = _race([self], args, kwargs)
        return (False, True) if raced is None else raced[1]

    def candidates(
        self, args: tuple, kwargs: dict
    ) -> list[tuple[tuple[bool, bool], Callable[[], Any]]] | None:
        """``[(way, run)]``: the whole Hessian (HVPs and decompression) compiled each way.

        A way is ``(serial, materialise)``: vmapped seeds with ``B`` fused into its reads or
        written out first through a conditional (``materialise``, see :meth:`data`), and,
        where it may pay, seed after seed (``lax.map``, whose ``B`` is written out anyway).
        ``lax.map`` is a candidate for any batch of two seeds or more where
        ``maps_small_batches`` (on CPU: GENROSE at n = 1e4, 3 seeds, 132-170 against
        116-119 us, best of rounds in three runs; WOODS 111-126 against 88-106; on another
        day GENROSE's mapped program ran 146-157 us against vmap's 80-104, which is why
        it is raced, not assumed). Elsewhere it is a candidate where ``Kernels.serial``
        would try it (``SERIAL_MIN`` or more seeds per batch, or slow vmapped batches: the
        vmapped program, compiled ahead of time, runs twice first, its first run not
        counted). A call of ``run`` runs at
        ``args``, or at the sample's host copies (inside a trace, call it under
        ``concretely()``); ``None`` without concrete arguments.
        """
        concrete = self._concrete(args, kwargs)
        if concrete is None:
            return None
        primals, dyn = self._prepared(*concrete)
        ways = [(False, False), (False, True)]
        if self._size_may_run_serially(primals, dyn):
            ways.append((True, False))
        return [(way, self._run(*way, primals, dyn)) for way in ways]

    def keep(self, way: tuple[bool, bool]) -> None:
        """Run the seeds and read ``B`` this way (``(serial, materialise)``) from now on."""
        self._way = way

    def _size_may_run_serially(self, primals: Any, dyn: list) -> bool:
        """Whether ``lax.map`` is a candidate for this program's batches (see `candidates`)."""
        size = self._per_batch()
        if size < 2:
            return False
        if maps_small_batches():
            return True
        assert self._compiled is not None
        kernels = self._compiled[1]
        key = ("program", size)
        vmapped = _executable(self._traced(False, primals, dyn), primals, dyn)
        with concretely():
            for _ in range(2):
                start = time.perf_counter()
                jax.block_until_ready(vmapped())
                kernels.timed(key, False, time.perf_counter() - start)
        return kernels.serial(key)

    def _concrete(self, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Concrete arguments to time with: these, else host copies of the sample."""
        if not is_traced((args, kwargs)):
            return args, kwargs
        if self.sample is None:
            return None
        # Host copies: the sample's own placement (an explicit mesh, say) would leak into
        # the caller's trace, in which measurements run.
        return jax.tree_util.tree_map(
            lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, self.sample
        )

    def _run(self, serial: bool, materialise: bool, primals: Any, dyn: list) -> Callable:
        """The program and its decompression at ``primals``, compiled (see `_executable`)."""
        program = self._traced(serial, primals, dyn)

        def whole(primals: Any, dyn: list) -> jax.Array:
            _, _, compressed, anchor = program(primals, dyn)
            return self._decompressed(compressed, anchor if materialise else None)

        return _executable(whole, primals, dyn)

    def _program(self, kernels: Kernels, serial: bool) -> Callable:
        layout, placement = kernels.layout, self.placement

        def program(primals: Any, dyn: list) -> tuple[Any, list, jax.Array, Any]:
            flat = layout.ravel(jax.tree_util.tree_leaves(primals))
            flat = place_point(flat, placement)
            if placement.mesh is not None:
                return (*self._on_mesh(kernels, flat, dyn), None)
            anchor = jnp.sum(flat)  # a reduction: x may be sharded, where slices are refused
            product, first = kernels.products(flat, dyn)
            ids = np.arange(self.coloring.num_colors, dtype=np.int32)
            rows, extra = self._rows(product, flat, ids, serial)
            if first is None:  # rev_over_fwd: every seed's trace evaluated fun; read the first.
                first = kernels.call(layout.unravel(flat), dyn) if extra is None else extra
            return first[0], first[1], gather_results(rows, flat, placement, False), anchor

        return program

    def _rows(self, product: Callable, flat: jax.Array, ids: Any, serial: bool) -> tuple:
        """``(rows, extra)``: ``product`` over the seeds of colors ``ids``, ``(k, n)``.

        Seeds are constants when ``ids`` are known and small enough, else built from the
        colors on the device (ids of ``-2`` give zero seeds). ``chunk_size`` seeds per
        vmapped batch, or one at a time with ``serial``; ``extra`` is the first seed's
        (``None`` when there is no seed).
        """
        n, dtype = flat.size, flat.dtype
        count = len(ids)
        if count == 0:
            return jnp.zeros((0, n), dtype), None
        labels = np.asarray(self.coloring.colors, dtype=np.int32)
        constant = isinstance(ids, np.ndarray)
        constant = constant and count * n * np.dtype(dtype).itemsize <= CONSTANT_SEED_BYTES
        if constant:
            items = jnp.asarray((labels[None, :] == ids[:, None]).astype(dtype))
        else:
            items = jnp.asarray(ids, dtype=jnp.int32)

        def batch(chunk: jax.Array) -> Any:
            seeds = chunk if constant else (labels[None, :] == chunk[:, None]).astype(dtype)
            seeds = place_seeds(seeds, flat, NO_MESH)
            return jax.lax.map(product, seeds) if serial else jax.vmap(product)(seeds)

        size = 1 if serial else min(self.chunk_size or count, count)
        if size == count:
            rows, extra = batch(items)
            return rows.reshape(count, n), jax.tree_util.tree_map(lambda a: a[0], extra)
        chunks = -(-count // size)
        fill = 0 if constant else -2
        padded = jnp.pad(
            items, [(0, chunks * size - count)] + [(0, 0)] * (items.ndim - 1), constant_values=fill
        )
        rows, extra = jax.lax.map(batch, padded.reshape((chunks, size) + items.shape[1:]))
        first = jax.tree_util.tree_map(lambda a: a[0, 0], extra)
        return rows.reshape(-1, n)[:count], first

    def _on_mesh(
        self, kernels: Kernels, flat: jax.Array, dyn: list
    ) -> tuple[Any, list, jax.Array]:
        """The program's value, aux and result with colors shared out over the seed axis.

        Device ``j`` of the axis linearises at its copy of ``x`` and evaluates the HVPs of
        a contiguous run of colors, ``chunk_size`` at a time. With ``reduce`` each device
        reads the entries its colors recover (zeros elsewhere) and one ``psum`` of the
        ``nnz`` values combines them; otherwise the compressed rows are gathered.
        """
        coloring, placement = self.coloring, self.placement
        mesh, axis = placement.mesh, placement.axis
        assert mesh is not None and axis is not None
        count, n = coloring.num_colors, coloring.n
        per = -(-count // placement.devices)
        ids = np.full(per * placement.devices, -2, dtype=np.int32)
        ids[:count] = np.arange(count)
        where = coloring.recover_color.astype(np.int64) * n + coloring.recover_index

        def body(mine: jax.Array, z: jax.Array) -> tuple[Any, list, jax.Array]:
            product, first = kernels.products(z, dyn)
            rows, extra = self._rows(product, z, mine, False)
            if first is None:
                first = kernels.call(kernels.layout.unravel(z), dyn) if extra is None else extra
            # Replicated over the mesh's other axes, should x be sharded over them.
            rows = gather_results(rows, z, NO_MESH, False)
            if not self.reduce:
                return first[0], first[1], jax.lax.all_gather(rows, axis, tiled=True)
            local = jnp.asarray(where) - jax.lax.axis_index(axis) * (per * n)
            inside = (local >= 0) & (local < per * n)
            read = jnp.take(rows.reshape(-1), jnp.clip(local, 0, per * n - 1))
            return first[0], first[1], jax.lax.psum(jnp.where(inside, read, 0), axis)

        # Without the replication check: the point is invariant over the axis but its
        # tangents (seeds) vary, which the check's types refuse in linearize and grad; the
        # value and aux are computed alike on every device, and the result is reduced.
        value, aux, out = jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(P(axis), P()),
            out_specs=P(),
            axis_names={axis},
            check_vma=False,
        )(shard_rows(jnp.asarray(ids), placement), flat)
        return value, aux, out if self.reduce else out[:count]

    def data(self, point: Point) -> Any:
        """The Hessian's stored entries in pattern order from ``point.compressed`` (``B``).

        Inside a trace, ``B`` is written out first (see :func:`materialised`, on a
        predicate from ``point.anchor``, the sum of ``x``) where that measured faster (see
        :meth:`_choose`). Where the HVPs are cheap (WOODS) or constant (RANDSP2, folded
        away by XLA with the decompression) fusing is as fast or faster.
        """
        materialise = self._way is None or self._way[1]
        return self._decompressed(point.compressed, point.anchor if materialise else None)

    def _decompressed(self, compressed: jax.Array, anchor: Any) -> Any:
        """``B``'s entries; through a conditional on ``anchor`` when given and traced."""
        decompress = self.coloring.decompress_data
        if anchor is None or not is_traced(compressed):
            return decompress(compressed)
        return materialised(decompress, compressed, anchor)

    def decompress(self, point: Point, format: Format) -> Any:
        """The flat ``n x n`` Hessian of ``point`` in ``format`` (lazyhess's format names)."""
        data = point.compressed if self.reduce else self.data(point)
        return pattern_output(data, self.coloring.csr, format)


def _executable(fun: Callable, primals: Any, dyn: list) -> Callable[[], Any]:
    """``fun(primals, dyn)`` compiled ahead of time, to time: a call runs the executable.

    Its arguments go to the device once (host copies of a sample would be sent at every
    call). Call it under ``concretely()`` inside a trace; build it outside: under
    ``concretely()`` (``jax.ensure_compile_time_eval``, which folds constant
    subexpressions eagerly) tracing would evaluate everything that does not depend on
    the arguments in Python (RANDSP2's constant Hessian: every candidate compiled to a
    copy). Ahead of time because inside a trace a jitted call takes jit's slow path, ~60
    us more than the executable's.
    """
    with concretely():
        on_device = jax.tree_util.tree_map(
            lambda a: jax.device_put(a) if isinstance(a, np.ndarray) else a, (primals, dyn)
        )
    return functools.partial(jax.jit(fun).lower(*on_device).compile(), *on_device)


def _race(
    programs: list[Program], args: tuple, kwargs: dict
) -> tuple[Program, tuple[bool, bool]] | None:
    """The fastest of every program's ways, kept by its program; ``None`` if untimeable.

    All :meth:`Program.candidates` run in one ``fastest_of`` after ``RACE_WARMUP``. The
    incumbent is the vmapped fused way of the first direct coloring (for a star coloring,
    asdex's own program), else of the first program. ``None`` without concrete arguments.
    """
    entries: list[tuple[Program, tuple[bool, bool], Callable[[], Any]]] = []
    for program in programs:
        candidates = program.candidates(args, kwargs)
        if candidates is None:
            return None
        entries += [(program, way, run) for way, run in candidates]
    plain = [k for k, (_, way, _) in enumerate(entries) if way == (False, False)]
    direct = [k for k in plain if entries[k][0].coloring.substitution is None]
    with concretely():  # inside a trace, the runs would be staged into it
        won = fastest_of(
            [run for _, _, run in entries], warmup=RACE_WARMUP, incumbent=(direct or plain)[0]
        )
    program, way, _ = entries[won]
    program.keep(way)
    return program, way


class _Fastest:
    """Of programs for one pattern with different colorings, the one that ran fastest.

    ``whole_cost`` weighs an acyclic coloring against the direct one from the pattern
    alone; how costly the HVPs are, and what XLA folds, only a run tells (RANDSP2's
    Hessian is constant: its star program folds to a 16 µs copy, the acyclic one takes
    71 µs; PENTADIAG's star program, which the model keeps, is faster than asdex's but
    its acyclic one was faster still in some runs). The first call with concrete
    arguments, or with the sample's host copies inside a trace, compiles every program's
    ways and races them all at once (:func:`_race`), and keeps the winner's coloring and
    way. The direct coloring's
    vmapped fused program (for a star coloring, asdex's own) is the incumbent: another
    replaces it only if it ran faster in ``RACE_SWITCH_SHARE`` of the rounds. Until then
    the first program (the model's choice) serves.
    """

    def __init__(self, programs: list[Program]):
        self.programs = programs
        self.chosen: Program | None = programs[0] if len(programs) == 1 else None

    def __call__(self, args: tuple, kwargs: dict) -> Program:
        if self.chosen is None:
            # Every process must run the same program; timings would differ.
            if jax.process_count() > 1:
                self.chosen = self.programs[0]
                return self.chosen
            raced = _race(self.programs, args, kwargs)
            if raced is None:  # traced, and no concrete sample to time with
                return self.programs[0]
            self.chosen = raced[0]
        return self.chosen


def _detected(
    fun, sample_args, sample_kwargs, argnums, has_aux, symmetric, mode, whole=True
) -> ColoredPattern:
    coloring = hessian_coloring(
        fun,
        *sample_args,
        argnums=argnums,
        has_aux=has_aux,
        method="auto" if symmetric else "column",
        whole=whole,
        **sample_kwargs,
    )
    coloring.mode = mode
    return coloring


def sparse_hessian_from_coloring(
    fun: Callable,
    coloring: ColoredPattern,
    output_format: str = "bcoo",
    *,
    sample_args: Sequence = (),
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode | None = None,
    chunk_size: int | None = None,
    sample_kwargs: dict | None = None,
    mesh: Any = None,
    seed_axis: str | None = None,
) -> Callable[..., Any]:
    """A function ``(*args, **kwargs) -> H`` computing the sparse Hessian with ``coloring``.

    Each call costs ``coloring.num_colors`` HVPs (one linearisation of the gradient shared by
    all of them) and a gather: the physical floor; ``fun`` is traced once per input shapes.
    Wrap it in ``jax.jit`` for repeated use; ``"bcoo"`` and ``"dense"`` outputs are jit-able
    and differentiable. Calls at other input shapes or dtypes than the coloring was built
    for raise a ``ValueError``.

    Args:
        fun: scalar-valued function (an output of shape ``(1,)``, or any one element, is
            squeezed).
        coloring: a star or column coloring of the Hessian's pattern.
        output_format: ``"bcoo"``, ``"dense"``, ``"numpy"``, ``"csr"``, ``"csc"``, ``"coo"``
            (asdex's ``"numpy_dense"`` and ``"scipy_*"`` names are accepted too).
        sample_args: arguments with the shapes and dtypes of later calls, checked against
            the coloring now (default: checked at every call).
        argnums: as in :func:`lazyhess.hessian` (default: the coloring's, else 0).
        has_aux: as in :func:`lazyhess.hessian`; calls then return ``(H, aux)``. ``aux`` may
            hold any Python values.
        holomorphic: as in :func:`lazyhess.hessian`.
        mode: as in :func:`lazyhess.hessian` (default: the coloring's, else
            ``"fwd_over_rev"``).
        chunk_size: colors per vmapped batch of HVPs (bounds memory; default: all at once).
        sample_kwargs: keyword arguments with the shapes of later calls.
        mesh: a ``jax.sharding.Mesh``: the colors' HVPs are shared out over its
            ``seed_axis``, each device linearising at its copy of the point; the entries
            each device recovers are combined by one all-reduce of ``nnz`` values.
            ``chunk_size`` is then per device. ``None``: follow the inputs' sharding.
        seed_axis: the mesh axis name (default: the mesh's only axis).

    Returns:
        A function of ``fun``'s arguments; with ``has_aux`` its calls return ``(H, aux)``.
    """
    format = format_name(output_format)
    placement = Placement(mesh, check_mesh(mesh, seed_axis))
    program = Program(
        fun, coloring, argnums, has_aux, holomorphic, mode, chunk_size, placement, reduce=True
    )
    if sample_args:
        program.sampled(tuple(sample_args), sample_kwargs or {})

    def hess(*args: Any, **kwargs: Any) -> Any:
        point = program(args, kwargs)
        out = program.decompress(point, format)
        return (out, point.aux) if has_aux else out

    return hess


def sparse_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    output_format: str = "bcoo",
    chunk_size: int | None = None,
    mesh: Any = None,
    seed_axis: str | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Detect the sparsity of ``fun``'s Hessian, color it, and return ``(*args) -> H``.

    Detection and coloring run once here, from the shapes of ``sample_args`` (values are
    not used). Each call of the result costs ``num_colors`` HVPs; see
    :func:`sparse_hessian_from_coloring`. ``symmetric=True`` uses the cheapest coloring
    for whole Hessians: when an acyclic coloring (recovery by substitution) needs fewer
    colors than the direct one (star or column), the first call with concrete arguments
    (or with the sample, inside a trace) runs the whole Hessian with each and keeps the
    faster (``fun`` is then traced once or, on CPU, twice per coloring, and every
    coloring's two or three ways of running are compiled and raced at once, after 0.1 s
    of untimed runs; ``lazyhess.coloring.whole_candidates``). Until then, and without a concrete
    sample inside a trace, the one ``whole_cost`` prefers serves. ``False`` uses a column
    (distance-2) coloring. With ``mesh=`` (see :func:`sparse_hessian_from_coloring`)
    every entry is read directly (star or column), so each device decompresses its own
    colors.

    Example:
        >>> import jax, jax.numpy as jnp, lazyhess
        >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)
        >>> hess = jax.jit(lazyhess.sparse_hessian(f, jnp.zeros(5), output_format="dense"))
        >>> hess(jnp.ones(5)).shape
        (5, 5)
    """
    value_and_hess = value_and_sparse_hessian(
        fun,
        *sample_args,
        argnums=argnums,
        has_aux=has_aux,
        holomorphic=holomorphic,
        mode=mode,
        symmetric=symmetric,
        output_format=output_format,
        chunk_size=chunk_size,
        mesh=mesh,
        seed_axis=seed_axis,
        **sample_kwargs,
    )

    def hess(*args: Any, **kwargs: Any) -> Any:
        value, out = value_and_hess(*args, **kwargs)
        return (out, value[1]) if has_aux else out

    return hess


def value_and_sparse_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    output_format: str = "bcoo",
    chunk_size: int | None = None,
    mesh: Any = None,
    seed_axis: str | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Like :func:`sparse_hessian`, but calls return ``(value, H)``.

    With ``has_aux`` they return ``((value, aux), H)``. The value comes out of the same
    trace of ``fun`` as the HVPs (on a ``mesh``, of each device's).
    """
    format = format_name(output_format)
    placement = Placement(mesh, check_mesh(mesh, seed_axis))
    # Candidate colorings: the direct one and, when one needs fewer colors, an acyclic one
    # (a mesh's devices each read their entries directly); the faster program serves.
    direct = _detected(
        fun, sample_args, sample_kwargs, argnums, has_aux, symmetric, mode, whole=False
    )
    colorings = [direct]
    if symmetric and mesh is None:
        colorings = whole_candidates(direct)
        for colored in colorings:
            colored.argnums, colored.inputs, colored.mode = direct.argnums, direct.inputs, mode
    programs = [
        Program(fun, c, None, has_aux, holomorphic, None, chunk_size, placement, reduce=True)
        for c in colorings
    ]
    for program in programs:
        program.sampled(tuple(sample_args), sample_kwargs)
    fastest = _Fastest(programs)

    def value_and_hess(*args: Any, **kwargs: Any) -> Any:
        program = fastest(args, kwargs)
        point = program(args, kwargs)
        value = (point.value, point.aux) if has_aux else point.value
        return value, program.decompress(point, format)

    return value_and_hess


def compressed_hessian(
    fun: Callable,
    *sample_args: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    mode: Mode = "fwd_over_rev",
    symmetric: bool = True,
    chunk_size: int | None = None,
    mesh: Any = None,
    seed_axis: str | None = None,
    **sample_kwargs: Any,
) -> Callable[..., Any]:
    """Detect, color, and return ``(*args) -> B`` with ``B[c] = H @ s_c``.

    ``B`` has shape ``(num_colors, n)``, one HVP per color; with ``has_aux`` calls return
    ``(B, aux)``. The coloring is the result's ``coloring`` attribute; recover H with
    :func:`decompress` or :func:`decompress_data`. On a ``mesh`` the colors are shared out
    over ``seed_axis`` (``chunk_size`` per device) and ``B`` is gathered on every device.
    """
    placement = Placement(mesh, check_mesh(mesh, seed_axis))
    coloring = _detected(fun, sample_args, sample_kwargs, argnums, has_aux, symmetric, mode)
    program = Program(fun, coloring, None, has_aux, holomorphic, None, chunk_size, placement)
    program.sampled(sample_args, sample_kwargs)

    def compute(*args: Any, **kwargs: Any) -> Any:
        point = program(args, kwargs)
        return (point.compressed, point.aux) if has_aux else point.compressed

    compute.coloring = coloring  # pyright: ignore[reportFunctionMemberAccess] - asdex's API
    return compute


def decompress(compressed: Any, coloring: ColoredPattern, format: str = "bcoo") -> Any:
    """The Hessian from its compressed form ``B`` (``(num_colors, n)``) in ``format``.

    Sparse formats keep the pattern's coordinates, explicit zeros included. Jit-able for
    ``"bcoo"`` and ``"dense"``.
    """
    return pattern_output(coloring.decompress_data(compressed), coloring.csr, format_name(format))


def decompress_data(compressed: Any, coloring: ColoredPattern) -> Any:
    """The Hessian's stored entries in pattern (row-major) order, gathered from ``B``.

    A gather with constant indices: jit-able and differentiable.
    """
    return coloring.decompress_data(compressed)


def check_hessian_correctness(
    fun: Callable,
    x: Any,
    coloring: ColoredPattern,
    *,
    method: Literal["matvec", "dense"] = "matvec",
    num_probes: int = 25,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Check the sparse Hessian of ``fun`` at ``x`` built with ``coloring`` against JAX.

    ``"matvec"`` compares ``H @ v`` with exact HVPs for ``num_probes`` random probes (cost
    O(probes) HVPs); ``"dense"`` compares with ``jax.hessian`` (O(n^2) memory). When the
    coloring was built for a sequence of ``argnums``, ``x`` is the tuple of all positional
    arguments of ``fun``; otherwise ``x`` is its one argument.

    Raises:
        VerificationError: if they disagree (e.g. the coloring does not fit ``fun``).
    """
    if method not in ("matvec", "dense"):
        raise ValueError(f"method={method!r} is not valid; use 'matvec' or 'dense'.")
    args = tuple(x) if isinstance(coloring.argnums, tuple) else (x,)
    program = Program(fun, coloring, None, False, False, None, None)
    signature, primals = program.check(args, {})
    sparse = program.decompress(program(args, {}), "dense")
    flat, unravel = ravel_pytree(primals)
    dyn = signature.dynamic(args, {})

    def scalar(z: jax.Array) -> jax.Array:
        return scalar_output(signature.call(fun, unravel(z), dyn))

    if method == "dense":
        reference = jax.jit(jax.hessian(scalar))(flat)
        default = 1e-7
        problem = "differs from jax.hessian"
    else:
        rng = np.random.default_rng(seed)
        probes = jnp.asarray(rng.standard_normal((num_probes, flat.size)), flat.dtype)
        hvp = jax.jit(jax.vmap(lambda v: jax.jvp(jax.grad(scalar), (flat,), (v,))[1]))
        reference, sparse = hvp(probes), probes @ sparse
        default = 1e-5
        problem = f"gives other products than exact HVPs on {num_probes} random probes"
    rtol = default if rtol is None else rtol
    atol = default if atol is None else atol
    try:
        np.testing.assert_allclose(np.asarray(sparse), np.asarray(reference), rtol=rtol, atol=atol)
    except AssertionError as err:
        raise VerificationError(
            f"the sparse Hessian from this coloring {problem}; the coloring or its pattern "
            f"does not fit fun at this point.\n{err}"
        ) from None
