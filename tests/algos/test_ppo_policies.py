"""The factored PPO policy: Hybrid actions (Discrete + Box leaves) and a shared policy
over an agent axis."""

import jax
import numpy as np
import pytest

from jaxlearn import distributions as D
from jaxlearn import spaces
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo.policy import make_factored_policy

CFG = PPOConfig()
HYBRID = spaces.Hybrid(
    {"choice": spaces.Discrete(3), "move": spaces.Box(-2.0, 2.0, (2,)), "grip": spaces.Discrete(2)}
)


def _init(policy, obs):
    return policy.network.init(jax.random.key(0), obs)


def test_hybrid_sample_matches_evaluate_and_env_actions_are_valid():
    policy = make_factored_policy(CFG, HYBRID, (5,))
    obs = jax.random.normal(jax.random.key(1), (64, 5))
    params = _init(policy, obs)
    action, log_prob, value = policy.sample(jax.random.key(2), params, obs)
    assert action["discrete"].shape == (64, 2) and action["continuous"].shape == (64, 2)
    lp, ent, v = policy.log_prob_entropy_value(params, obs, action)
    np.testing.assert_allclose(lp, log_prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, value, rtol=1e-6)
    # the joint log-prob is the sum of the leaves' log-probs, by hand
    (logits, mean, log_std), _ = policy.network.apply(params, obs)
    by_hand = (
        D.categorical_log_prob(logits[:, :3], action["discrete"][:, 0])
        + D.categorical_log_prob(logits[:, 3:], action["discrete"][:, 1])
        + D.gaussian_log_prob(mean, log_std, action["continuous"])
    )
    np.testing.assert_allclose(lp, by_hand, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(ent) > 0)
    env_action = policy.to_env(action)
    assert set(env_action) == {"choice", "move", "grip"}
    for i in range(64):
        assert bool(HYBRID.contains(jax.tree.map(lambda x, i=i: x[i], env_action)))
    greedy = policy.act_greedy(params, obs)
    assert bool(HYBRID.contains(jax.tree.map(lambda x: x[0], greedy)))


def test_hybrid_log_prob_is_differentiable_in_every_head():
    policy = make_factored_policy(CFG, HYBRID, (5,))
    obs = jax.random.normal(jax.random.key(1), (16, 5))
    params = _init(policy, obs)
    action, _, _ = policy.sample(jax.random.key(2), params, obs)
    grads = jax.grad(lambda p: policy.log_prob_entropy_value(p, obs, action)[0].sum())(params)
    head = grads["params"]["policy_head"]["kernel"]
    assert np.all(np.abs(np.asarray(head)).sum(0) > 0)  # every logit and mean column
    assert np.all(np.abs(np.asarray(grads["params"]["log_std"])) > 0)


def test_shared_policy_over_agents_sums_log_probs_and_averages_values():
    n = 3
    space = spaces.Hybrid(
        {"move": spaces.Box(-1.0, 1.0, (n, 2)), "comm": spaces.Box(-1.0, 1.0, (n, 4))}
    )
    policy = make_factored_policy(CFG, space, (n, 7), num_agents=n)
    obs = jax.random.normal(jax.random.key(1), (8, n, 7))
    params = _init(policy, obs)
    action, log_prob, value = policy.sample(jax.random.key(2), params, obs)
    assert action["continuous"].shape == (8, n, 6) and log_prob.shape == (8,)
    (mean, log_std), v_agents = policy.network.apply(params, obs)
    per_agent = D.gaussian_log_prob(mean, log_std, action["continuous"])  # [8, n]
    np.testing.assert_allclose(log_prob, per_agent.sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, v_agents.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(policy.value(params, obs), value, rtol=1e-6)
    env_action = policy.to_env(action)
    assert env_action["move"].shape == (8, n, 2) and env_action["comm"].shape == (8, n, 4)
    assert bool(space.contains(jax.tree.map(lambda x: x[0], env_action)))
    # parameter sharing: swapping two agents' observations swaps their action means
    swapped = obs[:, [1, 0, 2]]
    (mean_s, _), _ = policy.network.apply(params, swapped)
    np.testing.assert_allclose(mean_s[:, 0], mean[:, 1], rtol=1e-5, atol=1e-6)


def test_per_agent_discrete_and_box_leaves_in_one_shared_policy():
    # a Discrete leaf in a multi-agent env is one choice per agent; a Box leaf carries the
    # agent axis: Hybrid with both, 3 agents
    n = 3
    space = spaces.Hybrid({"move": spaces.Discrete(5), "comm": spaces.Box(-1.0, 1.0, (n, 2))})
    policy = make_factored_policy(CFG, space, (n, 7), num_agents=n)
    obs = jax.random.normal(jax.random.key(1), (16, n, 7))
    params = _init(policy, obs)
    action, log_prob, value = policy.sample(jax.random.key(2), params, obs)
    assert action["discrete"].shape == (16, n, 1) and action["continuous"].shape == (16, n, 2)
    assert log_prob.shape == value.shape == (16,)
    (logits, mean, log_std), v_agents = policy.network.apply(params, obs)
    assert logits.shape == (16, n, 5)  # each agent's own logits
    per_agent = D.categorical_log_prob(logits, action["discrete"][..., 0]) + D.gaussian_log_prob(
        mean, log_std, action["continuous"]
    )
    np.testing.assert_allclose(log_prob, per_agent.sum(-1), rtol=1e-5, atol=1e-5)
    lp, ent, v = policy.log_prob_entropy_value(params, obs, action)
    np.testing.assert_allclose(lp, log_prob, rtol=1e-5, atol=1e-5)
    by_hand = D.categorical_entropy(logits) + D.gaussian_entropy(log_std)
    np.testing.assert_allclose(ent, by_hand.sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, v_agents.mean(-1), rtol=1e-6)
    env_action = policy.to_env(action)
    assert env_action["move"].shape == (16, n) and env_action["move"].dtype == np.int32
    assert np.all((np.asarray(env_action["move"]) >= 0) & (np.asarray(env_action["move"]) < 5))
    greedy = policy.act_greedy(params, obs)
    np.testing.assert_array_equal(greedy["move"], np.argmax(np.asarray(logits), -1))
    # the choices differ between agents (each samples from its own logits)
    assert len(np.unique(np.asarray(env_action["move"]))) > 1
    # gradients reach every agent's logits through the summed log-prob
    grads = jax.grad(lambda p: policy.log_prob_entropy_value(p, obs, action)[0].sum())(params)
    head = np.asarray(grads["params"]["policy_head"]["kernel"])
    assert np.all(np.abs(head[:, :5]).sum(0) > 0)


def test_mismatched_agent_axis_is_rejected():
    with pytest.raises(ValueError, match=r"must start with the agent axis \(3, \.\.\.\)"):
        make_factored_policy(CFG, spaces.Box(-1.0, 1.0, (2, 3)), (3, 4), num_agents=3)


def test_ppo_config_on_task_envs_picks_the_policy_and_rejects_bad_env_fields():
    assert PPOConfig(env="Cooperative-v0").policy_kind() == "hybrid"
    assert PPOConfig(env="Navigation3D-v0").policy_kind() == "continuous"
    assert PPOConfig(env="Exploration-v0").policy_kind() == "discrete"
    with pytest.raises(ValueError, match="PPOConfig.env_params: unknown env parameter 'nope'"):
        PPOConfig(env="Navigation2D-v0", env_params={"nope": 1}).check_env()
    with pytest.raises(
        ValueError, match="reward_weights.nope=1.0 is invalid: must name a reward component"
    ):
        PPOConfig(env="Navigation2D-v0", reward_weights={"nope": 1.0}).check_env()
    with pytest.raises(ValueError, match="env_params.*needs a jaxlearn task env"):
        PPOConfig(env="CartPole-v1", env_params={"num_obstacles": 1}).check_env()
    with pytest.raises(ValueError, match="Navigation2D: unknown env parameter 'colour'"):
        PPOConfig(env="Navigation2D-v0", env_kwargs={"colour": "red"}).check_env()


@pytest.mark.slow
def test_ppo_update_runs_on_each_task_env():
    from jaxlearn.algos.ppo import make_learner

    for env in ("Navigation3D-v0", "Exploration-v0", "Cooperative-v0"):
        cfg = PPOConfig(
            env=env,
            num_envs=2,
            num_steps=8,
            num_minibatches=1,
            num_epochs=1,
            total_timesteps=16,
        )
        learner = make_learner(cfg)
        state = learner.init(jax.random.key(0), learner.hparams)
        state, metrics = jax.jit(learner.update)(state, learner.hparams)
        assert np.isfinite(float(metrics["loss"])), env
        assert "episode_reward_time_penalty_sum" in metrics and "episode_success_sum" in metrics
