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


def cartpole_rollout(env, params, num_envs, num_steps):
    """Reset with key 0, then `num_steps` jitted steps; the first half of the envs always
    push left, the rest right (episodes end after ~10 steps). Returns (reset obs, reset
    state, stacked `(obs, state, reward, terminated, truncated, info)`)."""
    action = (jnp.arange(num_envs) >= num_envs // 2).astype(jnp.int32)

    def run(key):
        obs, state = env.reset(key, params)

        def body(state, t):
            out = env.step(jax.random.fold_in(key, t), state, action, params)
            return out[1], out

        return obs, state, jax.lax.scan(body, state, jnp.arange(num_steps))[1]

    return jax.jit(run)(jax.random.key(0))


def cartpole_obs(state):
    """The raw CartPole observation held in a gymnax state: `[..., 4]`."""
    return np.stack([state.x, state.x_dot, state.theta, state.theta_dot], -1)


def pooled_moments(samples):
    """Mean/var of `samples` [N, ...] with RunningMeanStd's prior (weight 1e-4, mean 0, var 1)."""
    x = np.asarray(samples, np.float64)
    total = 1e-4 + x.shape[0]
    mean = x.sum(0) / total
    return mean, (1e-4 + (x**2).sum(0)) / total - mean**2


def test_normalize_observation_and_final_observation():
    env, params = make_vec("CartPole-v1", 16)
    env = NormalizeObservation(env)
    out0, state0, (out, states, _, term, trunc, info) = cartpole_rollout(env, params, 16, 30)
    # the raw observations, read from the inner gymnax state (under EpisodeStats)
    raw0 = cartpole_obs(state0.env_state.env_state)
    raw = cartpole_obs(states.env_state.env_state)  # [T, 16, 4], after any reset
    done, term = np.asarray(term | trunc), np.asarray(term)
    assert term.sum() > 16
    mean, var = pooled_moments(raw0)
    np.testing.assert_allclose(out0, (raw0 - mean) / np.sqrt(var + 1e-8), rtol=1e-4, atol=1e-4)
    for t in range(30):
        mean, var = pooled_moments(np.concatenate([raw0[None], raw[: t + 1]]).reshape(-1, 4))
        np.testing.assert_allclose(states.obs_stats.mean[t], mean, rtol=1e-4, atol=1e-5)
        scale = np.sqrt(var + 1e-8)
        np.testing.assert_allclose(out[t], (raw[t] - mean) / scale, rtol=1e-3, atol=1e-3)
        # final_observation went through the same transform: undone with the reference
        # statistics it is the observation itself where the episode goes on, and the
        # pre-reset one past CartPole's bounds (|x| > 2.4 or |theta| > 0.2095) where it ended
        fo = np.asarray(info["final_observation"][t]) * scale + mean
        np.testing.assert_allclose(fo[~done[t]], raw[t][~done[t]], rtol=1e-3, atol=1e-3)
        ended = fo[term[t]]
        assert np.all((np.abs(ended[:, 0]) > 2.4) | (np.abs(ended[:, 2]) > 0.2094))
    # the pooled outputs of the second half are centred and scaled per dimension
    late = np.asarray(out[15:]).reshape(-1, 4)
    assert np.all(np.abs(late.mean(0)) < 0.3) and np.all(np.abs(late.std(0) - 1.0) < 0.3)
    assert float(states.obs_stats.count[-1]) == np.float32(1e-4 + 16 * 31)
    # (update=False, frozen statistics: tests/envs/test_wrappers_reference.py)


def test_scale_and_clip_reward_leave_episode_return_unscaled():
    env, params = make_vec("CartPole-v1", 8)
    low, high, gamma = -0.5, 0.5, 0.99
    env = ClipReward(ScaleReward(env, gamma=gamma), low, high)
    _, _, (_, _, r, term, trunc, info) = cartpole_rollout(env, params, 8, 60)
    done = np.asarray(term | trunc)
    # NumPy reference: CartPole pays 1 per step; ret = ret * gamma + 1, restarted after done;
    # the reward is 1 / sqrt(var + eps) of every ret seen so far, then clipped
    ret, seen, expected = np.zeros(8), [], np.zeros((60, 8))
    for t in range(60):
        ret = ret * gamma + 1.0
        seen.extend(ret)
        _, var = pooled_moments(seen)
        expected[t] = np.clip(1.0 / np.sqrt(var + 1e-8), low, high)
        ret = np.where(done[t], 0.0, ret)
    np.testing.assert_allclose(r, expected, rtol=1e-3)
    assert np.any(expected == high) and np.any(expected < 0.9 * high)  # the clip binds early only
    # EpisodeStats sits below the scaling: the episode return is the raw one, 1 per step
    np.testing.assert_array_equal(info["episode_return"], info["episode_length"])
    assert done.sum() > 8 and np.all(np.asarray(info["episode_length"])[done] >= 8)
    with pytest.raises(ValueError, match="low"):
        ClipReward(env, 1.0, -1.0)


def test_vec_env_rejects_bad_num_envs():
    env, _ = make("CartPole-v1")
    with pytest.raises(ValueError, match="num_envs=0"):
        VecEnv(env, 0)
