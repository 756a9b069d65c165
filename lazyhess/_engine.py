"""A Hessian at one point: requested entries through planned, chunked, cached HVPs."""

from __future__ import annotations

import weakref
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._cache import DirectionCache
from ._hvp import Kernels
from ._plan import Plan, SeedFamily, Structure, plan
from ._progress import bar


def is_traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


# Largest seed chunk embedded in a traced program as a constant (see Engine._constant).
CONSTANT_SEED_BYTES = 16 * 2**20


class Engine:
    """Evaluates entries of the flat Hessian ``H[p, i, j]`` of one point.

    A request is planned (which seed directions cover it, which of them are cached), the
    missing directions are pushed through the HVP kernels in chunks of at most
    ``chunk_size`` (padded up to a power of two, so few shapes are ever compiled), and each
    chunk is scattered into the result as it arrives. Beyond the result, memory is bounded
    by the cache plus one chunk. With traced inputs nothing is cached and the result is a
    traced, differentiable value.
    """

    def __init__(
        self,
        kernels: Kernels,
        x: jax.Array,
        dyn: list,
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
        self._device_labels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.traced = is_traced((x, dyn))

    def _state(self) -> tuple:
        if self.traced:
            return self.kernels.linearize(self.x, self.dyn)
        return self._concrete_state

    @cached_property
    def _concrete_state(self) -> tuple:
        # Evaluated now even when first asked for inside someone else's trace (jax.jit,
        # jax.scipy's cg): the state is a property of the concrete point and is kept.
        with jax.ensure_compile_time_eval():
            return self.kernels.linearize(self.x, self.dyn)

    def _bucket(self, k: int) -> int:
        return min(self.chunk_size, 1 << max(k - 1, 0).bit_length())

    def _seeded(self, family: SeedFamily, labels: list[int]) -> jax.Array:
        """HVP results ``(len(labels), p, n)`` for seeds of one family (one chunk).

        The chunk is padded to a power-of-two bucket so varied requests share compiled
        kernels, except when it is a whole fixed family (a global coloring, evaluated whole
        again and again): that one shape is compiled exactly, together with the point's
        linearisation when it is the point's first request. Inside a trace, colorings'
        seeds enter the caller's program as constants (see ``_constant``) up to
        ``CONSTANT_SEED_BYTES`` per chunk; larger ones are built from labels on the device.
        """
        lay = self.layout
        constant_bytes = len(labels) * lay.d * np.dtype(lay.dtype).itemsize
        if self.traced and not family.unit and constant_bytes <= CONSTANT_SEED_BYTES:
            seeds = self._constant(family, labels)
            return self.kernels.apply(self._state(), self.x, self.dyn, seeds)
        whole = family.fixed and len(labels) == min(family.size, self.chunk_size)
        size = len(labels) if whole else self._bucket(len(labels))
        ids = np.full(size, -1, dtype=np.int32)
        ids[: len(labels)] = labels
        if family not in self._device_labels:
            self._device_labels[family] = jnp.asarray(family.labels, dtype=jnp.int32)
        if whole and not self.traced and "_concrete_state" not in self.__dict__:
            # A point's first request is a whole coloring: linearise and seed in one call,
            # concretely even inside someone else's trace, as ``_concrete_state`` does.
            with jax.ensure_compile_time_eval():
                state, out = self.kernels.linearize_seeded(
                    self.x, self.dyn, self._device_labels[family], ids, exact_nan=family.unit
                )
            self.__dict__["_concrete_state"] = state
            return out[: len(labels)]
        out = self.kernels.seeded(
            self._state(),
            self.x,
            self.dyn,
            self._device_labels[family],
            ids,
            exact_nan=family.unit,
        )
        return out[: len(labels)]

    def _constant(self, family: SeedFamily, labels: list[int]) -> np.ndarray:
        """The seeds as a host matrix ``(k, d)``: inside a trace, a constant of the program.

        XLA folds a constant seed through the derivative (gathers of the seed, products with
        its zeros), which a seed computed from labels on the device would hide.
        """
        lay = self.layout
        seeds = (family.labels[None, :] == np.asarray(labels)[:, None]).astype(lay.dtype)
        if lay.batch is not None:
            seeds = np.broadcast_to(seeds[:, None, :], (len(labels), lay.batch, lay.n))
        return seeds.reshape(len(labels), lay.d)

    def _groups(self, plan: Plan) -> list[tuple[int, list]]:
        """Slots split into chunks of at most ``chunk_size`` seeds of one family."""
        groups: list[tuple[int, list]] = []
        for slot, seed in enumerate(plan.seeds):
            last = groups[-1][1] if groups else None
            if (
                last is None
                or slot == plan.reused
                or len(last) == self.chunk_size
                or last[0][0] is not seed[0]
            ):
                groups.append((slot, []))
            groups[-1][1].append(seed)
        return groups

    def _plan(self, rows: np.ndarray, cols: np.ndarray, diagonal: bool) -> Plan:
        structure = self.structure
        cached: dict[SeedFamily, np.ndarray] = {}
        if not self.traced:
            for family, label in self.cache.keys():
                if family not in cached:
                    cached[family] = np.zeros(max(family.size, 1), dtype=bool)
                cached[family][label] = True
        colorings = []
        if not structure.dense:
            if diagonal:
                colorings.append(lambda: structure.diagonal_family)
            colorings.append(lambda: structure.global_family)
        partial = None if structure.dense else structure.partial
        return plan(rows, cols, structure, structure.unit, cached, colorings, partial)

    def entries(
        self, p: np.ndarray, rows: np.ndarray, cols: np.ndarray, diagonal: bool = False
    ) -> Any:
        """Values ``H[p[e], rows[e], cols[e]]`` (1-D index arrays over flat coordinates).

        ``diagonal`` says every entry is on the diagonal, so a distance-1 coloring may serve.
        """
        plan = self._plan(rows, cols, diagonal)
        if not self.traced:
            with jax.ensure_compile_time_eval():
                return self._fill(plan, p)
        self.cache.record(len(plan.new))
        parts = [
            self._seeded(seeds[0][0], [t for _, t in seeds]) for _, seeds in self._groups(plan)
        ]
        dtype = self.layout.dtype
        if not parts:
            return jnp.zeros(p.shape, dtype)
        zero = jnp.zeros((1,) + parts[0].shape[1:], dtype)
        stacked = jnp.concatenate(parts + [zero])
        return stacked[plan.slot, p, plan.read]

    def _fill(self, plan: Plan, p: np.ndarray) -> np.ndarray:
        """Scatter the planned seeds into the result, one chunk of them at a time."""
        out = np.zeros(p.shape, dtype=self.layout.dtype)
        groups = self._groups(plan)
        if len(groups) > 1:
            # Group the entries by chunk with a counting sort (radix on small ints).
            starts = np.array([start for start, _ in groups])
            chunk = np.searchsorted(starts, plan.slot, side="right") - 1
            chunk = chunk.astype(np.int16 if len(groups) < 2**15 else np.int64)
            order = np.argsort(chunk, kind="stable")
            counts = np.bincount(chunk[chunk >= 0], minlength=len(groups))
            bounds = np.concatenate([[0], np.cumsum(counts)]) + np.count_nonzero(chunk < 0)
        for g, (start, seeds) in bar(list(enumerate(groups)), "HVP chunks", self.progress):
            if start < plan.reused:
                block = np.stack([self.cache.take(seed) for seed in seeds])
            else:
                block = np.asarray(self._seeded(seeds[0][0], [t for _, t in seeds]))
                self.cache.record(len(seeds))
                for t, seed in enumerate(seeds):
                    self.cache.put(seed, np.array(block[t]))
            if len(groups) == 1:
                sel = np.flatnonzero(plan.slot >= 0)
            else:
                sel = order[bounds[g] : bounds[g + 1]]
            out[sel] = block[plan.slot[sel] - start, p[sel], plan.read[sel]]
        return out

    def pattern_values(self) -> Any:
        """Every stored entry of the sparse pattern, shaped ``(p, nnz)`` in row-major order.

        Read from the global coloring's seeds, one HVP per color: cached colors are reused,
        the others computed in chunks and cached. Costs O(nnz) beyond the HVPs, with no
        planning: the coloring already says where each entry is read.
        """
        structure = self.structure
        family, colored = structure.global_family, structure.colored
        index = colored.recover_index
        if self.traced:
            compressed = self.compressed(family)
            return compressed[colored.recover_color, :, index].T
        out = np.zeros((self.layout.p, colored.nnz), dtype=self.layout.dtype)
        order, bounds = structure.entries_by_color
        held = [c for c in range(family.size) if (family, c) in self.cache]
        missing = [c for c in range(family.size) if (family, c) not in self.cache]
        # Cached colors are read first, before computing the others can evict them.
        chunks = [(True, [c]) for c in held] + [
            (False, missing[s : s + self.chunk_size])
            for s in range(0, len(missing), self.chunk_size)
        ]
        with jax.ensure_compile_time_eval():
            for cached, chunk in bar(chunks, "HVP chunks", self.progress):
                if cached:
                    block = self.cache.take((family, chunk[0]))[None]
                else:
                    block = np.asarray(self._seeded(family, chunk))
                    self.cache.record(len(chunk))
                    for t, c in enumerate(chunk):
                        self.cache.put((family, c), np.array(block[t]))
                for t, c in enumerate(chunk):
                    sel = order[bounds[c] : bounds[c + 1]]
                    out[:, sel] = block[t][:, index[sel]]
        return out

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
        return jnp.concatenate(parts)

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
            parts.append(self.kernels.apply(state, self.x, self.dyn, chunk)[:k])
            self.cache.record(k, missed=False)
        if not parts:
            return jnp.zeros((0, self.layout.p, self.layout.n), self.layout.dtype)
        return jnp.concatenate(parts)
