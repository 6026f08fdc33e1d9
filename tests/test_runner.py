"""Config resolution, chunking, and the scripts/train.py contract (run folder, errors)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml

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
        ({"bogus": 1}, r"unknown field\(s\) \['bogus'\]; allowed fields: env, total_timesteps"),
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
