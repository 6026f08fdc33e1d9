"""Observation masking: keep some components of a vector observation, hide the rest.

Hiding part of the state makes an env partially observable, e.g. CartPole with only the
cart position and pole angle (`obs_mask: [0, 2]`): the velocities must then be inferred
from the history, which a memoryless (MLP) policy cannot do and a recurrent one can.

`check_obs_mask(owner, keep, env, params)` validates a config's `obs_mask` against the
env's observation space (errors name `owner.obs_mask`); `MaskObservation(env, keep)` is
the wrapper, applied innermost (before episode statistics and normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces as gspaces

from jaxlearn.config import fail
from jaxlearn.envs.wrappers import Wrapper


def check_obs_mask(owner: str, keep: Any, env: Any, params: Any) -> tuple[int, ...]:
    """`keep` as a tuple of ints, if it selects distinct components of the env's 1-D
    observation; raises `ConfigError` naming `owner.obs_mask` otherwise."""
    shape = tuple(env.observation_space(params).shape)
    if len(shape) != 1:
        fail(owner, "obs_mask", keep, f"needs a 1-D observation; this env's is {shape}")
    n = shape[0]
    if (
        isinstance(keep, str | bytes)
        or not isinstance(keep, Sequence)
        or not keep
        or any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in keep)
    ):
        fail(owner, "obs_mask", keep, f"must be a non-empty list of indices in [0, {n})")
    keep = tuple(int(i) for i in keep)
    if any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep):
        fail(owner, "obs_mask", keep, f"must list distinct indices in [0, {n}) (obs shape {shape})")
    return keep


class MaskObservation(Wrapper):
    """The observation (and `info["final_observation"]`) reduced to components `keep`."""

    def __init__(self, env: Any, keep: Sequence[int]):
        super().__init__(env)
        self.keep = tuple(int(i) for i in keep)
        self._idx = np.asarray(self.keep, np.int32)

    def _mask(self, obs: Any) -> Any:
        return obs[..., self._idx]

    def observation_space(self, params: Any) -> gspaces.Box:
        space = self._env.observation_space(params)
        low = np.broadcast_to(np.asarray(space.low), space.shape)[self._idx]
        high = np.broadcast_to(np.asarray(space.high), space.shape)[self._idx]
        return gspaces.Box(jnp.asarray(low), jnp.asarray(high), (len(self.keep),), space.dtype)

    def reset(self, key, params):
        obs, state = self._env.reset(key, params)
        return self._mask(obs), state

    def step(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        if "final_observation" in info:
            info = {**info, "final_observation": self._mask(info["final_observation"])}
        return self._mask(obs), state, reward, terminated, truncated, info


def mask_env(owner: str, keep: Any, env: Any, params: Any) -> Any:
    """`env` with observations reduced to `keep` (validated), or `env` when `keep` is None."""
    if keep is None:
        return env
    return MaskObservation(env, check_obs_mask(owner, keep, env, params))
