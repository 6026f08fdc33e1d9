"""scripts/results.py (jaxlearn/cli/results.py, jaxlearn/results.py): flags, files, columns."""

import csv
import errno
import os
import re

import numpy as np
import pytest

from jaxlearn import results, task_results
from jaxlearn.cli.results import main

# A tiny PPO CartPole config: 2 updates of 2 envs x 16 steps, so the smoke run only compiles.
TINY = """\
algo: ppo
env: CartPole-v1
seed: 3
total_timesteps: 64
num_envs: 2
num_steps: 16
num_epochs: 1
num_minibatches: 1
hidden_sizes: [8]
"""
# A tiny task env with a two-stage curriculum and 0.5 s episodes: it has task metric rows.
CURRICULUM = """\
curriculum:
  window: 4
  stages:
    - {name: FIRST, time_limit: 0.5, success_rate: 0.0, min_episodes: 1}
    - {name: SECOND, time_limit: 0.5, num_obstacles: 4}
"""
TINY_NAV = TINY.replace("CartPole-v1", "Navigation2D-v0") + CURRICULUM


@pytest.fixture
def experiments(tmp_path):
    folder = tmp_path / "experiments"
    (folder / "sweeps").mkdir(parents=True)
    (folder / "tiny_ppo.yaml").write_text(TINY)
    (folder / "other.yaml").write_text(TINY_NAV)
    (folder / "sweeps" / "not_a_config.yaml").write_text("trials: 3\n")
    return folder


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--seeds", "0"], "--seeds"),
        (["--total-timesteps", "0"], "--total-timesteps"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--only", "tiny_ppo,nope"], "--only"),
        (["--only", "not_a_config"], "--only"),  # sweeps/ is not searched
        (["--total-timesteps", "5"], "total_timesteps"),  # the config's own check names it
    ],
)
def test_bad_flags_exit_2_before_writing(experiments, tmp_path, capsys, flags, named):
    out = tmp_path / "out"
    code = main(["--experiments", str(experiments), "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and named in err, err
    assert not out.exists()


def test_out_under_a_file_and_missing_experiments_exit_2(experiments, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--experiments", str(experiments), "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["--experiments", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "--experiments" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_out_that_cannot_be_written_exits_2_before_training(experiments, capsys):
    # /proc takes no new folder, even from root, for whom os.access says yes to everything
    out = "/proc/jaxlearn-results-test"
    assert main(["--experiments", str(experiments), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "cannot write there" in err
    assert "[results]" not in err  # nothing trained


@pytest.mark.parametrize(
    "seeds, message",
    [("2000000", "the run needs about .* of memory"), ("99999999999", "at most 2147483647")],
)
def test_seeds_that_cannot_fit_exit_2_before_anything_is_written(
    experiments, tmp_path, capsys, seeds, message
):
    out = tmp_path / "o"
    argv = ["--experiments", str(experiments), "--out", str(out), "--seeds", seeds]
    assert main([*argv, "--only", "tiny_ppo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --seeds {seeds} for tiny_ppo: ") and re.search(message, err)
    assert "[results]" not in err and not out.exists()


def test_unknown_only_lists_the_configs(experiments, tmp_path, capsys):
    main(["--experiments", str(experiments), "--out", str(tmp_path / "o"), "--only", "x"])
    assert "allowed: other, tiny_ppo" in capsys.readouterr().err


def test_seconds_have_three_significant_digits_and_no_exponent():
    assert [results._seconds(x) for x in (9.4123, 883.2, 3821.7, 12345.6)] == [
        "9.41",
        "883",
        "3820",
        "12300",
    ]


def test_stats_and_band_against_numpy():
    curve = np.array([[1.0, np.nan, 5.0], [3.0, 4.0, np.nan], [2.0, 6.0, np.nan]])
    mean, lo, hi = results._band(curve)
    np.testing.assert_allclose(mean, [2.0, 5.0, 5.0])
    np.testing.assert_allclose(lo, [1.0, 4.0, 5.0])
    np.testing.assert_allclose(hi, [3.0, 6.0, 5.0])
    mean, lo, hi = results._band(np.full((2, 1), np.nan))
    assert np.isnan(mean[0]) and np.isnan(lo[0]) and np.isnan(hi[0])
    assert results._stats(np.array([500.0, 178.0, 490.0])) == (389.3333333333333, 178.0, 500.0)
    mean, worst, best = results._stats(np.array([500.0, np.nan]))  # a seed with no episode
    assert np.isnan(mean) and np.isnan(worst) and best == 500.0


@pytest.mark.slow  # the script end to end: trains, evaluates, writes files
def test_smoke_run_writes_table_csv_and_plot(experiments, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--experiments", str(experiments), "--out", str(out), "--only", "tiny_ppo"]
    assert main([*argv, "--seeds", "2", "--eval-episodes", "2"]) == 0
    names = sorted(os.listdir(out))
    assert names == [
        "results.csv",
        "results.md",
        "task_metrics.csv",
        "tiny_ppo.png",
        "tiny_ppo_curve.csv",
    ]
    with open(out / "task_metrics.csv") as f:
        assert list(csv.reader(f)) == [list(task_results.CSV_COLUMNS)]  # CartPole: no task
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
        assert tuple(rows[0]) == results.CSV_COLUMNS
    assert len(rows) == 1
    row = rows[0]
    assert (row["config"], row["env"], row["algo"]) == ("tiny_ppo", "CartPole-v1", "ppo")
    assert (row["budget"], row["seeds"]) == ("64", "2")
    train = [float(v) for v in row["train_returns"].split(";")]
    greedy = [float(v) for v in row["greedy_returns"].split(";")]
    assert len(train) == len(greedy) == 2
    # CartPole pays 1 per step and an episode lasts 1..500 steps
    assert all(1.0 <= v <= 500.0 for v in train + greedy)
    assert float(row["mean"]) == pytest.approx(np.mean(train), abs=0.051)
    assert float(row["worst"]) == min(train) and float(row["best"]) == max(train)
    assert float(row["greedy_worst"]) == min(greedy)
    assert float(row["compile_s"]) > 0 and float(row["run_s"]) > 0
    assert row["device"] == results.device_name() and row["reference"] == "-"
    table = (out / "results.md").read_text()
    assert "| `tiny_ppo` | CartPole-v1 | ppo | 64 | 2 |" in table
    assert results.device_name() in table
    with open(out / "tiny_ppo_curve.csv") as f:
        curve = list(csv.reader(f))
    assert curve[0] == ["env_steps", "mean", "min", "max", "seed_0", "seed_1"]
    assert [int(r[0]) for r in curve[1:]] == [32, 64]  # one window per update here
    assert (out / "tiny_ppo.png").read_bytes()[:4] == b"\x89PNG"


def test_references_name_their_return_kind():
    for name, refs in results.REFERENCES.items():
        for ref in refs:
            assert ref.kind in ("training", "evaluation"), (name, ref)
            assert ref.cite and ref.source
    assert "(training)" in results.reference_text("dqn_cartpole")
    assert results.reference_text("no_such_config") == "-"


@pytest.mark.slow  # the script end to end: trains, evaluates, writes files
def test_a_run_of_some_configs_keeps_the_other_rows(experiments, tmp_path):
    out = tmp_path / "out"
    argv = ["--experiments", str(experiments), "--out", str(out), "--seeds", "1"]
    assert main([*argv, "--only", "other", "--eval-episodes", "1"]) == 0
    with open(out / "results.csv") as f:
        other = list(csv.DictReader(f))
    assert [r["config"] for r in other] == ["other"]
    with open(out / "task_metrics.csv") as f:
        task = list(csv.DictReader(f))
    # the curriculum's stage per seed, then the env's task metrics, each episode mean in [0, 1]
    assert [r["metric"] for r in task] == ["stage", "collisions", "success"]
    assert task[0]["per_seed"] in ("FIRST", "SECOND")
    assert 0.0 <= float(task[2]["per_seed"]) <= 1.0  # 0.5 s episodes end within 16 steps
    assert main([*argv, "--only", "tiny_ppo", "--eval-episodes", "1"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["config"] for r in rows] == ["other", "tiny_ppo"]
    assert rows[0] == other[0]  # kept as it was, not re-run
    table = (out / "results.md").read_text()
    assert "| `other` |" in table and "| `tiny_ppo` |" in table
    per_seed = other[0]["train_returns"].replace(";", ", ")
    assert f"| {per_seed} |" in table  # the kept row is rendered from the CSV
    with open(out / "task_metrics.csv") as f:
        assert list(csv.DictReader(f)) == task  # the other config's task rows are kept too
    assert f"| `other` | success | {task[2]['mean']} / **{task[2]['worst']}**" in table
    # re-running a config replaces its row, never adds a second one
    assert main([*argv, "--only", "tiny_ppo", "--eval-episodes", "1"]) == 0
    with open(out / "results.csv") as f:
        assert [r["config"] for r in csv.DictReader(f)] == ["other", "tiny_ppo"]


def test_a_write_that_fails_half_way_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "results.csv")
    results.write_csv(path, [], ("config",))
    results.write_csv(path, [{"config": "kept"}], ("config",))
    before = open(path).read()

    def full_disk(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    with pytest.raises(OSError):
        results.write_csv(path, [{"config": "new"}], ("config",))
    assert open(path).read() == before
    assert os.listdir(tmp_path) == ["results.csv"]  # no partial file left beside it


def test_a_failed_write_exits_1_naming_the_config(experiments, tmp_path, monkeypatch, capsys):
    def full_disk(out, done, fraction):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(out, "results.csv"))

    monkeypatch.setattr(results, "write_all", full_disk)
    argv = ["--experiments", str(experiments), "--out", str(tmp_path / "o"), "--seeds", "1"]
    assert main([*argv, "--only", "tiny_ppo", "--eval-episodes", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: writing tiny_ppo's results" in err and "No space left" in err, err


@pytest.mark.parametrize("name", ["results.csv", "task_metrics.csv"])
def test_a_csv_of_other_columns_is_refused_before_training(experiments, tmp_path, capsys, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("config,score\nmine,1\n")
    argv = ["--experiments", str(experiments), "--out", str(out), "--only", "tiny_ppo"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "other columns" in err and name in err
    assert (out / name).read_text() == "config,score\nmine,1\n"  # untouched
    assert sorted(os.listdir(out)) == [name]
