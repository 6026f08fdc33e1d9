"""The public API: every `__all__` resolves, PPO and DQN offer the same kinds of entry points,
the top level reaches the main packages, and the console scripts exist and run."""

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import subprocess
import sys

import jax
import pytest

import jaxlearn
from jaxlearn.bench import peers as bench_peers
from jaxlearn.cli import bench as cli_bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train", "sweep", "evaluate", "bench", "results")


def _all_modules():
    names = ["jaxlearn"]
    for info in pkgutil.walk_packages(jaxlearn.__path__, "jaxlearn."):
        names.append(info.name)
    return [importlib.import_module(n) for n in names]


def test_every_name_in_every_all_resolves_and_is_public():
    with_all = [m for m in _all_modules() if hasattr(m, "__all__")]
    names = {m.__name__ for m in with_all}
    assert {"jaxlearn", "jaxlearn.algos", "jaxlearn.algos.dqn", "jaxlearn.algos.ppo"} <= names
    assert {"jaxlearn.buffers", "jaxlearn.envs", "jaxlearn.spaces"} <= names
    for module in with_all:
        listed = list(module.__all__)
        assert len(listed) == len(set(listed)), (module.__name__, listed)
        for name in listed:
            assert isinstance(name, str) and not name.startswith("_"), (module.__name__, name)
            assert getattr(module, name) is not None, (module.__name__, name)


def test_top_level_reaches_the_packages_lazily_and_rejects_unknown_names():
    assert jaxlearn.ppo is importlib.import_module("jaxlearn.algos.ppo")
    assert jaxlearn.dqn is importlib.import_module("jaxlearn.algos.dqn")
    for name in ("algos", "buffers", "distributions", "envs", "spaces"):
        assert getattr(jaxlearn, name) is importlib.import_module(f"jaxlearn.{name}")
    assert jaxlearn.make is jaxlearn.envs.make and jaxlearn.Learner is jaxlearn.algos.Learner
    assert set(jaxlearn.__all__) <= set(dir(jaxlearn))
    from jaxlearn import dqn, ppo  # the `from` form goes through the same lazy lookup

    assert (ppo, dqn) == (jaxlearn.ppo, jaxlearn.dqn)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxlearn.nope  # noqa: B018


def test_algos_all_lists_both_algorithms_and_algos_table_uses_their_entry_points():
    assert {"ppo", "dqn"} <= set(jaxlearn.algos.__all__)
    assert jaxlearn.algos.ALGOS == {
        "ppo": (jaxlearn.ppo.PPOConfig, jaxlearn.ppo.make_learner),
        "dqn": (jaxlearn.dqn.DQNConfig, jaxlearn.dqn.make_learner),
    }


def test_dqn_all_leaves_out_internals():
    internals = {"update", "make_optimizer", "make_replay", "epsilon_at", "window_init"}
    internals |= {"window_push", "Step", "NStepWindow", "exploration_noise", "ExplorationNoise"}
    assert not internals & set(jaxlearn.dqn.__all__)
    assert len(jaxlearn.dqn.__all__) < 25


@pytest.mark.parametrize(
    "algo, prefix, config",
    [
        ("ppo", "PPO", dict(total_timesteps=64, num_envs=2, num_steps=8, num_minibatches=2)),
        ("dqn", "DQN", dict(total_timesteps=64, buffer_size=32, batch_size=8, learning_starts=16)),
    ],
)
def test_ppo_and_dqn_expose_the_same_kinds_of_entry_points(algo, prefix, config):
    module = getattr(jaxlearn, algo)
    kinds = [f"{prefix}Config", f"{prefix}HParams", f"{prefix}State", "make_train"]
    kinds += ["make_learner", f"{algo}_loss", "LossInfo", "Transition"]
    assert set(kinds) <= set(module.__all__), sorted(set(kinds) - set(module.__all__))
    cfg = getattr(module, f"{prefix}Config")(hidden_sizes=(8,), **config)
    learner = module.make_learner(cfg)
    assert isinstance(learner, jaxlearn.Learner)
    assert isinstance(learner.hparams, getattr(module, f"{prefix}HParams"))
    state = jax.eval_shape(learner.init, jax.random.key(0), learner.hparams)  # traced only
    assert isinstance(state, getattr(module, f"{prefix}State"))
    assert callable(module.make_train(cfg))


def test_console_scripts_are_installed_and_point_at_the_cli_mains():
    eps = importlib.metadata.distribution("jaxlearn").entry_points
    scripts = {ep.name: ep for ep in eps if ep.group == "console_scripts"}
    assert set(scripts) == {f"jaxlearn-{name}" for name in SCRIPTS}
    bin_dir = os.path.dirname(sys.executable)
    for name in SCRIPTS:
        ep = scripts[f"jaxlearn-{name}"]
        assert ep.load() is importlib.import_module(f"jaxlearn.cli.{name}").main
        assert os.access(os.path.join(bin_dir, f"jaxlearn-{name}"), os.X_OK), name


def test_jaxlearn_train_help_exits_0_and_bad_flags_exit_2():
    exe = os.path.join(os.path.dirname(sys.executable), "jaxlearn-train")
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("usage: jaxlearn-train") and "--resume" in ok.stdout
    bad = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_scripts_are_thin_wrappers_of_the_cli_without_sys_path_edits():
    for name in SCRIPTS:
        path = os.path.join(ROOT, "scripts", f"{name}.py")
        with open(path) as f:
            assert "sys.path" not in f.read(), name
        spec = importlib.util.spec_from_file_location(f"{name}_script", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main is importlib.import_module(f"jaxlearn.cli.{name}").main


def test_jaxlearn_bench_finds_the_checkout_peer_drivers_or_says_it_needs_one(
    monkeypatch, capsys, tmp_path
):
    peers = os.path.join(ROOT, "scripts", "peers")
    assert os.path.samefile(bench_peers.REJAX_SCRIPT, os.path.join(peers, "rejax_bench.py"))
    assert os.path.samefile(bench_peers.PUREJAXRL_SCRIPT, os.path.join(peers, "purejaxrl_bench.py"))
    monkeypatch.setattr(bench_peers, "REJAX_SCRIPT", str(tmp_path / "rejax_bench.py"))
    with pytest.raises(SystemExit) as e:
        cli_bench.main(["--only", "ppo_e2e", "--peer-python", sys.executable])
    assert e.value.code == 2
    assert "source checkout" in capsys.readouterr().err
