"""`DQNConfig`, checked when built, and `DQNHParams`: its `data(...)` fields as arrays, which
a sweep may vmap; every other field is part of the compiled program."""

from __future__ import annotations

import dataclasses
import math

from jaxlearn import spaces
from jaxlearn.algos.fields import EnvConfig, check_learner_fields, data, hparams_class
from jaxlearn.config import (
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_range,
    fail,
    hparams_from,
)
from jaxlearn.envs.setup import base_env, env_hparams
from jaxlearn.networks import check_torso

LOSSES = ("huber", "mse")
EPSILON_SCHEDULES = ("linear", "exponential")
MEMORY_EMBEDDINGS = ("projection", "features")
MEMORY_METRICS = ("l2", "cosine")


@dataclasses.dataclass(frozen=True)
class DQNConfig(EnvConfig):
    """Everything that defines a DQN run. Defaults are CleanRL's CartPole settings (dqn.py).

    Steps are env steps per seed, counted over all envs. One update (one `Learner.update`)
    steps every env `train_frequency // num_envs` times, adds those `train_frequency`
    transitions to the replay buffer, then takes `gradient_steps` gradient steps (masked out
    until `learning_starts` env steps are collected). The target network moves towards the
    online one, `target <- tau * online + (1 - tau) * target`, every `target_update_period`
    env steps (tau = 1: hard copies).

    Sizes (`num_envs`, `buffer_size`, `batch_size`, `n_step`, `hidden_sizes`, ...) fix array
    shapes; the fields declared `data(...)` (`DQNHParams`) can also be passed as arrays to
    `train`. The prioritized-replay exponents are build-time constants of the buffer. The
    env fields (`env`, `env_kwargs`, ...) come from `EnvConfig`.
    """

    total_timesteps: int = 500_000  # env steps per seed (over all envs)
    num_envs: int = 1  # parallel envs per seed
    buffer_size: int = 10_000  # transitions kept (over all envs)
    batch_size: int = 128  # transitions per gradient step
    learning_rate: float = data(2.5e-4)  # Adam step size (at the first gradient step)
    # learning rate at the last update as a fraction of learning_rate, reached linearly from
    # the first gradient step (learning_starts); 1.0 keeps it constant, 0.0 decays it to 0
    lr_end_fraction: float = data(1.0)
    gamma: float = data(0.99)  # discount
    target_update_period: int = data(500)  # env steps between target updates
    tau: float = data(1.0)  # Polyak factor of a target update; 1.0 copies the online network
    learning_starts: int = 10_000  # env steps collected before the first gradient step
    train_frequency: int = 10  # env steps (over all envs) per update
    gradient_steps: int = 1  # gradient steps per update
    double_dqn: bool = False  # online net picks, target net values
    n_step: int = 1  # n-step return length
    loss: str = "mse"  # huber | mse (both 0.5 * td^2 near zero)
    max_grad_norm: float = data(10.0)  # global-norm clip; .inf disables it
    adam_eps: float = 1e-8  # Adam epsilon
    hidden_sizes: tuple[int, ...] = (120, 84)  # Q-network MLP layer widths
    activation: str = "relu"  # tanh | relu | gelu | silu | elu
    epsilon_schedule: str = "linear"  # linear (in env steps) | exponential (per episode)
    epsilon_start: float = data(1.0)  # epsilon-greedy: first epsilon
    epsilon_end: float = data(0.05)  # epsilon-greedy: final epsilon
    exploration_fraction: float = data(0.5)  # linear: fraction of total_timesteps to reach the end
    epsilon_decay: float = data(0.995)  # exponential: factor per finished episode
    prioritized: bool = False  # prioritized replay (sum tree)
    per_alpha: float = 0.6  # priority exponent (0 uniform)
    per_beta_start: float = 0.4  # importance-weight exponent at start
    per_beta_end: float = 1.0  # reached at the last gradient step
    per_eps: float = 1e-6  # added to |TD| so no priority is 0
    rollout_unroll: int = 1  # lax.scan unroll of the env-step loop (speed only)
    # low-rank adapters on every Dense layer (0: off); with them only the adapters train
    lora_rank: int = 0
    lora_alpha: float = 1.0  # adapter output scale is lora_alpha / lora_rank
    # mlp | cnn: convolutions over [H, W, C] grid observations (MinAtar) before the MLP
    torso: str = "mlp"
    cnn_channels: tuple[int, ...] = (16,)  # filters per conv layer (torso: cnn)
    cnn_kernels: tuple[int, ...] = (3,)  # square kernel side per conv layer (VALID padding)
    cnn_strides: tuple[int, ...] = (1,)  # stride per conv layer
    layer_norm: bool = False  # LayerNorm after each conv layer (torso: cnn)
    # episodic memory (jaxlearn.memory): this fraction of each batch is transitions retrieved
    # from a larger store as the nearest neighbours of the batch's own states (0: off)
    memory_fraction: float = 0.0
    memory_size: int = 100_000  # transitions kept; >= buffer_size
    memory_k: int = 4  # neighbours per query state
    memory_embedding: str = "projection"  # projection (random, of obs) | features (Q-net)
    memory_embed_dim: int = 32  # projection only; features use hidden_sizes[-1]
    memory_metric: str = "l2"  # l2 | cosine
    memory_approx: bool = False  # jax.lax.approx_max_k instead of exact top-k

    def __post_init__(self):
        name = type(self).__name__
        check_learner_fields(self)
        check_positive_int(
            self,
            "buffer_size",
            "batch_size",
            "target_update_period",
            "train_frequency",
            "gradient_steps",
            "n_step",
        )
        check_nonnegative_int(self, "learning_starts")
        if self.batch_size > self.buffer_size:
            fail(name, "batch_size", self.batch_size, f"must be <= buffer_size={self.buffer_size}")
        if self.train_frequency % self.num_envs:
            fail(
                name,
                "train_frequency",
                self.train_frequency,
                f"must be a multiple of num_envs={self.num_envs}: one update steps all "
                f"{self.num_envs} envs train_frequency / num_envs times",
            )
        if self.train_frequency > self.buffer_size:
            fail(
                name,
                "train_frequency",
                self.train_frequency,
                f"must be <= buffer_size={self.buffer_size}: one update adds train_frequency "
                "transitions to the buffer",
            )
        if self.target_update_period % self.train_frequency:
            fail(
                name,
                "target_update_period",
                self.target_update_period,
                f"must be a multiple of train_frequency={self.train_frequency}: the target "
                "network is updated between updates",
            )
        if self.total_timesteps < self.train_frequency:
            fail(
                name,
                "total_timesteps",
                self.total_timesteps,
                f"must be >= train_frequency={self.train_frequency} (one update)",
            )
        if self.learning_starts > self.total_timesteps:
            fail(
                name,
                "learning_starts",
                self.learning_starts,
                f"must be <= total_timesteps={self.total_timesteps}, or nothing is learned",
            )
        check_range(self, "tau", 0.0, 1.0, low_open=True)
        check_range(self, "lr_end_fraction", 0.0, 1.0)
        check_range(self, "epsilon_start", 0.0, 1.0)
        check_range(self, "epsilon_end", 0.0, 1.0)
        check_range(self, "exploration_fraction", 0.0, 1.0, low_open=True)
        check_range(self, "epsilon_decay", 0.0, 1.0, low_open=True)
        check_range(self, "per_alpha", 0.0, None)
        check_range(self, "per_beta_start", 0.0, 1.0)
        check_range(self, "per_beta_end", 0.0, 1.0)
        check_range(self, "per_eps", 0.0, None, low_open=True)
        if not math.isfinite(self.per_eps):
            fail(name, "per_eps", self.per_eps, "must be finite")
        check_choice(self, "loss", LOSSES)
        check_choice(self, "epsilon_schedule", EPSILON_SCHEDULES)
        for f in ("double_dqn", "prioritized", "memory_approx"):
            if not isinstance(getattr(self, f), bool):
                fail(name, f, getattr(self, f), "must be a bool (true/false)")
        self._check_memory()

    def check_env_space(self, env, params) -> None:
        """DQN needs a Discrete action space; the torso must fit the observation."""
        check_torso(self, tuple(env.observation_space(params).shape))
        space = spaces.from_gymnax(env.action_space(params))
        if not isinstance(space, spaces.Discrete):
            fail(
                type(self).__name__,
                "env",
                self.env,
                f"DQN needs a Discrete action space, but this env's is {space!r}",
            )

    def _check_memory(self) -> None:
        """Episodic-memory fields: ranges always, consistency with the batch when on."""
        name = type(self).__name__
        check_range(self, "memory_fraction", 0.0, 1.0, high_open=True)
        check_positive_int(self, "memory_size", "memory_k", "memory_embed_dim")
        check_choice(self, "memory_embedding", MEMORY_EMBEDDINGS)
        check_choice(self, "memory_metric", MEMORY_METRICS)
        if self.memory_fraction == 0.0:
            return
        m, b = self.memory_batch_size, self.batch_size
        if m == 0:
            fail(
                name,
                "memory_fraction",
                self.memory_fraction,
                f"gives round(memory_fraction * batch_size={b}) = 0 memory items per batch; "
                f"use 0 (off) or >= {0.5 / b:.3g}",
            )
        if m >= b:
            fail(
                name,
                "memory_fraction",
                self.memory_fraction,
                f"gives {m} of batch_size={b} items from memory, leaving none from replay "
                "(the replayed states are the memory queries)",
            )
        if self.memory_queries > b - m:
            fail(
                name,
                "memory_k",
                self.memory_k,
                f"must be larger: {m} memory items need ceil({m} / memory_k) = "
                f"{self.memory_queries} query states, but the replay part of the batch has "
                f"{b - m}; use memory_k >= {-(-m // (b - m))} or a smaller memory_fraction",
            )
        if self.memory_size < self.buffer_size:
            fail(
                name,
                "memory_size",
                self.memory_size,
                f"must be >= buffer_size={self.buffer_size}: the memory keeps at least what "
                "the replay buffer holds (a replayed state's nearest stored item is then "
                "itself, and is skipped)",
            )

    @property
    def memory_batch_size(self) -> int:
        """Items of each batch retrieved from the episodic memory (0: off)."""
        return math.floor(self.memory_fraction * self.batch_size + 0.5)

    @property
    def replay_batch_size(self) -> int:
        """Items of each batch sampled from the replay buffer."""
        return self.batch_size - self.memory_batch_size

    @property
    def memory_queries(self) -> int:
        """Replayed states used as memory queries, `memory_k` neighbours each."""
        return -(-self.memory_batch_size // self.memory_k)

    def action_space(self) -> spaces.Space:
        env, params = base_env(self)
        return spaces.from_gymnax(env.action_space(params))

    @property
    def steps_per_env(self) -> int:
        """Vectorised env steps per update."""
        return self.train_frequency // self.num_envs

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.train_frequency

    @property
    def target_update_every(self) -> int:
        """Updates between target-network updates."""
        return self.target_update_period // self.train_frequency

    @property
    def first_learning_update(self) -> int:
        """Index of the first update that takes gradient steps (its rollout reaches
        `learning_starts` env steps)."""
        return max(0, -(-self.learning_starts // self.train_frequency) - 1)

    @property
    def num_learning_steps(self) -> int:
        """Gradient steps actually applied over the run (before the buffer-size mask)."""
        return max(1, (self.num_updates - self.first_learning_update) * self.gradient_steps)

    def hparams(self) -> DQNHParams:
        return hparams_from(self, DQNHParams, **env_hparams(self))


DQNHParams = hparams_class(
    DQNConfig,
    "DQNHParams",
    """DQN's hyperparameters as device arrays ([] each, or [B] under `vmap`): the fields of
    `DQNConfig` declared `data(...)` (`target_update_period` in env steps, `tau` the Polyak
    factor, the epsilon schedules' parameters, ...), then `reward_weights` and `curriculum`
    thresholds.

    Changing them never recompiles, so `jax.vmap(train)(keys, hparams)` trains a batch of
    configurations in one call.""",
)
