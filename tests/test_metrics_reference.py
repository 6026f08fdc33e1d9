"""The headline metrics against plain NumPy references written from their docstrings:
`sinks.final_returns`, `episode_means`, `episode_extra_means`, `final_episode_metrics`,
`write_curve`, `evaluation.summarize` and the sweep objective (`sweep._objective`)."""

import csv
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from jaxlearn import sinks as L
from jaxlearn import sweep
from jaxlearn.evaluation import summarize


def last_window(num_updates: int, fraction: float) -> int:
    """Updates in "the last `fraction` of updates": ceil(fraction * U) computed exactly, >= 1."""
    return max(1, math.ceil(Fraction(str(fraction)) * num_updates))


def final_returns_reference(sums, counts, fraction):
    """Per seed: return sum / episode count over the last window of updates, widening the
    window backwards one update at a time until it holds an episode; NaN if none ever."""
    num_seeds, num_updates = sums.shape
    out = []
    for s in range(num_seeds):
        w = last_window(num_updates, fraction)
        while w <= num_updates and counts[s, num_updates - w :].sum() == 0:
            w += 1
        if w > num_updates:
            out.append(float("nan"))
        else:
            total = sum(float(x) for x in sums[s, num_updates - w :])
            n = sum(float(x) for x in counts[s, num_updates - w :])
            out.append(total / n)
    return np.array(out)


def pooled_mean(sum_rows, count_rows):
    """Mean per episode of values pooled over every entry given (NaN without episodes)."""
    n = float(np.sum(count_rows))
    return float(np.sum(sum_rows)) / n if n > 0 else float("nan")


def make_history(seed=0, num_seeds=5, num_updates=40):
    """Stacked per-update metrics `[S, U]` as the learners return them: per-update sums over
    finished episodes and the episode counts. Seed 0 finishes many episodes per update,
    seed 1 few and irregularly, seed 2 none in its last 7 updates (the window must widen),
    seed 3 none at all, seed 4 exactly one per update."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((num_seeds, num_updates))
    counts[0] = rng.integers(3, 9, num_updates)
    counts[1] = rng.integers(0, 2, num_updates) * rng.integers(1, 3, num_updates)
    counts[1, -1] = 2
    counts[2, : num_updates - 7] = rng.integers(0, 4, num_updates - 7)
    counts[2, num_updates - 8] = 3  # the last update with an episode, 8th from the end
    counts[4] = 1
    # episode returns: a per-episode mean that differs by seed and drifts over updates
    per_episode = rng.normal(20.0, 5.0, (num_seeds, num_updates)) + np.arange(num_updates)
    lengths = rng.integers(5, 50, (num_seeds, num_updates))
    success = rng.uniform(0.0, 1.0, (num_seeds, num_updates))
    penalty = -0.01 * lengths
    return {
        "episode_return_sum": (counts * per_episode).astype(np.float32),
        "episode_length_sum": (counts * lengths).astype(np.float32),
        "episode_count": counts.astype(np.float32),
        "episode_success_sum": (counts * success).astype(np.float32),
        "episode_reward_time_penalty_sum": (counts * penalty).astype(np.float32),
        "loss": rng.normal(size=(num_seeds, num_updates)).astype(np.float32),
        "learning_rate": np.full((num_seeds, num_updates), 3e-4, np.float32),
    }


# ------------------------------------------------------------------------ final_returns


def test_final_returns_by_hand():
    """Small cases whose answer is read off the docstring: the mean over episodes, not
    over updates; the widening rule; NaN for a seed that never finished."""
    sums = np.array(
        [
            [0.0, 0.0, 0.0, 30.0, 12.0],  # last update alone: 3 episodes summing to 12 -> 4
            [5.0, 9.0, 0.0, 0.0, 0.0],  # none in the last update: widen back to update 2
            [0.0, 0.0, 0.0, 0.0, 0.0],  # never finished
        ]
    )
    counts = np.array(
        [
            [0.0, 0.0, 0.0, 2.0, 3.0],
            [1.0, 3.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    out = L.final_returns({"episode_return_sum": sums, "episode_count": counts}, fraction=0.2)
    np.testing.assert_allclose(out[:2], [4.0, 3.0])
    assert np.isnan(out[2])
    # a window of two updates pools 5 episodes: (30 + 12) / 5
    out = L.final_returns({"episode_return_sum": sums, "episode_count": counts}, fraction=0.4)
    np.testing.assert_allclose(out[:2], [42.0 / 5.0, 3.0])


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 1.0])
def test_final_returns_match_numpy(fraction):
    m = make_history()
    out = L.final_returns(m, fraction)
    ref = final_returns_reference(m["episode_return_sum"], m["episode_count"], fraction)
    assert out.shape == (5,)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert np.isnan(out[3]) and np.all(np.isfinite(out[[0, 1, 2, 4]]))
    if last_window(40, fraction) <= 7:  # the widening rule is exercised for seed 2
        assert m["episode_count"][2, -last_window(40, fraction) :].sum() == 0


def test_final_returns_default_fraction_and_unequal_seeds():
    m = make_history(seed=3, num_updates=60)
    ref = final_returns_reference(m["episode_return_sum"], m["episode_count"], 0.05)
    np.testing.assert_allclose(L.final_returns(m), ref, rtol=1e-6)
    # seed 0 pools several episodes per update: a mean over updates would be far off
    w = last_window(60, 0.05)
    assert m["episode_count"][0, -w:].sum() > 2 * w


# --------------------------------------------------------- episode means and extras


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_episode_means_match_numpy(axis):
    m = make_history()
    ret, length = L.episode_means(m, axis=axis)
    count = m["episode_count"]
    if axis is None:
        ref_ret = pooled_mean(m["episode_return_sum"], count)
        ref_len = pooled_mean(m["episode_length_sum"], count)
    else:
        idx = range(count.shape[1 - axis])
        take = (lambda v, i: v[:, i]) if axis == 0 else (lambda v, i: v[i])
        ref_ret = [pooled_mean(take(m["episode_return_sum"], i), take(count, i)) for i in idx]
        ref_len = [pooled_mean(take(m["episode_length_sum"], i), take(count, i)) for i in idx]
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-6)
    np.testing.assert_allclose(length, ref_len, rtol=1e-6)
    if axis == 1:
        assert np.isnan(ret[3]) and np.isnan(length[3])


def test_episode_extra_means_are_per_episode_sums():
    m = make_history()
    out = L.episode_extra_means(m, axis=0)
    # only the per-episode sums of task metrics and reward components, named without affixes
    assert set(out) == {"success", "reward_time_penalty"}
    count = m["episode_count"]
    for name, key in (
        ("success", "episode_success_sum"),
        ("reward_time_penalty", "episode_reward_time_penalty_sum"),
    ):
        ref = [pooled_mean(m[key][:, u], count[:, u]) for u in range(count.shape[1])]
        np.testing.assert_allclose(out[name], ref, rtol=1e-6)
    pooled = L.episode_extra_means(m)
    np.testing.assert_allclose(
        pooled["reward_time_penalty"],
        pooled_mean(m["episode_reward_time_penalty_sum"], count),
        rtol=1e-6,
    )


@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_final_episode_metrics_pool_seeds_over_the_last_window(fraction):
    m = make_history()
    w = last_window(40, fraction)
    out = L.final_episode_metrics(m, fraction)
    assert set(out) == {"success", "reward_time_penalty"}
    assert all(isinstance(v, float) for v in out.values())
    count = m["episode_count"][:, -w:]
    np.testing.assert_allclose(
        out["success"], pooled_mean(m["episode_success_sum"][:, -w:], count), rtol=1e-6
    )
    np.testing.assert_allclose(
        out["reward_time_penalty"],
        pooled_mean(m["episode_reward_time_penalty_sum"][:, -w:], count),
        rtol=1e-6,
    )
    # plain envs report no extras
    plain = {k: m[k] for k in ("episode_return_sum", "episode_length_sum", "episode_count")}
    assert L.final_episode_metrics(plain, fraction) == {}


def test_write_curve_rows(tmp_path):
    """Each row's return is the documented one (`sinks.returns`): per seed, return sum /
    episodes over its last ceil(0.05 * 12) = 1 update, widened back until it holds an
    episode; then the plain mean (and min, max) over the seeds that have one."""
    m = make_history(num_updates=12)
    m["episode_count"][:, 4] = 0.0  # an update where no seed finished an episode
    m["episode_return_sum"][:, 4] = 0.0
    path = tmp_path / "curve.csv"
    L.write_curve(str(path), m, steps_per_update=256)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    sums, counts = m["episode_return_sum"], m["episode_count"]
    for i, row in enumerate(rows):
        assert int(row["update"]) == i + 1
        assert int(row["env_steps"]) == 256 * (i + 1)
        assert int(row["episodes"]) == counts[:, i].sum()
        per_seed = []
        for s in range(sums.shape[0]):
            lo = i
            while lo > 0 and counts[s, lo : i + 1].sum() == 0:
                lo -= 1
            if counts[s, lo : i + 1].sum() > 0:
                per_seed.append(pooled_mean(sums[s, lo : i + 1], counts[s, lo : i + 1]))
        ref = sum(per_seed) / len(per_seed)
        np.testing.assert_allclose(float(row["episode_return_mean"]), ref, rtol=1e-5)
        np.testing.assert_allclose(float(row["episode_return_min"]), min(per_seed), rtol=1e-5)
        np.testing.assert_allclose(float(row["episode_return_max"]), max(per_seed), rtol=1e-5)
    # update 5 had no episode: each seed's value reaches back to its latest episode
    assert rows[4]["episode_return_mean"] != ""
    empty = {k: np.zeros_like(v) for k, v in m.items()}
    L.write_curve(str(path), empty, steps_per_update=256)
    with open(path) as f:
        assert all(r["episode_return_mean"] == "" for r in csv.DictReader(f))


# ------------------------------------------------------------------------ summarize


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_summarize_every_field_by_value(lead):
    rng = np.random.default_rng(len(lead))
    shape = (*lead, 6)
    result = {
        "returns": rng.normal(50.0, 30.0, shape).astype(np.float32),
        "lengths": rng.integers(1, 200, shape).astype(np.int32),
        "done": rng.uniform(size=shape) < 0.7,
        "success": (rng.uniform(size=shape) < 0.4).astype(np.float32),
        "reward_time_penalty": rng.uniform(-2.0, 0.0, shape).astype(np.float32),
    }
    result["returns"].flat[0] = 500.0  # a clear maximum, far from the mean
    s = summarize(result)
    assert set(s) == {
        "return_mean",
        "return_std",
        "length_mean",
        "episodes",
        "finished",
        "success_mean",
        "reward_time_penalty_mean",
    }
    r = [float(x) for x in result["returns"].ravel()]
    mean = sum(r) / len(r)
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / len(r))
    np.testing.assert_allclose(s["return_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(s["return_std"], std, rtol=1e-5)
    lengths = [int(x) for x in result["lengths"].ravel()]
    np.testing.assert_allclose(s["length_mean"], sum(lengths) / len(lengths), rtol=1e-6)
    assert s["episodes"] == int(np.prod(shape))
    assert s["finished"] == sum(bool(x) for x in result["done"].ravel())
    for k in ("success", "reward_time_penalty"):
        vals = [float(x) for x in result[k].ravel()]
        np.testing.assert_allclose(s[f"{k}_mean"], sum(vals) / len(vals), rtol=1e-5, atol=1e-6)
    assert all(type(v) in (float, int) for v in s.values())


# ------------------------------------------------------------------ sweep objective


@pytest.fixture(scope="module")
def nav_spec():
    raw = {
        "config": {
            "env": "Navigation2D-v0",
            "total_timesteps": 64,
            "num_envs": 2,
            "num_steps": 8,
            "num_minibatches": 1,
            "hidden_sizes": [4],
            "final_fraction": 0.1,
        },
        "space": {"learning_rate": {"low": 1e-4, "high": 1e-3}},
        "objective": "success",
    }
    return sweep.spec_from_dict(raw)


def test_sweep_objective_matches_numpy(nav_spec):
    m = make_history()
    w = last_window(40, 0.1)
    assert nav_spec.run_cfg.final_fraction == 0.1

    spec = dataclasses.replace(nav_spec, objective="final_return_mean")
    per_seed = final_returns_reference(m["episode_return_sum"], m["episode_count"], 0.1)
    finite = [x for x in per_seed if not math.isnan(x)]  # seeds that never finished skipped
    np.testing.assert_allclose(sweep._objective(spec, m, None), sum(finite) / len(finite))

    spec = dataclasses.replace(nav_spec, objective="eval_return")
    evals = np.array([3.0, 10.0, -4.0, 7.5])
    np.testing.assert_allclose(sweep._objective(spec, m, evals), 16.5 / 4)

    count = m["episode_count"][:, -w:]
    for objective, key in (
        ("success", "episode_success_sum"),
        ("reward_time_penalty", "episode_reward_time_penalty_sum"),
    ):
        spec = dataclasses.replace(nav_spec, objective=objective)
        ref = pooled_mean(m[key][:, -w:], count)
        np.testing.assert_allclose(sweep._objective(spec, m, None), ref, rtol=1e-6)
    # an episode metric with no episode in the window is not a number (the trial fails)
    empty = {k: np.zeros_like(v) for k, v in m.items()}
    spec = dataclasses.replace(nav_spec, objective="success")
    assert math.isnan(sweep._objective(spec, empty, None))
