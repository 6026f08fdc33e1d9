"""The host loop around a learner: chunks of jitted updates, progress, logs, run folder.

The device runs `chunk_size` updates per call (one `lax.scan`, all seeds `vmap`ped) and
returns stacked metrics; between calls the host prints progress and writes TensorBoard.
No callbacks run inside the hot loop.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from jaxlearn import algos
from jaxlearn.algos.base import Learner
from jaxlearn.config import check_choice, check_positive_int, check_range, from_dict, to_dict
from jaxlearn.logging import (
    MetricLogger,
    final_episode_metrics,
    final_returns,
    plot_curriculum,
    plot_learning_curve,
)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a run does around the algorithm: which algo, how many seeds, how it reports."""

    algo: str = "ppo"
    seed: int = 0
    num_seeds: int = 1
    num_chunks: int = 20  # host reports between chunks; more chunks = finer progress
    final_fraction: float = 0.05  # final_return_* average the last 5% of training

    def __post_init__(self):
        check_choice(self, "algo", sorted(algos.ALGOS))
        check_positive_int(self, "num_seeds", "num_chunks")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RunConfig.seed={self.seed!r} is invalid: must be an integer >= 0")
        check_range(self, "final_fraction", 0.0, 1.0, low_open=True)


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def resolve_config(
    *,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[RunConfig, Any]:
    """Build (RunConfig, AlgoConfig) from an optional YAML file and overrides.

    The YAML file is flat: run fields (`algo`, `seed`, `num_seeds`, ...) and algorithm fields
    side by side. Later sources win: file, then `overrides`. Unknown fields are errors that
    list the allowed ones.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise ValueError(f"--config {config_file!r}: no such file")
        with open(config_file) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {config_file!r}: expected a mapping of field: value")
        values.update(loaded)
    values.update(overrides or {})
    run_values = {k: v for k, v in values.items() if k in RUN_FIELDS}
    run_cfg = from_dict(RunConfig, run_values)
    config_cls, _ = algos.ALGOS[run_cfg.algo]
    algo_values = {k: v for k, v in values.items() if k not in RUN_FIELDS}
    try:
        algo_cfg = from_dict(config_cls, algo_values)
    except ValueError as e:
        if "unknown field" in str(e):
            raise ValueError(f"{e}; run fields: {', '.join(RUN_FIELDS)}") from None
        raise
    return run_cfg, algo_cfg


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


def new_run_dir(out: str | None, algo: str, env: str) -> str:
    """Create the run folder; never reuse an existing one.

    With `out` given, it must not exist yet (an error otherwise). Without it, a fresh
    `runs/{algo}_{env}_{timestamp}` is made (with a numeric suffix on a clash).
    """
    if out is not None:
        if os.path.exists(out):
            raise FileExistsError(
                f"--out {out!r} already exists; jaxlearn never overwrites a run folder: "
                "choose a new path or remove it yourself"
            )
        os.makedirs(out)
        return out
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{algo}_{env}_{stamp}")
    path, i = base, 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            path, i = f"{base}-{i}", i + 1


def run(
    run_cfg: RunConfig,
    algo_cfg: Any,
    out: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `num_seeds` agents of `algo_cfg` and write the run folder. Returns metrics.json."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    _, make_learner = algos.ALGOS[run_cfg.algo]
    learner = make_learner(algo_cfg)  # validated config -> learner; nothing compiled yet
    run_dir = new_run_dir(out, run_cfg.algo, algo_cfg.env)
    resolved = {**to_dict(run_cfg), **to_dict(algo_cfg)}
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=False)

    num_updates = learner.num_updates
    chunk_size = choose_chunk_size(num_updates, run_cfg.num_chunks)
    num_calls = math.ceil(num_updates / chunk_size)
    steps_per_update = learner.env_steps_per_update
    hparams = learner.hparams
    keys = jax.random.split(jax.random.key(run_cfg.seed), run_cfg.num_seeds)

    t0 = time.perf_counter()
    init = jax.jit(jax.vmap(learner.init, in_axes=(0, None))).lower(keys, hparams).compile()
    state = init(keys, hparams)
    chunk = jax.jit(
        jax.vmap(make_chunk(learner, chunk_size), in_axes=(0, None, None)), donate_argnums=0
    )
    chunk = chunk.lower(state, hparams, jnp.int32(chunk_size)).compile()
    compile_seconds = time.perf_counter() - t0
    log(
        f"[{run_cfg.algo} {algo_cfg.env}] {run_cfg.num_seeds} seed(s), {num_updates} updates "
        f"in {num_calls} chunks; compiled in {compile_seconds:.1f}s; run folder {run_dir}"
    )

    logger = MetricLogger(run_dir)
    all_metrics: list[dict[str, np.ndarray]] = []
    run_seconds = 0.0
    done_updates = 0
    try:
        for c in range(num_calls):
            active = min(chunk_size, num_updates - done_updates)
            t = time.perf_counter()
            state, metrics = chunk(state, hparams, jnp.int32(active))
            metrics = jax.device_get(metrics)  # waits for the device
            dt = time.perf_counter() - t
            run_seconds += dt
            metrics = {k: np.asarray(v)[:, :active] for k, v in metrics.items()}  # [S, K]
            all_metrics.append(metrics)
            first_step = done_updates * steps_per_update
            done_updates += active
            logger.log_chunk(metrics, first_step, steps_per_update)
            env_steps = done_updates * steps_per_update
            ret = _mean_return(metrics)
            sps = run_cfg.num_seeds * active * steps_per_update / max(dt, 1e-9)
            total = num_updates * steps_per_update
            log(
                f"  chunk {c + 1}/{num_calls}  step {env_steps:,}/{total:,}"
                f"  {sps:,.0f} steps/s  return {ret:.2f}"
            )
    finally:
        logger.close()

    stacked = {k: np.concatenate([m[k] for m in all_metrics], axis=1) for k in all_metrics[0]}
    per_seed = final_returns(stacked, run_cfg.final_fraction)
    total_steps = num_updates * steps_per_update
    summary = {
        "algo": run_cfg.algo,
        "env": algo_cfg.env,
        "num_seeds": run_cfg.num_seeds,
        "seed": run_cfg.seed,
        "total_timesteps": total_steps,
        "num_updates": num_updates,
        "env_steps_per_second": run_cfg.num_seeds * total_steps / max(run_seconds, 1e-9),
        "run_seconds": run_seconds,
        "compile_seconds": compile_seconds,
        "final_return_mean": float(np.nanmean(per_seed)),
        "final_return_min": float(np.nanmin(per_seed)),
        "final_return_per_seed": [float(x) for x in per_seed],
        "final_episode_metrics": final_episode_metrics(stacked, run_cfg.final_fraction),
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
    }
    curriculum = getattr(learner, "curriculum", None)
    if curriculum is not None:
        summary["curriculum"] = _curriculum_summary(curriculum, state, steps_per_update)
        plot_curriculum(
            stacked,
            steps_per_update,
            list(curriculum.config.names),
            os.path.join(run_dir, "curriculum.png"),
            title=f"Curriculum on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))",
        )
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_learning_curve(
        stacked,
        steps_per_update,
        os.path.join(run_dir, "learning_curve.png"),
        title=(f"{run_cfg.algo.upper()} on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))"),
    )
    log(
        f"[{run_cfg.algo} {algo_cfg.env}] done: final return {summary['final_return_mean']:.2f} "
        f"(worst seed {summary['final_return_min']:.2f}), "
        f"{summary['env_steps_per_second']:,.0f} env steps/s; wrote {run_dir}"
    )
    summary["run_dir"] = run_dir
    return summary


def _curriculum_summary(curriculum: Any, state: Any, steps_per_update: int) -> dict[str, Any]:
    """Final stage per seed and the env step at which each seed reached each stage."""
    c = jax.device_get(state.curriculum)
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


def _mean_return(metrics: dict[str, np.ndarray]) -> float:
    n = metrics["episode_count"].sum()
    return float(metrics["episode_return_sum"].sum() / n) if n > 0 else float("nan")
