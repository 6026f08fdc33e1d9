"""Reward weights in the hparams reach the env the learners step, and a sweep trial's
`reward_weights.<component>` value reaches those hparams.

The rollout of an update runs before any learning and no observation depends on the reward
weights, so two updates from the same state with different weights see the same episodes:
each component's per-episode sum must scale exactly with its weight. `time_penalty` pays 1
per step, so its episode sum is `weight * episode length`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import sweep
from jaxlearn.algos import dqn, ppo

NAV = dict(
    env="Navigation2D-v0",
    env_params={"time_limit": 3.0},  # dt 0.5 s: 6-step episodes
    total_timesteps=2 * 16 * 2,
    num_envs=2,
    num_steps=16,
    num_minibatches=1,
    num_epochs=1,
    hidden_sizes=(4,),
)
COMPONENTS = ("base", "time_penalty", "collision", "completion", "efficiency")


def with_weight(hparams, **weights):
    """`hparams` with some reward weights replaced (float32 `[]`, as the configs make them)."""
    new = {**hparams.reward_weights, **{k: jnp.float32(v) for k, v in weights.items()}}
    return hparams.replace(reward_weights=new)


def batched_update(learner, lanes=3):
    """`hparams_list -> [metrics]`: one `update` per hparams from the same initial state,
    as one vmapped call (compiled once per learner; the list is padded to `lanes`)."""
    state = jax.jit(learner.init)(jax.random.key(0), learner.hparams)
    run = jax.jit(jax.vmap(learner.update, in_axes=(None, 0)))

    def updates(hparams_list):
        padded = hparams_list + hparams_list[:1] * (lanes - len(hparams_list))
        stacked = jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v) for v in x]), *padded)
        metrics = jax.device_get(run(state, stacked)[1])
        return [{k: v[i] for k, v in metrics.items()} for i in range(len(hparams_list))]

    return updates


@pytest.fixture(scope="module")
def nav_updates():
    """The PPO learner of the `NAV` config (compiling a task-env update is the slow part)."""
    return batched_update(ppo.make_learner(ppo.PPOConfig(**NAV)))


def check_scaled_time_penalty(metrics, weights, other_components):
    """Same episodes in every run; time-penalty sums = weight * lengths; the other
    components unchanged; the returns differ by exactly the time-penalty difference."""
    first = metrics[0]
    assert float(first["episode_count"]) >= 2
    for m, w in zip(metrics, weights, strict=True):
        np.testing.assert_array_equal(m["episode_count"], first["episode_count"])
        np.testing.assert_array_equal(m["episode_length_sum"], first["episode_length_sum"])
        np.testing.assert_allclose(
            m["episode_reward_time_penalty_sum"],
            w * float(first["episode_length_sum"]),
            rtol=1e-5,
            atol=1e-5,
        )
        for c in other_components:
            key = f"episode_reward_{c}_sum"
            np.testing.assert_allclose(m[key], first[key], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            m["episode_return_sum"] - first["episode_return_sum"],
            (w - weights[0]) * float(first["episode_length_sum"]),
            rtol=1e-4,
            atol=1e-3,
        )


def test_ppo_update_uses_the_reward_weights_in_its_hparams(nav_updates):
    base = ppo.PPOConfig(**NAV).hparams()
    np.testing.assert_allclose(base.reward_weights["time_penalty"], -0.01)
    weights = [0.0, -0.7, -0.01]
    metrics = nav_updates([with_weight(base, time_penalty=w) for w in weights])
    check_scaled_time_penalty(metrics, weights, [c for c in COMPONENTS if c != "time_penalty"])


def test_dqn_update_uses_the_reward_weights_in_its_hparams():
    cfg = dqn.DQNConfig(
        env="Exploration-v0",
        env_params={"time_limit": 3.0},  # dt 1 s: 3-step episodes
        total_timesteps=2 * 8 * 4,
        num_envs=2,
        train_frequency=8,
        buffer_size=64,
        batch_size=8,
        learning_starts=8,
        target_update_period=8,
        hidden_sizes=(4,),
    )
    base = cfg.hparams()
    weights = [0.0, -0.7]
    updates = batched_update(dqn.make_learner(cfg), lanes=2)
    metrics = updates([with_weight(base, time_penalty=w) for w in weights])
    others = ("collision", "completion", "exploration", "efficiency")
    check_scaled_time_penalty(metrics, weights, others)


def test_a_config_reward_weight_reaches_the_learner(nav_updates):
    """`reward_weights` in the config -> `hparams()` -> the env of an update."""
    hp = ppo.PPOConfig(**NAV, reward_weights={"time_penalty": -0.7}).hparams()
    np.testing.assert_allclose(hp.reward_weights["time_penalty"], -0.7)
    np.testing.assert_allclose(hp.reward_weights["collision"], -0.5)
    plain = ppo.PPOConfig(**NAV).hparams()
    metrics = nav_updates([plain, hp])
    check_scaled_time_penalty(
        metrics, [-0.01, -0.7], [c for c in COMPONENTS if c != "time_penalty"]
    )


@pytest.fixture(scope="module")
def nav_spec():
    raw = {
        "config": {**NAV, "hidden_sizes": [4]},
        "space": {
            "reward_weights.time_penalty": {"low": -1.0, "high": 0.0},
            "learning_rate": {"low": 1e-4, "high": 1e-3, "log": True},
        },
    }
    return sweep.spec_from_dict(raw)


def test_a_sweep_trials_reward_weight_reaches_the_hparams_it_trains_with(nav_spec, nav_updates):
    """trial params -> `trial_config` -> `static_config` (the compiled program) ->
    `trial_hparams` (the data the program runs with), as `Sweep._run_group` does."""
    trials = [
        {"reward_weights.time_penalty": 0.0, "learning_rate": 3e-4},
        {"reward_weights.time_penalty": -0.7, "learning_rate": 5e-4},
    ]
    configs = [sweep.trial_config(nav_spec, p) for p in trials]
    assert [c.reward_weights["time_penalty"] for c in configs] == [0.0, -0.7]
    statics = [sweep.static_config(nav_spec, c) for c in configs]
    # both trials share one program: the weights are data, not part of the static config
    assert sweep.static_key(statics[0]) == sweep.static_key(statics[1])
    hps = [sweep.trial_hparams(nav_spec, c, s) for c, s in zip(configs, statics, strict=True)]
    for hp, p in zip(hps, trials, strict=True):
        np.testing.assert_allclose(
            hp.reward_weights["time_penalty"], p["reward_weights.time_penalty"]
        )
        np.testing.assert_allclose(hp.learning_rate, p["learning_rate"], rtol=1e-6)
        # the weights not searched keep the base config's values
        np.testing.assert_allclose(hp.reward_weights["collision"], -0.5)
    # the program is the NAV config's, so the NAV learner runs it
    assert statics[0] == ppo.PPOConfig(**NAV)
    metrics = nav_updates(hps)
    check_scaled_time_penalty(metrics, [0.0, -0.7], [c for c in COMPONENTS if c != "time_penalty"])
    # and the batched form a sweep vmaps over holds the same values per lane
    np.testing.assert_allclose(sweep.stack(hps).reward_weights["time_penalty"], [0.0, -0.7])
