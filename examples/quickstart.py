"""Quickstart: index a Hessian and see what each request costs in HVPs."""

import jax
import jax.numpy as jnp

import lazyhess

jax.config.update("jax_enable_x64", True)


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def spent(H, before):
    return H.cache_info().hvps - before


def main(n: int = 1000) -> None:
    x = jnp.linspace(-1.0, 1.0, n)
    H = lazyhess.hessian(rosenbrock, x)
    print(H)

    for label, key in [
        ("H[3, 2:5]", (3, slice(2, 5))),
        ("H[:, 7] (column 7)", (slice(None), 7)),
        ("H[7, :] (row 7, by symmetry)", (7, slice(None))),
        ("H[2:9, [0, 4]]", (slice(2, 9), [0, 4])),
    ]:
        before = H.cache_info().hvps
        block = H[key]
        print(f"{label:30s} shape={block.shape!s:8s} cost={spent(H, before)} HVP(s)")
    print("H[3, 2:5] =", H[3, 2:5])

    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}

    def loss(p):
        return jnp.sum(jnp.tanh(jnp.ones(2) @ p["w"] + p["b"]) ** 2)

    Hp = lazyhess.hessian(loss, params)
    before = Hp.cache_info().hvps
    print('Hp["w"]["b"] =\n', Hp["w"]["b"][:], f"\ncost={spent(Hp, before)} HVP(s)")
    print(H.cache_info())


if __name__ == "__main__":
    main()
