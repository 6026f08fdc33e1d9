"""`ppo_e2e`, `dqn_e2e` and `sweep`: whole training runs of jaxlearn's agents, timed.

`ppo_e2e`/`dqn_e2e`: PPO and DQN on experiments/{ppo,dqn}_cartpole.yaml, the whole run in one
jit, for 1 seed and vmapped seeds: env steps/s, gradient updates per env step and the final
training return (rejax's side is in `jaxlearn.bench.peers`). `sweep`: trials per hour of a
PPO CartPole sweep through `jaxlearn.sweep`, batched in one vmapped call against one trial at a
time.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from typing import Any

from jaxlearn.bench.rows import (
    ENV_NAME,
    EXPERIMENTS,
    FINAL_FRACTION,
    ROOT,
    Emitter,
    compile_and_time,
    error_text,
    log,
    memory_fields,
    timing_fields,
)

QUICK_TIMESTEPS = 50_000


def count_optimizer_steps(state: Any) -> int | None:
    """Gradient updates done, read from the first Adam state's `count` (seed 0), if any."""
    import jax
    import numpy as np
    import optax

    adam = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(x, optax.ScaleByAdamState)
    ]
    if not adam:
        return None
    return int(np.asarray(adam[0].count).reshape(-1)[0])


def algo_config(algo: str, quick: bool, timesteps: int | None = None) -> tuple[Any, Any, str]:
    """(run_cfg, algo_cfg, config_file) from experiments/{algo}_cartpole.yaml (+ quick budget,
    or `timesteps` env steps per seed when given)."""
    from jaxlearn.runner import resolve_config

    path = EXPERIMENTS[algo]
    overrides = {"total_timesteps": QUICK_TIMESTEPS} if quick else {}
    if timesteps is not None:
        overrides = {"total_timesteps": timesteps}
    run_cfg, cfg = resolve_config(config_file=path, overrides=overrides)
    return run_cfg, cfg, path


def bench_algo(
    algo: str, seeds: list[int], args: argparse.Namespace, emit: Emitter
) -> list[dict[str, Any]]:
    """Train `algo` end to end (one jit) for each seed count; returns the jaxlearn rows."""
    import jax
    import numpy as np

    from jaxlearn.algos import ALGOS, make_train_fn
    from jaxlearn.bench.side_by_side import final_returns
    from jaxlearn.config import to_dict

    bench = f"{algo}_e2e"
    timesteps = args.dqn_timesteps if algo == "dqn" else args.ppo_timesteps
    run_cfg, cfg, path = algo_config(algo, args.quick, timesteps)
    _, make_learner = ALGOS[algo]
    learner = make_learner(cfg)
    train = make_train_fn(learner)
    steps_per_seed = learner.num_updates * learner.env_steps_per_update
    config = to_dict(cfg)
    rows = []
    for num_seeds in seeds:
        log(f"{bench} jaxlearn {num_seeds} seed(s) x {steps_per_seed:,} env steps")
        base = {
            "bench": bench,
            "impl": "jaxlearn",
            "env": cfg.env,
            "num_seeds": num_seeds,
            "config_file": os.path.relpath(path, ROOT),
        }
        if num_seeds == 1:
            fn, make_args = train, lambda: (jax.random.key(run_cfg.seed),)
        else:
            fn = jax.vmap(train)
            make_args = lambda s=num_seeds: (jax.random.split(jax.random.key(run_cfg.seed), s),)
        try:
            t = compile_and_time(fn, make_args, what=base)
        except Exception as e:
            emit({**base, "error": error_text(e)})
            traceback.print_exc()
            continue
        state, metrics = t.output
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        if num_seeds == 1:
            metrics = {k: v[None] for k, v in metrics.items()}
        per_seed = final_returns(metrics, FINAL_FRACTION)
        grad_updates = count_optimizer_steps(state)
        total = num_seeds * steps_per_seed
        row = {
            **base,
            "total_timesteps": steps_per_seed,
            "num_updates": learner.num_updates,
            "env_steps_per_update": learner.env_steps_per_update,
            "total_env_steps": total,
            **timing_fields(t),
            "env_steps_per_second": total / t.run_seconds,
            "env_steps_per_second_per_agent": steps_per_seed / t.run_seconds,
            "final_return_mean": float(np.nanmean(per_seed)) if per_seed.size else None,
            "final_return_min": float(np.nanmin(per_seed)) if per_seed.size else None,
            "final_return_kind": f"training episodes, last {FINAL_FRACTION:.0%} of updates",
            "grad_updates_per_seed": grad_updates,
            "grad_updates_per_env_step": (
                grad_updates / steps_per_seed if grad_updates is not None else None
            ),
            **memory_fields(),
            "config": config,
        }
        rows.append(emit(row))
        del t, state, metrics
    return rows


def skip_reason_dqn() -> str | None:
    from jaxlearn.algos import ALGOS

    if "dqn" not in ALGOS:
        return f"'dqn' is not in jaxlearn.algos.ALGOS (has: {', '.join(sorted(ALGOS))})"
    if not os.path.isfile(EXPERIMENTS["dqn"]):
        return f"{os.path.relpath(EXPERIMENTS['dqn'], ROOT)} does not exist"
    return None


def bench_sweep(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    """Trials per hour of a PPO CartPole sweep through `jaxlearn.sweep`: the same trials in
    batches of B (one vmapped call per batch) and one at a time (batch_size 1). Random
    sampler, no pruning, a throwaway sqlite study; compile time included, since a sweep
    pays it too (once per program: one for the batch, one for single trials)."""
    import tempfile

    from jaxlearn import sweep

    trials = args.sweep_trials or (2 if args.quick else 16)
    steps = 8_192 if args.quick else 100_000
    raw = {
        "base": EXPERIMENTS["ppo"],
        "config": {"total_timesteps": steps, "eval_episodes": 0},
        "num_trials": trials,
        "pruner": "none",
        "sampler": "random",
        "num_chunks": 4,
        "space": {
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
            "ent_coef": {"low": 0.0, "high": 0.05},
        },
    }
    rows = {}
    for mode, batch in (("batched", trials), ("one_at_a_time", 1)):
        base = {
            "bench": "sweep",
            "impl": "jaxlearn",
            "mode": mode,
            "algo": "ppo",
            "env": ENV_NAME,
            "trials": trials,
            "batch_size": batch,
            "total_timesteps_per_trial": steps,
        }
        log(f"sweep: {trials} PPO trials, {mode} (batch {batch})")
        try:
            spec = sweep.spec_from_dict({**raw, "batch_size": batch})
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                summary = sweep.run(spec, os.path.join(d, "sweep"), log=lambda s: None)
                wall = time.perf_counter() - t0
        except Exception as e:
            emit({**base, "error": error_text(e)})
            continue
        row = {
            **base,
            "wall_seconds": wall,
            "trials_per_hour": trials * 3600.0 / wall,
            "env_steps_per_second": trials * steps / wall,
            "compiles": summary["compiles"],
            "trials_complete": summary["trials"]["complete"],
            "best_final_return": summary.get("best", {}).get("value"),
            **memory_fields(),
        }
        rows[mode] = emit(row)
    if len(rows) == 2:
        emit(
            {
                "bench": "sweep",
                "impl": "ratio",
                "trials": trials,
                "batched_over_one_at_a_time": rows["batched"]["trials_per_hour"]
                / rows["one_at_a_time"]["trials_per_hour"],
            }
        )
