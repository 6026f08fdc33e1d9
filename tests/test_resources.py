"""Memory estimates from a config: exact state sizes, the driving field named, measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxlearn import resources
from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS = 4 * 4  # CartPole: 4 float32


def test_replay_buffer_bytes_match_the_item_layout():
    cfg = DQNConfig(buffer_size=1000, batch_size=32, num_envs=4, train_frequency=4)
    est = resources.estimate(cfg)
    # obs + next_obs, action int32, reward and discount float32, valid bool
    item = 2 * OBS + 4 + 4 + 4 + 1
    size, field = est.parts["buffer"]
    assert field == "buffer_size"
    assert cfg.buffer_size * item <= size <= cfg.buffer_size * item + 64
    prio = resources.estimate(DQNConfig(buffer_size=1024, prioritized=True)).parts["buffer"][0]
    assert prio >= 1024 * item + 1024 * 4  # plus a float32 sum tree over the capacity


def test_params_and_adam_state_match_the_network():
    cfg = PPOConfig(hidden_sizes=(64, 32))
    est = resources.estimate(cfg)
    layers = [(4, 64), (64, 32)]
    torso = sum(i * o + o for i, o in layers)
    # actor and critic torsos, a 2-logit head and a 1-value head (float32)
    n = 2 * torso + (32 * 2 + 2) + (32 * 1 + 1)
    assert est.parts["params"][0] == 4 * n
    assert est.parts["opt_state"][0] >= 2 * 4 * n  # Adam: two moments


def test_scales_with_seeds_and_names_the_driver():
    cfg = DQNConfig(buffer_size=10**6)
    one, many = resources.estimate(cfg, 1), resources.estimate(cfg, 8)
    assert many.device_bytes == 8 * one.device_bytes
    assert one.largest()[0] == "buffer" and one.largest()[2] == "buffer_size"
    assert json.dumps(many.to_dict())  # plain numbers for metrics.json


@pytest.mark.parametrize(
    "cfg, seeds, episodes, field",
    [
        (DQNConfig(buffer_size=10**9), 1, 0, "buffer_size"),
        (PPOConfig(hidden_sizes=(10**6, 10**6)), 1, 0, "hidden_sizes"),
        (PPOConfig(), 10**8, 0, "num_seeds"),
        (PPOConfig(), 1, 10**9, "eval_episodes"),
    ],
)
def test_runs_that_cannot_fit_are_refused_naming_the_field(cfg, seeds, episodes, field):
    est = resources.estimate(cfg, seeds, episodes)
    with pytest.raises(ConfigError, match=rf"needs about .* but .* is 1\.0 GiB.*{field}"):
        resources.check(est, (1024**3, "test memory"))
    resources.check(resources.estimate(PPOConfig()), (1024**3, "test memory"))


def test_parse_bytes():
    assert resources.parse_bytes("8GiB") == 8 * 1024**3
    assert resources.parse_bytes("512MB") == 512 * 10**6
    assert resources.parse_bytes("1e9") == 10**9
    for bad in ("lots", "-1GB", "inf", "8XB"):
        with pytest.raises(ConfigError, match="--max-memory"):
            resources.parse_bytes(bad)


@pytest.mark.slow  # a fresh interpreter allocating a ~300 MiB replay buffer
@pytest.mark.optimized  # the memory of the program users get
def test_estimate_is_within_2x_of_the_measured_memory():
    script = textwrap.dedent(
        """
        import json
        import jax, jax.numpy as jnp
        from jaxlearn import resources
        from jaxlearn.algos.dqn import DQNConfig, make_learner

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        cfg = DQNConfig(buffer_size=6_000_000, learning_starts=0, total_timesteps=1000)
        est = resources.estimate(cfg)
        learner = make_learner(cfg)
        hp = learner.hparams
        key = jax.random.key(0)
        # compile both programs first: compilation memory is not the run's
        init = jax.jit(learner.init).lower(key, hp).compile()
        shapes = jax.eval_shape(learner.init, key, hp)
        update = jax.jit(learner.update, donate_argnums=0).lower(shapes, hp).compile()
        jnp.zeros(8).block_until_ready()
        base = rss()
        state = init(key, hp)
        for _ in range(3):
            state, m = update(state, hp)
            jax.block_until_ready(state)
        jax.block_until_ready(state)
        host = jax.device_get(state)  # what a checkpoint copies
        # resident now: the state and its host copy are alive (ru_maxrss would also count
        # the compiler's peak, reached before `base`)
        grew = rss() - base
        print(json.dumps({"est": est.device_bytes, "grew": grew}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["grew"] > 0
    ratio = got["est"] / got["grew"]
    assert 0.5 <= ratio <= 2.0, got


def test_a_run_over_max_memory_is_refused_before_its_folder_exists(tmp_path):
    from jaxlearn.runner import resolve_config, run

    run_cfg, algo_cfg = resolve_config(
        overrides={"algo": "dqn", "max_memory": "1MiB", "buffer_size": 100_000}
    )
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"max_memory=1MiB is 1\.0 MiB.*buffer_size"):
        run(run_cfg, algo_cfg, out=str(out))
    assert not out.exists()
    with pytest.raises(ConfigError, match="RunConfig.max_memory='lots'"):
        resolve_config(overrides={"max_memory": "lots"})


@pytest.mark.slow  # compiles and trains a tiny run
def test_the_estimate_is_logged_and_in_metrics_json(tmp_path):
    from jaxlearn.runner import resolve_config, run

    run_cfg, algo_cfg = resolve_config(
        overrides={"total_timesteps": 1024, "num_envs": 4, "num_steps": 64, "eval_episodes": 2}
    )
    lines: list[str] = []
    summary = run(run_cfg, algo_cfg, out=str(tmp_path / "run"), log=lines.append)
    est = resources.estimate(algo_cfg, 1, 2)
    assert summary["memory_estimate"] == est.to_dict()
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["memory_estimate"]["device_bytes"] == est.device_bytes
    assert any(line.strip().startswith("memory estimate:") for line in lines[:5])
