"""The host loop around a learner: chunks of jitted updates, progress, logs, run folder.

The device runs `chunk_size` updates per call (one `lax.scan`, all seeds `vmap`ped) and
returns stacked metrics; between calls the host prints progress and writes TensorBoard.
No callbacks run inside the hot loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from jaxlearn import algos, lora, resources, rundir, transfer
from jaxlearn.algos.base import Learner
from jaxlearn.checkpoint import Checkpointer, CheckpointError
from jaxlearn.parallel import (
    DATA_AXIS,
    data_mesh,
    fetch,
    process_devices,
    put_global,
    seed_mesh,
    seed_sharding,
    select_devices,
    shard_seeds,
)
from jaxlearn.progress import Progress, stage_changes
from jaxlearn.sinks import (
    EventWriter,
    SinkError,
    chunk_scalars,
    final_episode_metrics,
    over_seeds,
    plot_curriculum,
    plot_learning_curve,
    return_window,
    returns,
    trim_events,
    write_curve,
)

# The run's config lives with its folder (jaxlearn.rundir); re-exported for callers.
RunConfig = rundir.RunConfig
RUN_FIELDS = rundir.RUN_FIELDS
resolve_config = rundir.resolve_config


def choose_chunk_size(num_updates: int, num_chunks: int) -> int:
    """Updates per device call: a divisor of `num_updates` near `num_updates / num_chunks`
    when one exists (no padded updates), else the ceiling (the last chunk is masked)."""
    target = max(1, num_updates // num_chunks)
    lo, hi = max(1, target // 2), min(num_updates, 2 * target)
    divisors = [d for d in range(lo, hi + 1) if num_updates % d == 0]
    if divisors:
        return min(divisors, key=lambda d: (abs(d - target), d))
    return math.ceil(num_updates / num_chunks)


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
def _stop_on_signal(notice: Callable[[str], None]):
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


def _interruptible(folder: rundir.RunFolder, body: Callable[[], dict[str, Any]]):
    """Run `body`; an interrupt becomes `RunInterrupted` naming the folder."""
    try:
        return body()
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(folder.path, _latest_checkpoint(folder)) from None


def _latest_checkpoint(folder: rundir.RunFolder) -> int | None:
    try:
        return folder.latest_checkpoint()
    except Exception:  # noqa: BLE001 - best effort for a message on the way out
        return None


def run(
    run_cfg: RunConfig,
    algo_cfg: Any,
    out: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_chunks: int | None = None,
) -> dict[str, Any]:
    """Train `num_seeds` agents of `algo_cfg` and write the run folder. Returns metrics.json.

    The folder is created atomically and locked for the whole run (`jaxlearn.rundir`).
    `stop_after_chunks` ends the run early after that many chunks, as an interruption
    would (its checkpoint can be resumed with `resume`).
    """
    learner, devices = _make_learner(run_cfg, algo_cfg)  # checked; nothing compiled yet
    run_cfg = _with_actual_chunks(run_cfg, learner.num_updates)
    memory = check_memory(run_cfg, algo_cfg, devices)
    source = None
    if run_cfg.init_from is not None:  # checked against this network before the run exists
        source = transfer.load_source(run_cfg.init_from, run_cfg.init_checkpoint)
        like = jax.eval_shape(learner.init, jax.random.key(0), learner.hparams)
        transfer.check_fits(source, like.params, run_cfg.algo)
    if jax.process_count() > 1:
        if out is None:
            raise ValueError(
                "a multi-process run needs --out RUN_DIR: the same path on every process "
                "(process 0 writes it; the others write their checkpoints into it)"
            )
        # process 0 creates the folder and holds its lock for everyone
        folder = rundir.create(out, run_cfg, algo_cfg) if jax.process_index() == 0 else None
        _barrier("run_dir")
        folder = folder or rundir.RunFolder(out)
    else:
        folder = rundir.create(out, run_cfg, algo_cfg)
    with folder:
        return _interruptible(
            folder,
            lambda: _loop(
                folder,
                run_cfg,
                algo_cfg,
                learner,
                devices,
                None,
                log,
                stop_after_chunks,
                source,
                memory,
            ),
        )


def _with_actual_chunks(run_cfg: RunConfig, num_updates: int) -> RunConfig:
    """`run_cfg` with `num_chunks` set to the number of device calls the run makes (what
    config.yaml records); the same chunk size follows from it on resume."""
    chunk = choose_chunk_size(num_updates, run_cfg.num_chunks)
    calls = math.ceil(num_updates / chunk)
    if calls == run_cfg.num_chunks or choose_chunk_size(num_updates, calls) != chunk:
        return run_cfg
    return dataclasses.replace(run_cfg, num_chunks=calls)


def _barrier(name: str) -> None:
    """Wait for every process (multi-process runs only)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _gather(tree: Any) -> Any:
    """Host arrays of every process, concatenated on their leading (seed) axis."""
    if jax.process_count() == 1:
        return tree
    out = multihost_utils.process_allgather(tree)  # [P, local seeds, ...]
    return jax.tree.map(lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:]), out)


def _gather_lanes(state: Any) -> Any:
    """A train state with every process's lanes, concatenated in process order (host
    arrays; keys stay keys). The state itself in a one-process run."""
    if jax.process_count() == 1:
        return state
    procs = jax.process_count()

    def gather(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = _gather(np.asarray(jax.device_get(jax.random.key_data(x))))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if x.size == 0:
            return np.zeros((procs * x.shape[0], *x.shape[1:]), x.dtype)
        return _gather(np.asarray(jax.device_get(x)))

    return jax.tree.map(gather, state)


def resume(
    run_dir: str,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_chunks: int | None = None,
) -> dict[str, Any]:
    """Continue the run in `run_dir` from its newest valid checkpoint, holding its lock.

    The continuation is bit-identical to an uninterrupted run on the same device: the
    same chunks run on the restored state (keys, env states, buffers, optimizer state).
    A newer checkpoint that fails its checks is skipped with a warning and moved to
    `RUN_DIR/checkpoints_damaged/` (kept, never deleted); the newest good one is used.
    A run stopped before its first checkpoint restarts from scratch in the same folder
    (saying so in one line; its TensorBoard events move to `RUN_DIR/restarted/`).

    Raises:
        rundir.RunFolderError: not a run folder, or finished; `RunLockedError` (naming the
            holder's pid) while another process writes it.
        CheckpointError: checkpoints exist but none is valid.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    chief = jax.process_index() == 0
    folder = rundir.open_writer(run_dir) if chief else rundir.RunFolder(run_dir)
    with folder:
        run_cfg, algo_cfg = folder.read_config()
        learner, devices = _make_learner(run_cfg, algo_cfg)
        memory = check_memory(run_cfg, algo_cfg, devices)
        mode = "resume"
        if not folder.has_checkpoint():
            _barrier("checked_for_checkpoints")  # every process has looked before a move
            moved = folder.set_aside_events() if chief else None
            if chief:
                log(
                    f"[resume] {run_dir}: no checkpoint yet (stopped before its first one); "
                    f"restarting from scratch at update 0/{learner.num_updates}"
                    + (f" (earlier TensorBoard events moved to {moved})" if moved else "")
                )
            mode = None
        return _interruptible(
            folder,
            lambda: _loop(
                folder,
                run_cfg,
                algo_cfg,
                learner,
                devices,
                mode,
                log,
                stop_after_chunks,
                None,
                memory,
            ),
        )


def check_memory(run_cfg: RunConfig, algo_cfg: Any, devices: list) -> resources.Estimate:
    """The run's memory estimate (`jaxlearn.resources`); raises `ConfigError` naming the
    field that drives it when it exceeds the devices' free memory or `max_memory`."""
    est = resources.estimate(algo_cfg, run_cfg.num_seeds, run_cfg.eval_episodes)
    limit = resources.available_memory(devices)
    if run_cfg.max_memory is not None:
        cap = resources.parse_bytes(run_cfg.max_memory, "RunConfig.max_memory")
        limit = min(limit, (cap, f"max_memory={run_cfg.max_memory}"))
    resources.check(est, limit)
    return est


def _make_learner(run_cfg: RunConfig, algo_cfg: Any) -> tuple[Learner, list]:
    """The learner and its devices: seeds sharded over them, or with one seed and several
    devices, one data-parallel agent (algorithms whose `make_learner` takes `data_shards`:
    PPO and DQN)."""
    procs = jax.process_count()
    across = _one_agent_across_processes(run_cfg)
    if run_cfg.num_seeds % procs and not across:
        raise ValueError(
            f"RunConfig.num_seeds={run_cfg.num_seeds} is invalid for {procs} processes: each "
            f"process trains num_seeds / {procs} seeds, so use a multiple of {procs}, or "
            f"num_seeds=1 for one agent trained data parallel across the processes"
        )
    devices = select_devices(run_cfg.devices, 1 if across else run_cfg.num_seeds // procs)
    if across:  # every process's share of the devices: one global mesh
        devices = process_devices(len(devices))
    _, make_learner = algos.ALGOS[run_cfg.algo]
    if (across or run_cfg.num_seeds // procs == 1) and len(devices) > 1:
        if not _takes_data_shards(make_learner):
            able = [a for a, (_, m) in algos.ALGOS.items() if _takes_data_shards(m)]
            raise ValueError(
                f"RunConfig.devices={run_cfg.devices!r} with num_seeds=1 asks for one "
                f"data-parallel {run_cfg.algo} agent, which is supported for "
                f"{', '.join(able)} only; train several seeds instead (num_seeds a multiple "
                f"of {len(devices)})"
            )
        return make_learner(algo_cfg, data_shards=len(devices)), devices
    return make_learner(algo_cfg), devices


def _one_agent_across_processes(run_cfg: RunConfig) -> bool:
    """One seed in a multi-process run: one agent data parallel over every process's
    devices (a global mesh), rather than seeds split between the processes."""
    return jax.process_count() > 1 and run_cfg.num_seeds == 1


def _takes_data_shards(make_learner: Callable) -> bool:
    return "data_shards" in inspect.signature(make_learner).parameters


def _loop(
    folder: rundir.RunFolder,
    run_cfg: RunConfig,
    algo_cfg: Any,
    learner: Learner,
    devices: list,
    mode: str | None,
    log: Callable[[str], None] | None,
    stop_after_chunks: int | None,
    source: Any = None,
    memory: resources.Estimate | None = None,
) -> dict[str, Any]:
    run_dir = folder.path
    chief = jax.process_index() == 0
    if not chief:
        log = lambda s: None  # noqa: E731 - process 0 reports for everyone
    num_updates = learner.num_updates
    steps_per_update = learner.env_steps_per_update
    progress = Progress(num_updates, steps_per_update, run_cfg.num_seeds, log=log)
    log = progress.log
    resolved = rundir.resolved(run_cfg, algo_cfg)
    procs, rank = jax.process_count(), jax.process_index()
    # One agent across processes: every process holds lanes of the same global arrays.
    across = _one_agent_across_processes(run_cfg)
    local_seeds = 1 if across else run_cfg.num_seeds // procs
    mine = slice(0, 1) if across else slice(rank * local_seeds, (rank + 1) * local_seeds)
    chunk_size = choose_chunk_size(num_updates, run_cfg.num_chunks)
    num_calls = math.ceil(num_updates / chunk_size)
    hparams = learner.hparams
    keys = jax.random.split(jax.random.key(run_cfg.seed), run_cfg.num_seeds)
    eval_keys = jax.random.split(
        jax.random.fold_in(jax.random.key(run_cfg.seed), 1), run_cfg.num_seeds
    )
    keys, eval_keys = keys[mine], eval_keys[mine]  # this process's seeds
    # The leading axis of every state leaf is a "lane": a seed (vmapped, lanes sharded over
    # the devices), or with one data-parallel agent, a device's replica (shard_map).
    data_parallel = local_seeds == 1 and len(devices) > 1
    chunk_one = make_chunk(learner, chunk_size)
    if data_parallel:
        mesh = data_mesh(devices)
        lanes = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

        def expand(t):
            return jax.tree.map(lambda x: x[None], t)

        def squeeze(t):
            return jax.tree.map(lambda x: x[0], t)

        def per_device(f, in_specs):
            return jax.shard_map(
                f,
                mesh=mesh,
                in_specs=in_specs,
                out_specs=PartitionSpec(DATA_AXIS),
                check_vma=False,
            )

        init_fn = per_device(
            lambda k, hp: expand(learner.init(k, hp)), (PartitionSpec(), PartitionSpec())
        )
        init_args = (keys[0], hparams)
        if across:  # the same host values on every process, as global (replicated) arrays
            everywhere = NamedSharding(mesh, PartitionSpec())
            hparams = put_global(hparams, everywhere)
            eval_keys = put_global(eval_keys, everywhere)
            init_args = (put_global(keys[0], everywhere), hparams)
        chunk_fn = per_device(
            lambda s, hp, n: expand(chunk_one(squeeze(s), hp, n)),
            (PartitionSpec(DATA_AXIS), PartitionSpec(), PartitionSpec()),
        )
    else:
        mesh = seed_mesh(devices)
        lanes = seed_sharding(mesh)
        keys, eval_keys = shard_seeds(keys, mesh), shard_seeds(eval_keys, mesh)
        init_fn = jax.vmap(learner.init, in_axes=(0, None))
        init_args = (keys, hparams)
        chunk_fn = jax.vmap(chunk_one, in_axes=(0, None, None))

    # One checkpoint holds every process's lanes, as a one-process run's would: process 0
    # gathers and writes it (Orbax writes host arrays from process 0 only), and each
    # process restores its own slice.
    # "checkpoint N" is printed when N is committed (its background write has finished).
    def committed(step: int, record: dict[str, Any]) -> None:
        r = record.get("eval_return")
        log(f"  checkpoint {step}" + ("" if r is None else f"  eval return {r:.2f}"))

    ckpt = folder.checkpointer(keep=run_cfg.keep_checkpoints, on_commit=committed)

    t0 = time.perf_counter()
    init = jax.jit(init_fn, out_shardings=lanes).lower(*init_args).compile()
    done_updates = 0
    all_metrics: list[dict[str, np.ndarray]] = []
    if mode == "resume":
        like = jax.eval_shape(init_fn, *init_args)
        n_lanes = jax.tree.leaves(like)[0].shape[0]  # this process's (across: all) lanes
        stored = n_lanes if across else procs * n_lanes
        like = jax.tree.map(  # every process's lanes
            lambda x: jax.ShapeDtypeStruct((stored, *x.shape[1:]), x.dtype), like
        )
        state, history, record, skipped = ckpt.restore_latest_valid(
            like, algo=run_cfg.algo, config=resolved, defaults=rundir.config_defaults()
        )
        if not across:
            state = jax.tree.map(lambda x: x[rank * n_lanes : (rank + 1) * n_lanes], state)
        _barrier("restored")  # every process has read the checkpoints before any is moved
        for step, reason in skipped if chief else ():
            # Move the bad checkpoint aside (never delete a user's data): the resumed run
            # will save this step again.
            aside = folder.damaged_path(step)
            ckpt.set_aside(step, aside)
            log(f"WARNING: skipped checkpoint {step}: {reason}; moved it to {aside}")
        state = put_global(state, lanes) if across else jax.device_put(state, lanes)
        done_updates = int(record["step"])
        if history:
            all_metrics.append(history)
        log(f"[resume] {run_dir}: restored update {done_updates}/{num_updates}")
    else:
        state = init(*init_args)
        if source is not None:
            seeds = [0] * len(devices) if data_parallel else list(range(mine.start, mine.stop))
            if across:
                state = put_global(transfer.apply(fetch(state), source, seeds), lanes)
            else:
                state = jax.device_put(transfer.apply(state, source, seeds), lanes)
            log(
                f"[init-from] {source.run_dir}: {source.checkpoint} checkpoint (update "
                f"{source.step}) of {source.num_seeds} seed(s)"
            )
    trainable, num_params = lora.count(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.params)
    )
    chunk = jax.jit(chunk_fn, donate_argnums=0, out_shardings=lanes)
    chunk = chunk.lower(state, hparams, np.int32(chunk_size)).compile()
    evaluate = None
    # `greedy_episodes` (the learner refactor of issue 18; `evaluate` before it)
    greedy = getattr(learner, "greedy_episodes", None) or getattr(learner, "evaluate", None)
    if run_cfg.eval_episodes and greedy is not None:
        n = run_cfg.eval_episodes
        per_lane = jax.vmap(lambda s, k: greedy(s, k, n))
        # a data-parallel agent's replicas share their parameters: evaluate the first
        evaluate = jax.jit(
            (lambda s, k: per_lane(jax.tree.map(lambda x: x[:1], s), k))
            if data_parallel
            else per_lane,
            # across processes: a copy of the results on every process
            out_shardings=NamedSharding(mesh, PartitionSpec()) if across else None,
        )
    compile_seconds = time.perf_counter() - t0
    log(
        f"[{run_cfg.algo} {algo_cfg.env}] {run_cfg.num_seeds} seed(s), {num_updates} updates "
        f"in {num_calls} chunks on {len(devices)} device(s); compiled in "
        f"{compile_seconds:.1f}s; run folder {run_dir}"
    )
    log(f"  parameters: {trainable:,} trainable of {num_params:,}")
    if memory is not None:
        log(f"  {memory.summary()}")

    window = return_window(num_updates, run_cfg.final_fraction)
    writer = None
    if chief:
        if mode == "resume":  # what came after the restored checkpoint is written again
            trim_events(folder.event_files(), done_updates * steps_per_update)
        writer = EventWriter(folder.new_event_file())
        if memory is not None:
            writer.scalars(done_updates * steps_per_update, _memory_scalars(memory, state))

    def save(step: int) -> None:
        eval_return = None
        extra = {}
        if evaluate is not None:
            result = evaluate(state, eval_keys)
            result = fetch(result) if across else _gather(jax.device_get(result))
            eval_return = float(np.mean(result["returns"]))
            per_seed = np.mean(result["returns"], axis=1)
            extra["eval"] = {
                "return_mean": eval_return,
                "return_per_seed": per_seed.tolist(),
                "episodes_per_seed": run_cfg.eval_episodes,
            }
            if writer is not None:  # every seed evaluates as many episodes: one mean
                mean, lo, hi = over_seeds(per_seed)
                writer.scalars(
                    step * steps_per_update,
                    {"eval/return": mean, "eval/return_min": lo, "eval/return_max": hi},
                )
        history = {k: np.concatenate([m[k] for m in all_metrics], axis=1) for k in all_metrics[0]}
        lanes_of_all = fetch(state) if across else _gather_lanes(state)
        if not chief:
            return
        ckpt.save(
            step,
            lanes_of_all,
            algo=run_cfg.algo,
            config=resolved,
            history=history,
            eval_return=eval_return,
            extra=extra,
        )

    run_seconds = 0.0
    every = run_cfg.checkpoint_every
    first_call = done_updates // chunk_size
    calls_done = 0
    completed = False
    stage = None  # each seed's curriculum stage after the last chunk
    if all_metrics and "curriculum_stage" in all_metrics[0]:
        stage = all_metrics[0]["curriculum_stage"][:, -1]
    curriculum = getattr(learner, "curriculum", None)
    names = [] if curriculum is None else list(curriculum.config.names)
    progress.start(done_updates)
    try:
        with _stop_on_signal(log) as signals:
            for c in range(first_call, num_calls):
                active = min(chunk_size, num_updates - done_updates)
                t = time.perf_counter()
                state, metrics = chunk(state, hparams, np.int32(active))
                if across:  # replicas agree: this process's first lane
                    metrics = {k: np.asarray(v.addressable_data(0)) for k, v in metrics.items()}
                else:
                    metrics = jax.device_get(metrics)  # waits for the device
                dt = time.perf_counter() - t
                run_seconds += dt
                lanes_kept = 1 if data_parallel else local_seeds  # replicas agree
                metrics = {k: np.asarray(v)[:lanes_kept, :active] for k, v in metrics.items()}
                if not across:
                    metrics = _gather(metrics)  # every process's seeds, [num_seeds, K]
                _check_finite(metrics, done_updates, run_dir, ckpt)
                all_metrics.append(metrics)
                before = done_updates
                done_updates += active
                history = {k: np.concatenate([m[k] for m in all_metrics], axis=1) for k in metrics}
                curve = returns(history, window)
                if writer is not None:
                    for i, row in enumerate(chunk_scalars(metrics, curve, before)):
                        writer.scalars((before + i + 1) * steps_per_update, row)
                    writer.flush()
                ckpt.poll()  # "checkpoint N" for an earlier save whose write has finished
                if "curriculum_stage" in metrics:
                    for line in stage_changes(
                        metrics["curriculum_stage"], stage, before, steps_per_update, names
                    ):
                        log(line)
                    stage = metrics["curriculum_stage"][:, -1]
                sps = run_cfg.num_seeds * active * steps_per_update / max(dt, 1e-9)
                progress.chunk(
                    c, num_calls, done_updates, sps, (curve.mean[-1], curve.min[-1], curve.max[-1])
                )
                last = done_updates == num_updates
                if last or not every or done_updates // every > before // every:
                    save(done_updates)
                calls_done += 1
                if signals and not last:
                    ckpt.close()
                    raise RunInterrupted(run_dir, ckpt.latest_step(), signals[0])
                if stop_after_chunks is not None and calls_done >= stop_after_chunks and not last:
                    ckpt.close()
                    progress.close()
                    log(f"[stopped] after {calls_done} chunk(s); resume with --resume {run_dir}")
                    return {"run_dir": run_dir, "stopped_at_update": done_updates}
        completed = True
    except (SinkError, CheckpointError, OSError) as e:
        raise RunWriteError(
            f"{e}; the run stopped at update {done_updates}/{num_updates} "
            f"({_last_checkpoint_text(ckpt)}); once the cause is fixed (e.g. disk space), "
            f"continue with --resume {run_dir}"
        ) from e
    finally:
        progress.close()
        if not completed:  # an error is on its way out: wait for the writes, keep the error
            ckpt.close(quiet=True)
            if writer is not None:
                with contextlib.suppress(SinkError):
                    writer.close()
    try:
        ckpt.close()
        if writer is not None:
            writer.close()
        return _finish(
            folder,
            run_cfg,
            algo_cfg,
            learner,
            state,
            all_metrics,
            window,
            devices,
            {
                "mode": mode,
                "source": source,
                "memory": memory,
                "log": log,
                "run_seconds": run_seconds,
                "compile_seconds": compile_seconds,
                "timed_updates": num_updates - first_call * chunk_size,
                "trainable": trainable,
                "num_params": num_params,
                "data_parallel": data_parallel,
                "across": across,
                "local_seeds": local_seeds,
                "mine": mine,
            },
        )
    except (SinkError, CheckpointError, OSError) as e:
        raise RunWriteError(
            f"{e}; the run trained to its end ({_last_checkpoint_text(ckpt)}) but its reports "
            f"are incomplete; once the cause is fixed, --resume {run_dir} writes them"
        ) from e


def _last_checkpoint_text(ckpt: Checkpointer) -> str:
    try:
        last = ckpt.latest_step()
    except Exception:  # noqa: BLE001 - best effort inside an error message
        last = None
    return "no checkpoint yet" if last is None else f"last checkpoint: update {last}"


def _memory_scalars(memory: resources.Estimate, state: Any) -> dict[str, float]:
    """The estimated device bytes, the train state's measured bytes, and the device's peak
    bytes in use where the backend reports it (GPUs and TPUs; not the CPU)."""
    out = {
        "memory/estimated_device_bytes": float(memory.device_bytes),
        "memory/state_bytes": float(sum(x.nbytes for x in jax.tree.leaves(state))),
    }
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["memory/device_peak_bytes"] = float(stats["peak_bytes_in_use"])
    return out


def _finish(
    folder: rundir.RunFolder,
    run_cfg: RunConfig,
    algo_cfg: Any,
    learner: Learner,
    state: Any,
    all_metrics: list[dict[str, np.ndarray]],
    window: int,
    devices: list,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The finished run's reports: curve.csv, plots, adapters, then metrics.json (written
    last and atomically: it marks the run finished). Returns metrics.json's content."""
    run_dir = folder.path
    chief = jax.process_index() == 0
    across, mine, log = run["across"], run["mine"], run["log"]
    num_updates = learner.num_updates
    steps_per_update = learner.env_steps_per_update
    stacked = {k: np.concatenate([m[k] for m in all_metrics], axis=1) for k in all_metrics[0]}
    curve = returns(stacked, window)
    per_seed = curve.per_seed[:, -1]
    source, memory = run["source"], run["memory"]
    summary = {
        "algo": run_cfg.algo,
        "env": algo_cfg.env,
        "num_seeds": run_cfg.num_seeds,
        "seed": run_cfg.seed,
        "total_timesteps": num_updates * steps_per_update,
        "num_updates": num_updates,
        "num_chunks": math.ceil(num_updates / choose_chunk_size(num_updates, run_cfg.num_chunks)),
        "env_steps_per_second": run_cfg.num_seeds
        * run["timed_updates"]
        * steps_per_update
        / max(run["run_seconds"], 1e-9),
        "run_seconds": run["run_seconds"],
        "compile_seconds": run["compile_seconds"],
        "memory_estimate": None if memory is None else memory.to_dict(),
        "final_return_mean": float(curve.mean[-1]),
        "final_return_min": float(curve.min[-1]),
        "final_return_per_seed": [float(x) for x in per_seed],
        "final_episode_metrics": final_episode_metrics(stacked, run_cfg.final_fraction),
        "resumed": run["mode"] == "resume",
        "device": str(devices[0].device_kind),
        "num_devices": len(devices),
        "data_parallel": run["data_parallel"],
        "across_processes": across,
        "jax_version": jax.__version__,
        "parameters": {"trainable": run["trainable"], "total": run["num_params"]},
        "init_from": None
        if source is None
        else {"run_dir": source.run_dir, "checkpoint": source.checkpoint, "step": source.step},
    }
    if lora.has_adapters(state.params):  # the adapters of each of this process's seeds
        params = fetch(state.params) if across else jax.device_get(state.params)
        kept = 1 if run["data_parallel"] else run["local_seeds"]
        if across and not chief:
            kept = 0  # one agent: process 0 saves its adapters
        for j in range(kept):
            lora.save_adapters(
                folder.adapters_dir(mine.start + j),
                jax.tree.map(lambda x: x[j], params),  # noqa: B023
                {"algo": run_cfg.algo, "env": algo_cfg.env, "update": num_updates},
            )
    curriculum = getattr(learner, "curriculum", None)
    curriculum_state = None
    if curriculum is not None:
        curriculum_state = _gather(jax.device_get(state.curriculum))
    summary["num_processes"] = jax.process_count()
    _barrier("finished")
    if not chief:  # process 0 writes the run folder's reports
        summary["run_dir"] = run_dir
        return summary
    if curriculum is not None:
        summary["curriculum"] = _curriculum_summary(curriculum, curriculum_state, steps_per_update)
        plot_curriculum(
            stacked,
            steps_per_update,
            list(curriculum.config.names),
            folder.curriculum_file,
            title=f"Curriculum on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))",
        )
    write_curve(folder.curve_file, stacked, steps_per_update, run_cfg.final_fraction)
    plot_learning_curve(
        curve,
        steps_per_update,
        folder.learning_curve_file,
        title=(f"{run_cfg.algo.upper()} on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))"),
    )
    tmp = f"{folder.metrics_file}.partial"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, folder.metrics_file)
    log(
        f"[{run_cfg.algo} {algo_cfg.env}] done: final return {summary['final_return_mean']:.2f} "
        f"(worst seed {summary['final_return_min']:.2f}), "
        f"{summary['env_steps_per_second']:,.0f} env steps/s; wrote {run_dir}"
    )
    summary["run_dir"] = run_dir
    return summary


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


def _curriculum_summary(curriculum: Any, c: Any, steps_per_update: int) -> dict[str, Any]:
    """Final stage per seed and the env step at which each seed reached each stage, from
    the curriculum states of all seeds (host arrays)."""
    names = list(curriculum.config.names)
    stage = np.asarray(c.stage).reshape(-1)
    starts = np.asarray(c.stage_start).reshape(len(stage), -1)
    return {
        "stages": names,
        "final_stage_per_seed": [names[int(s)] for s in stage],
        "stage_reached_at_step_per_seed": [
            {names[i]: int(u) * steps_per_update for i, u in enumerate(row) if u >= 0}
            for row in starts
        ],
    }
