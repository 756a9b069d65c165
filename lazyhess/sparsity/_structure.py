"""Index arithmetic of data-movement primitives, computed with NumPy on position arrays.

Each function returns, for every output element, the flat index of the operand element it
is copied from (-1 where it is not copied from that operand). The same arrays carry
dependency rows (`IndexMap`) and fold constants, so structure and values never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def positions(shape: tuple[int, ...]) -> np.ndarray:
    """Flat positions 0 .. prod(shape) - 1 laid out in ``shape``."""
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def broadcast_in_dim(in_shape, out_shape, broadcast_dimensions) -> np.ndarray:
    expanded = [1] * len(out_shape)
    for src, dst in enumerate(broadcast_dimensions):
        expanded[dst] = in_shape[src]
    return np.broadcast_to(positions(in_shape).reshape(expanded), out_shape).ravel()


def transpose(in_shape, permutation) -> np.ndarray:
    return positions(in_shape).transpose(permutation).ravel()


def rev(in_shape, dimensions) -> np.ndarray:
    return np.flip(positions(in_shape), tuple(dimensions)).ravel()


def slice_(in_shape, start_indices, limit_indices, strides) -> np.ndarray:
    strides = strides or (1,) * len(in_shape)
    key = tuple(
        slice(s, e, st) for s, e, st in zip(start_indices, limit_indices, strides, strict=True)
    )
    return positions(in_shape)[key].ravel()


def concatenate(in_shapes, dimension) -> list[np.ndarray]:
    """One index array per operand, -1 where the output comes from another operand."""
    pieces = [positions(s) for s in in_shapes]
    out = []
    for k in range(len(in_shapes)):
        parts = [p if j == k else np.full(p.shape, -1, np.int64) for j, p in enumerate(pieces)]
        out.append(np.concatenate(parts, axis=dimension).ravel())
    return out


def pad(in_shape, padding_config) -> np.ndarray:
    arr = positions(in_shape)
    for axis, (lo, hi, interior) in enumerate(padding_config):
        size = arr.shape[axis]
        if interior and size > 1:
            shape = list(arr.shape)
            shape[axis] = size + (size - 1) * interior
            dil = np.full(shape, -1, np.int64)
            key = [slice(None)] * arr.ndim
            key[axis] = slice(None, None, interior + 1)
            dil[tuple(key)] = arr
            arr = dil
        for amount, at_start in ((lo, True), (hi, False)):
            if amount > 0:
                widths = [(0, 0)] * arr.ndim
                widths[axis] = (amount, 0) if at_start else (0, amount)
                arr = np.pad(arr, widths, constant_values=-1)
            elif amount < 0:
                key = [slice(None)] * arr.ndim
                key[axis] = slice(-amount, None) if at_start else slice(None, amount)
                arr = arr[tuple(key)]
    return arr.ravel()


def dynamic_slice(in_shape, starts, slice_sizes) -> np.ndarray:
    key = tuple(
        slice(int(s), int(s) + z)
        for s, z in zip(clamp_starts(in_shape, starts, slice_sizes), slice_sizes, strict=True)
    )
    return positions(in_shape)[key].ravel()


def dynamic_update_slice(in_shape, upd_shape, starts) -> tuple[np.ndarray, np.ndarray]:
    """(operand map, update map) of ``dynamic_update_slice`` with known start indices."""
    key = tuple(
        slice(int(s), int(s) + z)
        for s, z in zip(clamp_starts(in_shape, starts, upd_shape), upd_shape, strict=True)
    )
    op = positions(in_shape).copy()
    op[key] = -1
    upd = np.full(in_shape, -1, np.int64)
    upd[key] = positions(upd_shape)
    return op.ravel(), upd.ravel()


def clamp_starts(in_shape, starts, sizes) -> list[int]:
    """Start indices clamped the way XLA clamps dynamic slices."""
    return [
        int(np.clip(int(s), 0, d - z)) for s, d, z in zip(starts, in_shape, sizes, strict=True)
    ]


def shifted(
    shape, base: np.ndarray, window: Sequence[int], unknown: Sequence[int]
) -> sp.csr_array:
    """Candidates of windowed reads whose start is unknown along some dimensions.

    Element k reads position ``base[k]`` (a flat index into ``shape``, computed with start 0
    along the ``unknown`` dimensions) shifted by any amount that keeps a window of size
    ``window[d]`` inside dimension d. Returns a boolean (len(base) × prod(shape)) CSR matrix
    with one row per element; its nonzeros are exactly the candidates (O(their count)).
    """
    strides = np.cumprod((1,) + tuple(shape[::-1]), dtype=np.int64)[-2::-1]
    steps = np.zeros(1, np.int64)
    for d in unknown:
        reach = np.arange(shape[d] - window[d] + 1, dtype=np.int64) * strides[d]
        steps = (steps[:, None] + reach[None, :]).ravel()
    steps.sort()
    base = np.asarray(base, np.int64)
    valid = base >= 0
    per_row = np.where(valid, steps.size, 0)
    indptr = np.zeros(base.size + 1, np.int64)
    np.cumsum(per_row, out=indptr[1:])
    cols = (base[valid][:, None] + steps[None, :]).ravel()
    return sp.csr_array(
        (np.ones(cols.size, bool), cols, indptr), shape=(base.size, math.prod(shape))
    )


def gather(
    operand_shape,
    indices: np.ndarray,
    offset_dims,
    collapsed_slice_dims,
    start_index_map,
    operand_batching_dims,
    start_indices_batching_dims,
    slice_sizes,
    clip: bool,
    per_element: bool = False,
) -> np.ndarray:
    """Flat operand index read by each element of a gather (shape of the gather output).

    With ``clip`` start indices are clamped (modes CLIP and PROMISE_IN_BOUNDS); otherwise a
    window that does not fit is dropped: -1 for all of it, or with ``per_element`` only for
    its elements that fall outside the operand (the scatter reading).
    """
    rank = len(operand_shape)
    batch_shape = tuple(indices.shape[:-1])
    nb = math.prod(batch_shape)
    idxv = indices.reshape(nb, indices.shape[-1]).astype(np.int64)
    start = np.zeros((nb, rank), np.int64)
    for k, d in enumerate(start_index_map):
        start[:, d] = idxv[:, k]
    if operand_batching_dims:
        coords = np.unravel_index(np.arange(nb), batch_shape)
        for od, idim in zip(operand_batching_dims, start_indices_batching_dims, strict=True):
            start[:, od] = coords[idim]
    shape = np.asarray(operand_shape, np.int64)
    hi = shape - np.asarray(slice_sizes, np.int64)
    window_ok = np.all((start >= 0) & (start <= hi), axis=1)
    if clip:
        start = np.clip(start, 0, hi)
    offset_operand_dims = [
        d for d in range(rank) if d not in collapsed_slice_dims and d not in operand_batching_dims
    ]
    offset_sizes = tuple(slice_sizes[d] for d in offset_operand_dims)
    no = math.prod(offset_sizes)
    off = np.zeros((no, rank), np.int64)
    if offset_operand_dims:
        oc = np.unravel_index(np.arange(no), offset_sizes)
        for k, d in enumerate(offset_operand_dims):
            off[:, d] = oc[k]
    full = start[:, None, :] + off[None, :, :]
    inside = np.all((full >= 0) & (full < shape), axis=2)
    flat = (
        np.ravel_multi_index(
            tuple(np.clip(full, 0, np.maximum(shape - 1, 0)).transpose(2, 0, 1)), operand_shape
        )
        if rank
        else np.zeros((nb, no), np.int64)
    )
    if not clip:
        valid = inside if per_element else (window_ok[:, None] & inside)
        flat = np.where(valid, flat, -1)
    arr = flat.reshape(batch_shape + offset_sizes)
    nbd = len(batch_shape)
    src = []
    batch_iter = iter(range(nbd))
    offset_axis = {d: nbd + k for k, d in enumerate(sorted(offset_dims))}
    for j in range(nbd + len(offset_sizes)):
        src.append(offset_axis[j] if j in offset_axis else next(batch_iter))
    return arr.transpose(tuple(src)).ravel()
