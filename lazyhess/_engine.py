"""A Hessian at one point: requested entries through planned, chunked, cached HVPs."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._cache import DirectionCache
from ._hvp import Kernels
from ._plan import Plan, plan_unit


def is_traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


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
        self, kernels: Kernels, x: jax.Array, dyn: list, chunk_size: int, cache: DirectionCache
    ):
        self.kernels = kernels
        self.layout = kernels.layout
        self.x = x
        self.dyn = dyn
        self.chunk_size = chunk_size
        self.cache = cache
        self.traced = is_traced((x, dyn))

    @cached_property
    def _labels(self) -> jax.Array:
        return jnp.arange(self.layout.n)

    def _state(self) -> tuple:
        if self.traced:
            return self.kernels.linearize(self.x, self.dyn)
        return self._concrete_state

    @cached_property
    def _concrete_state(self) -> tuple:
        return self.kernels.linearize(self.x, self.dyn)

    def _bucket(self, k: int) -> int:
        return min(self.chunk_size, 1 << max(k - 1, 0).bit_length())

    def _seeded(self, ids: np.ndarray) -> jax.Array:
        """HVP results ``(len(ids), p, n)`` for unit directions ``ids`` (one chunk)."""
        padded = np.full(self._bucket(ids.size), -1, dtype=np.int32)
        padded[: ids.size] = ids
        out = self.kernels.seeded(self._state(), self.x, self.dyn, self._labels, padded)
        return out[: ids.size]

    def _chunks(self, ids: np.ndarray) -> list[np.ndarray]:
        return [ids[s : s + self.chunk_size] for s in range(0, ids.size, self.chunk_size)]

    def entries(self, p: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Any:
        """Values ``H[p[e], rows[e], cols[e]]`` (1-D index arrays over flat coordinates)."""
        if self.traced:
            plan = plan_unit(rows, cols, np.zeros(self.layout.n, dtype=bool))
            self.cache.record(plan.new.size)
            parts = [self._seeded(ids) for ids in self._chunks(plan.new)]
            if not parts:
                return jnp.zeros(p.shape, self.layout.dtype)
            return jnp.concatenate(parts)[plan.slot, p, plan.other]
        cached = np.zeros(self.layout.n, dtype=bool)
        cached[[k for k in self.cache.keys() if isinstance(k, int | np.integer)]] = True
        plan = plan_unit(rows, cols, cached)
        return self._fill(plan, p)

    def _fill(self, plan: Plan, p: np.ndarray) -> np.ndarray:
        """Scatter the planned directions into the result, one chunk of them at a time."""
        out = np.empty(p.shape, dtype=self.layout.dtype)
        reused, new, size = plan.reused, plan.new, self.chunk_size
        groups = [(s, reused[s : s + size]) for s in range(0, reused.size, size)]
        groups += [(reused.size + s, new[s : s + size]) for s in range(0, new.size, size)]
        if len(groups) > 1:
            # Group the entries by chunk with a counting sort (radix on small ints).
            in_new = plan.slot >= reused.size
            chunk = np.where(
                in_new, (plan.slot - reused.size) // size + -(-reused.size // size), plan.slot // size
            )
            chunk = chunk.astype(np.int16 if len(groups) < 2**15 else np.int64)
            order = np.argsort(chunk, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(np.bincount(chunk, minlength=len(groups)))])
        for g, (start, ids) in enumerate(groups):
            if start < reused.size:
                block = np.stack([self.cache.take(int(i)) for i in ids])
            else:
                block = np.asarray(self._seeded(ids))
                self.cache.record(ids.size)
                for t, i in enumerate(ids):
                    self.cache.put(int(i), np.array(block[t]))
            sel = slice(None) if len(groups) == 1 else order[bounds[g] : bounds[g + 1]]
            out[sel] = block[plan.slot[sel] - start, p[sel], plan.other[sel]]
        return out

    def matvec(self, v: Any) -> Any:
        """HVP results ``(k, p, n)`` for explicit directions ``v`` of shape ``(k, d)``."""
        state = self._state()
        parts = []
        for s in range(0, v.shape[0], self.chunk_size):
            chunk = v[s : s + self.chunk_size]
            k = chunk.shape[0]
            chunk = jnp.pad(jnp.asarray(chunk, self.layout.dtype), ((0, self._bucket(k) - k), (0, 0)))
            parts.append(self.kernels.apply(state, self.x, self.dyn, chunk)[:k])
            self.cache.record(k, missed=False)
        if not parts:
            return jnp.zeros((0, self.layout.p, self.layout.n), self.layout.dtype)
        return jnp.concatenate(parts)
