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
4. every `target_update_period` env steps, `target <- tau * online + (1 - tau) * target`.

`make_train(config)` returns `train(key, hparams=None)`: the whole run as one pure function,
so `jax.jit(jax.vmap(train))(keys)` trains one agent per key in a single call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxlearn import lora, spaces
from jaxlearn.algos.base import Learner, all_finite, episode_extras, make_train_fn
from jaxlearn.algos.dqn.config import DQNConfig, DQNHParams
from jaxlearn.algos.dqn.exploration import (
    epsilon_greedy,
    epsilon_greedy_with_noise,
    exploration_noise,
    exponential_epsilon,
    linear_epsilon,
)
from jaxlearn.algos.dqn.losses import double_q_target, dqn_loss, q_learning_target
from jaxlearn.algos.dqn.networks import QNetwork
from jaxlearn.algos.dqn.nstep import NStepWindow, Step, Transition, window_init, window_push
from jaxlearn.buffers import prioritized_buffer, uniform_buffer
from jaxlearn.config import fail
from jaxlearn.curriculum import episode_outcomes
from jaxlearn.envs.setup import base_env, build_env, with_reward_weights
from jaxlearn.evaluation import evaluate
from jaxlearn.memory import Memory, episodic_memory, project, random_projection
from jaxlearn.networks import ACTIVATIONS


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


class Agent(NamedTuple):
    """The Q-network plus how it acts."""

    network: QNetwork
    q_values: Callable[[Any, jax.Array], jax.Array]  # (params, obs [B, ...]) -> [B, A]
    select_action: Callable[..., jax.Array]  # (key, params, obs [B, ...], epsilon) -> [B]
    greedy_action: Callable[[Any, jax.Array], jax.Array]  # (params, obs [B, ...]) -> [B]


def make_agent(config: DQNConfig, env: Any, env_params: Any) -> Agent:
    """Build the Q-network for the env's (Discrete) action space and its action functions."""
    space = spaces.from_gymnax(env.action_space(env_params))
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"DQN needs a Discrete action space, got {space!r}")
    obs_shape = tuple(env.observation_space(env_params).shape)
    network = QNetwork(
        action_dim=space.n,
        obs_ndim=len(obs_shape),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
    )

    def q_values(params, obs):
        return network.apply(params, obs)

    def select_action(key, params, obs, epsilon):
        """Epsilon-greedy: obs [B, *obs_shape], epsilon [] or [B] -> actions [B] int32."""
        return epsilon_greedy(key, q_values(params, obs), epsilon)

    def greedy_action(params, obs):
        return jnp.argmax(q_values(params, obs), axis=-1).astype(jnp.int32)

    return Agent(network, q_values, select_action, greedy_action)


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
    """Adam's direction only: clipping and the learning rate come from `DQNHParams`.
    With LoRA (`lora_rank > 0`) only the adapters have optimizer state and move."""
    adam = optax.scale_by_adam(eps=config.adam_eps)
    return lora.only_adapters(adam) if config.lora_rank else adam


def make_replay(config: DQNConfig, shards: int = 1):
    """The replay buffer of `Transition`s: uniform, or prioritized when `config.prioritized`.

    With `shards = D > 1` it is one device's shard of a data-parallel agent's replay:
    `buffer_size / D` transitions, `batch_size / D` sampled, `train_frequency / D` added.
    """
    capacity = config.buffer_size // shards
    batch = config.replay_batch_size // shards  # the rest of a batch: episodic memory
    added = config.train_frequency // shards
    if config.prioritized:
        return prioritized_buffer(
            capacity=capacity,
            sample_batch_size=batch,
            alpha=config.per_alpha,
            beta_start=config.per_beta_start,
            beta_end=config.per_beta_end,
            beta_steps=config.num_learning_steps,
            eps=config.per_eps,
            add_batch_size=added,
        )
    return uniform_buffer(capacity=capacity, sample_batch_size=batch, add_batch_size=added)


def epsilon_at(
    config: DQNConfig, hparams: DQNHParams, env_step: jax.Array, episodes: jax.Array
) -> jax.Array:
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


def update(
    params: Any,
    target_params: Any,
    opt_state: Any,
    batch: Transition,
    weights: jax.Array,
    hparams: DQNHParams,
    q_values: Callable[[Any, jax.Array], jax.Array],
    tx: optax.GradientTransformation,
    *,
    double_dqn: bool = False,
    loss: str = "mse",
    axis_name: str | None = None,
) -> tuple[Any, Any, jax.Array, dict[str, jax.Array]]:
    """One gradient step of DQN on a sampled batch.

    Args:
        params, target_params: online and target Q-network parameters.
        opt_state: state of `tx` (Adam moments).
        batch: `Transition` with leaves [B, ...]; target = reward + discount * V(next_obs).
        weights: [B] per-sample loss weights (importance weights, 0 for padding).
        hparams: `DQNHParams`; uses `learning_rate` and `max_grad_norm`.
        q_values: `(params, obs [B, ...]) -> [B, A]`.
        tx: the direction transformation (`make_optimizer`).
        double_dqn: evaluate the online network's argmax with the target network.
        loss: `huber` or `mse`.
        axis_name: data parallelism: each device holds a shard of `batch`; the loss and
            gradients are averaged over `axis_name`, so every device applies the same step.

    Returns:
        (params, opt_state, td_error [B], metrics of scalars: loss, q_mean, td_abs_mean,
        grad_norm).
    """
    q_next_target = q_values(target_params, batch.next_obs)
    if double_dqn:
        next_value = double_q_target(q_values(params, batch.next_obs), q_next_target)
    else:
        next_value = q_learning_target(q_next_target)
    targets = batch.reward + batch.discount * next_value
    (loss_value, info), grads = jax.value_and_grad(dqn_loss, has_aux=True)(
        params, q_values, batch.obs, batch.action, targets, weights, loss
    )
    if lora.has_adapters(grads):  # LoRA: the base network stays frozen
        grads = lora.freeze(grads)
    if axis_name is not None:
        grads, loss_value = jax.lax.pmean((grads, loss_value), axis_name)
    g_norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, hparams.max_grad_norm / (g_norm + 1e-6))
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - hparams.learning_rate * u, params, updates)
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


def _where(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def q_features(network: QNetwork, params: Any, obs: jax.Array) -> jax.Array:
    """The Q-network's last hidden activations: obs [B, *obs_shape] -> [B, hidden_sizes[-1]]."""
    layer = f"Dense_{len(network.hidden_sizes) - 1}"
    _, captured = network.apply(
        params,
        obs,
        capture_intermediates=lambda m, method: m.name == layer and method == "__call__",
        mutable=["intermediates"],
    )
    return ACTIVATIONS[network.activation](captured["intermediates"][layer]["__call__"][0])


def make_memory(
    config: DQNConfig, agent: Agent, obs_shape: tuple[int, ...], shards: int = 1
) -> tuple[Memory | None, Callable[[Any, jax.Array], jax.Array] | None]:
    """The episodic memory of `Transition`s and its embedding `(params, obs [N, ...]) ->
    [N, D]`, or `(None, None)` when `memory_fraction` is 0.

    `projection`: a fixed Gaussian projection of the flattened observation (the same for
    every seed); `features`: the online Q-network's last hidden layer, computed with the
    parameters of the moment (stored keys keep the parameters they were added with).
    """
    if config.memory_fraction == 0.0:
        return None, None
    if shards > 1:
        fail(
            type(config).__name__,
            "memory_fraction",
            config.memory_fraction,
            "must be 0: the episodic memory does not support data-parallel training yet",
        )
    if config.memory_embedding == "features":
        dim = config.hidden_sizes[-1]

        def embed(params, obs):
            return q_features(agent.network, params, obs)

    else:
        dim = config.memory_embed_dim
        with jax.ensure_compile_time_eval():  # a constant, also if built under a trace
            projection = random_projection(jax.random.key(0), obs_shape, dim)

        def embed(params, obs):
            del params
            return project(projection, obs)

    memory = episodic_memory(
        config.memory_size,
        dim,
        metric=config.memory_metric,
        add_batch_size=config.train_frequency,
    )
    return memory, embed


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
    env, env_params, curriculum = build_env(config, config.num_envs // data_shards)
    agent = make_agent(config, env, env_params)
    tx = make_optimizer(config)
    buffer = make_replay(config, data_shards)
    obs_space = env.observation_space(env_params)
    obs_shape = tuple(obs_space.shape)
    obs_dtype = jax.dtypes.canonicalize_dtype(obs_space.dtype)
    memory, embed = make_memory(config, agent, obs_shape, data_shards)
    num_envs = config.num_envs // data_shards  # this device's envs
    steps_per_env = config.steps_per_env
    first_learning_update = config.first_learning_update
    num_actions = agent.network.action_dim

    def init(key: jax.Array, hparams: DQNHParams) -> DQNState:
        del hparams  # nothing in the initial state depends on them
        k_net, k_env, k_run = jax.random.split(key, 3)
        if axis is not None:  # same network on every device, different envs
            k_env = jax.random.fold_in(k_env, jax.lax.axis_index(axis))
        c_state = None if curriculum is None else curriculum.init()
        obs, env_state = env.reset(k_env, params_of(c_state))
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
            opt_state=tx.init(params),
            buffer=buffer.init(example_item),
            env_state=env_state,
            obs=obs,
            window=window_init(example_step, config.n_step),
            key=k_run,
            update_step=jnp.int32(0),
            episodes=jnp.int32(0),
            curriculum=c_state,
            memory=None if memory is None else memory.init(example_item),
        )

    def params_of(c_state: Any) -> Any:
        """The env params now: fixed, or the curriculum's current stage."""
        return env_params if curriculum is None else curriculum.env_params(c_state)

    def rollout(state: DQNState, hparams: DQNHParams, k_noise: jax.Array, env_keys: jax.Array):
        first_env_step = state.update_step * config.train_frequency
        stage_params = with_reward_weights(params_of(state.curriculum), hparams)

        def env_step(carry, xs):
            env_state, obs, window, episodes, ep_stats = carry
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
            ep_done = info["episode_done"]
            ep_stats = (
                ep_stats[0] + jnp.sum(jnp.where(ep_done, info["episode_return"], 0.0)),
                ep_stats[1] + jnp.sum(jnp.where(ep_done, info["episode_length"], 0)),
                ep_stats[2] + jnp.sum(ep_done.astype(jnp.int32)),
            )
            finished = jnp.sum(ep_done.astype(jnp.int32))
            if axis is not None and config.epsilon_schedule == "exponential":
                finished = jax.lax.psum(finished, axis)  # the schedule counts every device's
            episodes = episodes + finished
            episode = (ep_done, info["episode_return"], episode_extras(info))
            return (env_state, next_obs, window, episodes, ep_stats), (transition, epsilon, episode)

        noise = exploration_noise(k_noise, (steps_per_env, num_envs), num_actions)
        xs = (jnp.arange(steps_per_env), env_keys, noise)
        zero_stats = (jnp.float32(0.0), jnp.int32(0), jnp.int32(0))
        carry = (state.env_state, state.obs, state.window, state.episodes, zero_stats)
        carry, (transitions, epsilons, episodes) = jax.lax.scan(
            env_step, carry, xs, unroll=config.rollout_unroll
        )
        if axis is not None and config.epsilon_schedule != "exponential":
            # one collective per update instead of per env step: the count is not read above
            finished = jax.lax.psum(carry[3] - state.episodes, axis)
            carry = (*carry[:3], state.episodes + finished, carry[4])
        # [steps_per_env, num_envs, ...] -> [train_frequency, ...]
        transitions = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), transitions)
        return carry, transitions, epsilons[-1], episodes

    def mix_memory(memory_state: Any, params: Any, batch: Transition, weights: jax.Array):
        """Append `memory_batch_size` transitions retrieved from the episodic memory as the
        `memory_k` nearest neighbours of the batch's first `memory_queries` states.

        Args: batch `Transition` [R, ...] and weights [R] of the replayed items.
        Returns: (batch [B, ...], weights [B], metrics), B = batch_size; retrieved items get
        weight 1 (0 where fewer neighbours exist than asked for).
        """
        m = config.memory_batch_size
        queries = embed(params, batch.obs[: config.memory_queries])
        got = memory.retrieve(
            memory_state, queries, config.memory_k + 1, approximate=config.memory_approx
        )

        # Rank 0 is the query's own transition (the memory holds all the replay buffer does).
        def flat(x):
            return x[:, 1:].reshape(-1, *x.shape[2:])[:m]

        found = flat(got.valid)
        extra = jax.tree.map(flat, got.experience)
        extra = extra._replace(valid=extra.valid & found)
        batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), batch, extra)
        weights = jnp.concatenate([weights, extra.valid.astype(jnp.float32)])
        num_found = jnp.maximum(jnp.sum(found), 1)
        metrics = {
            "memory_found": jnp.mean(found.astype(jnp.float32)),
            "memory_score_mean": jnp.sum(jnp.where(found, flat(got.scores), 0.0)) / num_found,
        }
        return batch, weights, metrics

    def learn(state: DQNState, buffer_state: Any, hparams: DQNHParams, keys: jax.Array):
        do_learn = (state.update_step >= first_learning_update) & buffer.can_sample(buffer_state)

        def gradient_step(carry, k):
            params, opt_state, buf = carry
            sample = buffer.sample(buf, k)
            batch: Transition = sample.experience
            weights = batch.valid.astype(jnp.float32)
            if config.prioritized:
                weights = weights * sample.weights
            memory_metrics = {}
            if memory is not None:
                batch, weights, memory_metrics = mix_memory(state.memory, params, batch, weights)
            new_params, new_opt_state, td_error, metrics = update(
                params,
                state.target_params,
                opt_state,
                batch,
                weights,
                hparams,
                agent.q_values,
                tx,
                double_dqn=config.double_dqn,
                loss=config.loss,
                axis_name=axis,
            )
            params = _where(do_learn, new_params, params)
            opt_state = _where(do_learn, new_opt_state, opt_state)
            if config.prioritized:
                n = sample.indices.shape[0]  # the replayed items lead the batch
                priorities = jnp.where(batch.valid[:n], jnp.abs(td_error[:n]), 0.0)
                new_buf = buffer.update_priorities(buf, sample.indices, priorities)
                # Only the sum-tree fields change: never select over the stored items.
                buf = buf.replace(
                    tree=jnp.where(do_learn, new_buf.tree, buf.tree),
                    max_priority=jnp.where(do_learn, new_buf.max_priority, buf.max_priority),
                    beta_step=jnp.where(do_learn, new_buf.beta_step, buf.beta_step),
                )
            return (params, opt_state, buf), {**metrics, **memory_metrics}

        (params, opt_state, buffer_state), metrics = jax.lax.scan(
            gradient_step,
            (state.params, state.opt_state, buffer_state),
            keys,
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["learning"] = do_learn.astype(jnp.float32)
        return params, opt_state, buffer_state, metrics

    def learner_update(
        state: DQNState, hparams: DQNHParams
    ) -> tuple[DQNState, dict[str, jax.Array]]:
        # Every key of the update from one split: on CPU each threefry call is a small loop of
        # kernels, which costs more than the env step itself for small envs.
        keys = jax.random.split(state.key, 2 + steps_per_env + config.gradient_steps)
        if axis is not None:  # each device explores its envs and samples its shard its own way
            index = jax.lax.axis_index(axis)
            keys = keys.at[1:].set(jax.vmap(jax.random.fold_in, (0, None))(keys[1:], index))
        key, k_noise = keys[0], keys[1]
        env_keys, learn_keys = keys[2 : 2 + steps_per_env], keys[2 + steps_per_env :]
        carry, transitions, epsilon, (ep_done, ep_return, extras) = rollout(
            state, hparams, k_noise, env_keys
        )
        env_state, obs, window, episodes, (ret_sum, len_sum, ep_count) = carry
        buffer_state = buffer.add(state.buffer, transitions)
        memory_state = state.memory
        if memory is not None:
            memory_keys = embed(state.params, transitions.obs)
            memory_state = memory.add(memory_state, transitions, memory_keys)
        params, opt_state, buffer_state, metrics = learn(
            state.replace(memory=memory_state), buffer_state, hparams, learn_keys
        )
        # target_update_period is data (a sweep may vmap it): env steps -> updates
        every = jnp.maximum(1, hparams.target_update_period // config.train_frequency)
        do_target = (state.update_step + 1) % every.astype(jnp.int32) == 0
        tau = hparams.tau
        target_params = jax.tree.map(
            lambda t, p: jnp.where(do_target, tau * p + (1.0 - tau) * t, t),
            state.target_params,
            params,
        )
        metrics.update(
            episode_return_sum=ret_sum,
            episode_length_sum=len_sum.astype(jnp.float32),
            episode_count=ep_count.astype(jnp.float32),
            epsilon=epsilon,
        )
        finite = jnp.isfinite(metrics["loss"]) & all_finite(params)
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        done_f = ep_done.astype(jnp.float32)
        metrics.update({f"episode_{k}_sum": jnp.sum(v * done_f) for k, v in extras.items()})
        if axis is not None:  # episodes of every device's envs
            episode_sums = {k: v for k, v in metrics.items() if k.startswith("episode_")}
            metrics.update(jax.lax.psum(episode_sums, axis))
        c_state = state.curriculum
        if curriculum is not None:
            outcomes = episode_outcomes(ep_return, extras)
            c_state = curriculum.update(c_state, ep_done, outcomes, hparams.curriculum)
            metrics.update(curriculum.metrics(c_state))
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
            episodes=episodes,
            curriculum=c_state,
            memory=memory_state,
        )
        return new_state, metrics

    eval_env, _ = base_env(config)

    def evaluate_fn(state: DQNState, key: jax.Array, num_episodes: int) -> dict:
        """Greedy episodes of this seed's Q-network on its current env params."""
        env_params = params_of(state.curriculum)
        return evaluate(agent.greedy_action, state.params, eval_env, env_params, key, num_episodes)

    return Learner(
        init,
        learner_update,
        config.num_updates,
        config.train_frequency,
        config.hparams(),
        curriculum,
        evaluate_fn,
    )


def _check_data_parallel(config: DQNConfig, shards: int) -> str:
    """Validate a data-parallel split over `shards` devices; returns the axis name."""
    from jaxlearn.parallel import DATA_AXIS

    name = type(config).__name__
    sizes = {
        "num_envs": "each device runs num_envs / devices envs",
        "buffer_size": "each device keeps a replay shard of buffer_size / devices",
        "batch_size": "each device samples batch_size / devices per gradient step",
        # implied by num_envs (train_frequency is a multiple of it); checked for the message
        "train_frequency": "each device adds train_frequency / devices transitions per update",
    }
    fits = [
        d for d in range(1, config.num_envs + 1) if all(getattr(config, f) % d == 0 for f in sizes)
    ]
    for field, why in sizes.items():
        if getattr(config, field) % shards:
            fail(
                name,
                field,
                getattr(config, field),
                f"must be a multiple of the {shards} devices for data-parallel training "
                f"({why}); device counts that divide num_envs, buffer_size and batch_size: "
                f"{fits}",
            )
    if config.curriculum is not None:
        fail(
            name,
            "curriculum",
            config.curriculum,
            "data-parallel training of one agent does not support a curriculum yet",
        )
    return DATA_AXIS


def make_train(config: DQNConfig):
    """`train(key, hparams=None) -> (DQNState, metrics)`: the whole DQN run, pure and jittable.

    `metrics` is a dict of arrays with a leading `[num_updates]` axis.
    """
    return make_train_fn(make_learner(config))
