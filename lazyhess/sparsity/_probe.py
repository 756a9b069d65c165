"""The pattern on 64 sampled inputs, with one bit per sampled input and element.

When detection outgrows its budget it asks how dense the pattern's principal submatrix
over a sample of inputs is. Interpreting the program with CSR dependency rows restricted
to the sample answers exactly, but builds an index array (and row pointers) as large as
every intermediate, in NumPy: for an all-pairs energy that is n²/9 elements per equation,
against XLA's fused loop for one HVP.

Here each value carries instead a ``uint64`` array laid out in its own shape: bit ``s``
of element ``e`` is set when ``e`` depends to first order on sampled input ``s``. A
broadcast is then a NumPy view, a reshape or transpose a view, a reduction a bitwise or
along axes, and an elementwise operation one bitwise or; liveness runs backward on
boolean arrays of the same shapes. Each rule below mirrors the `_rules` rule of its
primitive term for term (the same masks of constant zeros, the same pair terms, the same
unrolling of scans), so the submatrix is the one the CSR probe finds. A primitive without
a rule here (or a loop the CSR rules would not unroll) raises `Unsupported`, and the
caller falls back to the CSR probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Literal

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from ._graph import RULES, _numeric, fold_values, is_float
from ._rules import _arithmetic, _control, _elementwise, _linalg, _movement, _reductions

#: The most inputs a probe samples: one bit each in a ``uint64``.
BITS = 64


class Unsupported(Exception):  # noqa: N818  (a signal, caught by `_detect.probe_density`)
    """The program uses a primitive (or a loop form) this probe has no rule for."""


class _Node:
    """What the backward pass needs of a value that depends: its shape and live elements.

    Kept apart from `Val` so that the recorded operations hold no bits: each value's bits
    are freed after its last use in the forward pass.
    """

    __slots__ = ("shape", "live")

    def __init__(self, shape: tuple):
        self.shape = shape
        self.live: np.ndarray | Literal[True] | None = None  # True: every element


class Val:
    """One array value: its dependency bits (``None``: none) and known value."""

    __slots__ = ("shape", "dtype", "bits", "value", "node")

    def __init__(self, shape, dtype, bits: np.ndarray | None = None, value=None, sure=False):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.bits = None if bits is None or not (sure or bits.any()) else np.asarray(bits)
        self.value = value
        self.node = None if self.bits is None else _Node(self.shape)

    @classmethod
    def of(cls, aval, bits=None, value=None) -> Val:
        return cls(getattr(aval, "shape", ()), getattr(aval, "dtype", bool), bits, value)

    @classmethod
    def constant(cls, value) -> Val:
        """A known constant (an unknown one for values without a NumPy form, such as keys)."""
        if not _numeric(value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype):
            return cls(value.shape, value.dtype)
        array = np.asarray(value)
        return cls(array.shape, array.dtype, value=array)


class _Link:
    """``out`` depends on ``src``; ``pull(live_out, live_src)`` ors ``src``'s live elements."""

    __slots__ = ("out", "src", "pull", "full")

    def __init__(self, out: _Node, src: _Node, pull: Callable, full: bool):
        self.out, self.src, self.pull, self.full = out, src, pull, full


class _Pair:
    """Second-order terms of ``out``: bits ``a[k]`` meet bits ``b[k]`` if flat ``e[k]`` lives.

    Only terms whose two sides both hold bits are kept (few: the sample is small).
    """

    __slots__ = ("out", "e", "a", "b")

    def __init__(self, out: _Node, e: np.ndarray, a: np.ndarray, b: np.ndarray):
        self.out, self.e, self.a, self.b = out, e, a, b

    def terms(self) -> tuple[np.ndarray, np.ndarray] | None:
        live = self.out.live
        if live is None:
            return None
        if live is True:
            return self.a, self.b
        k = live.ravel()[self.e]
        return self.a[k], self.b[k]


ProbeRule = Callable[["Probe", object, list[Val]], list[Val]]

#: Probe rules, keyed by the `_rules` rule they mirror (so the primitive names stay there).
_RULES: dict[Callable, ProbeRule] = {}


def _mirrors(*csr_rules):
    def deco(fn):
        for rule in csr_rules:
            _RULES[rule] = fn
        return fn

    return deco


class Probe:
    """Runs the forward pass on dependency bits, recording links and pair terms."""

    def __init__(self):
        self.ops: list = []

    def run(self, jaxpr, consts: Sequence[Val], args: Sequence[Val]) -> list[Val]:
        env: dict = {}

        def read(v):
            return Val.constant(v.val) if isinstance(v, jcore.Literal) else env[v]

        env.update(zip(jaxpr.constvars, consts, strict=True))
        env.update(zip(jaxpr.invars, args, strict=True))
        last = {}  # the equation that reads a variable last: its bits go after it
        for k, eqn in enumerate(jaxpr.eqns):
            last.update((v, k) for v in eqn.invars if not isinstance(v, jcore.Literal))
        last.update((v, len(jaxpr.eqns)) for v in jaxpr.outvars)
        done: dict[int, list] = {}
        for v, k in last.items():
            done.setdefault(k, []).append(v)
        for k, eqn in enumerate(jaxpr.eqns):
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            for v, val in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, jcore.DropVar):
                    env[v] = val
            for v in done.get(k, ()):
                env.pop(v, None)
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: Sequence[Val]) -> list[Val]:
        return self.run(closed.jaxpr, [Val.constant(c) for c in closed.consts], args)

    def equation(self, eqn, ins: list[Val]) -> list[Val]:
        """As `Interpreter.equation`, with this module's rules; `Unsupported` without one."""
        name = eqn.primitive.name
        csr_rule = RULES.get(name)
        rule = _RULES.get(csr_rule) if csr_rule is not None else None
        inline = getattr(csr_rule, "inline", False)
        depends = any(i.bits is not None for i in ins)
        if rule is None and (inline or depends):
            raise Unsupported(name)
        if not inline and not depends:
            return self.fold(eqn, ins)
        avals = [v.aval for v in eqn.outvars]
        if not inline and not any(is_float(a.dtype) for a in avals):
            return [Val.of(a) for a in avals]
        if any(jnp.issubdtype(getattr(x, "dtype", bool), np.complexfloating) for x in ins + avals):
            raise Unsupported(f"{name} on complex values")
        assert rule is not None
        outs = rule(self, eqn, ins)
        for o in outs:
            if o.bits is not None and not is_float(o.dtype):
                o.bits = o.node = None
        return outs

    def fold(self, eqn, ins: list[Val]) -> list[Val]:
        values = fold_values(eqn, [i.value for i in ins])
        return [Val.of(v.aval, value=x) for v, x in zip(eqn.outvars, values, strict=True)]

    def link(self, aval, sources) -> Val:
        """A value whose bits are the or of its sources' bits; records the links.

        Sources are ``(src, bits, pull, full)``: ``bits`` the source's contribution laid
        out like the output (None: nothing), ``pull(live_out, live_src)`` ors the source's
        elements that live outputs read, and ``full`` says every source element is read
        (so its bits reach the output, and all of it is live when all outputs are).
        """
        sources = [s for s in sources if s[0].bits is not None and s[1] is not None]
        if not sources:
            return Val.of(aval)
        bits = sources[0][1]
        for _, more, _, _ in sources[1:]:
            bits = bits if more is bits else np.bitwise_or(bits, more)
        sure = math.prod(aval.shape) > 0 and any(full for *_, full in sources)
        out = Val(aval.shape, aval.dtype, np.broadcast_to(bits, aval.shape), sure=sure)
        if out.node is not None:
            self.ops += [_Link(out.node, src.node, pull, full) for src, _, pull, full in sources]
        return out

    def pair(self, out: Val, a, b) -> None:
        """Records elementwise terms of ``out``: ``a`` and ``b`` laid out like it."""
        if out.node is None or a is None or b is None:
            return
        both = a != 0 if a is b else (a != 0) & (b != 0)
        e = np.flatnonzero(both)
        self.ops.append(_Pair(out.node, e, a.ravel()[e], b.ravel()[e]))


def probe_density(closed, leaf_sizes: Sequence[int], n_dynamic: int, seeded: np.ndarray) -> float:
    """The density of the pattern's principal submatrix over the inputs ``seeded``.

    ``seeded``: at most `BITS` sorted distinct flat inputs. Same answer as the CSR probe
    (`_detect.probe_density`); raises `Unsupported` where this probe has no rule. Cost:
    a few NumPy passes over every intermediate, with no index arrays.
    """
    probe = Probe()
    args, off = [], 0
    invars = closed.jaxpr.invars
    for v, size in zip(invars, leaf_sizes, strict=False):
        bits = np.zeros(size, np.uint64)
        inside = (seeded >= off) & (seeded < off + size)
        bits[seeded[inside] - off] = np.uint64(1) << np.flatnonzero(inside).astype(np.uint64)
        args.append(Val.of(v.aval, bits.reshape(v.aval.shape)))
        off += size
    args += [Val.of(v.aval) for v in invars[len(leaf_sizes) : len(leaf_sizes) + n_dynamic]]
    outs = [o for o in probe.run_closed(closed, args) if is_float(o.dtype)]
    for o in outs:
        if o.node is not None:
            o.node.live = True
    for op in reversed(probe.ops):
        if isinstance(op, _Link):
            _pull(op)
    sub = np.zeros((BITS, BITS), bool)
    for op in probe.ops:
        if isinstance(op, _Pair) and (terms := op.terms()) is not None:
            sub |= _meet(*terms)
    return int((sub | sub.T).sum()) / seeded.size**2


def _pull(op: _Link) -> None:
    """Liveness across one link; ``True`` stands for "every element", kept while it holds."""
    live, src = op.out.live, op.src
    if live is None or src.live is True:
        return
    if live is True and op.full:
        src.live = True
        return
    if live is True:
        live = np.ones(op.out.shape, bool)
    if src.live is None:
        src.live = np.zeros(src.shape, bool)
    op.pull(live, src.live)


def _meet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ``BITS x BITS`` submatrix of terms: bit ``s`` of ``a[k]`` meets bit ``t`` of ``b[k]``.

    Cost: a sort of the terms, then 64 passes over their distinct ``a``.
    """
    if a.size > 1:  # one term per distinct a, its b the or of theirs: the same product
        order = np.argsort(a)
        a, b = a[order], b[order]
        starts = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
        a, b = a[starts], np.bitwise_or.reduceat(b, starts)
    rows = np.zeros(BITS, np.uint64)
    for s in range(BITS):
        hit = ((a >> np.uint64(s)) & np.uint64(1)).astype(bool)
        if hit.any():
            rows[s] = np.bitwise_or.reduce(b[hit])
    shifts = np.arange(BITS, dtype=np.uint64)
    return ((rows[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)


# ---------------------------------------------------------------------- pulls


def _unbroadcast(in_shape: tuple, keep: np.ndarray | None = None) -> Callable:
    """Pull of a numpy broadcast of ``in_shape``: or over the broadcast axes (where ``keep``)."""

    def pull(live_out, live_in):
        live = live_out if keep is None else live_out & keep
        extra = live.ndim - len(in_shape)
        if extra:
            live = live.any(axis=tuple(range(extra)))
        pairs = enumerate(zip(in_shape, live.shape, strict=True))
        axes = tuple(d for d, (a, b) in pairs if a == 1 and b != 1)
        if axes:
            live = live.any(axis=axes, keepdims=True)
        live_in |= live

    return pull


def _same(live_out, live_in):
    live_in |= live_out


def _broadcast(val: Val, shape, keep: np.ndarray | None = None):
    """``(val, bits, pull)`` of an elementwise operand broadcast to ``shape``, -0 off ``keep``."""
    if val.bits is None:
        return val, None, None, True
    bits = np.broadcast_to(val.bits, shape)
    if keep is not None:
        bits = np.where(keep, bits, np.uint64(0))
    pull = _same if keep is None and val.shape == tuple(shape) else _unbroadcast(val.shape, keep)
    return val, bits, pull, keep is None


def _nonzero(val: Val, shape) -> np.ndarray | None:
    """Where a constant operand is nonzero, broadcast to ``shape``; None if unknown or full."""
    if val.bits is not None or val.value is None:
        return None
    nz = np.broadcast_to(np.asarray(val.value) != 0, shape)
    return None if nz.all() else nz


# ---------------------------------------------------------------------- rules


@_mirrors(_elementwise._linear_elementwise)
def _linear(probe, eqn, ins):
    """Mirrors `_elementwise._linear_elementwise` (real values: no nonlinear ``abs``)."""
    outs = []
    for k, v in enumerate(eqn.outvars):
        multi = eqn.primitive.multiple_results
        srcs = [ins[k]] if multi else [i for i in ins if is_float(i.dtype)]
        outs.append(probe.link(v.aval, [_broadcast(i, v.aval.shape) for i in srcs]))
    return outs


@_mirrors(_elementwise._no_derivative)
def _constant(probe, eqn, ins):
    """Mirrors `_elementwise._no_derivative`."""
    return [Val.of(v.aval) for v in eqn.outvars]


@_mirrors(_elementwise._unary_nonlinear, _elementwise._nonlinear_elementwise)
def _nonlinear(probe, eqn, ins):
    """Mirrors the smooth elementwise rules: the output's bits meet themselves."""
    (v,) = eqn.outvars
    out = probe.link(v.aval, [_broadcast(i, v.aval.shape) for i in ins if is_float(i.dtype)])
    probe.pair(out, out.bits, out.bits)
    return [out]


@_mirrors(_arithmetic._integer_pow)
def _integer_pow(probe, eqn, ins):
    """Mirrors `_arithmetic._integer_pow`."""
    (v,) = eqn.outvars
    y = eqn.params["y"]
    if y == 0:
        return [Val.of(v.aval)]
    out = probe.link(v.aval, [_broadcast(ins[0], v.aval.shape)])
    if y != 1:
        probe.pair(out, out.bits, out.bits)
    return [out]


@_mirrors(_arithmetic._mul)
def _mul(probe, eqn, ins):
    """Mirrors `_arithmetic._mul`: each factor counts where the other may be nonzero."""
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    sa = _broadcast(a, shape, _nonzero(b, shape))
    sb = sa if b is a else _broadcast(b, shape, _nonzero(a, shape))
    out = probe.link(v.aval, [sa, sb])
    probe.pair(out, sa[1], sb[1])
    return [out]


@_mirrors(_arithmetic._div)
def _div(probe, eqn, ins):
    """Mirrors `_arithmetic._div`: the divisor counts where the numerator may be nonzero."""
    (v,) = eqn.outvars
    shape = v.aval.shape
    a, b = ins
    sa = _broadcast(a, shape)
    sb = _broadcast(b, shape, _nonzero(a, shape))
    out = probe.link(v.aval, [sa, sb])
    probe.pair(out, sa[1], sb[1])
    probe.pair(out, sb[1], sb[1])
    return [out]


@_mirrors(_arithmetic._select_n)
def _select_n(probe, eqn, ins):
    """Mirrors `_arithmetic._select_n`: a known predicate keeps only the selected case."""
    (v,) = eqn.outvars
    shape = v.aval.shape
    pred, cases = ins[0], ins[1:]
    if pred.value is None:
        return [probe.link(v.aval, [_broadcast(c, shape) for c in cases])]
    which = np.broadcast_to(np.asarray(pred.value).astype(np.int64), shape)
    return [probe.link(v.aval, [_broadcast(c, shape, which == k) for k, c in enumerate(cases)])]


@_mirrors(_movement._broadcast_in_dim)
def _broadcast_in_dim(probe, eqn, ins):
    """Mirrors `_movement._broadcast_in_dim` (a NumPy view)."""
    (v,) = eqn.outvars
    expanded = [1] * len(v.aval.shape)
    for src, dst in enumerate(eqn.params["broadcast_dimensions"]):
        expanded[dst] = ins[0].shape[src]
    (a,) = ins[:1]
    if a.bits is None:
        return [Val.of(v.aval)]
    bits = a.bits.reshape(expanded)
    expand = _unbroadcast(tuple(expanded))

    def pull(live_out, live_in):
        expand(live_out, live_in.reshape(expanded))

    return [probe.link(v.aval, [(a, bits, pull, True)])]


@_mirrors(_movement._reshape)
def _reshape(probe, eqn, ins):
    """Mirrors `_movement._reshape` (row-major order kept)."""
    (v,) = eqn.outvars
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        raise Unsupported("reshape with dimensions")
    a = ins[0]

    def pull(live_out, live_in):
        live_in |= live_out.reshape(a.shape)

    bits = None if a.bits is None else a.bits.reshape(v.aval.shape)
    return [probe.link(v.aval, [(a, bits, pull, True)])]


@_mirrors(_movement._transpose)
def _transpose(probe, eqn, ins):
    """Mirrors `_movement._transpose`."""
    (v,) = eqn.outvars
    perm = tuple(eqn.params["permutation"])
    a = ins[0]
    inverse = tuple(np.argsort(perm))

    def pull(live_out, live_in):
        live_in |= live_out.transpose(inverse)

    bits = None if a.bits is None else a.bits.transpose(perm)
    return [probe.link(v.aval, [(a, bits, pull, True)])]


@_mirrors(_movement._rev)
def _rev(probe, eqn, ins):
    """Mirrors `_movement._rev`."""
    (v,) = eqn.outvars
    axes = tuple(eqn.params["dimensions"])
    a = ins[0]

    def pull(live_out, live_in):
        live_in |= np.flip(live_out, axes)

    bits = None if a.bits is None else np.flip(a.bits, axes)
    return [probe.link(v.aval, [(a, bits, pull, True)])]


@_mirrors(_movement._slice)
def _slice(probe, eqn, ins):
    """Mirrors `_movement._slice`."""
    (v,) = eqn.outvars
    p = eqn.params
    strides = p["strides"] or (1,) * len(ins[0].shape)
    key = tuple(
        slice(*a) for a in zip(p["start_indices"], p["limit_indices"], strides, strict=True)
    )
    a = ins[0]

    def pull(live_out, live_in):
        live_in[key] |= live_out

    return [probe.link(v.aval, [(a, None if a.bits is None else a.bits[key], pull, False)])]


@_mirrors(_movement._concatenate)
def _concatenate(probe, eqn, ins):
    """Mirrors `_movement._concatenate`."""
    (v,) = eqn.outvars
    axis = eqn.params["dimension"]
    ends = np.cumsum([i.shape[axis] for i in ins])
    parts = [i.bits if i.bits is not None else np.zeros(i.shape, np.uint64) for i in ins]
    bits = np.concatenate(parts, axis=axis)
    sources = []
    for i, end in zip(ins, ends, strict=True):
        key = (slice(None),) * axis + (slice(int(end) - i.shape[axis], int(end)),)

        def pull(live_out, live_in, key=key):
            live_in |= live_out[key]

        sources.append((i, bits, pull, True))
    return [probe.link(v.aval, sources)]


@_mirrors(_reductions._reduce)
def _reduce(probe, eqn, ins):
    """Mirrors `_reductions._reduce` for sums and extrema (products: `Unsupported`)."""
    (v,) = eqn.outvars
    if eqn.primitive.name == "reduce_prod":
        raise Unsupported("reduce_prod")
    axes = tuple(eqn.params["axes"])
    a = ins[0]

    def pull(live_out, live_in):
        live_in |= np.expand_dims(live_out, axes)

    bits = None if a.bits is None else _or_along(a.bits, axes)
    return [probe.link(v.aval, [(a, bits, pull, True)])]


def _or_along(bits: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """The bitwise or of ``bits`` along ``axes``.

    Short axes go slice by slice: NumPy's reduction along a short strided axis is several
    times slower.
    """
    for axis in sorted(axes, reverse=True):
        if 1 < bits.shape[axis] <= 8:
            head = (slice(None),) * axis
            slices = [bits[(*head, i)] for i in range(bits.shape[axis])]
            bits = slices[0] | slices[1]
            for more in slices[2:]:
                bits |= more
        else:
            bits = np.bitwise_or.reduce(bits, axis=axis)
    return np.asarray(bits)


def _layout(shape, contract, batch) -> tuple[list[int], tuple[int, int, int]]:
    """The axis order (batch, free, contract) of a ``dot_general`` operand and its sizes."""
    free = [d for d in range(len(shape)) if d not in contract and d not in batch]
    sizes = [math.prod(shape[d] for d in ds) for ds in (batch, free, contract)]
    return [*batch, *free, *contract], (sizes[0], sizes[1], sizes[2])


@_mirrors(_linalg._dot_general)
def _dot_general(probe, eqn, ins):
    """Mirrors `_linalg._dot_general`: each output reads whole fibers; dependent pairs meet.

    A constant operand with zeros (the CSR rule's exact local Jacobian) is `Unsupported`.
    """
    (v,) = eqn.outvars
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for node, other in zip(ins, ins[::-1], strict=True):
        if node.bits is not None and other.bits is None and other.value is not None:
            if not np.all(other.value):
                raise Unsupported("dot_general with a constant operand holding zeros")
    arranged = []
    for node, contract, batch in ((ins[0], lc, lb), (ins[1], rc, rb)):
        order, sizes = _layout(node.shape, contract, batch)
        bits = None if node.bits is None else node.bits.transpose(order).reshape(sizes)
        arranged.append((node, order, sizes, bits))
    nb, ni, nj = arranged[0][2][0], arranged[0][2][1], arranged[1][2][1]
    sources = []
    for side, (node, order, sizes, bits) in enumerate(arranged):
        if bits is None:
            continue
        fiber = _or_along(bits, (2,))
        fiber = fiber[:, :, None] if side == 0 else fiber[:, None, :]
        out_bits = np.broadcast_to(fiber, (nb, ni, nj)).reshape(v.aval.shape)
        inverse = tuple(np.argsort(order))

        def pull(live_out, live_in, side=side, order=order, sizes=sizes, inverse=inverse):
            need = live_out.reshape(nb, ni, nj).any(axis=2 - side)
            need = np.broadcast_to(need[:, :, None], sizes)
            live_in |= need.reshape([live_in.shape[d] for d in order]).transpose(inverse)

        sources.append((node, out_bits, pull, True))
    out = probe.link(v.aval, sources)
    lbits, rbits = arranged[0][3], arranged[1][3]
    if lbits is not None and rbits is not None:
        left, right, e = _linalg.product_terms(lbits != 0, rbits != 0)
        if out.node is not None:
            probe.ops.append(_Pair(out.node, e, lbits.ravel()[left], rbits.ravel()[right]))
    return [out]


@_mirrors(_control._call)
def _call(probe, eqn, ins):
    """Mirrors `_control._call`: the body, inlined."""
    sub = _control._sub_jaxpr(eqn.params)
    if hasattr(sub, "consts"):
        return probe.run_closed(sub, ins[: len(sub.jaxpr.invars)])
    return probe.run(sub, [], ins[: len(sub.invars)])


@_mirrors(_control._scan)
def _scan(probe, eqn, ins):
    """Mirrors `_control._scan` where it unrolls; longer scans are `Unsupported`.

    Steps without bits or values in their slices share one interpretation of the body.
    """
    p = eqn.params
    if all(i.bits is None for i in ins):
        return probe.fold(eqn, ins)
    body, length = p["jaxpr"], p["length"]
    if length * max(len(body.jaxpr.eqns), 1) > _control.UNROLL_BUDGET:
        raise Unsupported("a scan the CSR rules would not unroll")
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, carry = ins[:n_consts], ins[n_consts : n_consts + n_carry]
    xs = ins[n_consts + n_carry :]
    per_step: list = [None] * length
    blank_outs = None
    for t in range(length - 1, -1, -1) if p["reverse"] else range(length):
        slices = []
        for x in xs:
            value = None if x.value is None else np.asarray(x.value)[t]
            step = Val(x.shape[1:], x.dtype, value=value)
            if x.bits is not None:

                def pull(live_out, live_in, t=t):
                    live_in[t] |= live_out

                aval = SimpleNamespace(shape=x.shape[1:], dtype=x.dtype)
                step = probe.link(aval, [(x, x.bits[t], pull, False)])
            slices.append(step)
        # Without a carry, steps whose slices hold neither bits nor values see the same
        # operands: one interpretation serves them all (its terms and, pulled from each
        # step's ys, its liveness are the union of theirs, which is what unrolling gives).
        blank = not n_carry and all(x.bits is None and x.value is None for x in slices)
        if blank and blank_outs is not None:
            outs = blank_outs
        else:
            outs = probe.run_closed(body, [*consts, *carry, *slices])
            blank_outs = outs if blank else blank_outs
        carry, per_step[t] = outs[:n_carry], outs[n_carry:]
    ys = []
    for k, v in enumerate(eqn.outvars[n_carry:]):
        steps = [per_step[t][k] for t in range(length)]
        if all(s.bits is None for s in steps):
            known = all(s.value is not None for s in steps)
            value = np.stack([s.value for s in steps]).reshape(v.aval.shape) if known else None
            ys.append(Val.of(v.aval, value=value))
            continue
        bits = np.stack(
            [s.bits if s.bits is not None else np.zeros(s.shape, np.uint64) for s in steps]
        ).reshape(v.aval.shape)
        sources = []
        for t, s in enumerate(steps):

            def pull(live_out, live_in, t=t):
                live_in |= live_out[t].reshape(live_in.shape)

            sources.append((s, bits, pull, True))
        ys.append(probe.link(v.aval, sources))
    return [*carry, *ys]
