"""`jaxlearn.train` / `jaxlearn.load`: the CLI's equal in Python, and `episode_returns`."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import jaxlearn
from jaxlearn.config import ConfigError

TINY = {"total_timesteps": 2048, "num_envs": 4, "num_steps": 32, "num_minibatches": 2}


def test_episode_returns_divides_sums_by_counts_per_update():
    metrics = {
        "episode_return_sum": np.array([[10.0, 0.0, 9.0], [4.0, 6.0, 0.0]]),
        "episode_count": np.array([[2.0, 0.0, 3.0], [1.0, 2.0, 0.0]]),
    }
    got = jaxlearn.episode_returns(metrics)
    want = np.array([[5.0, np.nan, 3.0], [4.0, 3.0, np.nan]])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (2, 3)


def test_bad_input_is_refused_before_a_folder_exists(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="learning_rate"):
        jaxlearn.train(out=str(out), learning_rate=math.inf)
    assert not out.exists()
    with pytest.raises(ValueError, match="not a run folder"):
        jaxlearn.load(str(tmp_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return jaxlearn.train(out=str(out), num_chunks=2, eval_episodes=2, **TINY)


@pytest.mark.slow  # trains a tiny run
def test_train_writes_the_same_run_folder_as_the_script(trained):
    with open(f"{trained.path}/metrics.json") as f:
        assert json.load(f)["final_return_mean"] == trained.summary["final_return_mean"]
    assert trained.config.total_timesteps == TINY["total_timesteps"]
    assert trained.run_config.algo == "ppo"


@pytest.mark.slow
def test_load_acts_batched_and_unbatched_and_evaluates(trained):
    run = jaxlearn.load(trained.path)
    assert run.summary == json.load(open(f"{trained.path}/metrics.json"))
    env, params = jaxlearn.make(run.config.env)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(1), 5), params)
    batched = np.asarray(run.act(np.asarray(obs)))
    assert batched.shape == (5,)
    for i in range(5):  # the unbatched call gives the same action
        assert int(np.asarray(run.act(np.asarray(obs[i])))) == batched[i]
    result = run.evaluate(episodes=3, seed=0)
    assert result == run.evaluate(episodes=3, seed=0)  # deterministic
    assert result["episodes"] == 3 and 1 <= result["length_mean"] <= 500
    assert result["return_mean"] == pytest.approx(result["length_mean"])  # CartPole: 1 a step
    sampled = run.evaluate(episodes=3, seed=0, policy="sampled")
    assert sampled == run.evaluate(episodes=3, seed=0, policy="sampled")
    assert sampled["return_mean"] == pytest.approx(sampled["length_mean"])
    assert sampled["return_per_seed"] != result["return_per_seed"]
    with pytest.raises(ValueError, match="policy='mean' is invalid: allowed values are greedy"):
        run.evaluate(policy="mean")
