"""Hessians for ``scipy.optimize`` and ``scipy.sparse.linalg``.

``lazyhess.scipy.hess(f)`` is a ``hess=`` callable returning a sparse CSR Hessian per
iterate, reusing the sparsity pattern, coloring and compiled kernels; ``hessp(f)`` gives
``hessp=`` by one HVP per product; ``linear_operator(f)`` a matrix-free ``LinearOperator``;
``jac(f)`` the compiled gradient.
"""

from ._scipy import hess, hessp, jac, linear_operator

__all__ = ["hess", "hessp", "jac", "linear_operator"]
