"""scripts/evaluate.py: JSON on stdout, determinism, checkpoint choice, errors (exit 2)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.runner import RunConfig, run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "scripts", "evaluate.py")
KEYS = {
    "run_dir",
    "checkpoint_step",
    "episodes_per_seed",
    "return_mean",
    "return_std",
    "return_per_seed",
    "length_mean",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval") / "run")
    cfg = PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2)
    run(RunConfig(num_chunks=2, eval_episodes=2), cfg, out=out, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def main():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _subprocess(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _call(main, capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_prints_json_and_is_deterministic(main, capsys, run_dir):
    a = _subprocess(run_dir, "--episodes", "3")
    assert a.returncode == 0, a.stderr
    rc, b, _ = _call(main, capsys, run_dir, "--episodes", "3")
    assert rc == 0 and a.stdout == b  # the same command prints the same numbers in any process
    out = json.loads(a.stdout)
    assert KEYS <= set(out)
    assert out["run_dir"] == run_dir and out["episodes_per_seed"] == 3
    # best by eval return, or the latest (update 16) when no checkpoint has one
    assert out["checkpoint_step"] in (8, 16)
    assert out["checkpoint_choice"] in ("best", "latest (no eval returns)")
    assert len(out["return_per_seed"]) == 1 and out["return_per_seed"][0] == out["return_mean"]
    assert out["length_mean"] > 0 and out["return_std"] >= 0
    assert "[evaluate]" in a.stderr  # progress on stderr, JSON alone on stdout


def test_checkpoint_latest_and_step(main, capsys, run_dir):
    rc, out, _ = _call(main, capsys, run_dir, "--episodes", "2", "--checkpoint", "latest")
    assert rc == 0
    latest = json.loads(out)
    assert latest["checkpoint_step"] == 16 and latest["checkpoint_choice"] == "latest"
    rc, out, _ = _call(main, capsys, run_dir, "--episodes", "2", "--checkpoint", "8")
    assert rc == 0
    first = json.loads(out)
    assert first["checkpoint_step"] == 8 and first["episodes_per_seed"] == 2
    rc, out, _ = _call(main, capsys, run_dir, "--episodes", "2", "--seed", "5")
    assert rc == 0 and json.loads(out)["seed"] == 5


def test_sampled_policy_is_its_own_deterministic_evaluation(main, capsys, run_dir):
    args = (run_dir, "--episodes", "8", "--checkpoint", "latest")
    rc, out, _ = _call(main, capsys, *args)
    greedy = json.loads(out)
    rc2, out, err = _call(main, capsys, *args, "--policy", "sampled")
    rc3, out3, _ = _call(main, capsys, *args, "--policy", "sampled")
    assert rc == rc2 == rc3 == 0 and out == out3
    sampled = json.loads(out)
    assert greedy["policy"] == "greedy" and sampled["policy"] == "sampled"
    assert "sampled episodes" in err
    assert sampled["return_mean"] != greedy["return_mean"]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--episodes", "0"], "--episodes '0' is invalid"),
        (["--episodes", "many"], "--episodes 'many' is invalid"),
        (["--seed", "-1"], "--seed '-1' is invalid"),
        (["--seed", str(2**63)], r"--seed '9223372036854775808' is invalid: .* \[0, 92233"),
        (["--checkpoint", "newest"], "checkpoint='newest' is invalid"),
        (["--render", "episode.avi"], r"--render .*\.gif"),
        (["--policy", "random"], "--policy 'random' is invalid: allowed values are greedy, samp"),
        (["--render", __file__[:-3] + ".py"], r"--render .*\.gif"),
        (["--checkpoint", "9"], r"no checkpoint at step 9 .*available: \[8, 16\]"),
        (
            ["--episodes", "2000000000"],
            r"--episodes 2000000000: the run needs about .* sized by eval_episodes",
        ),
    ],
)
def test_bad_flags_exit_2(main, capsys, run_dir, args, match):
    rc, out, err = _call(main, capsys, run_dir, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ")
    assert re.search(match, err), err


def test_render_to_a_path_that_cannot_be_written_exits_2(main, capsys, run_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, out, err = _call(main, capsys, run_dir, "--render", str(blocker / "sub" / "e.gif"))
    assert rc == 2 and out == ""
    assert err.startswith("error: --render ") and "cannot write there" in err, err


def test_missing_folder_and_no_checkpoints(main, capsys, run_dir, tmp_path):
    rc, _, err = _call(main, capsys, str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err
    (tmp_path / "afile").write_text("")
    rc, _, err = _call(main, capsys, str(tmp_path / "afile"))
    assert rc == 2 and "is a file, not a folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(run_dir, "config.yaml"), empty / "config.yaml")
    rc, _, err = _call(main, capsys, str(empty))
    assert rc == 2 and "no checkpoints/ folder" in err
    (empty / "checkpoints").mkdir()
    rc, _, err = _call(main, capsys, str(empty))
    assert rc == 2 and "no complete checkpoint" in err


def test_render_of_an_env_without_a_renderer_exits_2_before_evaluating(
    main, capsys, run_dir, tmp_path, monkeypatch
):
    from jaxlearn import render

    monkeypatch.setattr(render, "RENDERERS", {})  # as for a user's own env
    path = tmp_path / "e.gif"
    rc, out, err = _call(main, capsys, run_dir, "--render", str(path))
    assert rc == 2 and out == ""  # no evaluation summary: refused before the episodes
    assert err.startswith("error: --render ") and "no renderer for env 'CartPole-v1'" in err
    assert "unwrapped" not in err and not path.exists()


def test_a_damaged_config_yaml_is_named_as_the_run_folder_s(main, capsys, run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "config.yaml").write_bytes(b"\x95\xff algo: ppo")
    rc, out, err = _call(main, capsys, str(copy))
    assert rc == 2 and out == ""
    assert err.startswith("error: run folder config ") and "not a UTF-8 text file" in err, err


def test_damaged_checkpoint_exit_2(run_dir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    data = os.path.join(copy, "checkpoints", "16", "state")
    for root, _, files in os.walk(data):
        if os.path.basename(root) == "d":  # the array data files of the OCDBT store
            for f in files:
                with open(os.path.join(root, f), "r+b") as fh:
                    fh.truncate(8)
    r = _subprocess(copy, "--checkpoint", "16", "--episodes", "1")
    assert r.returncode == 2 and r.stdout == ""
    # (Orbax's background threads may print asyncio noise around the message)
    assert re.search(r"^error: checkpoint step 16 .* is damaged", r.stderr, re.M), r.stderr


@pytest.mark.slow  # the script end to end: evaluates and renders a GIF
@pytest.mark.parametrize("policy", ["greedy", "sampled"])
def test_render_writes_one_frame_per_state_of_an_episode(main, capsys, run_dir, tmp_path, policy):
    from PIL import Image, ImageSequence

    path = tmp_path / "episode.gif"
    args = ("--episodes", "1", "--policy", policy, "--render", str(path))
    rc, out, err = _call(main, capsys, run_dir, *args)
    assert rc == 0, err
    frames = sum(1 for _ in ImageSequence.Iterator(Image.open(path)))
    steps = int(re.search(rf"{policy} episode of (\d+) steps", err).group(1))
    assert frames == steps + 1 and steps >= 1  # the reset state, then one frame per step
