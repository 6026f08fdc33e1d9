"""Observation masking: the wrapper, its validation at the edge, and the training stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnax
import jax
import numpy as np
import pytest

from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.config import ConfigError, from_dict
from jaxlearn.envs.masking import MaskObservation, check_obs_mask
from jaxlearn.envs.setup import base_env, build_env

ROOT = Path(__file__).resolve().parents[2]


def test_masked_cartpole_keeps_only_the_chosen_components():
    env, params = gymnax.make("CartPole-v1")
    masked = MaskObservation(env, (0, 2))
    key = jax.random.key(3)
    full, state = env.reset(key, params)
    obs, m_state = masked.reset(key, params)
    np.testing.assert_array_equal(obs, np.asarray(full)[[0, 2]])
    step, m_step = jax.jit(env.step), jax.jit(masked.step)
    # pole falls after a few steps of one action: the episode ends and auto-resets
    for t in range(30):
        k = jax.random.fold_in(key, t)
        full, state, r, term, trunc, info = step(k, state, 1, params)
        obs, m_state, r2, term2, trunc2, info2 = m_step(k, m_state, 1, params)
        np.testing.assert_array_equal(obs, np.asarray(full)[[0, 2]])
        np.testing.assert_array_equal(
            info2["final_observation"], np.asarray(info["final_observation"])[[0, 2]]
        )
        assert (r, bool(term), bool(trunc)) == (r2, bool(term2), bool(trunc2))
    space = masked.observation_space(params)
    assert space.shape == (2,)
    np.testing.assert_allclose(space.low, [-4.8, -0.41887903], rtol=1e-6)
    np.testing.assert_allclose(space.high, [4.8, 0.41887903], rtol=1e-6)


def test_config_obs_mask_reaches_the_eval_env_and_the_training_stack():
    cfg = PPOConfig(obs_mask=(0, 2), total_timesteps=512)
    env, params = base_env(cfg)
    assert env.observation_space(params).shape == (2,)
    vec, vparams, _ = build_env(cfg, 3)
    obs, _ = vec.reset(jax.random.key(0), vparams)
    assert obs.shape == (3, 2)
    assert base_env(PPOConfig())[0].observation_space(params).shape == (4,)


@pytest.mark.parametrize(
    "mask, why",
    [((0, 4), r"in \[0, 4\)"), ((1, 1), "distinct"), ((), "non-empty"), (("a",), "indices")],
)
def test_bad_obs_mask_names_the_field(mask, why):
    env, params = gymnax.make("CartPole-v1")
    with pytest.raises(ConfigError, match=rf"X\.obs_mask=.*{why}"):
        check_obs_mask("X", mask, env, params)
    if mask and mask != ("a",):
        with pytest.raises(ConfigError, match=rf"PPOConfig\.obs_mask=.*{why}"):
            from_dict(PPOConfig, {"obs_mask": list(mask)})


def test_obs_mask_on_a_grid_observation_is_refused():
    with pytest.raises(ConfigError, match=r"PPOConfig\.obs_mask=.*1-D observation"):
        from_dict(PPOConfig, {"env": "Breakout-MinAtar", "obs_mask": "[0]"})


def test_train_script_exits_2_naming_obs_mask(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "scripts/train.py", "--set", "obs_mask=[0,7]", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "obs_mask" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
