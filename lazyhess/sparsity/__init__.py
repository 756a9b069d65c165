"""Hessian sparsity detection from the jaxpr, and the sparsity pattern type."""

from ._detect import hessian_sparsity
from ._graph import SparsityWarning
from ._pattern import SparsityPattern

__all__ = ["SparsityPattern", "SparsityWarning", "hessian_sparsity"]
