"""Hessians in the forms ``scipy.optimize.minimize`` asks for."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from ._arguments import Mode, check_kwargs, check_options
from ._hessian import Hessian, hessian


class _Points:
    """The Hessian of ``fun(x, *args)`` at the latest ``x``, built once and moved with ``at``.

    The first call builds a :class:`Hessian` (detecting the sparsity pattern and coloring it
    on first need); each new ``x`` or ``args`` gives ``H.at(x, *args)``, which reuses the
    compiled kernels, the pattern and the coloring. Repeated calls at the same point reuse
    the same Hessian and its cache.
    """

    def __init__(self, fun: Callable, options: dict[str, Any], kwargs: dict[str, Any]):
        check_options(fun, mode=options["mode"], sparsity=options["sparsity"])
        check_kwargs(fun, kwargs)
        self._fun = fun
        self._options = options
        self._kwargs = kwargs
        self._hessian: Hessian | None = None
        self._x: np.ndarray | None = None
        self._args: tuple = ()

    def __call__(self, x: Any, args: tuple) -> Hessian:
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(
                f"x must be a 1-D array, as scipy.optimize passes it; got shape {x.shape}. "
                "Ravel a structured input first (jax.flatten_util.ravel_pytree)."
            )
        current = self._hessian
        if current is not None and self._at(x, args):
            return current
        if current is None:
            current = hessian(
                self._fun, jnp.asarray(x), *args, argnums=0, **self._options, **self._kwargs
            )
        else:
            current = current.at(jnp.asarray(x), *args, **self._kwargs)
        self._hessian, self._x, self._args = current, x.copy(), args
        return current

    def _at(self, x: np.ndarray, args: tuple) -> bool:
        """Whether ``(x, args)`` is the current point (``args`` compared by identity)."""
        same_args = len(args) == len(self._args) and all(map(operator.is_, args, self._args))
        last = self._x
        return (
            same_args
            and last is not None
            and x.shape == last.shape
            and bool(np.array_equal(x, last))
        )


def hess(
    fun: Callable, *, sparsity: Any = "auto", mode: Mode = "fwd_over_rev", **kwargs: Any
) -> Callable[..., sp.csr_array]:
    """``hess(x, *args)``: the sparse Hessian of ``fun(x, *args)``, as scipy.optimize wants.

    Pass the result as ``scipy.optimize.minimize(..., method="trust-constr", hess=...)`` (or
    ``"Newton-CG"``, ``"trust-exact"``...). ``x`` is the 1-D array scipy iterates on and
    ``args`` is minimize's ``args=``. Each call returns a ``scipy.sparse.csr_array`` with the
    pattern's coordinates in the same order at every point.

    The first call detects the sparsity pattern and colors it; later points reuse both, and
    the compiled kernels, through :meth:`Hessian.at`. Each new point costs one HVP per color
    (three for a tridiagonal Hessian, whatever ``n``); a repeated point costs nothing.

    Args:
        fun: scalar function ``fun(x, *args, **kwargs)`` of a 1-D array ``x``.
        sparsity: as in :func:`lazyhess.hessian`: ``"auto"``, ``None`` (dense, stored as CSR)
            or a pattern.
        mode: HVP mode, as in :func:`lazyhess.hessian`.
        **kwargs: passed to ``fun``, not differentiated.

    Example:
        >>> import jax.numpy as jnp, numpy as np, scipy.optimize
        >>> import lazyhess.scipy
        >>> f = lambda x: jnp.sum((x - 2.0) ** 2) + jnp.sum(x[1:] * x[:-1])
        >>> res = scipy.optimize.minimize(f, np.zeros(5), method="trust-constr",
        ...                               jac=lazyhess.scipy.jac(f), hess=lazyhess.scipy.hess(f))
        >>> bool(res.success)
        True
    """
    points = _Points(fun, dict(sparsity=sparsity, mode=mode), kwargs)

    def hess_at(x: np.ndarray, *args: Any) -> sp.csr_array:
        return points(x, args).to_sparse("csr")

    return hess_at


def hessp(
    fun: Callable, *, mode: Mode = "fwd_over_rev", **kwargs: Any
) -> Callable[..., np.ndarray]:
    """``hessp(x, p, *args)``: the product ``H(x) @ p`` by one HVP, as scipy.optimize wants.

    Pass the result as ``minimize(..., method="Newton-CG", hessp=...)`` (or ``"trust-ncg"``,
    ``"trust-krylov"``, ``"trust-constr"``). Calls at the same ``x`` share one linearisation
    of the gradient; each costs one HVP and never forms the Hessian.

    Args:
        fun: scalar function ``fun(x, *args, **kwargs)`` of a 1-D array ``x``.
        mode: HVP mode, as in :func:`lazyhess.hessian`.
        **kwargs: passed to ``fun``, not differentiated.
    """
    points = _Points(fun, dict(sparsity=None, mode=mode), kwargs)

    def hessp_at(x: np.ndarray, p: np.ndarray, *args: Any) -> np.ndarray:
        H = points(x, args)
        p = np.asarray(p)
        if p.shape != np.shape(x):
            raise ValueError(f"hessp needs p of the same shape as x {np.shape(x)}; got {p.shape}.")
        return np.asarray(H.hvp(jnp.asarray(p, H.flat.dtype)))

    return hessp_at


def linear_operator(
    fun: Callable, *, mode: Mode = "fwd_over_rev", **kwargs: Any
) -> Callable[..., LinearOperator]:
    """``op(x, *args)``: the Hessian of ``fun`` at ``x`` as a scipy ``LinearOperator``.

    Returns :meth:`Hessian.as_linear_operator` at each point: a matrix-free Hessian for
    ``minimize(..., method="Newton-CG", hess=...)`` or ``scipy.sparse.linalg`` solvers and
    eigensolvers. Each product costs one HVP.

    Args:
        fun: scalar function ``fun(x, *args, **kwargs)`` of a 1-D array ``x``.
        mode: HVP mode, as in :func:`lazyhess.hessian`.
        **kwargs: passed to ``fun``, not differentiated.
    """
    points = _Points(fun, dict(sparsity=None, mode=mode), kwargs)

    def operator_at(x: np.ndarray, *args: Any) -> LinearOperator:
        return points(x, args).as_linear_operator()

    return operator_at


def jac(fun: Callable, **kwargs: Any) -> Callable[..., np.ndarray]:
    """``jac(x, *args)``: the gradient of ``fun`` as a numpy array, compiled once.

    A convenience for ``minimize(..., jac=...)`` next to :func:`hess`; the gradient is
    ``jax.grad(fun)`` under ``jax.jit`` (recompiled only for new argument shapes).

    Args:
        fun: scalar function ``fun(x, *args, **kwargs)`` of a 1-D array ``x``.
        **kwargs: passed to ``fun``, not differentiated.
    """
    check_kwargs(fun, kwargs)
    grad = jax.jit(jax.grad(lambda x, *args: fun(x, *args, **kwargs)))

    def jac_at(x: np.ndarray, *args: Any) -> np.ndarray:
        return np.asarray(grad(jnp.asarray(x), *args))

    return jac_at
