"""Q-network (Flax Linen).

Parameters are a plain pytree; only `jax.jit`/`vmap`/`scan` touch them.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.networks import ACTIVATIONS, dense


class QNetwork(nn.Module):
    """MLP from a flattened observation to one Q-value per action.

    Attributes:
        action_dim: number of discrete actions `A`.
        obs_ndim: rank of one observation; its trailing `obs_ndim` axes are flattened, so
            any observation shape works (vectors, MinAtar's `[10, 10, C]` grids, ...).

    `__call__(obs [..., *obs_shape]) -> q [..., A]` float32.
    """

    action_dim: int
    obs_ndim: int = 1
    hidden_sizes: Sequence[int] = (120, 84)
    activation: str = "relu"
    lora_rank: int = 0  # > 0: a low-rank adapter on every Dense layer (jaxlearn.lora)
    lora_alpha: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.astype(jnp.float32)
        x = x.reshape(*x.shape[: x.ndim - self.obs_ndim], -1)
        act = ACTIVATIONS[self.activation]
        r, alpha = self.lora_rank, self.lora_alpha
        for i, h in enumerate(self.hidden_sizes):
            x = act(dense(h, r, alpha, name=f"Dense_{i}")(x))
        return dense(self.action_dim, r, alpha, name=f"Dense_{len(self.hidden_sizes)}")(x)
