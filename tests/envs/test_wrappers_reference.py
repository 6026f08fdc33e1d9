"""`ScaleReward`, `ClipReward`, `EpisodeStats` and `NormalizeObservation` on fixed streams
against NumPy references.

The stub env replays tables chosen here (observations, rewards, terminations), already
batched over `B` envs, so every value a wrapper sees is known. The running statistics are
checked against the pooled moments of every sample seen so far plus the wrappers' prior
(a pseudo-sample of weight 1e-4 with mean 0 and variance 1), computed directly rather than
by an incremental update.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from jaxlearn.envs import ClipReward, EpisodeStats, NormalizeObservation, ScaleReward

PRIOR_COUNT = 1e-4  # RunningMeanStd starts as this weight of mean 0, variance 1


@struct.dataclass
class TableState:
    t: jax.Array


class TableEnv:
    """Batched stub env: reset returns `obs[0]`; step `t` (from 0) returns `obs[t + 1]`,
    `rewards[t]`, `terminated[t]`, `truncated[t]` and `final_obs[t]` as
    `info["final_observation"]`. Tables: obs `[T + 1, B, D]`, the others `[T, B(, D)]`."""

    def __init__(self, obs, final_obs, rewards, terminated, truncated):
        self.obs = jnp.asarray(obs, jnp.float32)
        self.final_obs = jnp.asarray(final_obs, jnp.float32)
        self.rewards = jnp.asarray(rewards, jnp.float32)
        self.terminated = jnp.asarray(terminated)
        self.truncated = jnp.asarray(truncated)

    def reset(self, key, params):
        return self.obs[0], TableState(jnp.int32(0))

    def step(self, key, state, action, params):
        t = state.t
        info = {"final_observation": self.final_obs[t]}
        return (
            self.obs[t + 1],
            TableState(t + 1),
            self.rewards[t],
            self.terminated[t],
            self.truncated[t],
            info,
        )

    def observation_space(self, params):
        return spaces.Box(-1e6, 1e6, (self.obs.shape[-1],))

    def action_space(self, params):
        return spaces.Discrete(2)


def rollout(env, num_steps, num_envs):
    """Reset, then `num_steps` steps in one jitted function: (reset obs, stacked step outputs
    `(obs, state, reward, terminated, truncated, info)` with a leading [T] axis). The first
    step runs before the scan: `EpisodeStats` over a batched env starts from scalar totals."""
    action = jnp.zeros(num_envs, jnp.int32)

    def run(key):
        obs0, state = env.reset(key, None)
        first = env.step(jax.random.fold_in(key, 0), state, action, None)

        def body(state, t):
            out = env.step(jax.random.fold_in(key, t), state, action, None)
            return out[1], out

        rest = jax.lax.scan(body, first[1], jnp.arange(1, num_steps))[1]
        # (a first step's scalar running length broadcasts to the batch)
        stack = lambda a, b: jnp.concatenate([jnp.broadcast_to(a, b.shape[1:])[None], b])
        return obs0, jax.tree.map(stack, first, rest)

    return jax.jit(run)(jax.random.key(0))


def pooled_stats(samples):
    """Mean and variance of the prior pseudo-sample together with `samples` `[N, ...]`."""
    x = np.asarray(samples, np.float64)
    total = PRIOR_COUNT + x.shape[0]
    mean = x.sum(0) / total
    second = (PRIOR_COUNT * 1.0 + (x**2).sum(0)) / total  # prior: E[x^2] = var + mean^2 = 1
    return mean, second - mean**2


def reward_stream(seed=0, T=60, B=5):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(40.0, 15.0, (T, B))
    ends = rng.uniform(size=(T, B)) < 0.12
    terminated = ends & (rng.uniform(size=(T, B)) < 0.5)
    truncated = ends & ~terminated
    obs = np.zeros((T + 1, B, 1))
    return obs, obs[1:], rewards, terminated, truncated


def scale_reward_reference(rewards, done, gamma, eps=1e-8):
    """gym NormalizeReward: ret = ret * gamma + r; the statistics take the batch of rets;
    r / sqrt(var + eps); ret restarts from 0 after a done step."""
    T, B = rewards.shape
    ret = np.zeros(B)
    seen, scaled, rets = [], np.zeros((T, B)), np.zeros((T, B))
    for t in range(T):
        ret = ret * gamma + rewards[t]
        seen.extend(ret)
        _, var = pooled_stats(seen)
        scaled[t] = rewards[t] / np.sqrt(var + eps)
        ret = np.where(done[t], 0.0, ret)
        rets[t] = ret
    return scaled, rets


def test_scale_reward_divides_by_running_std_of_discounted_return():
    obs, final_obs, rewards, term, trunc = reward_stream()
    gamma = 0.9
    env = ScaleReward(TableEnv(obs, final_obs, rewards, term, trunc), gamma=gamma)
    _, state = env.reset(jax.random.key(0), None)
    assert state.discounted_return.shape == (5,)
    _, (_, states, r, _, _, _) = rollout(env, rewards.shape[0], 5)
    ref, ref_ret = scale_reward_reference(rewards, term | trunc, gamma)
    np.testing.assert_allclose(states.discounted_return, ref_ret, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(r, ref, rtol=2e-4)
    # the scale really changes the rewards: returns of ~40-per-step rewards have a std >> 1
    assert np.all(np.abs(ref[10:]) < 0.2 * np.abs(rewards[10:]))
    np.testing.assert_allclose(states.return_stats.count[-1], PRIOR_COUNT + rewards.size)


def test_clip_over_scale_reward_over_episode_stats():
    """The stack ClipReward(ScaleReward(EpisodeStats(env))): rewards are the scaled
    reference clipped; the episode return in `info` stays the raw sum of env rewards."""
    obs, final_obs, rewards, term, trunc = reward_stream(seed=1, T=40, B=4)
    done = term | trunc
    gamma, low, high = 0.99, -0.1, 0.25
    inner = EpisodeStats(TableEnv(obs, final_obs, rewards, term, trunc))
    env = ClipReward(ScaleReward(inner, gamma=gamma), low, high)
    _, (_, _, r, _, _, info) = rollout(env, rewards.shape[0], 4)
    scaled, _ = scale_reward_reference(rewards, done, gamma)
    np.testing.assert_allclose(r, np.clip(scaled, low, high), rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(info["episode_done"], done)
    running = np.zeros(4)
    for t in range(rewards.shape[0]):
        running = running + rewards[t]
        np.testing.assert_allclose(info["episode_return"][t], running, rtol=1e-5)
        running = np.where(done[t], 0.0, running)
    # both sides of the clip occur in this stream, and so do unclipped values
    assert np.any(scaled > high) and np.any((scaled > low) & (scaled < high))


def obs_stream(seed=0, T=50, B=64):
    """Observations with per-dimension means (10, -5, 0.5) and stds (3, 0.2, 7); a final
    observation that differs from the next one where an episode ends."""
    rng = np.random.default_rng(seed)
    mean, std = np.array([10.0, -5.0, 0.5]), np.array([3.0, 0.2, 7.0])
    obs = mean + std * rng.normal(size=(T + 1, B, 3))
    done = rng.uniform(size=(T, B)) < 0.1
    other = mean + std * rng.normal(size=(T, B, 3))
    final_obs = np.where(done[..., None], other, obs[1:])
    return obs, final_obs, np.zeros((T, B)), done, np.zeros((T, B), bool)


def normalize_reference(x, mean, var, clip=10.0, eps=1e-8):
    return np.clip((x - mean) / np.sqrt(var + eps), -clip, clip)


def test_normalize_observation_matches_running_moments_and_centres_the_stream():
    obs, final_obs, rewards, term, trunc = obs_stream()
    env = NormalizeObservation(TableEnv(obs, final_obs, rewards, term, trunc))
    out0, (out, states, _, _, _, info) = rollout(env, rewards.shape[0], 64)
    mean, var = pooled_stats(obs[0])
    np.testing.assert_allclose(out0, normalize_reference(obs[0], mean, var), rtol=1e-4, atol=1e-4)
    for t in range(rewards.shape[0]):
        mean, var = pooled_stats(obs[: t + 2].reshape(-1, 3))
        np.testing.assert_allclose(states.obs_stats.mean[t], mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(states.obs_stats.var[t], var, rtol=1e-3)
        np.testing.assert_allclose(
            out[t], normalize_reference(obs[t + 1], mean, var), rtol=1e-3, atol=1e-3
        )
        # the final observation goes through the same transform, with the same statistics
        np.testing.assert_allclose(
            info["final_observation"][t],
            normalize_reference(final_obs[t], mean, var),
            rtol=1e-3,
            atol=1e-3,
        )
    assert np.any(term)  # some final observations differ from the returned ones
    late = np.asarray(out[25:]).reshape(-1, 3)  # [25 * 64, 3]
    assert np.all(np.abs(late.mean(0)) < 0.1), late.mean(0)
    assert np.all(np.abs(late.std(0) - 1.0) < 0.1), late.std(0)


def test_frozen_normalize_observation_keeps_the_prior():
    obs, final_obs, rewards, term, trunc = obs_stream(seed=2, T=3, B=8)
    env = NormalizeObservation(TableEnv(obs, final_obs, rewards, term, trunc), update=False)
    out0, (out, states, *_, info) = rollout(env, 3, 8)
    np.testing.assert_allclose(out0, np.clip(obs[0], -10.0, 10.0), rtol=1e-6)
    np.testing.assert_allclose(out, np.clip(obs[1:], -10.0, 10.0), rtol=1e-6)
    np.testing.assert_allclose(info["final_observation"], np.clip(final_obs, -10.0, 10.0))
    np.testing.assert_array_equal(states.obs_stats.mean, np.zeros((3, 3)))
    np.testing.assert_array_equal(states.obs_stats.var, np.ones((3, 3)))
