"""Per-sample Hessians with ``batch_axis=0``: one HVP direction serves every sample.

The curvature of a logistic model's loss with respect to each sample's input features,
``d² loss_b / dx_b²`` for every sample ``b``: a ``(B, d, d)`` array, equal to
``jax.vmap(jax.hessian(per_sample_loss))`` but indexable lazily (one feature's column for all
samples costs one HVP).
"""

import jax
import jax.numpy as jnp

import lazyhess

jax.config.update("jax_enable_x64", True)


def losses(x, w, y):
    """One logistic loss per sample: ``x`` is ``(B, d)``, the result ``(B,)``."""
    logits = jnp.tanh(x) @ w
    return jax.nn.softplus(logits) - y * logits


def main(batch: int = 1000, features: int = 20) -> None:
    kx, kw, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (batch, features))
    w = jax.random.normal(kw, (features,))
    y = jax.random.bernoulli(ky, 0.5, (batch,)).astype(float)

    H = lazyhess.hessian(losses, x, w, y, batch_axis=0)
    print(H)
    column = H[:, :, 3]
    print(
        f"H[:, :, 3] (feature 3's column for all {batch} samples): shape {column.shape}, "
        f"{H.cache_info().hvps} HVP(s)"
    )
    diagonal = H.diagonal()
    print(f"H.diagonal(): shape {diagonal.shape}, {H.cache_info().hvps} HVPs in total")
    full = H[:]
    print(f"H[:]: shape {full.shape}, {H.cache_info().hvps} HVPs in total (d = {features})")

    def per_sample(xb, yb):
        return losses(xb[None], w, yb[None])[0]

    reference = jax.vmap(jax.hessian(per_sample))(x, y)
    print(f"max |H - vmap(jax.hessian)| = {float(jnp.max(jnp.abs(full - reference))):.1e}")
    eig = jnp.linalg.eigvalsh(full)
    print(f"samples with negative curvature in x: {int(jnp.sum(eig[:, 0] < 0))} of {batch}")


if __name__ == "__main__":
    main()
