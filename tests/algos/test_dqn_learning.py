"""DQN learning runs on CartPole-v1 from the shipped experiment configs (slow: about 30-40 s
each on a 2-core CPU)."""

import jax
import numpy as np
import pytest

from jaxlearn.algos import dqn
from jaxlearn.logging import final_returns
from jaxlearn.runner import resolve_config

# Measured on the fixed seed: 500.0 (double DQN, 10 envs; with 1 env the same seed ended at
# 361.4 on a 2-core AMD EPYC, so float differences between CPUs can decide a seed) and 495.4
# (prioritized). In a 16-seed vmapped
# run of the prioritized config, the 12 seeds inspected all reached >= 470 (11 of them >= 475).
# The margin absorbs float differences (another CPU, vmap or not), which change the trajectory.
PER_THRESHOLD = 450.0


def train_from_config(path: str) -> float:
    """Final return (mean over the last 5% of updates) of the config's first seed."""
    run_cfg, cfg = resolve_config(config_file=path)
    key = jax.random.split(jax.random.key(run_cfg.seed), run_cfg.num_seeds)[0]  # as the runner
    _, metrics = jax.jit(dqn.make_train(cfg))(key)
    metrics = {k: np.asarray(v)[None] for k, v in metrics.items()}  # [1, num_updates]
    assert metrics["episode_count"].shape == (1, cfg.num_updates)
    return float(final_returns(metrics, run_cfg.final_fraction)[0])


@pytest.mark.slow
def test_dqn_solves_cartpole():
    assert train_from_config("experiments/dqn_cartpole.yaml") >= 475.0


@pytest.mark.slow
def test_prioritized_dqn_solves_cartpole():
    assert train_from_config("experiments/dqn_cartpole_per.yaml") >= PER_THRESHOLD
