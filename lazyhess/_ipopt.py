"""The problem interface of cyipopt (Ipopt), with the Lagrangian's Hessian from lazyhess."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ._arguments import Mode
from ._hessian import Hessian, hessian


class IpoptProblem:
    """``min f(x)`` subject to ``cl <= c(x) <= cu``, ``lb <= x <= ub``, as Ipopt asks for it.

    The object has the methods of cyipopt's problem interface: ``objective``,
    ``gradient``, ``constraints``, ``jacobianstructure``, ``jacobian``,
    ``hessianstructure`` and ``hessian``. The Hessian is that of the Lagrangian
    ``L(x, lam, sigma) = sigma * f(x) + lam @ c(x)``: one ``lazyhess.hessian(L, x, lam,
    sigma, argnums=0)``, whose pattern holds for every multiplier (they are runtime
    arguments, never constants of the detection), moved to each iterate with
    ``H.at(x, lam, sigma)``, which reuses the pattern, its coloring and the compiled
    kernels. Its lower triangle has the same coordinates at every iterate, in the order
    of ``hessianstructure()``. The Jacobian's structure is the cross block of the
    Hessian pattern of ``lam @ c(x)`` over ``(x, lam)``; its values come from one
    compiled reverse-mode Jacobian (dense, then gathered: meant for modest ``m * n``).

    Cost per iterate: one HVP per color of the Lagrangian's pattern for ``hessian``, a
    compiled gradient, constraint function and Jacobian for the others.

    Args:
        objective: ``f(x) -> scalar`` for a 1-D JAX array ``x``.
        x0: a starting point (its shape and dtype are those of every later ``x``).
        constraints: ``c(x) -> 1-D array`` of length ``m``, or None for ``m = 0``.
        mode: HVP mode, as in :func:`lazyhess.hessian`.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> problem = lazyhess.ipopt.IpoptProblem(
        ...     lambda x: jnp.sum(x**2), np.ones(3), lambda x: jnp.array([x[0] * x[1]])
        ... )
        >>> problem.hessianstructure()
        (array([0, 1, 1, 2], dtype=int32), array([0, 0, 1, 2], dtype=int32))
    """

    def __init__(
        self,
        objective: Callable,
        x0: Any,
        constraints: Callable | None = None,
        *,
        mode: Mode = "fwd_over_rev",
    ):
        x0 = jnp.asarray(x0)
        if x0.ndim != 1:
            raise ValueError(
                f"x0 must be a 1-D array, as Ipopt passes x; got shape {x0.shape}. Ravel a "
                "structured input first (jax.flatten_util.ravel_pytree)."
            )
        self.n = int(x0.size)
        self._dtype = x0.dtype
        constrain = _no_constraints if constraints is None else constraints
        out = jax.eval_shape(constrain, x0)
        if len(out.shape) != 1:
            raise ValueError(f"constraints must return a 1-D array; got shape {out.shape} at x0.")
        self.m = int(out.shape[0])

        def lagrangian(x, lam, sigma):
            return sigma * objective(x) + jnp.dot(lam, constrain(x))

        self._objective = jax.jit(objective)
        self._gradient = jax.jit(jax.grad(objective))
        self._constraints = jax.jit(constrain)
        self._jacobian = jax.jit(jax.jacrev(constrain))
        lam0, sigma0 = jnp.zeros(self.m, x0.dtype), jnp.ones((), x0.dtype)
        self._hessian: Hessian = hessian(lagrangian, x0, lam0, sigma0, argnums=0, mode=mode)
        pattern = self._hessian.sparsity
        assert pattern is not None  # sparsity="auto" always gives a pattern
        csr = sp.csr_array(pattern.to_scipy("csr"))
        rows = np.repeat(np.arange(self.n, dtype=np.int32), np.diff(csr.indptr))
        lower = rows >= csr.indices
        self._tril = (rows[lower], csr.indices[lower].astype(np.int32))
        self._jac = _jacobian_structure(constrain, x0, lam0)

    def objective(self, x: np.ndarray) -> float:
        """``f(x)``."""
        return float(self._objective(self._x(x)))

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """``∇f(x)``, shape ``(n,)``."""
        return np.asarray(self._gradient(self._x(x)))

    def constraints(self, x: np.ndarray) -> np.ndarray:
        """``c(x)``, shape ``(m,)``."""
        return np.asarray(self._constraints(self._x(x)))

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the Jacobian's structural nonzeros (row-major)."""
        return self._jac

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """The Jacobian's values at the coordinates of ``jacobianstructure()``."""
        return np.asarray(self._jacobian(self._x(x)))[self._jac]

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the Lagrangian Hessian's lower triangle (row-major).

        The same at every iterate: the detected pattern holds for every ``x``,
        multiplier and objective factor.
        """
        return self._tril

    def hessian(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        """``∇²ₓ(obj_factor f + lagrange @ c)`` at ``x``, at ``hessianstructure()``'s points."""
        lam = jnp.asarray(np.asarray(lagrange, dtype=self._dtype).reshape(self.m))
        sigma = jnp.asarray(obj_factor, dtype=self._dtype)
        lower = self._hessian.at(self._x(x), lam, sigma).tril()
        return np.asarray(lower.data)

    def problem(self, lb=None, ub=None, cl=None, cu=None) -> Any:
        """A ``cyipopt.Problem`` for this interface, with bounds on ``x`` and ``c(x)``.

        Needs cyipopt (``pip install 'lazyhess[ipopt]'``). Unset bounds are infinite
        (``cl = cu`` makes an equality constraint).
        """
        try:
            import cyipopt  # pyright: ignore[reportMissingImports] - the optional ipopt extra
        except ImportError as err:
            raise ImportError(
                "IpoptProblem.problem needs cyipopt: pip install 'lazyhess[ipopt]' (Ipopt's "
                "library must be installed, e.g. apt-get install coinor-libipopt-dev)."
            ) from err
        inf = np.full(self.n, np.inf)
        lb = -inf if lb is None else np.broadcast_to(np.asarray(lb, float), (self.n,))
        ub = inf if ub is None else np.broadcast_to(np.asarray(ub, float), (self.n,))
        cl = np.full(self.m, -np.inf) if cl is None else np.asarray(cl, float).reshape(self.m)
        cu = np.full(self.m, np.inf) if cu is None else np.asarray(cu, float).reshape(self.m)
        return cyipopt.Problem(  # pyright: ignore[reportAttributeAccessIssue]
            n=self.n, m=self.m, problem_obj=self, lb=lb, ub=ub, cl=cl, cu=cu
        )

    def _x(self, x: np.ndarray) -> jax.Array:
        x = np.asarray(x, dtype=self._dtype)
        if x.shape != (self.n,):
            raise ValueError(f"x must have shape ({self.n},); got {x.shape}.")
        return jnp.asarray(x)


def _no_constraints(x: jax.Array) -> jax.Array:
    return jnp.zeros(0, x.dtype)


def _jacobian_structure(constraints, x0, lam0) -> tuple[np.ndarray, np.ndarray]:
    """The Jacobian pattern of ``c``: the cross block of the Hessian pattern of ``lam @ c(x)``.

    ``∂²(lam @ c) / ∂lam_i ∂x_j = ∂c_i / ∂x_j``, so the detected second-order pattern over
    ``(x, lam)`` holds the first-order pattern of ``c``. Row-major coordinates.
    """
    n, m = x0.size, lam0.size
    if m == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    from .sparsity import hessian_sparsity

    pattern = hessian_sparsity(
        lambda x, lam: jnp.dot(lam, constraints(x)), x0, lam0, argnums=(0, 1)
    )
    block = sp.csr_array(pattern.to_scipy("csr"))[n:, :n].tocoo()
    order = np.lexsort((block.col, block.row))
    return block.row[order].astype(np.int32), block.col[order].astype(np.int32)
