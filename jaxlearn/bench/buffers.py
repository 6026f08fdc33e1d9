"""`buffer`: replay buffer add + sample throughput, jaxlearn against flashbax.

A prefilled 1M-item buffer of CartPole transitions, `num_ops` x (add 128 items, sample 4096)
in one scan with the state donated: ops/s and items/s of jaxlearn's uniform and prioritized
buffers, and of flashbax's item and prioritised item buffers when flashbax is importable here
(jaxlearn's rows then carry the ratio).
"""

from __future__ import annotations

import argparse
import math
import traceback
from collections.abc import Callable
from typing import Any

from jaxlearn.bench.rows import (
    Emitter,
    compile_and_time,
    error_text,
    log,
    memory_fields,
    timing_fields,
)

# Replay buffer bench: capacity, items added and sampled per op.
BUFFER_CAPACITY = 1_000_000
BUFFER_ADD = 128
BUFFER_SAMPLE = 4096

BUFFER_ITEM_DOC = (
    "obs [4] f32, action i32, reward f32, next_obs [4] f32, terminated bool, truncated bool"
)


def buffer_item():
    import jax.numpy as jnp

    return {
        "obs": jnp.zeros(4, jnp.float32),
        "action": jnp.int32(0),
        "reward": jnp.float32(0.0),
        "next_obs": jnp.zeros(4, jnp.float32),
        "terminated": jnp.bool_(False),
        "truncated": jnp.bool_(False),
    }


def buffer_batch(op, n: int):
    """The `n` items of add number `op`: cheap arithmetic, the same for every implementation."""
    import jax.numpy as jnp

    ids = op * n + jnp.arange(n, dtype=jnp.int32)
    f = ids.astype(jnp.float32)
    return {
        "obs": f[:, None] + jnp.arange(4, dtype=jnp.float32),
        "action": ids % 2,
        "reward": f * 0.5,
        "next_obs": f[:, None] - jnp.arange(4, dtype=jnp.float32),
        "terminated": ids % 97 == 0,
        "truncated": ids % 101 == 0,
    }


def checksum(tree):
    """Sum of every leaf as float32, so no sampled read can be dropped."""
    import jax
    import jax.numpy as jnp

    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(tree))


def buffer_ops(add: Callable, sample: Callable, num_ops: int, first_op: int) -> Callable:
    """`run(state, key)`: `num_ops` x (add BUFFER_ADD items, sample) in one scan."""
    import jax
    import jax.numpy as jnp

    def run(state, key):
        def body(carry, op):
            state, acc = carry
            state = add(state, buffer_batch(op, BUFFER_ADD))
            drawn = sample(state, jax.random.fold_in(key, op))
            return (state, acc + checksum(drawn)), None

        ops = first_op + jnp.arange(num_ops, dtype=jnp.int32)
        return jax.lax.scan(body, (state, jnp.float32(0.0)), ops)[0]

    return run


def filled_state_maker(init: Callable, add: Callable) -> tuple[Callable, int]:
    """`make_args()` -> (a full buffer state, key), and the number of adds that filled it."""
    import jax

    num_fill = math.ceil(BUFFER_CAPACITY / BUFFER_ADD)

    def fill(state):
        return jax.lax.fori_loop(
            0, num_fill, lambda i, s: add(s, buffer_batch(i, BUFFER_ADD)), state
        )

    fill = jax.jit(fill, donate_argnums=0)

    def make_args():
        return fill(init(buffer_item())), jax.random.key(0)

    return make_args, num_fill


def bench_buffer(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    from jaxlearn.buffers import prioritized_buffer, uniform_buffer

    num_ops = args.buffer_ops or (10_000 if on_gpu and not args.quick else 1_000)
    items_per_op = BUFFER_ADD + BUFFER_SAMPLE
    base = {
        "bench": "buffer",
        "capacity": BUFFER_CAPACITY,
        "add_batch_size": BUFFER_ADD,
        "sample_batch_size": BUFFER_SAMPLE,
        "num_ops": num_ops,
        "item": BUFFER_ITEM_DOC,
        "items_per_op": items_per_op,
        "items_definition": "items added + items sampled",
        "prefilled": True,
        "state_donated": True,
    }

    def measure(impl: str, kind: str, init, add, sample, extra=None) -> dict[str, Any] | None:
        log(f"buffer {impl} {kind}: {num_ops} ops")
        make_args, num_fill = filled_state_maker(init, add)
        fn = buffer_ops(add, sample, num_ops, first_op=num_fill)
        what = {**base, "impl": impl, "kind": kind}
        t = compile_and_time(fn, make_args, donate_argnums=(0,), what=what)
        row = {
            **base,
            "impl": impl,
            "kind": kind,
            **(extra or {}),
            **timing_fields(t),
            "ops_per_second": num_ops / t.run_seconds,
            "items_per_second": num_ops * items_per_op / t.run_seconds,
            **memory_fields(),
        }
        del t
        return row

    # flashbax first (if importable here), so our rows can carry the ratios: its item
    # buffer against our uniform one, its prioritised item buffer against our prioritized.
    flashbax_rows: dict[str, dict[str, Any]] = {}
    try:
        import flashbax
    except ImportError as e:
        emit(
            {
                **base,
                "impl": "flashbax",
                "kind": "item",
                "skipped": f"flashbax is not importable in this venv ({error_text(e)}); "
                "install the 'bench' extra: pip install -e '.[bench]'",
            }
        )
    else:
        import importlib.metadata

        version = getattr(flashbax, "__version__", None) or importlib.metadata.version("flashbax")
        peers = (
            ("uniform", "item", "make_item_buffer", {}),
            (
                "prioritized",
                "prioritised_item",
                "make_prioritised_item_buffer",
                {"priority_exponent": 0.6, "device": "gpu" if on_gpu else "cpu"},
            ),
        )
        for ours, kind, api, kwargs in peers:
            try:
                fbx = getattr(flashbax, api)(
                    max_length=BUFFER_CAPACITY,
                    min_length=1,
                    sample_batch_size=BUFFER_SAMPLE,
                    add_sequences=False,
                    add_batches=True,
                    **kwargs,
                )
                row = measure(
                    "flashbax",
                    kind,
                    fbx.init,
                    fbx.add,
                    fbx.sample,
                    {"flashbax_version": version, "api": f"flashbax.{api}"},
                )
                emit(row)
                flashbax_rows[ours] = row
            except Exception as e:
                emit({**base, "impl": "flashbax", "kind": kind, "skipped": error_text(e)})
                traceback.print_exc()

    uni = uniform_buffer(BUFFER_CAPACITY, BUFFER_SAMPLE, add_batch_size=BUFFER_ADD)
    pri = prioritized_buffer(BUFFER_CAPACITY, BUFFER_SAMPLE, add_batch_size=BUFFER_ADD)
    for kind, buf in (("uniform", uni), ("prioritized", pri)):
        try:
            row = measure("jaxlearn", kind, buf.init, buf.add, buf.sample)
        except Exception as e:
            emit({**base, "impl": "jaxlearn", "kind": kind, "error": error_text(e)})
            traceback.print_exc()
            continue
        if kind == "prioritized":
            row["note"] = "add + sample only (no update_priorities)"
        if kind in flashbax_rows:
            row["ratio_vs_flashbax"] = row["ops_per_second"] / flashbax_rows[kind]["ops_per_second"]
        emit(row)
