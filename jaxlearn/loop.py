"""The chunk loop: jitted chunks of updates, then the host's work between them.

The device runs `chunk_size` updates per call (one `lax.scan`, every lane at once, laid out
by a `jaxlearn.placement.Placement`) and returns stacked metrics; between calls the host
reduces them (`jaxlearn.sinks.returns`), reports progress, writes TensorBoard and saves
checkpoints. No callback runs inside the hot loop. When the run ends, `jaxlearn.reports`
writes curve.csv, the plots and metrics.json.

Faults surface, never hang: a failed write of any sink or checkpoint raises
`RunWriteError`; SIGINT/SIGTERM stop the loop after the current chunk (its checkpoint
committed) with `RunInterrupted`.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import lora, reports, resources, rundir
from jaxlearn.algos.base import Learner
from jaxlearn.checkpoint import Checkpointer, CheckpointError
from jaxlearn.placement import Placement, barrier
from jaxlearn.progress import Progress, stage_changes
from jaxlearn.sinks import (
    EventWriter,
    SinkError,
    chunk_scalars,
    over_seeds,
    return_window,
    returns,
    trim_events,
)


class DivergenceError(RuntimeError):
    """Training produced NaN or Inf in the loss or the parameters."""


class RunWriteError(RuntimeError):
    """A write of the run failed (a full disk, an I/O error, a vanished folder): the run
    stopped; its committed checkpoints stay, and `--resume` continues once it is fixed."""


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM after its folder existed.

    Attributes: `run_dir`; `step`, the newest committed checkpoint (None: none yet);
    `signum`, the signal (exit status 128 + signum).
    """

    def __init__(self, run_dir: str, step: int | None, signum: int = signal.SIGINT):
        super().__init__(run_dir)
        self.run_dir, self.step, self.signum = run_dir, step, int(signum)

    def message(self) -> str:
        """One line saying how to continue the run."""
        where = "no checkpoint yet" if self.step is None else f"last checkpoint: update {self.step}"
        return f"interrupted ({where}); continue with --resume {self.run_dir}"


@contextlib.contextmanager
def stop_on_signal(notice: Callable[[str], None]):
    """SIGINT and SIGTERM ask the loop to stop after the current chunk (the yielded list
    gets the signal number); a second signal stops at once (KeyboardInterrupt). Only in the
    main thread of a one-process run; elsewhere signals keep their default handling."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield received
        return

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        notice("[interrupt] stopping after the current chunk (again to stop at once)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def choose_chunk_size(num_updates: int, num_chunks: int) -> int:
    """Updates per device call, so that there are at most `num_chunks` calls: the smallest
    divisor of `num_updates` from `ceil(num_updates / num_chunks)` to a quarter above it (no
    padded updates) when one exists, else that ceiling (the last chunk is masked)."""
    lo = max(1, math.ceil(num_updates / num_chunks))
    for d in range(lo, min(num_updates, lo + lo // 4) + 1):
        if num_updates % d == 0:
            return d
    return lo


def make_chunk(learner: Learner, chunk_size: int) -> Callable:
    """`chunk(state, hparams, num_active) -> (state, metrics [chunk_size])` for one seed.

    Updates at positions >= `num_active` are skipped (state unchanged, metrics zero), so
    the last chunk can be padded and every call has the same shape: nothing recompiles.
    The skip is a `lax.cond` on a predicate that does not depend on the seed, so it stays a
    real branch under `vmap` (no select over the state, which would copy replay buffers).
    """

    def chunk(state, hparams, num_active):
        def run(s):
            return learner.update(s, hparams)

        def skip(s):
            _, metrics = jax.eval_shape(run, s)
            return s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)

        def body(s, i):
            return jax.lax.cond(i < num_active, run, skip, s)

        return jax.lax.scan(body, state, jnp.arange(chunk_size))

    return chunk


def train(
    folder: rundir.RunFolder,
    run_cfg: Any,
    algo_cfg: Any,
    learner: Learner,
    place: Placement,
    mode: str | None,
    log: Callable[[str], None] | None,
    stop_after_chunks: int | None,
    source: Any = None,
    memory: resources.Estimate | None = None,
) -> dict[str, Any]:
    """Train in the locked run folder `folder` (from scratch, or `mode="resume"` from its
    newest valid checkpoint); returns metrics.json's content (or, stopped early by
    `stop_after_chunks`, `{"run_dir", "stopped_at_update"}`)."""
    chief = jax.process_index() == 0
    num_updates, spu = learner.num_updates, learner.env_steps_per_update
    progress = Progress(num_updates, spu, run_cfg.num_seeds, log=log if chief else print_none)
    log = progress.log
    resolved = rundir.resolved(run_cfg, algo_cfg)
    chunk_size = choose_chunk_size(num_updates, run_cfg.num_chunks)

    def committed(step: int, record: dict[str, Any]) -> None:  # written, listed, loadable
        r = record.get("eval_return")
        log(f"  checkpoint {step}" + ("" if r is None else f"  eval return {r:.2f}"))

    ckpt = folder.checkpointer(keep=run_cfg.keep_checkpoints, on_commit=committed)
    t0 = time.perf_counter()
    history: list[dict[str, np.ndarray]] = []
    done = 0
    if mode == "resume":
        stored, past, record, skipped = ckpt.restore_latest_valid(
            place.stored_like(),
            algo=run_cfg.algo,
            config=resolved,
            defaults=rundir.config_defaults(),
        )
        barrier("restored")  # every process has read the checkpoints before any is moved
        for step, reason in skipped if chief else ():
            # Never delete a user's data: the resumed run saves this step again.
            aside = folder.damaged_path(step)
            ckpt.set_aside(step, aside)
            log(f"WARNING: skipped checkpoint {step}: {reason}; moved it to {aside}")
        state, done = place.restore(stored), int(record["step"])
        history += [past] if past else []
        log(f"[resume] {folder.path}: restored update {done}/{num_updates}")
    else:
        state = place.init()
        if source is not None:
            state = place.start_from(state, source)
            log(
                f"[init-from] {source.run_dir}: {source.checkpoint} checkpoint (update "
                f"{source.step}) of {source.num_seeds} seed(s)"
            )
    trainable, num_params = lora.count(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.params)
    )
    chunk = place.compile_chunk(make_chunk(learner, chunk_size), state, chunk_size)
    greedy = getattr(learner, "greedy_episodes", None) or getattr(learner, "evaluate", None)
    evaluate = None
    if run_cfg.eval_episodes and greedy is not None:
        evaluate = place.evaluator(greedy, run_cfg.eval_episodes)
    compile_seconds = time.perf_counter() - t0
    num_calls = math.ceil(num_updates / chunk_size)
    log(
        f"[{run_cfg.algo} {algo_cfg.env}] {run_cfg.num_seeds} seed(s), {num_updates} updates "
        f"in {num_calls} chunks on {len(place.devices)} device(s); compiled in "
        f"{compile_seconds:.1f}s; run folder {folder.path}"
    )
    if num_updates * spu != algo_cfg.total_timesteps:  # said once, not silently
        log(
            f"  env steps: {num_updates * spu:,} per seed (total_timesteps "
            f"{algo_cfg.total_timesteps:,} in whole updates of {spu:,} steps)"
        )
    log(f"  parameters: {trainable:,} trainable of {num_params:,}")
    if memory is not None:
        log(f"  {memory.summary()}")
    writer = None
    if chief:
        if mode == "resume":  # what came after the restored checkpoint is written again
            trim_events(folder.event_files(), done * spu)
        writer = EventWriter(folder.new_event_file())
        if memory is not None:
            writer.scalars(done * spu, reports.memory_scalars(memory, state))

    def save(step: int) -> None:
        eval_return, extra = None, {}
        if evaluate is not None:
            result = place.host_eval(evaluate(state, place.eval_keys))
            eval_return = float(np.mean(result["returns"]))
            per_seed = np.mean(result["returns"], axis=1)
            extra["eval"] = {
                "return_mean": eval_return,
                "return_per_seed": per_seed.tolist(),
                "episodes_per_seed": run_cfg.eval_episodes,
            }
            if writer is not None:  # every seed evaluates as many episodes: one mean
                mean, lo, hi = over_seeds(per_seed)
                tags = {"eval/return": mean, "eval/return_min": lo, "eval/return_max": hi}
                writer.scalars(step * spu, tags)
        lanes = place.host_state(state)
        if chief:
            ckpt.save(
                step,
                lanes,
                algo=run_cfg.algo,
                config=resolved,
                history=_stack(history),
                eval_return=eval_return,
                extra=extra,
            )

    # ---- the chunk loop ----------------------------------------------------------------
    window = return_window(num_updates, run_cfg.final_fraction)
    curriculum = getattr(learner, "curriculum", None)
    names = [] if curriculum is None else list(curriculum.config.names)
    stage = None  # each seed's curriculum stage before the next chunk (None: initial)
    if history and "curriculum_stage" in history[0]:
        stage = history[0]["curriculum_stage"][:, -1]
    # checkpoints fall on chunk ends, and the last on the last update (then no chunk is left)
    first_call, start, run_seconds, completed = -(-done // chunk_size), done, 0.0, False
    progress.start(done)
    try:
        with stop_on_signal(log) as signals:
            for c in range(first_call, num_calls):
                active, before, t = min(chunk_size, num_updates - done), done, time.perf_counter()
                state, metrics = chunk(state, place.hparams, np.int32(active))
                # while this chunk runs, the previous save commits: its "checkpoint N" line
                # comes right after the chunk it belongs to, never a chunk later
                ckpt.wait()
                metrics = place.host_metrics(metrics, active)  # [num_seeds, active]
                dt = time.perf_counter() - t
                run_seconds += dt
                _check_finite(metrics, done, folder.path, ckpt)
                history.append(metrics)
                done += active
                curve = returns(_stack(history), window)
                if writer is not None:
                    for i, row in enumerate(chunk_scalars(metrics, curve, before)):
                        writer.scalars((before + i + 1) * spu, row)
                    writer.flush()
                if "curriculum_stage" in metrics:
                    for line in stage_changes(
                        metrics["curriculum_stage"], stage, before, spu, names
                    ):
                        log(line)
                    stage = metrics["curriculum_stage"][:, -1]
                sps = run_cfg.num_seeds * active * spu / max(dt, 1e-9)
                progress.chunk(
                    c, num_calls, done, sps, (curve.mean[-1], curve.min[-1], curve.max[-1])
                )
                every, last = run_cfg.checkpoint_every, done == num_updates
                if last or not every or done // every > before // every:
                    save(done)
                if (signals or c + 1 - first_call == stop_after_chunks) and not last:
                    ckpt.close()
                    if signals:
                        raise RunInterrupted(folder.path, ckpt.latest_step(), signals[0])
                    progress.close()
                    ran = c + 1 - first_call
                    log(f"[stopped] after {ran} chunk(s); resume with --resume {folder.path}")
                    return {"run_dir": folder.path, "stopped_at_update": done}
        completed = True
    except (SinkError, CheckpointError, OSError) as e:
        raise RunWriteError(
            f"{_reason(e)}; the run stopped at update {done}/{num_updates} "
            f"({_last_text(ckpt)}); once the cause is fixed (e.g. disk space), continue with "
            f"--resume {folder.path}"
        ) from e
    finally:
        progress.close()
        if not completed:  # an error is on its way out: wait for the writes, keep the error
            ckpt.close(quiet=True)
            if writer is not None:
                with contextlib.suppress(SinkError):
                    writer.close()
    run = {
        "mode": mode,
        "source": source,
        "memory": memory,
        "log": log,
        "run_seconds": run_seconds,
        "compile_seconds": compile_seconds,
        "timed_updates": num_updates - start,
        "num_chunks": num_calls,
        "trainable": trainable,
        "num_params": num_params,
        "window": window,
    }
    try:
        ckpt.close()
        if writer is not None:
            writer.close()
        return reports.finish(
            folder, run_cfg, algo_cfg, learner, place, state, _stack(history), run
        )
    except (SinkError, CheckpointError, OSError) as e:
        raise RunWriteError(
            f"{_reason(e)}; the run trained to its end ({_last_text(ckpt)}) but its reports are "
            f"incomplete; once the cause is fixed, --resume {folder.path} writes them"
        ) from e


def print_none(line: str) -> None:
    """A process other than 0 prints nothing: process 0 reports for everyone."""


def _stack(history: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The chunks' metrics side by side: `[num_seeds, updates so far]` per key."""
    return {k: np.concatenate([m[k] for m in history], axis=1) for k in history[0]}


def _reason(e: BaseException) -> str:
    """The error's message without the storage spec TensorStore appends (hundreds of
    characters of JSON that say nothing to a user)."""
    return re.sub(r" \[tensorstore_spec='.*?'\]", "", str(e))


def _last_text(ckpt: Checkpointer) -> str:
    try:
        last = ckpt.latest_step()
    except Exception:  # noqa: BLE001 - best effort inside an error message
        last = None
    return "no checkpoint yet" if last is None else f"last checkpoint: update {last}"


def _check_finite(
    metrics: dict[str, np.ndarray], done_updates: int, run_dir: str, ckpt: Checkpointer
) -> None:
    """Stop with DivergenceError if any update of the chunk flagged NaN/Inf."""
    flag = metrics.get("nonfinite")
    if flag is None or not np.any(flag):
        return
    seed, k = np.argwhere(flag > 0)[0]
    ckpt.close()
    last = ckpt.latest_step()
    where = (
        f"the last good checkpoint is update {last} in {ckpt.directory}"
        if last is not None
        else "no checkpoint was saved yet"
    )
    raise DivergenceError(
        f"training diverged: NaN or Inf in the loss or parameters at update "
        f"{done_updates + int(k) + 1} (seed {int(seed)}); stopped without saving; {where}. "
        f"Lower the learning rate (or check the reward scale) and start a new run; "
        f"{run_dir} keeps its logs and checkpoints"
    )
