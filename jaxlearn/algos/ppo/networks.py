"""Actor-critic networks (Flax Linen) for discrete and continuous action spaces.

Parameters are a plain pytree; only `jax.jit`/`vmap`/`scan` touch them. Actor and critic
are separate MLPs with orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy head,
1.0 value head), as in CleanRL and PureJaxRL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.networks import ACTIVATIONS, CNN, MLP, dense, flatten_obs, orthogonal
from jaxlearn.recurrent import Core, state_size


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
    torso: str = "mlp"  # mlp | cnn (convolutions over [H, W, C] grids, then the MLP)
    cnn: tuple = ()  # cnn: (channels, kernels, strides, layer_norm)

    def _flatten(self, obs: jax.Array) -> jax.Array:
        return flatten_obs(obs, self.obs_ndim) if self.torso == "mlp" else obs

    def _make_torso(self, r: int, alpha: float) -> nn.Module:
        mlp = MLP(self.hidden_sizes, self.activation, r, alpha)
        if self.torso == "mlp":
            return mlp
        return nn.Sequential([CNN(*self.cnn[:3], "relu", self.cnn[3]), mlp])

    def setup(self):
        r, alpha = self.lora_rank, self.lora_alpha
        self.actor_torso = self._make_torso(r, alpha)
        self.critic_torso = self._make_torso(r, alpha)
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


class RecurrentActorCritic(nn.Module):
    """An MLP torso, a recurrent core (`jaxlearn.recurrent.Core`: GRU or LSTM, stacked
    `core_layers` deep), then policy and value heads (one hidden layer each), over
    time-major sequences.

    `__call__(state [B, S], obs [T, B, *obs_shape], reset [T, B])` returns
    `(state [B, S], (policy_out, value [T, B]))` (`S = state_size`), `policy_out` as in
    `ActorCritic` (logits, or a Gaussian's mean and log-std). Acting is the same call with T = 1.
    """

    action_dim: int
    discrete: bool
    core_size: int = 128
    core_kind: str = "gru"
    core_layers: int = 1
    obs_ndim: int = 1
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    torso: str = "mlp"  # mlp | cnn, as in ActorCritic
    cnn: tuple = ()

    @property
    def state_size(self) -> int:
        """Width `S` of the carried state."""
        return state_size(self.core_kind, self.core_size, self.core_layers)

    @nn.compact
    def __call__(self, state: jax.Array, obs: jax.Array, reset: jax.Array):
        act = ACTIVATIONS[self.activation]
        if self.torso == "cnn":
            obs = CNN(*self.cnn[:3], "relu", self.cnn[3], name="cnn")(obs)
        else:
            obs = flatten_obs(obs, self.obs_ndim)
        x = MLP(self.hidden_sizes, self.activation, name="torso")(obs)
        core = Core(self.core_size, self.core_kind, self.core_layers, name="core")
        state, y = core(state, x, reset)
        width = self.hidden_sizes[-1]
        a = act(dense(width, kernel_init=orthogonal(math.sqrt(2.0)), name="actor_hidden")(y))
        out = dense(self.action_dim, kernel_init=orthogonal(0.01), name="policy_head")(a)
        c = act(dense(width, kernel_init=orthogonal(math.sqrt(2.0)), name="critic_hidden")(y))
        value = dense(1, kernel_init=orthogonal(1.0), name="value_head")(c)[..., 0]
        if self.discrete:
            return state, (out, value)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
        )
        return state, ((out, jnp.broadcast_to(log_std, out.shape)), value)
