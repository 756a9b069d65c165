"""Ipopt through cyipopt: the problem interface with the Lagrangian's sparse Hessian.

``lazyhess.ipopt.IpoptProblem(f, x0, c)`` gives ``objective``, ``gradient``,
``constraints``, ``jacobianstructure``, ``jacobian``, ``hessianstructure`` and ``hessian``
as cyipopt calls them; ``.problem(lb, ub, cl, cu)`` wraps it in a ``cyipopt.Problem``
(the ``ipopt`` extra).
"""

from ._ipopt import IpoptProblem

__all__ = ["IpoptProblem"]
