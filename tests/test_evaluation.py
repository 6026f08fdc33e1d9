"""run_episodes/summarize: reference returns from a plain Python loop, masking, task metrics."""

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn.evaluation import run_episodes, summarize

EVAL = jax.jit(run_episodes, static_argnums=(0, 2, 5, 6))


def toward_pole(params, obs):
    """Push the cart toward the side the pole leans: `[E, 4] -> [E]` int32."""
    return (obs[:, 2] > 0).astype(jnp.int32)


@pytest.fixture(scope="module")
def cartpole():
    return jaxlearn.make("CartPole-v1")


@partial(jax.jit, static_argnames="n")
def _episode_key(key_step, t, n, i):
    return jax.random.split(jax.random.fold_in(key_step, t), n)[i]


def coin(params, obs, key):
    """A sampling policy: a fair coin per episode, `[E, 4], key -> [E]` int32."""
    return jax.random.bernoulli(key, 0.5, obs.shape[:1]).astype(jnp.int32)


def reference_episode(act, env, env_params, key, num_episodes, i, max_steps, sampled=False):
    """Episode `i` of `run_episodes`, stepped by hand: (return, length, done). A sampled
    policy sees all `num_episodes` observations (episode `i`'s in every row) and its key."""
    key_reset, key_step = jax.random.split(key)
    key_act = jax.random.fold_in(key, 1)
    step, act = jax.jit(env.step), jax.jit(act)
    obs, state = env.reset(jax.random.split(key_reset, num_episodes)[i], env_params)
    ret = 0.0
    for t in range(max_steps):
        k = _episode_key(key_step, t, num_episodes, i)
        if sampled:
            rows = jnp.broadcast_to(obs, (num_episodes, *obs.shape))
            action = act(None, rows, jax.random.fold_in(key_act, t))[i]
        else:
            action = act(None, obs[None])[0]
        obs, state, reward, terminated, truncated, _ = step(k, state, action, env_params)
        ret += float(reward)
        if bool(terminated) or bool(truncated):
            return ret, t + 1, True
    return ret, max_steps, False


def expected_summary(s, out):
    """`summarize(out)` against plain Python over every episode (any leading axes)."""
    flat = {k: [float(x) for x in np.asarray(v).ravel()] for k, v in out.items()}
    r = flat["returns"]
    mean = sum(r) / len(r)
    expected = {
        "return_mean": mean,
        "return_std": (sum((x - mean) ** 2 for x in r) / len(r)) ** 0.5,
        "length_mean": sum(flat["lengths"]) / len(r),
        "episodes": len(r),
        "finished": sum(1 for x in flat["done"] if x),
    }
    for k, v in flat.items():
        if k not in ("returns", "lengths", "done"):
            expected[f"{k}_mean"] = sum(v) / len(v)
    assert set(s) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(s[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_matches_python_loop(cartpole):
    env, env_params = cartpole
    key, n = jax.random.key(3), 4
    out = EVAL(toward_pole, None, env, env_params, key, n, None)
    assert out["returns"].shape == (n,) and out["returns"].dtype == jnp.float32
    assert out["lengths"].dtype == jnp.int32 and out["done"].dtype == jnp.bool_
    for i in range(n):
        ret, length, done = reference_episode(toward_pole, env, env_params, key, n, i, 500)
        assert done and bool(out["done"][i])
        assert int(out["lengths"][i]) == length
        np.testing.assert_allclose(float(out["returns"][i]), ret, rtol=1e-6)


def test_deterministic_per_key(cartpole):
    env, env_params = cartpole
    a = EVAL(toward_pole, None, env, env_params, jax.random.key(0), 8, None)
    b = EVAL(toward_pole, None, env, env_params, jax.random.key(0), 8, None)
    c = EVAL(toward_pole, None, env, env_params, jax.random.key(1), 8, None)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["lengths"], c["lengths"])


def test_max_steps_masks_and_reports_unfinished(cartpole):
    env, env_params = cartpole
    key = jax.random.key(5)
    out = EVAL(toward_pole, None, env, env_params, key, 4, 30)
    lengths = np.asarray(out["lengths"])
    assert np.all(lengths <= 30)
    for i in range(4):
        ret, length, done = reference_episode(toward_pole, env, env_params, key, 4, i, 30)
        assert (int(lengths[i]), bool(out["done"][i])) == (length, done)
        np.testing.assert_allclose(float(out["returns"][i]), ret, rtol=1e-6)

    tiny = EVAL(toward_pole, None, env, env_params, key, 4, 3)
    assert not np.any(tiny["done"])
    np.testing.assert_array_equal(tiny["lengths"], 3)
    np.testing.assert_array_equal(tiny["returns"], 3.0)


def test_a_sampled_policy_draws_from_its_own_key_per_step(cartpole):
    env, env_params = cartpole
    run = jax.jit(run_episodes, static_argnums=(0, 2, 5, 6), static_argnames="sampled")
    key = jax.random.key(3)
    out = run(coin, None, env, env_params, key, 4, 40, sampled=True)
    for i in range(4):
        ret, length, done = reference_episode(coin, env, env_params, key, 4, i, 40, sampled=True)
        assert (int(out["lengths"][i]), bool(out["done"][i])) == (length, done)
        np.testing.assert_allclose(float(out["returns"][i]), ret, rtol=1e-6)
    again = run(coin, None, env, env_params, key, 4, 40, sampled=True)
    other = run(coin, None, env, env_params, jax.random.key(4), 4, 40, sampled=True)
    np.testing.assert_array_equal(out["lengths"], again["lengths"])
    assert not np.array_equal(out["lengths"], other["lengths"])
    # a sampling policy that ignores its key is the greedy run: same starts, same env keys
    greedy = EVAL(toward_pole, None, env, env_params, key, 4, 40)
    keyless = run(
        lambda p, o, k: toward_pole(p, o), None, env, env_params, key, 4, 40, sampled=True
    )
    for k in greedy:
        np.testing.assert_array_equal(greedy[k], keyless[k])


def test_vmap_over_keys(cartpole):
    env, env_params = cartpole
    keys = jax.random.split(jax.random.key(7), 3)
    ev = jax.jit(jax.vmap(lambda k: run_episodes(toward_pole, None, env, env_params, k, 4, 50)))
    out = ev(keys)
    assert out["returns"].shape == (3, 4)
    single = EVAL(toward_pole, None, env, env_params, keys[1], 4, 50)
    for k in single:
        np.testing.assert_array_equal(out[k][1], single[k])
    s = summarize(out)
    expected_summary(s, out)
    assert s["episodes"] == 12


def test_task_env_metrics():
    env, env_params = jaxlearn.make("Navigation2D-v0")

    def to_goal(params, obs):
        return obs[:, 2:4]  # goal minus position: head straight for the goal

    n = 5
    out = EVAL(to_goal, None, env, env_params, jax.random.key(0), n, 60)
    for name in ("success", "collisions"):
        assert out[name].shape == (n,) and out[name].dtype == jnp.float32
    comps = [f"reward_{c}" for c in env.reward_component_names]
    assert comps and all(out[c].shape == (n,) for c in comps)
    # the weighted components sum to the reward, so their episode sums give the return
    total = sum(np.asarray(out[c]) for c in comps)
    np.testing.assert_allclose(total, out["returns"], rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(out["success"])[~np.asarray(out["done"])] == 0.0)

    s = summarize(out)
    json.dumps(s)
    expected_summary(s, out)
    assert {"success_mean", "collisions_mean", *(f"{c}_mean" for c in comps)} <= set(s)
    assert s["episodes"] == n


def test_bad_args(cartpole):
    env, env_params = cartpole
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_episodes"):
        run_episodes(toward_pole, None, env, env_params, key, 0)
    with pytest.raises(ValueError, match="max_steps"):
        run_episodes(toward_pole, None, env, env_params, key, 2, 0)
    with pytest.raises(ValueError, match="max_steps"):
        run_episodes(toward_pole, None, env, env_params.replace(max_steps_in_episode=0), key, 2)
    with pytest.raises(ValueError, match="max_steps"):
        run_episodes(toward_pole, None, env, object(), key, 2)
