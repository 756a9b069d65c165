"""Where seed directions and HVP results live on a JAX mesh, and reading results back.

A request's seed directions are independent, so their batch axis is what a mesh shares out:
with ``mesh=`` and ``seed_axis=`` each device of that axis evaluates its slice of a chunk's
directions. The point ``x`` keeps its own sharding (on a mesh whose seed axis is explicit
it is replicated along that axis, since the directions use it). Without a mesh, seeds take
``x``'s sharding, as ``jax.hessian``'s basis does, so a function whose input is sharded
with explicit axes gets tangents typed like its primal.

The functions taking traced values run inside compiled kernels; ``fetch`` reads a result
back to the host, also when it spans devices of other processes.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class Placement(NamedTuple):
    """A mesh and the axis its seed directions are sharded over (both ``None``: no mesh)."""

    mesh: Mesh | None = None
    axis: str | None = None

    @property
    def devices(self) -> int:
        """How many devices share each chunk's directions."""
        return 1 if self.mesh is None else int(self.mesh.shape[self.axis])

    @property
    def explicit(self) -> bool:
        """Whether the seed axis is an explicit axis (shardings are part of types)."""
        if self.mesh is None:
            return False
        types = dict(zip(self.mesh.axis_names, self.mesh.axis_types, strict=True))
        return types[self.axis] == AxisType.Explicit


NO_MESH = Placement()


def _typed(x: jax.Array) -> tuple[Any, tuple]:
    """``(abstract mesh, spec)`` of ``x``'s type; the spec names explicit axes only."""
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    return sharding.mesh, spec


def _constrain(a: jax.Array, mesh: Any, spec: tuple, explicit: bool) -> jax.Array:
    sharding = NamedSharding(mesh, P(*spec))
    if explicit:
        return jax.sharding.reshard(a, sharding)
    return jax.lax.with_sharding_constraint(a, sharding)


def _without(spec: tuple, axis: str | None) -> tuple:
    """``spec`` with ``axis`` removed from every entry (so another array may use it)."""

    def drop(entry: Any) -> Any:
        if entry is None or axis is None:
            return entry
        names = tuple(n for n in (entry if isinstance(entry, tuple) else (entry,)) if n != axis)
        return None if not names else names[0] if len(names) == 1 else names

    return tuple(drop(entry) for entry in spec)


def place_point(x: jax.Array, placement: Placement) -> jax.Array:
    """``x`` free of the seed axis: replicated along it when its type names it.

    Only explicit axes are part of a type; on an auto mesh XLA places ``x`` itself.
    """
    mesh, spec = _typed(x)
    if not placement.explicit or placement.axis not in jax.tree_util.tree_leaves(spec):
        return x
    return _constrain(x, mesh, _without(spec, placement.axis), True)


def place_seeds(v: jax.Array, x: jax.Array, placement: Placement) -> jax.Array:
    """Directions ``v`` of shape ``(k, d)``: ``k`` over the seed axis, ``d`` like ``x``.

    ``x`` is the flat point as the kernels see it (after :func:`place_point`).
    """
    mesh, spec = _typed(x)
    if placement.mesh is None:
        if mesh.empty or all(entry is None for entry in spec):
            return v
        return _constrain(v, mesh, (None, *spec), True)
    return _constrain(v, placement.mesh, (placement.axis, *spec), placement.explicit)


def shard_rows(a: jax.Array, placement: Placement) -> jax.Array:
    """``a`` with its first axis sharded over the seed axis (e.g. the colors to evaluate)."""
    spec = (placement.axis,) + (None,) * (a.ndim - 1)
    return _constrain(a, placement.mesh, spec, placement.explicit)


def gather_results(out: jax.Array, x: jax.Array, placement: Placement, keep: bool) -> jax.Array:
    """HVP results ``(k, ...)`` gathered over the seed axis.

    ``keep``: the last axis stays sharded like ``x`` (``H @ v`` follows the input's
    sharding); otherwise the results are replicated on every device (they are read back by
    the host or gathered at arbitrary entries, which sharded types refuse).
    """
    mesh, spec = _typed(x)
    if placement.mesh is not None:
        mesh = placement.mesh
    elif mesh.empty:
        return out
    explicit = placement.explicit or any(entry is not None for entry in spec)
    last = spec[-1] if keep else None
    if keep and not explicit and placement.mesh is None:
        return out
    return _constrain(out, mesh, (None,) * (out.ndim - 1) + (last,), explicit)


def pad_rows(a: jax.Array, placement: Placement, fill: Any) -> jax.Array:
    """``a`` padded with ``fill`` rows up to a multiple of the seed axis' devices."""
    extra = -a.shape[0] % placement.devices
    if not extra:
        return a
    widths = [(0, extra)] + [(0, 0)] * (a.ndim - 1)
    return jax.numpy.pad(a, widths, constant_values=fill)


def chunk_budget(placement: Placement, default: int) -> int:
    """Bytes of HVP results one device may hold per chunk: 1/64 of its memory.

    The smallest ``bytes_limit`` the mesh's local devices report; ``default`` without a
    mesh or where the backend reports none (as on CPU).
    """
    if placement.mesh is None:
        return default
    limits = [
        (device.memory_stats() or {}).get("bytes_limit") for device in placement.mesh.local_devices
    ]
    known = [int(limit) for limit in limits if limit]
    return min(known) // 64 if known else default


def home(x: jax.Array, placement: Placement) -> NamedSharding | None:
    """Where a request's result lives: replicated over the mesh of ``mesh=`` or of ``x``.

    ``None`` (the default device) when neither spans several devices. Results of
    ``jax.hessian`` at a sharded point are on the point's devices too.
    """
    mesh = placement.mesh
    if mesh is None:
        sharding = getattr(x, "sharding", None)
        mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    if mesh is None or mesh.size < 2:
        return None
    return NamedSharding(mesh, P())


def poll(a: Any, seconds: float) -> None:
    """Wait for ``a`` by polling it for at most ``seconds``; reading it after may block.

    The CPU client runs a program on a worker thread, and a thread that blocks on its
    result sleeps until woken; on this 2-core machine that costs tens of microseconds
    (WOODS's CSR at a fresh point, n = 1e4: 209 us blocking, 144-147 us polling). Polling
    takes a core from the program, though (ARROW2's, ~600 us: 686 -> 810-871 us), so
    callers poll only programs known to be short.
    """
    ready = getattr(a, "is_ready", None)  # concrete arrays' (ArrayImpl) method
    if ready is None:
        return
    end = time.perf_counter() + seconds
    while not ready() and time.perf_counter() < end:
        pass


def fetch(a: Any) -> np.ndarray:
    """``a`` as a host numpy array, also when it spans devices of other processes.

    A fully addressable array is copied as usual (the first try: nothing is checked on the
    common path); a replicated one is read from a local shard; anything else is gathered
    from every process (every process must call this).
    """
    try:
        return np.asarray(a)
    except RuntimeError:
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            raise
    if a.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
