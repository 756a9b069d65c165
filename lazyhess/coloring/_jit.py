"""Compilation of the sequential graph kernels.

Greedy colorings and bucket-queue orders are sequential loops over vertices; numba
compiles them to machine code (about 100x faster than the interpreter on these loops).
Without numba the same functions run as plain Python, correct but slow for large n.
"""

try:
    from numba import njit as _numba_njit
except ImportError:  # pragma: no cover - exercised only where numba is absent
    _numba_njit = None


def kernel(fn):
    """Compile ``fn`` with ``numba.njit(cache=True)`` when numba is installed."""
    if _numba_njit is None:  # pragma: no cover
        return fn
    return _numba_njit(cache=True, nogil=True)(fn)
