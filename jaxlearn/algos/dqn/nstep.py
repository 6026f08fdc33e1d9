"""Streaming n-step transitions: a per-env window of recent steps, emitted as they complete.

Every env step is pushed into a window holding each env's last `n - 1` steps. The window
plus the new step is `n` consecutive steps of one env, and the transition that *starts* at
its oldest step is now complete: its n-step return stops at the first episode end in the
window (`losses.n_step_returns`), so nothing later is needed. Each push therefore emits
exactly one finished n-step transition per env, `n - 1` steps after the step it starts at,
and the replay buffer (uniform or prioritized) only ever stores finished transitions.

Details:
- During the first `n - 1` steps the window is not full and the emitted transitions are
  padding: `valid` is False and the learner gives them zero weight. They are the only
  padding ever written.
- The last `n - 1` start steps of a run are never emitted (the run ends first).
- With `n = 1` the window is empty and a push turns the step into the usual transition.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn.algos.dqn.losses import n_step_returns


class Step(NamedTuple):
    """One vectorised env step; leaves [N, ...] (N envs)."""

    obs: jax.Array  # [N, *obs_shape] observation the action was taken in
    action: jax.Array  # [N] int32
    reward: jax.Array  # [N] float32
    terminated: jax.Array  # [N] bool
    truncated: jax.Array  # [N] bool
    next_obs: jax.Array  # [N, *obs_shape] observation reached, before any auto-reset


class Transition(NamedTuple):
    """An n-step replay item; leaves unbatched in the buffer, [B, ...] when sampled.

    The Q-learning target is `reward + discount * V(next_obs)`.
    """

    obs: jax.Array  # [*obs_shape] observation at the window's first step
    action: jax.Array  # [] int32 action at the first step
    reward: jax.Array  # [] float32 discounted n-step return (stops at an episode end)
    discount: jax.Array  # [] float32 gamma^m, 0 after a termination
    next_obs: jax.Array  # [*obs_shape] observation to bootstrap from
    valid: jax.Array  # [] bool, False for padding emitted before the window filled


@struct.dataclass
class NStepWindow:
    """The last `n - 1` steps of every env, oldest first.

    Attributes:
        steps: `Step` with leaves [n - 1, N, ...] (zero-length when n = 1).
        count: [] int32 real steps held, saturating at n - 1.
    """

    steps: Step
    count: jax.Array


def window_init(example: Step, n_step: int) -> NStepWindow:
    """An empty window for steps shaped like `example` (leaves [N, ...])."""
    steps = jax.tree.map(lambda x: jnp.zeros((n_step - 1, *x.shape), x.dtype), example)
    return NStepWindow(steps, jnp.zeros((), jnp.int32))


def window_push(
    window: NStepWindow, step: Step, gamma: jax.Array | float
) -> tuple[NStepWindow, Transition]:
    """Append one step per env; emit the n-step transition starting at the oldest step.

    Args:
        window: `NStepWindow` of the previous n - 1 steps.
        step: `Step` with leaves [N, ...].
        gamma: [] discount.

    Returns:
        (new window, `Transition` with leaves [N, ...]).
    """
    n_prev = window.steps.reward.shape[0]
    full = jax.tree.map(lambda w, s: jnp.concatenate([w, s[None]], axis=0), window.steps, step)
    target = n_step_returns(full.reward, full.terminated, full.truncated, gamma)
    if n_prev == 0:
        next_obs = step.next_obs
    else:
        next_obs = jax.vmap(lambda x, i: x[i], in_axes=(1, 0))(full.next_obs, target.last)
    num_envs = step.reward.shape[0]
    transition = Transition(
        obs=full.obs[0],
        action=full.action[0],
        reward=target.returns,
        discount=target.discounts,
        next_obs=next_obs,
        valid=jnp.broadcast_to(window.count >= n_prev, (num_envs,)),
    )
    new_window = NStepWindow(
        steps=jax.tree.map(lambda x: x[1:], full),
        count=jnp.minimum(window.count + 1, n_prev),
    )
    return new_window, transition
