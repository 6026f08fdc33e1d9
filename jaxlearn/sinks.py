"""Where a run's figures go, and the one reducer they all come from.

Metrics arrive from the device as dicts of arrays `[num_seeds, num_updates]`. Episode
metrics are sums and counts (`episode_return_sum`, `episode_count`, ...), so means over
updates and seeds are exact however episodes fall across updates.

**The return a user sees** (the terminal, TensorBoard's `episode/return`, `curve.csv`,
`learning_curve.png`, `metrics.json`'s `final_return_mean`, the sweep's objective) is
`returns`: at update u, each seed's mean episode return over its last `window` updates up
to u (widened back to the latest update where that seed finished an episode; NaN before
its first episode), then the mean over seeds (seeds without an episode left out), with
the min and max over seeds beside it. `window` is `return_window(num_updates,
final_fraction)`, so the value at the last update is `final_return_mean`.

The sinks write synchronously on the caller's thread and raise `SinkError` when a write
fails (a full disk, an I/O error, a vanished folder), so a failure stops the run instead
of blocking it; this module knows no run folder (the paths come from `jaxlearn.rundir`).
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

_EPISODE_KEYS = {"episode_return_sum", "episode_length_sum", "episode_count"}


class SinkError(RuntimeError):
    """A sink could not write (ENOSPC, EIO, a vanished folder): the run must stop."""


def _failed(what: str, path: str, e: OSError) -> SinkError:
    return SinkError(f"writing {what} {path} failed: {e.strerror or e}")


# ---- the reducer -----------------------------------------------------------------------------


class Returns(NamedTuple):
    """The return curve of a run: per seed and its summary over seeds, one value per update."""

    per_seed: np.ndarray  # [S, U]
    mean: np.ndarray  # [U] mean over the seeds that finished an episode (NaN if none)
    min: np.ndarray  # [U]
    max: np.ndarray  # [U]


def return_window(num_updates: int, fraction: float) -> int:
    """Updates each return averages over: the last `fraction` of the run's updates, >= 1."""
    return max(1, int(np.ceil(fraction * num_updates)))


def over_seeds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over the leading (seed) axis, NaN seeds left out (NaN if all are)."""
    x = np.asarray(x, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are NaN
        return np.nanmean(x, axis=0), np.nanmin(x, axis=0), np.nanmax(x, axis=0)


def returns(metrics: Mapping[str, np.ndarray], window: int) -> Returns:
    """The one return reducer (see the module docstring): `[S, U]` metrics -> `Returns`.

    Args:
        metrics: `episode_return_sum` and `episode_count`, `[num_seeds, num_updates]`.
        window: updates per seed's mean (`return_window`), widened back per seed to the
            latest update with a finished episode.
    """
    sums = np.asarray(metrics["episode_return_sum"], np.float64)
    counts = np.asarray(metrics["episode_count"], np.float64)
    num_seeds, num_updates = sums.shape
    zero = np.zeros((num_seeds, 1))
    csum = np.concatenate([zero, np.cumsum(sums, axis=1)], axis=1)  # [S, U + 1]
    ccount = np.concatenate([zero, np.cumsum(counts, axis=1)], axis=1)
    idx = np.arange(num_updates)
    latest = np.maximum.accumulate(np.where(counts > 0, idx, -1), axis=1)  # [S, U]
    start = np.clip(np.minimum(idx - window + 1, latest), 0, None)
    n = ccount[:, 1:] - np.take_along_axis(ccount, start, axis=1)
    total = csum[:, 1:] - np.take_along_axis(csum, start, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = np.where(latest >= 0, total / n, np.nan)
    return Returns(per_seed, *over_seeds(per_seed))


def final_returns(metrics: Mapping[str, np.ndarray], fraction: float = 0.05) -> np.ndarray:
    """Per-seed mean episode return over the last `fraction` of updates: `[num_seeds]`.

    If no episode finished in that window for a seed, the window grows backwards until one
    did (NaN only when the seed never finished an episode). The last update of `returns`.
    """
    num_updates = np.shape(metrics["episode_count"])[1]
    return returns(metrics, return_window(num_updates, fraction)).per_seed[:, -1]


def smoothed_curve(
    metrics: Mapping[str, np.ndarray], num_points: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed return (`returns`, over windows of `num_updates / num_points` updates) at
    up to `num_points` updates, the last included: (updates done [P], per seed [S, P])."""
    num_updates = np.shape(metrics["episode_count"])[1]
    points = min(num_points, num_updates)
    ends = np.linspace(0, num_updates, points + 1).astype(int)[1:]
    curve = returns(metrics, max(1, int(np.ceil(num_updates / points))))
    return ends, curve.per_seed[:, ends - 1]


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
    window = return_window(metrics["episode_count"].shape[1], fraction)
    last = {k: v[:, -window:] for k, v in metrics.items()}
    return {k: float(v) for k, v in episode_extra_means(last).items()}


def chunk_scalars(
    metrics: Mapping[str, np.ndarray], curve: Returns, first: int
) -> list[dict[str, float]]:
    """TensorBoard scalars of each update of a chunk of `[S, K]` metrics, whose updates are
    `first .. first + K - 1` of `curve`; the return is the reducer's, the rest means over
    seeds (episode length and task metrics per finished episode, pooled over seeds)."""
    k = metrics["episode_count"].shape[1]
    _, length = episode_means(metrics, axis=0)  # [K]
    extras = episode_extra_means(metrics, axis=0)
    out = []
    for i in range(k):
        u = first + i
        row = {
            "episode/return": curve.mean[u],
            "episode/return_min": curve.min[u],
            "episode/return_max": curve.max[u],
            "episode/length": length[i],
        }
        for name, v in extras.items():
            group = "reward" if name.startswith("reward_") else "episode"
            row[f"{group}/{name[7:] if group == 'reward' else name}"] = v[i]
        for key, v in metrics.items():
            if key in _EPISODE_KEYS or is_episode_sum(key):
                continue
            tag = f"curriculum/{key[11:]}" if key.startswith("curriculum_") else f"train/{key}"
            row[tag] = float(np.mean(v[:, i]))
        out.append({t: float(x) for t, x in row.items() if np.isfinite(x)})
    return out


# ---- curve.csv -------------------------------------------------------------------------------


def write_curve(
    path: str, metrics: dict[str, np.ndarray], steps_per_update: int, fraction: float = 0.05
) -> None:
    """CSV `update,env_steps,episode_return_mean,episode_return_min,episode_return_max,
    episodes`: one row per update, the return from `returns` (empty before any seed finished
    an episode), `episodes` finished at that update over all seeds."""
    count = metrics["episode_count"].sum(axis=0)
    curve = returns(metrics, return_window(len(count), fraction))
    try:
        with open(path, "w") as f:
            f.write(
                "update,env_steps,episode_return_mean,episode_return_min,episode_return_max,"
                "episodes\n"
            )
            for i, n in enumerate(count):
                values = [curve.mean[i], curve.min[i], curve.max[i]]
                cells = ["" if not np.isfinite(v) else f"{float(v):.6g}" for v in values]
                f.write(f"{i + 1},{(i + 1) * steps_per_update},{','.join(cells)},{int(n)}\n")
    except OSError as e:
        raise _failed("the curve", path, e) from e


# ---- TensorBoard -----------------------------------------------------------------------------


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


class EventWriter:
    """TensorBoard scalars in one event file, written and flushed on the caller's thread.

    tensorboardX's `SummaryWriter` writes from a background thread: when that thread dies
    (a full disk), `add_scalar` blocks forever on its queue. Here a failed write raises
    `SinkError` at once. The file format is TensorBoard's (TFRecords of `Event` protos).
    """

    def __init__(self, path: str):
        from tensorboardX.proto import event_pb2, summary_pb2

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.path = path
        try:
            self._file = open(path, "ab")
        except OSError as e:
            raise _failed("TensorBoard events", path, e) from e
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        try:
            self._file.write(_record(event.SerializeToString()))
        except OSError as e:
            raise _failed("TensorBoard events", self.path, e) from e

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write `{tag: value}` at `step` (one event)."""
        summary = self._summary(
            value=[self._summary.Value(tag=t, simple_value=float(v)) for t, v in values.items()]
        )
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise _failed("TensorBoard events", self.path, e) from e

    def close(self) -> None:
        """Flush and close; raises `SinkError` when the flush fails (closed anyway)."""
        if self._file.closed:
            return
        try:
            self.flush()
        finally:
            try:
                self._file.close()
            except OSError:
                pass  # the flush has raised already


def read_events(path: str) -> list:
    """The `Event`s of one event file, up to the first incomplete or damaged record (a
    writer killed mid-write leaves a torn last record)."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    with open(path, "rb") as f:
        data = f.read()
    events, pos = [], 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (n,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        body = data[pos + 12 : pos + 12 + n]
        tail = data[pos + 12 + n : pos + 16 + n]
        if crc != masked_crc32c(header) or len(body) < n or len(tail) < 4:
            break
        if struct.unpack("<I", tail)[0] != masked_crc32c(body):
            break
        events.append(event_pb2.Event.FromString(body))
        pos += 16 + n
    return events


@contextlib.contextmanager
def replacing(path: str, mode: str = "w", **open_kwargs: Any):
    """Write a file beside `path` and rename it over `path` once complete, so a write that
    fails half-way (a full disk) leaves the previous file whole and no partial one."""
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trim_events(paths: Iterable[str], max_step: int) -> int:
    """Drop every event after `max_step` (and any torn last record) from the event files
    `paths`, each rewritten atomically (a temporary file renamed over it); returns how
    many scalar events were dropped. Used on resume: what comes after the restored
    checkpoint is written again."""
    dropped = 0
    for path in paths:
        events = read_events(path)
        kept = [e for e in events if not e.HasField("summary") or e.step <= max_step]
        with open(path, "rb") as f:
            size = len(f.read())
        body = b"".join(_record(e.SerializeToString()) for e in kept)
        if len(kept) == len(events) and len(body) == size:
            continue
        dropped += len(events) - len(kept)
        try:
            with replacing(path, "wb") as f:
                f.write(body)
        except OSError as e:
            raise _failed("TensorBoard events", path, e) from e
    return dropped


# ---- plots -----------------------------------------------------------------------------------


def plot_learning_curve(
    curve: Returns, steps_per_update: int, path: str, title: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Save the return (`returns`) against env steps with the min-max band over seeds;
    returns the drawn (env steps, mean), at most 500 points, the last update included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_updates = len(curve.mean)
    points = np.unique(np.linspace(0, num_updates - 1, min(500, num_updates)).astype(int))
    x = (points + 1) * steps_per_update
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(x, curve.mean[points], label="mean over seeds")
    if curve.per_seed.shape[0] > 1:
        ax.fill_between(
            x, curve.min[points], curve.max[points], alpha=0.25, label="min-max over seeds"
        )
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save_figure(fig, path)
    return x, curve.mean[points]


def _save_figure(fig: Any, path: str) -> None:
    """Write a matplotlib figure to `path` and close it; a failed write is `RunWriteError`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise _failed("the plot", path, e) from e
    finally:
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
    _save_figure(fig, path)
