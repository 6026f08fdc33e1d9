"""The run folder (jaxlearn.rundir): atomic creation, the one-writer lock (the holder's pid in
the error, released on exit), and `--resume` of a run stopped before its first checkpoint."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jaxlearn import rundir, runner
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.checkpoint import Checkpointer
from jaxlearn.config import ConfigError
from jaxlearn.rundir import RunConfig, RunFolderError, RunLock, RunLockedError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
TINY = PPOConfig(
    total_timesteps=256, num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(8,)
)
RUN = RunConfig(num_chunks=2, eval_episodes=0)


def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _leftovers(parent):
    return [n for n in os.listdir(parent) if ".partial-" in n]


def _lock_is_free(path):
    try:
        RunLock.acquire(path).release()
        return True
    except RunLockedError:
        return False


# ---- creation ---------------------------------------------------------------------------------


def test_create_writes_the_config_and_locks_the_new_folder(tmp_path):
    out = str(tmp_path / "run")
    folder = rundir.create(out, RUN, TINY)
    try:
        assert folder.path == out and sorted(os.listdir(out)) == ["config.yaml", "writer.lock"]
        saved = yaml.safe_load(open(os.path.join(out, "config.yaml")))
        assert rundir.resolve_config(overrides=saved) == (RUN, TINY)
        assert open(os.path.join(out, "writer.lock")).read().split()[0] == str(os.getpid())
        assert not _lock_is_free(out)
        assert _leftovers(tmp_path) == []
    finally:
        folder.release()
    assert _lock_is_free(out)
    assert open(os.path.join(out, "writer.lock")).read() == ""  # no holder recorded


@pytest.mark.parametrize("kind", ["full folder", "empty folder", "file"])
def test_create_never_reuses_or_overwrites_an_existing_path(tmp_path, kind):
    out = tmp_path / "run"
    if kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        if kind == "full folder":
            (out / "notes.txt").write_text("mine")
    before = sorted(os.listdir(out)) if out.is_dir() else out.read_text()
    with pytest.raises(RunFolderError, match="already exists; jaxlearn never overwrites"):
        rundir.create(str(out), RUN, TINY)
    assert (sorted(os.listdir(out)) if out.is_dir() else out.read_text()) == before
    assert _leftovers(tmp_path) == []


def test_the_rename_never_lands_on_a_folder_that_appeared_meanwhile(tmp_path):
    """The existence check and the rename are two steps: a populated folder made between
    them refuses the rename (numbered names try the next suffix)."""
    target = tmp_path / "run"
    target.mkdir()
    (target / "x").write_text("someone else's")
    tmp = tmp_path / ".run.partial-1"
    tmp.mkdir()
    real_lexists = os.path.lexists
    try:
        os.path.lexists = lambda p: False if os.fspath(p) == str(target) else real_lexists(p)
        with pytest.raises(RunFolderError, match="already exists"):
            rundir._rename_into_place(str(tmp), str(target), numbered=False)
        assert rundir._rename_into_place(str(tmp), str(target), numbered=True) == f"{target}-1"
    finally:
        os.path.lexists = real_lexists
    assert (target / "x").read_text() == "someone else's"


def test_a_failed_create_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.yaml, "safe_dump", broken)
    with pytest.raises(rundir.RunFolderError, match="cannot write the run folder.*No space left"):
        rundir.create(str(tmp_path / "run"), RUN, TINY)
    assert os.listdir(tmp_path) == []


def test_default_folders_get_a_suffix_on_a_clash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir, "default_path", lambda algo, env: os.path.join("runs", "same"))
    paths = []
    for _ in range(3):
        folder = rundir.create(None, RUN, TINY)
        folder.release()
        paths.append(folder.path)
    assert paths == [os.path.join("runs", p) for p in ("same", "same-1", "same-2")]
    assert all(os.path.isfile(os.path.join(p, "config.yaml")) for p in paths)


@pytest.mark.parametrize(
    "env, name",
    [
        ("CartPole-v1", "ppo_CartPole-v1_"),
        ("examples.reach_env:make", "ppo_examples.reach_env-make_"),
        ("pkg/envs.py:Make Env", "ppo_pkg-envs.py-Make-Env_"),
    ],
)
def test_a_default_folder_is_one_plain_name_whatever_the_env(env, name):
    path = rundir.default_path("ppo", env)
    assert os.path.dirname(path) == "runs" and os.path.basename(path).startswith(name), path
    assert ":" not in path and len(os.path.basename(path)) == len(name) + len("20261202-030000")


# ---- the lock ---------------------------------------------------------------------------------


def test_a_second_writer_gets_the_holders_pid(tmp_path):
    lock = RunLock.acquire(str(tmp_path))
    with pytest.raises(
        RunLockedError, match=rf"in use by another jaxlearn process \(pid {os.getpid()}\)"
    ) as info:
        RunLock.acquire(str(tmp_path))
    assert info.value.pid == os.getpid() and isinstance(info.value, ConfigError)
    lock.release()
    lock.release()  # idempotent
    RunLock.acquire(str(tmp_path)).release()


HOLDER = """
import sys
from jaxlearn.rundir import RunLock
lock = RunLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def test_the_lock_of_another_process_names_it_and_dies_with_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"\(pid {proc.pid}\)") as info:
            RunLock.acquire(str(tmp_path))
        assert info.value.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to release it: the kernel does
        proc.wait(timeout=60)
    lock = RunLock.acquire(str(tmp_path))
    assert open(tmp_path / "writer.lock").read().split()[0] == str(os.getpid())
    lock.release()


def test_resume_of_a_run_being_written_exits_2_naming_the_pid(tmp_path, capsys):
    folder = rundir.create(str(tmp_path / "run"), RUN, TINY)
    try:
        assert _train_main()(["--resume", folder.path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"pid {os.getpid()}" in err, err
        assert "Traceback" not in err
    finally:
        folder.release()


def _recording_loop(seen):
    def fake_loop(folder, run_cfg, algo_cfg, learner, devices, mode, log, stop, *rest):
        seen.append({"mode": mode, "locked": not _lock_is_free(folder.path), "cfg": run_cfg})
        if run_cfg.seed == 13:
            raise RuntimeError("boom")
        return {"run_dir": folder.path}

    return fake_loop


def test_train_and_resume_hold_the_lock_for_the_whole_loop(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "_train", _recording_loop(seen))
    out = str(tmp_path / "run")
    runner.run(RUN, TINY, out=out)
    assert seen[-1]["locked"] and _lock_is_free(out)
    with pytest.raises(RuntimeError, match="boom"):  # released on an error too
        runner.run(RunConfig(seed=13), TINY, out=str(tmp_path / "err"))
    assert seen[-1]["locked"] and _lock_is_free(str(tmp_path / "err"))
    runner.resume(out, log=lambda s: None)
    assert seen[-1]["locked"] and _lock_is_free(out)


# ---- resume before the first checkpoint -------------------------------------------------------


def test_resume_without_a_checkpoint_restarts_from_scratch_and_says_so(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "_train", _recording_loop(seen))
    out = tmp_path / "run"
    rundir.create(str(out), RUN, TINY).release()  # as a run killed before its first checkpoint
    events = out / "events.out.tfevents.1.host"
    events.write_bytes(b"old scalars")
    logs = []
    runner.resume(str(out), log=logs.append)
    assert seen == [{"mode": None, "locked": True, "cfg": RUN}]  # a fresh start, locked
    assert len(logs) == 1 and "no checkpoint yet" in logs[0], logs
    assert "restarting from scratch at update 0/4" in logs[0]
    moved = list((out / "restarted").glob("*/events.out.tfevents.1.host"))
    assert not events.exists() and len(moved) == 1 and moved[0].read_bytes() == b"old scalars"
    assert str(moved[0].parent) in logs[0]

    # an empty checkpoints/ folder (killed mid-way through the first save) is the same
    (out / "checkpoints" / "4.orbax-checkpoint-tmp-1").mkdir(parents=True)
    runner.resume(str(out), log=logs.append)
    assert seen[-1]["mode"] is None and "no checkpoint yet" in logs[-1]
    # with a checkpoint it resumes
    ckpt = Checkpointer(str(out / "checkpoints"), async_save=False)
    ckpt.save(2, {"x": np.zeros(1)}, algo="ppo", config={})
    ckpt.close()
    runner.resume(str(out), log=logs.append)
    assert seen[-1]["mode"] == "resume"


def test_resume_errors_name_the_folder(tmp_path):
    with pytest.raises(RunFolderError, match="no config.yaml there; is it a run folder"):
        runner.resume(str(tmp_path))
    out = tmp_path / "done"
    rundir.create(str(out), RUN, TINY).release()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already finished"):
        runner.resume(str(out))
    assert _lock_is_free(str(out))


@pytest.mark.slow
def test_a_restarted_run_equals_an_uninterrupted_one(tmp_path):
    """End to end through train.py: a folder with only its config resumes from scratch and
    ends where a straight run ends; the straight run's folder is locked at every report."""
    straight = str(tmp_path / "straight")
    checks = []

    def log(line):
        checks.append(not _lock_is_free(straight))

    runner.run(RUN, TINY, out=straight, log=log)
    assert checks and all(checks) and _lock_is_free(straight)
    out = tmp_path / "restarted"
    rundir.create(str(out), RUN, TINY).release()
    proc = subprocess.run(
        [sys.executable, TRAIN, "--resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("restarting from scratch") == 1
    a = json.load(open(os.path.join(straight, "metrics.json")))
    b = json.load(open(out / "metrics.json"))
    assert a["final_return_per_seed"] == b["final_return_per_seed"]
    assert a["num_updates"] == b["num_updates"] == 4


@pytest.mark.parametrize("out", ["", "   ", "{file}/run", "/proc/jaxlearn-run"])
def test_unusable_out_paths_are_user_errors_and_leave_nothing(tmp_path, out):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out = out.format(file=a_file)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(rundir.RunFolderError, match=r"--out .*(invalid|cannot create)"):
        rundir.create(out, RUN, TINY)
    assert sorted(os.listdir(tmp_path)) == before
