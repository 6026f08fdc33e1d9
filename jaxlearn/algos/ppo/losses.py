"""GAE and the PPO loss as public pure functions. Shapes: T = time, B = batch (envs)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation with terminated and truncated kept apart.

    Args:
        rewards: [T, B] reward of step t.
        values: [T, B] V(s_t).
        next_values: [T, B] V of the observation step t led to, *before* any auto-reset
            (`info["final_observation"]`), so a truncated step bootstraps from it.
        terminated: [T, B] true terminal: no bootstrap (V(s_{t+1}) counts as 0).
        done: [T, B] terminated or truncated: the advantage trace is cut after step t.
        gamma, gae_lambda: scalars (or arrays broadcastable to [B]).

    Returns:
        (advantages [T, B], returns [T, B]) with returns = advantages + values.
    """
    not_term = 1.0 - terminated.astype(jnp.float32)
    not_done = 1.0 - done.astype(jnp.float32)
    deltas = rewards + gamma * not_term * next_values - values
    decay = gamma * gae_lambda * not_done

    def body(next_adv, xs):
        delta, dec = xs
        adv = delta + dec * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(body, jnp.zeros_like(values[0]), (deltas, decay), reverse=True)
    return advantages, advantages + values


class PPOBatch(NamedTuple):
    """A flat batch of N transitions for the loss."""

    obs: jax.Array  # [N, *obs_shape]
    action: jax.Array  # [N] int (discrete) or [N, d] float (pre-squash sample, continuous)
    log_prob: jax.Array  # [N] log pi_old(a|s)
    value: jax.Array  # [N] V_old(s)
    advantage: jax.Array  # [N]
    target: jax.Array  # [N] return targets (advantage + value)


class LossInfo(NamedTuple):
    total: jax.Array
    policy: jax.Array
    value: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array


def ppo_loss(
    params: Any,
    batch: PPOBatch,
    log_prob_entropy_value,
    *,
    clip_eps: jax.Array | float,
    vf_coef: jax.Array | float,
    ent_coef: jax.Array | float,
    clip_value: bool = True,
    normalize_advantages: bool = True,
    axis_name: str | None = None,
) -> tuple[jax.Array, LossInfo]:
    """Clipped-surrogate PPO loss (to minimise).

    Args:
        params: network parameters.
        batch: `PPOBatch` of N transitions.
        log_prob_entropy_value: `f(params, obs, action) -> (log_prob [N], entropy [N], value [N])`.
        clip_eps: ratio clip range, also the value clip range when `clip_value`.
        vf_coef, ent_coef: loss weights.
        axis_name: with the batch split over a mapped axis (data parallelism), advantages
            are normalised with the statistics of the whole batch (`lax.pmean`).

    Returns:
        (scalar loss, LossInfo of scalars).
    """
    log_prob, entropy, value = log_prob_entropy_value(params, batch.obs, batch.action)
    adv = batch.advantage
    if normalize_advantages and axis_name is None:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    elif normalize_advantages:  # statistics of the whole batch, over every device's shard
        mean, mean_sq = jax.lax.pmean((adv.mean(), jnp.mean(adv**2)), axis_name)
        std = jnp.sqrt(jnp.maximum(mean_sq - mean**2, 0.0))
        adv = (adv - mean) / (std + 1e-8)
    log_ratio = log_prob - batch.log_prob
    ratio = jnp.exp(log_ratio)
    pg1 = ratio * adv
    pg2 = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    policy_loss = -jnp.mean(jnp.minimum(pg1, pg2))

    v_loss_unclipped = (value - batch.target) ** 2
    if clip_value:
        v_clipped = batch.value + jnp.clip(value - batch.value, -clip_eps, clip_eps)
        v_loss = 0.5 * jnp.mean(jnp.maximum(v_loss_unclipped, (v_clipped - batch.target) ** 2))
    else:
        v_loss = 0.5 * jnp.mean(v_loss_unclipped)
    ent = jnp.mean(entropy)
    total = policy_loss + vf_coef * v_loss - ent_coef * ent
    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)  # the k3 estimator, >= 0
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    return total, LossInfo(total, policy_loss, v_loss, ent, approx_kl, clip_frac)
