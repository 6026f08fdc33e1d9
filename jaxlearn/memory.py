"""Episodic memory: a large ring of transitions on the device, searchable by similarity.

Every stored item (any pytree of arrays, e.g. a DQN ``Transition``) comes with one embedding
key ``[D]``; ``retrieve`` returns, for a batch of query embeddings, the ``k`` stored items whose
keys are most similar. By default the key is a fixed random projection of the observation
(``random_projection`` + ``project``); any other embedding (a policy's hidden features, ...)
works the same way, since the caller passes the keys to ``add``.

Example::

    memory = episodic_memory(capacity=1_000_000, embed_dim=32)        # metric="l2"
    state = memory.init(example_item)                                  # one unbatched item
    proj = random_projection(jax.random.key(0), obs_shape=(4,), embed_dim=32)
    state = memory.add(state, batch, project(proj, batch["obs"]))     # batch leaves [N, ...]
    out = memory.retrieve(state, project(proj, obs), k=5)              # obs [Q, 4]
    out.experience["obs"]  # [Q, 5, 4], most similar first; out.valid [Q, 5]

Search. ``exact``: the store is scanned in chunks of ``chunk_size`` slots (``lax.scan``);
each chunk's scores ``[Q, chunk]`` are reduced to a top-k and merged into a running top-k,
so the peak temporary memory is ``Q x chunk`` scores, never ``Q x capacity`` (by default
``chunk = SCORES_PER_CHUNK // Q``, 16 MB of float32 scores); the dot products run at
``Precision.HIGHEST``. On CPU the search is bound by reading the keys (``capacity x D x 4``
bytes per call), so a small ``D`` pays off. ``approximate=True``: the same scan with the
default matmul precision (TF32 on recent NVIDIA GPUs) and, on TPU, ``jax.lax.approx_max_k``
per chunk. JAX implements ``approx_max_k`` as an approximation on TPU only and lowers it to
an exact sort-and-slice elsewhere, which would be slower than ``lax.top_k``; so on CPU and
GPU the approximate mode keeps the exact ``lax.top_k`` (``lax.platform_dependent``) and
only the lower-precision scores can change the result.

Checks, and where they happen:

- at build time (``episodic_memory``): ``capacity``, ``embed_dim``, ``chunk_size`` positive
  integers, a known ``metric``;
- at trace time (static shapes, so also under ``jit``): ``add``'s batch against the example
  item and its keys ``[N, embed_dim]``; ``retrieve``'s queries ``[Q, embed_dim]`` and
  ``1 <= k <= capacity``;
- the number of items stored is a runtime value under ``jit``: there ``retrieve`` returns
  ``valid [Q, k]``, False for neighbours that do not exist (fewer than ``k`` items stored);
  their ``scores`` are ``-inf`` and their ``indices`` 0. Called eagerly (outside any
  transformation), ``retrieve`` also checks the stored count and raises if it is below ``k``
  (``check_retrievable`` is the same check on its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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
    write_rows,
)

METRICS = ("l2", "cosine")
SCORES_PER_CHUNK = 1 << 22  # default chunk: this many [Q, chunk] scores (16 MB of float32)


@struct.dataclass
class MemoryState:
    """State of an episodic memory.

    Attributes:
        items: pytree like the example item, every leaf ``[capacity, *leaf.shape]``.
        keys: ``[capacity, D]`` float32 embedding of each slot (unit rows for ``cosine``).
        insert_pos: ``[]`` int32, slot the next added item is written to.
        size: ``[]`` int32, number of valid items; slots ``< size`` are valid.
    """

    items: Item
    keys: jax.Array
    insert_pos: jax.Array
    size: jax.Array


class Retrieved(NamedTuple):
    """The ``k`` stored items most similar to each query, most similar first.

    Attributes:
        experience: pytree like the item, every leaf ``[Q, k, ...]``.
        indices: ``[Q, k]`` int32 storage slots (0 where not ``valid``).
        scores: ``[Q, k]`` float32 similarity, higher is closer: the cosine similarity, or
            minus the squared Euclidean distance for ``l2``; ``-inf`` where not ``valid``.
        valid: ``[Q, k]`` bool, False where fewer than ``k`` items are stored.
    """

    experience: Item
    indices: jax.Array
    scores: jax.Array
    valid: jax.Array


class Memory(NamedTuple):
    """Pure functions of an episodic memory (see ``episodic_memory``)."""

    init: Callable[[Item], MemoryState]
    add: Callable[[MemoryState, Batch, jax.Array], MemoryState]
    retrieve: Callable[..., Retrieved]
    can_retrieve: Callable[[MemoryState, int], jax.Array]


def episodic_memory(
    capacity: int,
    embed_dim: int,
    *,
    metric: str = "l2",
    chunk_size: int | None = None,
    add_batch_size: int | None = None,
) -> Memory:
    """Build an episodic memory.

    Args:
        capacity: items kept; the oldest are overwritten first.
        embed_dim: ``D``, length of each item's key.
        metric: ``l2`` (Euclidean distance) or ``cosine`` (angle; keys and queries are
            normalised, a zero vector has similarity 0 with everything).
        chunk_size: slots scored at once by ``retrieve``; bounds its temporary memory to
            ``Q x chunk_size`` scores (clipped to ``[k, capacity]``). ``None``:
            ``SCORES_PER_CHUNK // Q``.
        add_batch_size: if set, every ``add`` must bring exactly this many items (writes then
            use ``dynamic_update_slice`` when it divides ``capacity``).

    Returns:
        ``Memory(init, add, retrieve, can_retrieve)``:

        - ``init(example_item) -> MemoryState``: zeros ``[capacity, ...]`` per leaf and keys
          ``[capacity, D]``.
        - ``add(state, batch, keys) -> MemoryState``: batch leaves ``[N, ...]``, keys
          ``[N, D]``, written at ``insert_pos .. insert_pos + N - 1`` modulo ``capacity``.
        - ``retrieve(state, queries, k, *, approximate=False, recall_target=0.95)
          -> Retrieved``: queries ``[Q, D]``, ``k`` a Python int in ``[1, capacity]``.
        - ``can_retrieve(state, k) -> []`` bool: at least ``k`` items are stored.

    Raises:
        ValueError: on a size or metric out of range (here), and on mismatched shapes in
            ``add`` and ``retrieve`` (at trace time); see the module docstring.
    """
    capacity = check_int("capacity", capacity)
    embed_dim = check_int("embed_dim", embed_dim)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    check_metric(metric)
    add_batch_size = check_add_batch_size(add_batch_size, capacity)
    contiguous = add_batch_size is not None and capacity % add_batch_size == 0

    def init(example_item: Item) -> MemoryState:
        return MemoryState(
            items=allocate(example_item, (capacity,)),
            keys=jnp.zeros((capacity, embed_dim), jnp.float32),
            insert_pos=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def add(state: MemoryState, batch: Batch, keys: jax.Array) -> MemoryState:
        batch, (num,) = check_batch(state.items, batch, num_storage_axes=1, num_batch_axes=1)
        check_add_size(num, capacity, add_batch_size)
        keys = jnp.asarray(keys)
        if keys.shape != (num, embed_dim) or not jnp.issubdtype(keys.dtype, jnp.floating):
            raise ValueError(
                f"add: keys must be a float array [N={num}, embed_dim={embed_dim}] (one per "
                f"item), got {keys.dtype.name}{list(keys.shape)}"
            )
        keys = keys.astype(jnp.float32)
        if metric == "cosine":
            keys = _unit(keys)
        items, keys = write_rows(
            (state.items, state.keys), (batch, keys), state.insert_pos, contiguous=contiguous
        )
        return state.replace(
            items=items,
            keys=keys,
            insert_pos=(state.insert_pos + num) % capacity,
            size=jnp.minimum(state.size + num, capacity),
        )

    def _retrieve(
        state: MemoryState, queries: jax.Array, k: int, approximate: bool, recall_target: float
    ) -> Retrieved:
        scores, indices, valid = search(
            state.keys,
            state.size,
            queries,
            k,
            metric=metric,
            chunk_size=chunk_size,
            approximate=approximate,
            recall_target=recall_target,
        )
        experience = jax.tree.map(
            lambda s: s.at[indices].get(mode="promise_in_bounds"), state.items
        )
        return Retrieved(experience, indices, scores, valid)

    retrieve_jit = jax.jit(_retrieve, static_argnums=(2, 3, 4))

    def retrieve(
        state: MemoryState,
        queries: jax.Array,
        k: int,
        *,
        approximate: bool = False,
        recall_target: float = 0.95,
    ) -> Retrieved:
        k = check_k(k, capacity)
        check_queries(queries, embed_dim)
        recall_target = check_float(
            "recall_target", recall_target, low=0.0, high=1.0, low_open=True
        )
        if not isinstance(approximate, bool):
            raise ValueError(f"approximate must be a bool, got {approximate!r}")
        if not isinstance(state.size, jax.core.Tracer):  # eager call: the count is known
            check_retrievable(state, k)
        return retrieve_jit(state, queries, k, approximate, recall_target)

    def can_retrieve(state: MemoryState, k: int) -> jax.Array:
        return state.size >= check_k(k, capacity)

    return Memory(init=init, add=jax.jit(add), retrieve=retrieve, can_retrieve=can_retrieve)


# --------------------------------------------------------------------------------------------
# Checks


def check_metric(metric: Any) -> str:
    """Return ``metric`` if it is one of ``METRICS``, else raise ValueError."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return metric


def check_k(k: Any, capacity: int) -> int:
    """Validate the static ``k`` of ``retrieve`` against the capacity."""
    k = check_int("k", k)
    if k > capacity:
        raise ValueError(f"retrieve: k must be <= capacity={capacity}, got k={k}")
    return k


def check_queries(queries: Any, embed_dim: int) -> None:
    """Trace-time check that ``queries`` is ``[Q, embed_dim]`` with ``Q >= 1``."""
    shape = getattr(queries, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != embed_dim or shape[0] < 1:
        raise ValueError(
            f"retrieve: queries must be [Q, embed_dim={embed_dim}] with Q >= 1, got shape "
            f"{None if shape is None else tuple(shape)}"
        )


def check_retrievable(state: MemoryState, k: int) -> None:
    """Raise ValueError if fewer than ``k`` items are stored (eager calls only).

    Reads ``state.size`` to the host; under ``jit`` it is a tracer and this raises TypeError,
    so check ``Retrieved.valid`` there instead. With a leading seed axis, the smallest count
    must reach ``k``.
    """
    if isinstance(state.size, jax.core.Tracer):
        raise TypeError(
            "check_retrievable needs concrete counts; under jit use Retrieved.valid instead"
        )
    stored = int(np.min(np.asarray(state.size)))
    if stored < k:
        raise ValueError(
            f"retrieve: k={k} is larger than the number of stored items ({stored}); add more "
            "items first, or use a smaller k (under jit, missing neighbours come back with "
            "valid=False)"
        )


# --------------------------------------------------------------------------------------------
# Search


def search(
    keys: jax.Array,
    size: jax.Array,
    queries: jax.Array,
    k: int,
    *,
    metric: str = "l2",
    chunk_size: int | None = None,
    approximate: bool = False,
    recall_target: float = 0.95,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-k most similar keys among the first ``size`` rows, scanned in chunks.

    Args:
        keys: ``[C, D]`` stored keys (unit rows for ``cosine``, as ``add`` writes them).
        size: ``[]`` int, rows ``< size`` are valid.
        queries: ``[Q, D]``; normalised here for ``cosine``.
        k: static, ``1 <= k <= C``.
        metric: ``l2`` or ``cosine``.
        chunk_size: rows scored at once (clipped to ``[k, C]``; ``None``:
            ``SCORES_PER_CHUNK // Q``); the last chunk overlaps the one before, and the
            overlap is masked so no row is counted twice.
        approximate: default matmul precision, and ``jax.lax.approx_max_k`` per chunk on TPU
            (``lax.top_k`` elsewhere, see the module docstring).
        recall_target: passed to ``approx_max_k`` (TPU).

    Returns:
        ``(scores [Q, k], indices [Q, k] int32, valid [Q, k] bool)``, most similar first;
        scores as in ``Retrieved``.
    """
    capacity = keys.shape[0]
    if chunk_size is None:
        chunk_size = SCORES_PER_CHUNK // queries.shape[0]
    chunk = min(max(chunk_size, k), capacity)
    num_chunks = -(-capacity // chunk)
    q = queries.astype(jnp.float32)
    if metric == "cosine":
        q = _unit(q)
    precision = jax.lax.Precision.DEFAULT if approximate else jax.lax.Precision.HIGHEST

    def chunk_top_k(i):
        seen = i * chunk
        start = jnp.minimum(seen, capacity - chunk)
        block = jax.lax.dynamic_slice_in_dim(keys, start, chunk, axis=0).astype(jnp.float32)
        s = jax.lax.dot_general(q, block, (((1,), (1,)), ((), ())), precision=precision)
        if metric == "l2":
            # |q - x|^2 = |q|^2 - 2 (q.x - |x|^2 / 2): rank by the bracket, add |q|^2 later.
            s = s - 0.5 * jnp.sum(block * block, axis=1)
        slot = start + jnp.arange(chunk, dtype=jnp.int32)
        ok = (slot >= seen) & (slot < size)
        s = jnp.where(ok[None, :], s, -jnp.inf)
        if approximate:
            v, pos = jax.lax.platform_dependent(
                s,
                tpu=lambda s: jax.lax.approx_max_k(s, k, recall_target=recall_target),
                default=lambda s: jax.lax.top_k(s, k),
            )
        else:
            v, pos = jax.lax.top_k(s, k)
        return v, start + pos.astype(jnp.int32)

    if num_chunks == 1:
        best, idx = chunk_top_k(jnp.int32(0))
    else:

        def body(carry, i):
            best, idx = carry
            v, pos = chunk_top_k(i)
            top, sel = jax.lax.top_k(jnp.concatenate([best, v], axis=1), k)
            return (top, jnp.take_along_axis(jnp.concatenate([idx, pos], axis=1), sel, 1)), None

        init = (
            jnp.full((q.shape[0], k), -jnp.inf, jnp.float32),
            jnp.zeros((q.shape[0], k), jnp.int32),
        )
        (best, idx), _ = jax.lax.scan(body, init, jnp.arange(num_chunks, dtype=jnp.int32))

    valid = best > -jnp.inf
    if metric == "l2":
        sq_dist = jnp.maximum(jnp.sum(q * q, axis=1, keepdims=True) - 2.0 * best, 0.0)
        best = -sq_dist
    scores = jnp.where(valid, best, -jnp.inf)
    return scores, jnp.where(valid, idx, 0), valid


def recall(approx_indices: jax.Array, exact_indices: jax.Array) -> jax.Array:
    """``[]`` fraction of the exact top-k slots that the approximate search also returned.

    Args:
        approx_indices, exact_indices: ``[Q, k]`` int slots.
    """
    hits = jnp.any(approx_indices[:, :, None] == exact_indices[:, None, :], axis=1)
    return jnp.mean(hits.astype(jnp.float32))


# --------------------------------------------------------------------------------------------
# Embeddings


def random_projection(key: jax.Array, obs_shape: tuple[int, ...], embed_dim: int) -> jax.Array:
    """A fixed Gaussian projection ``[prod(obs_shape), D]`` with entries ``N(0, 1 / D)``.

    It keeps Euclidean distances between observations up to a factor near 1
    (Johnson-Lindenstrauss), so ``l2`` neighbours of projected observations are close to the
    neighbours of the raw ones.
    """
    embed_dim = check_int("embed_dim", embed_dim)
    obs_size = math.prod(int(d) for d in obs_shape)
    return jax.random.normal(key, (obs_size, embed_dim), jnp.float32) / math.sqrt(embed_dim)


def project(projection: jax.Array, obs: jax.Array) -> jax.Array:
    """Embed ``obs [N, *obs_shape]`` as ``[N, D]`` with a ``random_projection`` matrix."""
    flat = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
    if flat.shape[1] != projection.shape[0]:
        raise ValueError(
            f"project: observations have {flat.shape[1]} values each, the projection expects "
            f"{projection.shape[0]} (obs shape {tuple(obs.shape[1:])})"
        )
    return jnp.dot(flat, projection, precision=jax.lax.Precision.HIGHEST)


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
