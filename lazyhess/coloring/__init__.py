"""Colorings of Hessian sparsity patterns: which columns can share one Hessian-vector product.

``hessian_coloring_from_sparsity`` and ``hessian_coloring`` (also exported at the top level)
color a whole pattern and return a ``ColoredPattern`` that knows how to read every entry
back from the compressed Hessian; ``partial_coloring`` colors just the columns a
requested block needs. ``whole_cost`` is the model by which whole-Hessian colorings
(``whole=True``) weigh colors against recovery by substitution.
"""

from ._api import (
    hessian_coloring,
    hessian_coloring_from_sparsity,
    partial_coloring,
    whole_cost,
)
from ._colored import ColoredPattern

__all__ = [
    "ColoredPattern",
    "hessian_coloring",
    "hessian_coloring_from_sparsity",
    "partial_coloring",
    "whole_cost",
]
