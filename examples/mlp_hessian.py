"""Inspect a small MLP's Hessian by parts: layer blocks, one diagonal, a few rows.

The full Hessian over all parameters is never formed; every request prints what it cost in
Hessian-vector products (HVPs), next to the number of parameters it would take to build it.
"""

import jax
import jax.numpy as jnp

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


def mlp(params, x):
    *hidden, last = params.values()
    for layer in hidden:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ last["w"] + last["b"]


def loss(params, x, y):
    return jnp.mean((mlp(params, x)[:, 0] - y) ** 2)


def main(width: int = 32, samples: int = 64) -> None:
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = init(key_p, [3, width, width, 1])
    x = jax.random.normal(key_x, (samples, 3))
    y = jnp.sin(x.sum(axis=1))
    H = lazyhess.hessian(loss, params, x, y)
    n = H.flat.shape[-1]
    print(H)
    print(
        f"{n} parameters: the full Hessian would cost {n} HVPs ({n * n * 8 / 1024:,.0f} KiB dense)"
    )

    def cost(label, request):
        before = H.cache_info().hvps
        value = request()
        print(f"{label:44s} shape={str(value.shape):14s} cost={H.cache_info().hvps - before} HVPs")
        return value

    for name in params:
        cost(f'H["{name}"]["b"]["{name}"]["b"] (bias block)', H[name]["b"][name]["b"].to_dense)
    cost('H["layer2"]["w"]["layer2"]["w"] (last layer)', H["layer2"]["w"]["layer2"]["w"].to_dense)
    cost('H["layer0"]["b"]["layer2"]["w"] (cross)', H["layer0"]["b"]["layer2"]["w"].to_dense)
    block = H["layer0"]["w"]["layer0"]["w"]
    diag = cost('H["layer0"]["w"]["layer0"]["w"].diagonal()', block.diagonal)
    print(f"  layer0 curvature: min {float(diag.min()):.3g}, max {float(diag.max()):.3g}")
    middle = [n // 2, n // 2 + 1, n - width - 2]
    rows = cost(f"H.flat[{middle}] (three rows)", lambda: H.flat[middle])
    print(f"  row norms: {jnp.linalg.norm(rows, axis=1)}")
    print(H.cache_info())


if __name__ == "__main__":
    main()
