"""Network building blocks shared by the algorithms (Flax Linen)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
            x = nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)))(x)
            x = act(x)
        return x
