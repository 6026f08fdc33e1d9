"""Rewards as a weighted sum of named components, all on the device.

A task env computes one unweighted value per component each step (a dict of `[]` arrays);
the reward is `sum(weight[name] * value[name])`. The weights live in the env params
(`params.reward_weights`, a dict of `[]` float32 arrays), so changing them, or vmapping over
them in a sweep, never recompiles. `info["reward_components"]` holds the *weighted* values,
so they sum to the reward exactly.

The built-in components and the unit of each unweighted value:

| component      | weight (default) | value per step                                            |
|----------------|------------------|-----------------------------------------------------------|
| `base`         | 1.0              | the task's own progress signal (navigation: metres closer  |
|                |                  | to the target; cooperative: team centroid metres closer)   |
| `time_penalty` | -0.01            | 1 every step                                              |
| `collision`    | -0.5             | 1 on a step with a collision                              |
| `completion`   | 10.0             | 1 on the step the task is completed                       |
| `exploration`  | 0.5              | newly discovered cells (+ resource value) this step       |
| `cooperation`  | 2.0              | change of the team cooperation score in [0, 1] this step  |
|                |                  | (formation kept; potential-based, see envs/cooperative)    |
| `efficiency`   | 0.01             | minus the mean squared action change, in [-1, 0]          |
| `formation`    | 0.0              | team cooperation score minus 1, in [-1, 0], every step    |
|                |                  | (a cost of being out of formation: lingering never pays)  |

A user adds a component without editing the env: `with_components(env, {"name": (fn,
weight)})` where `fn(state, action, next_state, params) -> []` is pure.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxlearn.config import check_float32, fail

# Built-in component names, in logging order.
COMPONENTS = (
    "base",
    "time_penalty",
    "collision",
    "completion",
    "exploration",
    "cooperation",
    "efficiency",
    "formation",
)

ComponentFn = Callable[[Any, Any, Any, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Weights of the built-in components (field `x_bonus`/`x_penalty` weighs component `x`)."""

    base_reward: float = 1.0
    time_penalty: float = -0.01
    collision_penalty: float = -0.5
    completion_bonus: float = 10.0
    exploration_bonus: float = 0.5
    cooperation_bonus: float = 2.0
    # 0.01, not 1: the value is driven by exploration noise (a Gaussian policy with std 1
    # changes its action by ~0.25 per step), so at weight 1 it swamped progress and
    # completion (-100 or more per navigation episode); see docs/tasks.md
    efficiency_bonus: float = 0.01
    # off by default; cooperative.yaml turns it on (the potential-based `cooperation` pays
    # only the final minus the initial score, so the team travelled loosely: mean 0.52)
    formation_penalty: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            check_float32(type(self).__name__, f.name, v)

    def weights(self) -> dict[str, float]:
        """Component name -> weight, in `COMPONENTS` order."""
        return {name: float(getattr(self, field)) for name, field in _FIELD_OF.items()}


_FIELD_OF = {
    "base": "base_reward",
    "time_penalty": "time_penalty",
    "collision": "collision_penalty",
    "completion": "completion_bonus",
    "exploration": "exploration_bonus",
    "cooperation": "cooperation_bonus",
    "efficiency": "efficiency_bonus",
    "formation": "formation_penalty",
}


def weights_array(weights: Mapping[str, float]) -> dict[str, jax.Array]:
    """Python weights -> the `params.reward_weights` dict of float32 `[]` arrays."""
    return {k: jnp.float32(v) for k, v in weights.items()}


def override_weights(params: Any, overrides: Mapping[str, float], owner: str = "reward") -> Any:
    """Return `params` with some `reward_weights` replaced; unknown names are errors."""
    current = dict(params.reward_weights)
    for name, value in overrides.items():
        if name not in current:
            fail(owner, name, value, f"must name a reward component of this env: {list(current)}")
        current[name] = jnp.float32(check_float32(owner, name, value))
    return params.replace(reward_weights=current)


def weighted_sum(
    components: Mapping[str, jax.Array], weights: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(reward [], weighted components)`; the weighted values sum to the reward."""
    weighted = {k: weights[k] * components[k].astype(jnp.float32) for k in weights}
    reward = sum(weighted.values(), jnp.float32(0.0))
    return reward, weighted


def with_components(env: Any, components: Mapping[str, tuple[ComponentFn, float]]) -> Any:
    """A copy of task env `env` with extra named components, and their default weights.

    Args:
        env: a `jaxlearn.envs.task.TaskEnv`.
        components: name -> `(fn, weight)`; `fn(state, action, next_state, params) -> []`.

    Returns:
        the new env; `env.default_params.reward_weights` includes the new names.
    """
    # A task env is whatever carries the component tables (`envs.task.TaskEnv` does); no
    # import of it here: the task envs import this module.
    if not all(hasattr(env, a) for a in ("extra_components", "reward_component_names")):
        raise ValueError(
            f"with_components: env {type(env).__name__} is not a jaxlearn task env (TaskEnv); "
            "reward components apply to the task envs only"
        )
    extra = dict(env.extra_components)
    weights = dict(env.extra_weights)
    for name, spec in components.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"with_components: name {name!r} must be a non-empty string")
        if name in env.reward_component_names:
            raise ValueError(
                f"with_components: component {name!r} already exists; "
                f"existing: {list(env.reward_component_names)}"
            )
        if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])):
            raise ValueError(
                f"with_components: components[{name!r}] must be (fn, weight) with "
                "fn(state, action, next_state, params) -> scalar"
            )
        extra[name] = spec[0]
        weights[name] = check_float32("with_components", f"components[{name!r}]", spec[1])
    new = copy.copy(env)
    new.extra_components = extra
    new.extra_weights = weights
    return new
