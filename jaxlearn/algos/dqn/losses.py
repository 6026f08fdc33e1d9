"""n-step returns, Q-learning targets and the DQN loss as public pure functions.

Shapes: n = steps in an n-step window, B = batch, A = actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class NStepReturn(NamedTuple):
    """The bootstrapped n-step target of a window, minus the bootstrap value itself.

    The full target is `returns + discounts * V(obs after step last)`.
    """

    returns: jax.Array  # [B] sum_{k < m} gamma^k r_k, m = steps up to the first episode end
    discounts: jax.Array  # [B] gamma^m, or 0 when step `last` terminated
    last: jax.Array  # [B] int32 m - 1: the step whose next observation is bootstrapped from


def n_step_returns(
    rewards: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: jax.Array | float,
) -> NStepReturn:
    """n-step discounted returns of windows that may contain an episode end.

    The sum starts at step 0 of the window and stops after the first step that ends the
    episode (terminated or truncated), so it never crosses into the next episode; with no
    end in the window it covers all n steps. A window that ends by termination does not
    bootstrap (`discounts` = 0); one that ends by truncation bootstraps from the observation
    the truncated step reached (`info["final_observation"]`), like an unfinished window.

    Args:
        rewards: [n, B] rewards of steps 0..n-1 of each window.
        terminated: [n, B] bool, true terminal after step k.
        truncated: [n, B] bool, time limit after step k.
        gamma: [] (or [B]) discount.

    Returns:
        `NStepReturn(returns [B], discounts [B], last [B])`.
    """
    n = rewards.shape[0]
    done = jnp.logical_or(terminated, truncated).astype(jnp.float32)
    # counted[k] = 1 while no episode end happened strictly before step k.
    alive_after = jnp.cumprod(1.0 - done, axis=0)
    counted = jnp.concatenate([jnp.ones_like(done[:1]), alive_after[:-1]], axis=0)
    powers = jnp.asarray(gamma, jnp.float32) ** jnp.arange(n, dtype=jnp.float32).reshape(
        (n,) + (1,) * (rewards.ndim - 1)
    )
    returns = jnp.sum(powers * counted * rewards.astype(jnp.float32), axis=0)
    num = jnp.sum(counted, axis=0)  # m in [1, n]
    last = num.astype(jnp.int32) - 1
    term_last = jnp.take_along_axis(terminated, last[None], axis=0)[0]
    discounts = jnp.where(term_last, 0.0, jnp.asarray(gamma, jnp.float32) ** num)
    return NStepReturn(returns, discounts, last)


def q_learning_target(q_next_target: jax.Array) -> jax.Array:
    """Value of the next state under the target network: `max_a Q_target(s', a)`.

    Args:
        q_next_target: [B, A].

    Returns:
        [B].
    """
    return jnp.max(q_next_target, axis=-1)


def double_q_target(q_next_online: jax.Array, q_next_target: jax.Array) -> jax.Array:
    """Double-DQN value of the next state: `Q_target(s', argmax_a Q_online(s', a))`.

    Args:
        q_next_online: [B, A] online-network Q-values at s' (chooses the action).
        q_next_target: [B, A] target-network Q-values at s' (evaluates it).

    Returns:
        [B]. Ties in the argmax go to the lowest action index.
    """
    best = jnp.argmax(q_next_online, axis=-1)
    return jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]


def td_loss(td_error: jax.Array, kind: str) -> jax.Array:
    """Elementwise loss of TD errors: `huber` (delta 1) or `mse`, both 0.5 * td^2 near zero."""
    if kind == "mse":
        return 0.5 * jnp.square(td_error)
    if kind == "huber":
        abs_td = jnp.abs(td_error)
        return jnp.where(abs_td <= 1.0, 0.5 * jnp.square(td_error), abs_td - 0.5)
    raise ValueError(f"td_loss: kind={kind!r} is invalid: must be one of ['huber', 'mse']")


class LossInfo(NamedTuple):
    td_error: jax.Array  # [B] target - Q(s, a)
    q_selected: jax.Array  # [B] Q(s, a)


def dqn_loss(
    params: Any,
    q_apply: Callable[[Any, jax.Array], jax.Array],
    obs: jax.Array,
    actions: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    kind: str = "mse",
) -> tuple[jax.Array, LossInfo]:
    """Weighted TD loss of the online network (to minimise).

    Args:
        params: online-network parameters (differentiated).
        q_apply: `(params, obs [B, *obs_shape]) -> q [B, A]`.
        obs: [B, *obs_shape] observations the actions were taken in.
        actions: [B] int actions taken.
        targets: [B] bootstrapped targets (treated as constants).
        weights: [B] per-sample weights (importance weights for prioritized replay, 0 for
            padding); the loss is `mean(weights * td_loss(td))` over the batch.
        kind: `huber` or `mse`.

    Returns:
        (scalar loss, LossInfo(td_error [B], q_selected [B])).
    """
    q = q_apply(params, obs)
    q_selected = jnp.take_along_axis(q, actions[:, None].astype(jnp.int32), axis=-1)[:, 0]
    td = jax.lax.stop_gradient(targets) - q_selected
    loss = jnp.mean(weights * td_loss(td, kind))
    return loss, LossInfo(td, q_selected)
