"""Which outputs of a jaxpr depend on which of its inputs: a forward data-flow pass.

Used to tell a constant Hessian (one whose HVP reads no input but the direction) from
others. Sound, not exact: an output marked independent never reads a marked input, while
an output marked dependent may not (``x - x``). Calls are followed into their bodies;
every other primitive with a body (loops, conditionals, custom derivatives' rules) makes
each of its outputs depend on all of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from jax.extend import core as jcore

# Primitives that evaluate a body once, as a function call, and the parameter holding it.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",  # jit's name in older jax
    "closed_call": "call_jaxpr",
    "remat2": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
}


def depends(closed: jcore.ClosedJaxpr, marked: Sequence[bool]) -> list[bool]:
    """For each output of ``closed``, whether it may depend on an input ``marked`` True."""
    return _walk(closed.jaxpr, marked)


def _walk(jaxpr: jcore.Jaxpr, marked: Sequence[bool]) -> list[bool]:
    reached = {var for var, m in zip(jaxpr.invars, marked, strict=True) if m}

    def touched(atom: object) -> bool:
        return not isinstance(atom, jcore.Literal) and atom in reached

    for eqn in jaxpr.eqns:
        inputs = [touched(atom) for atom in eqn.invars]
        if not any(inputs):
            continue
        body = eqn.params.get(_CALLS.get(eqn.primitive.name, ""))
        if isinstance(body, jcore.ClosedJaxpr):
            body = body.jaxpr
        if isinstance(body, jcore.Jaxpr) and len(body.invars) == len(inputs):
            outputs = _walk(body, inputs)
        else:
            outputs = [True] * len(eqn.outvars)
        reached.update(var for var, out in zip(eqn.outvars, outputs, strict=True) if out)
    return [touched(atom) for atom in jaxpr.outvars]
