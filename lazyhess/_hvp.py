"""Hessian-vector product kernels: three modes, one linearisation per point, chunked seeds."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._arguments import Mode
from ._mesh import NO_MESH, Placement, gather_results, pad_rows, place_point, place_seeds
from ._tree import Layout
from .sparsity import depends

# Chunks of this many seeds or more try lax.map as well as vmap (see Kernels.serial), and
# keep lax.map when it ran this many times faster; smaller ones try it when their
# vmapped run took this many seconds or more.
SERIAL_MIN = 16
SERIAL_MARGIN = 1.25
SERIAL_SLOW = 0.01

# fastest_of races its candidates for at least this many rounds and this many seconds,
# and at most this many rounds.
RACE_ROUNDS = 3
RACE_SECONDS = 0.03
RACE_MAX_ROUNDS = 25

# The functional API's race of whole programs first runs its candidates untimed for this
# many seconds. A program's first 50-100 ms of calls on CPU run up to 2x slower than later
# ones, by different amounts per program: racing each coloring's ways right after their
# compiles, then the winners, kept the star program (the fastest in steady state, by
# 1.3-1.8x) in 4 of 24 first calls (8 each of WOODS, GENROSE, PENTADIAG at n = 1e4); one
# race of them all after the warm-up kept it in 16 (WOODS 8, GENROSE 3, PENTADIAG 5). A
# lazy Hessian's fresh-point race does without: with it, its CSR requests at n = 1e4 moved
# within the runs' noise (one run each, better on 5 problems of 11, worse on 5).
RACE_WARMUP = 0.1

# A race with an incumbent (for whole Hessians, the direct coloring's vmapped fused
# program: with a star coloring, asdex's own) keeps it unless the fastest median also beat
# it in this share of the rounds. Alternating call by call, whole Hessians of ~100 us take
# about twice their back-to-back time, and the median alone chose at random: GENROSE's
# jitted whole Hessian at n = 1e4 ran 1.31, 0.82, 1.29 and 2.14x asdex's time in four runs,
# and four more first calls kept acyclic lax.map (1.5x slower than star back to back) in
# three. With the rule star was kept in 8 first calls of 8. A tie wins about half the
# rounds, give or take 0.1 over 25; real gains won every round (PENTADIAG, BAND9,
# FMINSRF2, BDQRTIC), ARROW2's acyclic program (12 % faster) 0.67-0.75 of them, and was
# kept in 4 first calls of 4.
RACE_SWITCH_SHARE = 0.75


def fastest_of(
    runs: Sequence[Callable[[], Any]], *, warmup: float = 0.0, incumbent: int | None = None
) -> int:
    """Which of ``runs`` (compiled calls of the same result) is fastest, by its median run.

    Each runs once first (that call may compile), then all run in turn, untimed, for
    ``warmup`` seconds (``RACE_WARMUP`` in the functional API); then rounds run each once in
    turn, so a slow spell of the machine hits every candidate alike. Best-of-two-runs
    measured one after the other picked wrongly on whole Hessians of about 100 us
    (PENTADIAG, BAND9 at n = 1e4: 20-40 % slower programs kept); for ``RACE_SECONDS`` of
    rounds they are ~1 % of a compile. The median, not the best: a program's runs on CPU
    can split between a fast and a slow mode, and the best run then picks the one whose
    fast mode is rarer (WOODS's whole Hessian at n = 1e4: written out first, 79 us best
    but 151 median, against 87 and 114 fused; at fresh points the fused one was 3 %
    faster). With an ``incumbent`` (an index into ``runs``), the fastest median replaces
    it only if it also ran faster in ``RACE_SWITCH_SHARE`` of the rounds.
    """
    for run in runs:
        jax.block_until_ready(run())
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        for run in runs:
            jax.block_until_ready(run())
    times: list[list[float]] = [[] for _ in runs]
    start = time.perf_counter()
    rounds = 0
    while rounds < RACE_MAX_ROUNDS and (
        rounds < RACE_ROUNDS or time.perf_counter() - start < RACE_SECONDS
    ):
        for i, run in enumerate(runs):
            begin = time.perf_counter()
            jax.block_until_ready(run())
            times[i].append(time.perf_counter() - begin)
        rounds += 1
    table = np.asarray(times)
    won = int(np.argmin(np.median(table, axis=1)))
    if incumbent is None or won == incumbent:
        return won
    beaten = np.mean(table[won] < table[incumbent])
    return won if beaten >= RACE_SWITCH_SHARE else incumbent


def maps_small_batches() -> bool:
    """Whether ``lax.map`` is worth racing against vmap for any batch of two seeds or more.

    On CPU: XLA's CPU compiler splits a vmapped batch's fusion across threads (the
    optimized HLO of GENROSE's 3-seed batch has ``outer_dimension_partitions`` 2), while
    ``lax.map``'s per-seed fusions stay whole, and on a 2-core machine the split costs
    small programs more than it gains: one core (``taskset``) ran GENROSE's vmapped 2-seed
    HVPs at n = 1e4 in 29 us against 56-65 us on two. Elsewhere ``Kernels.serial``'s
    rule (many seeds, or slow batches) decides when to try it.
    """
    return jax.default_backend() == "cpu"


def materialised(decompress: Callable[[Any], Any], compressed: Any, anchor: Any) -> Any:
    """``decompress(compressed)`` with ``compressed`` written out first on CPU.

    XLA's CPU compiler otherwise fuses the HVPs into every gather that reads ``B`` and
    recomputes them per entry read (PENTADIAG and CLPLATEA at n = 1e4: 2.4x slower); a
    conditional's operand is always materialised. Its predicate comes from ``anchor``
    (a reduction of ``x``): one read from ``B`` itself would split its fusion (WOODS: 1.4x
    slower). Both branches decompress alike; other platforms decompress directly.
    """

    def on_cpu(b: Any) -> Any:
        return jax.lax.cond(anchor == anchor, decompress, decompress, b)

    return jax.lax.platform_dependent(compressed, cpu=on_cpu, default=decompress)


class Kernels:
    """Compiled HVP kernels for one function, input layout and mode, shared across points.

    ``call(primals, dyn)`` evaluates ``fun`` as ``(output, aux)`` from the differentiated
    inputs and the traced non-differentiated arguments ``dyn``. The kernels differentiate its
    output as a vector of ``q`` elements (the output leaves raveled, or their sum over the
    samples with a batch) of the flat input vector ``x``.

    ``linearize(x, dyn)`` returns the per-point state: the residuals of the gradient's
    linearisation (``fwd_over_rev``) or of its VJP (``rev_over_rev``); ``rev_over_fwd`` has
    none and differentiates afresh for every chunk. ``apply(state, x, dyn, v)`` maps
    directions ``v`` of shape ``(k, d)`` to HVP results ``(k, p, n)``; ``seeded`` builds the
    directions on the device from column labels: seed ``t`` is the indicator of
    ``labels == ids[t]`` (``ids[t] = -1`` gives a zero padding direction), repeated in every
    sample; ``once`` does the same without a kept state. Those two return their results
    flat (see :meth:`seeded`). Each kernel compiles once per chunk size.

    ``placement`` shards each chunk's directions over a mesh axis (padded to a multiple of
    its devices); results come back gathered over it (see ``_mesh``).
    """

    def __init__(
        self,
        call: Callable[[Any, Any], tuple[Any, Any]],
        layout: Layout,
        mode: Mode,
        holomorphic: bool,
        placement: Placement = NO_MESH,
    ):
        self.call = call
        self.placement = placement
        self.layout = layout
        self.mode = mode
        self.holomorphic = holomorphic
        self._trees: dict[Any, Any] = {}
        self._linearize = jax.jit(self._linearize_impl)
        self._apply = jax.jit(self._apply_impl, static_argnums=(0, 1))
        self._seeded = jax.jit(
            self._seeded_impl, static_argnums=(0, 1), static_argnames=("serial",)
        )
        self._once = jax.jit(self._once_impl, static_argnums=0, static_argnames=("serial",))
        self._times: dict[tuple, dict[bool, list[float]]] = {}
        self._chosen: dict[tuple, int] = {}
        self._units = jax.jit(self._units_impl, static_argnums=0)
        self._fixed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._fresh: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._last_runs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._first_order_jit = jax.jit(self._first_order)
        self._constant: bool | None = None

    def _flat(self, x: jax.Array, dyn: Any) -> tuple[jax.Array, tuple[Any, Any]]:
        """The flat output (``q`` elements) and ``(output, aux)`` of the same evaluation."""
        out, aux = self.call(self.layout.unravel(x), dyn)
        y = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(out)])
        return (jnp.sum(y, keepdims=True) if self.layout.batch is not None else y), (out, aux)

    def _first_order(self, x: jax.Array, dyn: Any) -> tuple[Any, Any, Any]:
        """``(output, gradient, aux)``, the gradient shaped like ``jax.jacrev``'s.

        With a batch it is the gradient of the sum over samples (each sample's gradient).
        """

        def target(primals: Any) -> tuple[Any, tuple[Any, Any]]:
            out, aux = self.call(primals, dyn)
            return (jnp.sum(out) if self.layout.batch is not None else out), (out, aux)

        jac = jax.jacrev(target, has_aux=True, holomorphic=self.holomorphic)
        grad, (out, aux) = jac(self.layout.unravel(x))
        leaves, treedef = jax.tree_util.tree_flatten(aux)
        traced = [isinstance(leaf, jax.Array) for leaf in leaves]
        static = [None if t else (leaf,) for t, leaf in zip(traced, leaves, strict=True)]
        self._trees["aux", _signature(x, dyn)] = (treedef, static)
        return out, grad, [leaf for t, leaf in zip(traced, leaves, strict=True) if t]

    def first_order(self, x: jax.Array, dyn: Any) -> tuple[Any, Any, Any]:
        """``(output, gradient, aux)`` in one compiled call.

        Leaves of ``aux`` that are not arrays (a string, a Python number computed from
        no input) are kept as ``fun`` returned them, as ``jax.hessian``'s ``has_aux`` does.
        """
        out, grad, arrays = self._first_order_jit(x, dyn)
        treedef, static = self._trees["aux", _signature(x, dyn)]
        rest = iter(arrays)
        aux = jax.tree_util.tree_unflatten(
            treedef, [next(rest) if kept is None else kept[0] for kept in static]
        )
        return out, grad, aux

    def _q(self) -> int:
        return 1 if self.layout.batch is not None else self.layout.p

    def _derivative(self, fn: Callable, x: jax.Array) -> tuple[jax.Array, Any]:
        """``(d fn / d x as (p, n), aux)`` for ``fn(x) = (q outputs, aux)`` (scalar if q = 1)."""
        derivative = jax.grad if self._q() == 1 else jax.jacrev
        g, aux = derivative(fn, has_aux=True, holomorphic=self.holomorphic)(x)
        return g.reshape(self.layout.p, self.layout.n), aux

    def _first(self, x: jax.Array, dyn: Any, value: bool) -> tuple[jax.Array, Any]:
        """The flat output's first derivative ``(p, n)`` and, with ``value``, its ``first``.

        ``first`` is ``(output, aux)`` of the same trace (aux leaves must then be arrays),
        else ``None``.
        """

        def flat(z: jax.Array) -> tuple[jax.Array, Any]:
            y, first = self._flat(z, dyn)
            return (y[0] if self._q() == 1 else y), (first if value else None)

        return self._derivative(flat, x)

    def _linear(self, x: jax.Array, dyn: Any, value: bool = False) -> tuple[Any, Any]:
        """``(lin, first)``: the gradient's linear map at ``x`` and ``_first``'s ``first``.

        ``lin`` is the gradient's linearisation (``fwd_over_rev``) or its VJP
        (``rev_over_rev``); ``rev_over_fwd`` has none (``(None, None)``): each product
        differentiates afresh (see ``_product``). The one place the modes are told apart.
        """
        if self.mode == "rev_over_fwd":
            return None, None
        linear = jax.linearize if self.mode == "fwd_over_rev" else jax.vjp
        _, lin, first = linear(lambda z: self._first(z, dyn, value), x, has_aux=True)
        return lin, first

    def _product(self, lin: Any, x: jax.Array, dyn: Any, v: jax.Array, value: bool = False):
        """``(H v, first)`` for one direction ``v`` of shape ``(d,)``, ``H v`` as ``(p, n)``.

        ``first`` is ``(output, aux)`` of the product's own trace with ``value`` in
        ``rev_over_fwd`` (which evaluates ``fun`` per direction), else ``None``.
        """
        lay = self.layout
        if self.mode == "fwd_over_rev":
            if lin is None:  # no state: see `_once_impl`
                return jax.jvp(lambda z: self._first(z, dyn, False)[0], (x,), (v,))[1], None
            return lin(v), None
        if self.mode == "rev_over_rev":
            if lay.batch is not None:
                return lin(v.reshape(lay.p, lay.n))[0].reshape(lay.p, lay.n), None
            cotangents = jnp.eye(lay.p, dtype=v.dtype)[:, :, None] * v[None, None, :]
            return jax.vmap(lambda ct: lin(ct)[0])(cotangents), None

        def flat(w: jax.Array) -> tuple[jax.Array, Any]:
            y, first = self._flat(w, dyn)
            return y, (first if value else None)

        def directional(z: jax.Array) -> tuple[jax.Array, Any]:
            _, tangent, first = jax.jvp(flat, (z,), (v,), has_aux=True)
            return (tangent[0] if self._q() == 1 else tangent), first

        return self._derivative(directional, x)

    def products(self, x: jax.Array, dyn: Any) -> tuple[Callable, Any]:
        """``(product, first)`` in the caller's trace, the output and aux included.

        ``product(v)`` is ``(H v, first_v)`` for one direction ``v`` (``(d,)``), ``H v``
        as ``(p, n)``; ``first`` is ``(output, aux)`` from the linearisation's trace, or
        ``None`` in ``rev_over_fwd``, whose ``first_v`` carry it instead. Aux leaves must
        be arrays. Used by the functional API's programs (``_functional.Program``).
        """
        lin, first = self._linear(x, dyn, value=True)
        return (lambda v: self._product(lin, x, dyn, v, value=True)), first

    def constant(self, x: jax.Array, dyn: Any) -> bool:
        """Whether the Hessian is the same at every point: the HVP reads only its direction.

        Decided once per function, from the jaxpr of this mode's product at ``x`` (traced,
        not run): no output may depend on the point or on the other arguments ``dyn``. True
        for functions at most quadratic in the differentiated inputs whose second
        derivative no other argument scales (not for ``lam * x**2`` with ``lam`` passed).
        Sound but not complete: a piecewise quadratic (``where``, ``relu``) or a quadratic
        written through a square root (``norm(x)**2``) reads the point.
        """
        if self._constant is None:

            def product(x: jax.Array, dyn: Any, v: jax.Array) -> jax.Array:
                lin, _ = self._linear(x, dyn)
                return self._product(lin, x, dyn, v)[0]

            closed = jax.make_jaxpr(product)(x, dyn, x)
            point = [True] * len(jax.tree_util.tree_leaves((x, dyn))) + [False]
            self._constant = not closed.effects and not any(depends(closed, point))
        return self._constant

    def _state_impl(self, x: jax.Array, dyn: Any) -> tuple[Any, list]:
        """``(tree, leaves)``: the linear map's static structure and its residuals."""
        lin, _ = self._linear(place_point(x, self.placement), dyn)
        if lin is None:
            return None, []
        leaves, tree = jax.tree_util.tree_flatten(lin)
        return tree, leaves

    def _linearize_impl(self, x: jax.Array, dyn: Any) -> list:
        tree, leaves = self._state_impl(x, dyn)
        self._trees["state", _signature(x, dyn)] = tree
        return leaves

    def linearize(self, x: jax.Array, dyn: Any) -> tuple:
        """The per-point state (residuals and the static structure that reads them)."""
        leaves = self._linearize(x, dyn)
        return self._trees.get(("state", _signature(x, dyn))), leaves

    def _once_state(self, x, dyn) -> tuple[Any, list]:
        # Forward over reverse differentiates the gradient along the seeds directly: no
        # state is kept, and linearising first measured up to 1.7x slower for one seed
        # (CLPLATEA, n = 1e5: 556 us against 325 us; equal from 4 seeds on).
        if self.mode == "fwd_over_rev":
            return None, []
        return self._state_impl(x, dyn)

    def _once_impl(self, exact_nan: bool, x, dyn, labels, ids, serial: bool = False):
        tree, leaves = self._once_state(x, dyn)
        return self._seeded_impl(exact_nan, tree, leaves, x, dyn, labels, ids, serial=serial)

    def serial(self, key: tuple) -> bool:
        """Whether chunks of kind ``key`` (a kernel, its size) run seed after seed.

        ``vmap`` evaluates a chunk's seeds as one batched program, usually the faster;
        but batched gathers and scatters are slow on CPU, where ``lax.map`` over the same
        seeds measured 2-10x faster (RANDSP8 n=1e4, 165 seeds: 504 ms vs 53 ms; SPARSINE,
        64: 36 vs 19 ms; RANDSP8 n=1e5, 6 seeds: 127 vs 65 ms) and 1.5-2x slower elsewhere
        (BDQRTIC, ARROW2, GENROSE). A chunk kind runs vmapped first; once timed compiled,
        it also tries ``lax.map`` (one more compile) when it has at least ``SERIAL_MIN``
        seeds, or at least two whose vmapped run took ``SERIAL_SLOW`` or more (long enough
        for the compile to pay soon). Callers then :meth:`race` the two ways once and keep
        the winner; until then (or without a race) the recorded runs decide, ``lax.map``
        needing to be faster by ``SERIAL_MARGIN``. Never on a mesh, whose devices share each
        chunk's seeds, nor with several processes.
        """
        size = key[-1]
        if size < 2 or self.placement.devices > 1:  # a mesh splits seeds
            return False
        if jax.process_count() > 1:
            # Every process must compile the same program: timings differ between them,
            # and one running lax.map while another runs vmap deadlocks their collectives.
            return False
        settled = self._chosen.get(key)
        if settled is not None:
            return bool(settled)
        seen = self._times.get(key, {})
        vmapped, mapped = seen.get(False, []), seen.get(True, [])
        if len(vmapped) < 2:
            return False
        if len(mapped) < 2:
            return size >= SERIAL_MIN or min(vmapped[1:]) >= SERIAL_SLOW
        return min(mapped[1:]) * SERIAL_MARGIN < min(vmapped[1:])

    def decided(self, key: tuple) -> bool:
        """Whether :meth:`serial`'s answer for ``key`` is final.

        Raced, never asked (one seed, a mesh, several processes), or run vmapped enough
        to know that ``lax.map`` will not be tried.
        """
        if key in self._chosen or key[-1] < 2 or self.placement.devices > 1:
            return True
        if jax.process_count() > 1:
            return True
        vmapped = self._times.get(key, {}).get(False, [])
        return len(vmapped) >= 2 and not self.serial(key)

    def unsettled(self, key: tuple) -> bool:
        """Whether ``key``'s way is still to be raced (see :meth:`race`)."""
        return key not in self._chosen

    def chosen(self, key: tuple, runs: Callable[[], Sequence[Callable[[], Any]]]) -> int:
        """Which of ``runs()`` is fastest, raced by ``fastest_of`` the first time ``key`` is asked.

        The answer is kept: later asks return it without calling ``runs``.
        """
        index = self._chosen.get(key)
        if index is None:
            index = self._chosen[key] = fastest_of(runs())
        return index

    def race(self, key: tuple, run: Callable[[bool], Any]) -> bool:
        """Race ``run(False)`` against ``run(True)`` once; keep and return the winner.

        For chunk kinds the two ways are vmapped and ``lax.map``, raced the first time
        :meth:`serial` would try ``lax.map``. The recorded runs are single timings, one
        per request: on SPARSINE's 26 whole-Hessian seeds (n = 1e4) one slow vmapped run
        kept ``lax.map`` at 8.0 ms against vmap's 5.4 ms. ``fastest_of`` runs both (the
        first run of each may compile it) in alternating rounds, once.
        """
        return bool(self.chosen(key, lambda: [lambda: run(False), lambda: run(True)]))

    def stateless(self, unit: bool, ways: Callable[[], Sequence[Callable[[], Any]]]) -> bool:
        """Whether a point's later one-seed chunks run through :meth:`once` too.

        A point's first one-chunk request differentiates the gradient along its seeds
        directly (``once``); later ones apply the point's kept linearisation
        (``seeded``). For one seed the first was faster on banded problems and the second
        on others (n = 1e4, best of 10 rounds: GENROSE 35 against 48 us, CLPLATEA 107
        against 132, DIXMAANE 50 against 77; SPARSINE 781 against 328, ARROW2 259 against
        235). ``ways()`` gives the two (``once`` first), raced once per function and kind
        of seed; with several processes (which must run the same programs) the kept
        linearisation serves.
        """
        if jax.process_count() > 1:
            return False
        return self.chosen(("stateless", unit), ways) == 0

    def timed(self, key: tuple, serial: bool, seconds: float) -> None:
        """Record a concrete run of a ``key`` chunk (the first of each way compiles)."""
        runs = self._times.setdefault(key, {}).setdefault(serial, [])
        if len(runs) < 3:
            runs.append(seconds)

    def once(self, x, dyn, labels, ids, exact_nan: bool, serial: bool = False) -> jax.Array:
        """``seeded``'s HVP results at a point whose state is not kept, in one compiled call.

        The linearisation stays inside the program, where XLA fuses it with the products
        instead of writing its residuals out: measured 30-40 % faster than ``linearize``
        then ``seeded`` (and than returning the state with the products) for a few seeds
        on banded problems. For a point's only chunk, such as ``H.at(x)[i]`` or
        ``H.at(x).to_sparse()`` with the colors in one chunk.
        """
        return self._once(exact_nan, x, dyn, labels, ids, serial=serial)

    def once_fixed(self, family: Any, x, dyn, seeds: Callable[[], Any], serial: bool = False):
        """``once`` for a whole fixed family (a coloring), its seeds constants of the program.

        XLA folds constant seeds through the derivative (gathers of the seed, products with
        its zeros), which seeds built from labels on the device hide. ``seeds()`` builds
        them (``(k, d)``), once per family and way; the program is kept while the
        family lives (the structure holds it).
        """
        return self.read_program(family, serial, seeds, lambda b: b, serial, False)(x, dyn)

    def read_program(
        self,
        family: Any,
        key: Any,
        seeds: Callable[[], Any],
        read: Callable[[Any], Any],
        serial: bool,
        materialise: bool,
    ) -> Callable[[Any, Any], jax.Array]:
        """A program of ``(x, dyn)``: constant seeds' products ``B``, read by ``read``.

        ``seeds()`` builds the seeds (``(k, d)``, see :meth:`once_fixed`); ``B`` is
        ``(k, p, n)``. Unless ``materialise`` (see :func:`materialised`), XLA may fuse the
        products into what ``read`` gathers, and need not even form ``B``. Kept under
        ``key`` with ``family``'s other programs.
        """
        programs = self._fixed.setdefault(family, {})
        program = programs.get(key)
        if program is None:
            constant = seeds()

            def fixed(x, dyn):
                tree, leaves = self._once_state(x, dyn)
                compressed = self._apply_impl(False, tree, leaves, x, dyn, constant, serial)
                if materialise:
                    return materialised(read, compressed, jnp.sum(x))
                return read(compressed)

            program = programs[key] = jax.jit(fixed)
        return program

    def keep_fresh(self, kept: Any, hvps: int, program: Callable) -> None:
        """Keep ``program`` (of ``hvps`` products) as what a fresh point runs for ``kept``.

        ``kept`` is a structure's family of values computed at once (every stored entry,
        the diagonal). Kept once the engine has settled everything that chooses the
        program; see :meth:`fresh`.
        """
        self._fresh[kept] = (hvps, program)

    def ran(self, program: Callable, seconds: float) -> None:
        """Record how long a kept ``program`` took, dispatch to result (see :meth:`last_run`)."""
        self._last_runs[program] = seconds

    def last_run(self, program: Callable) -> float | None:
        """How long ``program`` took the last time it was recorded (:meth:`ran`), if ever."""
        return self._last_runs.get(program)

    def fresh(self, kept: Any) -> tuple[int, Callable] | None:
        """The HVP count and program kept by :meth:`keep_fresh` for ``kept``, if any."""
        return self._fresh.get(kept)

    def has_fixed(self, family: Any, serial: bool) -> bool:
        """Whether ``once_fixed``'s program for ``family`` and this way is compiled."""
        return serial in self._fixed.get(family, {})

    def _units_impl(self, chunk: int, x, dyn, labels):
        # The jitted linearisation: its trace is shared with `linearize`, so ``fun`` is
        # traced once per point shape however the point's seeds are then evaluated.
        leaves = self._linearize(x, dyn)
        tree = self._trees["state", _signature(x, dyn)]
        n = self.layout.n
        count = -(-n // chunk)
        ids = jnp.arange(count * chunk, dtype=jnp.int32)
        ids = jnp.where(ids < n, ids, -1).reshape(count, chunk)
        flat = jax.lax.map(
            lambda at: self._seeded_impl(True, tree, leaves, x, dyn, labels, at), ids
        )
        return leaves, flat.reshape(count * chunk, self.layout.p, n)[:n]

    def units(self, x, dyn, labels: jax.Array | np.ndarray, chunk: int) -> tuple[tuple, jax.Array]:
        """The per-point state and ``H e_j`` for every unit seed ``j``: ``(n, p, n)``.

        The whole dense Hessian in one compiled call: the linearisation, then ``chunk``
        unit seeds at a time in a loop on the device (``labels`` are ``arange(n)``), so
        beyond the result the device holds one chunk. Seeds propagate NaNs as
        ``jax.hessian`` does (see `seeded`).
        """
        leaves, out = self._units(chunk, x, dyn, labels)
        return (self._trees.get(("state", _signature(x, dyn))), leaves), out

    def _hvp(self, tree: Any, leaves: list, x: jax.Array, dyn: Any, v: jax.Array) -> jax.Array:
        """H v for one direction ``v`` of shape ``(d,)``, as ``(p, n)``, from a kept state."""
        lin = None if tree is None else jax.tree_util.tree_unflatten(tree, leaves)
        return self._product(lin, x, dyn, v)[0]

    def _apply_impl(
        self, keep: bool, tree: Any, leaves: list, x: jax.Array, dyn: Any, v, serial=False
    ):
        """``(k, p, n)`` results of ``v``, gathered over the seed axis (``keep``: ``_mesh``).

        ``serial``: seed after seed (``lax.map``) instead of vmapped; see ``serial``.
        """
        x = place_point(x, self.placement)
        k = v.shape[0]
        v = place_seeds(pad_rows(v, self.placement, 0), x, self.placement)

        def product(u: jax.Array) -> jax.Array:
            return self._hvp(tree, leaves, x, dyn, u)

        if v.shape[0] == 1:
            # One seed (a row, an entry): unbatched, the program compiles ~15 % faster
            # (ARROW2, n = 1e3: 58 against 69 ms), which is most of a first request.
            out = product(v[0])[None]
        else:
            out = jax.lax.map(product, v) if serial else jax.vmap(product)(v)
        return gather_results(out, x, self.placement, keep)[:k]

    def _seeded_impl(self, exact_nan: bool, tree, leaves, x, dyn, labels, ids, serial=False):
        lay = self.layout
        v = (labels[None, :] == ids[:, None]).astype(lay.dtype)
        if exact_nan:
            # The barrier keeps XLA from rewriting ``x * seed`` as a select, which turns
            # ``nan * 0`` into 0, and from folding constant seeds into the derivative.
            v = jax.lax.optimization_barrier(v)
        if lay.batch is not None:
            v = jnp.broadcast_to(v[:, None, :], (v.shape[0], lay.batch, lay.n))
        out = self._apply_impl(False, tree, leaves, x, dyn, v.reshape(v.shape[0], lay.d), serial)
        return out.reshape(-1)

    def apply(
        self, state: tuple, x: jax.Array, dyn: Any, v: jax.Array | np.ndarray, keep: bool = False
    ) -> jax.Array:
        """HVP results ``(k, p, n)`` for explicit directions ``v`` of shape ``(k, d)``.

        Replicated on every device, or with ``keep`` sharded over ``n`` as ``x`` is.
        """
        tree, leaves = state
        return self._apply(keep, tree, leaves, x, dyn, v)

    def seeded(
        self,
        state: tuple,
        x,
        dyn,
        labels: jax.Array | np.ndarray,
        ids: jax.Array | np.ndarray,
        exact_nan: bool,
        serial: bool = False,
    ) -> jax.Array:
        """HVP results for seeds ``labels == ids[t]`` (one per sample), flat: ``(k * p * n,)``.

        Read as ``(k, p, n)``. Flat, the product of one seed of one output is its own array,
        which a request for its whole row returns as it is (see ``_formats.to_device``).
        ``exact_nan`` propagates NaNs through zero seed entries as ``jax.hessian`` does
        (``nan * 0 = nan``). Without it XLA may treat seeds as masks, which is faster and,
        with a sparsity pattern, keeps NaNs out of entries they do not reach.
        """
        tree, leaves = state
        return self._seeded(exact_nan, tree, leaves, x, dyn, labels, ids, serial=serial)


def _signature(x: jax.Array, dyn: Any) -> tuple:
    """The shapes and dtypes a compiled kernel was traced for (dtypes compare as objects)."""
    if not dyn:
        return ((x.shape, x.dtype),)
    leaves = jax.tree_util.tree_leaves((x, dyn))
    return tuple((np.shape(a), getattr(a, "dtype", type(a))) for a in leaves)
