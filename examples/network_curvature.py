"""The curvature of a small network's loss, layer by layer, from a few hundred HVPs.

For each layer's weight block ``H[layer]["w"][layer]["w"]`` (a square block of the lazy
Hessian): its top eigenvalues (Lanczos), its trace (Hutch++) and its diagonal (Diag++),
each with the HVPs it cost and a standard error. Then the eigenvalue density of the whole
Hessian (``H.flat``) by stochastic Lanczos quadrature, saved as a PNG plot (matplotlib,
the ``plot`` extra). With ``check=True`` every number is compared with the dense Hessian.
"""

import jax
import jax.numpy as jnp
import numpy as np

import lazyhess

jax.config.update("jax_enable_x64", True)


def init(key, sizes):
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(sub, (m, n)) / jnp.sqrt(m),
            "b": jnp.zeros(n),
        }
    return params


def loss(params, x, y):
    *hidden, last = params.values()
    for layer in hidden:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return jnp.mean(((x @ last["w"] + last["b"])[:, 0] - y) ** 2)


def plot_density(density, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "Plotting the spectral density needs matplotlib: pip install 'lazyhess[plot]'."
        ) from err
    grid, values, stderr = (np.asarray(a) for a in (density.grid, density.density, density.stderr))
    floor = values.max() * 1e-5  # the outliers' bumps stay visible on a log scale
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(grid, np.maximum(values - 2 * stderr, floor), values + 2 * stderr, alpha=0.3)
    ax.semilogy(grid, np.maximum(values, floor))
    ax.set_ylim(floor, 2 * values.max())
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectrum ({density.hvps} HVPs, ±2 stderr)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    width: int = 32,
    samples: int = 128,
    budget: int = 60,
    out: str = "network_spectrum.png",
    check: bool = True,
) -> None:
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = init(key_p, [3, width, width, 1])
    x = jax.random.normal(key_x, (samples, 3))
    y = jnp.sin(x.sum(axis=1))
    H = lazyhess.hessian(loss, params, x, y, sparsity=None)
    n = H.flat.shape[-1]
    print(f"{n} parameters, HVP budget {budget} per estimate")
    reference = jax.jit(jax.hessian(loss))(params, x, y) if check else None

    for name in params:
        block = H[name]["w"][name]["w"]
        size = params[name]["w"].size
        steps = min(budget, size)
        top = block.eigh(3, num_hvps=steps)
        trace = block.trace(num_probes=budget, key=1)
        diag = block.diagonal(method="diag++", num_probes=budget, key=2)
        values = np.array2string(np.asarray(top.values), precision=4)
        exact = ", exact" if trace.exact else ""
        print(
            f"{name}/w ({size} weights): top eigenvalues {values} ({top.hvps} HVPs);"
            f" trace {float(trace.value):.4g} ± {float(trace.stderr):.2g}"
            f" ({trace.hvps} HVPs{exact});"
            f" largest diagonal entry {float(diag.value.max()):.4g} ({diag.hvps} HVPs)"
        )
        if reference is not None:
            part = np.asarray(reference[name]["w"][name]["w"]).reshape(size, size)
            largest = np.linalg.eigvalsh(part)[::-1][:3]
            error = np.max(np.abs(np.asarray(top.values) - largest))
            print(
                f"  dense: top {np.array2string(largest, precision=4)},"
                f" trace {np.trace(part):.4g};"
                f" eigenvalue error {error:.1e} (bound {float(np.max(top.residuals)):.1e});"
                f" trace error {abs(float(trace.value) - np.trace(part)):.2g}"
            )

    density = H.flat.spectral_density(num_probes=8, steps=min(40, n), key=3)
    print(f"spectral density: {density.hvps} HVPs, sigma = {float(density.sigma):.3g}")
    low, high = float(density.nodes.min()), float(density.nodes.max())
    print(f"  Ritz values span [{low:.4g}, {high:.4g}]")
    if reference is not None:
        eigenvalues = np.linalg.eigvalsh(np.asarray(H.flat.to_dense()))
        print(f"  dense spectrum:  [{eigenvalues[0]:.4g}, {eigenvalues[-1]:.4g}]")
    plot_density(density, out)
    print(f"saved {out}")
    print(H.cache_info())


if __name__ == "__main__":
    main()
