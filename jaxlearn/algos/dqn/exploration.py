"""Exploration: epsilon-greedy action choice and the epsilon schedules (pure functions)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ExplorationNoise(NamedTuple):
    """The randomness of epsilon-greedy, drawn ahead (e.g. for all steps of a rollout at once)."""

    uniform: jax.Array  # [...] float32 in [0, 1): explore where uniform < epsilon
    random_action: jax.Array  # [...] int32 uniform in [0, A)


def exploration_noise(key: jax.Array, shape: tuple[int, ...], num_actions: int) -> ExplorationNoise:
    """Draw epsilon-greedy noise for `shape` (e.g. [T, B]) action choices.

    One PRNG call for everything: on CPU each threefry call is a small loop of kernels, and
    a rollout makes many of them.
    """
    u = jax.random.uniform(key, (2, *shape))
    action = jnp.minimum(jnp.floor(u[1] * num_actions), num_actions - 1).astype(jnp.int32)
    return ExplorationNoise(uniform=u[0], random_action=action)


def epsilon_greedy_with_noise(
    q_values: jax.Array, epsilon: jax.Array | float, noise: ExplorationNoise
) -> jax.Array:
    """Epsilon-greedy with pre-drawn noise: q_values [B, A], epsilon [] or [B], noise [B]
    -> actions [B] int32. Ties in the greedy choice go to the lowest action index."""
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    return jnp.where(noise.uniform < epsilon, noise.random_action, greedy)


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon: jax.Array | float) -> jax.Array:
    """Greedy action with probability `1 - epsilon`, else a uniformly random one.

    Args:
        key: PRNG key.
        q_values: [B, A] Q-values.
        epsilon: [] or [B] exploration probability in [0, 1].

    Returns:
        [B] int32 actions. Ties in the greedy choice go to the lowest action index.
    """
    batch, num_actions = q_values.shape
    noise = exploration_noise(key, (batch,), num_actions)
    return epsilon_greedy_with_noise(q_values, epsilon, noise)


def linear_epsilon(
    env_step: jax.Array,
    total_timesteps: int,
    start: jax.Array,
    end: jax.Array,
    exploration_fraction: jax.Array,
) -> jax.Array:
    """Linear decay from `start` to `end` over the first `exploration_fraction` of training.

    Args:
        env_step: [] env steps taken so far (over all envs of one seed).
        total_timesteps: env steps of the whole run.
        start, end, exploration_fraction: [] hyperparameters.

    Returns:
        [] float32 epsilon; `end` from `exploration_fraction * total_timesteps` steps on.
    """
    duration = exploration_fraction * total_timesteps
    frac = jnp.minimum(env_step.astype(jnp.float32) / duration, 1.0)
    return start + (end - start) * frac


def exponential_epsilon(
    episodes: jax.Array, start: jax.Array, end: jax.Array, decay: jax.Array
) -> jax.Array:
    """Per-episode decay: `max(end, start * decay ** episodes)`.

    Args:
        episodes: [] episodes finished so far (over all envs of one seed).
        start, end, decay: [] hyperparameters (decay in (0, 1]).

    Returns:
        [] float32 epsilon.
    """
    return jnp.maximum(end, start * decay ** episodes.astype(jnp.float32))


def epsilon_at(config: Any, hparams: Any, env_step: jax.Array, episodes: jax.Array) -> jax.Array:
    """[] epsilon of the configured schedule after `env_step` env steps and `episodes`
    finished episodes (both counted over all envs of one seed)."""
    if config.epsilon_schedule == "linear":
        return linear_epsilon(
            env_step,
            config.total_timesteps,
            hparams.epsilon_start,
            hparams.epsilon_end,
            hparams.exploration_fraction,
        )
    return exponential_epsilon(
        episodes, hparams.epsilon_start, hparams.epsilon_end, hparams.epsilon_decay
    )
