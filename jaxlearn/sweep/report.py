"""What a sweep tells people: progress lines while it runs, and its files when it stops.

Progress is plain text, one line per chunk and one per trial when a batch ends, each with
the best value so far and its trial. The files (`write_reports`): results.csv (one row per
trial), objective.png (values by trial and the best so far), best_config.yaml (ready for
`train.py --config`) and summary.json.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from jaxlearn.config import to_dict
from jaxlearn.sweep.folder import BEST_FILE, PLOT_FILE, RESULTS_FILE, SUMMARY_FILE
from jaxlearn.sweep.spec import BASE_OBJECTIVES, SweepSpec
from jaxlearn.sweep.trials import trial_config

# ---- progress lines ------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def chunk_label(objective: str) -> str:
    """What a trial reports after each chunk: its mean episode return over the chunk, or the
    chunk's mean of the objective's episode metric."""
    if objective in BASE_OBJECTIVES:
        return "chunk mean return"
    return f"chunk mean {objective}"


def format_values(values: dict[int, tuple[float | None, str]]) -> str:
    """`{trial: (value, note)}` -> '#3 45.2, #4 30.1 (pruned), #5 - (failed)' by trial."""
    parts = []
    for number in sorted(values):
        value, note = values[number]
        parts.append(f"#{number} {_num(value)}" + (f" ({note})" if note else ""))
    return ", ".join(parts)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best complete trial, or None before one completes."""
    try:
        return study.best_trial
    except ValueError:
        return None


def best_so_far(study: optuna.Study, objective: str) -> str:
    """'; best so far: trial 3, final_return_mean 195' (empty before a trial completes)."""
    best = best_trial(study)
    if best is None:
        return ""
    return f"; best so far: trial {best.number}, {objective} {_num(best.value)}"


def batch_lines(spec: SweepSpec, batch: int, outcomes: list, study: optuna.Study) -> list[str]:
    """The lines printed when a batch ends: each trial's result, then the best so far.

    Args:
        batch: the batch's number (from 1).
        outcomes: the batch's `batch.Outcome`s (any order).
    """
    best = best_trial(study)
    lines = [f"[sweep] batch {batch} done:"]
    for o in sorted(outcomes, key=lambda o: o.number):
        if o.state == "complete":
            text = f"{spec.objective} {_num(o.value)}"
            if best is not None and best.number == o.number:
                text += " (new best)"
        elif o.state == "pruned":
            text = f"pruned {o.detail} ({chunk_label(spec.objective)} {_num(o.value)})"
        else:
            text = f"failed: {o.detail}"
        lines.append(f"  trial {o.number}: {text}")
    if best is None:
        lines.append("[sweep] best so far: none (no trial has completed yet)")
    else:
        lines.append(
            f"[sweep] best so far: trial {best.number}, {spec.objective} {_num(best.value)} "
            f"({spec.direction}), params {json.dumps(best.params)}"
        )
    return lines


# ---- files ---------------------------------------------------------------------------------


def write_reports(spec: SweepSpec, folder: str, study: optuna.Study, compiles: int) -> dict:
    """results.csv, objective.png, best_config.yaml and summary.json in `folder`.
    Returns the summary."""
    trials = study.get_trials(deepcopy=False)
    names = [p.name for p in spec.space]
    # a finished trial's final task metrics (success, collisions, ...), whatever the objective
    metrics = sorted({k for t in trials for k in t.user_attrs.get("final_episode_metrics", {})})
    with open(os.path.join(folder, RESULTS_FILE), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["number", "state", "value", "duration_s", "last_intermediate", *names, *metrics]
        )
        for t in trials:
            dur = t.duration.total_seconds() if t.duration is not None else ""
            last = (
                t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else ""
            )
            value = "" if t.value is None else t.value
            final = t.user_attrs.get("final_episode_metrics", {})
            row = [t.number, t.state.name, value, dur, last, *[t.params.get(n, "") for n in names]]
            w.writerow(row + [final.get(k, "") for k in metrics])
    counts = {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "fail": sum(t.state == TrialState.FAIL for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }
    summary: dict[str, Any] = {"folder": folder, "trials": counts, "compiles": compiles}
    if counts["complete"]:
        best = study.best_trial
        _write_best_config(spec, folder, best)
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
        _plot(spec, folder, trials)
    with open(os.path.join(folder, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _write_best_config(spec: SweepSpec, folder: str, best: optuna.trial.FrozenTrial) -> None:
    cfg = trial_config(spec, best.params)
    run = to_dict(dataclasses.replace(spec.run_cfg, num_seeds=spec.seeds_per_trial))
    run = {k: v for k, v in run.items() if k not in ("init_from",) or v is not None}
    header = (
        f"# Best trial {best.number} of sweep {spec.name} ({folder}):\n"
        f"# {spec.objective} = {best.value:.6g} ({spec.direction}), "
        f"params {json.dumps(best.params)}\n"
        "# Ready for: python scripts/train.py --config THIS_FILE\n"
    )
    body = yaml.safe_dump({**run, **to_dict(cfg)}, sort_keys=False)
    with open(os.path.join(folder, BEST_FILE), "w") as f:
        f.write(header + body)


def _plot(spec: SweepSpec, folder: str, trials: list) -> None:
    import matplotlib  # loaded only here: choosing its backend is the caller's business

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", s=18)
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            label="pruned (last report)",
            s=18,
        )
    best, xs, ys = None, [], []
    better = max if spec.direction == "maximize" else min
    for t in sorted(done, key=lambda t: t.number):
        best = t.value if best is None else better(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="k", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.objective)
    ax.set_title(f"Sweep {spec.name}: {spec.algo} on {spec.algo_cfg.env}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, PLOT_FILE), dpi=100)
    plt.close(fig)
