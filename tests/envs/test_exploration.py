"""Exploration env: rollouts, moves and collisions, reward components, termination, no
recompilation across params, argument checks and the vec-env stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn.envs.exploration import Exploration, coverage

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3

# one env for the tests: its jitted reset/step compile once and serve every params value
ENV = Exploration()
observe = jax.jit(ENV.observe_state)


def view_of(obs, radius=2):
    """The `[P, P, 4]` view block of an observation."""
    p = 2 * radius + 1
    return np.asarray(obs[2:-2]).reshape(p, p, 4)


def hand_state(env, params, pos, obstacles=(), resources=()):
    """A reset state with the agent at `pos` and the given obstacle and resource cells."""
    _, s = env.reset(jax.random.key(0), params)
    m, r = env.max_obstacles, env.max_resources
    obs_cells = np.zeros((m, 2), np.int32)
    obs_cells[: len(obstacles)] = np.reshape(obstacles, (-1, 2))
    res_cells = np.zeros((r, 2), np.int32)
    res_cells[: len(resources)] = np.reshape(resources, (-1, 2))
    obstacle_mask = np.arange(m) < len(obstacles)
    grid = np.zeros(env.grid, bool)
    for x, y in obstacles:
        grid[x, y] = True
    ws = np.asarray(s.workspace)
    active = np.zeros(env.grid, bool)
    active[: ws[0], : ws[1]] = True
    seen = np.zeros(env.grid, bool)
    seen[pos[0], pos[1]] = True
    return s.replace(
        pos=jnp.asarray(pos, jnp.int32),
        visited=jnp.asarray(seen),
        obstacles=jnp.asarray(obs_cells),
        obstacle_mask=jnp.asarray(obstacle_mask),
        obstacle_grid=jnp.asarray(grid),
        resources=jnp.asarray(res_cells),
        resource_mask=jnp.asarray(np.arange(r) < len(resources)),
        found=jnp.zeros((r,), bool),
        num_free=jnp.int32((active & ~grid).sum()),
    )


def steps(env, params, state, actions):
    """Run `actions` through `env.step`; returns the list of `(obs, state, r, term, info)`."""
    out = []
    for i, a in enumerate(actions):
        key = jax.random.key(100 + i)
        obs, state, r, term, trunc, info = env.step(key, state, jnp.int32(a), params)
        out.append((obs, state, r, term, info))
    return out


def test_random_rollout_vmapped_shapes_coverage_and_reward_sums():
    env = ENV
    params = env.make_params(
        workspace_size=[4.0, 3.0], num_obstacles=2, num_resources=3, time_limit=60.0
    )
    n, t_max = 64, 300

    def rollout(key):
        k0, k1 = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, n), params)

        def body(carry, k):
            obs, state = carry
            k_a, k_s = jax.random.split(k)
            a = jax.random.randint(k_a, (n,), 0, 4)
            out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_s, n), state, a, params
            )
            obs, state, r, term, trunc, info = out
            return (obs, state), (obs, r, term, trunc, info)

        return jax.lax.scan(body, (obs, state), jax.random.split(k1, t_max))[1]

    obs, r, term, trunc, info = jax.jit(rollout)(jax.random.key(0))
    obs, r, term, trunc = map(np.asarray, (obs, r, term, trunc))
    assert obs.shape == (t_max, n, env.obs_dim) and obs.dtype == np.float32
    assert env.observation_space(params).shape == (env.obs_dim,)
    assert r.shape == (t_max, n)
    assert np.all(np.isfinite(obs)) and np.all(np.isfinite(r))
    assert trunc.any() and term.any()

    cov = np.asarray(info["task"]["coverage"])
    assert np.all((cov >= 0.0) & (cov <= 1.0))
    done = term | trunc
    # within an episode coverage never drops (a new episode starts after a done step)
    assert np.all((cov[1:] >= cov[:-1] - 1e-6) | done[:-1])
    # a termination is a success: coverage reached the target
    assert np.all(np.asarray(info["task"]["success"]) == term)
    assert np.all(cov[term] >= 0.9 - 1e-6)

    comps = info["reward_components"]
    np.testing.assert_allclose(sum(np.asarray(v) for v in comps.values()), r, atol=1e-5)
    ep = sum(np.asarray(v) for v in info["episode_reward_components"].values())
    running = np.zeros(n, np.float32)
    checked = 0
    for t in range(t_max):
        running += r[t]
        np.testing.assert_allclose(ep[t][done[t]], running[done[t]], rtol=1e-5, atol=1e-4)
        checked += done[t].sum()
        running[done[t]] = 0.0
    assert checked > n


def test_reset_places_distinct_cells_inside_the_workspace():
    env = ENV
    params = env.make_params(workspace_size=[4.0, 5.0], num_obstacles=6, num_resources=4)
    keys = jax.random.split(jax.random.key(1), 200)
    _, s = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    cov = np.asarray(jax.vmap(coverage)(s))
    s = jax.device_get(s)
    pos = s.pos
    assert np.all((pos >= 0) & (pos < [4, 5]))
    for i in range(200):
        om, rm = s.obstacle_mask[i], s.resource_mask[i]
        assert om.sum() == 6 and rm.sum() == 4
        cells = np.concatenate([s.obstacles[i][om], s.resources[i][rm]])
        cells = np.concatenate([cells, pos[i][None]])
        assert len({tuple(c) for c in cells}) == len(cells)  # distinct, none on the start
        assert np.all((cells >= 0) & (cells < [4, 5]))
        assert int(s.num_free[i]) == 4 * 5 - 6
        assert bool(s.visited[i][pos[i][0], pos[i][1]]) and int(s.visited[i].sum()) == 1
    assert np.allclose(cov, 1 / 14)


def test_obstacle_blocks_and_counts_a_collision_walls_do_not():
    env = ENV
    params = env.default_params  # 5 x 5 cells
    s = hand_state(env, params, (2, 2), obstacles=[(3, 2)])
    (_, s1, r, _, info), *_ = steps(env, params, s, [RIGHT])
    assert s1.pos.tolist() == [2, 2] and int(s1.collisions) == 1
    assert int(info["task"]["collisions"]) == 1
    assert float(info["reward_components"]["collision"]) == pytest.approx(-0.5)

    s = hand_state(env, params, (0, 0))
    out = steps(env, params, s, [LEFT, DOWN])
    for _, st, _, _, info in out:
        assert st.pos.tolist() == [0, 0] and int(st.collisions) == 0
        assert float(info["reward_components"]["collision"]) == 0.0
    s = hand_state(env, params, (4, 4))  # the active workspace's far corner is a wall too
    out = steps(env, params, s, [UP, RIGHT])
    assert all(o[1].pos.tolist() == [4, 4] and int(o[1].collisions) == 0 for o in out)


def test_new_cell_bonus_once_and_resource_value():
    env = ENV
    params = env.make_params(num_obstacles=0, num_resources=1, vision=True)
    s = hand_state(env, params, (2, 2), resources=[(3, 2)])
    w = 0.5  # default exploration weight
    out = steps(env, params, s, [RIGHT, LEFT, RIGHT, UP])
    expl = [float(o[4]["reward_components"]["exploration"]) for o in out]
    # (3, 2): new cell + resource; (2, 2): the start; (3, 2) again; (3, 3): new
    assert expl == pytest.approx([w * (1 + 5.0), 0.0, 0.0, w * 1.0])
    assert bool(out[0][1].found[0])
    # the resource channel shows the resource until it is found
    res0, res1 = view_of(observe(s, params))[..., 3], view_of(out[1][0])[..., 3]
    assert res0[2 + 1, 2] == 1.0 and res0.sum() == 1.0
    assert res1.sum() == 0.0


def test_efficiency_penalises_turns_only():
    env = ENV
    params = env.make_params(num_obstacles=0)
    s = hand_state(env, params, (0, 0))
    out = steps(env, params, s, [RIGHT, RIGHT, UP, UP, LEFT])
    w = float(params.reward_weights["efficiency"])
    eff = [float(o[4]["reward_components"]["efficiency"]) / w for o in out]
    assert eff == pytest.approx([0.0, 0.0, -0.25, 0.0, -0.25])


def test_reaching_target_coverage_terminates_with_success():
    env = ENV
    params = env.make_params(workspace_size=[3.0, 1.0], num_obstacles=0, target_coverage=1.0)
    s = hand_state(env, params, (0, 0))
    out = steps(env, params, s, [RIGHT, RIGHT])
    (_, _, _, term0, info0), (_, _, _, term1, info1) = out
    assert not bool(term0) and float(info0["task"]["coverage"]) == pytest.approx(2 / 3)
    assert bool(term1) and bool(info1["task"]["success"])
    assert float(info1["task"]["coverage"]) == pytest.approx(1.0)
    assert float(info1["reward_components"]["completion"]) == pytest.approx(10.0)
    assert float(info0["reward_components"]["completion"]) == 0.0


def test_params_change_without_retracing_and_keep_shapes():
    env = ENV
    traces = []

    def run(key, params):
        traces.append(1)
        obs, state = env.reset(key, params)
        obs2, *_ = env.step(key, state, jnp.int32(1), params)
        return obs, obs2

    f = jax.jit(run)
    shapes = set()
    for kw in [
        {},
        {"num_obstacles": 12, "num_resources": 4},
        {"workspace_size": [15.0, 15.0, 6.0], "vision": True},
        {"workspace_size": [2.0, 9.0], "num_obstacles": 0, "vision": False},
    ]:
        obs, obs2 = f(jax.random.key(0), env.make_params(**kw))
        shapes.add((obs.shape, obs2.shape))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(obs2))
    assert len(traces) == 1
    assert shapes == {((env.obs_dim,), (env.obs_dim,))}


def test_vision_off_hides_obstacles_and_resources():
    env = ENV
    for vision in (False, True):
        params = env.make_params(num_obstacles=1, num_resources=1, vision=vision)
        s = hand_state(env, params, (2, 2), obstacles=[(1, 2)], resources=[(2, 3)])
        s = s.replace(vision=jnp.bool_(vision))
        view = view_of(observe(s, params))
        assert view[..., 2].sum() == (1.0 if vision else 0.0)
        assert view[..., 3].sum() == (1.0 if vision else 0.0)
        if vision:
            assert view[2 - 1, 2, 2] == 1.0 and view[2, 2 + 1, 3] == 1.0
        assert view[2, 2, 0] == 1.0  # visited: always shown
    # walls: near the origin, cells with x < 0 or y < 0 are walls
    s = hand_state(env, env.default_params, (0, 0))
    view = view_of(observe(s, env.default_params))
    assert view[:2, :, 1].all() and view[:, :2, 1].all() and not view[2:, 2:, 1].any()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_obstacles": -1}, "max_obstacles"),
        ({"max_resources": 2.5}, "max_resources"),
        ({"view_radius": True}, "view_radius"),
        ({"max_obstacles": 200, "max_resources": 30}, "max_obstacles"),
        ({"num_resources": 5}, "num_resources"),
        ({"num_obstacles": 13}, "num_obstacles"),
        ({"target_coverage": 1.5}, "target_coverage"),
        ({"workspace_size": [0.5, 4.0]}, "workspace_size"),
        ({"speed": 1.0}, "speed"),
    ],
)
def test_bad_arguments_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Exploration(**kwargs)


def test_make_params_checks_num_resources():
    env = Exploration(max_resources=2)
    with pytest.raises(ValueError, match="num_resources"):
        env.make_params(num_resources=3)
    assert int(env.make_params(num_resources=2).num_resources) == 2


def test_make_and_make_vec():
    env, params = jaxlearn.make("Exploration-v0", view_radius=1)
    assert isinstance(env, Exploration) and env.num_actions == 4
    venv, params = jaxlearn.make_vec("Exploration-v0", 8)
    space = jaxlearn.spaces.from_gymnax(venv.action_space(params))

    def reset_and_step(key):
        k0, k1, k2 = jax.random.split(key, 3)
        obs0, state = venv.reset(k0, params)
        actions = jax.vmap(space.sample)(jax.random.split(k1, 8))
        return obs0, venv.step(k2, state, actions, params)

    obs0, (obs, state, r, term, trunc, info) = jax.jit(reset_and_step)(jax.random.key(0))
    dim = venv.observation_space(params).shape[0]
    assert obs0.shape == (8, dim) and obs.shape == (8, dim)
    assert r.shape == (8,) and info["episode_return"].shape == (8,)
    assert info["task"]["coverage"].shape == (8,)
