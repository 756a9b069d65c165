"""Hessian sparsity detection from the jaxpr, and the sparsity pattern type."""

from .._errors import SparsityWarning
from ._detect import call_sparsity, hessian_sparsity
from ._pattern import SparsityPattern
from ._reads import depends

__all__ = ["SparsityPattern", "SparsityWarning", "call_sparsity", "depends", "hessian_sparsity"]
