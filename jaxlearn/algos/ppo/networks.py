"""Actor-critic networks (Flax Linen) for discrete and continuous action spaces.

Parameters are a plain pytree; only `jax.jit`/`vmap`/`scan` touch them. Actor and critic
are separate MLPs with orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy head,
1.0 value head), as in CleanRL and PureJaxRL.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.networks import MLP, dense, flatten_obs, orthogonal


class ActorCritic(nn.Module):
    """Policy head + value head over flattened observations.

    Attributes:
        action_dim: number of discrete actions, or the continuous action dimension.
        discrete: categorical logits if True, else a diagonal Gaussian mean and log-std.
        obs_ndim: rank of one observation; trailing `obs_ndim` axes are flattened.

    `__call__(obs [..., *obs_shape])` returns `(policy_out, value [...])` where `policy_out`
    is logits `[..., action_dim]`, a tuple `(mean [..., d], log_std [..., d])`, or with
    `num_logits > 0` (hybrid actions) `(logits [..., num_logits], mean [..., d], log_std)`.
    """

    action_dim: int
    discrete: bool
    obs_ndim: int = 1
    num_logits: int = 0  # hybrid: the first `num_logits` outputs are logits, the rest means
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    lora_rank: int = 0  # > 0: a low-rank adapter on every Dense layer (jaxlearn.lora)
    lora_alpha: float = 1.0

    def _flatten(self, obs: jax.Array) -> jax.Array:
        return flatten_obs(obs, self.obs_ndim)

    def setup(self):
        r, alpha = self.lora_rank, self.lora_alpha
        self.actor_torso = MLP(self.hidden_sizes, self.activation, r, alpha)
        self.critic_torso = MLP(self.hidden_sizes, self.activation, r, alpha)
        self.policy_head = dense(self.action_dim, r, alpha, orthogonal(0.01))
        self.value_head = dense(1, r, alpha, orthogonal(1.0))
        if not self.discrete:
            self.log_std = self.param(
                "log_std",
                nn.initializers.constant(self.log_std_init),
                (self.action_dim - self.num_logits,),
            )

    def policy(self, obs: jax.Array):
        out = self.policy_head(self.actor_torso(self._flatten(obs)))
        if self.discrete:
            return out
        if self.num_logits:
            logits, mean = out[..., : self.num_logits], out[..., self.num_logits :]
            return logits, mean, jnp.broadcast_to(self.log_std, mean.shape)
        return out, jnp.broadcast_to(self.log_std, out.shape)

    def value(self, obs: jax.Array) -> jax.Array:
        return self.value_head(self.critic_torso(self._flatten(obs)))[..., 0]

    def __call__(self, obs: jax.Array):
        return self.policy(obs), self.value(obs)
