"""Batched sweeps: hyperparameters as data, spec validation, Optuna study, pruning, resume."""

import csv
import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest
import yaml

from jaxlearn import sweep
from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.dqn import make_train as dqn_train
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo import make_train as ppo_train
from jaxlearn.runner import resolve_config

ROOT = os.path.join(os.path.dirname(__file__), "..")
SWEEP = os.path.join(ROOT, "scripts", "sweep.py")
TINY_PPO = dict(total_timesteps=2048, num_envs=4, num_steps=64, hidden_sizes=(16,))


def _close(a, b, rtol=1e-4, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _vmapped_equals_separate(configs, make_train):
    keys = jax.random.split(jax.random.key(3), len(configs))
    hp = sweep.batched_hparams(configs)
    state, metrics = jax.jit(jax.vmap(make_train(configs[0])))(keys, hp)
    for i, cfg in enumerate(configs):
        s_i, m_i = jax.jit(make_train(cfg))(keys[i])
        _close(jax.tree.map(lambda x, i=i: x[i], state.params), s_i.params)
        _close({k: v[i] for k, v in metrics.items()}, m_i)
    return metrics


@pytest.mark.slow
def test_a_vmapped_batch_of_ppo_configs_equals_separate_runs():
    base = PPOConfig(**TINY_PPO)
    configs = [
        base,
        dataclasses.replace(base, learning_rate=1e-3, ent_coef=0.0, gamma=0.9),
        dataclasses.replace(base, clip_eps=0.1, gae_lambda=0.8, vf_coef=1.0, max_grad_norm=0.1),
    ]
    metrics = _vmapped_equals_separate(configs, ppo_train)
    # the configs really differ: their losses do
    assert len({round(float(x), 6) for x in metrics["loss"][:, -1]}) == 3


@pytest.mark.slow
@pytest.mark.optimized  # at XLA's level 0 the two programs' losses drift apart by up to 3e-5
def test_a_vmapped_batch_of_dqn_configs_equals_separate_runs():
    base = DQNConfig(
        total_timesteps=600,
        buffer_size=200,
        batch_size=16,
        learning_starts=100,
        target_update_period=50,
        hidden_sizes=(16,),
    )
    configs = [
        base,
        dataclasses.replace(base, learning_rate=1e-3, target_update_period=100, tau=0.5),
        dataclasses.replace(base, gamma=0.9, epsilon_end=0.2, exploration_fraction=0.2),
    ]
    _vmapped_equals_separate(configs, dqn_train)


@pytest.mark.slow
def test_reward_weights_and_curriculum_thresholds_are_data():
    base = PPOConfig(
        env="Exploration-v0",
        total_timesteps=1024,
        num_envs=4,
        num_steps=64,
        hidden_sizes=(16,),
        curriculum="default",
    )
    hp = base.hparams()
    assert set(hp.reward_weights) >= {"time_penalty", "collision", "exploration"}
    assert hp.curriculum["success_rate"].shape == (4,)
    weights = dict(base.reward_weights or {}, exploration=2.0, time_penalty=-0.5)
    table = sweep._curriculum_dict(base)
    for s in table["stages"]:
        s["success_rate"] = 0.0
        s["min_episodes"] = 1
    other = dataclasses.replace(base, reward_weights=weights, curriculum=table)
    metrics = _vmapped_equals_separate([base, other], ppo_train)
    # with zero thresholds the second config climbs stages; the default one does not
    assert metrics["curriculum_stage"][1, -1] > metrics["curriculum_stage"][0, -1]


def test_batched_hparams_rejects_configs_that_change_the_program():
    a = PPOConfig(**TINY_PPO)
    with pytest.raises(ValueError, match=r"config 1 differs from config 0 in \['hidden_sizes'\]"):
        sweep.batched_hparams([a, dataclasses.replace(a, hidden_sizes=(32,))])
    # gamma is program state when the reward normaliser uses it
    n = dataclasses.replace(a, normalize_rewards=True)
    with pytest.raises(ValueError, match=r"\['gamma'\]"):
        sweep.batched_hparams([n, dataclasses.replace(n, gamma=0.9)])


# ----------------------------------------------------------------------- the spec


def _spec(**over):
    raw = {
        "config": {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "hidden_sizes": [16]},
        "num_trials": 4,
        "batch_size": 4,
        "num_chunks": 4,
        "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    raw.update(over)
    return sweep.spec_from_dict(raw)


@pytest.mark.parametrize(
    "over, match",
    [
        ({"space": {"lr": {"low": 0.1, "high": 0.2}}}, r"unknown parameter 'lr'; allowed: "),
        ({"space": {"gamma": {"low": 0.99, "high": 0.9}}}, r"low \(0.99\) must be <= high"),
        (
            {"space": {"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}},
            r"a log scale needs low > 0",
        ),
        ({"space": {"gamma": {"low": 0.9, "high": 1.5}}}, r"space.gamma: the value 1.5 .*gamma"),
        ({"space": {"activation": {"choices": []}}}, r"must be a non-empty list"),
        ({"space": {"activation": {"choices": ["tanh", "sigmoid"]}}}, r"'sigmoid'.*activation"),
        ({"space": {"gamma": {"low": 0.9, "high": 0.99, "scale": 2}}}, r"unknown key\(s\)"),
        ({"space": {"num_seeds": {"low": 1, "high": 4}}}, r"num_seeds is a run field"),
        ({"space": {"reward_weights.collision": {"low": -1.0, "high": 0.0}}}, r"task env"),
        ({"space": {"curriculum.success_rate": {"low": 0.1, "high": 0.9}}}, r"no curriculum"),
        ({"space": {}}, r"sweep.space=\{\} is invalid"),
        ({"objective": "success"}, r"sweep.objective='success' is invalid: must be one of"),
        ({"pruner": "asha"}, r"sweep.pruner='asha' is invalid: must be one of"),
        ({"batch_size": 0}, r"sweep.batch_size=0 is invalid"),
        ({"trials": 3}, r"unknown key\(s\) \['trials'\]"),
        ({"devices": 0}, r"sweep.devices=0 is invalid: .*'auto', 'all' or a count in 1"),
        ({"devices": 99}, r"sweep.devices=99 is invalid"),
        ({"devices": "gpu"}, r"sweep.devices='gpu' is invalid"),
    ],
)
def test_bad_specs_are_rejected_before_anything_runs(over, match):
    with pytest.raises(ValueError, match=match):
        _spec(**over)


def test_curriculum_and_reward_parameters_resolve_to_the_stage_table():
    spec = _spec(
        config={"env": "Exploration-v0", "curriculum": "default", "total_timesteps": 2048},
        space={
            "curriculum.INTERMEDIATE.success_rate": {"low": 0.3, "high": 0.9},
            "curriculum.min_episodes": {"low": 10, "high": 50},
            "reward_weights.exploration": {"low": 0.5, "high": 2.0},
        },
    )
    params = {
        "curriculum.INTERMEDIATE.success_rate": 0.42,
        "curriculum.min_episodes": 20,
        "reward_weights.exploration": 1.5,
    }
    cfg = sweep.trial_config(spec, params)
    stages = cfg.curriculum["stages"]
    assert stages[1]["success_rate"] == 0.42 and stages[0]["success_rate"] == 0.7
    assert all(s["min_episodes"] == 20 for s in stages)
    static = sweep.static_config(spec, cfg)
    assert sweep.static_key(static) == sweep.static_key(sweep.static_config(spec, spec.algo_cfg))
    hp = sweep.trial_hparams(spec, cfg, static)
    np.testing.assert_allclose(hp.curriculum["success_rate"], [0.7, 0.42, 0.5, 0.4])
    assert float(hp.reward_weights["exploration"]) == 1.5
    with pytest.raises(ValueError, match=r"no stage 'MASTER'"):
        sweep.trial_config(spec, {"curriculum.MASTER.success_rate": 0.5})


# ----------------------------------------------------------------------- the study


def _rows(folder):
    with open(os.path.join(folder, "results.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_sweep_writes_results_plot_and_a_ready_best_config(tmp_path):
    config = {"env": "Exploration-v0", "total_timesteps": 2048, "num_envs": 4, "num_steps": 64}
    config.update(hidden_sizes=[16], final_fraction=0.5)  # the last 4 of 8 updates end episodes
    space = {"units": {"choices": [8, 16]}, "ent_coef": {"low": 0.0, "high": 0.05}}
    spec = _spec(config=config, space=space, objective="coverage")  # a task metric
    out = str(tmp_path / "sw")
    summary = sweep.run(spec, out, log=lambda s: None)
    assert summary["trials"]["complete"] == 4
    rows = _rows(out)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    for r in rows:  # each trial's final task metrics beside its objective
        assert 0.0 <= float(r["success"]) <= 1.0 and 0.0 < float(r["coverage"]) <= 1.0, r
        assert float(r["value"]) == pytest.approx(float(r["coverage"])), r
        assert float(r["reward_exploration"]) > 0.0, r
    assert os.path.getsize(os.path.join(out, "objective.png")) > 0
    run_cfg, algo_cfg = resolve_config(config_file=os.path.join(out, "best_config.yaml"))
    best = summary["best"]
    assert algo_cfg.hidden_sizes == (best["params"]["units"],)
    assert algo_cfg.ent_coef == pytest.approx(best["params"]["ent_coef"])
    assert max(float(r["value"]) for r in rows) == pytest.approx(best["value"])
    with pytest.raises(FileExistsError):
        sweep.run(spec, out)  # never reuses a sweep folder
    target = tmp_path / "best.yaml"
    target.write_text("mine\n")
    with pytest.raises(FileExistsError):
        sweep.export_best(out, str(target))
    assert target.read_text() == "mine\n"


@pytest.mark.slow
def test_each_architecture_compiles_once_and_trials_match_the_same_config_alone(tmp_path):
    # two architectures (one hidden layer of 8 or 16 units): each compiles once, and five
    # trials over two architectures share at least one program
    spec = _spec(
        space={"units": {"choices": [8, 16]}},
        sampler="random",
        pruner="none",
        num_trials=5,
        batch_size=5,
    )
    sw = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "a")), log=lambda s: None)
    summary = sw.run()
    archs = {t.params["units"] for t in sw.study.get_trials() if t.params}
    assert len(sw.programs) == len(archs)  # one program per architecture
    assert summary["compiles"] == sum(len(p.lane_counts) for p in sw.programs.values())
    # a trial's result does not depend on what else shared its batch
    t = sw.study.best_trial
    cfg = sweep.trial_config(spec, t.params)
    keys = sweep._trial_keys(spec, t.user_attrs["seed_index"])
    _, metrics = jax.jit(jax.vmap(ppo_train(cfg)))(keys)
    from jaxlearn.sinks import final_returns

    alone = float(np.nanmean(final_returns(jax.device_get(metrics), 0.05)))
    assert alone == pytest.approx(t.value, rel=1e-4)


def test_num_layers_and_units_build_hidden_sizes_and_fix_the_program():
    spec = _spec(space={"num_layers": {"choices": [1, 2]}, "units": {"choices": [8, 16]}})
    key = lambda p: sweep.static_key(sweep.static_config(spec, sweep.trial_config(spec, p)))  # noqa: E731
    assert sweep.trial_config(spec, {"num_layers": 2, "units": 8}).hidden_sizes == (8, 8)
    assert sweep.trial_config(spec, {"num_layers": 1, "units": 16}).hidden_sizes == (16,)
    keys = {key({"num_layers": n, "units": u}) for n in (1, 2) for u in (8, 16)}
    assert len(keys) == 4  # each architecture is its own program
    with_lr = {"num_layers": 2, "units": 8, "learning_rate": 3e-3}
    assert key(with_lr) == key({"num_layers": 2, "units": 8})  # data does not change it


def test_the_torso_is_searchable_one_program_per_network():
    # torso is a static choice like units: each network its own program, the trial configs
    # checked against the env's grid like train.py's (a bad choice exits before any trial)
    grid = {"env": "Breakout-MinAtar", "total_timesteps": 2048, "num_envs": 4, "hidden_sizes": [16]}
    space = {"torso": {"choices": ["mlp", "cnn"]}, "units": {"choices": [8, 16]}}
    spec = _spec(config={**grid, "cnn_channels": [4]}, space=space)
    key = lambda p: sweep.static_key(sweep.static_config(spec, sweep.trial_config(spec, p)))  # noqa: E731
    cnn = sweep.trial_config(spec, {"torso": "cnn", "units": 8})
    assert (cnn.torso, cnn.cnn_channels, cnn.hidden_sizes) == ("cnn", (4,), (8,))
    keys = {key({"torso": t, "units": u}) for t in ("mlp", "cnn") for u in (8, 16)}
    assert len(keys) == 4
    with pytest.raises(ValueError, match=r"sweep\.space\.torso: the value 'resnet'"):
        _spec(config=grid, space={"torso": {"choices": ["mlp", "resnet"]}})
    flat = r"sweep\.space\.torso: the value 'cnn' .* grid observation; got \(4,\)"
    with pytest.raises(ValueError, match=flat):  # a CNN on CartPole's flat observation
        _spec(space={"torso": {"choices": ["mlp", "cnn"]}})


class _PruneOdd(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials at their second report."""

    def prune(self, study, trial):
        return trial.number % 2 == 1 and len(trial.intermediate_values) >= 2


@pytest.mark.slow
def test_pruning_stops_lanes_without_changing_the_survivors(tmp_path):
    spec = _spec(
        space={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        sampler="random",
        num_trials=4,
        batch_size=4,
        num_chunks=4,
        seeds_per_trial=2,
    )
    logs = []
    sw = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "p")), log=logs.append)
    sw._pruner = lambda: _PruneOdd()
    sw.study.pruner = _PruneOdd()
    sw.run()
    trials = {t.number: t for t in sw.study.get_trials()}
    states = {n: t.state.name for n, t in trials.items()}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "PRUNED"}
    assert all(len(trials[n].intermediate_values) == 2 for n in (1, 3))
    # 4 trials x 2 seeds on 8 lanes, then the 2 survivors compacted onto 4
    assert any("4 live trial(s) on 8 lane(s)" in s for s in logs)
    assert any("2 live trial(s) on 4 lane(s)" in s for s in logs)
    # survivors equal an unpruned sweep of the same trials
    spec2 = dataclasses.replace(spec, pruner="none")
    sw2 = sweep.Sweep(spec2, sweep.new_sweep(spec2, str(tmp_path / "q")), log=lambda s: None)
    sw2.run()
    for n in (0, 2):
        t2 = sw2.study.trials[n]
        assert t2.params == trials[n].params
        assert t2.value == pytest.approx(trials[n].value, rel=1e-4)


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_reruns_only_unfinished_trials(tmp_path):
    spec = _spec(sampler="random", num_trials=4, batch_size=2)
    out = str(tmp_path / "r")
    first = sweep.run(spec, out, log=lambda s: None, stop_after_batches=1)
    assert first["stopped_after_batches"] == 1
    # simulate a kill in the middle of the next batch: a trial of this folder left RUNNING
    sw = sweep.Sweep(spec, out, log=lambda s: None)
    trial, params = sw._ask()
    done_before = {t.number: t.value for t in sw.study.get_trials() if t.value is not None}
    assert len(done_before) == 2
    summary = sweep.resume(out, log=lambda s: None)
    trials = sweep.Sweep(spec, out, log=lambda s: None).study.get_trials()
    assert summary["trials"]["complete"] == 4
    assert trials[trial.number].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1 and retry[0].params == params
    assert retry[0].user_attrs["seed_index"] == trial.number  # same seeds
    for n, v in done_before.items():  # finished trials were not run again
        assert trials[n].value == v
    assert len(_rows(out)) == len(trials) == 5


def test_sweep_script_rejects_a_bad_spec_before_making_a_folder(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        yaml.safe_dump({"space": {"learning_rate": {"low": -1.0, "high": 1.0, "log": True}}})
    )
    mod_spec = importlib.util.spec_from_file_location("sweep_script", SWEEP)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    out = tmp_path / "never"
    assert mod.main([str(spec), "--out", str(out)]) == 2
    assert "log scale needs low > 0" in capsys.readouterr().err
    assert not out.exists()
    assert mod.main(["--resume", str(tmp_path), "--num-trials", "3"]) == 2


def test_shipped_sweep_specs_are_valid():
    folder = os.path.join(ROOT, "experiments", "sweeps")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert names
    for name in names:
        spec = sweep.load_spec(os.path.join(folder, name))
        assert spec.num_trials >= spec.batch_size


def test_hparams_stack_for_vmap():
    hp = sweep.stack([PPOConfig().hparams(), PPOConfig(learning_rate=1e-3).hparams()])
    assert hp.learning_rate.shape == (2,)
    assert jnp.allclose(hp.learning_rate, jnp.asarray([2.5e-4, 1e-3]))


SHARDED_SWEEP = """
import dataclasses, json, sys
import jax
from jaxlearn import sweep

class PruneOdd(__import__("optuna").pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number % 2 == 1 and len(trial.intermediate_values) >= 2

raw = {
    "config": {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "hidden_sizes": [16]},
    "num_trials": 4, "batch_size": 4, "num_chunks": 4, "seeds_per_trial": 2,
    "sampler": "random", "devices": sys.argv[2],
    "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
}
spec = sweep.spec_from_dict(raw)
logs = []
sw = sweep.Sweep(spec, sweep.new_sweep(spec, sys.argv[1]), log=logs.append)
sw.study.pruner = PruneOdd()
sw.run()
print(json.dumps({
    "values": {t.number: t.value for t in sw.study.get_trials()},
    "states": {t.number: t.state.name for t in sw.study.get_trials()},
    "logs": logs,
}))
"""


@pytest.mark.slow
def test_trial_lanes_split_over_devices_give_the_one_device_results(tmp_path):
    # 2 forced CPU devices: 4 trials x 2 seeds on 8 lanes split 4 + 4, then the 2 trials
    # left after pruning on 4 lanes split 2 + 2; the same values as on one device.
    from forced_devices import last_json, run_on_cpu_devices

    def run(devices):
        args = ["-c", SHARDED_SWEEP, str(tmp_path / devices), devices]
        return last_json(run_on_cpu_devices(args, 2))

    split, one = run("auto"), run("1")
    assert any("4 live trial(s) on 8 lane(s) over 2 device(s)" in s for s in split["logs"])
    assert any("2 live trial(s) on 4 lane(s) over 2 device(s)" in s for s in split["logs"])
    assert all("over 1 device(s)" in s for s in one["logs"] if "lane(s)" in s)
    assert (
        split["states"]
        == one["states"]
        == {"0": "COMPLETE", "1": "PRUNED", "2": "COMPLETE", "3": "PRUNED"}
    )
    for n in ("0", "2"):
        assert split["values"][n] == pytest.approx(one["values"][n], rel=1e-4)


def test_the_objective_is_the_mean_or_the_worst_seed_of_a_trial():
    # two seeds, 20 updates: seed 0 ends every update with return 10, seed 1 with 30
    count = np.ones((2, 20))
    history = {"episode_count": count, "episode_return_sum": count * np.array([[10.0], [30.0]])}
    values = {
        objective: sweep.objective_value(_spec(objective=objective), history, None)
        for objective in ("final_return_mean", "final_return_min")
    }
    assert values == {"final_return_mean": 20.0, "final_return_min": 10.0}
    history["episode_count"] = count * np.array([[1.0], [0.0]])  # seed 1 never finishes
    assert np.isnan(sweep.objective_value(_spec(objective="final_return_min"), history, None))
