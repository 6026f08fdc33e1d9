"""Name -> environment registry: jaxlearn's own envs first, then every gymnax env.

`make(name)` returns `(env, params)` like `gymnax.make`. Environments follow gymnax 1.0's
functional interface: `reset(key, params) -> (obs, state)` and
`step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnax

EnvFactory = Callable[..., Any]

_REGISTRY: dict[str, EnvFactory] = {}


def register(name: str, factory: EnvFactory, *, overwrite: bool = False) -> None:
    """Register `factory(**kwargs) -> env` (or `-> (env, params)`) under `name`.

    Registering a name that exists (ours or gymnax's) raises unless `overwrite=True`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register: name={name!r} is invalid: must be a non-empty string")
    if not overwrite and name in registered_envs():
        raise ValueError(f"register: an environment named {name!r} is already registered")
    _REGISTRY[name] = factory


def registered_envs() -> list[str]:
    """All names `make` accepts: jaxlearn's own, then gymnax's."""
    ours = list(_REGISTRY)
    return ours + [n for n in gymnax.registered_envs if n not in _REGISTRY]


def is_registered(name: str) -> bool:
    return name in _REGISTRY or name in gymnax.registered_envs


def make(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build a registered environment and its default params.

    Raises:
        ValueError: for an unknown name; the message lists every registered name.
    """
    if name in _REGISTRY:
        out = _REGISTRY[name](**kwargs)
        if isinstance(out, tuple):
            return out
        return out, out.default_params
    if name in gymnax.registered_envs:
        return gymnax.make(name, **kwargs)
    raise ValueError(
        f"env={name!r} is not a registered environment; registered: {', '.join(registered_envs())}"
    )


def make_vec(
    name: str,
    num_envs: int,
    *,
    normalize_observations: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    reward_clip: float | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The standard training stack: `EpisodeStats` -> `VecEnv` -> optional normalisation.

    Returns `(env, params)`; `env.reset(key, params)` gives observations `[num_envs, ...]`
    and `info` carries `episode_return`/`episode_length`/`episode_done` of the raw reward.
    """
    from jaxlearn.envs import wrappers as w

    env, params = make(name, **kwargs)
    env = w.VecEnv(w.EpisodeStats(env), num_envs)
    if normalize_observations:
        env = w.NormalizeObservation(env)
    if normalize_rewards:
        env = w.ScaleReward(env, gamma=gamma)
    if reward_clip is not None:
        env = w.ClipReward(env, -reward_clip, reward_clip)
    return env, params


def _register_task_envs() -> None:
    """jaxlearn's own task envs (imported lazily so `make` stays cheap)."""

    def navigation(dim):
        def factory(**kwargs):
            from jaxlearn.envs.navigation import Navigation

            return Navigation(dim=dim, **kwargs)

        return factory

    def exploration(**kwargs):
        from jaxlearn.envs.exploration import Exploration

        return Exploration(**kwargs)

    def cooperative(**kwargs):
        from jaxlearn.envs.cooperative import Cooperative

        return Cooperative(**kwargs)

    _REGISTRY["Navigation2D-v0"] = navigation(2)
    _REGISTRY["Navigation3D-v0"] = navigation(3)
    _REGISTRY["Exploration-v0"] = exploration
    _REGISTRY["Cooperative-v0"] = cooperative


_register_task_envs()
