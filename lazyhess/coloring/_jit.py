"""Compilation of the sequential graph kernels.

Greedy colorings and bucket-queue orders are sequential loops over vertices; numba
compiles them to machine code (about 100x faster than the interpreter on these loops).
Without numba the same functions run as plain Python, correct but slow for large n.

numba is imported on the first call of any kernel, not with lazyhess: importing it
costs a large part of a second, and many sessions never color a pattern.
"""

from collections.abc import Callable
from typing import Any, cast

_KERNELS: list["_Kernel"] = []


class _Kernel:
    """A kernel compiled on its first call; calls forward to the compiled function."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.compiled: Callable | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None:
            _compile_all()
        return cast(Callable, self.compiled)(*args)


def _compile_all() -> None:
    """Wrap every kernel with ``numba.njit`` and rebind its module-level name.

    Kernels call each other by their global names; numba resolves those when it compiles
    a kernel (on its first call), so every name must be a numba function by then.
    """
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - exercised only where numba is absent
        njit = None
    for kernel in _KERNELS:
        if kernel.compiled is None:
            fn = kernel.fn
            kernel.compiled = fn if njit is None else njit(cache=True, nogil=True)(fn)
            fn.__globals__[fn.__name__] = kernel.compiled


def kernel(fn: Callable) -> Callable:
    """``fn`` compiled with ``numba.njit(cache=True)`` on first use, when numba is installed."""
    wrapped = _Kernel(fn)
    _KERNELS.append(wrapped)
    return wrapped
