"""Optional progress bars (tqdm) for long requests, detection and coloring."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

_DEFAULT = {"progress": False}


def set_progress_default(enabled: bool) -> None:
    """Show progress bars for every Hessian built with ``progress=None`` (the default).

    Bars appear for requests spanning several HVP chunks and for sparsity detection and
    coloring; they need tqdm (``pip install "lazyhess[progress]"``).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_progress_default takes True or False; got {enabled!r}.")
    if enabled:
        _tqdm()
    _DEFAULT["progress"] = enabled


def resolve(progress: Any) -> bool:
    """The effective setting of a ``progress`` option (``None`` follows the default)."""
    if progress is None:
        return _DEFAULT["progress"]
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (the default); got {progress!r}.")
    if progress:
        _tqdm()
    return progress


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ImportError(
            'progress bars need tqdm: pip install "lazyhess[progress]" (or pip install tqdm), '
            "or pass progress=False."
        ) from err
    return tqdm


def bar(items: list, desc: str, enabled: bool) -> Iterable:
    """``items``, wrapped in a progress bar when ``enabled`` and there is more than one."""
    if not enabled or len(items) < 2:
        return items
    return _tqdm()(items, desc=desc, unit="chunk", leave=False)


@contextlib.contextmanager
def stage(desc: str, enabled: bool) -> Iterator[None]:
    """A one-step bar around a long stage (detection, coloring) when ``enabled``."""
    if not enabled:
        yield
        return
    with _tqdm()(total=1, desc=desc, leave=False) as step:
        yield
        step.update(1)
