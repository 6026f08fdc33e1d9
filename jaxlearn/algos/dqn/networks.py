"""Q-network (Flax Linen) and the agent that acts with it.

Parameters are a plain pytree; only `jax.jit`/`vmap`/`scan` touch them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn import spaces
from jaxlearn.algos.dqn.exploration import epsilon_greedy
from jaxlearn.networks import ACTIVATIONS, CNN, dense, network_kwargs


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
    torso: str = "mlp"  # mlp | cnn (convolutions over [H, W, C] grids, then the MLP)
    cnn: tuple = ()  # cnn: (channels, kernels, strides, layer_norm)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        if self.torso == "cnn":
            x = CNN(*self.cnn[:3], "relu", self.cnn[3], name="cnn")(obs)
        else:
            x = obs.astype(jnp.float32)
            x = x.reshape(*x.shape[: x.ndim - self.obs_ndim], -1)
        act = ACTIVATIONS[self.activation]
        r, alpha = self.lora_rank, self.lora_alpha
        for i, h in enumerate(self.hidden_sizes):
            x = act(dense(h, r, alpha, name=f"Dense_{i}")(x))
        return dense(self.action_dim, r, alpha, name=f"Dense_{len(self.hidden_sizes)}")(x)


class Agent(NamedTuple):
    """The Q-network plus how it acts."""

    network: QNetwork
    q_values: Callable[[Any, jax.Array], jax.Array]  # (params, obs [B, ...]) -> [B, A]
    select_action: Callable[..., jax.Array]  # (key, params, obs [B, ...], epsilon) -> [B]
    greedy_action: Callable[[Any, jax.Array], jax.Array]  # (params, obs [B, ...]) -> [B]


def sampled_act(agent: Agent, epsilon: Any) -> Callable[..., jax.Array]:
    """`(params, obs [B, ...], key) -> actions [B]`: epsilon-greedy at `epsilon` (the
    config's `epsilon_end` for evaluation's `sampled` policy and `ExportedPolicy.sample`)."""

    def act(params, obs, key):
        return agent.select_action(key, params, obs, epsilon)

    return act


def make_agent(config: Any, env: Any, env_params: Any) -> Agent:
    """Build the Q-network for the env's (Discrete) action space and its action functions."""
    space = spaces.from_gymnax(env.action_space(env_params))
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"DQN needs a Discrete action space, got {space!r}")
    obs_shape = tuple(env.observation_space(env_params).shape)
    network = QNetwork(
        action_dim=space.n,
        obs_ndim=len(obs_shape),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        **network_kwargs(config),
    )

    def q_values(params, obs):
        return network.apply(params, obs)

    def select_action(key, params, obs, epsilon):
        """Epsilon-greedy: obs [B, *obs_shape], epsilon [] or [B] -> actions [B] int32."""
        return epsilon_greedy(key, q_values(params, obs), epsilon)

    def greedy_action(params, obs):
        return jnp.argmax(q_values(params, obs), axis=-1).astype(jnp.int32)

    return Agent(network, q_values, select_action, greedy_action)
