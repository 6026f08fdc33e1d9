"""Exported policies: round trip equals the training policy, small, standalone, safe; every
field validated, the record hashed and (with a key) signed, `act` checks its input."""

import hashlib
import hmac
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
from jaxlearn.checkpoint import HMAC_ENV, CheckpointError, record_hash
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
    assert set(policy.spec["config"]) == {
        "env",
        "env_kwargs",
        "env_params",
        "hidden_sizes",
        "activation",
        "torso",
        "cnn_channels",
        "cnn_kernels",
        "cnn_strides",
        "layer_norm",
        "epsilon_end",
    }
    assert os.path.getsize(tmp_path / "q" / PARAMS_FILE) < 1_000_000


# ---- sampled actions ------------------------------------------------------------------------


def test_ppo_sample_draws_from_the_policys_distribution(tmp_path, cartpole):
    cfg, params = cartpole
    head = params["params"]["policy_head"]  # a fresh head is near uniform: make it not
    head = {"kernel": head["kernel"] * 150.0, "bias": head["bias"] + np.float32([0.0, 0.7])}
    params = {"params": {**params["params"], "policy_head": head}}
    policy = load_policy(_saved(tmp_path, (cfg, params)))
    e, ep = base_env(cfg)
    obs = _obs(e, ep, n=4)
    logits, _ = make_policy(cfg, e, ep).network.apply(params, obs)
    want = np.asarray(jax.nn.softmax(logits))[:, 1]  # P(action 1) per observation
    draws = np.stack([np.asarray(policy.sample(obs, jax.random.key(i))) for i in range(2000)])
    assert set(np.unique(draws)) <= {0, 1}
    # 2000 draws: the frequency is within 4 standard errors of the probability
    np.testing.assert_allclose(draws.mean(axis=0), want, atol=4 * 0.5 / np.sqrt(2000))
    assert np.all((want > 0.05) & (want < 0.95))  # a distribution, not a fixed action
    same = policy.sample(obs, jax.random.key(7)), policy.sample(obs, jax.random.key(7))
    np.testing.assert_array_equal(*same)  # the key decides the draw
    one = policy.sample(obs[0], jax.random.key(3))
    assert np.shape(one) == () and int(one) in (0, 1)
    with pytest.raises(ValueError, match="one PRNG key"):
        policy.sample(obs, jax.random.split(jax.random.key(0), 4))


def test_dqn_sample_is_epsilon_greedy_at_the_exported_epsilon_end(tmp_path):
    e, ep = base_env(DQNConfig(**SMALL_DQN))
    obs = _obs(e, ep, n=256)
    for eps in (0.0, 1.0):
        cfg = DQNConfig(**SMALL_DQN, epsilon_end=eps)
        params = _init_state(make_dqn_learner(cfg)).params
        save_policy(str(tmp_path / f"q{eps}"), "dqn", cfg, params)
        policy = load_policy(str(tmp_path / f"q{eps}"))
        assert policy.spec["config"]["epsilon_end"] == eps
        drawn = np.asarray(policy.sample(obs, jax.random.key(0)))
        agree = np.mean(drawn == np.asarray(policy.act(obs)))
        # epsilon 0: always the greedy action; 1: uniform over 2 actions, so about half agree
        assert agree == 1.0 if eps == 0.0 else 0.35 < agree < 0.65, (eps, agree)


def test_a_format_4_dqn_export_samples_at_the_default_epsilon(tmp_path):
    cfg = DQNConfig(**SMALL_DQN, epsilon_end=1.0)
    path = str(tmp_path / "q")
    save_policy(path, "dqn", cfg, _init_state(make_dqn_learner(cfg)).params)

    def as_format_4(spec):  # what format 4 wrote: no epsilon_end
        spec["format"] = 4
        del spec["config"]["epsilon_end"]

    _edit_spec(path, as_format_4, rehash=True)
    policy = load_policy(path)
    e, ep = base_env(cfg)
    obs = _obs(e, ep, n=2000)
    agree = np.mean(np.asarray(policy.sample(obs, jax.random.key(1))) == policy.act(obs))
    assert 0.95 < agree < 0.995  # epsilon 0.05 (the default): about 97.5% greedy
    _edit_spec(path, lambda s: s.update(format=5), rehash=True)  # format 5 needs it
    with pytest.raises(ValueError, match=r"missing \['epsilon_end'\]"):
        load_policy(path)


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
    # two separately compiled programs: rounding may differ (actions of ~1e-3 by ~1e-9)
    np.testing.assert_allclose(
        np.asarray(policy.act(obs)), np.asarray(expected), rtol=1e-6, atol=1e-8
    )
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


def _edit_spec(path, edit=None, *, rehash=False, **changes):
    """Edit policy.json; `rehash`: recompute its record hash, as a forger without the key
    can (so the field checks, not the hash, must catch the edit)."""
    with open(os.path.join(path, SPEC_FILE)) as f:
        spec = json.load(f)
    spec.update(changes)
    if edit is not None:
        edit(spec)
    if rehash:  # computed here from the documented rule, not with the library's function
        unsigned = {k: v for k, v in spec.items() if k not in ("sha256", "hmac")}
        text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
        spec["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    with open(os.path.join(path, SPEC_FILE), "w") as f:
        json.dump(spec, f)
    return spec


def test_the_record_hash_covers_every_field(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    spec = json.load(open(os.path.join(path, SPEC_FILE)))
    assert spec["signed"] is False and spec["hmac"] is None  # no key set
    assert _edit_spec(path, rehash=True)["sha256"] == spec["sha256"] == record_hash(spec)
    load_policy(path)


def test_corrupted_params_are_refused(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    file = os.path.join(path, PARAMS_FILE)
    data = bytearray(open(file, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still decodable, caught by the hash
    open(file, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="params.msgpack does not match the SHA-256"):
        load_policy(path)
    truncated = bytes(data[:100])
    open(file, "wb").write(truncated)
    _edit_spec(path, rehash=True, params_sha256=hashlib.sha256(truncated).hexdigest())
    with pytest.raises(ValueError, match="params.msgpack is damaged"):
        load_policy(path)


def _flip_a_param_byte(path):
    file = os.path.join(path, PARAMS_FILE)
    data = bytearray(open(file, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(file, "wb").write(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("rehash", [False, True], ids=["edited", "edited+rehashed"])
@pytest.mark.parametrize("strip", ["removed", "null", "empty"])
def test_a_stripped_params_hash_is_refused(tmp_path, cartpole, strip, rehash):
    """The issue's row: without params_sha256, flipped params used to load."""
    path = _saved(tmp_path, cartpole)
    _flip_a_param_byte(path)

    def edit(spec):
        if strip == "removed":
            del spec["params_sha256"]
        else:
            spec["params_sha256"] = None if strip == "null" else ""

    _edit_spec(path, edit, rehash=rehash)
    if not rehash:
        match = "policy.json' failed its integrity check"
    elif strip == "removed":
        match = r"fields missing \['params_sha256'\]"
    else:
        match = r"params_sha256=.* is invalid: .* is required"
    with pytest.raises(ValueError, match=match):
        load_policy(path)


# field -> (edit, what load_policy says once the record hash is recomputed; None: loads)
SPEC_EDITS = {
    "algo": (lambda s: s.update(algo="sac"), "algo='sac' is invalid"),
    "config missing": (lambda s: s.update(config={"env": "CartPole-v1"}), "missing"),
    "config value": (
        lambda s: s["config"].update(activation="nope"),
        "its config is invalid: .*activation",
    ),
    "observation_shape": (
        lambda s: s.update(observation_shape=[5]),
        r"observation_shape=\[5\] does not match",
    ),
    "observation_shape type": (
        lambda s: s.update(observation_shape="4"),
        "observation_shape='4' is invalid",
    ),
    "observation_dtype": (
        lambda s: s.update(observation_dtype="int8"),
        "observation_dtype='int8' does not match",
    ),
    "action_space": (
        lambda s: s.update(action_space="Discrete(3, dtype=int32)"),
        r"action_space=.*Discrete\(3.* does not match",
    ),
    "policy_kind": (lambda s: s.update(policy_kind="box"), "policy_kind='box' does not match"),
    "num_parameters": (
        lambda s: s.update(num_parameters=s["num_parameters"] + 1),
        "num_parameters=.* does not match the .* parameters",
    ),
    "num_parameters type": (lambda s: s.update(num_parameters=True), "num_parameters=True"),
    "params_file": (
        lambda s: s.update(params_file="../other.msgpack"),
        "params_file='../other.msgpack' is invalid",
    ),
    "observation_normalization": (
        lambda s: s.update(observation_normalization={"mean": [0] * 4}),
        "observation_normalization must be null",
    ),
    "signed": (lambda s: s.update(signed="no"), "signed='no'"),
    "added field": (lambda s: s.update(note="hi"), r"unknown \['note'\]"),
    "removed field": (lambda s: s.pop("action_space"), r"missing \['action_space'\]"),
    "source": (lambda s: s["source"].update(seed_index=3), None),
    "env_params removed": (
        lambda s: s["env_params"].pop("gravity"),
        r"env_params must hold exactly the env's parameters: missing \['gravity'\]",
    ),
    "env_params value": (
        lambda s: s["env_params"].update(gravity="high"),
        "env_params.gravity='high' is invalid",
    ),
    "env_params non-finite": (
        lambda s: s["env_params"].update(max_steps_in_episode=1e999),
        "env_params.max_steps_in_episode holds NaN or inf",
    ),
    "env_params fraction": (
        lambda s: s["env_params"].update(max_steps_in_episode=2.5),
        r"env_params.max_steps_in_episode=2.5 must be whole numbers",
    ),
}


@pytest.mark.parametrize("field", list(SPEC_EDITS))
def test_an_edited_policy_json_field_is_refused(tmp_path, cartpole, field):
    """Any edit breaks the record hash; an edit that recomputes it is caught by the field's
    own check, naming the field (`source` is information only: it then loads)."""
    cfg, params = cartpole
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params, source={"seed_index": 0})
    load_policy(path)  # intact: loads
    edit, match = SPEC_EDITS[field]
    _edit_spec(path, edit)
    with pytest.raises(ValueError, match="policy.json' failed its integrity check: its fields"):
        load_policy(path)
    _edit_spec(path, rehash=True)
    if match is None:
        assert load_policy(path).spec["source"]["seed_index"] == 3
    else:
        with pytest.raises(ValueError, match=match):
            load_policy(path)


def test_an_export_of_the_previous_format_is_refused_with_the_reason(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    _edit_spec(path, format=1)
    with pytest.raises(ValueError, match=r"older jaxlearn \(export format 1\).*export the"):
        load_policy(path)
    _edit_spec(path, format=99)
    with pytest.raises(ValueError, match="format 99"):
        load_policy(path)


def test_params_that_do_not_fit_the_network(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    spec = json.load(open(os.path.join(path, SPEC_FILE)))
    _edit_spec(path, rehash=True, config={**spec["config"], "hidden_sizes": [32, 32]})
    with pytest.raises(ValueError, match="parameter .* has shape .*, the network needs"):
        load_policy(path)


def test_non_finite_params_are_refused(tmp_path, cartpole):
    cfg, params = cartpole
    leaves, treedef = jax.tree.flatten(params)
    bad = [np.array(x) for x in leaves]
    bad[0].flat[1] = np.nan
    with pytest.raises(ValueError, match="save_policy: parameter .* holds NaN or inf"):
        save_policy(str(tmp_path / "p"), "ppo", cfg, jax.tree.unflatten(treedef, bad))
    assert not (tmp_path / "p").exists()


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


# ---- observation normalisation statistics ------------------------------------------------------


@pytest.fixture(scope="module")
def pendulum():
    """A Pendulum PPO config with normalised observations ([3]), its params and stats."""
    cfg = PPOConfig(env="Pendulum-v1", normalize_observations=True, **SMALL_PPO)
    params = _init_state(make_ppo_learner(cfg)).params
    stats = {"mean": np.array([0.5, -0.25, 1.0]), "var": np.array([2.0, 0.5, 4.0])}
    return cfg, params, stats


# what is wrong with the statistics -> the field the error names
BAD_STATS = {
    "nan mean": ({"mean": [0.5, float("nan"), 1.0]}, r"\.mean holds NaN or inf .*index \(1,\)"),
    "inf var": ({"var": [2.0, 0.5, float("inf")]}, r"\.var holds NaN or inf .*index \(2,\)"),
    "beyond float32": ({"mean": [1e39, 0.0, 0.0]}, r"\.mean holds NaN or inf .*float32"),
    "negative var": ({"var": [2.0, -0.5, 4.0]}, r"\.var is negative at index \(1,\)"),
    "short mean": ({"mean": [0.5, 1.0]}, r"\.mean has shape \(2,\), the observation's .*\(3,\)"),
    "nested var": ({"var": [[2.0, 0.5, 4.0]]}, r"\.var has shape \(1, 3\)"),
    "text var": ({"var": ["2.0", 0.5, 4.0]}, r"\.var must hold numbers only"),
    "zero eps": ({"eps": 0.0}, r"\.eps=0\.0 is invalid"),
    "nan clip": ({"clip": float("nan")}, r"\.clip=nan is invalid"),
}


@pytest.mark.parametrize("case", list(BAD_STATS))
def test_invalid_normalization_statistics_are_refused(tmp_path, pendulum, case):
    """The issue's row: NaN, wrong-shape or negative-variance statistics loaded and acted as
    constant actions. save_policy refuses them; an edited policy.json is refused by its
    hash, and, with the hash recomputed, by the check that names the field."""
    cfg, params, stats = pendulum
    changes, match = BAD_STATS[case]
    field = "observation_normalization"
    if set(changes) <= {"mean", "var"}:
        bad = {k: np.asarray(changes.get(k, v)) for k, v in stats.items()}
        with pytest.raises(ValueError, match=rf"save_policy: obs_stats: {field}{match}"):
            save_policy(str(tmp_path / "bad"), "ppo", cfg, params, obs_stats=bad)
        assert not (tmp_path / "bad").exists()
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params, obs_stats=stats)
    load_policy(path)
    _edit_spec(path, lambda s: s[field].update(changes))
    with pytest.raises(ValueError, match="failed its integrity check"):
        load_policy(path)
    _edit_spec(path, rehash=True)
    with pytest.raises(ValueError, match=rf"load_policy .*: {field}{match}"):
        load_policy(path)


def test_normalization_statistics_are_required_when_trained_with_them(tmp_path, pendulum):
    cfg, params, stats = pendulum
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params, obs_stats=stats)
    _edit_spec(path, rehash=True, observation_normalization=None)
    with pytest.raises(ValueError, match="observation_normalization is missing, but .*=True"):
        load_policy(path)


def test_valid_statistics_normalize_as_the_formula_says(tmp_path, pendulum):
    """Reference in NumPy: clip((obs - mean) / sqrt(var + eps), -clip, clip) before the
    network."""
    cfg, params, stats = pendulum
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params, obs_stats=stats)
    policy = load_policy(path)
    norm = policy.spec["observation_normalization"]
    obs = np.random.default_rng(3).normal(0.0, 3.0, (16, 3)).astype(np.float32)
    x = (obs - stats["mean"]) / np.sqrt(stats["var"] + norm["eps"])
    x = np.clip(x, -norm["clip"], norm["clip"]).astype(np.float32)
    e, ep = base_env(cfg)
    expected = make_policy(cfg, e, ep).act_greedy(params, x)
    np.testing.assert_allclose(np.asarray(policy.act(obs)), np.asarray(expected), rtol=1e-5)


# ---- act --------------------------------------------------------------------------------------


def test_act_takes_one_observation_or_a_batch(tmp_path, cartpole, pendulum):
    cfg, params = cartpole
    path = _saved(tmp_path, cartpole)
    policy = load_policy(path)
    e, ep = base_env(cfg)
    obs = _obs(e, ep, n=32)
    expected = np.asarray(make_policy(cfg, e, ep).act_greedy(params, obs))
    assert len(set(expected.tolist())) > 1  # the comparison is not trivial
    batch = np.asarray(policy.act(obs))
    np.testing.assert_array_equal(batch, expected)
    singles = [np.asarray(policy.act(o)) for o in obs]
    assert all(a.shape == () for a in singles)  # one observation -> one action, no batch axis
    np.testing.assert_array_equal(np.stack(singles), expected)
    np.testing.assert_array_equal(np.asarray(policy.act(obs.tolist()[0])), expected[0])
    # the pure function and act under jit / vmap give the same actions
    np.testing.assert_array_equal(np.asarray(jax.jit(policy.apply)(policy.params, obs)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(policy.act)(obs)), expected)
    np.testing.assert_array_equal(np.asarray(jax.vmap(policy.act)(obs)), expected)

    pcfg, pparams, stats = pendulum  # a continuous action: [1] alone, [B, 1] in a batch
    save_policy(str(tmp_path / "q"), "ppo", pcfg, pparams, obs_stats=stats)
    cont = load_policy(str(tmp_path / "q"))
    pobs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    assert np.shape(cont.act(pobs)) == (5, 1) and np.shape(cont.act(pobs[2])) == (1,)
    np.testing.assert_allclose(
        np.asarray(cont.act(pobs[2])), np.asarray(cont.act(pobs))[2], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("shape", [(3,), (5,), (2, 3), (1, 2, 4), (), (4, 1)])
def test_act_names_the_expected_and_the_got_shape(tmp_path, cartpole, shape):
    policy = load_policy(_saved(tmp_path, cartpole))
    want = rf"observation has shape \({', '.join(map(str, shape))},?\); .*= \(4,\) .*= \(B, 4\)"
    with pytest.raises(ValueError, match=want):
        policy.act(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=want):  # the shape is checked under jit as well
        jax.jit(policy.act)(np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_act_refuses_non_finite_observations(tmp_path, cartpole, bad):
    """The issue's row: a NaN observation returned action 0 silently."""
    policy = load_policy(_saved(tmp_path, cartpole))
    obs = np.ones((3, 4), np.float32)
    obs[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf \(at index \(1, 2\)\)"):
        policy.act(obs)
    with pytest.raises(ValueError, match=r"NaN or inf \(at index \(2,\)\)"):
        policy.act(obs[1])
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.act(jax.numpy.asarray(obs))  # a device array is checked too
    with pytest.raises(TypeError, match="must be real numbers"):
        policy.act(np.ones(4, np.complex64))


# ---- signing ----------------------------------------------------------------------------------


def _doc_hash(record):
    """The documented record hash: SHA-256 of canonical JSON without `sha256` and `hmac`."""
    fields = {k: v for k, v in record.items() if k not in ("sha256", "hmac")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())


def _hmac(key, digest):
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def signed_run(run_dir, tmp_path):
    """A copy of the module's run whose checkpoint records are signed with key "k1", as
    `Checkpointer.save` signs them with $JAXLEARN_CHECKPOINT_KEY=k1 (one training run for
    the whole module)."""
    copy = tmp_path / "signed_run"
    shutil.copytree(run_dir, copy)
    for metadata in (copy / "checkpoints").glob("*/record/metadata"):
        record = json.loads(metadata.read_text())
        record["signed"] = True
        record["sha256"] = _doc_hash(record).hexdigest()
        record["hmac"] = _hmac("k1", record["sha256"])
        metadata.write_text(json.dumps(record))
    return str(copy)


def test_a_signed_run_gives_a_signed_export_verified_on_load(signed_run, tmp_path, monkeypatch):
    path = str(tmp_path / "policy")
    with pytest.raises(CheckpointError, match=f"is signed; set \\${HMAC_ENV}"):
        export_from_run(signed_run, path)  # no key: the signed run cannot be read
    assert not os.path.exists(path)
    monkeypatch.setenv(HMAC_ENV, "k1")
    run = load_run(signed_run, "latest")
    assert run.record["signed"] is True  # the checkpoint layer accepts the signed run
    spec = export_from_run(signed_run, path, checkpoint="latest")
    assert spec["signed"] is True
    assert spec["sha256"] == _doc_hash(spec).hexdigest()
    assert spec["hmac"] == _hmac("k1", spec["sha256"])  # the run's key signs the export
    params = jax.tree.map(lambda x: x[0], run.state.params)
    policy = load_policy(path)
    cfg = PPOConfig(**SMALL_PPO)
    e, ep = base_env(cfg)
    obs = _obs(e, ep)
    np.testing.assert_array_equal(
        np.asarray(policy.act(obs)), np.asarray(make_policy(cfg, e, ep).act_greedy(params, obs))
    )
    monkeypatch.setenv(HMAC_ENV, "k2")
    with pytest.raises(ValueError, match=f"missing or wrong HMAC signature .*\\${HMAC_ENV}"):
        load_policy(path)
    monkeypatch.delenv(HMAC_ENV)
    with pytest.raises(ValueError, match=f"is signed; set \\${HMAC_ENV}"):
        load_policy(path)  # a signed export cannot be verified without the key


@pytest.mark.parametrize("key", ["k1", None], ids=["key set", "no key"])
@pytest.mark.parametrize("strip", ["removed", "null", "truncated"])
def test_a_stripped_export_signature_is_refused(tmp_path, cartpole, monkeypatch, strip, key):
    """`signed: true` is under the hash: removing `hmac` (which is outside it) is refused,
    with the key and without it."""
    cfg, params = cartpole
    path = str(tmp_path / "p")
    monkeypatch.setenv(HMAC_ENV, "k1")
    save_policy(path, "ppo", cfg, params)
    load_policy(path)
    edits = {
        "removed": lambda s: s.pop("hmac"),
        "null": lambda s: s.update(hmac=None),
        "truncated": lambda s: s.update(hmac=s["hmac"][:-1]),
    }
    _edit_spec(path, edits[strip])
    if key is None:
        monkeypatch.delenv(HMAC_ENV)
    with pytest.raises(ValueError, match="says it is signed but carries no valid HMAC"):
        load_policy(path)


def _forge_unsigned(path):
    """What someone who can write the folder, without the key, can do: flip a parameter
    byte, recompute params_sha256, declare the record unsigned and recompute its hash."""
    data = _flip_a_param_byte(path)

    def edit(spec):
        spec["params_sha256"] = hashlib.sha256(data).hexdigest()
        spec["signed"] = False
        spec["hmac"] = None

    return _edit_spec(path, edit, rehash=True)


def test_with_a_key_only_exports_signed_with_it_load(tmp_path, cartpole, monkeypatch):
    cfg, params = cartpole
    unsigned = _saved(tmp_path, cartpole)
    signed = str(tmp_path / "signed")
    monkeypatch.setenv(HMAC_ENV, "k1")
    save_policy(signed, "ppo", cfg, params)
    with pytest.raises(ValueError, match=f"missing or wrong HMAC signature .*\\${HMAC_ENV}"):
        load_policy(unsigned)  # an unsigned export, while a key is set
    _forge_unsigned(signed)
    with pytest.raises(ValueError, match=f"missing or wrong HMAC signature .*\\${HMAC_ENV}"):
        load_policy(signed)


def test_without_a_key_a_recomputed_forgery_loads_as_documented(tmp_path, cartpole, monkeypatch):
    """The documented limit: without a key, the hashes catch corruption and edits that do
    not recompute them; a forger who strips the signature and recomputes both hashes gets
    an export that loads (only the key tells it apart)."""
    cfg, params = cartpole
    path = str(tmp_path / "p")
    monkeypatch.setenv(HMAC_ENV, "k1")
    save_policy(path, "ppo", cfg, params)
    monkeypatch.delenv(HMAC_ENV)
    _forge_unsigned(path)
    forged = load_policy(path)
    assert forged.spec["signed"] is False
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), forged.params, params)
    assert sum(jax.tree.leaves(changed)) == 1  # the flipped parameter is in use


# ---- env parameters -------------------------------------------------------------------------


def test_an_export_records_the_env_params_it_was_trained_with(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)
    spec = json.load(open(os.path.join(path, SPEC_FILE)))
    # gymnax's CartPole-v1 defaults
    assert spec["env_params"]["gravity"] == 9.8
    assert spec["env_params"]["max_steps_in_episode"] == 500
    assert spec["config"]["env_params"] is None
    policy = load_policy(path)
    assert policy.env_params.gravity == 9.8 and policy.env_params.max_steps_in_episode == 500


def test_env_param_overrides_and_a_curriculum_stage_are_recorded(tmp_path):
    cfg = PPOConfig(env="Navigation2D-v0", env_params={"num_obstacles": 2}, **SMALL_PPO)
    params = _init_state(make_ppo_learner(cfg)).params
    save_policy(str(tmp_path / "p"), "ppo", cfg, params)
    policy = load_policy(str(tmp_path / "p"))
    assert policy.spec["config"]["env_params"] == {"num_obstacles": 2}
    assert policy.spec["env_params"]["num_obstacles"] == 2
    assert int(policy.env_params.num_obstacles) == 2
    assert np.asarray(policy.env_params.num_obstacles).dtype == np.int32
    # the params of a later stage (as export_from_run passes them) are recorded as given
    _, base = base_env(cfg)
    stage = base.replace(num_obstacles=base.num_obstacles + 3, goal_radius=base.goal_radius * 2)
    save_policy(str(tmp_path / "q"), "ppo", cfg, params, env_params=stage)
    later = load_policy(str(tmp_path / "q")).env_params
    assert int(later.num_obstacles) == 5
    np.testing.assert_allclose(later.goal_radius, 2 * np.asarray(base.goal_radius))
    np.testing.assert_array_equal(later.workspace_size, np.asarray(base.workspace_size))
    # the params of another env do not fit
    _, cartpole_params = base_env(PPOConfig())
    with pytest.raises(ValueError, match="save_policy: env_params must hold exactly"):
        save_policy(str(tmp_path / "r"), "ppo", cfg, params, env_params=cartpole_params)
    assert not os.path.exists(tmp_path / "r")


def test_export_from_run_records_the_runs_env_params(run_dir, tmp_path):
    spec = export_from_run(run_dir, str(tmp_path / "policy"))
    assert spec["format"] == 5
    assert spec["env_params"]["x_threshold"] == 2.4 and spec["env_params"]["tau"] == 0.02


def test_a_format_2_export_loads_with_its_configs_env_params(tmp_path, cartpole):
    path = _saved(tmp_path, cartpole)

    def as_format_2(spec):  # what format 2 wrote: no env_params anywhere
        spec["format"] = 2
        del spec["env_params"]
        del spec["config"]["env_params"]

    _edit_spec(path, as_format_2, rehash=True)
    policy = load_policy(path)
    assert policy.env_params.gravity == 9.8
    _edit_spec(path, lambda s: s.update(format=3), rehash=True)  # format 3 needs them
    with pytest.raises(ValueError, match=r"fields missing \['env_params'\]"):
        load_policy(path)
