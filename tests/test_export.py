"""Exported policies: round trip equals the training policy, small, standalone, safe."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxlearn import rundir
from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.dqn import make_learner as make_dqn_learner
from jaxlearn.algos.dqn.train import make_agent
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo import make_learner as make_ppo_learner
from jaxlearn.algos.ppo.train import make_policy
from jaxlearn.checkpoint import CheckpointError
from jaxlearn.envs.setup import base_env, build_env
from jaxlearn.envs.wrappers import observation_normalizer
from jaxlearn.export import (
    PARAMS_FILE,
    SPEC_FILE,
    export_from_run,
    load_policy,
    load_run,
    observation_stats,
    save_policy,
)
from jaxlearn.runner import RunConfig, run

SMALL_PPO = dict(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2)
SMALL_DQN = dict(
    total_timesteps=1000, buffer_size=200, batch_size=16, learning_starts=100, hidden_sizes=(64, 64)
)


def _obs(env, env_params, n=64, seed=0):
    shape = tuple(env.observation_space(env_params).shape)
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, *shape)).astype(np.float32)


def _init_state(learner, seed=1):
    return jax.jit(learner.init)(jax.random.key(seed), learner.hparams)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "run")
    run(
        RunConfig(num_chunks=2, eval_episodes=2),
        PPOConfig(**SMALL_PPO),
        out=out,
        log=lambda s: None,
    )
    return out


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_round_trip_matches_training_policy(tmp_path, env):
    cfg = PPOConfig(env=env, action_squash="tanh" if env == "Pendulum-v1" else "clip", **SMALL_PPO)
    state = _init_state(make_ppo_learner(cfg))
    save_policy(str(tmp_path / "p"), "ppo", cfg, state.params)
    policy = load_policy(str(tmp_path / "p"))
    e, ep = base_env(cfg)
    obs = _obs(e, ep)
    expected = make_policy(cfg, e, ep).act_greedy(state.params, obs)
    np.testing.assert_array_equal(np.asarray(policy.act(obs)), np.asarray(expected))
    assert policy.spec["algo"] == "ppo" and policy.spec["config"]["env"] == env
    n = sum(x.size for x in jax.tree.leaves(state.params))
    assert policy.spec["num_parameters"] == n
    assert sorted(os.listdir(tmp_path / "p")) == [PARAMS_FILE, SPEC_FILE]
    size = sum(os.path.getsize(tmp_path / "p" / f) for f in os.listdir(tmp_path / "p"))
    assert size < 1_000_000  # 64x64 actor-critic: ~9k parameters


def test_dqn_round_trip_matches_training_policy(tmp_path):
    cfg = DQNConfig(**SMALL_DQN)
    state = _init_state(make_dqn_learner(cfg))
    save_policy(str(tmp_path / "q"), "dqn", cfg, state.params)
    policy = load_policy(str(tmp_path / "q"))
    e, ep = base_env(cfg)
    obs = _obs(e, ep)
    expected = make_agent(cfg, e, ep).greedy_action(state.params, obs)
    np.testing.assert_array_equal(np.asarray(policy.act(obs)), np.asarray(expected))
    assert len(set(np.asarray(expected).tolist())) > 1  # the comparison is not trivial
    assert set(policy.spec["config"]) == {"env", "env_kwargs", "hidden_sizes", "activation"}
    assert os.path.getsize(tmp_path / "q" / PARAMS_FILE) < 1_000_000


def test_normalized_observations_are_exported_with_their_statistics(tmp_path):
    cfg = PPOConfig(env="Pendulum-v1", normalize_observations=True, **SMALL_PPO)
    state = _init_state(make_ppo_learner(cfg))
    with pytest.raises(ValueError, match="normalize_observations=True.*obs_stats"):
        save_policy(str(tmp_path / "no_stats"), "ppo", cfg, state.params)
    assert not os.path.exists(tmp_path / "no_stats")
    save_policy(
        str(tmp_path / "p"), "ppo", cfg, state.params, obs_stats=observation_stats(state.env_state)
    )
    policy = load_policy(str(tmp_path / "p"))
    vec_env, _, _ = build_env(cfg, cfg.num_envs, normalize_observations=True)
    normalize = observation_normalizer(vec_env, state.env_state)
    e, ep = base_env(cfg)
    obs = _obs(e, ep)
    expected = make_policy(cfg, e, ep).act_greedy(state.params, normalize(obs))
    np.testing.assert_allclose(np.asarray(policy.act(obs)), np.asarray(expected), rtol=1e-6)
    assert policy.spec["observation_normalization"]["clip"] == 10.0


def test_export_from_run_loads_without_the_run(run_dir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    restored = load_run(copy, "latest")
    spec = export_from_run(copy, str(tmp_path / "policy"), seed_index=0, checkpoint="latest")
    assert spec["source"]["checkpoint_step"] == restored.step == 16
    params = jax.tree.map(lambda x: x[0], restored.state.params)
    shutil.rmtree(copy)  # no config.yaml, no checkpoints: the export stands alone
    policy = load_policy(str(tmp_path / "policy"))
    cfg = PPOConfig(**SMALL_PPO)
    e, ep = base_env(cfg)
    obs = _obs(e, ep)
    np.testing.assert_array_equal(
        np.asarray(policy.act(obs)), np.asarray(make_policy(cfg, e, ep).act_greedy(params, obs))
    )
    with pytest.raises(ValueError, match="seed_index=1 is invalid"):
        export_from_run(run_dir, str(tmp_path / "other"), seed_index=1)


@pytest.fixture(scope="module")
def cartpole():
    cfg = PPOConfig(**SMALL_PPO)
    return cfg, _init_state(make_ppo_learner(cfg)).params


def test_never_overwrites(tmp_path, cartpole):
    cfg, params = cartpole
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params)
    before = open(os.path.join(path, PARAMS_FILE), "rb").read()
    with pytest.raises(FileExistsError, match=f"{path!r} already exists"):
        save_policy(path, "ppo", cfg, jax.tree.map(lambda x: x + 1, params))
    assert open(os.path.join(path, PARAMS_FILE), "rb").read() == before
    with pytest.raises(FileExistsError, match="already exists"):
        export_from_run("/nonexistent", path)


def test_save_rejects_stacked_params_and_foreign_configs(tmp_path, cartpole):
    cfg, params = cartpole
    stacked = jax.tree.map(lambda x: np.stack([x, x]), params)
    with pytest.raises(ValueError, match="stacked seeds: pass one seed's params"):
        save_policy(str(tmp_path / "a"), "ppo", cfg, stacked)
    with pytest.raises(ValueError, match="needs a DQNConfig"):
        save_policy(str(tmp_path / "b"), "dqn", cfg, params)
    with pytest.raises(ValueError, match="cannot be exported"):
        save_policy(str(tmp_path / "c"), "sac", cfg, params)
    assert os.listdir(tmp_path) == []


def _saved(tmp_path, cartpole):
    cfg, params = cartpole
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params)
    return path


def _edit_spec(path, **changes):
    with open(os.path.join(path, SPEC_FILE)) as f:
        spec = json.load(f)
    spec.update(changes)
    with open(os.path.join(path, SPEC_FILE), "w") as f:
        json.dump(spec, f)
    return spec


def test_corrupted_params_are_refused(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    file = os.path.join(path, PARAMS_FILE)
    data = bytearray(open(file, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still decodable, caught by the hash
    open(file, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="params.msgpack does not match the SHA-256"):
        load_policy(path)
    open(file, "wb").write(bytes(data[:100]))  # truncated, and no hash to compare
    _edit_spec(path, params_sha256=None)
    with pytest.raises(ValueError, match="params.msgpack is damaged"):
        load_policy(path)


def test_params_that_do_not_fit_the_network(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    spec = json.load(open(os.path.join(path, SPEC_FILE)))
    _edit_spec(path, config={**spec["config"], "hidden_sizes": [32, 32]})
    with pytest.raises(ValueError, match="parameter .* has shape .*, the network needs"):
        load_policy(path)


@pytest.mark.parametrize(
    "changes,error,match",
    [
        ({"format": 99}, ValueError, "format 99"),
        ({"algo": "sac"}, ValueError, "algo='sac'"),
        ({"config": {"env": "CartPole-v1"}}, ValueError, "missing"),
    ],
)
def test_bad_spec(tmp_path, cartpole, changes, error, match):
    path = _saved(tmp_path, cartpole)
    _edit_spec(path, **changes)
    with pytest.raises(error, match=match):
        load_policy(path)


def test_missing_files(tmp_path, cartpole):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_policy(str(tmp_path / "nope"))
    path = _saved(tmp_path, cartpole)
    os.remove(os.path.join(path, PARAMS_FILE))
    with pytest.raises(FileNotFoundError, match="params.msgpack' is missing"):
        load_policy(path)
    os.remove(os.path.join(path, SPEC_FILE))
    with pytest.raises(FileNotFoundError, match="policy.json' is missing"):
        load_policy(path)


def test_export_reads_runs_through_rundir_and_an_edited_record_is_no_best(run_dir, tmp_path):
    """`export.load_run` is the run folder's reader; editing a checkpoint's eval_return (to
    make it "best") or its step gets it refused, and "best" ranks verified records only."""
    assert load_run is rundir.load_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    records = {s: load_run(str(copy), s).record for s in (8, 16)}
    best = max(records, key=lambda s: records[s]["eval_return"])
    other = 8 if best == 16 else 16
    assert load_run(str(copy), "best").step == best
    path = copy / "checkpoints" / str(other) / "record" / "metadata"
    record = json.loads(path.read_text())
    record["eval_return"] = 1e9
    path.write_text(json.dumps(record))
    assert load_run(str(copy), "best").step == best
    with pytest.raises(CheckpointError, match=rf"step {other} .*integrity check: its record"):
        load_run(str(copy), other)
    with pytest.raises(CheckpointError, match="integrity check: its record"):
        export_from_run(str(copy), str(tmp_path / "p"), checkpoint=other)
    assert not (tmp_path / "p").exists()
