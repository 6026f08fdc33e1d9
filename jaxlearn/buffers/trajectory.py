"""Trajectory buffer: per-env time streams on the device, sampled as contiguous sequences.

Storage is ``[num_envs, capacity_steps, ...]`` per leaf, a ring over the time axis shared by
all envs. Each ``add`` appends one time step of every env. ``sample`` draws ``B`` (env, start)
pairs uniformly among the windows of ``sequence_length`` steps that lie wholly inside the
valid data, so a sequence is contiguous in time, comes from one env, and never spans the write
head (it may wrap around the end of the storage array, which is still contiguous in time).

``period`` thins the start times: a window may start only at a time step ``t`` (counted from
the first ``add`` since ``init``) with ``t % period == 0``. ``period == sequence_length`` gives
non-overlapping chunks.

Jit ``add`` at top level with ``donate_argnums=0`` to write in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn.buffers.base import Batch, Item, allocate, check_batch, check_int


@struct.dataclass
class TrajectoryBufferState:
    """State of a trajectory buffer.

    Attributes:
        items: pytree like the example item, every leaf ``[num_envs, capacity_steps, ...]``.
        insert_pos: ``[]`` int32, time slot the next step is written to.
        size: ``[]`` int32, number of valid time steps per env (``<= capacity_steps``).
        period_phase: ``[]`` int32, steps added since ``init`` modulo ``period``; aligns
            window starts to absolute time without a counter that could overflow.
    """

    items: Item
    insert_pos: jax.Array
    size: jax.Array
    period_phase: jax.Array


class TrajectorySample(NamedTuple):
    """A batch of sequences.

    Attributes:
        experience: pytree like the item, every leaf ``[B, sequence_length, ...]``.
        env_indices: ``[B]`` int32 env each sequence comes from.
        time_indices: ``[B, sequence_length]`` int32 storage time slots read (consecutive
            modulo ``capacity_steps``).
    """

    experience: Item
    env_indices: jax.Array
    time_indices: jax.Array


class TrajectoryBuffer(NamedTuple):
    """Pure functions of a trajectory buffer (see ``trajectory_buffer``)."""

    init: Callable[[Item], TrajectoryBufferState]
    add: Callable[[TrajectoryBufferState, Batch], TrajectoryBufferState]
    sample: Callable[[TrajectoryBufferState, jax.Array], TrajectorySample]
    can_sample: Callable[[TrajectoryBufferState], jax.Array]


def trajectory_buffer(
    capacity_steps: int,
    num_envs: int,
    sample_batch_size: int,
    sequence_length: int,
    period: int = 1,
) -> TrajectoryBuffer:
    """Build a trajectory buffer.

    Args:
        capacity_steps: ``C``, time steps kept per env; the oldest are overwritten first.
        num_envs: ``E``, envs whose steps every ``add`` brings.
        sample_batch_size: ``B``, sequences per ``sample`` (drawn with replacement).
        sequence_length: ``L``, time steps per sequence, ``<= C``.
        period: start times of windows are multiples of ``period``, ``<= C - L + 1`` so that a
            full buffer always holds a window.

    Returns:
        ``TrajectoryBuffer(init, add, sample, can_sample)``:

        - ``init(example_item) -> state``: zeros ``[E, C, *leaf.shape]`` per leaf of one
          unbatched item (one env, one step).
        - ``add(state, batch) -> state``: batch leaves ``[E, *leaf.shape]``, one time step.
        - ``sample(state, key) -> TrajectorySample``: ``experience`` leaves ``[B, L, ...]``.
          Meaningless while ``can_sample`` is false.
        - ``can_sample(state) -> []`` bool: at least ``B`` distinct (env, window) pairs exist.

    Raises:
        ValueError: on a field out of range (here), a non-array leaf in ``init``, or a batch
            that does not match the example item in ``add`` (at trace time).
    """
    capacity_steps = check_int("capacity_steps", capacity_steps)
    num_envs = check_int("num_envs", num_envs)
    sample_batch_size = check_int("sample_batch_size", sample_batch_size)
    sequence_length = check_int("sequence_length", sequence_length)
    period = check_int("period", period)
    if sequence_length > capacity_steps:
        raise ValueError(
            f"sequence_length must be <= capacity_steps={capacity_steps}, got {sequence_length}"
        )
    max_starts = capacity_steps - sequence_length + 1
    if period > max_starts:
        raise ValueError(
            f"period must be <= capacity_steps - sequence_length + 1 = {max_starts} so that a "
            f"full buffer holds a window, got {period}"
        )
    # A full buffer holds at least this many windows per env, whatever the phase.
    full_windows = num_envs * (max_starts // period)
    if sample_batch_size > full_windows:
        raise ValueError(
            f"sample_batch_size must be <= num_envs * ((capacity_steps - sequence_length + 1) "
            f"// period) = {full_windows}, the distinct sequences a full buffer holds, got "
            f"{sample_batch_size}"
        )

    def init(example_item: Item) -> TrajectoryBufferState:
        return TrajectoryBufferState(
            items=allocate(example_item, (num_envs, capacity_steps)),
            insert_pos=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
            period_phase=jnp.zeros((), jnp.int32),
        )

    def add(state: TrajectoryBufferState, batch: Batch) -> TrajectoryBufferState:
        batch, (num,) = check_batch(state.items, batch, num_storage_axes=2, num_batch_axes=1)
        if num != num_envs:
            raise ValueError(f"add: batch leading axis must equal num_envs={num_envs}, got {num}")
        items = jax.tree.map(
            lambda s, b: jax.lax.dynamic_update_slice_in_dim(
                s, b[:, None], state.insert_pos, axis=1
            ),
            state.items,
            batch,
        )
        return state.replace(
            items=items,
            insert_pos=(state.insert_pos + 1) % capacity_steps,
            size=jnp.minimum(state.size + 1, capacity_steps),
            period_phase=(state.period_phase + 1) % period,
        )

    def windows(state: TrajectoryBufferState) -> tuple[jax.Array, jax.Array]:
        """First valid start offset from the oldest step, and the number of windows per env."""
        # The oldest valid step is at absolute time steps - size; offset j from it is aligned
        # when (steps - size + j) % period == 0, i.e. j == (size - steps) mod period.
        first = (state.size - state.period_phase) % period
        room = state.size - sequence_length - first
        count = jnp.where(room >= 0, room // period + 1, 0)
        return first, count

    def sample(state: TrajectoryBufferState, key: jax.Array) -> TrajectorySample:
        first, count = windows(state)
        env_key, start_key = jax.random.split(key)
        env_indices = jax.random.randint(env_key, (sample_batch_size,), 0, num_envs, jnp.int32)
        window = jax.random.randint(
            start_key, (sample_batch_size,), 0, jnp.maximum(count, 1), jnp.int32
        )
        oldest = state.insert_pos - state.size
        starts = oldest + first + window * period
        time_indices = (starts[:, None] + jnp.arange(sequence_length)) % capacity_steps
        experience = jax.tree.map(
            lambda s: s.at[env_indices[:, None], time_indices].get(mode="promise_in_bounds"),
            state.items,
        )
        return TrajectorySample(
            experience=experience, env_indices=env_indices, time_indices=time_indices
        )

    def can_sample(state: TrajectoryBufferState) -> jax.Array:
        return num_envs * windows(state)[1] >= sample_batch_size

    # Jitted once per buffer for eager calls; under an outer jit they are inlined.
    return TrajectoryBuffer(
        init=init, add=jax.jit(add), sample=jax.jit(sample), can_sample=jax.jit(can_sample)
    )
