"""PPO as pure functions: rollout with `lax.scan`, GAE, epochs x minibatches of updates.

`make_train(config)` returns `train(key, hparams=None)`: the whole run as one pure function,
so `jax.jit(jax.vmap(train))(keys)` trains one agent per key in a single call.
`make_learner(config)` exposes the same run as `init`/`update` for chunked host loops.

The per-update work is `update` inside `make_learner`: the rollout scan, GAE, `learn` (the
epoch x minibatch scans, each step through `common.apply_gradients`), then
`common.finish_update`. The policy is built in `jaxlearn.algos.ppo.policy`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn.algos.base import Learner, make_train_fn
from jaxlearn.algos.common import (
    Episodes,
    check_data_parallel,
    episodes_of,
    finish_update,
    learning_rate_at,
    make_env_stack,
    make_optimizer,
    policy_episodes,
    reset_envs,
)
from jaxlearn.algos.ppo.config import PPOConfig, PPOHParams
from jaxlearn.algos.ppo.learn import learn
from jaxlearn.algos.ppo.losses import PPOBatch, gae
from jaxlearn.algos.ppo.policy import Policy, make_factored_policy, make_policy, sampled_act
from jaxlearn.algos.ppo.recurrent import make_recurrent_learner
from jaxlearn.config import fail
from jaxlearn.envs.setup import with_reward_weights
from jaxlearn.envs.wrappers import observation_normalizer

__all__ = [
    "PPOState",
    "Policy",
    "Transition",
    "learn",
    "make_factored_policy",
    "make_learner",
    "make_policy",
    "make_train",
]


@struct.dataclass
class PPOState:
    """Everything a PPO run carries between updates (a plain pytree)."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    key: jax.Array
    update_step: jax.Array  # [] int32 updates done so far
    curriculum: Any = None  # CurriculumState when the config has a curriculum


class Transition(NamedTuple):
    """One rollout step for all envs; stacked by the scan to [T, num_envs, ...]."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    episodes: Episodes  # episodes that ended at this step, with their totals


def make_learner(config: PPOConfig, data_shards: int = 1) -> Learner:
    """PPO as `init(key, hparams)` / `update(state, hparams)` over a `PPOState`.

    With `data_shards = D > 1` the learner is one device's part of a data-parallel agent:
    it runs `num_envs / D` envs and must be called inside `shard_map` over the axis
    `jaxlearn.parallel.DATA_AXIS`; gradients are averaged over it and episode metrics
    summed, so every device holds the same parameters (see `jaxlearn.parallel`).
    """
    if config.core != "none":  # a recurrent core: its own learner (the MLP path is as before)
        return make_recurrent_learner(config, data_shards)
    axis = None
    if data_shards > 1:
        axis = _check_data_parallel(config, data_shards)
    stack = make_env_stack(
        config,
        config.num_envs // data_shards,
        normalize_observations=config.normalize_observations,
        normalize_rewards=config.normalize_rewards,
        gamma=config.gamma,
        reward_clip=config.reward_clip,
    )
    env = stack.env
    policy = make_policy(config, env, stack.params)
    num_updates = config.num_updates

    def init(key: jax.Array, hparams: PPOHParams) -> PPOState:
        del hparams  # nothing in the initial state depends on them
        k_net, k_run, obs, env_state, c_state = reset_envs(key, stack, axis)
        params = policy.network.init(k_net, obs[:1])
        opt_state = make_optimizer(config).init(params)
        return PPOState(params, opt_state, env_state, obs, k_run, jnp.int32(0), c_state)

    def rollout_step(carry, _, env_params):
        params, env_state, obs, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        action, log_prob, value = policy.sample(k_act, params, obs)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, policy.to_env(action), env_params
        )
        tr = Transition(
            obs=obs,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            done=jnp.logical_or(terminated, truncated),
            final_obs=info["final_observation"],
            episodes=episodes_of(info),
        )
        return (params, env_state, next_obs, key), tr

    def update(state: PPOState, hparams: PPOHParams) -> tuple[PPOState, dict[str, jax.Array]]:
        key, k_roll, k_learn = jax.random.split(state.key, 3)
        if axis is not None:
            k_roll = jax.random.fold_in(k_roll, jax.lax.axis_index(axis))
        env_params = with_reward_weights(stack.params_of(state.curriculum), hparams)
        (_, env_state, obs, _), traj = jax.lax.scan(
            lambda c, x: rollout_step(c, x, env_params),
            (state.params, state.env_state, state.obs, k_roll),
            None,
            config.num_steps,
            unroll=config.rollout_unroll,
        )
        # V of the observation each step led to (pre-reset), in one batched pass.
        next_values = policy.value(state.params, traj.final_obs)
        advantages, targets = gae(
            traj.reward,
            traj.value,
            next_values,
            traj.terminated,
            traj.done,
            hparams.gamma,
            hparams.gae_lambda,
        )
        flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
        batch = PPOBatch(
            obs=flat(traj.obs),
            action=jax.tree.map(flat, traj.action),
            log_prob=flat(traj.log_prob),
            value=flat(traj.value),
            advantage=flat(advantages),
            target=flat(targets),
        )
        lr = learning_rate_at(
            hparams.learning_rate, state.update_step, num_updates, config.anneal_lr
        )
        params, opt_state, metrics = learn(
            state.params, state.opt_state, batch, k_learn, hparams, lr, policy, config, axis
        )
        metrics["learning_rate"] = lr
        metrics, c_state = finish_update(
            metrics, params, traj.episodes, stack.curriculum, state.curriculum, hparams, axis
        )
        new_state = PPOState(params, opt_state, env_state, obs, key, state.update_step + 1, c_state)
        return new_state, metrics

    def greedy_act_of(state: PPOState):
        norm = observation_normalizer(env, state.env_state)

        def act(params, obs):
            return policy.act_greedy(params, obs if norm is None else norm(obs))

        return act

    def sampled_act_of(state: PPOState):
        norm = observation_normalizer(env, state.env_state)
        draw = sampled_act(policy)

        def act(params, obs, key):
            return draw(params, obs if norm is None else norm(obs), key)

        return act

    return Learner(
        init,
        update,
        num_updates,
        config.batch_size,
        config.hparams(),
        stack.curriculum,
        policy_episodes(stack, greedy_act_of),
        policy_episodes(stack, sampled_act_of, sampled=True),
    )


def _check_data_parallel(config: PPOConfig, shards: int) -> str:
    """Validate a data-parallel split; returns the axis name."""
    axis = check_data_parallel(
        config, shards, {"num_envs": "each device runs num_envs / devices envs"}
    )
    name = type(config).__name__
    local = config.num_envs // shards * config.num_steps
    if local % config.num_minibatches:
        fail(
            name,
            "num_minibatches",
            config.num_minibatches,
            f"must divide each device's batch (num_envs / devices * num_steps = {local})",
        )
    for field in ("normalize_observations", "normalize_rewards"):
        if getattr(config, field):
            fail(
                name,
                field,
                True,
                "data-parallel training keeps per-device running "
                "statistics, which would differ; set it to false (not supported yet)",
            )
    return axis


def make_train(config: PPOConfig):
    """`train(key, hparams=None) -> (PPOState, metrics)`: the whole PPO run, pure and jittable.

    `metrics` is a dict of arrays with a leading `[num_updates]` axis.
    """
    return make_train_fn(make_learner(config))
