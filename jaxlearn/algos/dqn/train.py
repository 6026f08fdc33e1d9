"""DQN as pure functions: epsilon-greedy rollout with `lax.scan`, replay, masked learning.

One update (`Learner.update`) is a fixed amount of work, so the scan over updates has a
static body and vmapped seeds share every kernel:

1. `train_frequency // num_envs` vectorised env steps with epsilon-greedy actions; every
   step is pushed through the n-step window (`nstep.py`), which emits one finished n-step
   transition per env;
2. the `train_frequency` emitted transitions are added to the replay buffer in one write;
3. `gradient_steps` gradient steps, each on a freshly sampled batch (prioritized replay:
   importance-weighted loss, then `update_priorities` with |TD error|; with an episodic
   memory, `memory_fraction` of the batch is the stored transitions nearest to the
   batch's own states, see `make_memory`). Before
   `learning_starts` env steps they are computed and discarded with `jnp.where`, not
   skipped with Python or `lax.cond` control flow;
4. every `target_update_period` env steps, `target <- tau * online + (1 - tau) * target`
   (`common.update_target`), then `common.finish_update` (episode metrics, finite check,
   curriculum).

The per-update work is `update` inside `make_learner`; each gradient step is
`gradient_step` (targets, loss, `common.apply_gradients`).

`make_train(config)` returns `train(key, hparams=None)`: the whole run as one pure function,
so `jax.jit(jax.vmap(train))(keys)` trains one agent per key in a single call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn.algos.base import Learner, make_train_fn
from jaxlearn.algos.common import (
    apply_gradients,
    check_data_parallel,
    episodes_of,
    finish_update,
    make_env_stack,
    make_optimizer,
    policy_episodes,
    reset_envs,
    update_target,
)
from jaxlearn.algos.dqn.config import DQNConfig, DQNHParams
from jaxlearn.algos.dqn.exploration import epsilon_at, epsilon_greedy_with_noise, exploration_noise
from jaxlearn.algos.dqn.losses import double_q_target, dqn_loss, q_learning_target
from jaxlearn.algos.dqn.networks import Agent, make_agent, sampled_act
from jaxlearn.algos.dqn.nstep import NStepWindow, Step, Transition, window_init, window_push
from jaxlearn.algos.dqn.replay import make_memory, make_replay
from jaxlearn.envs.setup import with_reward_weights

__all__ = [
    "Agent",
    "DQNState",
    "gradient_step",
    "learning_rate_now",
    "make_agent",
    "make_learner",
    "make_train",
]


@struct.dataclass
class DQNState:
    """Everything a DQN run carries between updates (a plain pytree)."""

    params: Any  # online Q-network
    target_params: Any
    opt_state: Any
    buffer: Any  # BufferState or PrioritizedBufferState of `Transition`s
    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    window: NStepWindow  # each env's last n_step - 1 steps
    key: jax.Array
    update_step: jax.Array  # [] int32 updates done so far
    episodes: jax.Array  # [] int32 episodes finished so far (exponential epsilon)
    curriculum: Any = None  # CurriculumState when the config has a curriculum
    memory: Any = None  # MemoryState of `Transition`s when memory_fraction > 0


def gradient_step(
    params: Any,
    target_params: Any,
    opt_state: Any,
    batch: Transition,
    weights: jax.Array,
    hparams: DQNHParams,
    q_values: Callable[[Any, jax.Array], jax.Array],
    config: DQNConfig,
    axis_name: str | None = None,
) -> tuple[Any, Any, jax.Array, dict[str, jax.Array]]:
    """One gradient step of DQN on a sampled batch.

    Args:
        params, target_params: online and target Q-network parameters.
        opt_state: optimizer state (`common.make_optimizer(config)`).
        batch: `Transition` with leaves [B, ...]; target = reward + discount * V(next_obs).
        weights: [B] per-sample loss weights (importance weights, 0 for padding).
        hparams: `DQNHParams`; uses `learning_rate` and `max_grad_norm`.
        q_values: `(params, obs [B, ...]) -> [B, A]`.
        config: static choices: `double_dqn` (evaluate the online network's argmax with the
            target network), `loss` (`huber` or `mse`), `adam_eps`, `lora_rank`.
        axis_name: data parallelism: each device holds a shard of `batch`; the loss and
            gradients are averaged over `axis_name`, so every device applies the same step.

    Returns:
        (params, opt_state, td_error [B], metrics of scalars: loss, q_mean, td_abs_mean,
        grad_norm).
    """
    q_next_target = q_values(target_params, batch.next_obs)
    if config.double_dqn:
        next_value = double_q_target(q_values(params, batch.next_obs), q_next_target)
    else:
        next_value = q_learning_target(q_next_target)
    targets = batch.reward + batch.discount * next_value
    (loss_value, info), grads = jax.value_and_grad(dqn_loss, has_aux=True)(
        params, q_values, batch.obs, batch.action, targets, weights, config.loss
    )
    tx = make_optimizer(config, hparams.max_grad_norm, hparams.learning_rate)
    params, opt_state, g_norm, loss_value = apply_gradients(
        tx, grads, opt_state, params, loss_value, axis_name
    )
    valid = batch.valid.astype(jnp.float32)
    sums = (
        jnp.sum(valid),
        jnp.sum(info.q_selected * valid),
        jnp.sum(jnp.abs(info.td_error) * valid),
    )
    if axis_name is not None:  # means over every device's batch, the same on each device
        sums = jax.lax.psum(sums, axis_name)
    num_valid = jnp.maximum(sums[0], 1.0)
    metrics = {
        "loss": loss_value,
        "q_mean": sums[1] / num_valid,
        "td_abs_mean": sums[2] / num_valid,
        "grad_norm": g_norm,
    }
    return params, opt_state, info.td_error, metrics


def learning_rate_now(config: DQNConfig, hparams: DQNHParams, update_step: jax.Array):
    """The step size of update `update_step` (counted from 0): `learning_rate` at the first
    learning update, then linear to `lr_end_fraction * learning_rate` at the last one.

    Returns:
        [] float32 (or [B] under `vmap`).
    """
    first, last = config.first_learning_update, config.num_updates - 1
    progress = (update_step - first).astype(jnp.float32) / max(1, last - first)
    progress = jnp.clip(progress, 0.0, 1.0)
    return hparams.learning_rate * (1.0 - progress * (1.0 - hparams.lr_end_fraction))


def _where(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_learner(config: DQNConfig, data_shards: int = 1) -> Learner:
    """DQN as `init(key, hparams)` / `update(state, hparams)` over a `DQNState`.

    With `data_shards = D > 1` the learner is one device's part of a data-parallel agent: it
    runs `num_envs / D` envs, keeps its own replay shard (`buffer_size / D`, prioritized per
    shard) and samples `batch_size / D` per gradient step; it must be called inside
    `shard_map` over the axis `jaxlearn.parallel.DATA_AXIS`. Gradients and loss metrics are
    averaged over the axis and episode counts summed, so every device holds the same
    parameters and follows the same epsilon schedule (see `jaxlearn.parallel`).
    """
    axis = None
    if data_shards > 1:
        axis = _check_data_parallel(config, data_shards)
    stack = make_env_stack(config, config.num_envs // data_shards)
    env = stack.env
    agent = make_agent(config, env, stack.params)
    buffer = make_replay(config, data_shards)
    obs_space = env.observation_space(stack.params)
    obs_shape = tuple(obs_space.shape)
    obs_dtype = jax.dtypes.canonicalize_dtype(obs_space.dtype)
    memory = make_memory(config, agent, obs_shape, data_shards)
    num_envs = config.num_envs // data_shards  # this device's envs
    steps_per_env = config.steps_per_env
    first_learning_update = config.first_learning_update
    num_actions = agent.network.action_dim

    def init(key: jax.Array, hparams: DQNHParams) -> DQNState:
        del hparams  # nothing in the initial state depends on them
        k_net, k_run, obs, env_state, c_state = reset_envs(key, stack, axis)
        params = agent.network.init(k_net, obs[:1])
        no = jnp.zeros((num_envs,), bool)
        example_step = Step(
            obs, jnp.zeros((num_envs,), jnp.int32), jnp.zeros((num_envs,)), no, no, obs
        )
        item = jax.ShapeDtypeStruct(obs_shape, obs_dtype)
        example_item = Transition(
            obs=item,
            action=jnp.int32(0),
            reward=jnp.float32(0.0),
            discount=jnp.float32(0.0),
            next_obs=item,
            valid=jnp.bool_(False),
        )
        return DQNState(
            params=params,
            target_params=params,
            opt_state=make_optimizer(config).init(params),
            buffer=buffer.init(example_item),
            env_state=env_state,
            obs=obs,
            window=window_init(example_step, config.n_step),
            key=k_run,
            update_step=jnp.int32(0),
            episodes=jnp.int32(0),
            curriculum=c_state,
            memory=None if memory is None else memory.memory.init(example_item),
        )

    def rollout(state: DQNState, hparams: DQNHParams, k_noise: jax.Array, env_keys: jax.Array):
        first_env_step = state.update_step * config.train_frequency
        stage_params = with_reward_weights(stack.params_of(state.curriculum), hparams)

        def env_step(carry, xs):
            env_state, obs, window, episodes = carry
            i, k_env, noise = xs
            # env steps and episodes of the whole agent (all devices' envs)
            epsilon = epsilon_at(config, hparams, first_env_step + i * config.num_envs, episodes)
            q = agent.q_values(state.params, obs)
            action = epsilon_greedy_with_noise(q, epsilon, noise)
            next_obs, env_state, reward, terminated, truncated, info = env.step(
                k_env, env_state, action, stage_params
            )
            step = Step(
                obs=obs,
                action=action,
                reward=reward.astype(jnp.float32),
                terminated=terminated,
                truncated=truncated,
                next_obs=info["final_observation"],
            )
            window, transition = window_push(window, step, hparams.gamma)
            finished = jnp.sum(info["episode_done"].astype(jnp.int32))
            if axis is not None and config.epsilon_schedule == "exponential":
                finished = jax.lax.psum(finished, axis)  # the schedule counts every device's
            episodes = episodes + finished
            return (env_state, next_obs, window, episodes), (transition, epsilon, episodes_of(info))

        noise = exploration_noise(k_noise, (steps_per_env, num_envs), num_actions)
        xs = (jnp.arange(steps_per_env), env_keys, noise)
        carry = (state.env_state, state.obs, state.window, state.episodes)
        carry, (transitions, epsilons, episodes) = jax.lax.scan(
            env_step, carry, xs, unroll=config.rollout_unroll
        )
        if axis is not None and config.epsilon_schedule != "exponential":
            # one collective per update instead of per env step: the count is not read above
            finished = jax.lax.psum(carry[3] - state.episodes, axis)
            carry = (*carry[:3], state.episodes + finished)
        # [steps_per_env, num_envs, ...] -> [train_frequency, ...]
        transitions = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), transitions)
        return carry, transitions, epsilons[-1], episodes

    def learn(state: DQNState, buffer_state: Any, hparams: DQNHParams, keys: jax.Array):
        do_learn = (state.update_step >= first_learning_update) & buffer.can_sample(buffer_state)
        lr = learning_rate_now(config, hparams, state.update_step)
        hparams = hparams.replace(learning_rate=lr)

        def replay_step(carry, k):
            params, opt_state, buf = carry
            sample = buffer.sample(buf, k)
            batch: Transition = sample.experience
            weights = batch.valid.astype(jnp.float32)
            if config.prioritized:
                weights = weights * sample.weights
            memory_metrics = {}
            if memory is not None:
                batch, weights, memory_metrics = memory.mix(state.memory, params, batch, weights)
            new_params, new_opt_state, td_error, metrics = gradient_step(
                params,
                state.target_params,
                opt_state,
                batch,
                weights,
                hparams,
                agent.q_values,
                config,
                axis,
            )
            params = _where(do_learn, new_params, params)
            opt_state = _where(do_learn, new_opt_state, opt_state)
            if config.prioritized:
                n = sample.indices.shape[0]  # the replayed items lead the batch
                priorities = jnp.where(batch.valid[:n], jnp.abs(td_error[:n]), 0.0)
                buf = buffer.update_priorities(buf, sample.indices, priorities, do_learn)
            return (params, opt_state, buf), {**metrics, **memory_metrics}

        (params, opt_state, buffer_state), metrics = jax.lax.scan(
            replay_step,
            (state.params, state.opt_state, buffer_state),
            keys,
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["learning"] = do_learn.astype(jnp.float32)
        return params, opt_state, buffer_state, metrics

    def update(state: DQNState, hparams: DQNHParams) -> tuple[DQNState, dict[str, jax.Array]]:
        # Every key of the update from one split: on CPU each threefry call is a small loop of
        # kernels, which costs more than the env step itself for small envs.
        keys = jax.random.split(state.key, 2 + steps_per_env + config.gradient_steps)
        if axis is not None:  # each device explores its envs and samples its shard its own way
            index = jax.lax.axis_index(axis)
            keys = keys.at[1:].set(jax.vmap(jax.random.fold_in, (0, None))(keys[1:], index))
        key, k_noise = keys[0], keys[1]
        env_keys, learn_keys = keys[2 : 2 + steps_per_env], keys[2 + steps_per_env :]
        carry, transitions, epsilon, episodes = rollout(state, hparams, k_noise, env_keys)
        env_state, obs, window, num_episodes = carry
        buffer_state = buffer.add(state.buffer, transitions)
        memory_state = state.memory
        if memory is not None:
            memory_keys = memory.embed(state.params, transitions.obs)
            memory_state = memory.memory.add(memory_state, transitions, memory_keys)
        params, opt_state, buffer_state, metrics = learn(
            state.replace(memory=memory_state), buffer_state, hparams, learn_keys
        )
        # target_update_period is data (a sweep may vmap it): env steps -> updates
        every = jnp.maximum(1, hparams.target_update_period // config.train_frequency)
        target_params = update_target(
            state.target_params, params, hparams.tau, state.update_step + 1, every.astype(jnp.int32)
        )
        metrics["epsilon"] = epsilon
        metrics, c_state = finish_update(
            metrics, params, episodes, stack.curriculum, state.curriculum, hparams, axis
        )
        new_state = DQNState(
            params=params,
            target_params=target_params,
            opt_state=opt_state,
            buffer=buffer_state,
            env_state=env_state,
            obs=obs,
            window=window,
            key=key,
            update_step=state.update_step + 1,
            episodes=num_episodes,
            curriculum=c_state,
            memory=memory_state,
        )
        return new_state, metrics

    return Learner(
        init,
        update,
        config.num_updates,
        config.train_frequency,
        config.hparams(),
        stack.curriculum,
        policy_episodes(stack, lambda state: agent.greedy_action),
        policy_episodes(stack, lambda state: sampled_act(agent, config.epsilon_end), sampled=True),
    )


def _check_data_parallel(config: DQNConfig, shards: int) -> str:
    """Validate a data-parallel split over `shards` devices; returns the axis name."""
    sizes = {
        "num_envs": "each device runs num_envs / devices envs",
        "buffer_size": "each device keeps a replay shard of buffer_size / devices",
        "batch_size": "each device samples batch_size / devices per gradient step",
        # implied by num_envs (train_frequency is a multiple of it); checked for the message
        "train_frequency": "each device adds train_frequency / devices transitions per update",
    }
    return check_data_parallel(config, shards, sizes)


def make_train(config: DQNConfig):
    """`train(key, hparams=None) -> (DQNState, metrics)`: the whole DQN run, pure and jittable.

    `metrics` is a dict of arrays with a leading `[num_updates]` axis.
    """
    return make_train_fn(make_learner(config))
