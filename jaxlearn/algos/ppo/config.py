"""PPO configuration (validated at construction) and its hyperparameters as data.

Fields declared `data(...)` are the hyperparameters (`PPOHParams`, derived from them);
the others fix the compiled program.
"""

from __future__ import annotations

import dataclasses

from jaxlearn import spaces
from jaxlearn.algos.fields import EnvConfig, check_learner_fields, data, hparams_class
from jaxlearn.config import (
    check_choice,
    check_positive_int,
    check_range,
    fail,
    hparams_from,
)
from jaxlearn.envs.setup import base_env, env_hparams
from jaxlearn.networks import TORSOS, check_torso, network_kwargs
from jaxlearn.recurrent import CORES


@dataclasses.dataclass(frozen=True)
class PPOConfig(EnvConfig):
    """Everything that defines a PPO run. Defaults are CleanRL's classic CartPole settings.

    Sizes (`num_envs`, `num_steps`, `num_minibatches`, `hidden_sizes`) fix array shapes;
    the fields declared `data(...)` (`PPOHParams`) can also be passed as arrays to `train`.
    The env fields (`env`, `env_kwargs`, ...) come from `EnvConfig`.
    """

    total_timesteps: int = 500_000  # env steps per seed (over all envs)
    num_envs: int = 4  # parallel envs per seed
    num_steps: int = 128  # rollout length per env per update
    num_epochs: int = 4  # passes over each rollout per update
    num_minibatches: int = 4  # minibatches per epoch (of num_envs*num_steps)
    learning_rate: float = data(2.5e-4)  # Adam step size (start value if anneal_lr)
    anneal_lr: bool = True  # linear decay to 0 over the run
    gamma: float = data(0.99, static_if="normalize_rewards")  # discount (normaliser's too)
    gae_lambda: float = data(0.95)  # GAE lambda: 0 one-step TD, 1 Monte Carlo
    clip_eps: float = data(0.2)  # PPO ratio clip: 1 +- clip_eps
    clip_value: bool = True  # clip the value update to +-clip_eps around the old value
    ent_coef: float = data(0.01)  # entropy bonus weight in the loss
    vf_coef: float = data(0.5)  # value loss weight in the loss
    max_grad_norm: float = data(0.5)  # global-norm clip; .inf disables it
    adam_eps: float = 1e-5  # Adam epsilon
    normalize_advantages: bool = True  # per minibatch: zero mean, unit std
    hidden_sizes: tuple[int, ...] = (64, 64)  # MLP layer widths (actor and critic)
    activation: str = "tanh"  # tanh | relu | gelu | silu | elu
    policy: str = "auto"  # auto | discrete | continuous | hybrid (auto: from the action space)
    action_squash: str = "clip"  # continuous only: clip a Gaussian sample, or tanh-squash it
    log_std_init: float = 0.0  # continuous: initial log std
    normalize_observations: bool = False  # running mean/std of obs
    normalize_rewards: bool = False  # divide by the running std of the discounted return
    reward_clip: float | None = None  # clip (scaled) rewards to [-reward_clip, reward_clip]
    rollout_unroll: int = 1  # lax.scan unroll of the rollout loop (speed only)
    # low-rank adapters on every Dense layer (0: off); with them only the adapters train
    lora_rank: int = 0
    lora_alpha: float = 1.0  # adapter output scale is lora_alpha / lora_rank
    # none | gru | lstm: a recurrent core between the MLP torso and the heads (memory); the update
    # then replays whole env sequences (minibatches over envs, not time steps)
    core: str = "none"
    # mlp | cnn: convolutions over [H, W, C] grid observations (MinAtar) before the MLP
    torso: str = "mlp"
    cnn_channels: tuple[int, ...] = (16,)  # filters per conv layer (torso: cnn)
    cnn_kernels: tuple[int, ...] = (3,)  # square kernel side per conv layer (VALID padding)
    cnn_strides: tuple[int, ...] = (1,)  # stride per conv layer
    layer_norm: bool = False  # LayerNorm after each conv layer (torso: cnn)
    core_size: int = 128  # units per recurrent layer (core: gru | lstm)
    core_layers: int = 1  # recurrent layers stacked (core: gru | lstm)
    # keep only these components of a 1-D observation (e.g. [0, 2]: CartPole without the
    # velocities); none keeps all (jaxlearn.envs.masking)
    obs_mask: tuple[int, ...] | None = None

    def __post_init__(self):
        name = type(self).__name__
        check_learner_fields(self)
        check_positive_int(self, "num_steps", "num_epochs", "num_minibatches")
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
        check_range(self, "gae_lambda", 0.0, 1.0)
        check_range(self, "clip_eps", 0.0, None, low_open=True)
        check_range(self, "ent_coef", 0.0, None)
        check_range(self, "vf_coef", 0.0, None)
        check_range(self, "log_std_init", -20.0, 5.0)
        if self.reward_clip is not None:
            check_range(self, "reward_clip", 0.0, None, low_open=True)
        check_choice(self, "policy", ("auto", "discrete", "continuous", "hybrid"))
        check_choice(self, "action_squash", ("clip", "tanh"))
        check_choice(self, "torso", TORSOS)
        self._check_core(name)

    def _check_core(self, name: str) -> None:
        check_choice(self, "core", CORES)
        check_positive_int(self, "core_size")
        check_positive_int(self, "core_layers")
        if self.core == "none":
            return
        if self.num_envs % self.num_minibatches:
            fail(
                name,
                "num_minibatches",
                self.num_minibatches,
                f"with core={self.core!r} minibatches are made of whole env sequences, so it "
                f"must divide num_envs = {self.num_envs}",
            )
        if self.lora_rank:
            fail(name, "lora_rank", self.lora_rank, f"must be 0 with core={self.core!r}")

    def check_env_space(self, env, params) -> None:
        """The env's action space must suit the policy (`policy_kind`)."""
        # raises for an action space the policy cannot handle
        kind = self.policy_kind(spaces.from_gymnax(env.action_space(params)))
        name = type(self).__name__
        check_torso(self, tuple(env.observation_space(params).shape))
        if self.policy != "auto" and self.policy != kind:
            fail(name, "policy", self.policy, f"env {self.env!r} needs a {kind} policy")
        if self.core != "none" and (kind == "hybrid" or getattr(env, "num_agents", 1) > 1):
            fail(
                name,
                "core",
                self.core,
                "recurrent PPO supports one agent with a Discrete or Box action space; "
                "use core: none for hybrid actions or several agents",
            )

    def network_kwargs(self) -> dict:
        """The torso fields as the networks take them (`jaxlearn.networks.network_kwargs`)."""
        return network_kwargs(self)

    def action_space(self) -> spaces.Space:
        env, params = base_env(self)
        return spaces.from_gymnax(env.action_space(params))

    def policy_kind(self, space: spaces.Space | None = None) -> str:
        """'discrete', 'continuous' or 'hybrid' (a Hybrid of Discrete/Box leaves), for
        `space` (default: the env's action space)."""
        space = self.action_space() if space is None else space
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


PPOHParams = hparams_class(
    PPOConfig,
    "PPOHParams",
    """PPO's hyperparameters as device arrays ([] each, or [B] under `vmap`): the fields of
    `PPOConfig` declared `data(...)`, then `reward_weights` and `curriculum` thresholds.

    Changing them never recompiles, so `jax.vmap(train)(keys, hparams)` trains a batch of
    configurations in one call.""",
)
