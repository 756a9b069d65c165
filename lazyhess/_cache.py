"""The byte-bounded cache of HVP results and the request statistics."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import numpy as np
from cachetools import LRUCache


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


class DirectionCache:
    """HVP results keyed by their seed direction, least recently used first out.

    Each value is the host array ``H @ s`` for one seed ``s``, shaped ``(P, N)`` (output or
    batch elements by flat inputs). A value larger than the whole budget is not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lru: LRUCache | None = (
            LRUCache(maxsize=max_bytes, getsizeof=lambda a: a.nbytes) if max_bytes else None
        )
        self.hvps = 0
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        return self._lru is not None and key in self._lru

    def keys(self) -> list[Hashable]:
        """The seed keys held now, without touching their recency."""
        return [] if self._lru is None else list(self._lru.keys())

    def take(self, key: Hashable) -> np.ndarray:
        """The cached result for ``key`` (which must be present), counted as a hit."""
        self.hits += 1
        return self._lru[key]

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Keep ``value`` if the budget allows; evicts least recently used results."""
        if self._lru is not None and value.nbytes <= self.max_bytes:
            self._lru[key] = value

    def record(self, computed: int, *, missed: bool = True) -> None:
        """Count ``computed`` seed directions evaluated; ``missed`` if a lookup preceded them."""
        self.hvps += computed
        if missed:
            self.misses += computed

    def clear(self) -> None:
        """Drop every cached result; the counters are kept."""
        if self._lru is not None:
            self._lru.clear()

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
