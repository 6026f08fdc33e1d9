"""Slow learning runs on the task envs, from the shipped configs on fixed seeds."""

import os

import jax
import numpy as np
import pytest

from jaxlearn import algos
from jaxlearn.algos.base import make_train_fn
from jaxlearn.runner import resolve_config
from jaxlearn.sinks import final_episode_metrics

pytestmark = pytest.mark.optimized  # learning runs: XLA's default optimisation (conftest.py)

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments")


def _train(name, **overrides):
    run_cfg, cfg = resolve_config(config_file=os.path.join(EXPERIMENTS, name), overrides=overrides)
    learner = algos.ALGOS[run_cfg.algo][1](cfg)
    state, metrics = jax.jit(make_train_fn(learner))(jax.random.key(run_cfg.seed))
    metrics = {k: np.asarray(v)[None] for k, v in jax.device_get(metrics).items()}  # [1, U]
    return learner, jax.device_get(state), metrics


@pytest.mark.slow
def test_ppo_navigation_curriculum_reaches_advanced():
    # A uniformly random policy succeeds in about 26% of BEGINNER episodes (it must stop at
    # the goal); BEGINNER needs 70% over 100 episodes, INTERMEDIATE 60%. Before the fixes
    # of issue 22 (efficiency weight 1.0, observation lengths / the workspace) seeds stalled
    # at INTERMEDIATE; with them (and the proximity obstacle sensor) 4 seeds reached
    # ADVANCED at 55k-59k env steps and EXPERT at 303k-397k. Reaching EXPERT does not fit
    # CI's time: a single seed 0 run of 450k steps (the learning rate annealed over 450k)
    # was still at ADVANCED (success 0.28); docs/tasks.md reports the full 3M-step runs.
    learner, state, metrics = _train("navigation_curriculum.yaml", total_timesteps=150_000)
    c = state.curriculum
    names = learner.curriculum.config.names
    assert names[2] == "ADVANCED"
    assert int(c.stage) >= 2, metrics["curriculum_success_rate"][0, -10:]
    assert 0 < int(c.stage_start[1]) < int(c.stage_start[2])


@pytest.mark.slow
def test_ppo_navigation3d_curriculum_reaches_advanced():
    # The same config on Navigation3D-v0 (velocity in x, y, z; workspaces 5x5x3 m up to
    # 15x15x6 m). Seed 0 over 400k steps reached INTERMEDIATE at update 129 and ADVANCED at
    # update 161 of 195 (330k env steps); the full 3M-step runs (docs/tasks.md) go on
    # through ADVANCED to EXPERT.
    learner, state, metrics = _train(
        "navigation_curriculum.yaml", total_timesteps=400_000, env="Navigation3D-v0"
    )
    c = state.curriculum
    assert learner.curriculum.config.names[2] == "ADVANCED"
    assert int(c.stage) >= 2, metrics["curriculum_success_rate"][0, -10:]
    assert 0 < int(c.stage_start[1]) < int(c.stage_start[2])


@pytest.mark.slow
def test_ppo_exploration_curriculum_advances_on_coverage():
    # Seed 0 at 120k steps: ADVANCED, coverage 0.88 over the last 5% of updates (an episode
    # ends at 0.90 covered; issue 22's bar is 0.9 within 1M steps, docs/tasks.md).
    learner, state, metrics = _train("exploration.yaml", total_timesteps=120_000)
    assert int(state.curriculum.stage) >= 2
    assert final_episode_metrics(metrics)["coverage"] >= 0.8


@pytest.mark.slow
def test_dqn_exploration_covers_the_rooms_through_advanced():
    # exploration_dqn.yaml shortened to 100k steps, epsilon decaying over all of them (the
    # config decays over its first 300k of 1M): seed 0 reached INTERMEDIATE at 17k steps,
    # ADVANCED at 45k, and covered 0.885 of the free cells over the last 5% of updates
    # (issue 22's bar for DQN: 0.85 within 1M steps; episodes end at 0.9 covered).
    _, state, metrics = _train(
        "exploration_dqn.yaml", total_timesteps=100_000, exploration_fraction=1.0
    )
    assert int(state.curriculum.stage) >= 2, metrics["curriculum_success_rate"][0, -10:]
    assert final_episode_metrics(metrics)["coverage"] >= 0.85


@pytest.mark.slow
def test_ppo_cooperative_team_reaches_goal_in_formation():
    # cooperative.yaml as shipped (formation weight 4, learning rate 2e-3, ent_coef 0.001,
    # 2M steps; ~155 s on the 2-core CPU): issue 22's target, success >= 0.9 with a mean
    # formation score >= 0.8. Measured on seed 0: success 0.999, score 0.830 (blocked moves
    # sliding; 0.829 when they were cancelled, then 0.802 at 1M steps, 0.787 at 400k; with
    # ent_coef 0.01, 0.788 at 2M; before the formation cost, 0.52).
    _, _, metrics = _train("cooperative.yaml")
    final = final_episode_metrics(metrics)
    assert final["success"] >= 0.9, final
    assert final["cooperation"] >= 0.8, final


@pytest.mark.slow
def test_ppo_cooperative_team_learns_with_per_agent_discrete_moves():
    # Hybrid per agent: a Discrete(9) move for each agent (one shared policy, each agent's
    # own logits) and a Box comm. Measured on seed 0 at 400k steps: success 0.999,
    # cooperation 0.799 (2-core CPU; 0.770 when blocked moves were cancelled, 0.758 with
    # ent_coef 0.01).
    kwargs = {"num_agents": 3, "comm_dim": 2, "discrete_moves": True}
    _, _, metrics = _train("cooperative.yaml", total_timesteps=400_000, env_kwargs=kwargs)
    final = final_episode_metrics(metrics)
    assert final["success"] >= 0.9, final
    assert final["cooperation"] >= 0.7, final
