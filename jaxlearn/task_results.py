"""Task metrics per seed for the results table: what a task env's agent achieved at the end.

The returns of the task envs (navigation, exploration, cooperative) are sums of reward
components whose scale changes with the curriculum stage, so they do not say whether a seed
solved its task. This module reduces the training metrics of a vmapped run to, per seed,
the mean per finished episode of each task metric (`success`, `collisions`, `coverage`,
`cooperation`: the env's `task_metrics`) over the last `fraction` of updates, and the
curriculum stage each seed ended in; and writes them as `task_metrics.csv` rows and a
Markdown table. Reward components are left out (they are in each run's TensorBoard logs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlearn.sinks import episode_extra_means, is_episode_sum, return_window

STAGE = "stage"  # the metric row holding the curriculum stage each seed ended in
LOWER_IS_BETTER = frozenset({"collisions"})  # the worst seed of these is the highest
CSV_COLUMNS = ("config", "metric", "mean", "worst", "best", "per_seed")


def is_task_key(key: str) -> bool:
    """Training metrics this module reads: `episode_<task metric>_sum`, `curriculum_stage`."""
    if key == "curriculum_stage":
        return True
    return is_episode_sum(key) and not key.startswith("episode_reward_")


def per_seed(
    metrics: Mapping[str, np.ndarray], fraction: float, stage_names: Sequence[str] = ()
) -> dict[str, Any]:
    """`{metric: [S] float64}` over the last `fraction` of the `[S, num_updates]` metrics (NaN
    for a seed with no finished episode there), plus `STAGE: tuple of S names` when the
    metrics hold `curriculum_stage` (the stage at the last update)."""
    window = return_window(np.shape(metrics["episode_count"])[1], fraction)
    last = {
        k: np.asarray(v, np.float64)[:, -window:]
        for k, v in metrics.items()
        if k == "episode_count" or is_task_key(k)
    }
    out: dict[str, Any] = dict(sorted(episode_extra_means(last, axis=1).items()))
    if "curriculum_stage" in metrics:
        final = np.asarray(metrics["curriculum_stage"])[:, -1].astype(int)
        out[STAGE] = tuple(stage_names[i] if i < len(stage_names) else str(i) for i in final)
    return out


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.3f}"


def _row(*values: str) -> dict[str, str]:
    return dict(zip(CSV_COLUMNS, values, strict=True))


def rows(config: str, task: Mapping[str, Any], stage_names: Sequence[str] = ()) -> list[dict]:
    """CSV rows (`CSV_COLUMNS`) of one config's `per_seed` result, the stage first. The worst
    seed is the lowest (the highest for `LOWER_IS_BETTER`; a NaN seed is the worst); a stage
    row ranks names by their order in `stage_names` and has no mean."""
    out = []
    if STAGE in task:
        names = list(task[STAGE])
        rank = {name: i for i, name in enumerate(stage_names)}
        order = sorted(names, key=lambda name: rank.get(name, -1))
        out.append(_row(config, STAGE, "-", order[0], order[-1], ";".join(names)))
    for metric, values in task.items():
        if metric == STAGE:
            continue
        values = np.asarray(values, np.float64)
        low = metric in LOWER_IS_BETTER
        if np.isnan(values).any():
            mean, worst = float("nan"), float("nan")
            best = np.nanmin(values, initial=np.inf) if low else np.nanmax(values, initial=-np.inf)
        else:
            mean = values.mean()
            worst, best = (values.max(), values.min()) if low else (values.min(), values.max())
        per = ";".join(_fmt(v) for v in values)
        out.append(_row(config, metric, _fmt(mean), _fmt(worst), _fmt(best), per))
    return out


def merge(old: list[dict[str, str]], new: Mapping[str, list[dict]]) -> list[dict[str, Any]]:
    """`old` rows with every row of each config in `new` replaced by that config's new rows
    (a config re-run without task metrics loses its old ones), sorted by config name."""
    kept = [row for row in old if row["config"] not in new]
    added = [row for config_rows in new.values() for row in config_rows]
    return sorted(kept + added, key=lambda row: row["config"])  # stable: metric order kept


def markdown_table(task_rows: list[dict[str, Any]], fraction: float) -> str:
    """The task rows as a Markdown table with its heading sentence; "" when there are none."""
    if not task_rows:
        return ""
    head = (
        f"Task metrics per seed: mean per finished training episode over the last "
        f"{fraction:.0%} of updates (success and cooperation in [0, 1], collisions per "
        "episode, coverage as a fraction of the free cells); stage: the curriculum stage at "
        "the end. Worst = the lowest seed (the highest for collisions).\n\n"
        "| config | metric | mean / worst / best | per seed |\n|---|---|---|---|\n"
    )
    lines = [
        f"| `{r['config']}` | {r['metric']} | {r['mean']} / **{r['worst']}** / {r['best']} | "
        f"{r['per_seed'].replace(';', ', ')} |"
        for r in task_rows
    ]
    return head + "\n".join(lines) + "\n"
