"""On-device replay buffers: pure functions over a state pytree, usable under jit, scan and vmap.

Each factory validates its configuration once and returns a NamedTuple of pure functions, like
an optax transformation:

- ``uniform_buffer(capacity, sample_batch_size, add_batch_size=None) -> Buffer``: ring of
  transitions sampled uniformly.
- ``prioritized_buffer(capacity, sample_batch_size, alpha, beta_start, beta_end, beta_steps,
  eps, add_batch_size) -> PrioritizedBuffer``: proportional prioritized replay on a sum-tree.
- ``trajectory_buffer(capacity_steps, num_envs, sample_batch_size, sequence_length, period=1)
  -> TrajectoryBuffer``: per-env time streams sampled as contiguous sequences.

``init`` takes one unbatched example item (a pytree of arrays) and allocates the storage; ``add``
checks the batch against it at trace time and writes in place (donate the state when jitting at
top level); ``sample(state, key)`` draws a batch; ``can_sample(state)`` says whether enough data
is there. To run several seeds, ``jax.vmap`` over a leading axis of the state.
"""

from jaxlearn.buffers.base import Batch, Buffer, BufferState, Item, Sample
from jaxlearn.buffers.prioritized import (
    PrioritizedBuffer,
    PrioritizedBufferState,
    PrioritizedSample,
    prioritized_buffer,
)
from jaxlearn.buffers.trajectory import (
    TrajectoryBuffer,
    TrajectoryBufferState,
    TrajectorySample,
    trajectory_buffer,
)
from jaxlearn.buffers.uniform import uniform_buffer

__all__ = [
    "Batch",
    "Buffer",
    "BufferState",
    "Item",
    "PrioritizedBuffer",
    "PrioritizedBufferState",
    "PrioritizedSample",
    "Sample",
    "TrajectoryBuffer",
    "TrajectoryBufferState",
    "TrajectorySample",
    "prioritized_buffer",
    "trajectory_buffer",
    "uniform_buffer",
]
