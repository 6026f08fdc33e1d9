"""`memory`: episodic-memory retrieval latency (`jaxlearn.memory`).

A full store (1M items, 65,536 with `--quick`), batches of 256 queries near stored keys, k = 5,
exact and approximate: ms per batch and queries/s; the approximate row carries its recall
against exact, and on a GPU whether it is within the 100 ms per batch target.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable

from jaxlearn.bench.buffers import BUFFER_ITEM_DOC, buffer_batch, buffer_item, checksum
from jaxlearn.bench.rows import (
    Emitter,
    compile_and_time,
    error_text,
    log,
    memory_fields,
    timing_fields,
)

# Episodic memory bench: items stored, then the constants of the query batch.
MEMORY_CAPACITY = 1_000_000
MEMORY_QUERIES = 256  # query states per retrieval batch
MEMORY_K = 5
MEMORY_EMBED_DIM = 64
MEMORY_GPU_TARGET_MS = 100.0  # issue 9: well under this per batch on a GPU


def bench_memory(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    """Episodic-memory retrieval latency: a full store, batches of 256 queries, k = 5, exact
    and approximate (`jaxlearn.memory`); the approximate row carries its recall against exact.
    """
    import jax
    import jax.numpy as jnp

    from jaxlearn.memory import SCORES_PER_CHUNK, episodic_memory, recall

    capacity = args.memory_capacity or (65_536 if args.quick else MEMORY_CAPACITY)
    num_batches = 2 if args.quick else (50 if on_gpu else 3)
    memory = episodic_memory(capacity, MEMORY_EMBED_DIM, metric="l2")
    log(f"memory: filling {capacity:,} items")
    keys = jax.random.normal(jax.random.key(0), (capacity, MEMORY_EMBED_DIM), jnp.float32)
    state = jax.block_until_ready(
        jax.jit(memory.add)(memory.init(buffer_item()), buffer_batch(0, capacity), keys)
    )
    del keys
    # Queries near stored keys (a stored key plus noise), as a learner's states would be.
    picks = jax.random.randint(jax.random.key(1), (num_batches, MEMORY_QUERIES), 0, capacity)
    noise = jax.random.normal(jax.random.key(2), (num_batches, MEMORY_QUERIES, MEMORY_EMBED_DIM))
    queries = jax.block_until_ready(state.keys[picks] + 0.3 * noise)
    base = {
        "bench": "memory",
        "impl": "jaxlearn",
        "capacity": capacity,
        "num_queries": MEMORY_QUERIES,
        "k": MEMORY_K,
        "embed_dim": MEMORY_EMBED_DIM,
        "metric": "l2",
        "item": BUFFER_ITEM_DOC,
        "num_batches": num_batches,
        "chunk_size": min(SCORES_PER_CHUNK // MEMORY_QUERIES, capacity),
        "queries": "stored keys plus N(0, 0.3^2) noise",
    }

    def batches(approximate: bool) -> Callable:
        def run(state, queries):
            def body(acc, q):
                out = memory.retrieve(state, q, MEMORY_K, approximate=approximate)
                return acc + checksum((out.experience, out.scores)), out.indices

            return jax.lax.scan(body, jnp.float32(0.0), queries)

        return run

    indices = {}
    for kind in ("exact", "approximate"):
        approximate = kind == "approximate"
        log(f"memory {kind}: {num_batches} batches of {MEMORY_QUERIES} queries, k={MEMORY_K}")
        what = {**base, "kind": kind}
        try:
            t = compile_and_time(batches(approximate), lambda: (state, queries), what=what)
        except Exception as e:
            emit({**what, "error": error_text(e)})
            traceback.print_exc()
            continue
        indices[kind] = t.output[1]
        latency_ms = 1e3 * t.run_seconds / num_batches
        row = {
            **what,
            **timing_fields(t),
            "latency_ms_per_batch": latency_ms,
            "queries_per_second": num_batches * MEMORY_QUERIES / t.run_seconds,
            **memory_fields(),
        }
        if approximate:
            row["approximation"] = (
                "default matmul precision; jax.lax.approx_max_k on TPU, lax.top_k elsewhere "
                "(JAX lowers approx_max_k to an exact sort off TPU)"
            )
            if "exact" in indices:
                flat = lambda x: x.reshape(-1, MEMORY_K)  # noqa: E731
                row["recall_vs_exact"] = float(recall(flat(indices[kind]), flat(indices["exact"])))
        if on_gpu:
            row["gpu_target_ms_per_batch"] = MEMORY_GPU_TARGET_MS
            row["within_gpu_target"] = latency_ms < MEMORY_GPU_TARGET_MS
        emit(row)
        del t
