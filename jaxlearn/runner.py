"""Train or resume a run: check the config and memory, own the run folder, lay out the
state, and hand over to the chunk loop.

Data flows one way: config -> run folder (`jaxlearn.rundir`: layout, lock, resume) ->
placement (`jaxlearn.placement`: seeds vmapped, sharded, one data-parallel agent, across
processes) -> the chunk loop (`jaxlearn.loop`) -> the one return reducer and the sinks
(`jaxlearn.sinks`, `jaxlearn.progress`, `jaxlearn.reports`) and checkpoints.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import jax

from jaxlearn import algos, loop, resources, rundir, transfer
from jaxlearn.algos.base import Learner
from jaxlearn.checkpoint import messages
from jaxlearn.loop import (  # re-exported: the runner's public names
    DivergenceError,
    RunInterrupted,
    RunWriteError,
    choose_chunk_size,
    make_chunk,
)
from jaxlearn.parallel import process_devices, select_devices
from jaxlearn.placement import barrier, make_placement

# The run's config lives with its folder (jaxlearn.rundir); re-exported for callers.
RunConfig = rundir.RunConfig
RUN_FIELDS = rundir.RUN_FIELDS
resolve_config = rundir.resolve_config

__all__ = [
    "RUN_FIELDS",
    "DivergenceError",
    "RunConfig",
    "RunInterrupted",
    "RunWriteError",
    "check_memory",
    "choose_chunk_size",
    "make_chunk",
    "resolve_config",
    "resume",
    "run",
]


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
        barrier("run_dir")
        folder = folder or rundir.RunFolder(out)
    else:
        folder = rundir.create(out, run_cfg, algo_cfg)
    with folder:
        return _train(
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
        )


def _with_actual_chunks(run_cfg: RunConfig, num_updates: int) -> RunConfig:
    """`run_cfg` with `num_chunks` set to the number of device calls the run makes (what
    config.yaml records); the same chunk size follows from it on resume."""
    chunk = choose_chunk_size(num_updates, run_cfg.num_chunks)
    calls = math.ceil(num_updates / chunk)
    if calls == run_cfg.num_chunks or choose_chunk_size(num_updates, calls) != chunk:
        return run_cfg
    return dataclasses.replace(run_cfg, num_chunks=calls)


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
            barrier("checked_for_checkpoints")  # every process has looked before a move
            moved = folder.set_aside_events() if chief else None
            if chief:
                log(
                    f"[resume] {run_dir}: no checkpoint yet (stopped before its first one); "
                    f"restarting from scratch at update 0/{learner.num_updates}"
                    + (f" (earlier TensorBoard events moved to {moved})" if moved else "")
                )
            mode = None
        return _train(
            folder, run_cfg, algo_cfg, learner, devices, mode, log, stop_after_chunks, None, memory
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


def _train(
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
    """Lay the run out on `devices` and run the chunk loop in the locked `folder`; an
    interrupt becomes `RunInterrupted` naming the folder and its last checkpoint."""
    place = make_placement(learner, devices, run_cfg.num_seeds, run_cfg.seed)
    i = jax.process_index()
    orbax_log = os.path.join(folder.path, rundir.ORBAX_LOG + (f".process{i}" if i else ""))
    with messages.diverted_to(orbax_log) as orbax:  # a failed write's tracebacks go there
        try:
            return loop.train(
                folder,
                run_cfg,
                algo_cfg,
                learner,
                place,
                mode,
                log,
                stop_after_chunks,
                source,
                memory,
            )
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            raise RunInterrupted(folder.path, _latest_checkpoint(folder)) from None
        except RunWriteError as e:
            if not orbax.count:
                raise
            raise RunWriteError(f"{e} ({orbax.summary()})") from e.__cause__
