"""A finished run's reports: curve.csv, the plots, LoRA adapters, then metrics.json.

Every return figure comes from `jaxlearn.sinks.returns` (one definition); metrics.json is
written last and atomically, since its presence marks the run finished.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from jaxlearn import lora, resources, rundir
from jaxlearn.algos.base import Learner
from jaxlearn.placement import Placement, barrier, gather
from jaxlearn.sinks import (
    final_episode_metrics,
    plot_curriculum,
    plot_learning_curve,
    replacing,
    returns,
    write_curve,
)


def memory_scalars(memory: resources.Estimate, state: Any) -> dict[str, float]:
    """TensorBoard scalars: the estimated device bytes, the train state's measured bytes,
    and the device's peak bytes in use where the backend reports it (GPUs and TPUs)."""
    out = {
        "memory/estimated_device_bytes": float(memory.device_bytes),
        "memory/state_bytes": float(sum(x.nbytes for x in jax.tree.leaves(state))),
    }
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["memory/device_peak_bytes"] = float(stats["peak_bytes_in_use"])
    return out


def finish(
    folder: rundir.RunFolder,
    run_cfg: Any,
    algo_cfg: Any,
    learner: Learner,
    place: Placement,
    state: Any,
    stacked: dict[str, np.ndarray],
    run: dict[str, Any],
) -> dict[str, Any]:
    """Write the finished run's reports (process 0) and return metrics.json's content.

    Args:
        stacked: every update's metrics, `[num_seeds, num_updates]`.
        run: what the loop measured (`run_seconds`, `compile_seconds`, `timed_updates`,
            `num_chunks`, `trainable`, `num_params`, `window`, `mode`, `source`,
            `memory`, `log`).
    """
    chief = jax.process_index() == 0
    num_updates, spu = learner.num_updates, learner.env_steps_per_update
    curve = returns(stacked, run["window"])
    source, memory = run["source"], run["memory"]
    summary = {
        "algo": run_cfg.algo,
        "env": algo_cfg.env,
        "num_seeds": run_cfg.num_seeds,
        "seed": run_cfg.seed,
        "total_timesteps": num_updates * spu,
        "num_updates": num_updates,
        "num_chunks": run["num_chunks"],
        "env_steps_per_second": run_cfg.num_seeds
        * run["timed_updates"]
        * spu
        / max(run["run_seconds"], 1e-9),
        "run_seconds": run["run_seconds"],
        "compile_seconds": run["compile_seconds"],
        "memory_estimate": None if memory is None else memory.to_dict(),
        "final_return_mean": float(curve.mean[-1]),
        "final_return_min": float(curve.min[-1]),
        "final_return_per_seed": [float(x) for x in curve.per_seed[:, -1]],
        "final_episode_metrics": final_episode_metrics(stacked, run_cfg.final_fraction),
        "resumed": run["mode"] == "resume",
        "device": str(place.devices[0].device_kind),
        "num_devices": len(place.devices),
        "data_parallel": place.data_parallel,
        "across_processes": place.across,
        "jax_version": jax.__version__,
        "parameters": {"trainable": run["trainable"], "total": run["num_params"]},
        "init_from": None
        if source is None
        else {"run_dir": source.run_dir, "checkpoint": source.checkpoint, "step": source.step},
    }
    if lora.has_adapters(state.params):  # the adapters of each of this process's seeds
        params, seeds = place.host_params(state.params)
        for j, seed in enumerate(seeds):
            lora.save_adapters(
                folder.adapters_dir(seed),
                jax.tree.map(lambda x: x[j], params),  # noqa: B023
                {"algo": run_cfg.algo, "env": algo_cfg.env, "update": num_updates},
            )
    curriculum = getattr(learner, "curriculum", None)
    curriculum_state = None
    if curriculum is not None:
        curriculum_state = gather(jax.device_get(state.curriculum))
    summary["num_processes"] = jax.process_count()
    barrier("finished")
    summary["run_dir"] = folder.path
    if not chief:  # process 0 writes the run folder's reports
        return summary
    if curriculum is not None:
        summary["curriculum"] = curriculum_summary(curriculum, curriculum_state, spu)
        plot_curriculum(
            stacked,
            spu,
            list(curriculum.config.names),
            folder.curriculum_file,
            title=f"Curriculum on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))",
        )
    write_curve(folder.curve_file, stacked, spu, run_cfg.final_fraction)
    plot_learning_curve(
        curve,
        spu,
        folder.learning_curve_file,
        title=f"{run_cfg.algo.upper()} on {algo_cfg.env} ({run_cfg.num_seeds} seed(s))",
    )
    written = {k: v for k, v in summary.items() if k != "run_dir"}
    with replacing(folder.metrics_file) as f:
        json.dump(written, f, indent=2)
    run["log"](
        f"[{run_cfg.algo} {algo_cfg.env}] done: final return {summary['final_return_mean']:.2f} "
        f"(worst seed {summary['final_return_min']:.2f}), "
        f"{summary['env_steps_per_second']:,.0f} env steps/s; wrote {folder.path}"
    )
    return summary


def curriculum_summary(curriculum: Any, c: Any, steps_per_update: int) -> dict[str, Any]:
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
