"""Learning results over many seeds: train a config on N vmapped seeds, then write a table.

`train_config` runs one shipped config on `num_seeds` seeds in one jitted, vmapped program and
returns a `ConfigResult`: each seed's final training return (mean episode return over the
last `final_fraction` of updates, exploration included) and its greedy evaluation return
after training (mean over `eval_episodes` episodes), plus the learning curve and, for the
task envs, each seed's task metrics and final curriculum stage (`task_results`). `write_*` turn
results into the Markdown table, the CSV and one plot per config. `REFERENCES` holds the
published figures we compare with, and whether each is a training or a greedy return.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxlearn import algos, task_results
from jaxlearn.sinks import final_returns, replacing, smoothed_curve


@dataclasses.dataclass(frozen=True)
class Reference:
    """A published result to show beside ours."""

    source: str  # who reports it, and which implementation
    value: float  # mean final return
    spread: str  # how the source states its spread ("± 2 over 3 seeds"), or ""
    kind: str  # "training" (episodes while learning, exploration on) or "evaluation"
    cite: str  # where the figure comes from


_CLEANRL_DQN = Reference(
    "CleanRL dqn_jax.py",
    498.0,
    "± 2",
    "training",
    "CleanRL DQN docs (CartPole-v1, 500k steps), as quoted in issue #24",
)
_PUREJAXRL_DQN = Reference(
    "PureJaxRL dqn.py",
    499.0,
    "mean over 128 seeds",
    "training",
    "PureJaxRL DQN CartPole-v1 (10 envs, 500k steps), as quoted in issue #24",
)
# Keyed by config name (the YAML file's stem). Figures quoted in issue #24 were not re-run here.
REFERENCES: dict[str, tuple[Reference, ...]] = {
    "ppo_cartpole": (
        Reference(
            "CleanRL ppo.py",
            490.0,
            "± 6",
            "training",
            "CleanRL PPO docs (CartPole-v1, 500k steps), as quoted in issue #24",
        ),
    ),
    "dqn_cartpole": (_CLEANRL_DQN, _PUREJAXRL_DQN),
    "ppo_pendulum": (
        Reference(
            "gymnax-blines PPO",
            -130.0,
            "",
            "evaluation",
            "gymnax-blines Pendulum-v1 PPO, as quoted in issue #24",
        ),
    ),
}


@dataclasses.dataclass(frozen=True)
class ConfigResult:
    """One config trained on several seeds."""

    name: str  # config file stem
    env: str
    algo: str
    budget: int  # env steps per seed
    train: np.ndarray  # [S] final training return per seed
    greedy: np.ndarray  # [S] greedy evaluation return per seed (mean over episodes)
    curve_steps: np.ndarray  # [P] env steps at the end of each curve window
    curve: np.ndarray  # [S, P] mean training return per window (NaN: no episode ended)
    compile_s: float
    run_s: float
    device: str
    task: dict[str, Any] = dataclasses.field(default_factory=dict)  # `task_results.per_seed`
    stage_names: tuple[str, ...] = ()  # the curriculum's stages in order (none: no curriculum)

    @property
    def seeds(self) -> int:
        return int(self.train.shape[0])


SIMD = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))  # /proc/cpuinfo flag, name


def device_name() -> str:
    """The first device in words: the GPU/TPU kind, or the CPU model, its core count and its
    widest vector unit (XLA's CPU code, and so the float rounding of a run, depends on it)."""
    d = jax.devices()[0]
    if d.platform != "cpu":
        return f"{d.device_kind} ({d.platform}, {jax.device_count()} device(s))"
    model, flags = "CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    simd = next((name for flag, name in SIMD if flag in flags), None)
    return f"{model} ({os.cpu_count()} cores, {simd + ', ' if simd else ''}CPU)"


def train_config(
    name: str, run_cfg: Any, algo_cfg: Any, num_seeds: int, eval_episodes: int
) -> ConfigResult:
    """Train `algo_cfg` on `num_seeds` seeds in one vmapped program and evaluate each greedily.

    Seed keys are the runner's (`split(key(seed), num_seeds)`), so seed i here is seed i of
    `scripts/train.py --num-seeds N`. Compile time and run time are measured apart.
    """
    _, make_learner = algos.ALGOS[run_cfg.algo]
    learner = make_learner(algo_cfg)
    train = algos.make_train_fn(learner)

    def one_seed(key, eval_key):
        state, metrics = train(key)
        returns = learner.greedy_episodes(state, eval_key, eval_episodes)["returns"]
        keep = {k for k in metrics if k in algos.EPISODE_METRICS or task_results.is_task_key(k)}
        return {k: metrics[k] for k in keep}, returns

    keys = jax.random.split(jax.random.key(run_cfg.seed), num_seeds)
    eval_keys = jax.random.split(jax.random.fold_in(jax.random.key(run_cfg.seed), 1), num_seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(one_seed)).lower(keys, eval_keys).compile()
    t1 = time.perf_counter()
    metrics, returns = jax.block_until_ready(compiled(keys, eval_keys))
    t2 = time.perf_counter()
    metrics = {k: np.asarray(v) for k, v in metrics.items()}  # [S, num_updates]
    ends, curve = smoothed_curve(metrics)
    curriculum = getattr(learner, "curriculum", None)
    stage_names = tuple(curriculum.config.names) if curriculum is not None else ()
    return ConfigResult(
        name=name,
        env=algo_cfg.env,
        algo=run_cfg.algo,
        budget=learner.num_updates * learner.env_steps_per_update,
        train=final_returns(metrics, run_cfg.final_fraction),
        greedy=np.asarray(returns, np.float64).mean(axis=1),
        curve_steps=ends * learner.env_steps_per_update,
        curve=curve,
        compile_s=t1 - t0,
        run_s=t2 - t1,
        device=device_name(),
        task=task_results.per_seed(metrics, run_cfg.final_fraction, stage_names),
        stage_names=stage_names,
    )


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.1f}"


def _seconds(x: float) -> str:
    """Three significant digits, never in exponent form: 9.41, 883, 3820."""
    return f"{x:.3g}" if x < 1000 else f"{float(f'{x:.3g}'):.0f}"


def _seq(values: np.ndarray, sep: str) -> str:
    return sep.join(_fmt(v) for v in values)


def _stats(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, worst, best); NaN seeds (no finished episode) count as the worst."""
    if np.isnan(values).any():
        return float("nan"), float("nan"), float(np.nanmax(values, initial=np.nan))
    return float(values.mean()), float(values.min()), float(values.max())


def reference_text(name: str) -> str:
    """`source value spread (kind)` for each reference of a config, or `-`."""
    refs = REFERENCES.get(name, ())
    parts = [f"{r.source} {r.value:g} {r.spread} ({r.kind})".replace("  ", " ") for r in refs]
    return "; ".join(parts) or "-"


TASK_CSV = "task_metrics.csv"  # per config and task metric: `task_results.CSV_COLUMNS`
CSV_COLUMNS = (
    "config",
    "env",
    "algo",
    "budget",
    "seeds",
    "mean",
    "worst",
    "best",
    "train_returns",
    "greedy_mean",
    "greedy_worst",
    "greedy_best",
    "greedy_returns",
    "compile_s",
    "run_s",
    "device",
    "reference",
)


def csv_row(r: ConfigResult) -> dict[str, Any]:
    mean, worst, best = _stats(r.train)
    g_mean, g_worst, g_best = _stats(r.greedy)
    return {
        "config": r.name,
        "env": r.env,
        "algo": r.algo,
        "budget": r.budget,
        "seeds": r.seeds,
        "mean": _fmt(mean),
        "worst": _fmt(worst),
        "best": _fmt(best),
        "train_returns": _seq(r.train, ";"),
        "greedy_mean": _fmt(g_mean),
        "greedy_worst": _fmt(g_worst),
        "greedy_best": _fmt(g_best),
        "greedy_returns": _seq(r.greedy, ";"),
        "compile_s": _seconds(r.compile_s),
        "run_s": _seconds(r.run_s),
        "device": r.device,
        "reference": reference_text(r.name),
    }


def read_rows(path: str, columns: tuple[str, ...] = CSV_COLUMNS) -> list[dict[str, str]]:
    """The rows of an existing results.csv (or task_metrics.csv with its `columns`; none if
    there is no file). A file with other columns raises ValueError: it cannot be merged, and
    it is never overwritten."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(
                f"{path} has other columns ({', '.join(reader.fieldnames or ())}) than this "
                "version writes; choose another --out folder"
            )
        return list(reader)


def merge_rows(old: list[dict[str, str]], results: list[ConfigResult]) -> list[dict[str, Any]]:
    """`old` rows with each config in `results` replaced by (or added as) its new row,
    sorted by config name: a run of some configs keeps the others' rows."""
    rows = {row["config"]: row for row in old}
    rows.update({r.name: csv_row(r) for r in results})
    return [rows[name] for name in sorted(rows)]


def write_csv(
    path: str, rows: list[dict[str, Any]], columns: tuple[str, ...] = CSV_COLUMNS
) -> None:
    with replacing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Results rows (`csv_row`, or read back from results.csv) as a Markdown table."""
    head = (
        "| config | env | algo | env steps / seed | seeds | training return mean / worst / "
        "best | training return per seed | greedy return mean / worst / best | greedy return "
        "per seed | compile + run (s) | reference (return kind) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for c in rows:
        train = c["train_returns"].replace(";", ", ")
        greedy = c["greedy_returns"].replace(";", ", ")
        lines.append(
            f"| `{c['config']}` | {c['env']} | {c['algo']} | {int(c['budget']):,} | {c['seeds']} | "
            f"{c['mean']} / **{c['worst']}** / {c['best']} | {train} | "
            f"{c['greedy_mean']} / **{c['greedy_worst']}** / {c['greedy_best']} | "
            f"{greedy} | {c['compile_s']} + {c['run_s']} | {c['reference']} |"
        )
    return head + "\n".join(lines) + "\n"


def write_markdown(
    path: str, rows: list[dict[str, Any]], final_fraction: float, task_rows: Sequence[dict] = ()
) -> None:
    """results.md: the returns table, then the task metrics table when there are task rows."""
    devices = sorted({row["device"] for row in rows})
    with replacing(path) as f:
        f.write(
            f"Device: {', '.join(devices)}. Training return: mean episode return over the "
            f"last {final_fraction:.0%} of updates, exploration included (DQN: epsilon at its "
            "final value). Greedy return: mean over the evaluation episodes of the final "
            "network acting greedily. Worst = the lowest seed.\n\n"
        )
        f.write(markdown_table(rows))
        if task_rows:
            f.write("\n" + task_results.markdown_table(list(task_rows), final_fraction))


def write_curve_csv(path: str, r: ConfigResult) -> None:
    """`env_steps,mean,min,max,seed_0,...`: the plotted curve, one row per window."""
    with replacing(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_steps", "mean", "min", "max"] + [f"seed_{i}" for i in range(r.seeds)])
        mean, lo, hi = _band(r.curve)
        for j, x in enumerate(r.curve_steps):
            values = [mean[j], lo[j], hi[j], *r.curve[:, j]]
            writer.writerow([int(x)] + [_fmt(v) for v in values])


def _band(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min, max over seeds of each window, ignoring seeds with no finished episode."""
    ok = np.isfinite(curve)
    n = ok.sum(axis=0)
    filled = np.where(ok, curve, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, filled.sum(axis=0) / n, np.nan)
    lo = np.where(n > 0, np.where(ok, curve, np.inf).min(axis=0), np.nan)
    hi = np.where(n > 0, np.where(ok, curve, -np.inf).max(axis=0), np.nan)
    return mean, lo, hi


def plot(path: str, r: ConfigResult) -> None:
    """Mean training return and its min-max band over seeds against env steps, with each
    reference as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, lo, hi = _band(r.curve)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(r.curve_steps, mean, label=f"jaxlearn, mean of {r.seeds} seeds (training)")
    ax.fill_between(r.curve_steps, lo, hi, alpha=0.25, label="min-max over seeds")
    for ref, style in zip(REFERENCES.get(r.name, ()), ("--", ":", "-."), strict=False):
        ax.axhline(
            ref.value, ls=style, color="k", lw=1, label=f"{ref.source}: {ref.value:g} ({ref.kind})"
        )
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(f"{r.name}: {r.algo} on {r.env}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(out: str, results: list[ConfigResult], final_fraction: float) -> list[str]:
    """Write results.md, results.csv, task_metrics.csv and `<config>.png` /
    `<config>_curve.csv` for each result into `out`; rows of other configs already in `out`'s
    CSV files are kept (see `merge_rows`). Returns the paths written."""
    os.makedirs(out, exist_ok=True)
    names = ("results.md", "results.csv", TASK_CSV)
    paths = [os.path.join(out, name) for name in names]
    rows = merge_rows(read_rows(paths[1]), results)
    new_task = {r.name: task_results.rows(r.name, r.task, r.stage_names) for r in results}
    task_rows = task_results.merge(read_rows(paths[2], task_results.CSV_COLUMNS), new_task)
    write_markdown(paths[0], rows, final_fraction, task_rows)
    write_csv(paths[1], rows)
    write_csv(paths[2], task_rows, task_results.CSV_COLUMNS)
    for r in results:
        png = os.path.join(out, f"{r.name}.png")
        curve = os.path.join(out, f"{r.name}_curve.csv")
        plot(png, r)
        write_curve_csv(curve, r)
        paths += [png, curve]
    return paths
