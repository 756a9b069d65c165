"""The byte-bounded cache of HVP results, what it covers, and the request statistics."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np
from cachetools import LRUCache

# Partial families consulted per request, most recent first (older ones still hold their
# seeds, which later requests may recompute rather than search for).
RECENT_PARTIALS = 16


class CacheInfo(NamedTuple):
    """What a Hessian has spent and what its cache holds.

    Attributes:
        hvps: seed directions pushed through the Hessian-vector product so far.
        hits: cached directions reused by a request.
        misses: directions a request needed that were not cached (each one cost an HVP).
        bytes: bytes of HVP results held in the cache now.
        max_bytes: the cache budget, ``cache_bytes``.
        entries: HVP results held in the cache now.
    """

    hvps: int
    hits: int
    misses: int
    bytes: int
    max_bytes: int
    entries: int


class _Lru(LRUCache):
    """An LRU cache of HVP results that keeps, per family, the mask of the labels it holds.

    The coverage lives here, not in its owner, so evictions need no reference back to the
    owner (which would tie both into a cycle that only the garbage collector frees).
    """

    def __init__(self, max_bytes: int):
        super().__init__(maxsize=max_bytes, getsizeof=lambda a: a.nbytes)
        self.held: dict[Any, np.ndarray] = {}
        self.count: dict[Any, int] = {}

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        family, label = key
        self.held[family][label] = False
        self.count[family] -= 1
        if not self.count[family]:
            del self.held[family], self.count[family]
        return key, value


class DirectionCache:
    """HVP results keyed by their seed ``(family, label)``, least recently used first out.

    Each value is the host array ``H @ s`` for one seed ``s``, shaped ``(P, N)`` (output or
    batch elements by flat inputs). A value larger than the whole budget is not kept.
    The coverage (for each family, a mask of its labels held) is kept as results come and
    go, so a request never scans the cache's keys. All methods hold one lock: a Hessian can
    be indexed from several threads.

    ``shares``: the cache of another point whose results this one holds too, with counters
    of its own (the points of a constant Hessian, whose HVPs never read the point).
    ``nonfinite`` holds the unit seeds whose result had a non-finite value, which cannot be
    read as rows by symmetry; it is shared with the results.
    """

    def __init__(self, max_bytes: int, shares: DirectionCache | None = None):
        self.max_bytes = max_bytes if shares is None else shares.max_bytes
        self.hvps = 0
        self.hits = 0
        self.misses = 0
        if shares is None:
            lru = _Lru(max_bytes) if max_bytes else None
            self.lock = threading.RLock()
            self._lru: _Lru | None = lru
            self._held: dict[Any, np.ndarray] = {} if lru is None else lru.held
            self._count: dict[Any, int] = {} if lru is None else lru.count
            self.nonfinite: set[int] = set()
        else:
            self.lock, self._lru = shares.lock, shares._lru
            self._held, self._count = shares._held, shares._count
            self.nonfinite = shares.nonfinite

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached result for ``key``, counted as a hit, or ``None``."""
        with self.lock:
            value = None if self._lru is None else self._lru.get(key)
            if value is not None:
                self.hits += 1
            return value

    def take(self, key: Hashable) -> np.ndarray:
        """The cached result for ``key``, which a plan made under this lock found held."""
        value = self.get(key)
        if value is None:
            raise RuntimeError(f"internal error: planned cache entry {key!r} is missing")
        return value

    def put(self, key: tuple[Any, int], value: np.ndarray) -> None:
        """Keep ``value`` if the budget allows; evicts least recently used results."""
        if self._lru is None or value.nbytes > self.max_bytes:
            return
        with self.lock:
            family, label = key
            if key not in self._lru:
                held = self._held.pop(family, None)
                if held is None:
                    held = np.zeros(max(family.size, 1), dtype=bool)
                    self._count[family] = 0
                self._held[family] = held  # most recently filled family last
                held[label] = True
                self._count[family] += 1
            self._lru[key] = value

    def held(self, family: Any) -> np.ndarray | None:
        """Mask over ``family``'s labels of the seeds held now (``None``: none held)."""
        return self._held.get(family)

    def empty(self) -> bool:
        """Whether no result is held."""
        return not self._held

    def families(self, limit: int | None = RECENT_PARTIALS) -> list[tuple[Any, np.ndarray]]:
        """``(family, held mask)`` for families with results held.

        Unit and fixed families come first, then the ``limit`` most recently filled
        partial families (all with ``limit=None``).
        """
        items = list(self._held.items())
        fixed = [(f, held) for f, held in items if f.unit or f.fixed]
        partial = [(f, held) for f, held in reversed(items) if not (f.unit or f.fixed)]
        return fixed + partial[:limit]

    def record(self, computed: int, *, missed: bool = True) -> None:
        """Count ``computed`` seed directions evaluated; ``missed`` if a lookup preceded them."""
        with self.lock:
            self.hvps += computed
            if missed:
                self.misses += computed

    def clear(self) -> None:
        """Drop every cached result; the counters are kept."""
        with self.lock:
            if self._lru is not None:
                self._lru.clear()
            self._held.clear()
            self._count.clear()

    def info(self) -> CacheInfo:
        """The counters and the cache's current use."""
        lru = self._lru
        return CacheInfo(
            hvps=self.hvps,
            hits=self.hits,
            misses=self.misses,
            bytes=0 if lru is None else int(lru.currsize),
            max_bytes=self.max_bytes,
            entries=0 if lru is None else len(lru),
        )


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``, ``7.3 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
