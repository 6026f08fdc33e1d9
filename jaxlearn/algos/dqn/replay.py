"""Where DQN's batches come from: the replay buffer and the optional episodic memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlearn.algos.dqn.config import DQNConfig
from jaxlearn.algos.dqn.networks import Agent, QNetwork
from jaxlearn.algos.dqn.nstep import Transition
from jaxlearn.buffers import prioritized_buffer, uniform_buffer
from jaxlearn.config import fail
from jaxlearn.memory import Memory, episodic_memory, project, random_projection
from jaxlearn.networks import ACTIVATIONS


class EpisodicMemory(NamedTuple):
    """The episodic memory of a DQN learner (see `make_memory`)."""

    memory: Memory
    embed: Callable[[Any, jax.Array], jax.Array]  # (params, obs [N, ...]) -> keys [N, D]
    mix: Callable[..., tuple[Transition, jax.Array, dict[str, jax.Array]]]


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
) -> EpisodicMemory | None:
    """The episodic memory of `Transition`s, its embedding and how it joins a batch, or None
    when `memory_fraction` is 0.

    `projection`: a fixed Gaussian projection of the flattened observation (the same for
    every seed); `features`: the online Q-network's last hidden layer, computed with the
    parameters of the moment (stored keys keep the parameters they were added with).
    """
    if config.memory_fraction == 0.0:
        return None
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

    def mix(memory_state: Any, params: Any, batch: Transition, weights: jax.Array):
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

    return EpisodicMemory(memory, embed, mix)
