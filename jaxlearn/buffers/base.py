"""Shared types and trace-time checks for the on-device replay buffers.

Every buffer is a factory that returns a NamedTuple of pure functions over a state pytree that
lives on the device. Storage is allocated once by ``init`` from one unbatched example item; the
storage itself records the item structure (tree structure, per-leaf shape after the storage axes,
dtype), so ``add`` can check a batch against it in Python, on static shapes, also under ``jit``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Item = Any
"""One transition: a pytree of arrays without a batch axis, e.g. ``{"obs": [4], "reward": []}``."""

Batch = Any
"""A pytree like ``Item`` with one extra leading axis ``[N, ...]`` on every leaf."""


@struct.dataclass
class BufferState:
    """State of a uniform replay buffer.

    Attributes:
        items: pytree like the example item, every leaf ``[capacity, *leaf.shape]``.
        insert_pos: ``[]`` int32, slot the next added item is written to.
        size: ``[]`` int32, number of valid items (``<= capacity``); slots ``< size`` are valid.
    """

    items: Item
    insert_pos: jax.Array
    size: jax.Array


class Sample(NamedTuple):
    """A batch drawn from a buffer.

    Attributes:
        experience: pytree like the item, every leaf ``[sample_batch_size, ...]``.
        indices: ``[sample_batch_size]`` int32 storage slots the items were read from.
    """

    experience: Item
    indices: jax.Array


class Buffer(NamedTuple):
    """Pure functions of a uniform replay buffer (see ``uniform_buffer``)."""

    init: Callable[[Item], BufferState]
    add: Callable[[BufferState, Batch], BufferState]
    sample: Callable[[BufferState, jax.Array], Sample]
    can_sample: Callable[[BufferState], jax.Array]


# --------------------------------------------------------------------------------------------
# Validation at build time (Python values).


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum``, else raise ValueError naming field and value."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {as_int}")
    return as_int


def check_float(
    name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """Return ``value`` as a finite float ``>= low`` (``> low`` if ``low_open``) and ``<= high``."""
    if math.isfinite(high):
        allowed = f"in {'(' if low_open else '['}{low}, {high}]"
    else:
        allowed = f"{'>' if low_open else '>='} {low}"
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}") from None
    above_low = as_float > low if low_open else as_float >= low
    if not (math.isfinite(as_float) and above_low and as_float <= high):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return as_float


def check_sample_batch_size(sample_batch_size: Any, capacity: int) -> int:
    """Validate ``sample_batch_size`` against ``capacity`` (sampling needs that many items)."""
    sample_batch_size = check_int("sample_batch_size", sample_batch_size)
    if sample_batch_size > capacity:
        raise ValueError(
            f"sample_batch_size must be <= capacity={capacity}, got {sample_batch_size}"
        )
    return sample_batch_size


def check_add_batch_size(add_batch_size: Any, capacity: int) -> int | None:
    """Validate the optional fixed ``add_batch_size``: ``None`` or an int in ``[1, capacity]``."""
    if add_batch_size is None:
        return None
    add_batch_size = check_int("add_batch_size", add_batch_size)
    if add_batch_size > capacity:
        raise ValueError(
            f"add_batch_size must be None or <= capacity={capacity} (one add may not overwrite "
            f"its own items), got {add_batch_size}"
        )
    return add_batch_size


def check_add_size(num: int, capacity: int, add_batch_size: int | None) -> None:
    """Trace-time check of the leading axis ``N`` of a batch passed to ``add``."""
    if add_batch_size is not None and num != add_batch_size:
        raise ValueError(
            f"add: batch leading axis must equal add_batch_size={add_batch_size}, got {num}"
        )
    if not 1 <= num <= capacity:
        raise ValueError(f"add: batch leading axis must be in [1, capacity={capacity}], got {num}")


# --------------------------------------------------------------------------------------------
# Storage allocation and trace-time batch checks (static shapes only, so they work under jit).


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


def allocate(example_item: Item, leading_shape: tuple[int, ...]) -> Item:
    """Allocate zeros ``[*leading_shape, *leaf.shape]`` per leaf of one unbatched example item.

    Raises:
        ValueError: if the item has no leaves or a leaf is not an array (a Python scalar, a
            string, ...): its dtype would be ambiguous.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(example_item)
    if not leaves_with_path:
        raise ValueError(
            f"init: example_item must contain at least one array, got {example_item!r}"
        )
    for path, leaf in leaves_with_path:
        if not (_is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)):
            raise ValueError(
                f"init: example_item{jax.tree_util.keystr(path)} must be an array "
                f"(jax.Array, np.ndarray, np.generic or jax.ShapeDtypeStruct), got "
                f"{type(leaf).__name__} {leaf!r}; wrap scalars, e.g. jnp.float32(0.0)"
            )
    zeros = [
        jnp.zeros(leading_shape + tuple(leaf.shape), jax.dtypes.canonicalize_dtype(leaf.dtype))
        for _, leaf in leaves_with_path
    ]
    return jax.tree.unflatten(treedef, zeros)


def _describe(leaves_with_path, num_storage_axes: int) -> str:
    return ", ".join(
        f"{jax.tree_util.keystr(path) or '<root>'}: "
        f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape[num_storage_axes:])}"
        for path, leaf in leaves_with_path
    )


def check_batch(
    storage: Item, batch: Batch, *, num_storage_axes: int, num_batch_axes: int, fn: str = "add"
) -> tuple[Batch, tuple[int, ...]]:
    """Check ``batch`` against the item recorded by ``storage``; return it and its batch shape.

    Args:
        storage: buffer storage, every leaf ``[*storage_axes, *item_shape]``.
        batch: pytree like the item, every leaf ``[*batch_axes, *item_shape]``.
        num_storage_axes: number of leading storage axes (1 for ``[capacity]``).
        num_batch_axes: number of leading batch axes the caller expects (1 for ``[N]``).
        fn: name of the calling function, for the error message.

    Returns:
        ``(batch, batch_shape)``: the batch with leaves as jax arrays, and the shared leading
        ``num_batch_axes`` dimensions.

    Raises:
        ValueError: on a different tree structure, item shape, dtype, or inconsistent leading
            axes, listing expected against got.
    """
    expected, expected_def = jax.tree_util.tree_flatten_with_path(storage)
    got, got_def = jax.tree_util.tree_flatten_with_path(batch)
    if got_def != expected_def:
        raise ValueError(
            f"{fn}: batch tree structure differs from the example item given to init.\n"
            f"  expected: {expected_def}\n  got:      {got_def}"
        )
    bad_leaf = [path for path, leaf in got if not _is_array(leaf)]
    if bad_leaf:
        raise ValueError(
            f"{fn}: batch leaves must be arrays, got a non-array at "
            f"{', '.join(jax.tree_util.keystr(p) for p in bad_leaf)}"
        )
    got = [(path, jnp.asarray(leaf)) for path, leaf in got]
    mismatch = any(
        e.shape[num_storage_axes:] != g.shape[num_batch_axes:]
        or e.dtype != g.dtype
        or g.ndim < num_batch_axes
        for (_, e), (_, g) in zip(expected, got, strict=True)
    )
    if mismatch:
        raise ValueError(
            f"{fn}: batch leaves must be [{num_batch_axes} leading axes, *item shape] with the "
            f"item's dtype.\n"
            f"  expected item: {_describe(expected, num_storage_axes)}\n"
            f"  got item:      {_describe(got, num_batch_axes)}"
        )
    batch_shapes = {leaf.shape[:num_batch_axes] for _, leaf in got}
    if len(batch_shapes) != 1:
        raise ValueError(
            f"{fn}: all batch leaves must share the leading {num_batch_axes} axes, got "
            + ", ".join(
                f"{jax.tree_util.keystr(p)}: {list(leaf.shape[:num_batch_axes])}" for p, leaf in got
            )
        )
    return jax.tree.unflatten(got_def, [leaf for _, leaf in got]), batch_shapes.pop()


# --------------------------------------------------------------------------------------------
# Ring writes and reads over axis 0 of every storage leaf.


def write_rows(storage: Item, batch: Batch, start: jax.Array, *, contiguous: bool) -> Item:
    """Write ``batch`` ``[N, ...]`` into ``storage`` ``[capacity, ...]`` at ``start + i``.

    Args:
        storage: every leaf ``[capacity, ...]``.
        batch: every leaf ``[N, ...]`` with ``N <= capacity``.
        start: ``[]`` int32 first slot.
        contiguous: the caller guarantees ``start + N <= capacity`` (no wrap-around), so one
            ``dynamic_update_slice`` per leaf suffices; otherwise slots are ``(start + i) %
            capacity`` and the write is a single scatter with unique indices.

    Returns:
        The updated storage. Under ``jit`` both forms update in place when the storage is a
        ``lax.scan`` carry or a donated argument.
    """
    if contiguous:
        return jax.tree.map(
            lambda s, b: jax.lax.dynamic_update_slice_in_dim(s, b, start, axis=0), storage, batch
        )
    capacity = jax.tree.leaves(storage)[0].shape[0]
    num = jax.tree.leaves(batch)[0].shape[0]
    slots = ring_slots(start, num, capacity)
    return jax.tree.map(
        lambda s, b: s.at[slots].set(b, unique_indices=True, mode="promise_in_bounds"),
        storage,
        batch,
    )


def ring_slots(start: jax.Array, num: int, capacity: int) -> jax.Array:
    """Slots ``(start + arange(num)) % capacity``, ``[num]`` int32."""
    return (start + jnp.arange(num, dtype=jnp.int32)) % jnp.int32(capacity)


def gather_rows(storage: Item, indices: jax.Array) -> Item:
    """Read ``storage[indices]`` for every leaf; ``indices`` must be in bounds."""
    return jax.tree.map(lambda s: s.at[indices].get(mode="promise_in_bounds"), storage)
