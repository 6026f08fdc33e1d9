"""jaxlearn/task_results.py: per-seed task metrics of a results run, against NumPy by hand."""

import numpy as np
import pytest

from jaxlearn import task_results


def _metrics():
    """2 seeds x 20 updates; seed 1 finishes no episode in the last 2 updates."""
    rng = np.random.default_rng(0)
    count = rng.integers(1, 4, size=(2, 20)).astype(np.float32)
    count[1, -2:] = 0
    return {
        "episode_count": count,
        "episode_return_sum": rng.normal(size=(2, 20)),
        "episode_length_sum": count * 50,
        "episode_success_sum": rng.uniform(0, 1, size=(2, 20)) * count,
        "episode_collisions_sum": rng.integers(0, 5, size=(2, 20)).astype(np.float32),
        "episode_reward_time_penalty_sum": -count,  # a reward component: not a task metric
        "curriculum_stage": np.array([[0] * 15 + [1] * 5, [0] * 18 + [2] * 2], np.float32),
        "loss": rng.normal(size=(2, 20)),
    }


def test_per_seed_is_the_mean_per_episode_over_the_last_updates():
    m = _metrics()
    task = task_results.per_seed(m, fraction=0.1, stage_names=("A", "B", "C"))
    assert sorted(task) == ["collisions", "stage", "success"]
    window = 2  # ceil(0.1 * 20)
    n0 = m["episode_count"][0, -window:].sum()
    expected = m["episode_success_sum"][0, -window:].sum() / n0
    assert task["success"][0] == pytest.approx(expected)
    assert task["collisions"][0] == pytest.approx(m["episode_collisions_sum"][0, -2:].sum() / n0)
    assert np.isnan(task["success"][1])  # no finished episode in the window
    assert task["stage"] == ("B", "C")  # the stage at the last update


def test_no_curriculum_no_stage_and_plain_envs_have_no_task_metrics():
    m = {k: v for k, v in _metrics().items() if k != "curriculum_stage"}
    assert "stage" not in task_results.per_seed(m, 0.1)
    plain = {k: m[k] for k in ("episode_count", "episode_return_sum", "episode_length_sum")}
    assert task_results.per_seed(plain, 0.1) == {}
    assert task_results.rows("ppo_cartpole", {}) == []
    assert task_results.markdown_table([], 0.05) == ""


def test_rows_rank_the_worst_seed_by_the_metric_direction():
    task = {
        "stage": ("EXPERT", "ADVANCED", "EXPERT"),
        "success": np.array([0.9, 0.5, 0.7]),
        "collisions": np.array([0.1, 0.4, 0.2]),
    }
    rows = {r["metric"]: r for r in task_results.rows("nav", task, ("ADVANCED", "EXPERT"))}
    assert [r["metric"] for r in task_results.rows("nav", task)][0] == "stage"
    assert (rows["stage"]["worst"], rows["stage"]["best"]) == ("ADVANCED", "EXPERT")
    assert rows["stage"]["per_seed"] == "EXPERT;ADVANCED;EXPERT"
    assert (rows["success"]["mean"], rows["success"]["worst"]) == ("0.700", "0.500")
    assert (rows["collisions"]["worst"], rows["collisions"]["best"]) == ("0.400", "0.100")
    nan = task_results.rows("x", {"coverage": np.array([0.8, np.nan])})[0]
    assert (nan["mean"], nan["worst"], nan["best"]) == ("nan", "nan", "0.800")


def test_merge_replaces_every_row_of_a_re_run_config_and_keeps_the_others():
    old = [
        {"config": "a", "metric": "success", "per_seed": "1"},
        {"config": "a", "metric": "collisions", "per_seed": "1"},
        {"config": "b", "metric": "success", "per_seed": "1"},
    ]
    new = {"a": [{"config": "a", "metric": "stage", "per_seed": "X"}], "c": []}
    merged = task_results.merge(old, new)
    assert [(r["config"], r["metric"]) for r in merged] == [("a", "stage"), ("b", "success")]


def test_is_task_key():
    assert task_results.is_task_key("episode_coverage_sum")
    assert task_results.is_task_key("curriculum_stage")
    assert not task_results.is_task_key("episode_reward_collision_sum")
    assert not task_results.is_task_key("episode_return_sum")
    assert not task_results.is_task_key("curriculum_success_rate")
