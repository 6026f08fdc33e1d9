"""Reward components: the default weights, weighted sums, weight overrides, and user
components added to a task env with `with_components`."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import rewards as R
from jaxlearn.envs import wrappers

# the weights documented in jaxlearn.rewards, by component
DOCUMENTED = {
    "base": 1.0,
    "time_penalty": -0.01,
    "collision": -0.5,
    "completion": 10.0,
    "exploration": 0.5,
    "cooperation": 2.0,
    "efficiency": 0.01,
    "formation": 0.0,
}


def goal_distance(state, action, next_state, params):
    """A user component: minus the metres to the goal after the step."""
    return -jnp.linalg.norm(next_state.pos - next_state.goal)


def action_size(state, action, next_state, params):
    """A user component using the action and the params."""
    return jnp.sum(jnp.abs(action)) * params.max_velocity


# one base env and one extended copy for the env tests (each jit compiles once)
ENV, PARAMS = jaxlearn.make("Navigation2D-v0")
W_GOAL, W_ACTION = 0.3, -0.2
EXT = R.with_components(
    ENV, {"goal_distance": (goal_distance, W_GOAL), "action_size": (action_size, W_ACTION)}
)
EXT_PARAMS = EXT.default_params


def test_default_weights_are_the_documented_ones():
    cfg = R.RewardConfig()
    assert cfg.weights() == DOCUMENTED
    assert tuple(cfg.weights()) == R.COMPONENTS
    # each field weighs its component
    for field in dataclasses.fields(R.RewardConfig):
        w = R.RewardConfig(**{field.name: 3.5}).weights()
        changed = [k for k in w if w[k] != DOCUMENTED[k]]
        assert len(changed) == 1 and w[changed[0]] == 3.5
    # ints are numbers too
    assert R.RewardConfig(completion_bonus=5).weights()["completion"] == 5.0


@pytest.mark.parametrize(
    "field, value",
    [
        ("collision_penalty", "x"),
        ("completion_bonus", None),
        ("base_reward", True),
        ("efficiency_bonus", [1.0]),
    ],
)
def test_reward_config_rejects_non_numbers_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        R.RewardConfig(**{field: value})


def test_env_takes_its_weights_from_the_reward_config():
    env, params = jaxlearn.make("Navigation2D-v0", reward=R.RewardConfig(collision_penalty=-2.0))
    assert float(params.reward_weights["collision"]) == -2.0
    assert set(params.reward_weights) == set(env.components)
    for name in env.components:
        if name != "collision":
            assert float(params.reward_weights[name]) == pytest.approx(DOCUMENTED[name])
    # a mapping is accepted and checked too
    _, params = jaxlearn.make("Navigation2D-v0", reward={"completion_bonus": 4.0})
    assert float(params.reward_weights["completion"]) == 4.0
    with pytest.raises(ValueError, match="completion_bonus"):
        jaxlearn.make("Navigation2D-v0", reward={"completion_bonus": "big"})


def test_weighted_sum():
    comps = {"a": jnp.float32(2.0), "b": jnp.float32(3.0), "c": jnp.asarray(True)}
    weights = R.weights_array({"a": 0.5, "b": -1.0, "c": 4.0})
    reward, weighted = R.weighted_sum(comps, weights)
    expected = {"a": 0.5 * 2.0, "b": -1.0 * 3.0, "c": 4.0 * 1.0}
    assert set(weighted) == set(expected)
    for k, v in expected.items():
        assert float(weighted[k]) == pytest.approx(v)
        assert weighted[k].dtype == jnp.float32
    assert float(reward) == pytest.approx(sum(expected.values()))
    assert reward.dtype == jnp.float32
    # under jit and vmap over the weights (a sweep without recompiling)
    ws = {k: jnp.asarray([v, 2 * v]) for k, v in {"a": 0.5, "b": -1.0, "c": 4.0}.items()}
    rs = jax.jit(jax.vmap(lambda w: R.weighted_sum(comps, w)[0]))(ws)
    np.testing.assert_allclose(rs, [float(reward), 2 * float(reward)], rtol=1e-6)
    # no components: zero
    assert float(R.weighted_sum({}, {})[0]) == 0.0


def test_override_weights_replaces_and_rejects_unknown_names():
    params = PARAMS
    new = R.override_weights(params, {"collision": -2.0, "completion": 3})
    assert float(new.reward_weights["collision"]) == -2.0
    assert float(new.reward_weights["completion"]) == 3.0
    assert new.reward_weights["completion"].dtype == jnp.float32
    for k in params.reward_weights:
        if k not in ("collision", "completion"):
            assert float(new.reward_weights[k]) == float(params.reward_weights[k])
    # the input params are unchanged
    assert float(params.reward_weights["collision"]) == DOCUMENTED["collision"]
    assert set(new.reward_weights) == set(params.reward_weights)

    with pytest.raises(ValueError, match="not_a_component"):
        R.override_weights(params, {"not_a_component": 1.0})
    # exploration is a built-in component, but not one of navigation's
    with pytest.raises(ValueError, match="exploration"):
        R.override_weights(params, {"exploration": 1.0})
    with pytest.raises(ValueError, match="collision"):
        R.override_weights(params, {"collision": "high"})
    with pytest.raises(ValueError, match="collision"):
        R.override_weights(params, {"collision": False})
    # the user components of an extended env can be overridden
    p = R.override_weights(EXT_PARAMS, {"goal_distance": 1.5})
    assert float(p.reward_weights["goal_distance"]) == 1.5


def test_with_components_adds_weighted_terms_without_touching_the_env():
    names = tuple(ENV.components)
    assert EXT.reward_component_names == (*names, "goal_distance", "action_size")
    assert float(EXT_PARAMS.reward_weights["goal_distance"]) == pytest.approx(W_GOAL)
    assert float(EXT_PARAMS.reward_weights["action_size"]) == pytest.approx(W_ACTION)
    # the original env is unchanged
    assert EXT is not ENV and type(EXT) is type(ENV)
    assert ENV.reward_component_names == names
    assert dict(ENV.extra_components) == {} and dict(ENV.extra_weights) == {}
    assert set(ENV.default_params.reward_weights) == set(names)

    key, action = jax.random.key(3), jnp.asarray([0.6, -0.4], jnp.float32)
    _, s_base = jax.jit(ENV.reset)(key, PARAMS)
    _, s_ext = jax.jit(EXT.reset)(key, EXT_PARAMS)
    np.testing.assert_array_equal(s_base.pos, s_ext.pos)
    assert set(s_ext.reward_sums) == set(EXT.reward_component_names)

    k_step = jax.random.key(4)
    step_ext = jax.jit(EXT.step_env)
    obs_b, next_b, r_b, term_b, info_b = jax.jit(ENV.step_env)(k_step, s_base, action, PARAMS)
    obs_e, next_e, r_e, term_e, info_e = step_ext(k_step, s_ext, action, EXT_PARAMS)
    np.testing.assert_array_equal(obs_b, obs_e)
    np.testing.assert_array_equal(next_b.pos, next_e.pos)
    assert bool(term_b) == bool(term_e)

    comps_e = info_e["reward_components"]
    assert set(comps_e) == set(EXT.reward_component_names)
    assert set(info_b["reward_components"]) == set(names)
    expected = {
        "goal_distance": W_GOAL * float(goal_distance(s_ext, action, next_e, EXT_PARAMS)),
        "action_size": W_ACTION * float(action_size(s_ext, action, next_e, EXT_PARAMS)),
    }
    assert expected["goal_distance"] < 0.0 and expected["action_size"] < 0.0
    for name, v in expected.items():
        assert float(comps_e[name]) == pytest.approx(v, rel=1e-5)
    # the built-in components are untouched and the reward moves by exactly the new terms
    for name in names:
        assert float(comps_e[name]) == float(info_b["reward_components"][name])
    assert float(r_e) - float(r_b) == pytest.approx(sum(expected.values()), abs=1e-5)
    assert float(r_e) == pytest.approx(float(sum(comps_e.values())), abs=1e-6)
    for name, v in expected.items():
        assert float(info_e["episode_reward_components"][name]) == pytest.approx(v, rel=1e-5)
        assert float(next_e.reward_sums[name]) == pytest.approx(v, rel=1e-5)

    # a zero weight switches a user component off without recompiling
    p0 = R.override_weights(EXT_PARAMS, {"goal_distance": 0.0, "action_size": 0.0})
    r0 = step_ext(k_step, s_ext, action, p0)[2]
    assert float(r0) == pytest.approx(float(r_b), abs=1e-6)


def test_with_components_rejects_duplicates_bad_specs_and_non_task_envs():
    with pytest.raises(ValueError, match="collision"):
        R.with_components(ENV, {"collision": (goal_distance, 1.0)})
    with pytest.raises(ValueError, match="goal_distance"):
        R.with_components(EXT, {"goal_distance": (goal_distance, 1.0)})
    with pytest.raises(ValueError, match="bonus"):
        R.with_components(ENV, {"bonus": goal_distance})
    with pytest.raises(ValueError, match="bonus"):
        R.with_components(ENV, {"bonus": ("not callable", 1.0)})
    with pytest.raises(ValueError, match="name"):
        R.with_components(ENV, {"": (goal_distance, 1.0)})
    cartpole, _ = jaxlearn.make("CartPole-v1")
    with pytest.raises(ValueError, match="CartPole"):
        R.with_components(cartpole, {"bonus": (goal_distance, 1.0)})
    # a rejected call leaves the env as it was
    assert ENV.reward_component_names == tuple(ENV.components)
    # extending twice keeps both generations of components
    more = R.with_components(EXT, {"bonus": (goal_distance, 2.0)})
    assert more.reward_component_names == (*EXT.reward_component_names, "bonus")
    assert "bonus" not in EXT.reward_component_names


def test_extended_env_in_the_make_vec_stack_under_jit():
    # make_vec builds from a registered name; this is its stack around the extended env
    num_envs, num_steps = 4, 5
    venv = wrappers.VecEnv(wrappers.EpisodeStats(EXT), num_envs)
    ref, _ = jaxlearn.make_vec("Navigation2D-v0", num_envs)
    assert [type(e) for e in (venv, venv._env)] == [type(ref), type(ref._env)]
    space = venv.action_space(EXT_PARAMS)

    @jax.jit
    def run(key, params):
        k0, k1 = jax.random.split(key)
        _, state = venv.reset(k0, params)

        def body(state, k):
            k_a, k_s = jax.random.split(k)
            a = jax.vmap(space.sample)(jax.random.split(k_a, num_envs))
            obs, state, r, term, trunc, info = venv.step(k_s, state, a, params)
            return state, (obs, r, info["reward_components"], info["episode_return"])

        return jax.lax.scan(body, state, jax.random.split(k1, num_steps))[1]

    obs, r, comps, ret = run(jax.random.key(0), EXT_PARAMS)
    obs_dim = venv.observation_space(EXT_PARAMS).shape[0]
    assert obs.shape == (num_steps, num_envs, obs_dim) and r.shape == (num_steps, num_envs)
    assert set(comps) == set(EXT.reward_component_names)
    assert comps["goal_distance"].shape == (num_steps, num_envs)
    assert np.all(np.asarray(comps["goal_distance"]) < 0.0)
    np.testing.assert_allclose(sum(comps.values()), r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, np.cumsum(np.asarray(r), axis=0), rtol=1e-5, atol=1e-5)
