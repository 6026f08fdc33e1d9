"""Prioritized replay (Schaul et al., 2016) with a sum-tree on the device.

Slot ``i`` is drawn with probability ``P(i) = p_i^alpha / sum_j p_j^alpha``. The sum-tree is one
float32 array ``tree [2 * L]`` with ``L = next_pow2(capacity)`` leaves: ``tree[L + i]`` holds
``p_i^alpha`` for slot ``i`` (zero for empty slots), ``tree[n] = tree[2n] + tree[2n + 1]`` for the
inner nodes, ``tree[1]`` is the total mass and ``tree[0]`` is unused. Inner nodes are always
recomputed from their children, never updated by differences, so no error accumulates.

Beta annealing: ``beta`` goes linearly from ``beta_start`` to ``beta_end`` over ``beta_steps``
calls of ``update_priorities`` (one per learning step in the usual loop), counted in
``state.beta_step``; ``sample`` does not return a state, so the counter cannot live there.

Example::

    buffer = prioritized_buffer(capacity=100_000, sample_batch_size=256)
    state = buffer.init(example_item)
    state = buffer.add(state, batch)                     # new items get the max priority
    s = buffer.sample(state, key)                        # s.weights scale the per-item loss
    state = buffer.update_priorities(state, s.indices, jnp.abs(td_error))
    state = buffer.update_priorities(state, s.indices, td, mask=learning)  # no-op if False

Jit ``add`` and ``update_priorities`` at top level with ``donate_argnums=0`` to update in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn.buffers.base import (
    Batch,
    Item,
    allocate,
    check_add_batch_size,
    check_add_size,
    check_batch,
    check_float,
    check_int,
    check_sample_batch_size,
    gather_rows,
    ring_slots,
    write_rows,
)


@struct.dataclass
class PrioritizedBufferState:
    """State of a prioritized replay buffer.

    Attributes:
        items: pytree like the example item, every leaf ``[capacity, *leaf.shape]``.
        insert_pos: ``[]`` int32, slot the next added item is written to.
        size: ``[]`` int32, number of valid items; slots ``< size`` are valid.
        tree: ``[2 * L]`` float32 sum-tree, ``L = next_pow2(capacity)`` (see module docstring).
        max_priority: ``[]`` float32, largest ``|priority| + eps`` written by
            ``update_priorities`` (1.0 at first, never decreases); new items get
            ``max_priority ** alpha``.
        beta_step: ``[]`` int32, ``update_priorities`` calls so far, saturating at
            ``beta_steps``.
    """

    items: Item
    insert_pos: jax.Array
    size: jax.Array
    tree: jax.Array
    max_priority: jax.Array
    beta_step: jax.Array


class PrioritizedSample(NamedTuple):
    """A prioritized batch.

    Attributes:
        experience: pytree like the item, every leaf ``[B, ...]``.
        indices: ``[B]`` int32 slots; pass them back to ``update_priorities``.
        probabilities: ``[B]`` float32 ``P(i) = p_i^alpha / sum_j p_j^alpha``.
        weights: ``[B]`` float32 importance weights ``(size * P(i))^-beta / max_batch``, in
            ``(0, 1]``.
    """

    experience: Item
    indices: jax.Array
    probabilities: jax.Array
    weights: jax.Array


class PrioritizedBuffer(NamedTuple):
    """Pure functions of a prioritized replay buffer (see ``prioritized_buffer``)."""

    init: Callable[[Item], PrioritizedBufferState]
    add: Callable[[PrioritizedBufferState, Batch], PrioritizedBufferState]
    sample: Callable[[PrioritizedBufferState, jax.Array], PrioritizedSample]
    can_sample: Callable[[PrioritizedBufferState], jax.Array]
    update_priorities: Callable[..., PrioritizedBufferState]  # (state, indices, prio[, mask])


def prioritized_buffer(
    capacity: int,
    sample_batch_size: int,
    alpha: float = 0.6,
    beta_start: float = 0.4,
    beta_end: float = 1.0,
    beta_steps: int = 100_000,
    eps: float = 1e-6,
    add_batch_size: int | None = None,
) -> PrioritizedBuffer:
    """Build a prioritized replay buffer.

    Args:
        capacity: number of items kept; the oldest are overwritten first.
        sample_batch_size: ``B``, items per ``sample`` (stratified, with replacement).
        alpha: priority exponent, ``>= 0``; 0 gives uniform sampling.
        beta_start: importance-sampling exponent at the start, in ``[0, 1]``.
        beta_end: importance-sampling exponent after ``beta_steps``, in ``[0, 1]``.
        beta_steps: number of ``update_priorities`` calls over which beta is annealed, ``>= 1``.
        eps: added to ``|priority|`` so that no valid item has zero mass, ``> 0``.
        add_batch_size: if set, every ``add`` must bring exactly this many items.

    Returns:
        ``PrioritizedBuffer(init, add, sample, can_sample, update_priorities)``; ``init``,
        ``add`` and ``can_sample`` behave as in ``uniform_buffer``, and

        - ``sample(state, key) -> PrioritizedSample``: the total mass is split into ``B`` equal
          segments and one point is drawn uniformly in each, then found by descending the tree
          (a ``fori_loop`` over depth, vectorised over the batch). Meaningless while
          ``can_sample`` is false.
        - ``update_priorities(state, indices [K] int, priorities [K] float) -> state``: sets
          slot ``indices[k]`` to ``(|priorities[k]| + eps) ** alpha`` and recomputes its
          ancestors. For a slot given more than once the last occurrence wins, as if the
          updates were applied in order; indices outside ``[0, size)`` are ignored.
          Priorities must be finite: a NaN would spread to the root.

    Raises:
        ValueError: on a field out of range (here), a non-array leaf in ``init``, a batch that
            does not match the example item in ``add``, or ``indices``/``priorities`` that are
            not matching 1-D arrays (at trace time).
    """
    capacity = check_int("capacity", capacity)
    sample_batch_size = check_sample_batch_size(sample_batch_size, capacity)
    alpha = check_float("alpha", alpha, low=0.0)
    beta_start = check_float("beta_start", beta_start, low=0.0, high=1.0)
    beta_end = check_float("beta_end", beta_end, low=0.0, high=1.0)
    beta_steps = check_int("beta_steps", beta_steps)
    eps = check_float("eps", eps, low=0.0, low_open=True)
    add_batch_size = check_add_batch_size(add_batch_size, capacity)
    contiguous = add_batch_size is not None and capacity % add_batch_size == 0
    num_leaves = 1 << (capacity - 1).bit_length()
    depth = num_leaves.bit_length() - 1

    def init(example_item: Item) -> PrioritizedBufferState:
        return PrioritizedBufferState(
            items=allocate(example_item, (capacity,)),
            insert_pos=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
            tree=jnp.zeros((2 * num_leaves,), jnp.float32),
            max_priority=jnp.ones((), jnp.float32),
            beta_step=jnp.zeros((), jnp.int32),
        )

    def add(state: PrioritizedBufferState, batch: Batch) -> PrioritizedBufferState:
        batch, (num,) = check_batch(state.items, batch, num_storage_axes=1, num_batch_axes=1)
        check_add_size(num, capacity, add_batch_size)
        slots = ring_slots(state.insert_pos, num, capacity)
        mass = jnp.full((num,), state.max_priority**alpha, jnp.float32)
        return state.replace(
            items=write_rows(state.items, batch, state.insert_pos, contiguous=contiguous),
            insert_pos=(state.insert_pos + num) % capacity,
            size=jnp.minimum(state.size + num, capacity),
            tree=_set_leaves(state.tree, slots, mass, num_leaves, depth),
        )

    def beta(beta_step: jax.Array) -> jax.Array:
        fraction = jnp.minimum(beta_step.astype(jnp.float32) / beta_steps, 1.0)
        return beta_start + (beta_end - beta_start) * fraction

    def sample(state: PrioritizedBufferState, key: jax.Array) -> PrioritizedSample:
        tree = state.tree
        total = tree[1]
        offsets = jax.random.uniform(key, (sample_batch_size,), jnp.float32)
        targets = (jnp.arange(sample_batch_size, dtype=jnp.float32) + offsets) * (
            total / sample_batch_size
        )

        def descend(_, carry):
            node, target = carry
            left = tree[2 * node]
            # Rounding can leave target >= left with an empty right subtree: stay left then.
            go_right = (target >= left) & (tree[2 * node + 1] > 0)
            return 2 * node + go_right, jnp.where(go_right, target - left, target)

        start = jnp.ones((sample_batch_size,), jnp.int32)
        node, _ = jax.lax.fori_loop(0, depth, descend, (start, targets))
        indices = jnp.clip(node - num_leaves, 0, jnp.maximum(state.size - 1, 0))
        probabilities = tree[num_leaves + indices] / jnp.where(total > 0, total, 1.0)
        # (size * P_i)^-beta / max_j (size * P_j)^-beta == (P_i / min_j P_j)^-beta; the ratio
        # form needs no size and stays finite. Clamping keeps an empty buffer at weight 1.
        safe = jnp.maximum(probabilities, jnp.finfo(jnp.float32).tiny)
        weights = (safe / jnp.min(safe)) ** -beta(state.beta_step)
        return PrioritizedSample(
            experience=gather_rows(state.items, indices),
            indices=indices,
            probabilities=probabilities,
            weights=weights,
        )

    def can_sample(state: PrioritizedBufferState) -> jax.Array:
        return state.size >= sample_batch_size

    def update_priorities(
        state: PrioritizedBufferState,
        indices: jax.Array,
        priorities: jax.Array,
        mask: jax.Array | bool = True,
    ) -> PrioritizedBufferState:
        """Set the priorities of `indices` [N] to `|priorities| + eps` [N] and count one
        beta step; `mask` ([] bool, may be traced) False leaves `state` as it was (a learner
        that masks its learning steps passes its mask here). Only the sum-tree, the max
        priority and the beta counter are selected by `mask`, never the stored items."""
        indices = jnp.asarray(indices)
        priorities = jnp.asarray(priorities)
        if indices.ndim != 1 or priorities.shape != indices.shape:
            raise ValueError(
                "update_priorities: indices and priorities must be 1-D arrays of the same "
                f"length, got indices {list(indices.shape)} and priorities "
                f"{list(priorities.shape)}"
            )
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise ValueError(
                f"update_priorities: indices must be integers, got {indices.dtype.name}"
            )
        indices = indices.astype(jnp.int32)
        priority = _last_wins(indices, jnp.abs(priorities.astype(jnp.float32)) + eps)
        valid = (indices >= 0) & (indices < state.size)
        slots = jnp.where(valid, indices, 2 * num_leaves)  # out of range: dropped
        tree = _set_leaves(state.tree, slots, priority**alpha, num_leaves, depth)
        max_priority = jnp.maximum(state.max_priority, jnp.max(priority, where=valid, initial=0))
        beta_step = jnp.minimum(state.beta_step + 1, beta_steps)
        return state.replace(
            tree=jnp.where(mask, tree, state.tree),
            max_priority=jnp.where(mask, max_priority, state.max_priority),
            beta_step=jnp.where(mask, beta_step, state.beta_step),
        )

    # Jitted once per buffer: eager calls do not retrace the loops; under an outer jit they
    # are inlined.
    return PrioritizedBuffer(
        init=init,
        add=jax.jit(add),
        sample=jax.jit(sample),
        can_sample=jax.jit(can_sample),
        update_priorities=jax.jit(update_priorities),
    )


def _last_wins(keys: jax.Array, values: jax.Array) -> jax.Array:
    """Replace each value by the value of the last entry with the same key, ``[K] -> [K]``.

    Duplicate slots then all write the same number, so a scatter is deterministic.
    """
    num = keys.shape[0]
    order = jnp.argsort(keys, stable=True)
    sorted_keys = keys[order]
    run_ends = jnp.append(sorted_keys[1:] != sorted_keys[:-1], True)
    positions = jnp.arange(num)
    last_in_run = jax.lax.cummin(jnp.where(run_ends, positions, num), reverse=True)
    return jnp.zeros_like(values).at[order].set(values[order][last_in_run])


def _set_leaves(
    tree: jax.Array, slots: jax.Array, mass: jax.Array, num_leaves: int, depth: int
) -> jax.Array:
    """Write ``mass [K]`` at leaf ``slots [K]`` and recompute their ancestors.

    Slots ``>= num_leaves`` are dropped. Duplicate slots must carry equal mass. Each level
    recomputes parents from their children, so duplicate parents write equal sums.
    """
    tree = tree.at[num_leaves + slots].set(mass, mode="drop")
    nodes = num_leaves + jnp.minimum(slots, num_leaves - 1)

    def level(_, carry):
        tree, nodes = carry
        parents = nodes // 2
        tree = tree.at[parents].set(tree[2 * parents] + tree[2 * parents + 1])
        return tree, parents

    tree, _ = jax.lax.fori_loop(0, depth, level, (tree, nodes))
    return tree
