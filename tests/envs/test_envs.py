"""Registry, determinism under jit, vmap shapes, auto-reset and truncation, wrappers."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import spaces

import jaxlearn
from jaxlearn.envs import (
    AutoReset,
    ClipReward,
    EpisodeStats,
    NormalizeObservation,
    RunningMeanStd,
    ScaleReward,
    VecEnv,
    make,
    make_vec,
    register,
    registered_envs,
)


@struct.dataclass
class CounterState:
    t: jax.Array


@struct.dataclass
class CounterParams:
    limit: int = 3


class Counter:
    """Functional env that does NOT reset itself: obs = [t], reward 1, truncates at limit."""

    default_params = CounterParams()

    def reset(self, key, params):
        return jnp.zeros((1,), jnp.float32), CounterState(jnp.int32(0))

    def step(self, key, state, action, params):
        t = state.t + 1
        obs = jnp.array([t], jnp.float32)
        truncated = t >= params.limit
        info = {"final_observation": obs}
        return obs, CounterState(t), jnp.float32(1.0), jnp.bool_(False), truncated, info

    def observation_space(self, params):
        return spaces.Box(0, 100, (1,))

    def action_space(self, params):
        return spaces.Discrete(2)


def test_make_matches_gymnax_and_lists_names_on_error():
    env, params = make("CartPole-v1")
    genv, gparams = gymnax.make("CartPole-v1")
    assert type(env) is type(genv)
    assert params == gparams
    assert set(gymnax.registered_envs) <= set(registered_envs())
    with pytest.raises(ValueError, match="registered:.*CartPole-v1.*Pendulum-v1"):
        make("NoSuchEnv-v0")


def test_register_own_env_and_refuse_duplicates():
    name = "Counter-test-v0"
    register(name, Counter, overwrite=True)
    env, params = jaxlearn.make(name)
    assert isinstance(env, Counter) and params.limit == 3
    assert name in registered_envs()
    with pytest.raises(ValueError, match="already registered"):
        register(name, Counter)
    with pytest.raises(ValueError, match="already registered"):
        register("CartPole-v1", Counter)


def test_determinism_under_jit_and_eager():
    env, params = make("CartPole-v1")

    def rollout(key):
        obs, state = env.reset(key, params)

        def body(carry, k):
            obs, state = carry
            k_a, k_s = jax.random.split(k)
            a = jax.random.randint(k_a, (), 0, 2)
            obs, state, r, term, trunc, _ = env.step(k_s, state, a, params)
            return (obs, state), (obs, r, term)

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 50))[1]

    a = jax.jit(rollout)(jax.random.key(3))
    b = jax.jit(rollout)(jax.random.key(3))
    c = rollout(jax.random.key(3))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(x, z, rtol=1e-6, atol=1e-6)
    d = jax.jit(rollout)(jax.random.key(4))
    assert not np.array_equal(a[0], d[0])


@pytest.mark.parametrize("name", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"])
def test_vec_env_shapes(name):
    env, params = make_vec(name, 7)
    obs, state = env.reset(jax.random.key(0), params)
    obs_shape = env.observation_space(params).shape
    assert obs.shape == (7, *obs_shape)
    space = jaxlearn.spaces.from_gymnax(env.action_space(params))
    actions = jax.vmap(space.sample)(jax.random.split(jax.random.key(1), 7))
    obs, state, r, term, trunc, info = jax.jit(env.step)(jax.random.key(2), state, actions, params)
    assert obs.shape == (7, *obs_shape)
    for x in (r, term, trunc, info["episode_return"], info["episode_done"]):
        assert x.shape == (7,)
    assert info["final_observation"].shape == (7, *obs_shape)


def test_auto_reset_and_truncation_keep_final_observation():
    env = EpisodeStats(AutoReset(Counter()))
    params = CounterParams(limit=3)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    seen = []
    for i in range(7):
        obs, state, r, term, trunc, info = step(jax.random.key(i), state, 0, params)
        seen.append(
            (
                float(obs[0]),
                bool(term),
                bool(trunc),
                float(info["final_observation"][0]),
                bool(info["episode_done"]),
                float(info["episode_return"]),
            )
        )
    # t: 1, 2, 3 (truncated -> reset to 0), 1, 2, 3 (truncated), 1
    assert [s[0] for s in seen] == [1, 2, 0, 1, 2, 0, 1]
    assert [s[2] for s in seen] == [False, False, True, False, False, True, False]
    assert not any(s[1] for s in seen), "a time limit is truncation, never termination"
    assert [s[3] for s in seen] == [1, 2, 3, 1, 2, 3, 1]  # pre-reset observation
    assert [s[5] for s in seen if s[4]] == [3.0, 3.0]  # finished-episode returns


def test_gymnax_truncation_is_not_termination():
    env, params = make("CartPole-v1")
    params = params.replace(max_steps_in_episode=4)
    env = EpisodeStats(env)
    obs, state = env.reset(jax.random.key(0), params)
    for i in range(4):
        obs, state, r, term, trunc, info = env.step(jax.random.key(i), state, i % 2, params)
    assert bool(trunc) and not bool(term)
    assert int(info["episode_length"]) == 4 and bool(info["episode_done"])
    # The returned obs is the reset one; the final observation is the pre-reset one.
    assert not np.allclose(obs, info["final_observation"])
    assert int(state.episode_length) == 0


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(16, 5)).astype(np.float32) for _ in range(10)]
    rms = RunningMeanStd.create((5,))
    for b in batches:
        rms = rms.update(jnp.asarray(b))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-3, atol=1e-3)


def test_normalize_observation_and_final_observation():
    env, params = make_vec("CartPole-v1", 64)
    env = NormalizeObservation(env)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    for i in range(200):
        obs, state, r, term, trunc, info = step(
            jax.random.key(i), state, jnp.full((64,), i % 2, jnp.int32), params
        )
    # After many steps, normalised observations are roughly centred and scaled.
    assert np.all(np.abs(np.asarray(obs).mean(0)) < 1.5)
    assert float(state.obs_stats.count) > 64 * 200
    # final_observation went through the same transform as obs (equal where not done).
    done = np.asarray(term | trunc)
    fo = np.asarray(info["final_observation"])
    np.testing.assert_allclose(fo[~done], np.asarray(obs)[~done], rtol=1e-6)
    frozen = NormalizeObservation(make_vec("CartPole-v1", 4)[0], update=False)
    _, fstate = frozen.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(fstate.obs_stats.mean, np.zeros(4))


def test_scale_and_clip_reward_leave_episode_return_unscaled():
    env, params = make_vec("CartPole-v1", 8)
    env = ClipReward(ScaleReward(env, gamma=0.99), -0.05, 0.05)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    for i in range(60):
        obs, state, r, term, trunc, info = step(
            jax.random.key(i), state, jnp.zeros((8,), jnp.int32), params
        )
        assert np.all(np.abs(np.asarray(r)) <= 0.05 + 1e-7)
    ended = np.asarray(info["episode_done"])
    # CartPole pays 1 per step: raw episode returns are whole numbers, not scaled ones.
    returns = np.asarray(state.env_state.episode_return)  # ScaleReward > EpisodeStats
    assert np.all(returns == np.round(returns))
    assert ended.shape == (8,)
    with pytest.raises(ValueError, match="low"):
        ClipReward(env, 1.0, -1.0)


def test_vec_env_rejects_bad_num_envs():
    env, _ = make("CartPole-v1")
    with pytest.raises(ValueError, match="num_envs=0"):
        VecEnv(env, 0)
