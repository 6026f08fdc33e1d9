"""Host-side logging of stacked per-update metrics: TensorBoard, final returns, the curve plot.

Metrics arrive from the device as dicts of arrays `[num_seeds, num_updates]`. Episode
metrics are sums and counts (`episode_return_sum`, `episode_count`, ...), so means over
updates and seeds are exact however episodes fall across updates.
"""

from __future__ import annotations

import numpy as np

_EPISODE_KEYS = {"episode_return_sum", "episode_length_sum", "episode_count"}
CURVE_FILE = "curve.csv"  # per-update mean episode return over seeds, in the run folder


def write_curve(path: str, metrics: dict[str, np.ndarray], steps_per_update: int) -> None:
    """CSV `update,env_steps,episode_return_mean,episodes`: one row per update (all seeds
    pooled; the return is empty where no episode finished)."""
    ret, _ = episode_means(metrics, axis=0)
    count = metrics["episode_count"].sum(axis=0)
    with open(path, "w") as f:
        f.write("update,env_steps,episode_return_mean,episodes\n")
        for i, (r, n) in enumerate(zip(ret, count, strict=True)):
            value = "" if not np.isfinite(r) else f"{float(r):.6g}"
            f.write(f"{i + 1},{(i + 1) * steps_per_update},{value},{int(n)}\n")


def episode_means(metrics: dict[str, np.ndarray], axis=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean return, mean length) of finished episodes, reduced over `axis` (NaN if none)."""
    n = metrics["episode_count"].sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = np.where(n > 0, metrics["episode_return_sum"].sum(axis=axis) / n, np.nan)
        length = np.where(n > 0, metrics["episode_length_sum"].sum(axis=axis) / n, np.nan)
    return ret, length


def is_episode_sum(key: str) -> bool:
    """Per-episode sums of task metrics and reward components: `episode_<name>_sum`."""
    return key.startswith("episode_") and key.endswith("_sum") and key not in _EPISODE_KEYS


def episode_extra_means(metrics: dict[str, np.ndarray], axis=None) -> dict[str, np.ndarray]:
    """Mean per finished episode of each `episode_<name>_sum` metric, by `<name>` (NaN if none)."""
    n = metrics["episode_count"].sum(axis=axis)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, v in metrics.items():
            if is_episode_sum(key):
                out[key[8:-4]] = np.where(n > 0, v.sum(axis=axis) / n, np.nan)
    return out


def final_episode_metrics(metrics: dict[str, np.ndarray], fraction: float = 0.05) -> dict:
    """Means per episode of the task metrics and reward components over the last `fraction`
    of updates (all seeds pooled): `{name: float}`; empty for envs without them."""
    num_updates = metrics["episode_count"].shape[1]
    window = max(1, int(np.ceil(fraction * num_updates)))
    last = {k: v[:, -window:] for k, v in metrics.items()}
    return {k: float(v) for k, v in episode_extra_means(last).items()}


def final_returns(metrics: dict[str, np.ndarray], fraction: float = 0.05) -> np.ndarray:
    """Per-seed mean episode return over the last `fraction` of updates: `[num_seeds]`.

    If no episode finished in that window for a seed, the window grows backwards until one
    did (NaN only when the seed never finished an episode).
    """
    sums = metrics["episode_return_sum"]
    counts = metrics["episode_count"]
    num_updates = sums.shape[1]
    window = max(1, int(np.ceil(fraction * num_updates)))
    out = np.full(sums.shape[0], np.nan)
    for s in range(sums.shape[0]):
        c = np.cumsum(counts[s, ::-1])
        w = window if c[window - 1] > 0 else int(np.searchsorted(c, 0, side="right")) + 1
        if w <= num_updates and counts[s, -w:].sum() > 0:
            out[s] = sums[s, -w:].sum() / counts[s, -w:].sum()
    return out


class MetricLogger:
    """Writes per-update scalars (means over seeds) to TensorBoard under `run_dir`."""

    def __init__(self, run_dir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=run_dir)

    def log_chunk(self, metrics: dict[str, np.ndarray], first_step: int, steps_per_update: int):
        """Log a chunk of `[num_seeds, K]` metrics whose first update ends at `first_step + spu`."""
        k = metrics["episode_count"].shape[1]
        ret, length = episode_means(metrics, axis=0)  # [K]
        extras = {name: v for name, v in episode_extra_means(metrics, axis=0).items()}
        others = {}
        for key, v in metrics.items():
            if key in _EPISODE_KEYS or is_episode_sum(key):
                continue
            tag = f"curriculum/{key[11:]}" if key.startswith("curriculum_") else f"train/{key}"
            others[tag] = v.mean(axis=0)
        for i in range(k):
            step = first_step + (i + 1) * steps_per_update
            if not np.isnan(ret[i]):
                self.writer.add_scalar("episode/return", float(ret[i]), step)
                self.writer.add_scalar("episode/length", float(length[i]), step)
                for name, v in extras.items():
                    group = "reward" if name.startswith("reward_") else "episode"
                    tag = name[7:] if group == "reward" else name
                    self.writer.add_scalar(f"{group}/{tag}", float(v[i]), step)
            for tag, v in others.items():
                self.writer.add_scalar(tag, float(v[i]), step)

    def close(self):
        self.writer.close()


def smoothed_curve(
    metrics: dict[str, np.ndarray], num_points: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed mean return in `num_points` equal windows of updates: (index_end [P], [S, P])."""
    num_updates = metrics["episode_count"].shape[1]
    edges = np.linspace(0, num_updates, min(num_points, num_updates) + 1).astype(int)
    curves = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        window = {k: v[:, a:b] for k, v in metrics.items() if k in _EPISODE_KEYS}
        curves.append(episode_means(window, axis=1)[0])
    return edges[1:], np.stack(curves, axis=1)


def plot_learning_curve(
    metrics: dict[str, np.ndarray], steps_per_update: int, path: str, title: str = ""
) -> None:
    """Save mean episode return against env steps, with the min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends, curves = smoothed_curve(metrics)
    x = ends * steps_per_update
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
            lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
    ax.plot(x, mean, label="mean over seeds")
    if curves.shape[0] > 1:
        ax.fill_between(x, lo, hi, alpha=0.25, label="min-max over seeds")
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curriculum(
    metrics: dict[str, np.ndarray],
    steps_per_update: int,
    stage_names: list[str],
    path: str,
    title: str = "",
) -> None:
    """Save the curriculum stage and the windowed success rate against env steps (per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage = metrics["curriculum_stage"]  # [S, U]
    rate = metrics["curriculum_success_rate"]
    x = (np.arange(stage.shape[1]) + 1) * steps_per_update
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 5), dpi=100, sharex=True)
    for s in range(stage.shape[0]):
        ax1.step(x, stage[s], where="post", alpha=0.8)
        ax2.plot(x, rate[s], alpha=0.8)
    ax1.set_yticks(range(len(stage_names)), stage_names)
    ax1.set_ylabel("stage")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("success rate (window)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("env steps (per seed)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
