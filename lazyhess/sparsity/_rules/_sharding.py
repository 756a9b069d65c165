"""``shard_map``: its body interpreted once per device, in lock step, with its collectives.

A ``shard_map`` runs its body on every device of the manual mesh axes, each on its block
of the inputs (``in_specs``), and assembles the outputs from the blocks (``out_specs``).
Detection does the same with dependency rows: every device's inputs are index maps into
the global inputs, the body's equations are interpreted for all devices equation by
equation, and the collectives link devices:

* ``psum``, ``pmax``, ``pmin`` (and ``psum_invariant``): each device's result depends on
  the operand of every device in its group (linear or piecewise linear: no second order);
* ``all_gather``: a concatenation of the group's operands, in axis-index order (a copy);
* ``ppermute``: a copy of the source device's operand (zeros where none is sent);
* ``pvary`` and ``pbroadcast``: the operand itself; ``axis_index``: a known constant.

So a sharded function keeps the exact pattern of the function it shards. Other collectives
(``all_to_all``, ``reduce_scatter``, ...) couple every device's operands conservatively,
with a `SparsityWarning`; collectives inside control flow within the body make the whole
``shard_map`` conservative, with a warning.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from jax.extend import core as jcore

from .. import _structure as st
from .._graph import Interpreter, Node, SparsityWarning, is_float
from .._maps import GroupMap, IndexMap
from ._common import register

_REDUCTIONS = {"psum": np.sum, "psum_invariant": np.sum, "pmax": np.max, "pmin": np.min}
_IDENTITIES = ("pvary", "pbroadcast")
_COLLECTIVES = frozenset(
    [
        *_REDUCTIONS,
        *_IDENTITIES,
        "axis_index",
        "all_gather",
        "all_gather_invariant",
        "ppermute",
        "all_to_all",
        "ragged_all_to_all",
        "reduce_scatter",
        "psend",
        "precv",
    ]
)


def _names(axes) -> tuple[str, ...]:
    return (axes,) if isinstance(axes, str) else tuple(axes)


class _Devices:
    """The devices of the manual mesh axes, as coordinates in mesh-axis order."""

    def __init__(self, mesh, manual):
        self.axes = [a for a in mesh.axis_names if a in manual]
        self.sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
        self.coords = list(itertools.product(*(range(self.sizes[a]) for a in self.axes)))

    def index(self, coord, axes) -> int:
        """Position of ``coord`` along ``axes`` (major first), as ``axis_index`` counts."""
        where = dict(zip(self.axes, coord, strict=True))
        k = 0
        for a in _names(axes):
            k = k * self.sizes[a] + where[a]
        return k

    def group(self, coord, axes) -> list[int]:
        """The devices that differ from ``coord`` only along ``axes``, by axis index."""
        names = _names(axes)
        fixed = [c for a, c in zip(self.axes, coord, strict=True) if a not in names]
        members = []
        for d, other in enumerate(self.coords):
            rest = [c for a, c in zip(self.axes, other, strict=True) if a not in names]
            if rest == fixed:
                members.append(d)
        return sorted(members, key=lambda d: self.index(self.coords[d], names))

    def block(self, shape, spec, coord) -> tuple[tuple[int, ...], tuple[slice, ...]]:
        """The local shape and the global slices of the block ``coord`` holds under ``spec``."""
        entries = list(spec) + [None] * (len(shape) - len(spec))
        local, slices = [], []
        for n, entry in zip(shape, entries, strict=True):
            names = () if entry is None else _names(entry)
            parts = math.prod(self.sizes[a] for a in names)
            size = n // parts
            k = self.index(coord, names) if names else 0
            local.append(size)
            slices.append(slice(k * size, (k + 1) * size))
        return tuple(local), tuple(slices)


def _nested_collective(jaxpr) -> str | None:
    """The name of a collective inside a sub-jaxpr of ``jaxpr``'s equations, if any."""
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if not isinstance(inner, jcore.Jaxpr):
                    continue
                for e in inner.eqns:
                    if e.primitive.name in _COLLECTIVES:
                        return e.primitive.name
                found = _nested_collective(inner)
                if found:
                    return found
    return None


def _collective(ctx: Interpreter, eqn, ins: list[list[Node]], devices: _Devices):
    """Outputs of a collective for every device, from every device's operands."""
    name, p = eqn.primitive.name, eqn.params
    avals = [v.aval for v in eqn.outvars]
    if name == "axis_index":
        dtype = avals[0].dtype
        return [
            [Node.constant(np.asarray(devices.index(c, p["axis_name"]), dtype))]
            for c in devices.coords
        ]
    if name in _IDENTITIES:
        return [list(operands) for operands in ins]
    outs = []
    for coord in devices.coords:
        if name in _REDUCTIONS:
            group = devices.group(coord, p["axes"])
            results = []
            for k, aval in enumerate(avals):
                members = [ins[m][k] for m in group]
                values = [m.value for m in members if m.dep is None and m.value is not None]
                if len(values) == len(members):
                    value = _REDUCTIONS[name](np.stack(values), axis=0)
                    results.append(Node.of(aval, value=np.asarray(value, aval.dtype)))
                else:
                    results.append(ctx.link(aval, [(m, IndexMap(None)) for m in members]))
            outs.append(results)
        elif name in ("all_gather", "all_gather_invariant"):
            group = devices.group(coord, p["axis_name"])
            x = ins[group[0]][0]
            dim = p["all_gather_dimension"]
            shape = x.shape if p["tiled"] else x.shape[:dim] + (1,) + x.shape[dim:]
            idxs = st.concatenate([shape] * len(group), dim)
            sources = [(ins[m][0], IndexMap(i)) for m, i in zip(group, idxs, strict=True)]
            outs.append([ctx.link(avals[0], sources)])
        elif name == "ppermute":
            axes = p["axis_name"]
            group = devices.group(coord, axes)
            target = devices.index(coord, axes)
            sources = [(ins[group[s]][0], IndexMap(None)) for s, t in p["perm"] if t == target]
            if not sources:
                zeros = np.zeros(avals[0].shape, avals[0].dtype)
                outs.append([Node.of(avals[0], value=zeros)])
            else:
                outs.append([ctx.link(avals[0], sources)])
        else:
            everything = [node for operands in ins for node in operands]
            outs.append(_coupled(ctx, eqn, everything, avals))
    return outs


def _coupled(ctx: Interpreter, eqn, sources: list[Node], avals) -> list[Node]:
    """Outputs depending nonlinearly on every element of ``sources``, with a warning."""
    name = eqn.primitive.name
    if name not in ctx.warned:
        ctx.warned.add(name)
        warnings.warn(
            f"lazyhess has no sparsity rule for {name!r} inside shard_map; assuming it "
            "couples every element of every device's operands. The pattern stays valid "
            "but may be denser than the truth.",
            SparsityWarning,
            stacklevel=4,
        )
    outs = []
    for aval in avals:
        out = ctx.link(
            aval, [(s, GroupMap.everything(s.size, math.prod(aval.shape))) for s in sources]
        )
        ctx.nonlinear(out)
        outs.append(out)
    return outs


@register("shard_map")
def _shard_map(ctx, eqn, ins):
    """``shard_map``, body per device in lock step (see the module docstring).

    First and second order are those of the per-device bodies joined by the collectives'
    links. Example: GENROSE with each device holding a block of ``x`` and ``ppermute``
    passing the neighbouring boundary element has the tridiagonal pattern of the unsharded
    function, not a dense one.
    """
    p = eqn.params
    body = p["jaxpr"]
    body = getattr(body, "jaxpr", body)
    nested = _nested_collective(body)
    if nested is not None:
        return ctx.conservative(
            eqn, ins, reason=f"shard_map has the collective {nested!r} inside control flow"
        )
    mesh = p["mesh"]
    devices = _Devices(mesh, p.get("newly_manual_axes") or frozenset(mesh.axis_names))
    args = []
    for coord in devices.coords:
        local = []
        for node, spec in zip(ins, p["in_specs"], strict=True):
            shape, slices = devices.block(node.shape, spec, coord)
            idx = st.positions(node.shape)[slices].ravel()
            value = None if node.value is None else np.asarray(node.value)[slices]
            block = Node(shape, node.dtype, value=value)
            if node.dep is not None:
                block = ctx.link(shape, [(node, IndexMap(idx))], dtype=node.dtype)
            local.append(block)
        args.append(local)
    outs = _lockstep(ctx, body, args, devices)
    results = []
    for k, (v, spec) in enumerate(zip(eqn.outvars, p["out_specs"], strict=True)):
        shape = v.aval.shape
        sources = []
        for d, coord in enumerate(devices.coords):
            _, slices = devices.block(shape, spec, coord)
            idx = np.full(shape, -1, np.int64)
            idx[slices] = st.positions(outs[d][k].shape)
            sources.append((outs[d][k], IndexMap(idx.ravel())))
        out = ctx.link(v.aval, sources) if is_float(v.aval.dtype) else Node.of(v.aval)
        results.append(out)
    return results


def _lockstep(ctx: Interpreter, jaxpr, args: list[list[Node]], devices: _Devices):
    """Runs ``jaxpr`` for every device, one equation at a time for all of them."""
    envs = [dict(zip(jaxpr.invars, local, strict=True)) for local in args]

    def read(env, v):
        return Node.constant(v.val) if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = [[read(env, v) for v in eqn.invars] for env in envs]
        if eqn.primitive.name in _COLLECTIVES:
            outs = _collective(ctx, eqn, ins, devices)
        else:
            outs = [ctx.equation(eqn, operands) for operands in ins]
        for env, results in zip(envs, outs, strict=True):
            for v, node in zip(eqn.outvars, results, strict=True):
                if not is_float(node.dtype):
                    node.dep = None
                if not isinstance(v, jcore.DropVar):
                    env[v] = node
    return [[read(env, v) for v in jaxpr.outvars] for env in envs]
