"""The jaxpr interpreter: nodes, recorded operations and the three passes.

Forward, every variable becomes a `Node` holding its first-order dependency matrix (or
nothing, for constants) and, when known, its concrete value. Each equation records how its
outputs depend on its operands (`LinkOp`) and, where it is nonlinear, which pairs of
dependency rows meet in its second derivative (`PairOp`). Backward, `pull` marks the
elements the output depends on (liveness). Last, `pairs` turns the live nonlinear terms into
sparse products whose sum is the Hessian pattern.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.extend import core as jcore

from .._errors import SparsityWarning
from . import _const
from ._maps import GroupMap, IndexMap, take_rows, union

#: Loops whose carried dependencies have not settled after this many sweeps are treated
#: as coupling every carried element with every input that enters the loop.
MAX_FIXED_POINT_SWEEPS = 32


def is_float(dtype) -> bool:
    """Whether values of ``dtype`` can carry derivatives (bfloat16 included, keys not)."""
    return jnp.issubdtype(dtype, np.inexact)


def _numeric(dtype) -> bool:
    """Whether values of ``dtype`` are plain NumPy arrays (not PRNG keys or tokens)."""
    return not jnp.issubdtype(dtype, jax.dtypes.extended)


class Node:
    """One array value of the traced program: its dependency matrix, value and liveness."""

    __slots__ = ("shape", "dtype", "size", "dep", "value", "live")

    def __init__(self, shape, dtype, dep: sp.csr_array | None = None, value=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.size = math.prod(self.shape)
        self.dep = dep if dep is not None and dep.nnz else None
        self.value = value
        self.live = None

    @classmethod
    def of(cls, aval, dep=None, value=None) -> Node:
        return cls(getattr(aval, "shape", ()), getattr(aval, "dtype", bool), dep, value)

    @classmethod
    def constant(cls, value) -> Node:
        """A known constant (an unknown one for PRNG keys, which have no NumPy value)."""
        if not _numeric(value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype):
            return cls(value.shape, value.dtype)
        value = np.asarray(value)
        return cls(value.shape, value.dtype, value=value)

    def ensure_live(self) -> np.ndarray:
        if self.live is None:
            self.live = np.zeros(self.size, bool)
        return self.live

    def live_count(self) -> int:
        return 0 if self.live is None else int(self.live.sum())


class LinkOp:
    """``out`` depends to first order on ``src`` through ``map``."""

    __slots__ = ("out", "src", "map")

    def __init__(self, out: Node, src: Node, map_):
        self.out, self.src, self.map = out, src, map_

    def pull(self) -> None:
        if self.out.live is not None and self.src.dep is not None:
            self.map.pull(self.out.live, self.src.ensure_live())

    def pairs(self, acc: list) -> None:
        pass


class PairOp:
    """Second-order term: for each live ``out[e[k]]``, rows ``a[ia[k]]`` and ``b[ib[k]]`` meet.

    ``None`` for ``e``, ``ia`` or ``ib`` means ``arange(out.size)``.
    """

    __slots__ = ("out", "a", "ia", "b", "ib", "e")

    def __init__(self, out: Node, a: Node, ia, b: Node, ib, e=None):
        self.out, self.a, self.ia, self.b, self.ib, self.e = out, a, ia, b, ib, e

    def pull(self) -> None:
        pass

    def pairs(self, acc: list) -> None:
        if self.out.live is None or self.a.dep is None or self.b.dep is None:
            return
        mask = self.out.live if self.e is None else self.out.live[self.e]
        if not mask.any():
            return
        k = np.flatnonzero(mask)
        ia = k if self.ia is None else self.ia[k]
        ib = k if self.ib is None else self.ib[k]
        same = self.a is self.b and (ia is ib or np.array_equal(ia, ib))
        # Terms with an empty row add nothing: dropped before their rows are gathered.
        both = _filled(self.a.dep, ia) & (True if same else _filled(self.b.dep, ib))
        if not both.all():
            ia, ib = ia[both], (ia[both] if same else ib[both])
        acc.append((take_rows(self.a.dep, ia), None if same else take_rows(self.b.dep, ib)))


def _filled(d, idx: np.ndarray) -> np.ndarray:
    """Whether row ``idx[k]`` of ``d`` holds an entry (``False`` for -1). O(len(idx))."""
    safe = np.maximum(idx, 0)
    return (idx >= 0) & (d.indptr[safe + 1] > d.indptr[safe])


class LoopOp:
    """A loop body recorded once at the fixed point of its carried dependencies.

    Liveness is iterated to its own fixed point: a carried element is live if the loop's
    result needs it or if the next iteration's live elements need it.
    """

    __slots__ = ("body", "carry_in", "carry_out")

    def __init__(self, body: list, carry_in: Sequence[Node], carry_out: Sequence[Node]):
        self.body, self.carry_in, self.carry_out = body, list(carry_in), list(carry_out)

    def pull(self) -> None:
        while True:
            before = sum(c.live_count() for c in self.carry_in)
            for ci, co in zip(self.carry_in, self.carry_out, strict=True):
                if ci.live is not None and co.dep is not None and co is not ci:
                    co.ensure_live()[:] |= ci.live
            for op in reversed(self.body):
                op.pull()
            if sum(c.live_count() for c in self.carry_in) == before:
                return

    def pairs(self, acc: list) -> None:
        for op in self.body:
            op.pairs(acc)


class OverBudget(Exception):  # noqa: N818  (a signal, caught by `detect`)
    """A dependency matrix would exceed the interpreter's ``budget`` of stored entries."""


def fold_values(eqn, values: list) -> list:
    """The output values of an equation from its operands' values (``None``: unknown).

    Known when every operand value is and the outputs are plain arrays (not PRNG keys).
    """
    numeric = all(_numeric(getattr(v.aval, "dtype", bool)) for v in eqn.outvars)
    if numeric and all(v is not None for v in values):
        return _const.evaluate(eqn, values)
    return [None] * len(eqn.outvars)


Rule = Callable[["Interpreter", object, list[Node]], list[Node]]

#: Rules by primitive name, filled in by the `_rules` package.
RULES: dict[str, Rule] = {}


class Interpreter:
    """Runs the forward pass over a jaxpr, recording operations into ``ops``.

    ``warned`` (primitives already warned about), ``frames`` (the custom-derivative rules
    being analysed, innermost last) and ``memo`` (per-equation results worth keeping, such
    as traced derivative rules) are shared with every child recorder. With a ``budget``,
    a dependency matrix that could hold more stored entries than it raises `OverBudget`
    before it is built.
    """

    def __init__(
        self, n: int, warned: set[str] | None = None, frames=None, memo=None, budget=None
    ):
        self.n = n
        self.budget = budget
        self.ops: list = []
        self.warned = set() if warned is None else warned
        self.frames: list = [] if frames is None else frames
        self.memo: dict = {} if memo is None else memo

    def child(self) -> Interpreter:
        """A fresh recorder (for a loop or rule body) sharing the detection's state."""
        return Interpreter(self.n, self.warned, self.frames, self.memo, self.budget)

    # ------------------------------------------------------------------ running

    def run(self, jaxpr, consts: Sequence[Node], args: Sequence[Node]) -> list[Node]:
        """Interprets an open ``jaxpr`` on ``consts`` and ``args`` nodes; returns outputs."""
        env: dict = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return Node.constant(v.val)
            return env[v]

        for v, node in zip(jaxpr.constvars, consts, strict=True):
            env[v] = node
        for v, node in zip(jaxpr.invars, args, strict=True):
            env[v] = node
        for eqn in jaxpr.eqns:
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            for v, node in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, jcore.DropVar):
                    env[v] = node
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: Sequence[Node]) -> list[Node]:
        """Interprets a closed jaxpr (its constants are known values)."""
        consts = [Node.constant(c) for c in closed.consts]
        return self.run(closed.jaxpr, consts, args)

    def equation(self, eqn, ins: list[Node]) -> list[Node]:
        name = eqn.primitive.name
        avals = [v.aval for v in eqn.outvars]
        rule = RULES.get(name)
        inline = getattr(rule, "inline", False)
        if not inline and all(i.dep is None for i in ins):
            return self.fold(eqn, ins)
        if not inline and not any(is_float(a.dtype) for a in avals):
            return [Node.of(a) for a in avals]
        if rule is None:
            outs = self.conservative(eqn, ins)
        else:
            outs = rule(self, eqn, ins)
        for o in outs:
            if o.dep is not None and not is_float(o.dtype):
                o.dep = None
        return outs

    def fold(self, eqn, ins: list[Node]) -> list[Node]:
        """Outputs of an equation none of whose operands depends on the inputs."""
        values = fold_values(eqn, [i.value for i in ins])
        return [Node.of(v.aval, value=x) for v, x in zip(eqn.outvars, values, strict=True)]

    def conservative(
        self, eqn, ins: list[Node], warn: bool = True, reason: str | None = None
    ) -> list[Node]:
        """Every output element depends nonlinearly on every operand element.

        With ``warn``, a `SparsityWarning` names the primitive (once per detection) and
        ``reason`` (by default: it has no rule).
        """
        name = eqn.primitive.name
        if warn and name not in self.warned:
            self.warned.add(name)
            why = reason or f"lazyhess has no sparsity rule for primitive {name!r}"
            warnings.warn(
                f"{why}; assuming every output element depends nonlinearly on every element "
                "of its operands. The pattern stays valid but may be denser than the truth.",
                SparsityWarning,
                stacklevel=2,
            )
        outs = []
        for v in eqn.outvars:
            out = self.link(v.aval, [(i, GroupMap.everything(i.size, v.aval.size)) for i in ins])
            self.nonlinear(out)
            outs.append(out)
        return outs

    # ------------------------------------------------------------------ recording

    def check_broadcast(self, size: int, sources: Sequence[Node]) -> None:
        """Raises `OverBudget` early when ``sources`` broadcast to ``size`` elements would.

        Numpy broadcasting repeats each source row ``size / source.size`` times, so the
        count is exact and the index arrays of such a broadcast need not be built first.
        """
        if self.budget is not None:
            count = sum(s.dep.nnz * (size // s.size) for s in sources if s.dep is not None)
            if count > self.budget:
                raise OverBudget(f"a dependency matrix of {count} entries")

    def link(self, aval_or_shape, sources, dtype=None) -> Node:
        """A node depending on each ``(node, map)`` source; records the links."""
        if dtype is None:
            shape, dtype = aval_or_shape.shape, aval_or_shape.dtype
        else:
            shape = aval_or_shape
        sources = [(s, m) for s, m in sources if s.dep is not None]
        if self.budget is not None:
            bound = 0
            for s, m in sources:
                bound += m.bound(s.dep, self.budget - bound)
            if bound > self.budget:
                raise OverBudget(f"a dependency matrix of up to {bound} entries")
        out = Node(shape, dtype, union([m.apply(s.dep) for s, m in sources]))
        if out.dep is not None:
            for s, m in sources:
                self.ops.append(LinkOp(out, s, m))
        return out

    def pull_link(self, out: Node, src: Node, map_=None) -> None:
        """Records a link used only for liveness (``out.dep`` is already set)."""
        if src.dep is not None:
            self.ops.append(LinkOp(out, src, map_ or IndexMap(None)))

    def nonlinear(self, out: Node) -> None:
        """Marks ``out`` as a nonlinear function of everything it depends on, elementwise."""
        if out.dep is not None:
            self.ops.append(PairOp(out, out, None, out, None))

    def pair(self, out: Node, a: Node, ia, b: Node, ib, e=None) -> None:
        """Records the bilinear term ``a[ia[k]] * b[ib[k]]`` feeding ``out[e[k]]``."""
        if out.dep is not None and a.dep is not None and b.dep is not None:
            self.ops.append(PairOp(out, a, ia, b, ib, e))


def backward(ops: list, outputs: Sequence[Node]) -> None:
    """Liveness: marks every element the (float) ``outputs`` depend on."""
    for o in outputs:
        if o.dep is not None:
            o.ensure_live()[:] = True
    for op in reversed(ops):
        op.pull()


def release_unpaired(ops: list, keep: Sequence[Node]) -> None:
    """Frees the dependency matrices that the Hessian assembly will not read.

    Call after `backward`: from then on only pair terms (and the nodes in ``keep``) need
    their matrices.
    """
    needed = {id(node) for node in keep}

    def walk(ops, visit):
        for op in ops:
            if isinstance(op, LoopOp):
                walk(op.body, visit)
            else:
                visit(op)

    def mark(op):
        if isinstance(op, PairOp):
            needed.update((id(op.a), id(op.b)))

    def drop(op):
        if isinstance(op, LinkOp):
            for node in (op.out, op.src):
                if id(node) not in needed:
                    node.dep = None

    walk(ops, mark)
    walk(ops, drop)


def largest_block(ops: list) -> int:
    """A lower bound on the Hessian pattern's nnz: its largest single live block.

    Each live pair term ``a[ia[k]] × b[ib[k]]`` puts a dense block of ``|row a| · |row b|``
    entries into the pattern. Call after `backward`. Cost O(number of live pair elements),
    never the O(nnz) of the pattern itself.
    """
    largest = 0
    for op in ops:
        if isinstance(op, LoopOp):
            largest = max(largest, largest_block(op.body))
            continue
        if not isinstance(op, PairOp) or op.out.live is None:
            continue
        if op.a.dep is None or op.b.dep is None:
            continue
        mask = op.out.live if op.e is None else op.out.live[op.e]
        k = np.flatnonzero(mask)
        if not k.size:
            continue
        ia = k if op.ia is None else op.ia[k]
        ib = k if op.ib is None else op.ib[k]
        ok = (ia >= 0) & (ib >= 0)
        size_a = np.diff(op.a.dep.indptr)[ia[ok]]
        size_b = np.diff(op.b.dep.indptr)[ib[ok]]
        if size_a.size:
            largest = max(largest, int(np.max(size_a * size_b)))
    return largest


def hessian_coordinates(ops: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR arrays (indptr, indices) of the Hessian pattern: sorted, symmetric.

    The pattern is the union of ``Aᵀ B`` over the recorded pair terms. Terms pairing rows
    with themselves (``Aᵀ A``, symmetric) share one sparse product; the others give their
    single-entry rows as coordinates directly and the rest one product, symmetrised.
    """
    acc: list = []
    for op in ops:
        op.pairs(acc)
    rows, cols, sym, cross_a, cross_b = [], [], [], [], []
    for a, b in acc:
        if b is None:
            sym.append(a)
            continue
        single = (np.diff(a.indptr) == 1) & (np.diff(b.indptr) == 1)
        if single.any():
            r = a.indices[a.indptr[:-1][single]]
            c = b.indices[b.indptr[:-1][single]]
            rows += [r, c]
            cols += [c, r]
        rest = np.flatnonzero(~single)
        if rest.size:
            cross_a.append(take_rows(a, rest))
            cross_b.append(take_rows(b, rest))
    parts = []
    if sym:
        a = sp.vstack(sym, format="csr")
        parts.append(a.T.tocsr() @ a)
    if cross_a:
        a = sp.vstack(cross_a, format="csr")
        c = a.T.tocsr() @ sp.vstack(cross_b, format="csr")
        parts += [c, c.T.tocsr()]
    if rows:
        r, c = np.concatenate(rows), np.concatenate(cols)
        parts.append(sp.csr_array((np.ones(r.size, bool), (r, c)), shape=(n, n)))
    if not parts:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    h = parts[0]
    for part in parts[1:]:
        h = h + part
    h = h.tocsr()
    h.sum_duplicates()
    h.sort_indices()
    return h.indptr.astype(np.int64), h.indices.astype(np.int64)
