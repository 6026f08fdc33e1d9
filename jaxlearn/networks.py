"""Network building blocks shared by the algorithms (Flax Linen)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _gram_schmidt_q(z: jax.Array) -> jax.Array:
    """Q of the thin QR of `z` `[rows, cols]` (rows >= cols) with a positive diagonal in R,
    by Gram-Schmidt with re-orthogonalisation, in plain jnp ops (no LAPACK call)."""
    cols = z.shape[1]

    def column(j, q):
        v = z[:, j]
        earlier = (jnp.arange(cols) < j).astype(z.dtype)
        for _ in range(2):  # twice is enough for orthogonality to rounding error
            v = v - q @ ((q.T @ v) * earlier)
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, cols, column, jnp.zeros_like(z))


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initializer: the same draws and the same matrices (to float
    rounding) as `flax.linen.initializers.orthogonal(scale)`, without its LAPACK QR.

    Why: on the CPU backend, a batched QR (the orthogonal init of `vmap`ped seeds) runs as
    a LAPACK kernel that splits its batch over XLA's intra-op thread pool and blocks until
    the pieces finish. When every pool thread is inside such a kernel (2 threads on a
    2-core machine, 2 independent layers), nothing is left to run the pieces and the
    program never returns. Plain jnp ops never block a pool thread.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a 2-D or larger shape, got {tuple(shape)}")
        n_cols = shape[-1]
        n_rows = math.prod(shape) // n_cols
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _gram_schmidt_q(z)
        q = q.T if n_rows < n_cols else q
        return (jnp.asarray(scale, dtype) * q).reshape(shape)

    return init


ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


def flatten_obs(obs: jax.Array, obs_ndim: int) -> jax.Array:
    """[..., *obs_shape] -> [..., prod(obs_shape)] float32 (vectors, MinAtar grids, ...)."""
    obs = obs.astype(jnp.float32)
    return obs.reshape(*obs.shape[: obs.ndim - obs_ndim], -1)


class MLP(nn.Module):
    """Dense layers with an activation after each; input [..., d_in] -> [..., hidden[-1]].

    Kernels use orthogonal init with gain sqrt(2) (CleanRL/PureJaxRL's choice for PPO).
    """

    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for h in self.hidden_sizes:
            x = nn.Dense(h, kernel_init=orthogonal(math.sqrt(2.0)))(x)
            x = act(x)
        return x
