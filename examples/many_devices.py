"""Seed directions over a mesh: the same Hessian, its HVPs shared out among devices.

Run as its own process (``python examples/many_devices.py``): without accelerators it asks
XLA for 8 simulated CPU devices before JAX starts. A banded problem (SPARSINE-like: five
long-range couplings per variable) has dozens of colors; with ``mesh=`` each device
evaluates its share of every chunk of seed directions, and the jitted sparse Hessian
combines the entries each device recovers with one all-reduce.
"""

import os
import sys

if __name__ == "__main__" and "jax" not in sys.modules:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lazyhess  # noqa: E402

jax.config.update("jax_enable_x64", True)


def couplings(x):
    """Each x_i meets x at five pseudo-random offsets: a sparse Hessian with many colors."""
    n = x.size
    i = jnp.arange(1, n + 1)
    total = jnp.sin(x)
    for k in (2, 3, 5, 7, 11):
        total = total + jnp.sin(x[(k * i - 1) % n])
    return 0.5 * jnp.sum(i * total**2)


def main(n: int = 4096) -> None:
    devices = jax.device_count()
    mesh = jax.make_mesh((devices,), ("dirs",))
    x = jax.device_put(jnp.full(n, 0.5), NamedSharding(mesh, P()))
    print(f"{devices} devices, mesh axis 'dirs', n = {n}")

    # The lazy object: a row is one HVP; the whole sparse matrix one HVP per color, each
    # chunk of seeds (chunk_size per device) shared out over 'dirs'.
    H = lazyhess.hessian(couplings, x, mesh=mesh, chunk_size=4)
    row = H[7]
    print(f"H[7]: {int(np.count_nonzero(row))} nonzeros, {H.cache_info().hvps} HVP(s)")
    sparse = H.to_sparse("csr")
    print(f"H.to_sparse('csr'): nnz = {sparse.nnz}, {H.cache_info().hvps} HVPs in all")

    # The jitted functional form: each device linearises once at its copy of x, evaluates
    # its own colors and reads the entries they recover; one all-reduce of nnz values.
    hess = jax.jit(lazyhess.sparse_hessian(couplings, x, mesh=mesh, chunk_size=4))
    H_mesh = hess(x)
    H_one = jax.jit(lazyhess.sparse_hessian(couplings, x))(np.asarray(x))
    difference = float(np.max(np.abs(H_mesh.todense() - H_one.todense())))
    print(f"jitted sparse Hessian on the mesh vs one device: max |difference| = {difference}")
    text = hess.lower(x).compile().as_text()
    print(
        f"collectives in the compiled program: {text.count(' all-reduce(')} all-reduce, "
        f"{text.count(' all-gather(')} all-gather"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
