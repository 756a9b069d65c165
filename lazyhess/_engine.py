"""A Hessian at one point: requested entries through planned, chunked, cached HVPs.

The engine's surface, used by the ``Hessian`` façade, the functional API, the display and
the scipy adapters: ``grid`` (an outer-product request: prefix x rows x columns),
``entries`` (any set of entries), ``cost`` (what either would spend, computing nothing),
``pattern_values`` (every stored entry), ``compressed`` (a whole seed family),
``matvec`` (explicit directions), ``computed_columns`` and ``info``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax._src import core as jax_core  # trace_state_clean: is a trace active?

from ._cache import CacheInfo, DirectionCache, format_bytes
from ._csr import segments, sorted_unique
from ._formats import host_zeros, to_device
from ._hvp import Kernels, maps_small_batches
from ._mesh import fetch, home, poll
from ._plan import Plan, plan, readings
from ._progress import bar
from ._structure import DiagonalReading, SeedFamily, Structure
from ._verify import check_pattern, pattern_product


def is_traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def concretely() -> contextlib.AbstractContextManager:
    """Evaluate a concrete point's kernels now, even inside someone else's trace.

    ``jax.ensure_compile_time_eval`` when a trace is active (``jax.jit``, jax.scipy's
    ``cg``), nothing otherwise: entering it costs more than a small HVP's dispatch.
    """
    clean = getattr(jax_core, "trace_state_clean", None)
    if clean is not None and clean():
        return contextlib.nullcontext()
    return jax.ensure_compile_time_eval()


def _memory_bytes() -> int:
    """The machine's physical memory (a bound no single result may exceed)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1


# Largest seed chunk embedded in a traced program as a constant (see Engine._constant).
CONSTANT_SEED_BYTES = 16 * 2**20
# A kept fresh-point program whose last run took less than this many seconds is waited
# for by polling (see Engine._run_values): WOODS's, GENROSE's and ARWHEAD's CSR at
# n = 1e4 (~100 us programs) gained 45-65 us; ARROW2's (~600 us) lost 120-180 us.
POLL_UNDER = 2.5e-4
# The families Engine.entry reads an entry from without planning; any other held
# family sends the entry to the planner.
_ENTRY_FAMILIES = ("unit", "values", "diagonal values", "global")


class Cost(NamedTuple):
    """What a request needs, known before it is made.

    Attributes:
        new_hvps: seed directions the request would compute now.
        cached_hvps: seed directions it would read from the cache.
        result_bytes: bytes of the result.
        chunk_bytes: the largest chunk of HVP results held at once while computing.
    """

    new_hvps: int
    cached_hvps: int
    result_bytes: int
    chunk_bytes: int


@dataclasses.dataclass(frozen=True)
class _Slabs:
    """A request over a dense structure, served by whole rows and columns of unit seeds.

    ``cached_cols`` (into the request's columns) and ``cached_rows`` (into its rows, for
    the columns not cached) are read from the cache; ``new`` are the flat indices of the
    unit seeds to compute, columns of the request (``at`` into its columns) when
    ``by_cols``, else rows.
    """

    cached_cols: np.ndarray
    cached_rows: np.ndarray
    open_cols: np.ndarray
    new: np.ndarray
    at: np.ndarray
    by_cols: bool


def _sorted_distinct(index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(distinct sorted values, inverse)``; the inverse is ``None`` when already so."""
    if index.size < 2 or bool(np.all(index[1:] > index[:-1])):
        return index, None
    values, inverse = np.unique(index, return_inverse=True)
    return values, inverse.reshape(-1)


def _asked_at(lines: np.ndarray, inverse: np.ndarray | None, count: int):
    """``(positions, which)``: every position a request asked each of ``lines`` at.

    ``lines`` index ``count`` distinct sorted lines, ``inverse`` maps each asked position
    to its line (``None``: asked once each, in order). ``which[e]`` is the index into
    ``lines`` of position ``positions[e]``.
    """
    if inverse is None:
        return lines, np.arange(lines.size)
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(inverse, minlength=count), out=indptr[1:])
    at, counts = segments(indptr, lines)
    return np.argsort(inverse, kind="stable")[at], np.repeat(np.arange(lines.size), counts)


def _per_output(decompress: Callable[[np.ndarray], np.ndarray], compressed: np.ndarray):
    """``decompress`` of each output's ``B`` (``compressed[:, q]``), stacked ``(p, nnz)``."""
    if compressed.shape[1] == 1:  # one output: no stack
        return decompress(compressed[:, 0])[None]
    return np.stack([decompress(compressed[:, q]) for q in range(compressed.shape[1])])


def _gather(block: np.ndarray, local: np.ndarray, p: np.ndarray, read: np.ndarray) -> Any:
    """``block[local, p, read]`` by one flat take (a 3-index gather is several times slower)."""
    _, rows, n = block.shape
    return block.reshape(-1).take((local * rows + p) * n + read)


def _rows_of(out: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``out[P]``; ``out`` itself when ``P`` is every row in order (no copy)."""
    if P.size == out.shape[0] and bool(np.all(P == np.arange(P.size))):
        return out
    return out[P]


def _diagonal_read(reading: DiagonalReading, n: int) -> Callable[[jax.Array], jax.Array]:
    """The diagonal, flat ``(p * n,)``, from ``reading``'s products ``B`` (``(k, p, n)``)."""
    slot, read, inside = reading.slot, reading.read, reading.inside

    def diagonal(compressed: jax.Array) -> jax.Array:
        got = compressed.at[slot, :, read].get(mode="promise_in_bounds").T
        if inside is not None:
            out = jnp.zeros((compressed.shape[1], n), compressed.dtype)
            got = out.at[:, inside].set(got, mode="promise_in_bounds")
        return got.reshape(-1)  # flat: a 1-D diagonal is the program's own output

    return diagonal


class Engine:
    """Evaluates entries of the flat Hessian ``H[p, i, j]`` of one point.

    A request is planned (which seed directions cover it, which of them are cached), the
    missing directions are pushed through the HVP kernels in chunks of at most
    ``chunk_size`` (padded up to a few sizes, so few shapes are ever compiled), and each
    chunk is scattered into the result as it arrives. Beyond the result, memory is bounded
    by the cache plus one chunk. With traced inputs nothing is cached and the result is a
    traced, differentiable value. Requests hold the cache's lock: one Hessian can be
    indexed from several threads.
    """

    def __init__(
        self,
        kernels: Kernels,
        x: jax.Array,
        dyn: list,
        traced: bool,
        chunk_size: int,
        cache: DirectionCache,
        structure: Structure,
        progress: bool = False,
    ):
        self.kernels = kernels
        self.layout = kernels.layout
        self.x = x
        self.dyn = dyn
        self.chunk_size = chunk_size
        self.cache = cache
        self.structure = structure
        self.progress = progress
        self.traced = traced  # whether x or dyn holds tracers
        self._home = None if self.traced else home(x, kernels.placement)
        self._point_state: tuple | None = None
        self._first = True  # no HVP computed at this point yet

    # --- HVPs ----------------------------------------------------------------------------

    def _state(self) -> tuple:
        if self.traced:
            return self.kernels.linearize(self.x, self.dyn)
        if self._point_state is None:
            # Evaluated now even when first asked for inside someone else's trace (jax.jit,
            # jax.scipy's cg): the state is a property of the concrete point and is kept.
            with concretely():
                self._point_state = self.kernels.linearize(self.x, self.dyn)
        return self._point_state

    def _bucket(self, k: int) -> int:
        """The padded size of a chunk of ``k`` seeds: a power of two or 3/4 of one.

        Padding seeds are computed like the others: with powers of two alone, 5 seeds cost
        8 HVPs (SPARSINE's 100 rows at n = 1e4: 7 ms of HVPs for 5 seeds). With the
        sizes 1, 2, 3, 4, 6, 8, 12, 16, ... at most a third is padding, for at most twice
        the compiled shapes.
        """
        power = 1 << max(k - 1, 0).bit_length()
        three_quarters = 3 * power // 4
        size = three_quarters if power >= 4 and three_quarters >= k else power
        return min(self.chunk_size, size)

    def _seeded(self, family: SeedFamily, labels: list[int] | np.ndarray, only=False) -> Any:
        """HVP results ``(len(labels), p, n)`` for seeds of one family (one chunk).

        Concrete points give a numpy array, traced ones a traced value. The chunk is padded
        to a bucket (see ``_bucket``) so varied requests share compiled kernels, except when it
        is a whole fixed family (a global coloring, evaluated whole again and again): that
        one shape is compiled exactly. When the chunk is the ``only`` one of a point's first
        request, it is computed with ``Kernels.once`` (one program, no state kept: a point
        asked once, as in an optimisation loop, never writes its linearisation out); the
        point's later requests linearise it once and reuse the state, except one-seed
        chunks where ``once`` measured faster (``Kernels.stateless``). Large chunks run
        vmapped or seed after seed, whichever the kernels measured faster (see
        ``Kernels.serial``; each run is timed for it). Inside a trace,
        colorings' seeds enter the caller's program as constants (see ``_constant``) up to
        ``CONSTANT_SEED_BYTES`` per chunk; larger ones are built from labels on the device.
        """
        lay = self.layout
        k = len(labels)
        if self.traced and not family.unit and self._fits_constant(k):
            seeds = self._constant(family, labels)
            return self.kernels.apply(self._state(), self.x, self.dyn, seeds)
        size = self._chunk_size(family, k)
        ids = np.full(size, -1, dtype=np.int32)
        ids[:k] = labels
        if self.traced:
            out = self.kernels.seeded(
                self._state(),
                self.x,
                self.dyn,
                self._device_labels(family),
                ids,
                exact_nan=family.unit,
            )
            return out.reshape(size, lay.p, lay.n)[:k]
        kernels = self.kernels
        with concretely():
            once = self._first and only
            if not once and size == 1 and not family.fixed:
                ways = functools.partial(self._ways, family, ids)
                once = kernels.stateless(family.unit, ways)
            key, fixed = self._chunk_kind(family, labels, once)
            serial = kernels.serial(key)
            if fixed:  # seeds known in advance: constants of the program, as inside a trace
                seeds = functools.partial(self._constant, family, labels)
                run = functools.partial(kernels.once_fixed, family, self.x, self.dyn, seeds)
            elif once:
                labels_on_device = self.structure.device_labels(family)
                run = functools.partial(
                    kernels.once, self.x, self.dyn, labels_on_device, ids, family.unit
                )
            else:  # the point's linearisation, outside the timing below
                state, labels_on_device = self._state(), self.structure.device_labels(family)
                run = functools.partial(
                    kernels.seeded, state, self.x, self.dyn, labels_on_device, ids, family.unit
                )
            if serial and kernels.unsettled(key):
                serial = kernels.race(key, run)
            start = time.perf_counter()
            block = fetch(run(serial)).reshape(size, lay.p, lay.n)[:k]
            kernels.timed(key, serial, time.perf_counter() - start)
            return block

    def _fits_constant(self, count: int) -> bool:
        """Whether ``count`` seeds may be constants of a program (``CONSTANT_SEED_BYTES``)."""
        lay = self.layout
        return count * lay.d * np.dtype(lay.dtype).itemsize <= CONSTANT_SEED_BYTES

    def _chunk_size(self, family: SeedFamily, k: int) -> int:
        """The compiled size of a chunk of ``k`` seeds: exact for a whole fixed family."""
        whole = family.fixed and k == min(family.size, self.chunk_size)
        return k if whole else self._bucket(k)

    def _chunk_kind(
        self, family: SeedFamily, labels: list[int] | np.ndarray, once: bool
    ) -> tuple[tuple, bool]:
        """A concrete chunk's kind (``Kernels.serial``'s key), and whether its seeds are fixed.

        Fixed: a whole fixed family run ``once``, its seeds constants of the program.
        """
        fixed = (
            once
            and family.fixed
            and self._fits_constant(len(labels))
            and np.array_equal(labels, np.arange(family.size))
        )
        if fixed:
            return self._fixed_key(family), True
        size = self._chunk_size(family, len(labels))
        return ("once" if once else "seeded", family.unit, size), False

    def _ways(self, family: SeedFamily, ids: np.ndarray) -> tuple[Callable, Callable]:
        """A chunk's two ways for ``Kernels.stateless``: ``once``, the kept state's ``seeded``."""
        kernels, labels, state = self.kernels, self.structure.device_labels(family), self._state()
        return (
            lambda: kernels.once(self.x, self.dyn, labels, ids, family.unit),
            lambda: kernels.seeded(state, self.x, self.dyn, labels, ids, family.unit),
        )

    def _device_labels(self, family: SeedFamily) -> jax.Array | np.ndarray:
        """``family.labels`` as the kernels take them (see ``Structure.device_labels``).

        Always concrete (built at compile time when a trace is active), so it may be kept.
        """
        with concretely():
            return self.structure.device_labels(family)

    def _constant(self, family: SeedFamily, labels: list[int] | np.ndarray) -> np.ndarray:
        """The seeds as a host matrix ``(k, d)``: inside a trace, a constant of the program.

        XLA folds a constant seed through the derivative (gathers of the seed, products with
        its zeros), which a seed computed from labels on the device would hide.
        """
        lay = self.layout
        seeds = (family.labels[None, :] == np.asarray(labels)[:, None]).astype(lay.dtype)
        if lay.batch is not None:
            seeds = np.broadcast_to(seeds[:, None, :], (len(labels), lay.batch, lay.n))
        return seeds.reshape(len(labels), lay.d)

    def _computed(
        self, family: SeedFamily, labels: np.ndarray, alone: bool = True
    ) -> Iterator[np.ndarray]:
        """HVP results of ``family``'s seeds ``labels``, chunk by chunk, cached as they come.

        ``alone``: no other family is computed for the same request. Every unit seed of a
        concrete point in order (a dense ``H[:]``) is one compiled call instead, chunked on
        the device (see `_all_units`), when all of its results fit the cache and no progress
        bar shows the chunks.
        """
        lay = self.layout
        n = lay.n
        if (
            family.unit
            and not self.traced
            and not self.progress
            and n > self.chunk_size
            and n * lay.p * n * lay.dtype.itemsize <= self.cache.max_bytes
            and np.array_equal(labels, np.arange(n))
        ):
            yield self._all_units(family)
            return
        starts = range(0, len(labels), self.chunk_size)
        only = alone and len(starts) == 1
        for s in bar(list(starts), "HVP chunks", self.progress and len(starts) > 1):
            chunk = labels[s : s + self.chunk_size]
            block = self._seeded(family, chunk, only)
            self._first = False
            self.cache.record(len(chunk))
            self._keep(family, chunk, block)
            yield block

    def _all_units(self, family: SeedFamily) -> np.ndarray:
        """``H e_j`` for every unit seed ``j``, ``(n, p, n)``, from one compiled call.

        Counted as n HVPs and cached (all of it fits: the caller checks), so beyond the
        result memory stays within ``cache_bytes`` plus the device's chunk.
        """
        with concretely():
            state, out = self.kernels.units(
                self.x, self.dyn, self.structure.device_labels(family), self.chunk_size
            )
            block = fetch(out)
        self._first = False
        if self._point_state is None:
            self._point_state = state
        self.cache.record(block.shape[0])
        self._keep(family, np.arange(block.shape[0]), block)
        return block

    def _keep(self, family: SeedFamily, labels: np.ndarray, block: np.ndarray) -> None:
        """Cache the results ``block`` of ``family``'s seeds ``labels``, as far as they fit.

        On the dense engine every unit seed's result is checked for non-finite values
        first: read from the cache, such a seed is never taken for its row (see
        :meth:`_asymmetric`). A sparse pattern's entries are read from seeds in either
        orientation whatever their values (``docs/indexing.md``), so there the check, a
        pass over memory the program just wrote, is skipped: GENROSE's row at n = 1e5
        spent 47-90 us in it.
        """
        structure = self.structure
        if family.unit and (not structure.known or structure.dense):
            self._mark_nonfinite(labels, block)
        for t, label in enumerate(labels):
            self.cache.put((family, int(label)), block[t])

    # --- planning ------------------------------------------------------------------------

    def _slabs(self, rows: np.ndarray, cols: np.ndarray) -> _Slabs:
        unit = self.structure.unit
        held = self.cache.held(unit)
        if held is None:
            held = np.zeros(max(self.layout.n, 1), dtype=bool)
        cols_held = held[cols]
        open_cols = ~cols_held
        rows_held = held[rows] if open_cols.any() else np.zeros(rows.size, dtype=bool)
        open_rows = np.flatnonzero(~rows_held)
        open_at = np.flatnonzero(open_cols)
        by_cols = open_at.size <= open_rows.size
        if not open_rows.size or not open_at.size:
            at = open_rows[:0]
        else:
            at = open_at if by_cols else open_rows
        return _Slabs(
            cached_cols=np.flatnonzero(cols_held),
            cached_rows=np.flatnonzero(rows_held),
            open_cols=open_cols,
            new=(cols if by_cols else rows)[at],
            at=at,
            by_cols=by_cols,
        )

    def _plan_grid(self, rows: np.ndarray, cols: np.ndarray) -> tuple[Any, Any]:
        """The plan of the grid ``rows x cols`` (distinct, sorted), and its cells.

        With nothing cached, planned once per pattern (``Structure.fresh_plan``).
        """
        structure = self.structure
        if structure.dense:
            return self._slabs(rows, cols), None
        if self.cache.empty():
            return structure.fresh_plan(rows, cols, lambda: self._new_plan(rows, cols))
        return self._new_plan(rows, cols)

    def _new_plan(self, rows: np.ndarray, cols: np.ndarray) -> tuple[Plan, tuple]:
        """``_plan_grid``'s plan, made now from the cache's coverage."""
        i, j, pos = self.structure.cells(rows, cols)
        return plan(rows[i], cols[j], pos, self.structure, self.cache.families()), (i, j)

    def _plan_entries(
        self, rows: np.ndarray, cols: np.ndarray, diagonal: bool
    ) -> tuple[Plan, np.ndarray | None]:
        """The plan of the entries inside the pattern, and where they are (``None``: all)."""
        if self.structure.dense:
            return plan(rows, cols, None, self.structure, self.cache.families()), None
        if diagonal:
            pos = self.structure.diagonal_positions[rows]
        else:
            pos = self.structure.positions(rows, cols)
        inside = np.flatnonzero(pos >= 0)
        families = self.cache.families()
        return plan(
            rows[inside], cols[inside], pos[inside], self.structure, families, diagonal
        ), inside

    def _chunks(self, plan: Plan) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(entries, block, local slot)`` per chunk: cached seeds first, then new ones.

        ``block[local[e]]`` is the ``(p, n)`` HVP result of entry ``entries[e]``'s seed.
        """
        seeds = plan.seeds
        starts = list(range(plan.reused))
        new = seeds[plan.reused :]
        groups: list[tuple[int, int]] = []
        for s, (family, _) in enumerate(new, plan.reused):
            if not groups or family is not seeds[groups[-1][0]][0]:
                groups.append((s, s))
            groups[-1] = (groups[-1][0], s + 1)
        bounds = starts + [start for start, _ in groups] + [len(seeds)]
        if len(bounds) == 2:  # one group, every entry in it: no sort (3 ms for 1e5 entries)
            order, edges = np.arange(plan.slot.size), [0, plan.slot.size]
        else:
            order = np.argsort(plan.slot, kind="stable")
            edges = np.searchsorted(plan.slot[order], bounds)
        for g, s in enumerate(starts):
            sel = order[edges[g] : edges[g + 1]]
            yield sel, self.cache.take(seeds[s])[None], plan.slot[sel] - s
        for g, (start, stop) in enumerate(groups, len(starts)):
            sel = order[edges[g] : edges[g + 1]]
            family = seeds[start][0]
            labels = np.array([label for _, label in seeds[start:stop]], dtype=np.int64)
            local = plan.slot[sel] - start
            offset = 0
            for block in self._computed(family, labels, alone=len(groups) == 1):
                k = block.shape[0]
                mine = (local >= offset) & (local < offset + k)
                yield sel[mine], block, local[mine] - offset
                offset += k

    # --- the surface ---------------------------------------------------------------------

    def grid(self, P: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Any:
        """``H[P][:, rows][:, :, cols]``: shape ``(len(P), len(rows), len(cols))``.

        Computed over the distinct sorted rows and columns. A sparse grid asked in another
        order (or with repeats) is filled in that order directly, cell by cell: reordered
        after, its mostly never-written pages were all read (100 unsorted rows of GENROSE,
        n = 1e4: 4.4 ms against 0.9 ms sorted; 92 ms at n = 1e5).
        """
        if self.traced:
            p, r, c = (a.reshape(-1) for a in np.meshgrid(P, rows, cols, indexing="ij"))
            return self.entries(p, r, c).reshape(P.size, rows.size, cols.size)
        self._check_size(P.size * rows.size * cols.size)
        urows, inv_i = _sorted_distinct(rows)
        ucols, inv_j = _sorted_distinct(cols)
        whole_p = P.size == self.layout.p and bool(np.all(P == np.arange(P.size)))
        dtype = self.layout.dtype
        with self.cache.lock:
            if (inv_i is not None or inv_j is not None) and self._by_cells(urows, ucols):
                out = host_zeros((P.size, rows.size, cols.size), dtype)
                self._fill_grid(out, P, urows, ucols, whole_p, (inv_i, inv_j))
                return out
            out = host_zeros((P.size, urows.size, ucols.size), dtype)
            if self._every_entry(urows, ucols):
                colored = self.structure.colored
                out[:, colored.rows, colored.cols] = self.pattern_values()[P]
            elif not self._cached_line(out, P, urows, ucols, whole_p):
                self._fill_grid(out, P, urows, ucols, whole_p)
            if self._asymmetric(urows):
                self._fill_slabs(out, self._column_slabs(ucols), P, urows, ucols, whole_p)
            if self.structure.unverified and whole_p and urows.size == ucols.size == self.layout.n:
                self._check_pattern(lambda v: (out @ v, np.abs(out) @ np.abs(v)))
        if inv_i is not None:
            out = out[:, inv_i]
        if inv_j is not None:
            out = out[:, :, inv_j]
        return out

    def _by_cells(self, urows: np.ndarray, ucols: np.ndarray) -> bool:
        """Whether a grid is filled cell by cell from its plan: a sparse one short of H.

        Every row and column (dense-sized, where the pattern may be checked or every entry
        read from the stored values) and dense structures fill whole lines instead.
        """
        n = self.layout.n
        return not self.structure.dense and not (urows.size == n and ucols.size == n)

    def _every_entry(self, urows: np.ndarray, ucols: np.ndarray) -> bool:
        """Whether a grid asks for every entry of a sparse pattern, with no unit seed cached.

        It is then served like ``to_sparse`` (``pattern_values``: whole colorings, no
        planning); cached unit seeds are left to the planner, which reuses them.
        """
        structure = self.structure
        if urows.size != structure.n or ucols.size != structure.n or structure.dense:
            return False
        held = self.cache.held(structure.unit)
        return held is None or not held.any()

    def _check_size(self, count: int) -> None:
        """Refuse a result larger than this machine's memory, before building anything."""
        size = count * self.layout.dtype.itemsize
        if size > _memory_bytes():
            raise ValueError(
                f"this request returns {count:,} entries ({format_bytes(size)} of "
                f"{self.layout.dtype}), more than this machine's memory "
                f"({format_bytes(_memory_bytes())}). Ask for rows (H[i]), columns or a "
                "block (H[a:b, c:d]); H.to_sparse() for a sparse Hessian; H.cost(key) "
                "prices a request without computing it."
            )

    def _fill_grid(self, out, P, urows, ucols, whole_p, order=None) -> None:
        """Fill the grid ``urows x ucols`` from its plan.

        With ``order`` (``(inv_i, inv_j)`` of ``grid``, either ``None``), ``out`` is the
        grid as asked: each cell goes to every position its row and column were asked at.
        """
        request, cells = self._plan_grid(urows, ucols)
        if cells is None:
            self._fill_slabs(out, request, P, urows, ucols, whole_p)
            return
        i, j = cells
        values = None if order is None else np.empty((P.size, i.size), out.dtype)
        for sel, block, local in self._chunks(request):
            part = block[:, P] if not whole_p else block
            got = part[local, :, request.read[sel]].T
            if values is None:
                out[:, i[sel], j[sel]] = got
            else:
                values[:, sel] = got
        if values is not None and order is not None:
            rows, cell = _asked_at(i, order[0], urows.size)
            cols, twin = _asked_at(j[cell], order[1], ucols.size)
            out[:, rows[twin], cols] = values[:, cell[twin]]

    def _cached_line(self, out, P, urows, ucols, whole_p) -> bool:
        """Fill a one-row (or one-column) grid from its unit seed, without planning.

        The unit seed of row ``i`` holds the whole column ``i``, which is row ``i`` by
        symmetry; see :meth:`_unit_seed`. Otherwise the planner decides.
        """
        for line, other, axis in ((urows, ucols, 1), (ucols, urows, 2)):
            if line.size != 1:
                continue
            value = self._unit_seed(int(line[0]), other.size)
            if value is None:
                continue
            part = value if whole_p else value[P]
            if axis == 1:
                out[:, 0, :] = part[:, other]
            else:
                out[:, :, 0] = part[:, other]
            return True
        return False

    def _unit_seed(self, line: int, count: int) -> np.ndarray | None:
        """The unit seed of row (or column) ``line``, when it serves ``count`` of its entries.

        Read from the cache when held (a notebook's second look at a row), or computed when
        one unit seed is the fewest and no other held seed may serve the line (no plan:
        a fresh point's first row, or a row after entries and other rows, whose unit seeds
        hold entries of this line but never its diagonal, so one HVP is still needed and
        this seed is the planner's choice; GENROSE, n = 1e4: 449 -> 176 us). With a
        coloring's or the stored values' seeds held, ``None``: the planner decides.
        """
        held = self._line_held(line, count)
        if held is None:
            return None
        unit = self.structure.unit
        if held:
            return self.cache.take((unit, line))
        return next(self._computed(unit, np.array([line])))[0]

    def _line_held(self, line: int, count: int) -> bool | None:
        """How :meth:`_unit_seed` serves ``line``: held, computed now (``False``), or not."""
        held = self.cache.held(self.structure.unit)
        if held is not None and held[line]:
            return True
        # Before detection only without a batch: detection is where batches are checked.
        known = self.structure.known or self.layout.batch is None
        if not known or not self._needs_its_seed(line, count):
            return None
        if self.cache.empty():
            return False
        # Held unit seeds hold entries of a whole line but never its diagonal entry: when
        # that may be nonzero, one HVP is still needed, and the line's own seed is it.
        structure = self.structure
        whole = count == structure.n
        if whole and (structure.dense or structure.position(line, line) >= 0):
            if all(family.unit for family, _ in self.cache.families(limit=None)):
                return False
        return None

    def _needs_its_seed(self, line: int, count: int) -> bool:
        """Whether ``count`` entries of row (or column) ``line`` need its unit seed.

        With a pattern, only a whole line with a possibly nonzero entry: for part of a
        line, the planner may find a cheaper or more reusable seed. Before detection, a
        whole line: a first row does not wait for the pattern (ARROW2, n = 1e3: 5 of its
        83 ms), which the next requests detect.
        """
        structure = self.structure
        if not structure.known:
            return count == structure.n
        if structure.dense:
            return count > 0
        return count == structure.n and structure.row_size(line) > 0

    def _fill_slabs(self, out, slabs: _Slabs, P, urows, ucols, whole_p) -> None:
        unit = self.structure.unit

        def part(block):
            return block if whole_p else block[:, P]

        labels = sorted_unique(
            np.concatenate([ucols[slabs.cached_cols], urows[slabs.cached_rows]])
        )
        held = {int(label): self.cache.take((unit, int(label))) for label in labels}
        for t in slabs.cached_cols:
            out[:, :, t] = part(held[int(ucols[t])][None])[0][:, urows]
        if slabs.cached_rows.size:
            open_j = ucols[slabs.open_cols]
            for t in slabs.cached_rows:
                value = part(held[int(urows[t])][None])[0]
                out[:, t, slabs.open_cols] = value[:, open_j]
        n = self.layout.n
        if slabs.new.size == n and urows.size == n and ucols.size == n:
            # The whole matrix from every unit seed (a dense H[:]): copies of whole slabs.
            offset = 0
            for block in self._computed(unit, slabs.new):
                k = block.shape[0]
                out[:, :, offset : offset + k] = np.moveaxis(part(block), 0, -1)
                offset += k
            return
        offset = 0
        for block in self._computed(unit, slabs.new):
            at = slabs.at[offset : offset + block.shape[0]]
            offset += block.shape[0]
            if slabs.by_cols:
                out[:, :, at] = np.moveaxis(part(block)[:, :, urows], 0, -1)
            else:
                out[:, at, :] = np.moveaxis(part(block)[:, :, ucols], 0, 1)

    def entry(self, p: int, row: int, col: int) -> Any:
        """``H[p, row, col]`` without planning; ``None`` when it must be planned.

        Read from a cached seed (its column's or row's unit seed, the stored values, its
        global color), zero outside the pattern, or, when no other cached family could
        serve it, read from its column's unit seed computed now: the planner's choice for
        one entry (one HVP, the column read directly, so NaNs sit where ``jax.hessian``
        puts them). Plain Python on the cache and the pattern: a notebook's ``H[i, j]``
        costs its HVP, or about 10 us once its row, column or color is cached (planning
        one entry took ~80 us).
        """
        if self.traced:
            return None
        structure, cache = self.structure, self.cache
        with cache.lock:
            unit = structure.unit
            held = cache.held(unit)
            if held is not None and held[col]:
                return cache.take((unit, col))[p, row]
            if held is not None and held[row] and self._symmetric(row):
                return cache.take((unit, row))[p, col]
            if not structure.known:
                return None
            if not structure.dense:
                at = structure.position(row, col)
                if at < 0:
                    return self.layout.dtype.type(0)
                if cache.held(structure.values_family) is not None:
                    return cache.take((structure.values_family, 0))[p, at]
                if row == col and cache.held(structure.diagonal_values) is not None:
                    return cache.take((structure.diagonal_values, 0))[p, row]
                if structure.colored_known:
                    family = structure.global_family
                    held = cache.held(family)
                    color = structure.colored.recover_color[at]
                    if held is not None and held[color]:
                        index = structure.colored.recover_index[at]
                        return cache.take((family, int(color)))[p, index]
            if any(f.key not in _ENTRY_FAMILIES for f, _ in cache.families(limit=None)):
                return None  # a partial, diagonal or whole coloring's seed may hold it
            return next(self._computed(unit, np.array([col])))[0][p, row]

    def answer(self, values: np.ndarray) -> jax.Array:
        """A host result as a jax array, on the point's devices (replicated over its mesh)."""
        if self._home is None:
            return to_device(values)
        return jax.device_put(values, self._home)

    def row(self, p: int, row: int, start: int, stop: int) -> np.ndarray | None:
        """``H[p, row, start:stop]`` from its unit seed, without index arrays or planning.

        A view of the seed (see :meth:`_unit_seed`); ``None`` when the planner must decide,
        also where the seed's product is not finite (rows are read from it by symmetry).
        """
        if self.traced:
            return None
        with self.cache.lock:
            value = self._unit_seed(row, stop - start)
            if value is None:
                return None
            if not self._symmetric(row):
                return None
            return value[p, start:stop]

    def entries(
        self, p: np.ndarray, rows: np.ndarray, cols: np.ndarray, diagonal: bool = False
    ) -> Any:
        """Values ``H[p[e], rows[e], cols[e]]`` (1-D index arrays over flat coordinates).

        ``diagonal`` says every entry is on the diagonal, so a distance-1 coloring may serve.
        """
        if self.traced:
            return self._traced_entries(p, rows, cols, diagonal)
        self._check_size(p.size)
        out = host_zeros(p.shape, self.layout.dtype)
        with self.cache.lock:
            request, inside = self._plan_entries(rows, cols, diagonal)
            where = np.arange(p.size) if inside is None else inside
            for sel, block, local in self._chunks(request):
                at = where[sel]
                out[at] = _gather(block, local, p[at], request.read[sel])
            if self._asymmetric(rows):
                request = self._column_plan(rows, cols)
                for sel, block, local in self._chunks(request):
                    out[sel] = block[local, p[sel], request.read[sel]]
        return out

    def diagonal(self, P: np.ndarray, start: int, stop: int) -> Any:
        """``H[p, k, k]`` for ``p`` in ``P`` and ``start <= k < stop``: ``(len(P), stop - start)``.

        Read directly from one family's seeds when nothing is cached at a sparse point (see
        :meth:`_direct_diagonal`), or from the cached values of the whole pattern; planned
        as entries otherwise.
        """
        lines = np.arange(start, stop)
        if not self.traced:
            with self.cache.lock:
                out = self._direct_diagonal(P, lines)
            if out is not None:
                return out
        p = np.repeat(P, lines.size)
        k = np.tile(lines, P.size)
        return self.entries(p, k, k, diagonal=True).reshape(P.size, lines.size)

    def _direct_diagonal(self, P: np.ndarray, lines: np.ndarray) -> np.ndarray | None:
        """The diagonal entries of ``lines`` without planning, or ``None``: the planner decides.

        Held pattern values (after ``to_sparse``) serve with no HVP. With nothing cached,
        the structure's reading of these lines (``Structure.diagonal_reading``, the
        planner's choice made once) gives each entry's seed and position: one gather per
        chunk. GENROSE's ``H.at(x).diagonal()`` at n = 1e5 spent 1.9 of its 4.4 ms planning
        1e5 entries one by one, and as much again building and offsetting their indices.
        With other results cached, the same reading serves, its held seeds read and the
        others computed, unless held seeds of other families recover every entry of one
        of its missing seeds (the planner then weighs what is cached). Planned entry by
        entry, a diagonal after a row took 1.2 ms instead of 0.4 (GENROSE, n = 1e4; 9.7
        against 1.4 ms at 1e5), and RANDSP2's at another point of its constant Hessian
        0.7 ms.
        """
        structure = self.structure
        if not lines.size or not structure.known or structure.dense:
            return None
        self._check_size(P.size * lines.size)
        values = self.cache.held(structure.values_family)
        if values is not None:
            pos = structure.diagonal_positions[lines]
            inside = np.flatnonzero(pos >= 0)
            out = host_zeros((P.size, lines.size), self.layout.dtype)
            out[:, inside] = self.cache.take((structure.values_family, 0))[P][:, pos[inside]]
            return out
        whole = lines.size == structure.n
        if self.cache.held(structure.diagonal_values) is not None:
            out = self.cache.take((structure.diagonal_values, 0))
            return _rows_of(out, P) if whole else _rows_of(out, P)[:, lines]
        reading = structure.diagonal_reading(int(lines[0]), int(lines[-1]) + 1)
        if reading is None:
            return None
        if self.cache.empty():
            out = self._fresh_diagonal(reading) if whole else None
            if out is not None:
                return _rows_of(out, P)
            blocks = self._computed(reading.family, reading.needed)
        else:
            missing = self._missing_reading(reading, lines)
            if missing is None:
                return None
            blocks = iter([self._gathered(reading.family, missing, reading.needed)])
        out = host_zeros((P.size, lines.size), self.layout.dtype)
        inside = slice(None) if reading.inside is None else reading.inside
        slot, read = reading.slot, reading.read
        offset = 0
        for block in blocks:
            count = block.shape[0]
            if count == reading.needed.size:  # one chunk: every entry
                out[:, inside] = _gather(block, slot, P[:, None], read)
            else:
                mine = np.flatnonzero((slot >= offset) & (slot < offset + count))
                at = mine if reading.inside is None else reading.inside[mine]
                out[:, at] = _gather(block, slot[mine] - offset, P[:, None], read[mine])
            offset += count
        return out

    def _fresh_diagonal(self, reading: DiagonalReading) -> np.ndarray | None:
        """The whole diagonal ``(p, n)`` from one program at a fresh point, or ``None``.

        The seeds of ``reading`` are constants of the program, which gathers the diagonal
        from their products (``_read_at_once``) and returns it as the answer: nothing is
        copied, and ``B`` is never fetched (GENROSE, n = 1e4: 352 -> 97 us in a
        prototype). Once the chunk's kind is settled (see :meth:`_diagonal_at_once`);
        the next fresh points run the kept program directly. The diagonal is cached, not
        ``B``: a second look, and the diagonal's entries, cost nothing; other entries the
        seeds held cost HVPs of their own.
        """
        kept = self.structure.diagonal_values
        fresh = self._fresh(kept)
        if fresh is not None:
            flat = self._run_values(*fresh, lambda: None)
        else:
            serial = self._diagonal_at_once(reading)
            if serial is None:
                return None
            read = _diagonal_read(reading, self.layout.n)
            readings = [(reading.family, reading.needed, serial, read)]
            flat = self._read_at_once(kept, readings, lambda: None)
        out = flat.reshape(self.layout.p, self.layout.n)
        self.cache.put((kept, 0), out)
        return out

    def _diagonal_at_once(self, reading: DiagonalReading) -> bool | None:
        """How ``reading``'s seeds run in one program now (see :meth:`_one_program`).

        ``True`` seed after seed, ``False`` vmapped, ``None`` not in one program.
        """
        key = self._chunk_kind(reading.family, reading.needed, once=True)[0]
        if self._one_program(reading.needed.size, key):
            return self.kernels.serial(key)
        return None

    def _missing_reading(self, reading: DiagonalReading, lines: np.ndarray) -> np.ndarray | None:
        """The seeds of ``reading`` not cached, or ``None`` if the cache may serve one.

        ``None`` when held seeds of other families recover every entry that one missing
        seed would, read the way the planner reads them (``readings``), from the families
        it consults (``families()``).
        """
        family, needed = reading.family, reading.needed
        held = self.cache.held(family)
        lacking = np.ones(needed.size, dtype=bool) if held is None else ~held[needed]
        missing = needed[lacking]
        if not missing.size:
            return missing
        entries = lines if reading.inside is None else lines[reading.inside]
        wanted = lacking[reading.slot]
        ask, slots = entries[wanted], reading.slot[wanted]
        pos = self.structure.diagonal_positions[ask]
        covered = np.zeros(ask.size, dtype=bool)
        for other, mask in self.cache.families():
            if other is family:
                continue
            for valid, label, _ in readings(other, self.structure, ask, ask, pos):
                ok = label >= 0
                if valid is not None:
                    ok &= valid
                ok[ok] = mask[label[ok]]
                covered |= ok
        uncovered = np.zeros(needed.size, dtype=bool)
        uncovered[slots[~covered]] = True
        return missing if uncovered[lacking].all() else None

    # --- non-finite points ----------------------------------------------------------------

    def _asymmetric(self, lines: np.ndarray) -> bool:
        """Whether a unit seed of ``lines`` gave a non-finite value (dense engine only).

        A row read from its unit seed is, by symmetry, that seed's column. Where the
        product has a non-finite value the symmetry fails (``nan * 0`` reaches the whole
        row of a NaN), and ``jax.hessian`` (forward over reverse) assembles columns: such
        a request is read again from its columns' own seeds. Finite products are trusted.
        """
        bad = self.cache.nonfinite
        return bool(bad) and self.structure.dense and not bad.isdisjoint(lines.tolist())

    def _symmetric(self, line: int) -> bool:
        """Whether line ``line``'s unit seed may be read as its row (by symmetry).

        Not where its product has a non-finite value: see :meth:`_asymmetric`.
        """
        return line not in self.cache.nonfinite

    def _mark_nonfinite(self, labels: np.ndarray, block: np.ndarray) -> None:
        """Remember which unit seeds gave a non-finite value (one pass over the block)."""
        finite = np.isfinite(block.reshape(len(labels), -1)).all(axis=1)
        if not finite.all():
            self.cache.nonfinite.update(labels[~finite].tolist())

    def _column_slabs(self, cols: np.ndarray) -> _Slabs:
        """A grid over ``cols`` read from the columns' own unit seeds (cached ones first).

        See :meth:`_asymmetric`.
        """
        held = self.cache.held(self.structure.unit)
        cached = np.zeros(cols.size, dtype=bool) if held is None else held[cols]
        none = np.zeros(0, dtype=np.int64)
        return _Slabs(
            np.flatnonzero(cached), none, ~cached, cols[~cached], np.flatnonzero(~cached), True
        )

    def _column_plan(self, rows: np.ndarray, cols: np.ndarray) -> Plan:
        """Every entry ``(rows[e], cols[e])`` read from its column's unit seed (cached first)."""
        unit = self.structure.unit
        labels, slot = np.unique(cols, return_inverse=True)
        held = self.cache.held(unit)
        cached = np.zeros(labels.size, dtype=bool) if held is None else held[labels]
        order = np.argsort(~cached, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        seeds = [(unit, int(label)) for label in labels[order]]
        return Plan(seeds, int(cached.sum()), rank[slot.reshape(-1)], rows)

    def _traced_entries(self, p, rows, cols, diagonal) -> Any:
        request, inside = self._plan_entries(rows, cols, diagonal)
        self.cache.record(len(request.new))
        parts = []
        seeds = request.seeds
        s = 0
        while s < len(seeds):
            family = seeds[s][0]
            stop = s
            while stop < len(seeds) and seeds[stop][0] is family and stop - s < self.chunk_size:
                stop += 1
            parts.append(self._seeded(family, [label for _, label in seeds[s:stop]]))
            s = stop
        dtype = self.layout.dtype
        if not parts:
            return jnp.zeros(p.shape, dtype)
        zero = jnp.zeros((1,) + parts[0].shape[1:], dtype)
        stacked = jnp.concatenate(parts + [zero])
        slot = np.full(p.shape, -1, dtype=np.int64)
        read = np.zeros(p.shape, dtype=np.int64)
        where = np.arange(p.size) if inside is None else inside
        slot[where], read[where] = request.slot, request.read
        return stacked[slot, p, read]

    def cost(
        self,
        P: np.ndarray | None,
        rows: np.ndarray,
        cols: np.ndarray,
        diagonal: bool = False,
    ) -> Cost:
        """What ``grid(P, rows, cols)`` (or, with ``P=None``, ``entries``) would spend.

        Plans the request (detecting the pattern and coloring it if that is needed to
        plan) and computes no HVP.
        """
        with self.cache.lock:
            if P is None:
                request, _ = self._plan_entries(rows, cols, diagonal)
                size = rows.size
            else:
                size = P.size * rows.size * cols.size
                (rows, inv_i), (cols, inv_j) = _sorted_distinct(rows), _sorted_distinct(cols)
                by_cells = (inv_i is not None or inv_j is not None) and self._by_cells(rows, cols)
                for line, other in ((rows, cols), (cols, rows)):
                    if by_cells or line.size != 1:
                        continue  # grid plans it
                    held = self._line_held(int(line[0]), other.size)
                    if held is not None:  # as _cached_line serves it
                        return self._priced(size, 0, 1) if held else self._priced(size, 1, 0)
                if self._every_entry(rows, cols):
                    kept = self.structure.values_family
                    if self.cache.held(kept) is not None:
                        return self._priced(size, 0, 1)
                    fresh = self._fresh(kept)
                    if fresh is not None:  # the program kept for fresh points
                        return self._priced(size, fresh[0], 0)
                    family, missing = self._whole()
                    return self._priced(size, missing.size, family.size - missing.size)
                request, _ = self._plan_grid(rows, cols)
        if isinstance(request, _Slabs):
            new = request.new.size
            cached = sorted_unique(
                np.concatenate([cols[request.cached_cols], rows[request.cached_rows]])
            ).size
        else:
            new, cached = len(request.new), request.reused
        return self._priced(size, new, cached)

    def _priced(self, size: int, new: int, cached: int) -> Cost:
        """The ``Cost`` of a result of ``size`` entries needing ``new`` and ``cached`` HVPs."""
        lay = self.layout
        per_seed = lay.p * lay.n * lay.dtype.itemsize
        return Cost(
            new_hvps=new,
            cached_hvps=cached,
            result_bytes=size * lay.dtype.itemsize,
            chunk_bytes=min(new, self.chunk_size) * per_seed,
        )

    def stored(self) -> tuple[sp.csr_array, Any]:
        """The flat pattern and its entries' values ``(p, nnz)``; every entry when dense."""
        if not self.structure.dense:
            return self.structure.stored_csr, self.pattern_values()
        lay = self.layout
        everything = np.arange(lay.n)
        values = self.grid(np.arange(lay.p), everything, everything)
        return sp.csr_array(np.ones((lay.n, lay.n), dtype=bool)), values.reshape(lay.p, -1)

    def pattern_values(self, output: Callable[[np.ndarray], Any] | None = None) -> Any:
        """Every stored entry of the sparse pattern, shaped ``(p, nnz)`` in row-major order.

        One HVP per color, with no planning: the global coloring says where each entry is
        read, or, when the structure's whole-Hessian coloring is acyclic (fewer colors),
        entries are solved from all its colors by substitution. Of the two, the one with
        fewer colors still to compute is used, so colors already cached are reused. At a
        fresh point whose whole family was compiled before (an optimiser's next iterate),
        one program computes the HVPs and reads the entries (see :meth:`_fixed_values`).
        The values are cached (``Structure.values_family``): every later request at this
        point reads them. Costs O(nnz) beyond the HVPs.

        With ``output`` (concrete points), the values go into a fresh array ``buffer`` and
        ``output(buffer)`` is returned, called while the HVPs run: a caller's output built
        around ``buffer`` (a scipy array, see ``scipy_shell``) is built meanwhile, not
        after (GENROSE's CSR at n = 1e4: 250 -> 205 us).
        """
        structure = self.structure
        if self.traced:
            family = structure.whole_family
            compressed = self.compressed(family)
            colored = self._colored(family)
            return jax.vmap(colored.decompress_data, in_axes=1)(compressed)
        key = (structure.values_family, 0)
        lay = self.layout
        buffer = np.empty((lay.p, structure.stored_csr.nnz), lay.dtype)
        made = None

        def meanwhile() -> None:
            nonlocal made
            if output is not None:
                made = output(buffer)

        with self.cache.lock:
            if self.cache.held(structure.values_family) is not None:
                meanwhile()
                out = self.cache.take(key)
            else:
                out = self._computed_values(meanwhile)
                if structure.unverified:
                    self._check_pattern(pattern_product(structure.stored_csr, out))
                self.cache.put(key, out)
        np.copyto(buffer, out)
        return buffer if output is None else made

    def _computed_values(self, meanwhile: Callable[[], None]) -> np.ndarray:
        """``pattern_values``'s values computed now, ``meanwhile()`` run while the HVPs are."""
        fresh = self._fresh(self.structure.values_family)
        if fresh is not None:
            return self._run_values(*fresh, meanwhile)
        family, missing = self._whole()
        colored = self._colored(family)
        if self._at_once(family, missing):
            return self._fixed_values(family, colored, meanwhile)
        meanwhile()
        return _per_output(colored.decompress_data, self._gathered(family, missing))

    def _colored(self, family: SeedFamily) -> Any:
        """The coloring behind ``family``, the global or the whole-Hessian one."""
        structure = self.structure
        return structure.colored if family is structure.global_family else structure.whole_colored

    def _at_once(self, family: SeedFamily, missing: np.ndarray) -> bool:
        """Whether the whole ``family`` and its recovery run as one program now.

        See :meth:`_one_program`; also once an earlier point compiled the family's HVP
        program in this way (RANDSP8's 45 seeds: 18 ms one way, 43 ms the other): the
        first points pay one compilation as before, the next compiles and races the
        combined program once.
        """
        key = self._fixed_key(family)
        return (
            missing.size == family.size
            and self._one_program(family.size, key)
            and self.kernels.has_fixed(family, self.kernels.serial(key))
        )

    def _one_program(self, count: int, key: tuple) -> bool:
        """Whether ``count`` seeds of chunk kind ``key`` may run in one program now.

        At a fresh point (nothing computed), in one chunk of constant seeds, once earlier
        points have run the kind enough to settle whether its seeds run vmapped or seed
        after seed (``Kernels.decided``). On one device, and with a pattern known to hold.
        """
        kernels = self.kernels
        return (
            self._first
            and 0 < count <= self.chunk_size
            and self._fits_constant(count)
            and kernels.placement.devices == 1
            and not self.structure.unverified
            and kernels.decided(key)
        )

    def _fixed_key(self, family: SeedFamily) -> tuple:
        """The chunk kind of a whole fixed family's program (see ``_seeded``)."""
        return ("fixed", family.unit, family.size)

    def _fixed_values(
        self, family: SeedFamily, colored: Any, meanwhile: Callable[[], None]
    ) -> np.ndarray:
        """``(p, nnz)`` values from one program: the HVPs and their recovery together.

        Measured at fresh points (n = 1e4): GENROSE's CSR output 362 -> 265 us, WOODS's
        325 -> 196 us, BDQRTIC's 1.16 -> 0.96 ms: one dispatch, no ``B`` fetched, no host
        decompression (on a 2-core machine, host work right after a program runs ~2x
        slower). The other whole-Hessian coloring (``Structure.whole_candidates``: the
        direct one or an acyclic one, of which ``family`` is the model's choice) is raced
        too when it fits one program, as ``sparse_hessian`` races them: the model knows
        the pattern only (WOODS at n = 1e4: the model's star program took 137 / 149 us,
        best / median, the acyclic one now kept 99 / 113; GENROSE 109 / 135 against
        92 / 111). See :meth:`_read_at_once`.
        """
        options = [(family, colored)]
        options += [
            (other, coloring)
            for other, coloring in self.structure.whole_candidates
            if other is not family
            and other.size <= self.chunk_size
            and self._fits_constant(other.size)
        ]
        readings = []
        for option, coloring in options:

            def values(compressed: jax.Array, coloring: Any = coloring) -> jax.Array:
                return jax.vmap(coloring.decompress_data, in_axes=1)(compressed)

            serial = self.kernels.serial(self._fixed_key(option))
            readings.append((option, np.arange(option.size), serial, values))
        return self._read_at_once(self.structure.values_family, readings, meanwhile)

    def _read_at_once(
        self,
        kept: SeedFamily,
        readings: list[tuple[SeedFamily, np.ndarray, bool, Callable[[jax.Array], jax.Array]]],
        meanwhile: Callable[[], None],
    ) -> np.ndarray:
        """``kept``'s values in one program: a ``(family, labels, serial, read)`` reading's.

        Each reading is the products of ``family``'s seeds ``labels``, read by ``read``;
        the seeds are constants of the program. It either writes ``B`` out before reading
        it or lets XLA fuse the two (see ``Kernels.read_program``); where
        ``maps_small_batches``, seeds that ``serial`` would vmap may also run one after
        another. Every reading's ways are raced once, and the fastest program is kept for
        the next fresh points as what computes ``kept`` (see :meth:`_fresh`); this point
        spends the first reading's HVP count, which ``cost()`` priced. ``meanwhile()``
        runs while it does.
        """
        kernels = self.kernels
        # (reading, its program): the first reading's ways come first.
        candidates: list[tuple[int, Callable[[], Callable[[Any, Any], jax.Array]]]] = []
        for number, (family, labels, serial, read) in enumerate(readings):
            seeds = functools.partial(self._constant, family, labels)
            ways = [(serial, False), (serial, True)]
            if not serial and labels.size >= 2 and maps_small_batches():
                ways.append((True, False))
            candidates += [
                (
                    number,
                    functools.partial(
                        kernels.read_program, family, (kept.key, *way), seeds, read, *way
                    ),
                )
                for way in ways
            ]

        def runs() -> list[Callable[[], jax.Array]]:
            return [functools.partial(program(), self.x, self.dyn) for _, program in candidates]

        key = (kept.key, *((labels.size, serial) for _, labels, serial, _ in readings))
        with concretely():
            index = kernels.chosen(key, runs)
        number, program = candidates[index]
        kernels.keep_fresh(kept, readings[number][1].size, program())
        if number:
            # Another reading won: it serves from the next point on. This point spends
            # the HVPs that ``cost()`` priced before the race, with the first reading.
            number, program = candidates[0]
        return self._run_values(readings[number][1].size, program(), meanwhile)

    def _fresh(self, kept: SeedFamily) -> tuple[int, Callable] | None:
        """At a fresh point, the program that computes ``kept`` at once, and its HVPs.

        Kept by the first fresh point that ran it (see :meth:`_read_at_once`): what
        chose it does not change from point to point, so the next points run it without
        asking again (timeline of ``H0.at(x).to_sparse("csr")``, WOODS n = 1e4: 23 us of
        choosing it, of 238).
        """
        if not (self._first and self.cache.empty()):
            return None
        return self.kernels.fresh(kept)

    def _run_values(
        self, hvps: int, program: Callable, meanwhile: Callable[[], None]
    ) -> np.ndarray:
        """Run a ``program`` of ``hvps`` products here; ``meanwhile()`` runs while it does.

        A program that took under ``POLL_UNDER`` seconds last time is waited for by
        polling (``_mesh.poll``, up to three times that long) before its result is read:
        blocking costs a thread wake-up of tens of microseconds on CPU.
        """
        kernels = self.kernels
        with concretely():
            start = time.perf_counter()
            pending = program(self.x, self.dyn)
            meanwhile()
            last = kernels.last_run(program)
            if last is not None and last < POLL_UNDER:
                poll(pending, 3 * last)
            out = fetch(pending)
            kernels.ran(program, time.perf_counter() - start)
        self._first = False
        self.cache.record(hvps)
        return out

    def _whole(self) -> tuple[SeedFamily, np.ndarray]:
        """The family that serves every stored entry, and its labels not cached.

        The global coloring unless the whole-Hessian coloring leaves fewer HVPs to compute.
        """
        direct = self.structure.global_family
        missing = self._missing(direct)
        if missing.size:
            whole = self.structure.whole_family
            left = self._missing(whole)
            if left.size < missing.size:
                return whole, left
        return direct, missing

    def _missing(self, family: SeedFamily) -> np.ndarray:
        """The labels of ``family`` whose HVPs are not cached."""
        held = self.cache.held(family)
        if held is None:
            return np.arange(family.size)
        return np.flatnonzero(~held[: family.size])

    def _gathered(
        self, family: SeedFamily, missing: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """``B``, shaped ``(len(labels), p, n)``: ``family``'s seeds ``labels``.

        ``labels`` are sorted (every seed by default); ``missing``, those not cached, are
        computed now. Cached seeds are read first, before computing the others can evict them.
        """
        if labels is None:
            labels = np.arange(family.size)
        if 0 < missing.size == labels.size <= self.chunk_size:
            return next(self._computed(family, missing))
        lay = self.layout
        compressed = np.empty((labels.size, lay.p, lay.n), dtype=lay.dtype)
        computed = np.zeros(labels.size, dtype=bool)
        computed[np.searchsorted(labels, missing)] = True
        for t in np.flatnonzero(~computed):
            compressed[t] = self.cache.take((family, int(labels[t])))
        at = np.flatnonzero(computed)
        offset = 0
        for block in self._computed(family, missing):
            compressed[at[offset : offset + block.shape[0]]] = block
            offset += block.shape[0]
        return compressed

    def _check_pattern(self, product: Callable[[np.ndarray], Any]) -> None:
        """Check the user's pattern against exact HVPs; see :func:`check_pattern`."""
        lay = self.layout

        def hvps(v: np.ndarray) -> np.ndarray:
            if lay.batch is not None:
                v = np.broadcast_to(v[:, None, :], (len(v), lay.batch, lay.n))
            with concretely():
                return np.asarray(self.matvec(v.reshape(len(v), lay.d)))

        check_pattern(self.structure, lay.dtype, hvps, product)

    def compressed(self, family: SeedFamily) -> Any:
        """``B[t] = H @ s_t`` for every seed ``t`` of ``family``, shaped ``(size, p, n)``.

        One HVP per seed, in chunks; nothing is cached (the caller owns ``B``).
        """
        size = family.size
        starts = list(range(0, size, self.chunk_size))
        parts = [
            self._seeded(family, list(range(s, min(s + self.chunk_size, size))))
            for s in bar(starts, "HVP chunks", self.progress and not self.traced)
        ]
        self.cache.record(size, missed=False)
        if not parts:
            return jnp.zeros((0, self.layout.p, self.layout.n), self.layout.dtype)
        if len(parts) == 1:
            return jnp.asarray(parts[0])
        return jnp.concatenate([jnp.asarray(part) for part in parts])

    def matvec(self, v: Any) -> Any:
        """HVP results ``(k, p, n)`` for explicit directions ``v`` of shape ``(k, d)``."""
        state = self._state()
        parts = []
        starts = list(range(0, v.shape[0], self.chunk_size))
        for s in bar(starts, "HVP chunks", self.progress and not self.traced):
            chunk = v[s : s + self.chunk_size]
            k = chunk.shape[0]
            chunk = jnp.pad(
                jnp.asarray(chunk, self.layout.dtype), ((0, self._bucket(k) - k), (0, 0))
            )
            parts.append(self.kernels.apply(state, self.x, self.dyn, chunk, keep=True)[:k])
            self.cache.record(k, missed=False)
        if not parts:
            return jnp.zeros((0, self.layout.p, self.layout.n), self.layout.dtype)
        return jnp.concatenate(parts)

    def computed_columns(self) -> np.ndarray:
        """Mask over the flat columns whose seed direction is cached (rows too, by symmetry).

        A cached diagonal alone (``Structure.diagonal_values``) computes no column.
        """
        seeded = np.zeros(self.layout.n, dtype=bool)
        with self.cache.lock:
            for family, held in self.cache.families(limit=None):
                if family is self.structure.diagonal_values:
                    continue
                labels = family.labels
                in_seed = labels >= 0
                seeded[in_seed] |= held[labels[in_seed]]
        return seeded

    @functools.cached_property
    def first_order(self) -> tuple[Any, Any, Any]:
        """``fun``'s output, its gradient and aux at this point (computed on first access)."""
        if self.traced:
            return self.kernels.first_order(self.x, self.dyn)
        with concretely():
            return self.kernels.first_order(self.x, self.dyn)

    def info(self) -> CacheInfo:
        """HVP directions spent, cache hits and misses, and the cache's use."""
        return self.cache.info()
