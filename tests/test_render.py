"""Episode animations: every renderer writes a GIF with one frame per state of the episode.

Frames: an episode of L steps gives L + 1 frames (the reset state and the state after each
step). Frames are counted with Pillow, the episode lengths are worked out by hand from the
env's limits, or, for CartPole's early end, checked against its termination rule in NumPy.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageSequence

from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo.train import make_policy
from jaxlearn.envs.navigation import Navigation
from jaxlearn.envs.registry import make
from jaxlearn.export import load_policy, save_policy
from jaxlearn.render import collect_episode, collect_episodes, render, render_episodes, renderable
from jaxlearn.runner import RunConfig, run


def _gif_frames(path):
    assert os.path.getsize(path) > 0
    with Image.open(path) as im:
        assert im.format == "GIF"
        return sum(1 for _ in ImageSequence.Iterator(im))


def _constant(action):
    """A scripted policy: the same action for every observation of the batch."""

    def act(obs):
        batch = jax.tree.leaves(obs)[0].shape[0]
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch, *np.shape(a))), action)

    return act


# name, env kwargs, params overrides, scripted action, steps the episode must last
# (time limits: ceil(time_limit / dt) task steps, or max_steps_in_episode)
CASES = {
    "Navigation2D-v0": (
        {"max_obstacles": 4},
        {"time_limit": 2.5, "tool_use": True},  # dt 0.5 -> 5 steps
        jnp.zeros(2),
        5,
    ),
    "Navigation3D-v0": ({"max_obstacles": 4}, {"time_limit": 2.0}, jnp.zeros(3), 4),
    "Exploration-v0": (
        {"max_obstacles": 3, "max_resources": 2},
        {"time_limit": 5.0, "num_resources": 2},  # dt 1 -> 5 steps
        jnp.int32(1),
        5,
    ),
    "Cooperative-v0": (
        {"num_agents": 3, "max_obstacles": 3},
        {"time_limit": 2.0},  # dt 0.5 -> 4 steps
        {"move": jnp.zeros((3, 2)), "comm": jnp.full((3, 2), 0.5)},
        4,
    ),
    "Pendulum-v1": ({}, {"max_steps_in_episode": 6}, jnp.array([0.5]), 6),
    "Acrobot-v1": ({}, {"max_steps_in_episode": 6}, jnp.int32(2), 6),
}


def _env(name, kwargs, overrides):
    env, params = make(name, **kwargs)
    if hasattr(env, "make_params"):
        return env, env.make_params(**overrides)
    return env, params.replace(**overrides)


@pytest.mark.parametrize("name", sorted(CASES))
def test_renderer_writes_one_frame_per_state(tmp_path, name):
    kwargs, overrides, action, steps = CASES[name]
    env, params = _env(name, kwargs, overrides)
    if hasattr(params, "time_limit"):
        assert steps == math.ceil(float(params.time_limit) / float(params.dt) - 1e-6)
    states, rewards = collect_episode(_constant(action), env, params, jax.random.key(0))
    if name.startswith("Navigation"):  # standing still never reaches a goal it starts off
        d = np.linalg.norm(states.pos[0] - states.goal[0])
        assert d >= float(params.goal_radius)
    assert rewards.shape == (steps,)
    assert np.asarray(states.time).tolist() == list(range(steps + 1))  # reset, then each step
    path = str(tmp_path / "episode.gif")
    frames = render(env, params, [states], path, returns=[np.zeros(steps + 1)], dpi=40)
    assert frames == steps + 1
    assert _gif_frames(path) == steps + 1


def test_cartpole_ends_at_its_terminal_state(tmp_path):
    env, params = make("CartPole-v1")
    states, rewards = collect_episode(_constant(jnp.int32(1)), env, params, jax.random.key(3))
    x, theta = np.asarray(states.x), np.asarray(states.theta)
    out = (np.abs(x) > params.x_threshold) | (np.abs(theta) > params.theta_threshold_radians)
    # pushing right always: the pole falls well before the 500-step limit; the last frame is
    # the first state out of bounds (not gymnax's automatic reset)
    assert len(rewards) < 100
    assert out[-1] and not out[:-1].any()
    assert len(rewards) == len(x) - 1
    np.testing.assert_array_equal(rewards, np.ones(len(rewards)))  # 1 per step before the fall
    path = str(tmp_path / "cartpole.gif")
    assert render(env, params, [states], path, dpi=40) == len(x)
    assert _gif_frames(path) == len(x)


def _random_cartpole_policy(folder):
    """Export a small CartPole PPO policy with random weights to `folder`; its env."""
    cfg = PPOConfig(env="CartPole-v1", hidden_sizes=(8,))
    env, env_params = make("CartPole-v1")
    net = make_policy(cfg, env, env_params).network
    # random weights of the network's shapes (cheaper than running its init)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 4)))
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)
    save_policy(str(folder), "ppo", cfg, params)
    return env, env_params


def test_render_episodes_from_an_exported_policy(tmp_path):
    _random_cartpole_policy(tmp_path / "policy")
    path = str(tmp_path / "out" / "two.gif")
    info = render_episodes(str(tmp_path / "policy"), path, episodes=2, seed=1, max_steps=8)
    lengths = info["lengths"]
    assert len(lengths) == 2 and all(1 <= n <= 8 for n in lengths)
    assert info["returns"] == [float(n) for n in lengths]  # CartPole pays 1 per step
    # episodes one after the other, each with its reset frame
    assert info["frames"] == sum(lengths) + 2 == _gif_frames(path)


def test_sampled_episodes_start_where_greedy_ones_do_and_act_differently(tmp_path):
    env, env_params = _random_cartpole_policy(tmp_path / "policy")
    policy = load_policy(str(tmp_path / "policy"))
    keys = jax.random.split(jax.random.key(2), 8)
    greedy = collect_episodes(policy.act, env, env_params, keys, 40)
    sampled = collect_episodes(policy.sample, env, env_params, keys, 40, sampled=True)
    again = collect_episodes(policy.sample, env, env_params, keys, 40, sampled=True)
    for (g, _), (s, _), (a, _) in zip(greedy, sampled, again, strict=True):
        np.testing.assert_array_equal(g.x[0], s.x[0])  # the same reset state
        np.testing.assert_array_equal(s.x, a.x)  # the same key, the same episode
    # a policy far from deterministic: sampling changes where some episode goes
    assert any(
        len(g.x) != len(s.x) or not np.array_equal(g.x, s.x)
        for (g, _), (s, _) in zip(greedy, sampled, strict=True)
    )
    path = str(tmp_path / "sampled.gif")
    info = render_episodes(str(tmp_path / "policy"), path, seed=1, max_steps=8, policy="sampled")
    assert info["frames"] == info["lengths"][0] + 1 == _gif_frames(path)
    with pytest.raises(ValueError, match=r"policy='random' is invalid: allowed \('greedy'"):
        render_episodes(str(tmp_path / "policy"), str(tmp_path / "r.gif"), policy="random")


def test_an_exported_policy_renders_in_the_env_params_it_was_trained_on(tmp_path):
    cfg = PPOConfig(env="Navigation2D-v0", hidden_sizes=(8,))
    env, env_params = make("Navigation2D-v0")
    net = make_policy(cfg, env, env_params).network
    obs_shape = (1, *env.observation_space(env_params).shape)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros(obs_shape))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)  # stands still
    stage = env_params.replace(time_limit=env_params.dt * 3)  # a 3-step episode
    save_policy(str(tmp_path / "policy"), "ppo", cfg, params, env_params=stage)
    info = render_episodes(str(tmp_path / "policy"), str(tmp_path / "nav.gif"), episodes=2)
    assert info["lengths"] == [3, 3]  # the default params' limit is 600 steps


def test_an_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "mine.gif"
    path.write_bytes(b"a picture of mine")
    with pytest.raises(ValueError, match="already exists; jaxlearn never overwrites"):
        render_episodes(str(tmp_path / "no_such_run"), str(path))
    with pytest.raises(ValueError, match="already exists"):
        render(*make("CartPole-v1"), [], str(path))
    assert path.read_bytes() == b"a picture of mine"
    (tmp_path / "dir.gif").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        render_episodes(str(tmp_path / "no_such_run"), str(tmp_path / "dir.gif"))


def test_render_episodes_of_a_recurrent_policy_on_masked_observations(tmp_path):
    """A GRU policy trained on CartPole without velocities: rendering feeds it the masked
    observation and carries its core state (the env drawn is the unmasked CartPole)."""
    cfg = PPOConfig(env="CartPole-v1", obs_mask=(0, 2), core="gru", core_size=4, hidden_sizes=(8,))
    env, env_params = make("CartPole-v1")
    from jaxlearn.algos.ppo.recurrent import make_recurrent_policy
    from jaxlearn.envs.masking import mask_env

    masked = mask_env("PPOConfig", (0, 2), env, env_params)
    net = make_recurrent_policy(cfg, masked, env_params).network
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(
        net.init,
        jax.random.key(0),
        jnp.zeros((1, 4)),
        jnp.zeros((1, 1, 2)),
        jnp.zeros((1, 1), bool),
    )
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)
    save_policy(str(tmp_path / "policy"), "ppo", cfg, params)
    for policy in ("greedy", "sampled"):  # the core state is carried either way
        path = str(tmp_path / f"gru_{policy}.gif")
        info = render_episodes(
            str(tmp_path / "policy"), path, episodes=2, seed=1, max_steps=8, policy=policy
        )
        lengths = info["lengths"]
        assert len(lengths) == 2 and all(1 <= n <= 8 for n in lengths)
        assert info["frames"] == sum(lengths) + 2 == _gif_frames(path)


@pytest.mark.slow  # trains a (tiny) run first
def test_render_episodes_from_a_run_folder(tmp_path):
    out = str(tmp_path / "run")
    small = dict(total_timesteps=128, num_envs=2, num_steps=16, num_minibatches=1)
    run(
        RunConfig(num_chunks=1, eval_episodes=1),
        PPOConfig(env="CartPole-v1", hidden_sizes=(8,), **small),
        out=out,
        log=lambda s: None,
    )
    info = render_episodes(out, str(tmp_path / "run.gif"), max_steps=5)
    assert info["frames"] == info["lengths"][0] + 1 == _gif_frames(str(tmp_path / "run.gif"))


@pytest.mark.parametrize("bad", ["out.avi", "out", "out.gif.txt"])
def test_bad_suffix_is_refused_before_anything_is_loaded(tmp_path, bad):
    with pytest.raises(ValueError, match=r"--render .*\.gif.*\.mp4"):
        render_episodes(str(tmp_path / "no_such_run"), str(tmp_path / bad))
    assert not os.path.exists(tmp_path / bad)


def test_mp4_without_ffmpeg_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    with pytest.raises(ValueError, match="--render .*ffmpeg"):
        render_episodes(str(tmp_path / "no_such_run"), str(tmp_path / "out.mp4"))


def test_env_without_renderer_is_named():
    env, params = make("MountainCar-v0")
    states = jax.tree.map(lambda x: np.asarray(x)[None], env.reset(jax.random.key(0), params)[1])
    with pytest.raises(ValueError, match=r"MountainCar.*Navigation2D-v0.*CartPole-v1") as e:
        render(env, params, [states], "x.gif")
    for name in renderable():
        assert name in str(e.value)


def test_subclass_of_a_renderable_env_uses_its_parents_renderer(tmp_path):
    class Room(Navigation):
        pass

    env = Room(dim=2, max_obstacles=0)
    params = env.make_params(time_limit=1.0)  # 2 steps
    states, rewards = collect_episode(_constant(jnp.zeros(2)), env, params, jax.random.key(0))
    path = str(tmp_path / "room.gif")
    assert render(env, params, [states], path, dpi=40) == len(rewards) + 1 == 3
    assert _gif_frames(path) == 3
