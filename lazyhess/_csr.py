"""CSR helpers shared by the leaf packages and the rest of lazyhess."""

from __future__ import annotations

import numpy as np


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each query is among ``sorted_keys``, and its position there (if it is)."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=bool), np.zeros(queries.shape, dtype=np.intp)
    at = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.size - 1)
    return sorted_keys[at] == queries, at
