"""From an algorithm config's env fields to the training env stack (shared by PPO and DQN).

Every algorithm config has these fields:

- `env`: a registered name or an import path `package.module:factory` (see registry);
- `env_kwargs`: constructor arguments of the env (e.g. `{dim: 3, max_obstacles: 12}`);
- `env_params`: env parameter overrides (task envs, e.g. `{num_obstacles: 5}`);
- `reward_weights`: reward component weight overrides (task envs, e.g. `{collision: -1}`);
- `curriculum`: `None`, `"default"`, or a stage table (see `jaxlearn.curriculum`).

`check_env_fields(cfg)` validates them once at config construction (errors name the field);
`build_env(cfg, num_envs, ...)` returns `(env, params, curriculum or None)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxlearn import rewards
from jaxlearn.config import ConfigError, fail
from jaxlearn.envs.masking import mask_env
from jaxlearn.envs.registry import EnvError, make, make_vec
from jaxlearn.envs.task import TaskEnv

ENV_FIELDS = ("env", "env_kwargs", "env_params", "reward_weights", "curriculum")


def _mapping(cfg: Any, field: str) -> dict[str, Any]:
    v = getattr(cfg, field)
    if v is None:
        return {}
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        fail(type(cfg).__name__, field, v, "must be a mapping of name: value")
    return dict(v)


def base_env(cfg: Any) -> tuple[Any, Any]:
    """`(env, params)` of the config: constructed with `env_kwargs`, params overridden."""
    name = type(cfg).__name__
    kwargs = _mapping(cfg, "env_kwargs")
    try:
        env, params = make(cfg.env, **kwargs)
    except EnvError as e:  # unknown name, or an import path / entry point that failed
        fail(name, "env", cfg.env, e.reason)
    except TypeError as e:
        fail(name, "env_kwargs", kwargs, f"not accepted by {cfg.env}: {e}")
    overrides = _mapping(cfg, "env_params")
    weights = _mapping(cfg, "reward_weights")
    if (overrides or weights or cfg.curriculum is not None) and not isinstance(env, TaskEnv):
        used = [f for f in ("env_params", "reward_weights", "curriculum") if getattr(cfg, f)]
        fail(name, used[0], getattr(cfg, used[0]), f"needs a jaxlearn task env, not {cfg.env}")
    if overrides:
        params = env.with_fields(params, overrides, owner=f"{name}.env_params")
    if weights:
        params = rewards.override_weights(params, weights, owner=f"{name}.reward_weights")
    return mask_env(name, getattr(cfg, "obs_mask", None), env, params), params


def make_curriculum(cfg: Any, env: Any, params: Any):
    """The config's `Curriculum` bound to `env` (None when `cfg.curriculum` is None)."""
    if cfg.curriculum is None:
        return None
    from jaxlearn.curriculum import Curriculum, CurriculumConfig

    fields = [n for n in params.__dataclass_fields__ if n != "reward_weights"]
    try:
        spec = CurriculumConfig.from_dict(cfg.curriculum, env_fields=fields)
        return Curriculum(spec, env, params)
    except ValueError as e:
        raise ConfigError(f"{type(cfg).__name__}.{e}") from None


def env_hparams(cfg: Any) -> dict[str, Any]:
    """The env side of a config's hyperparameters, as data (device arrays).

    Returns `{"reward_weights": ..., "curriculum": ...}`: the reward weights (task envs;
    name -> `[]` float32, after `reward_weights` overrides) and the curriculum's stage
    thresholds (name -> `[num_stages]` float32, see `Curriculum.thresholds`); each is None
    when the config has none. Learners read them from the hparams, not the config, so a
    sweep can vmap over them.
    """
    env, params = base_env(cfg)
    weights = dict(params.reward_weights) if isinstance(env, TaskEnv) else None
    curriculum = make_curriculum(cfg, env, params)
    return {
        "reward_weights": weights,
        "curriculum": None if curriculum is None else curriculum.thresholds(),
    }


def with_reward_weights(env_params: Any, hparams: Any) -> Any:
    """`env_params` with the reward weights of `hparams` (unchanged when it has none)."""
    weights = getattr(hparams, "reward_weights", None)
    return env_params if weights is None else env_params.replace(reward_weights=weights)


def check_env_fields(cfg: Any) -> None:
    """Validate the env fields of `cfg` (host only; nothing is compiled)."""
    env, params = base_env(cfg)
    make_curriculum(cfg, env, params)


def build_env(cfg: Any, num_envs: int, **wrappers: Any) -> tuple[Any, Any, Any]:
    """The vectorised training stack, its params, and the curriculum (or None).

    `wrappers` go to `make_vec` (normalisation options).
    """
    _, params = base_env(cfg)
    mask = getattr(cfg, "obs_mask", None)
    env, _ = make_vec(cfg.env, num_envs, obs_mask=mask, **wrappers, **_mapping(cfg, "env_kwargs"))
    curriculum = make_curriculum(cfg, env, params)
    return env, params, curriculum
