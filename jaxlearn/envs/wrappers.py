"""Pure, jit-safe environment wrappers.

Each wrapper keeps its own data in a state pytree that wraps the inner env's state, so the
whole stack stays a pure function of `(key, state, action, params)`. The usual stack is

    env -> AutoReset (only for envs that do not reset themselves) -> EpisodeStats
        -> VecEnv(num_envs) -> NormalizeObservation -> ScaleReward -> ClipReward

gymnax 1.0 envs (and jaxlearn's own, which subclass gymnax's `Environment`) already reset
inside `step` and put the last real observation in `info["final_observation"]`; every
wrapper here keeps that key consistent with the observation it returns.

Terminated and truncated stay separate: learners bootstrap a truncated step from
`info["final_observation"]` and cut the return only at `terminated`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


class Wrapper:
    """Base wrapper: forwards every attribute it does not define to the inner env."""

    def __init__(self, env: Any):
        self._env = env

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; guard against recursion before __init__.
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    @property
    def unwrapped(self) -> Any:
        env = self._env
        while isinstance(env, Wrapper):
            env = env._env
        return env

    def reset(self, key: jax.Array, params: Any) -> tuple[Any, Any]:
        return self._env.reset(key, params)

    def step(self, key, state, action, params):
        return self._env.step(key, state, action, params)


def _select(done: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per-leaf `where(done, a, b)`; `done` is a scalar (unbatched env)."""
    return jax.tree.map(lambda a, b: jnp.where(done, a, b), on_true, on_false)


class AutoReset(Wrapper):
    """Reset inside `step` when an episode ends, for envs whose `step` does not.

    `info["final_observation"]` holds the observation the episode ended on. Do not wrap
    gymnax envs with it: they already reset themselves.
    """

    def step(self, key, state, action, params):
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = self._env.step(
            key_step, state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        obs_reset, state_reset = self._env.reset(key_reset, params)
        info = {**info, "final_observation": obs}
        return (
            _select(done, obs_reset, obs),
            _select(done, state_reset, state),
            reward,
            terminated,
            truncated,
            info,
        )


@struct.dataclass
class EpisodeStatsState:
    env_state: Any
    episode_return: jax.Array  # [] running undiscounted return of the current episode
    episode_length: jax.Array  # [] int32 steps in the current episode


class EpisodeStats(Wrapper):
    """Adds `episode_return`, `episode_length` and `episode_done` to `info`.

    On a step where the episode ends, `info["episode_return"]`/`["episode_length"]` are the
    finished episode's totals and `info["episode_done"]` is True; otherwise they are the
    running totals and `episode_done` is False. Place it below `ScaleReward`/`ClipReward`
    so it counts the env's own reward.
    """

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        return obs, EpisodeStatsState(env_state, jnp.float32(0.0), jnp.int32(0))

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.episode_return + reward.astype(jnp.float32)
        ep_length = state.episode_length + 1
        info = {
            **info,
            "episode_return": ep_return,
            "episode_length": ep_length,
            "episode_done": done,
        }
        new_state = EpisodeStatsState(
            env_state,
            jnp.where(done, 0.0, ep_return).astype(jnp.float32),
            jnp.where(done, 0, ep_length).astype(jnp.int32),
        )
        return obs, new_state, reward, terminated, truncated, info


class VecEnv(Wrapper):
    """Run `num_envs` independent copies with `vmap`; params are shared (not batched).

    `reset(key, params)` splits `key` into `num_envs` keys; `step` takes actions with a
    leading `[num_envs]` axis and returns every output with that axis.
    """

    def __init__(self, env: Any, num_envs: int):
        if not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"VecEnv.num_envs={num_envs!r} is invalid: must be a positive int")
        super().__init__(env)
        self.num_envs = num_envs
        self._reset = jax.vmap(env.reset, in_axes=(0, None))
        self._step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def reset(self, key, params):
        return self._reset(jax.random.split(key, self.num_envs), params)

    def step(self, key, state, action, params):
        return self._step(jax.random.split(key, self.num_envs), state, action, params)


@struct.dataclass
class RunningMeanStd:
    """Running mean and variance over a stream of batches (Chan et al. parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array  # [] float32 number of samples seen (starts at a tiny epsilon)

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def update(self, batch: jax.Array) -> RunningMeanStd:
        """Fold in `batch` of shape `[..., *mean.shape]` (all leading axes are samples)."""
        lead = tuple(range(batch.ndim - self.mean.ndim))
        batch = batch.astype(jnp.float32)
        b_mean = jnp.mean(batch, axis=lead)
        b_var = jnp.var(batch, axis=lead)
        b_count = jnp.float32(batch.size // max(self.mean.size, 1))
        delta = b_mean - self.mean
        total = self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        return RunningMeanStd(mean, m2 / total, total)


@struct.dataclass
class NormalizeObservationState:
    env_state: Any
    obs_stats: RunningMeanStd


class NormalizeObservation(Wrapper):
    """Normalise observations with running mean/variance kept in the state.

    Works on a single env or a vectorised one: statistics are shared over all leading batch
    axes. Outputs are `clip((obs - mean) / sqrt(var + eps), -clip, clip)`; the same
    transform is applied to `info["final_observation"]`.

    Args:
        env: the inner env.
        clip: bound on normalised values.
        update: whether reset/step update the statistics (False freezes them, for evaluation).
    """

    def __init__(self, env: Any, clip: float = 10.0, eps: float = 1e-8, update: bool = True):
        super().__init__(env)
        self.clip = clip
        self.eps = eps
        self.update = update

    def _obs_shape(self, params) -> tuple[int, ...]:
        return tuple(self._env.observation_space(params).shape)

    def _normalize(self, obs, stats: RunningMeanStd):
        out = (obs - stats.mean) / jnp.sqrt(stats.var + self.eps)
        return jnp.clip(out, -self.clip, self.clip)

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        stats = RunningMeanStd.create(self._obs_shape(params))
        if self.update:
            stats = stats.update(obs)
        return self._normalize(obs, stats), NormalizeObservationState(env_state, stats)

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        stats = state.obs_stats.update(obs) if self.update else state.obs_stats
        info = dict(info)
        if "final_observation" in info:
            info["final_observation"] = self._normalize(info["final_observation"], stats)
        new_state = NormalizeObservationState(env_state, stats)
        return self._normalize(obs, stats), new_state, reward, terminated, truncated, info


@struct.dataclass
class ScaleRewardState:
    env_state: Any
    discounted_return: jax.Array  # [*batch] running discounted return per env
    return_stats: RunningMeanStd  # statistics of discounted_return (scalar)


class ScaleReward(Wrapper):
    """Divide rewards by the running std of the discounted return (as gym's NormalizeReward).

    Keeps the return scale near 1 whatever the env's reward scale. `info["episode_return"]`
    from an inner `EpisodeStats` still reports the unscaled return.
    """

    def __init__(self, env: Any, gamma: float = 0.99, eps: float = 1e-8):
        super().__init__(env)
        self.gamma = gamma
        self.eps = eps

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        batch_shape = jax.tree.leaves(obs)[0].shape[: _batch_ndim(self, params, obs)]
        state = ScaleRewardState(
            env_state, jnp.zeros(batch_shape, jnp.float32), RunningMeanStd.create(())
        )
        return obs, state

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        ret = state.discounted_return * self.gamma + reward
        stats = state.return_stats.update(ret)
        scaled = reward / jnp.sqrt(stats.var + self.eps)
        new_state = ScaleRewardState(env_state, jnp.where(done, 0.0, ret), stats)
        return obs, new_state, scaled, terminated, truncated, info


def _batch_ndim(env: Any, params: Any, obs: Any) -> int:
    """Number of leading batch axes on an observation (0 for a single env)."""
    leaf = jax.tree.leaves(obs)[0]
    return leaf.ndim - len(env.observation_space(params).shape)


class ClipReward(Wrapper):
    """Clip rewards to `[low, high]` (stateless)."""

    def __init__(self, env: Any, low: float = -1.0, high: float = 1.0):
        if not low <= high:
            raise ValueError(f"ClipReward: low={low} must be <= high={high}")
        super().__init__(env)
        self.low = low
        self.high = high

    def step(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        return obs, state, jnp.clip(reward, self.low, self.high), terminated, truncated, info


def observation_normalizer(env: Any, state: Any):
    """`obs -> normalised obs` with the statistics held in `state` by the
    `NormalizeObservation` wrapper of `env` (None if `env` has none). For evaluating a
    policy trained on normalised observations in an unwrapped env."""
    wrapper, inner = env, state
    while isinstance(wrapper, Wrapper):
        if isinstance(wrapper, NormalizeObservation):
            stats = inner.obs_stats
            return lambda obs: wrapper._normalize(obs, stats)
        if hasattr(inner, "env_state") and not isinstance(wrapper, VecEnv | ClipReward):
            inner = inner.env_state
        wrapper = wrapper._env
    return None
