"""Recovery by substitution on CPU as one compiled loop, called from inside XLA programs.

Substitution reads ``B`` at each step of the two-colored forests, runs a prefix sum over
the steps and gathers every entry (see ``_substitution``). XLA's CPU backend runs the
prefix sum (``associative_scan``, log-depth) at about 3 ns a step and each gather at about
1 ns an element. One loop over the steps, compiled by numba, does it all in a pass: GENROSE
at n = 1e4 (10 000 steps, 30 000 entries), the jitted recovery takes 29 µs against XLA's
70-120 µs; BAND9 at n = 1e5 (400 000 steps), 3.9 ms (see :class:`Steps` for what made it so).

The loop is a C function (numba's ``cfunc``) registered as an XLA FFI target on the CPU
platform, so it runs inside jitted programs like any XLA op. It reads its operands from
XLA's call frame (the C structs of XLA's FFI API, ``xla/ffi/api/c_api.h``, version 0.1:
every field used here has kept its offset since). Everything else keeps XLA's own scan and
gathers (:func:`recover`'s ``native``): other platforms, other dtypes, processes without
numba, and every derivative (the recovery is linear in ``B``, so its JVP is the same
recovery of the tangent). Direct recovery stays XLA's gather too: XLA fuses it with the
HVPs that produce ``B``, and folds it away when the Hessian is constant, which an opaque
call would prevent (RANDSP2: 18 against 37 µs).

Importing the module imports numba and compiles the loop (cached on disk by numba): it is
imported on the first substitution of a jax array, never with lazyhess.
"""

import ctypes
import sys
from collections.abc import Callable
from typing import Any, cast

import jax
import numpy as np
from numba import cfunc, njit, types
from numba.extending import intrinsic
from numba.np import numpy_support

from ._substitution import Substitution

if ctypes.sizeof(ctypes.c_void_p) != 8 or sys.byteorder != "little":
    raise ImportError("the CPU recovery loop reads XLA's structs as a 64-bit little-endian C ABI")

TARGET = "lazyhess_recover"

# Offsets into XLA's FFI structs: ``_WORD`` in 8-byte words, ``_INT32`` in 4-byte ints.
_FRAME_EXTENSION_WORD, _FRAME_STAGE_INT32 = 1, 8
_ARGS_SIZE_WORD, _ARGS_TABLE_WORD, _RETS_SIZE_WORD, _RETS_TABLE_WORD = 7, 9, 12, 14
_BUFFER_DTYPE_WORD, _BUFFER_DATA_WORD, _BUFFER_RANK_WORD, _BUFFER_DIMS_WORD = 2, 3, 4, 5
_EXTENSION_TYPE_INT32, _EXTENSION_METADATA_WORD, _METADATA_VERSION_INT32 = 2, 3, 6
_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_METADATA = 1  # XLA_FFI_Extension_Metadata
_F64 = 12  # XLA_FFI_DataType_F64
# The version of XLA's FFI API this module implements, reported when XLA asks.
_API_VERSION = (0, 1)


def _to_pointer(typingctx, address):
    """``void*`` of an integer address (numba has no cast for it)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.int64), codegen


# Typed as Any: pyright cannot follow numba's typing of compiled code.
_pointer = cast(Any, intrinsic(_to_pointer))
carray = cast(Any, numpy_support.carray)


@njit(inline="always")
def _words(address, count):
    return carray(_pointer(address), count, np.int64)


@njit(inline="always")
def _buffer(table, k, dtype):
    """Buffer ``k`` of an argument or result table, flattened."""
    fields = _words(table[k], 6)
    size = 1
    for d in _words(fields[_BUFFER_DIMS_WORD], fields[_BUFFER_RANK_WORD]):
        size *= d
    return carray(_pointer(fields[_BUFFER_DATA_WORD]), size, dtype)


@njit(inline="always")
def _dtype_code(table, k):
    return _words(table[k], 6)[_BUFFER_DTYPE_WORD] & 0xFFFFFFFF


@njit(inline="always")
def _recover(flat, sizes, sources, positions, read, first, sign, edge, mirror, out, before):
    """Every batch's entries, written to ``out`` from its ``B`` in ``flat``, in one pass.

    ``sizes`` starts ``(nnz, width)``: entries and elements of ``B`` per batch. The entries
    no step solves (the diagonal) are read from ``B``: ``out[positions[i]] =
    B[sources[i]]``. The others are the prefix-sum solve of ``Substitution.solve``: step
    ``k`` adds ``sign[k] * B[read[k]]`` to a running total ``Q``, and its edge, stored at
    ``edge[k]`` and ``mirror[k]``, is ``sign[k] * (Q after k - Q before first[k])`` (a
    leaf reads ``B`` itself). ``before`` (one element per step) keeps ``Q`` before each
    step for the subtrees that end later.
    """
    nnz, width = sizes[0], sizes[1]
    for b in range(len(out) // nnz):
        into, base = b * nnz, b * width
        for i in range(len(positions)):
            out[into + positions[i]] = flat[base + sources[i]]
        total = flat[base] * 0
        for k in range(len(read)):
            y = flat[base + read[k]]
            before[k] = total
            total += sign[k] * y
            e = edge[k]
            if e < 0:
                continue
            start = first[k]
            x = y if start == k else sign[k] * (total - before[start])
            out[into + e] = x
            out[into + mirror[k]] = x


@cfunc(types.voidptr(types.voidptr), cache=True)
def _handler(frame):
    """The FFI entry point: answers XLA's metadata query, then recovers at execution.

    Operands, in order: ``B``, then the ``Steps`` arrays as :func:`_call` passes them;
    results: the entries, then the scratch of running totals (one per step).
    """
    words = carray(frame, 16, np.int64)
    extension = words[_FRAME_EXTENSION_WORD]
    if extension != 0:
        if carray(_pointer(extension), 4, np.int32)[_EXTENSION_TYPE_INT32] == _METADATA:
            metadata = _words(extension, 4)[_EXTENSION_METADATA_WORD]
            version = carray(_pointer(metadata), 8, np.int32)
            version[_METADATA_VERSION_INT32] = _API_VERSION[0]
            version[_METADATA_VERSION_INT32 + 1] = _API_VERSION[1]
        return _pointer(0)
    if carray(frame, 10, np.int32)[_FRAME_STAGE_INT32] != _EXECUTE:
        return _pointer(0)
    args = _words(words[_ARGS_TABLE_WORD], words[_ARGS_SIZE_WORD])
    rets = _words(words[_RETS_TABLE_WORD], words[_RETS_SIZE_WORD])
    sizes, packed, sign = (
        _buffer(args, 1, np.int64),
        _buffer(args, 2, np.int32),
        _buffer(args, 3, np.int8),
    )
    count, steps = sizes[2], sizes[3]
    sources, positions = packed[:count], packed[count : 2 * count]
    read = packed[2 * count : 2 * count + steps]
    first = packed[2 * count + steps : 2 * count + 2 * steps]
    edge = packed[2 * count + 2 * steps : 2 * count + 3 * steps]
    mirror = packed[2 * count + 3 * steps : 2 * count + 4 * steps]
    if _dtype_code(args, 0) == _F64:
        flat, out = _buffer(args, 0, np.float64), _buffer(rets, 0, np.float64)
        before = _buffer(rets, 1, np.float64)
        _recover(flat, sizes, sources, positions, read, first, sign, edge, mirror, out, before)
    else:
        flat32, out32 = _buffer(args, 0, np.float32), _buffer(rets, 0, np.float32)
        before32 = _buffer(rets, 1, np.float32)
        _recover(
            flat32, sizes, sources, positions, read, first, sign, edge, mirror, out32, before32
        )
    return _pointer(0)


jax.ffi.register_ffi_target(
    TARGET, jax.ffi.pycapsule(ctypes.c_void_p(cast(int, _handler.address))), platform="cpu"
)


class Steps:
    """A substitution's constant index arrays, in the layout :func:`_recover` reads.

    Indices are 32-bit, in one array (``packed``: sources and positions, then read, first,
    edge and mirror per step; ``sizes`` is ``(nnz, width, len(positions), steps)``), and
    the running totals get a scratch result of their own instead of being parked in the
    output and copied at the end: GENROSE's jitted recovery at n = 1e4 went from 52 to
    29 µs, BAND9's at n = 1e5 from 6.2 to 3.9 ms (the loop mostly streams its indices).
    Passed as separate operands, the arrays that look like an iota or a broadcast were
    rebuilt by XLA at every call. ``narrow`` is False when some index does not fit in 32
    bits (``num_colors * n`` or ``nnz`` of 2**31 or more); XLA's own recovery then serves.
    """

    def __init__(self, nnz: int, width: int, substitution: Substitution):
        self.narrow = max(nnz, width) < 2**31
        steps = len(substitution.read)
        self.steps = steps
        kept = substitution.kept
        self.sizes = np.array([nnz, width, kept.size, steps], np.int64)
        parts = (
            substitution.source[kept],
            kept,
            substitution.read,
            substitution.first,
            substitution.edge,
            substitution.mirror,
        )
        self.packed = np.concatenate(parts).astype(np.int32) if self.narrow else None
        self.sign = np.ascontiguousarray(substitution.sign, np.int8)

    def operands(self) -> tuple[np.ndarray, ...]:
        assert self.packed is not None
        return self.sizes, self.packed, self.sign


def recover(compressed: jax.Array, steps: Steps, native: Callable) -> jax.Array:
    """``native(compressed)``, computed by the compiled loop where the program runs on CPU.

    Args:
        compressed: ``B``, shape ``(..., num_colors, n)``, float32 or float64 (other
            dtypes take ``native``).
        steps: the recovery's index arrays.
        native: the same recovery in jax operations; it serves other platforms and the
            JVP (the recovery is linear).

    Returns:
        Shape ``(..., nnz)``.
    """
    if compressed.dtype not in (np.float32, np.float64) or not steps.sizes[0] or not steps.narrow:
        return native(compressed)

    @jax.custom_jvp
    def recovered(b):
        return jax.lax.platform_dependent(b, cpu=lambda b: _call(b, steps), default=native)

    @recovered.defjvp
    def _(primals, tangents):
        return recovered(primals[0]), native(tangents[0])

    return recovered(compressed)


def _call(compressed: jax.Array, steps: Steps) -> jax.Array:
    lead = compressed.shape[:-2]
    shapes = (
        jax.ShapeDtypeStruct((*lead, int(steps.sizes[0])), compressed.dtype),
        jax.ShapeDtypeStruct((max(steps.steps, 1),), compressed.dtype),  # scratch
    )
    call = jax.ffi.ffi_call(TARGET, shapes, vmap_method="expand_dims")
    return call(compressed, *steps.operands())[0]
