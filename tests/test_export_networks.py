"""Exports of networks beyond the MLP: a recurrent policy carries its core state through
`act`/`apply`, a CNN torso and an observation mask are recorded and rebuilt, and the MLP-only
format 3 still loads."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.dqn import make_learner as make_dqn_learner
from jaxlearn.algos.dqn.train import make_agent
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo import make_learner as make_ppo_learner
from jaxlearn.checkpoint import record_hash
from jaxlearn.envs.setup import base_env
from jaxlearn.export import SPEC_FILE, load_policy, save_policy

GRU = dict(
    env="CartPole-v1",
    obs_mask=(0, 2),
    core="gru",
    core_size=8,
    hidden_sizes=(16,),
    total_timesteps=256,
    num_envs=4,
    num_steps=16,
    num_minibatches=2,
)


def _params(learner, seed=1):
    return jax.jit(learner.init)(jax.random.key(seed), learner.hparams).params


@pytest.fixture(scope="module")
def gru_policy(tmp_path_factory):
    cfg = PPOConfig(**GRU)
    params = _params(make_ppo_learner(cfg))
    path = str(tmp_path_factory.mktemp("gru") / "p")
    save_policy(path, "ppo", cfg, params)
    return cfg, params, load_policy(path)


def _reference_actions(cfg, params, obs_seq, h0):
    """Greedy actions by calling the network itself one step at a time: [T, B]."""
    env, env_params = base_env(cfg)
    from jaxlearn.algos.ppo.recurrent import make_recurrent_policy

    net = make_recurrent_policy(cfg, env, env_params).network
    h, out = h0, []
    for obs in obs_seq:
        reset = jnp.zeros((1, obs.shape[0]), bool)
        h, (logits, _) = net.apply(params, h, jnp.asarray(obs)[None], reset)
        out.append(np.argmax(np.asarray(logits[0]), axis=-1))
    return np.stack(out), h


def _acts_like_the_network(cfg, params, policy, obs_seq):
    """Step `policy.act` over `obs_seq` [T, B, ...] from its initial state; the actions and
    the final state must be the network's, stepped by hand. Returns the actions [T, B]."""
    batch = obs_seq.shape[1]
    state, got = policy.initial_state(batch), []
    for obs in obs_seq:
        action, state = policy.act(obs, state)
        got.append(np.asarray(action))
    want, h = _reference_actions(cfg, params, obs_seq, policy.initial_state(batch))
    np.testing.assert_array_equal(np.stack(got), want)
    np.testing.assert_allclose(np.asarray(state), np.asarray(h), rtol=1e-6, atol=1e-6)
    return got


def test_a_recurrent_export_carries_its_core_state(gru_policy):
    cfg, params, policy = gru_policy
    assert policy.spec["config"]["core"] == "gru" and policy.spec["config"]["obs_mask"] == [0, 2]
    assert policy.spec["observation_shape"] == [2]  # the mask is part of the policy's env
    rng = np.random.default_rng(0)
    obs_seq = rng.normal(0.0, 2.0, (12, 32, 2)).astype(np.float32)
    assert policy.initial_state(32).shape == (32, 8)
    assert not np.asarray(policy.initial_state(32)).any()
    got = _acts_like_the_network(cfg, params, policy, obs_seq)
    # the state matters: the same observations from a fresh state act differently somewhere
    fresh, _ = policy.act(obs_seq[-1], policy.initial_state(32))
    assert not np.array_equal(np.asarray(fresh), got[-1])


def test_one_observation_and_its_state_act_as_a_batch_row(gru_policy):
    _, _, policy = gru_policy
    obs = np.random.default_rng(1).normal(0.0, 2.0, (5, 2)).astype(np.float32)
    state = jnp.asarray(np.random.default_rng(2).normal(0.0, 0.5, (5, 8)), jnp.float32)
    actions, states = policy.act(obs, state)
    for i in range(5):
        a, s = policy.act(obs[i], state[i])
        assert int(a) == int(actions[i]) and s.shape == (8,)
        np.testing.assert_allclose(np.asarray(s), np.asarray(states[i]), rtol=1e-6, atol=1e-6)
    # apply is the pure function behind act, usable under jit
    a2, s2 = jax.jit(policy.apply)(policy.params, jnp.asarray(obs), state)
    np.testing.assert_array_equal(np.asarray(a2), np.asarray(actions))


def test_a_recurrent_sample_carries_the_same_state_as_act(gru_policy):
    _, _, policy = gru_policy
    obs = np.random.default_rng(3).normal(0.0, 2.0, (64, 2)).astype(np.float32)
    state = jnp.asarray(np.random.default_rng(4).normal(0.0, 0.5, (64, 8)), jnp.float32)
    greedy, after = policy.act(obs, state)
    drawn, drawn_after = policy.sample(obs, state, jax.random.key(0))
    # the core reads the observation before the action is drawn: the same next state
    np.testing.assert_allclose(np.asarray(drawn_after), np.asarray(after), rtol=1e-6, atol=1e-6)
    assert set(np.unique(np.asarray(drawn))) <= {0, 1}
    assert not np.array_equal(np.asarray(drawn), np.asarray(greedy))  # drawn, not the argmax
    a, s = policy.sample(obs[0], state[0], jax.random.key(0))
    assert np.shape(a) == () and s.shape == (8,)


@pytest.mark.parametrize(
    "state_shape", [(8,), (4, 8), (5, 7), (5, 8, 1)], ids=["unbatched", "batch", "size", "rank"]
)
def test_a_core_state_of_the_wrong_shape_is_refused_naming_both(gru_policy, state_shape):
    _, _, policy = gru_policy
    obs = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"core state has shape .*must be float \(5, 8\)"):
        policy.act(obs, np.zeros(state_shape, np.float32))


def test_a_cnn_dqn_export_rebuilds_its_torso(tmp_path):
    cfg = DQNConfig(
        env="Breakout-MinAtar",
        torso="cnn",
        cnn_channels=(4,),
        cnn_kernels=(3,),
        cnn_strides=(2,),
        layer_norm=True,
        hidden_sizes=(16,),
        total_timesteps=1000,
        buffer_size=200,
        batch_size=16,
        learning_starts=100,
    )
    params = _params(make_dqn_learner(cfg))
    save_policy(str(tmp_path / "q"), "dqn", cfg, params)
    policy = load_policy(str(tmp_path / "q"))
    assert policy.spec["config"]["torso"] == "cnn" and policy.spec["config"]["cnn_strides"] == [2]
    env, env_params = base_env(cfg)
    shape = tuple(env.observation_space(env_params).shape)
    obs = (np.random.default_rng(0).random((16, *shape)) < 0.3).astype(np.float32)
    expected = make_agent(cfg, env, env_params).greedy_action(params, jnp.asarray(obs))
    np.testing.assert_array_equal(np.asarray(policy.act(obs)), np.asarray(expected))
    assert len(set(np.asarray(expected).tolist())) > 1  # the comparison is not trivial


def _rewrite(path, edit):
    file = os.path.join(path, SPEC_FILE)
    spec = json.load(open(file))
    edit(spec)
    spec["sha256"] = record_hash(spec)
    json.dump(spec, open(file, "w"))


def test_a_format_3_export_loads_as_the_mlp_it_was(tmp_path):
    cfg = PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2)
    params = _params(make_ppo_learner(cfg))
    path = str(tmp_path / "p")
    save_policy(path, "ppo", cfg, params)
    new = ("torso", "cnn_channels", "cnn_kernels", "cnn_strides", "layer_norm")

    def as_format_3(spec):  # what format 3 wrote: MLP fields only
        spec["format"] = 3
        for name in (*new, "core", "core_size", "obs_mask"):
            del spec["config"][name]

    _rewrite(path, as_format_3)
    obs = np.random.default_rng(0).normal(0.0, 2.0, (16, 4)).astype(np.float32)
    policy = load_policy(path)
    assert policy.initial_state is None
    assert policy.act(obs).shape == (16,)
    _rewrite(path, lambda s: s.update(format=4))  # format 4 needs them
    with pytest.raises(ValueError, match=r"config fields unknown \[\], missing \['cnn_channels'"):
        load_policy(path)


def test_a_stacked_lstm_export_carries_both_layers_cells_and_hidden_states(tmp_path):
    cfg = PPOConfig(**{**GRU, "core": "lstm"}, core_layers=2)
    params = _params(make_ppo_learner(cfg))
    save_policy(str(tmp_path / "p"), "ppo", cfg, params)
    policy = load_policy(str(tmp_path / "p"))
    assert policy.spec["config"]["core_layers"] == 2
    assert policy.initial_state(6).shape == (6, 2 * 2 * 8)  # per layer: cell, then hidden
    obs_seq = np.random.default_rng(3).normal(0.0, 2.0, (5, 6, 2)).astype(np.float32)
    _acts_like_the_network(cfg, params, policy, obs_seq)


def test_a_runs_act_takes_and_returns_the_core_state_of_a_recurrent_policy(gru_policy):
    from jaxlearn.api import Run

    _, _, policy = gru_policy
    run = Run.__new__(Run)  # a run whose best checkpoint's policy is already loaded
    run._policies = {(0, "best"): policy}
    obs = np.random.default_rng(4).normal(0.0, 2.0, (5, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"recurrent \(core: gru\): pass its core state"):
        run.act(obs)
    action, state = run.act(obs, state=policy.initial_state(5))
    want_action, want_state = policy.act(obs, policy.initial_state(5))
    np.testing.assert_array_equal(np.asarray(action), np.asarray(want_action))
    np.testing.assert_array_equal(np.asarray(state), np.asarray(want_state))
