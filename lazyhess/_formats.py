"""Output formats for Hessian values stored in a pattern's order."""

from __future__ import annotations

import copy
import math
import mmap
import weakref
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental.sparse import BCOO

from ._csr import entry_rows, shape_of

Format = Literal[
    "bcoo",
    "csr",
    "csc",
    "coo",
    "dense",
    "numpy",
    "numpy_dense",
    "scipy_coo",
    "scipy_csr",
    "scipy_csc",
]
FORMATS: tuple[str, ...] = get_args(Format)
#: asdex's names for the formats both libraries have.
ALIASES = {"numpy_dense": "numpy", "scipy_coo": "coo", "scipy_csr": "csr", "scipy_csc": "csc"}


# Above this many elements a host array reaches the device faster by ``jax.device_put``
# (a transfer) than by ``jnp.asarray`` (a transfer and a compiled copy): 1e6 float64 took
# 0.64 ms against 1.25 ms on CPU; below 3e4, ``jnp.asarray`` is faster (14 us vs 28 us).
LARGE_TRANSFER = 2**16
# Results of this many bytes or more are allocated as fresh pages (see host_zeros): from
# here on numpy asks the kernel for huge pages.
LARGE_RESULT = 2**22


# A host scalar reaches the device fastest as the argument of a compiled identity, whose
# dispatch transfers it in C++: 4.5 us against 13 us by ``jnp.asarray`` (a cached H[i, j]).
# Only for scalars: every new shape would compile.
_identity = jax.jit(lambda value: value)


def to_device(values: Any) -> jax.Array:
    """``values`` (a host or jax array) as a jax array, by the faster route for its size.

    On a single CPU device a large writable host array is handed over without a copy
    (DLPack): the jax array then shares its memory, so the caller must not write to
    ``values`` afterwards.
    """
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            return _identity(values)
        owner = _owner(values)
        if owner is not None:
            return owner
        if values.size > LARGE_TRANSFER:
            if _shareable(values):
                return jax.dlpack.from_dlpack(values)
            return jax.device_put(values)
    return jnp.asarray(values)


def host_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero host array for a result; large ones are fresh pages, zeroed on first touch.

    From 4 MiB numpy asks for huge pages, so each 2 MB region a scattered write touches is
    cleared whole, sometimes after the kernel compacts memory for it: 100 rows at n = 1e5
    (80 MB, ~300 entries) cost 13 ms to fill, and 100 rows at n = 1e4 (8 MB) 2.2-6.4 ms
    on CLPLATEA and WOODS instead of 1.3-1.4 ms. The array's offset from the page also made
    DLPack copy it (56 ms at 80 MB). Here pages are 4 KB and page-aligned: the fill costs
    about 2 us per page written (RANDSP8's 800 scattered entries: 10.5 ms against 8.9 ms),
    the hand-off to jax nothing, and pages never written read as zeros.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size < LARGE_RESULT:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, size), dtype).reshape(shape)


def _owner(values: np.ndarray) -> jax.Array | None:
    """The jax array whose whole buffer ``values`` is, if it is one; else ``None``.

    A fetched HVP result is a read-only view of the kernel's output: when a request asks
    for exactly that (a fresh point's row, computed flat, see ``Kernels.seeded``) the
    output itself is the answer. ``jax.device_put`` of the view shares its memory too but
    took 60-110 us at n = 1e5 (GENROSE's row: ~100 us of ~600).
    """
    base = values.base
    while isinstance(base, np.ndarray):
        base = base.base
    owner = base.obj if isinstance(base, memoryview) else None
    if (
        isinstance(owner, jax.Array)
        and owner.shape == values.shape
        and owner.dtype == values.dtype
        and values.flags.c_contiguous
        and len(owner.sharding.device_set) == 1
        and not owner.is_deleted()
        and values.ctypes.data == owner.unsafe_buffer_pointer()
    ):
        return owner
    return None


def _shareable(values: np.ndarray) -> bool:
    """Whether the default device can use ``values``' memory as it is.

    Only with one device, which is then the default one: DLPack places the array on CPU
    device 0, committed to it. Read-only arrays (views of cached HVP results) cannot be
    exported, and DLPack needs a compact layout and a standard dtype.
    """
    return (
        values.flags.writeable
        and values.flags.c_contiguous
        and values.dtype.kind in "biufc"
        and jax.device_count() == 1
        and jax.default_backend() == "cpu"
    )


def check_format(format: Any) -> str:
    """The canonical name of an output format (asdex's names accepted).

    Raises a ValueError listing the formats if ``format`` is not one of them.
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(
            f"format={format!r} is not a valid format; use one of {', '.join(FORMATS)}."
        )
    return ALIASES.get(format, format)


_DEVICE_INDICES: dict[int, jax.Array] = {}
_HOST_COORDINATES: dict[int, Coordinates] = {}
_HOST_LOWER: dict[int, tuple[np.ndarray, sp.coo_array]] = {}
_HOST_SHELLS: dict[int, dict[str, Any]] = {}


def _per_pattern(cache: dict, csr: sp.csr_array, build: Callable[[], Any]) -> Any:
    """``build()`` once per pattern, kept in ``cache`` while ``csr`` lives.

    The patterns passed here are lazyhess's own, never changed in place.
    """
    key = id(csr)
    value = cache.get(key)
    if value is None:
        value = cache[key] = build()
        weakref.finalize(csr, cache.pop, key, None)
    return value


def _bcoo_indices(csr: sp.csr_array) -> np.ndarray:
    """``csr``'s stored entries as BCOO indices: ``(nnz, 2)``, rows then columns."""
    return np.stack([entry_rows(csr.indptr), csr.indices], axis=1)


def _device_indices(csr: sp.csr_array) -> jax.Array:
    """``csr``'s BCOO indices on the device, sent once per pattern.

    Built and sent at every call, they took 0.11 ms of a 0.24 ms unjitted
    ``sparse_hessian(f, x)(x)`` (GENROSE, n = 1e4, 3e4 entries).
    """
    return _per_pattern(_DEVICE_INDICES, csr, lambda: jnp.asarray(_bcoo_indices(csr)))


class Coordinates(NamedTuple):
    """A pattern's stored entries for host outputs: row pointers, rows and columns.

    32-bit where the pattern allows (scipy's own choice), shared: copy before handing out.
    """

    indptr: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def coordinates(csr: sp.csr_array) -> Coordinates:
    """``csr``'s :class:`Coordinates`, made once per pattern.

    Patterns keep 64-bit indices; copied out at every call, they took 0.31 ms of
    CLPLATEA's 0.37 ms CSR output at n = 1e5 (5e5 entries), and the rows were rebuilt.
    """

    def build() -> Coordinates:
        n = shape_of(csr)[0]
        dtype = np.int32 if max(n, csr.nnz) < 2**31 else np.int64
        return Coordinates(
            csr.indptr.astype(dtype), entry_rows(csr.indptr, dtype), csr.indices.astype(dtype)
        )

    return _per_pattern(_HOST_COORDINATES, csr, build)


def host_data(data: Any, what: str) -> np.ndarray:
    """``data`` as a numpy array for a host output (numpy or scipy), named ``what``.

    Raises a TypeError inside a jax transformation, whose values are traced: without it,
    numpy's conversion failed with an error naming neither the output nor the way out.
    """
    if isinstance(data, jax.core.Tracer):
        raise TypeError(
            f"{what} gives host arrays (numpy or scipy), which cannot hold the traced values "
            "of a call inside jax.jit, vmap or grad; use the 'bcoo' or 'dense' format there, "
            "or ask outside the transformation."
        )
    return np.asarray(data)


def scipy_shell(csr: sp.csr_array, format: str, data: np.ndarray) -> Any:
    """The scipy array in ``csr``'s pattern whose entries, in row-major order, are ``data``.

    ``"csr"`` and ``"csc"`` give a CSR array (a CSC one is converted from it once its
    values are in), ``"coo"`` a COO array. The array holds ``data`` itself, not a copy:
    writing ``data`` later fills it, so it can be built while the values are computed.
    """
    kind = "coo" if format == "coo" else "csr"
    templates = _per_pattern(_HOST_SHELLS, csr, dict)
    template = templates.get(kind)
    if template is None:
        n = shape_of(csr)[0]
        kept = coordinates(csr)
        empty = np.empty(csr.nnz, data.dtype)
        if kind == "coo":
            template = sp.coo_array((empty, (kept.rows, kept.cols)), shape=(n, n))
        else:
            template = sp.csr_array((empty, kept.cols, kept.indptr), shape=(n, n))
        templates[kind] = _held(template)
    return _filled(template, data)


def _filled(template: Any, data: np.ndarray) -> Any:
    """A copy of the scipy array ``template`` holding ``data`` and index arrays of its own.

    Templates are built by scipy's constructor once per pattern and copied after, without
    its checks: a cached CSR output of WOODS at n = 1e4 took 11 instead of 19 us, COO 13
    instead of 35, ``H.tril()`` 27 instead of 52. The copy's indices are its own, so that
    in-place methods (``eliminate_zeros``) change no other result.
    """
    matrix = copy.copy(template)
    if isinstance(template, sp.coo_array):
        matrix.coords = tuple(c.copy() for c in template.coords)
    else:
        matrix.indices, matrix.indptr = template.indices.copy(), template.indptr.copy()
    matrix.data = data
    return matrix


def _held(template: Any) -> Any:
    """``template`` with its values replaced by one broadcast zero, to keep it small."""
    template.data = np.broadcast_to(np.zeros((), template.data.dtype), template.data.shape)
    return template


def tril_shell(csr: sp.csr_array, dtype: Any) -> tuple[sp.coo_array, np.ndarray]:
    """A COO array of ``csr``'s lower triangle, values unset, and their stored positions.

    ``np.take(values, positions, out=matrix.data)`` fills it from all stored entries'
    values. The positions and the triangle's coordinates are computed once per pattern
    (recomputed at every call, they took half of ``H.tril()``: GENROSE, n = 1e4).
    """

    def build() -> tuple[np.ndarray, sp.coo_array]:
        _, rows, cols = coordinates(csr)
        positions = np.flatnonzero(rows >= cols)
        n = shape_of(csr)[0]
        empty = np.empty(positions.size)
        lower = sp.coo_array((empty, (rows[positions], cols[positions])), shape=(n, n))
        return positions, _held(lower)

    positions, template = _per_pattern(_HOST_LOWER, csr, build)
    return _filled(template, np.empty(positions.size, dtype)), positions


def pattern_output(
    data: Any, csr: sp.csr_array, format: Format, lead: tuple[int, ...] = ()
) -> Any:
    """The matrix whose stored entries, in ``csr``'s row-major order, are ``data``.

    Sparse formats keep exactly the pattern's coordinates, explicit zeros included, in the
    same order at every call. ``data`` has shape ``lead + (nnz,)``: with leading axes
    (output elements or samples) ``"dense"``/``"numpy"`` give ``lead + (n, n)`` and
    ``"bcoo"`` a batched BCOO; scipy formats need no leading axes.
    """
    name = check_format(format)
    n = shape_of(csr)[0]
    if name in ("csr", "csc") and not lead:
        matrix = scipy_shell(csr, name, host_data(data, f"format={format!r}"))
        return matrix if name == "csr" else matrix.tocsc()
    if name == "bcoo":
        data = to_device(data)
        if isinstance(data, jax.core.Tracer):  # constants of the caller's program
            indices = jnp.asarray(_bcoo_indices(csr))
        else:
            indices = _device_indices(csr)
        if lead:
            size = int(np.prod(lead))
            data = data.reshape((size, -1))
            indices = jnp.broadcast_to(indices, (size,) + indices.shape)
        matrix = BCOO(
            (data, indices),
            shape=(int(np.prod(lead)),) * bool(lead) + (n, n),
            indices_sorted=True,
            unique_indices=True,
        )
        return matrix.reshape(lead + (n, n)) if len(lead) > 1 else matrix
    _, rows, cols = coordinates(csr)
    if name == "dense":
        data = to_device(data)
        return jnp.zeros(lead + (n, n), data.dtype).at[..., rows, cols].set(data)
    data = host_data(data, f"format={format!r}")
    if name == "numpy":
        dense = np.zeros(lead + (n, n), data.dtype)
        dense[..., rows, cols] = data
        return dense
    if lead:
        raise ValueError(
            f"format={format!r} holds one matrix, but this Hessian has leading axes {lead} "
            "(output elements or samples); use 'bcoo', 'dense' or 'numpy', or select one "
            "output first."
        )
    return scipy_shell(csr, name, data)
