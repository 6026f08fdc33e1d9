"""Config resolution, chunking, and the scripts/train.py contract (run folder, errors)."""

import csv
import errno
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys

import fake_learner
import jax
import numpy as np
import pytest
import yaml

from jaxlearn import loop, progress, reports, rundir, runner, sinks
from jaxlearn.algos.ppo import PPOConfig, make_learner, make_train
from jaxlearn.runner import RunConfig, choose_chunk_size, make_chunk, resolve_config

ROOT = os.path.join(os.path.dirname(__file__), "..")
TRAIN = os.path.join(ROOT, "scripts", "train.py")
SMALL = ["--total-timesteps", "2048", "--set", "num_chunks=2"]


def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_resolve_config_coerces_cli_strings_and_layers_sources(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: ppo\nenv: Pendulum-v1\nnum_envs: 8\nseed: 3\nlearning_rate: 1e-3\n")
    run_cfg, cfg = resolve_config(
        config_file=str(f),
        overrides={
            "num_envs": "16",
            "hidden_sizes": "32,32",
            "anneal_lr": "false",
            "reward_clip": "none",
            "num_seeds": "2",
        },
    )
    assert run_cfg == RunConfig(algo="ppo", seed=3, num_seeds=2)
    assert cfg.env == "Pendulum-v1" and cfg.num_envs == 16
    assert cfg.learning_rate == pytest.approx(1e-3)  # YAML reads "1e-3" as a string
    assert cfg.hidden_sizes == (32, 32) and cfg.anneal_lr is False and cfg.reward_clip is None


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"bogus": 1}, r"unknown field\(s\) \['bogus'\]; allowed fields: env, .*; run fields: "),
        (  # a field of another algorithm says whose it is
            {"algo": "dqn", "core": "gru"},
            r"DQNConfig: unknown field\(s\) \['core'\].*; core is a ppo field, not a dqn one$",
        ),
        ({"algo": "a2c"}, r"RunConfig.algo='a2c' is invalid: must be one of \[.*'ppo'"),
        ({"num_envs": "four"}, r"PPOConfig.num_envs: 'four' is not an integer"),
        ({"anneal_lr": "maybe"}, r"not a boolean"),
        ({"learning_rate": "fast"}, r"PPOConfig.learning_rate: 'fast' is not a number"),
        ({"num_seeds": 0}, r"num_seeds=0"),
    ],
)
def test_resolve_config_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(overrides=overrides)


def test_choose_chunk_size():
    assert choose_chunk_size(976, 20) == 61  # a divisor near 976 / 20: no padded updates
    assert 976 % choose_chunk_size(976, 20) == 0
    assert choose_chunk_size(1, 20) == 1
    k = choose_chunk_size(97, 20)  # prime: falls back to the ceiling, last chunk padded
    assert k * 20 >= 97
    assert choose_chunk_size(39, 20) == 2  # 20 calls, the last padded (was 39 calls of 1)
    for n in range(1, 300):
        for c in (1, 3, 20, 64):
            assert math.ceil(n / choose_chunk_size(n, c)) <= c


def test_chunked_run_equals_one_call_even_with_padding():
    cfg = PPOConfig(
        total_timesteps=4 * 16 * 5, num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(8,)
    )
    learner = make_learner(cfg)
    key = jax.random.key(7)
    ref_state, ref_metrics = jax.jit(make_train(cfg))(key)
    chunk = jax.jit(make_chunk(learner, 3))  # 5 updates = 3 + (2 active, 1 padded)
    state = learner.init(key, learner.hparams)
    state, m1 = chunk(state, learner.hparams, 3)
    state, m2 = chunk(state, learner.hparams, 2)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        ref_state.params,
        state.params,
    )
    assert int(state.update_step) == 5
    np.testing.assert_allclose(
        np.concatenate([m1["loss"], m2["loss"][:2]]), ref_metrics["loss"], rtol=1e-6
    )


@pytest.mark.slow
def test_train_script_writes_run_folder_and_never_overwrites(tmp_path, capsys):
    main = _train_main()
    out = tmp_path / "run"
    assert main(SMALL + ["--num-seeds", "2", "--out", str(out)]) == 0
    for name in ("config.yaml", "metrics.json", "learning_curve.png"):
        assert (out / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in out.iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "algo",
        "env",
        "num_seeds",
        "total_timesteps",
        "env_steps_per_second",
        "compile_seconds",
        "final_return_mean",
        "final_return_per_seed",
    ):
        assert key in metrics, key
    assert metrics["algo"] == "ppo" and metrics["env"] == "CartPole-v1"
    assert metrics["num_seeds"] == 2 and len(metrics["final_return_per_seed"]) == 2
    assert metrics["env_steps_per_second"] > 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["num_chunks"] == 2 and resolved["num_envs"] == 4
    # Reusing the folder is refused before anything runs, and nothing in it changes.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(SMALL + ["--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_train_script_rejects_bad_fields_before_creating_anything(tmp_path, capsys):
    main = _train_main()
    out = tmp_path / "never"
    assert main(["--set", "bogus=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "allowed fields" in err
    assert main(["--set", "num_minibatches=3", "--out", str(out)]) == 2
    assert "must divide" in capsys.readouterr().err
    assert main(["--env", "Nope-v0", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.slow
def test_train_script_as_a_process_with_config_file(tmp_path):
    out = tmp_path / "proc"
    cfg = os.path.join(ROOT, "experiments", "ppo_cartpole.yaml")
    proc = subprocess.run(
        [sys.executable, TRAIN, "--config", cfg, *SMALL, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "steps/s" in proc.stderr  # progress lines
    assert json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"] == str(out)
    bad = subprocess.run(
        [sys.executable, TRAIN, "--no-such-flag"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_padding_is_a_real_branch_under_vmap():
    """Skipped updates must not become a select over the whole (vmapped) state: that would
    copy replay buffers on every update."""
    cfg = PPOConfig(
        total_timesteps=4 * 16 * 5, num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(8,)
    )
    learner = make_learner(cfg)
    keys = jax.random.split(jax.random.key(0), 2)
    state = jax.vmap(learner.init, in_axes=(0, None))(keys, learner.hparams)
    chunk = jax.vmap(make_chunk(learner, 3), in_axes=(0, None, None))
    jaxpr = jax.make_jaxpr(chunk)(state, learner.hparams, jax.numpy.int32(2))
    scan = next(e for e in jaxpr.eqns if e.primitive.name == "scan")
    body = [e.primitive.name for e in scan.params["jaxpr"].eqns]
    assert "cond" in body, body


# ---- the host side on a learner that compiles in a moment (tests/fake_learner.py) -------------


def _fake_main(monkeypatch, capsys, *args):
    """train.py's main on the fake learner: (exit status, stderr lines)."""
    fake_learner.install(monkeypatch)
    code = _train_main()(list(args) if "--resume" in args else ["--algo", "fake", *args])
    return code, capsys.readouterr().err.splitlines()


def _scalars(run_dir, tag):
    """[(step, value)] of a TensorBoard tag over every event file of the run folder."""
    out = []
    for path in rundir.RunFolder(str(run_dir)).event_files():
        for e in sinks.read_events(path):
            out += [(e.step, v.simple_value) for v in e.summary.value if v.tag == tag]
    return out


def test_every_sink_reports_the_same_return(tmp_path, monkeypatch, capsys):
    """Three seeds finishing unequal numbers of episodes: the terminal's last chunk line and
    final line, TensorBoard, curve.csv, the plot and metrics.json all show the documented
    return (each seed's mean over the last window, then the mean over seeds)."""
    drawn = []
    plot = reports.plot_learning_curve

    def recording_plot(*a, **k):
        drawn.append(plot(*a, **k))
        return drawn[-1]

    monkeypatch.setattr(reports, "plot_learning_curve", recording_plot)
    out = tmp_path / "run"
    args = ["--num-seeds", "3", "--total-timesteps", "240", "--out", str(out)]
    code, err = _fake_main(
        monkeypatch, capsys, *args, "--set", "num_chunks=5", "--set", "final_fraction=0.2"
    )
    assert code == 0, err
    m = fake_learner.expected_metrics(0, 3, 30)
    assert len(set(m["episode_count"].sum(axis=1))) == 3  # unequal episode counts
    ref = fake_learner.reference_return(m["episode_return_sum"], m["episode_count"], 6)
    # the pooled mean (episodes weighted equally) differs: the test tells them apart
    pooled = m["episode_return_sum"][:, -6:].sum() / m["episode_count"][:, -6:].sum()
    assert abs(pooled - ref) > 0.5

    metrics = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(metrics["final_return_mean"], ref, rtol=1e-12)
    chunk_lines = [x for x in err if x.startswith("  chunk ")]
    assert len(chunk_lines) == 5 and chunk_lines[-1].startswith("  chunk 5/5  step 240/240")
    assert f"return {ref:.2f} [" in chunk_lines[-1]
    assert f"final return {ref:.2f} " in err[-1]
    tb = _scalars(out, "episode/return")
    assert tb[-1][0] == 240
    np.testing.assert_allclose(tb[-1][1], ref, rtol=1e-6)  # float32 in the event file
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and rows[-1]["env_steps"] == "240"
    np.testing.assert_allclose(float(rows[-1]["episode_return_mean"]), ref, rtol=1e-5)
    # the whole curve: TensorBoard and curve.csv are the same numbers at every update
    csv_curve = {int(r["env_steps"]): float(r["episode_return_mean"]) for r in rows}
    assert len(tb) == 30
    for step, value in tb:
        np.testing.assert_allclose(value, csv_curve[step], rtol=1e-5)
    x, y = drawn[-1]
    assert x[-1] == 240
    np.testing.assert_allclose(y[-1], ref, rtol=1e-12)
    assert (out / "learning_curve.png").stat().st_size > 0

    # config.yaml records the chunks that ran; memory and evaluation are scalars too
    assert yaml.safe_load((out / "config.yaml").read_text())["num_chunks"] == 5
    assert metrics["num_chunks"] == 5
    est = _scalars(out, "memory/estimated_device_bytes")
    assert est == [(0, float(metrics["memory_estimate"]["device_bytes"]))]
    assert [v for _, v in _scalars(out, "memory/state_bytes")] == [3 * (3 * 4 + 4 + 4)]
    evals = _scalars(out, "eval/return")
    assert [s for s, _ in evals] == [48, 96, 144, 192, 240]
    np.testing.assert_allclose([v for _, v in evals], np.mean(m["skill"]), rtol=1e-6)


def test_num_chunks_in_config_yaml_is_what_ran(tmp_path, monkeypatch, capsys):
    # 10 updates asked in 3 chunks run as 2 chunks of 5 (a divisor a little above 10 / 3)
    code, err = _fake_main(
        monkeypatch,
        capsys,
        "--total-timesteps",
        "80",
        "--set",
        "num_chunks=3",
        "--set",
        "eval_episodes=0",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, err
    assert sum(x.startswith("  chunk ") for x in err) == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["num_chunks"] == 2


def test_tensorboard_after_a_stop_and_resume_has_each_step_once(tmp_path, monkeypatch):
    """Stopped at the worst moment (a chunk logged, its checkpoint not written): the resumed
    run's TensorBoard history has every update's step exactly once, as a straight run's."""
    fake_learner.install(monkeypatch)
    cfg = fake_learner.FakeConfig(total_timesteps=96)  # 12 updates of 8 steps
    run_cfg = RunConfig(algo="fake", num_chunks=4, checkpoint_every=6, eval_episodes=0)
    out = str(tmp_path / "run")
    stopped = runner.run(run_cfg, cfg, out=out, log=lambda s: None, stop_after_chunks=3)
    assert stopped["stopped_at_update"] == 9
    assert [s for s, _ in _scalars(out, "train/loss")] == [8 * u for u in range(1, 10)]
    assert rundir.RunFolder(out).latest_checkpoint() == 6  # updates 7-9 logged, not saved
    runner.resume(out, log=lambda s: None)
    steps = [s for s, _ in _scalars(out, "train/loss")]
    assert steps == [8 * u for u in range(1, 13)]  # unique, no gap, in order
    # the values are the straight run's (loss = update / 2)
    np.testing.assert_allclose([v for _, v in _scalars(out, "train/loss")], np.arange(1, 13) / 2)


def test_a_full_disk_in_tensorboard_ends_the_run_with_an_error(tmp_path, monkeypatch, capsys):
    writes = {"left": 8}
    real_write = sinks.EventWriter._write

    def write(self, event):  # the disk fills up after 8 events
        if writes["left"] <= 0:
            self._file.write = _raise_enospc
        writes["left"] -= 1
        return real_write(self, event)

    monkeypatch.setattr(sinks.EventWriter, "_write", write)
    out = tmp_path / "run"
    code, err = _fake_main(monkeypatch, capsys, "--set", "num_chunks=4", "--out", str(out))
    assert code == 1, err
    assert (
        err[-1].startswith("error: writing TensorBoard events ")
        and len([x for x in err if x.startswith("error:")]) == 1
    )
    assert "No space left on device" in err[-1] and f"--resume {out}" in err[-1]
    assert not any("Traceback" in x for x in err)
    assert not (out / "metrics.json").exists()  # not marked finished: it can be resumed


def _raise_enospc(*a):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fault", ["enospc", "declined"])
def test_a_failed_or_declined_checkpoint_ends_the_run_with_an_error(
    tmp_path, monkeypatch, capsys, fault
):
    import orbax.checkpoint as ocp

    real_save, real_should = ocp.CheckpointManager.save, ocp.CheckpointManager.should_save

    def save(self, step, *a, **k):  # the second checkpoint (update 6) hits a full disk
        if step == 6:
            _raise_enospc()
        return real_save(self, step, *a, **k)

    def should_save(self, step):  # Orbax declines the second checkpoint
        return step != 6 and real_should(self, step)

    if fault == "enospc":
        monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    else:
        monkeypatch.setattr(ocp.CheckpointManager, "should_save", should_save)
    out = tmp_path / "run"
    code, err = _fake_main(monkeypatch, capsys, "--set", "num_chunks=4", "--out", str(out))
    assert code == 1, err
    assert err[-1].startswith("error: ") and "checkpoint 6" in err[-1], err[-1]
    reason = "No space left on device" if fault == "enospc" else "declined"
    assert reason in err[-1] and "last checkpoint: update 3" in err[-1]
    assert f"--resume {out}" in err[-1] and not any("Traceback" in x for x in err)
    assert rundir.RunFolder(str(out)).latest_checkpoint() == 3  # the good one is kept


def test_ctrl_c_stops_after_the_chunk_with_one_line_to_resume(tmp_path, monkeypatch, capsys):
    import signal as signal_

    chunk = progress.Progress.chunk

    def interrupted_chunk(self, index, *a):
        chunk(self, index, *a)
        if index == 1:  # Ctrl-C while the second chunk's report prints
            os.kill(os.getpid(), signal_.SIGINT)

    monkeypatch.setattr(progress.Progress, "chunk", interrupted_chunk)
    out = tmp_path / "run"
    before = signal_.getsignal(signal_.SIGINT)  # SIG_IGN in a pytest-xdist worker
    code, err = _fake_main(monkeypatch, capsys, "--set", "num_chunks=4", "--out", str(out))
    assert code == 130, err
    assert signal_.getsignal(signal_.SIGINT) == before  # the caller's handler is restored
    assert [x for x in err if "--resume" in x] == [
        f"interrupted (last checkpoint: update 6); continue with --resume {out}"
    ]
    assert err[-1].startswith("interrupted") and not any("Traceback" in x for x in err)
    assert sum(x.startswith("  chunk ") for x in err) == 2  # stopped after that chunk
    monkeypatch.setattr(progress.Progress, "chunk", chunk)
    code, err = _fake_main(monkeypatch, capsys, "--resume", str(out))
    assert code == 0 and "restored update 6/12" in err[0], err
    assert (out / "metrics.json").exists()


@pytest.mark.slow
def test_ctrl_c_on_a_real_process(tmp_path):
    """SIGINT to a training process: exit 130, one line saying how to resume, no traceback."""
    out = tmp_path / "run"
    code = (
        "import sys; sys.path.insert(0, 'tests'); import fake_learner, jaxlearn.algos as a; "
        "a.ALGOS['fake'] = (fake_learner.FakeConfig, fake_learner.make_learner); "
        "from jaxlearn.cli.train import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["--algo", "fake", "--total-timesteps", "80000", "--set", "num_chunks=10000"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--set", "eval_episodes=0", "--out", str(out)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("  chunk 2/"):
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.read().splitlines()
    assert proc.wait(timeout=300) == 130, lines
    assert len([x for x in lines if "--resume" in x]) == 1
    assert lines[-1].startswith("interrupted (") and lines[-1].endswith(f"--resume {out}")
    assert not any("Traceback" in x for x in lines)


def test_reports_that_failed_to_write_are_written_by_resume(tmp_path, monkeypatch, capsys):
    """A full disk while writing curve.csv after the last update: exit 1, the run is not
    marked finished, and --resume (11 updates in chunks of 6: the last one padded) writes
    the reports without training again."""
    write_curve = reports.write_curve

    def full(path, *a, **k):
        raise sinks.SinkError(f"writing the curve {path} failed: No space left on device")

    monkeypatch.setattr(reports, "write_curve", full)
    out = tmp_path / "run"
    args = ["--total-timesteps", "88", "--set", "num_chunks=2", "--set", "eval_episodes=0"]
    code, err = _fake_main(monkeypatch, capsys, *args, "--out", str(out))
    assert code == 1 and "trained to its end" in err[-1] and f"--resume {out}" in err[-1], err
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(reports, "write_curve", write_curve)
    code, err = _fake_main(monkeypatch, capsys, "--resume", str(out))
    assert code == 0, err
    assert "restored update 11/11" in err[0] and not any(x.startswith("  chunk") for x in err)
    metrics = json.loads((out / "metrics.json").read_text())
    m = fake_learner.expected_metrics(0, 1, 11)
    ref = fake_learner.reference_return(m["episode_return_sum"], m["episode_count"], 1)
    np.testing.assert_allclose(metrics["final_return_mean"], ref, rtol=1e-12)
    assert len((out / "curve.csv").read_text().splitlines()) == 12


def test_write_errors_leave_out_tensorstores_spec():
    spec = "[tensorstore_spec='{\"a\": [1]}']"
    e = OSError(f"write failed: No space left on device [os_error_code='28'] {spec}; x")
    assert loop._reason(e) == "write failed: No space left on device [os_error_code='28']; x"


def test_the_integer_flags_are_read_as_set_reads_them(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(run_cfg, algo_cfg, out=None):
        seen.update(run=run_cfg, algo=algo_cfg)
        raise ValueError("stopped before training")

    monkeypatch.setattr(runner, "run", fake_run)
    main = _train_main()
    out = str(tmp_path / "r")
    argv = ["--total-timesteps", "1e5", "--num-seeds", "2", "--seed", "7", "--out", out]
    assert main(argv) == 2 and "stopped before training" in capsys.readouterr().err
    assert seen["algo"].total_timesteps == 100_000
    assert (seen["run"].num_seeds, seen["run"].seed) == (2, 7)
    assert main(["--total-timesteps", "lots", "--out", out]) == 2
    assert "total_timesteps: 'lots' is not an integer" in capsys.readouterr().err


def test_total_timesteps_rounded_to_whole_updates_is_said(tmp_path, monkeypatch, capsys):
    args = ["--total-timesteps", "84", "--set", "eval_episodes=0", "--out", str(tmp_path / "r")]
    code, err = _fake_main(monkeypatch, capsys, *args)  # updates of 8 env steps
    assert code == 0, err
    assert "  env steps: 80 per seed (total_timesteps 84 in whole updates of 8 steps)" in err
    code, err = _fake_main(
        monkeypatch, capsys, "--total-timesteps", "80", "--out", str(tmp_path / "r3")
    )
    assert code == 0 and not any("env steps:" in x for x in err)
