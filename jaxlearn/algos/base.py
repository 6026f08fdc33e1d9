"""The shape every learner shares, so runners, sweeps and checkpoints treat algos alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlearn.envs.task import episode_extras  # noqa: F401 - re-exported for learners

# Per-update metrics: a dict of scalars. Every learner reports at least these three, summed
# over the episodes that finished during the update, so hosts can average exactly:
EPISODE_METRICS = ("episode_return_sum", "episode_length_sum", "episode_count")
# Task envs add `episode_<name>_sum` for each task metric (`success`, `collisions`, ...) and
# each reward component (`episode_reward_<component>_sum`), from `episode_extras`.


class Learner(NamedTuple):
    """A learning algorithm as pure functions over an explicit state pytree.

    Attributes:
        init: `(key, hparams) -> state`.
        update: `(state, hparams) -> (state, metrics)`: one iteration (collect + learn).
        num_updates: iterations in a full run of the config.
        env_steps_per_update: env steps (over all envs of one seed) per iteration.
        hparams: the config's default hyperparameters as a pytree of arrays.
        curriculum: the `jaxlearn.curriculum.Curriculum` the learner advances (or None); its
            state is the train state's `curriculum` field.
        greedy_episodes: `(state, key, num_episodes) -> dict`: greedy episodes of one
            seed's policy on the env params it trains on (`jaxlearn.evaluation.run_episodes`
            output).
        sampled_episodes: the same with the policy's actions drawn as in training (PPO:
            from its distribution; DQN: epsilon-greedy at `epsilon_end`).
    """

    init: Callable[[jax.Array, Any], Any]
    update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    num_updates: int
    env_steps_per_update: int
    hparams: Any
    curriculum: Any = None
    greedy_episodes: Callable[[Any, jax.Array, int], dict[str, jax.Array]] | None = None
    sampled_episodes: Callable[[Any, jax.Array, int], dict[str, jax.Array]] | None = None


def scan_updates(learner: Learner, state: Any, hparams: Any, num: int, unroll: int = 1):
    """Run `num` updates with `lax.scan`; returns (state, metrics stacked on a leading [num])."""
    return jax.lax.scan(lambda s, _: learner.update(s, hparams), state, None, num, unroll=unroll)


def make_train_fn(learner: Learner) -> Callable[..., tuple[Any, dict[str, jax.Array]]]:
    """`train(key, hparams=None) -> (state, metrics [num_updates])`, the whole run, pure."""

    def train(key: jax.Array, hparams: Any = None):
        hp = learner.hparams if hparams is None else hparams
        state = learner.init(key, hp)
        return scan_updates(learner, state, hp, learner.num_updates)

    return train


def all_finite(tree: Any) -> jax.Array:
    """`[]` bool: every floating leaf of `tree` is free of NaN and Inf."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)
