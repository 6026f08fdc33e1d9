"""Config fields that say once whether they are data, and the env fields every algorithm has.

A config field declared with `data(default)` reaches the compiled program only as a leaf
of the hyperparameter pytree: changing it needs no recompile, and `jax.vmap` over a batch
of them shares one program. Everything else is static (a shape, a branch, a constant).
From that one declaration:

- `hparams_class(Config)` builds the `HParams` pytree (one `[]` float32 leaf per data field,
  plus the env's `reward_weights` and `curriculum` thresholds);
- `data_fields(cfg)` lists the data fields of a config value (a field declared
  `data(..., static_if="flag")` is static while `cfg.flag` is true);
- `with_data_of(cfg, ref)` is `cfg` with all its data taken from `ref`: the config that fixes
  the compiled program (two configs with equal views share one compile).

`EnvConfig` holds the env fields (`env`, `env_kwargs`, `env_params`, `reward_weights`,
`curriculum`) shared by PPO and DQN; algorithm configs inherit them, so flat YAML/CLI keys
(`env: ...`, `--set reward_weights={...}`) read as before. Checks that need the env are
`EnvConfig.check_env()`, run once at the edge (`jaxlearn.config.from_dict`, and again by
`make_learner` for configs built in Python), never in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct

from jaxlearn.config import (
    check_choice,
    check_positive_int,
    check_range,
    check_total_timesteps,
    fail,
)
from jaxlearn.envs.setup import base_env, check_env_fields
from jaxlearn.networks import ACTIVATIONS

_DATA = "jaxlearn.data"  # field metadata key: True, or the name of a flag that makes it static


def data(default: Any, *, static_if: str | None = None) -> Any:
    """A config field that is data (an hparams leaf). `static_if`: a bool field of the same
    config that, when true, also bakes this value into the program (e.g. PPO's `gamma` is
    the reward normaliser's discount with `normalize_rewards`)."""
    return dataclasses.field(default=default, metadata={_DATA: static_if or True})


def is_data_field(field: dataclasses.Field) -> bool:
    """The field was declared with `data(...)`."""
    return _DATA in field.metadata


def data_fields(cfg: Any) -> tuple[str, ...]:
    """Config fields of `cfg` that reach the compiled program only through its hparams, in
    declaration order (env data, `reward_weights` and curriculum thresholds, not included)."""
    names = []
    for f in dataclasses.fields(cfg):
        flag = f.metadata.get(_DATA)
        if flag is True or (flag and not getattr(cfg, flag)):
            names.append(f.name)
    return tuple(names)


def hparams_class(config_cls: type, name: str, doc: str) -> type:
    """The hyperparameter pytree of `config_cls`: a `flax.struct.dataclass` named `name`
    with one field per data field (a `[]` array, or `[B]` under `vmap`), then
    `reward_weights` (name -> `[]`) and `curriculum` (name -> `[num_stages]`), None when the
    env has none."""
    annotations = {
        f.name: "jnp.ndarray" for f in dataclasses.fields(config_cls) if is_data_field(f)
    }
    annotations.update(reward_weights="dict | None", curriculum="dict | None")
    namespace = {
        "__annotations__": annotations,
        "__doc__": doc,
        "__module__": config_cls.__module__,
        "__qualname__": name,
        "reward_weights": None,
        "curriculum": None,
    }
    return struct.dataclass(type(name, (), namespace))


def with_data_of(cfg: Any, ref: Any) -> Any:
    """`cfg` with its data taken from `ref` (same class): data fields, reward weights, and the
    curriculum when the two differ only in stage thresholds. Equal results mean one program.
    """
    from jaxlearn.curriculum import CRITERIA

    thresholds = ("min_episodes", *CRITERIA)  # a stage's advance criteria: data
    reset = {f: getattr(ref, f) for f in data_fields(cfg)}
    reset["reward_weights"] = ref.reward_weights
    if cfg.curriculum is not None and ref.curriculum is not None:
        same = _stages_without(cfg, thresholds) == _stages_without(ref, thresholds)
        reset["curriculum"] = ref.curriculum if same else cfg.curriculum
    return dataclasses.replace(cfg, **reset)


def _stages_without(cfg: Any, criteria: Any) -> Any:
    from jaxlearn.curriculum import CurriculumConfig

    _, params = base_env(cfg)
    fields = [n for n in params.__dataclass_fields__ if n != "reward_weights"]
    table = CurriculumConfig.from_dict(cfg.curriculum, env_fields=fields).to_dict()
    for stage in table["stages"]:
        for k in criteria:
            stage.pop(k, None)
    return table


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The env fields of every algorithm config (see `jaxlearn.envs.setup`).

    Attributes:
        env: a registered name or an import path `package.module:factory`.
        env_kwargs: constructor arguments of the env (e.g. `{dim: 3}`).
        env_params: env parameter overrides (task envs, e.g. `{num_obstacles: 5}`).
        reward_weights: reward component weight overrides (task envs; data).
        curriculum: None, "default", or a stage table (its thresholds are data).
    """

    env: str = "CartPole-v1"
    # task envs (jaxlearn.envs.setup): constructor kwargs, param and reward-weight
    # overrides, and an optional curriculum ("default" or a stage table)
    env_kwargs: dict | None = None
    env_params: dict | None = None
    reward_weights: dict | None = None
    curriculum: dict | str | None = None

    def check_env(self) -> None:
        """The checks that build the env: its fields, then what the algorithm needs of it
        (`check_env_space`). Raises `ConfigError` naming the field."""
        check_env_fields(self)
        env, params = base_env(self)
        self.check_env_space(env, params)

    def check_env_space(self, env: Any, params: Any) -> None:
        """Algorithm hook: reject an env whose spaces the algorithm cannot handle."""

    def data_fields(self) -> tuple[str, ...]:
        """Config fields that reach the compiled program only through `hparams()`: changing
        them needs no recompile (see `jaxlearn.algos.fields.data_fields`)."""
        return data_fields(self)


def check_network_fields(cfg: Any) -> None:
    """`hidden_sizes`, `activation`, `lora_rank` and `lora_alpha` of a network config."""
    name = type(cfg).__name__
    if not cfg.hidden_sizes or any(
        isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in cfg.hidden_sizes
    ):
        fail(name, "hidden_sizes", cfg.hidden_sizes, "must be a non-empty tuple of ints > 0")
    check_choice(cfg, "activation", ACTIVATIONS)
    rank = cfg.lora_rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        fail(name, "lora_rank", rank, "must be an integer >= 0 (0: no adapters)")
    check_range(cfg, "lora_alpha", 0.0, None, low_open=True)


def check_optimizer_fields(cfg: Any) -> None:
    """`learning_rate`, `gamma`, `max_grad_norm` (inf: no clipping) and `adam_eps`."""
    check_range(cfg, "learning_rate", 0.0, None, low_open=True)
    check_range(cfg, "gamma", 0.0, 1.0)
    check_range(cfg, "max_grad_norm", 0.0, None, low_open=True, allow_inf=True)
    check_range(cfg, "adam_eps", 0.0, None, low_open=True)


def check_learner_fields(cfg: Any) -> None:
    """The run size, network and optimizer fields every learner config has."""
    check_positive_int(cfg, "total_timesteps", "num_envs", "rollout_unroll")
    check_total_timesteps(cfg)
    check_network_fields(cfg)
    check_optimizer_fields(cfg)


def env_data_fields() -> tuple[str, ...]:
    """The `EnvConfig` fields that reach the program as data through `env_hparams`."""
    return ("reward_weights", "curriculum")


__all__ = [
    "EnvConfig",
    "check_learner_fields",
    "check_network_fields",
    "check_optimizer_fields",
    "data",
    "data_fields",
    "env_data_fields",
    "hparams_class",
    "is_data_field",
    "with_data_of",
]
