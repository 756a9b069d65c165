"""Extreme eigenvalues of a network's loss Hessian with scipy's ``eigsh``, matrix-free.

``H.as_linear_operator()`` is the flat Hessian (all parameters of the pytree, laid end to
end) as a scipy ``LinearOperator`` whose products are HVPs, so Lanczos finds the sharpest
and the most negative curvature without forming H. The dense eigenvalues check the result.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

import lazyhess

jax.config.update("jax_enable_x64", True)


def loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2)


def extreme_eigenvalues(H, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest and ``k`` smallest (algebraic) eigenvalues, by Lanczos on HVPs."""
    op = H.as_linear_operator()
    v0 = np.ones(op.shape[0])
    top = scipy.sparse.linalg.eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=False)
    bottom = scipy.sparse.linalg.eigsh(op, k=k, which="SA", v0=v0, return_eigenvectors=False)
    return np.sort(top)[::-1], np.sort(bottom)


def main(width: int = 64, samples: int = 256, check: bool = True) -> None:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "w1": jax.random.normal(k1, (4, width)) / 2,
        "b1": jnp.zeros(width),
        "w2": jax.random.normal(k2, (width,)) / jnp.sqrt(width),
    }
    x = jax.random.normal(k3, (samples, 4))
    y = jnp.sin(x[:, 0]) * x[:, 1]
    H = lazyhess.hessian(loss, params, x, y)
    n = H.flat.shape[-1]

    start = time.perf_counter()
    top, bottom = extreme_eigenvalues(H)
    seconds = time.perf_counter() - start
    print(f"{n} parameters; eigsh used {H.cache_info().hvps} HVPs in {seconds:.1f} s")
    print(f"largest eigenvalues:  {np.array2string(top, precision=5)}")
    print(f"smallest eigenvalues: {np.array2string(bottom, precision=5)}")
    if check:
        dense = np.linalg.eigvalsh(np.asarray(H.flat.to_dense()))
        error = max(np.abs(top - dense[::-1][:3]).max(), np.abs(bottom - dense[:3]).max())
        print(f"max difference from dense eigvalsh: {error:.1e}")


if __name__ == "__main__":
    main()
