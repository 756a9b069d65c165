"""Colorings of Hessian sparsity patterns: which columns can share one Hessian-vector product.

``hessian_coloring_from_sparsity`` (also exported at the top level) colors a whole pattern
and returns a ``ColoredPattern`` that knows how to read every entry back from the
compressed Hessian; ``partial_coloring`` colors just the columns a requested block needs
(``block_coloring`` when the block's entries are at hand).
``whole_cost`` is the model by which whole-Hessian colorings (``whole=True``,
``whole_coloring``) weigh colors against recovery by substitution; ``whole_candidates``
lists the colorings a caller that can time them should try.

A leaf package: it imports only the bottom layer of lazyhess (``_csr``, ``_formats``), never
sparsity detection; ``lazyhess.hessian_coloring(fun, *args)``, which detects and then
colors, lives above both leaves.
"""

from ._api import (
    MethodOption,
    OrderOption,
    block_coloring,
    check_options,
    hessian_coloring_from_sparsity,
    input_avals,
    partial_coloring,
    whole_candidates,
    whole_coloring,
    whole_cost,
)
from ._colored import ColoredPattern

__all__ = [
    "ColoredPattern",
    "MethodOption",
    "OrderOption",
    "block_coloring",
    "check_options",
    "hessian_coloring_from_sparsity",
    "input_avals",
    "partial_coloring",
    "whole_candidates",
    "whole_coloring",
    "whole_cost",
]
