"""jaxlearn.sinks: the one return reducer against loops written from its definition, the
synchronous TensorBoard writer (round trip, trimming on resume, a full disk raises at once)."""

import errno
import os

import numpy as np
import pytest

from jaxlearn import sinks


def reference_curve(sums, counts, window):
    """Per update u and seed: return / episodes over updates u-window+1..u, widened back one
    update at a time until it holds an episode (NaN before the seed's first); then the mean,
    min and max over the seeds that have a value."""
    num_seeds, num_updates = sums.shape
    per_seed = np.full((num_seeds, num_updates), np.nan)
    for s in range(num_seeds):
        for u in range(num_updates):
            lo = u - window + 1
            while lo > 0 and counts[s, max(lo, 0) : u + 1].sum() == 0:
                lo -= 1
            lo = max(lo, 0)
            n = counts[s, lo : u + 1].sum()
            if n > 0:
                per_seed[s, u] = sums[s, lo : u + 1].sum() / n
    mean, lo_, hi = [], [], []
    for u in range(num_updates):
        vals = [v for v in per_seed[:, u] if not np.isnan(v)]
        mean.append(sum(vals) / len(vals) if vals else np.nan)
        lo_.append(min(vals) if vals else np.nan)
        hi.append(max(vals) if vals else np.nan)
    return per_seed, np.array(mean), np.array(lo_), np.array(hi)


def history(seed=0, num_seeds=4, num_updates=30):
    """Seeds with unequal episode counts: many, few, none for a stretch, none until late."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, (num_seeds, num_updates)).astype(float)
    counts[1] = rng.integers(0, 2, num_updates)
    counts[2, 10:20] = 0
    counts[3, :12] = 0
    per_episode = rng.normal(10.0, 5.0, (num_seeds, num_updates)) + np.arange(num_updates)
    return {"episode_return_sum": counts * per_episode, "episode_count": counts}


@pytest.mark.parametrize("window", [1, 3, 7, 30])
def test_returns_match_the_definition(window):
    m = history()
    curve = sinks.returns(m, window)
    per_seed, mean, lo, hi = reference_curve(m["episode_return_sum"], m["episode_count"], window)
    np.testing.assert_allclose(curve.per_seed, per_seed, rtol=1e-9)
    np.testing.assert_allclose(curve.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(curve.min, lo, rtol=1e-9)
    np.testing.assert_allclose(curve.max, hi, rtol=1e-9)
    assert np.isnan(curve.per_seed[3, :12]).all() and np.isfinite(curve.mean).all()


def test_seeds_weigh_equally_however_many_episodes_they_finish():
    # seed 0: 10 episodes of return 1; seed 1: one episode of return 3 -> (1 + 3) / 2 = 2
    m = {
        "episode_return_sum": np.array([[10.0, 0.0], [0.0, 3.0]]),
        "episode_count": np.array([[10.0, 0.0], [0.0, 1.0]]),
    }
    curve = sinks.returns(m, window=2)
    assert curve.mean[-1] == 2.0 and curve.min[-1] == 1.0 and curve.max[-1] == 3.0
    np.testing.assert_allclose(sinks.final_returns(m, 1.0), [1.0, 3.0])


def test_final_returns_is_the_last_point_of_the_curve():
    m = history(seed=2, num_updates=40)
    for fraction in (0.05, 0.2, 1.0):
        window = sinks.return_window(40, fraction)
        np.testing.assert_array_equal(
            sinks.final_returns(m, fraction), sinks.returns(m, window).per_seed[:, -1]
        )


def test_events_round_trip_and_trim(tmp_path):
    path = str(tmp_path / "events.out.tfevents.1.host")
    w = sinks.EventWriter(path)
    for step in range(1, 11):
        w.scalars(step * 8, {"episode/return": step + 0.5, "train/loss": -step})
    w.close()
    events = sinks.read_events(path)
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars[:2] == [(8, "episode/return", 1.5), (8, "train/loss", -1.0)]
    assert len(scalars) == 20

    # a writer killed mid-record leaves a torn tail: it is read up to there, and trimmed
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x00\x00")
    assert len(sinks.read_events(path)) == 11
    assert sinks.trim_events([path], max_step=6 * 8) == 4
    steps = [e.step for e in sinks.read_events(path) if e.HasField("summary")]
    assert steps == [8, 16, 24, 32, 40, 48]
    size = os.path.getsize(path)
    assert sinks.trim_events([path], max_step=6 * 8) == 0 and os.path.getsize(path) == size


class FullDisk:
    """A file whose writes fail with ENOSPC after `ok` of them."""

    def __init__(self, f, ok):
        self.f, self.ok = f, ok
        self.closed = False

    def write(self, data):
        if self.ok <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.ok -= 1
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def close(self):
        self.closed = True
        self.f.close()


def test_a_full_disk_raises_at_once(tmp_path):
    w = sinks.EventWriter(str(tmp_path / "events.out.tfevents.2.host"))
    w._file = FullDisk(w._file, ok=3)
    for step in range(3):
        w.scalars(step, {"a": 1.0})
    with pytest.raises(sinks.SinkError, match="TensorBoard events .* No space left on device"):
        w.scalars(3, {"a": 1.0})
    w.close()


def test_write_curve_on_a_vanished_folder_is_a_sink_error(tmp_path):
    m = history(num_updates=5)
    with pytest.raises(sinks.SinkError, match="writing the curve"):
        sinks.write_curve(str(tmp_path / "gone" / "curve.csv"), m, 8)
