"""Uniform replay buffer: a ring of transitions on the device, sampled uniformly with replacement.

Example::

    buffer = uniform_buffer(capacity=100_000, sample_batch_size=256)
    state = buffer.init({"obs": jnp.zeros(4), "reward": jnp.float32(0.0)})
    state = buffer.add(state, {"obs": obs, "reward": reward})  # obs [num_envs, 4]
    batch = buffer.sample(state, key)  # batch.experience["obs"]: [256, 4]

When ``add`` is jitted at top level, donate the state (``jax.jit(buffer.add,
donate_argnums=0)``) so XLA writes into the existing storage instead of copying it; inside
``lax.scan`` the carry is updated in place without that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlearn.buffers.base import (
    Batch,
    Buffer,
    BufferState,
    Item,
    Sample,
    allocate,
    check_add_batch_size,
    check_add_size,
    check_batch,
    check_int,
    check_sample_batch_size,
    gather_rows,
    write_rows,
)


def uniform_buffer(
    capacity: int, sample_batch_size: int, add_batch_size: int | None = None
) -> Buffer:
    """Build a uniform replay buffer.

    Args:
        capacity: number of items kept; the oldest are overwritten first.
        sample_batch_size: ``B``, items returned per ``sample`` (drawn with replacement).
        add_batch_size: if set, every ``add`` must bring exactly this many items. When it also
            divides ``capacity``, writes never wrap inside one ``add`` and use a
            ``dynamic_update_slice``; otherwise a single scatter with computed slots.

    Returns:
        ``Buffer(init, add, sample, can_sample)``:

        - ``init(example_item) -> BufferState``: zeros ``[capacity, *leaf.shape]`` per leaf of
          one unbatched item.
        - ``add(state, batch) -> BufferState``: batch leaves ``[N, *leaf.shape]``,
          ``1 <= N <= capacity``, written at ``insert_pos .. insert_pos + N - 1`` modulo
          ``capacity``.
        - ``sample(state, key) -> Sample``: ``experience`` leaves ``[B, ...]`` and ``indices``
          ``[B]`` drawn uniformly from the valid slots ``[0, size)``. Meaningless while
          ``can_sample`` is false (it reads slot 0).
        - ``can_sample(state) -> []`` bool: ``size >= sample_batch_size``.

    Raises:
        ValueError: on a capacity or batch size out of range (here), on a non-array leaf in
            ``init``, and on a batch that does not match the example item in ``add`` (at trace
            time).
    """
    capacity = check_int("capacity", capacity)
    sample_batch_size = check_sample_batch_size(sample_batch_size, capacity)
    add_batch_size = check_add_batch_size(add_batch_size, capacity)
    # With a fixed N that divides capacity, insert_pos stays a multiple of N: no wrap in an add.
    contiguous = add_batch_size is not None and capacity % add_batch_size == 0

    def init(example_item: Item) -> BufferState:
        return BufferState(
            items=allocate(example_item, (capacity,)),
            insert_pos=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def add(state: BufferState, batch: Batch) -> BufferState:
        batch, (num,) = check_batch(state.items, batch, num_storage_axes=1, num_batch_axes=1)
        check_add_size(num, capacity, add_batch_size)
        return state.replace(
            items=write_rows(state.items, batch, state.insert_pos, contiguous=contiguous),
            insert_pos=(state.insert_pos + num) % capacity,
            size=jnp.minimum(state.size + num, capacity),
        )

    def sample(state: BufferState, key: jax.Array) -> Sample:
        indices = jax.random.randint(
            key, (sample_batch_size,), 0, jnp.maximum(state.size, 1), dtype=jnp.int32
        )
        return Sample(experience=gather_rows(state.items, indices), indices=indices)

    def can_sample(state: BufferState) -> jax.Array:
        return state.size >= sample_batch_size

    # Jitted once per buffer for eager calls; under an outer jit they are inlined.
    return Buffer(
        init=init, add=jax.jit(add), sample=jax.jit(sample), can_sample=jax.jit(can_sample)
    )
