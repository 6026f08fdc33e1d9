"""PPO configuration (static, validated at construction) and hyperparameters as data."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct

from jaxlearn import spaces
from jaxlearn.config import (
    check_choice,
    check_positive_int,
    check_range,
    check_total_timesteps,
    fail,
    hparams_from,
)
from jaxlearn.envs.setup import base_env, check_env_fields, env_hparams
from jaxlearn.networks import ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything that defines a PPO run. Defaults are CleanRL's classic CartPole settings.

    Sizes (`num_envs`, `num_steps`, `num_minibatches`, `hidden_sizes`) fix array shapes;
    the real-valued fields listed in `PPOHParams` can also be passed as arrays to `train`.
    """

    env: str = "CartPole-v1"
    total_timesteps: int = 500_000  # env steps per seed (over all envs)
    num_envs: int = 4
    num_steps: int = 128  # rollout length per env per update
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True  # linear decay to 0 over the run
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True  # clip the value update to +-clip_eps around the old value
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5  # global-norm clip; .inf disables it
    adam_eps: float = 1e-5
    normalize_advantages: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    policy: str = "auto"  # auto | discrete | continuous | hybrid (auto: from the action space)
    action_squash: str = "clip"  # continuous only: clip a Gaussian sample, or tanh-squash it
    log_std_init: float = 0.0
    normalize_observations: bool = False
    normalize_rewards: bool = False  # divide by the running std of the discounted return
    reward_clip: float | None = None  # clip (scaled) rewards to [-reward_clip, reward_clip]
    rollout_unroll: int = 1  # lax.scan unroll of the rollout loop (speed only)
    # low-rank adapters on every Dense layer (0: off); with them only the adapters train
    lora_rank: int = 0
    lora_alpha: float = 1.0  # adapter output scale is lora_alpha / lora_rank
    # task envs (jaxlearn.envs.setup): constructor kwargs, param and reward-weight
    # overrides, and an optional curriculum ("default" or a stage table)
    env_kwargs: dict | None = None
    env_params: dict | None = None
    reward_weights: dict | None = None
    curriculum: dict | str | None = None

    def __post_init__(self):
        name = type(self).__name__
        check_positive_int(
            self,
            "total_timesteps",
            "num_envs",
            "num_steps",
            "num_epochs",
            "num_minibatches",
            "rollout_unroll",
        )
        check_total_timesteps(self)
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            divisors = [d for d in range(1, min(batch, 64) + 1) if batch % d == 0]
            fail(
                name,
                "num_minibatches",
                self.num_minibatches,
                f"must divide num_envs * num_steps = {batch}; e.g. one of {divisors}",
            )
        if self.total_timesteps < batch:
            fail(
                name,
                "total_timesteps",
                self.total_timesteps,
                f"must be >= num_envs * num_steps = {batch} (one update)",
            )
        check_range(self, "learning_rate", 0.0, None, low_open=True)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "gae_lambda", 0.0, 1.0)
        check_range(self, "clip_eps", 0.0, None, low_open=True)
        check_range(self, "ent_coef", 0.0, None)
        check_range(self, "vf_coef", 0.0, None)
        check_range(self, "max_grad_norm", 0.0, None, low_open=True, allow_inf=True)
        check_range(self, "adam_eps", 0.0, None, low_open=True)
        check_range(self, "log_std_init", -20.0, 5.0)
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
            fail(name, "lora_rank", self.lora_rank, "must be an integer >= 0 (0: no adapters)")
        if self.lora_rank < 0:
            fail(name, "lora_rank", self.lora_rank, "must be an integer >= 0 (0: no adapters)")
        check_range(self, "lora_alpha", 0.0, None, low_open=True)
        if self.reward_clip is not None:
            check_range(self, "reward_clip", 0.0, None, low_open=True)
        if not self.hidden_sizes or any(
            isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in self.hidden_sizes
        ):
            fail(name, "hidden_sizes", self.hidden_sizes, "must be a non-empty tuple of ints > 0")
        check_choice(self, "activation", ACTIVATIONS)
        check_choice(self, "policy", ("auto", "discrete", "continuous", "hybrid"))
        check_choice(self, "action_squash", ("clip", "tanh"))
        check_env_fields(self)
        kind = self.policy_kind()  # raises for an action space the policy cannot handle
        if self.policy != "auto" and self.policy != kind:
            fail(name, "policy", self.policy, f"env {self.env!r} needs a {kind} policy")

    def action_space(self) -> spaces.Space:
        env, params = base_env(self)
        return spaces.from_gymnax(env.action_space(params))

    def policy_kind(self) -> str:
        """'discrete', 'continuous' or 'hybrid' (a Hybrid of Discrete/Box leaves)."""
        space = self.action_space()
        if isinstance(space, spaces.Discrete):
            return "discrete"
        if isinstance(space, spaces.Box):
            return "continuous"
        leaves = spaces.leaves(space) if isinstance(space, spaces.Hybrid) else []
        if leaves and all(isinstance(s, spaces.Discrete | spaces.Box) for _, s in leaves):
            return "hybrid"
        fail(
            type(self).__name__,
            "env",
            self.env,
            f"its action space {space!r} is not supported by PPO (Discrete, Box, or a Hybrid "
            "of those)",
        )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def hparams(self) -> PPOHParams:
        return hparams_from(self, PPOHParams, **env_hparams(self))

    def data_fields(self) -> tuple[str, ...]:
        """Config fields that reach the compiled program only through `hparams()`: changing
        them needs no recompile. (`gamma` also sets the reward normaliser's discount, so
        with `normalize_rewards` it is static.)"""
        names = [f.name for f in dataclasses.fields(PPOHParams) if hasattr(self, f.name)]
        names = [n for n in names if n not in ("reward_weights", "curriculum")]
        if self.normalize_rewards:
            names.remove("gamma")
        return tuple(names)


@struct.dataclass
class PPOHParams:
    """Real-valued hyperparameters as device arrays ([] each, or [B] under `vmap`).

    Changing them never recompiles, so `jax.vmap(train)(keys, hparams)` trains a batch of
    configurations in one call.
    """

    learning_rate: jnp.ndarray
    gamma: jnp.ndarray
    gae_lambda: jnp.ndarray
    clip_eps: jnp.ndarray
    ent_coef: jnp.ndarray
    vf_coef: jnp.ndarray
    max_grad_norm: jnp.ndarray
    # task envs: reward weights (name -> []) and curriculum thresholds (name -> [stages])
    reward_weights: dict | None = None
    curriculum: dict | None = None
