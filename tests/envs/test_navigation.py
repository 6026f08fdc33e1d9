"""Navigation envs (2-D and 3-D): random rollouts, the safety constraint, collisions and
walls, stopping at the goal, tool use, vision, reward components, no retracing across
params, truncation, and argument checks."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn.envs.navigation import Navigation

# one env stack per dimension for every test (jit compiles dominate the run time on CPU):
# the rollouts run the `make_vec` stack, the hand-built cases its unwrapped env
NUM_ENVS, NUM_STEPS = 64, 300
VENVS = {d: jaxlearn.make_vec(f"Navigation{d}D-v0", NUM_ENVS)[0] for d in (2, 3)}
ENVS = {d: v.unwrapped for d, v in VENVS.items()}
STEP_ENV = {d: jax.jit(env.step_env) for d, env in ENVS.items()}


def sensor_block(env, obs):
    """The `[..., K, D + 2]` obstacle-sensor block of observations `obs` `[..., obs_dim]`."""
    k, d = env.num_sensed, env.dim
    obs = np.asarray(obs)
    return obs[..., -k * (d + 2) :].reshape(*obs.shape[:-1], k, d + 2)


def flags(env, obs):
    """The `(tool needed, tool held)` flags of an observation."""
    d = env.dim
    return tuple(np.asarray(obs)[3 * d + 1 : 3 * d + 3].tolist())


def surface(pos, centres, radii, mask):
    """`[..., M]` distance from `pos` `[..., D]` to each obstacle surface (inf if inactive)."""
    d = np.linalg.norm(centres - pos[..., None, :], axis=-1) - radii
    return np.where(mask, d, np.inf)


# ---- random rollouts -------------------------------------------------------------------


ROLLOUT_FIELDS = {
    2: dict(num_obstacles=8, time_limit=30.0),
    3: dict(num_obstacles=10, workspace_size=[4.0, 4.0, 3.0], vision=True, time_limit=30.0),
}


@functools.cache
def rollout(dim):
    """Random actions through the `make_vec` stack (`env.step` auto-resets), `NUM_ENVS`
    envs x `NUM_STEPS` steps, as numpy arrays `[NUM_ENVS, NUM_STEPS, ...]`."""
    venv, env = VENVS[dim], ENVS[dim]
    params = env.make_params(**ROLLOUT_FIELDS[dim])
    space = venv.action_space(params)

    def run(key):
        k_reset, k_run = jax.random.split(key)
        _, state = venv.reset(k_reset, params)

        def body(state, k):
            k_a, k_s = jax.random.split(k)
            action = jax.vmap(space.sample)(jax.random.split(k_a, NUM_ENVS))
            obs, nxt, r, term, trunc, info = venv.step(k_s, state, action, params)
            before, after = state.env_state, nxt.env_state
            out = dict(
                obs=obs,
                reward=r,
                term=term,
                trunc=trunc,
                episode_return=info["episode_return"],
                pos_before=before.pos,
                obstacles_before=before.obstacles,
                radii_before=before.radii,
                mask_before=before.obstacle_mask,
                pos_after=after.pos,
                obstacles_after=after.obstacles,
                radii_after=after.radii,
                mask_after=after.obstacle_mask,
                workspace=after.workspace,
                comps=info["reward_components"],
                ep_comps=info["episode_reward_components"],
                task=info["task"],
            )
            return nxt, out

        return jax.lax.scan(body, state, jax.random.split(k_run, NUM_STEPS))[1]

    out = jax.jit(run)(jax.random.key(dim))
    # time-major from the scan -> env-major
    out = jax.tree.map(lambda x: np.swapaxes(np.asarray(x), 0, 1), out)
    out["done"] = out["term"] | out["trunc"]
    # applied speed (meaningful on steps that did not end: an auto-reset moves the agent)
    step = np.linalg.norm(out["pos_after"] - out["pos_before"], axis=-1)
    out["speed"] = step / float(params.dt)
    out["sd_before"] = surface(
        out["pos_before"], out["obstacles_before"], out["radii_before"], out["mask_before"]
    ).min(-1)
    return env, params, out


@pytest.mark.parametrize("dim", [2, 3])
def test_random_rollouts_keep_invariants(dim):
    env, params, out = rollout(dim)
    obs_dim = env.observation_space(params).shape[0]
    assert obs_dim == 4 * dim + 4 + env.num_sensed * (dim + 2)
    assert out["obs"].shape == (NUM_ENVS, NUM_STEPS, obs_dim)
    assert out["obs"].dtype == np.float32
    assert out["reward"].shape == (NUM_ENVS, NUM_STEPS)
    assert np.all(np.isfinite(out["obs"])) and np.all(np.isfinite(out["reward"]))
    assert out["pos_after"].shape == (NUM_ENVS, NUM_STEPS, dim)

    # inside the workspace, and never inside an active obstacle after a step
    ws = np.asarray(params.workspace_size)[:dim]
    np.testing.assert_allclose(out["workspace"], np.broadcast_to(ws, out["workspace"].shape))
    assert np.all(out["pos_after"] >= 0.0) and np.all(out["pos_after"] <= ws + 1e-6)
    sd_after = surface(
        out["pos_after"], out["obstacles_after"], out["radii_after"], out["mask_after"]
    )
    assert sd_after.min() >= -1e-5
    assert int(out["mask_after"].sum(-1).min()) >= 1  # obstacles were there to avoid

    # the safety constraint: slower near obstacles (pre-step surface distance)
    live = ~out["done"]
    near = live & (out["sd_before"] < float(params.safety_distance))
    assert near.sum() > 100  # the constraint was exercised
    cap = float(params.max_velocity_near_obstacle)
    assert out["speed"][near].max() <= cap + 1e-5
    assert out["speed"][near].max() > 0.5 * cap  # but agents do move there
    far = live & ~near
    assert out["speed"][far].max() > cap + 0.1  # the cap applies only near obstacles

    # collisions happened and are counted, weighted by the collision weight
    ncol = out["comps"]["collision"] / float(params.reward_weights["collision"])
    assert set(np.unique(ncol).tolist()) == {0.0, 1.0}
    assert out["task"]["collisions"].dtype == np.int32
    assert out["task"]["success"].dtype == np.bool_
    np.testing.assert_array_equal(out["task"]["success"], out["term"])
    comp = out["comps"]["completion"] / float(params.reward_weights["completion"])
    np.testing.assert_array_equal(comp, out["term"].astype(np.float32))
    eff = out["comps"]["efficiency"] / float(params.reward_weights["efficiency"])
    assert np.all((eff >= -1.0 - 1e-6) & (eff <= 0.0))
    # a truncation every ceil(time_limit / dt) steps of an episode
    assert out["trunc"].sum() >= NUM_ENVS

    # weighted components sum to the reward
    assert set(out["comps"]) == set(env.components) == set(out["ep_comps"])
    np.testing.assert_allclose(sum(out["comps"].values()), out["reward"], rtol=1e-5, atol=1e-5)
    # at a done step the episode sums are that episode's summed components / rewards
    checked = 0
    for b in range(NUM_ENVS):
        start = 0
        for t in np.flatnonzero(out["done"][b]):
            for name, v in out["comps"].items():
                np.testing.assert_allclose(
                    out["ep_comps"][name][b, t], v[b, start : t + 1].sum(), rtol=1e-4, atol=1e-4
                )
            ep_total = sum(v[b, t] for v in out["ep_comps"].values())
            ret = out["reward"][b, start : t + 1].sum()
            np.testing.assert_allclose(ep_total, ret, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(out["episode_return"][b, t], ret, rtol=1e-4, atol=1e-4)
            checked += 1
            start = t + 1
    assert checked >= NUM_ENVS


@pytest.mark.parametrize("dim", [2, 3])
def test_random_rollouts_respect_max_velocity(dim):
    _, params, out = rollout(dim)
    assert out["speed"][~out["done"]].max() <= float(params.max_velocity) + 1e-5


# ---- hand-built states -----------------------------------------------------------------


def place(env, params, pos, goal, obstacles=(), tool=None, **fields):
    """A reset state with the agent at `pos`, the goal, and `(centre, radius)` obstacles."""
    _, s = env.reset(jax.random.key(0), params)
    m, d = env.max_obstacles, env.dim
    centres = np.zeros((m, d), np.float32)
    radii = np.full((m,), 0.3, np.float32)
    mask = np.zeros((m,), bool)
    for i, (c, r) in enumerate(obstacles):
        centres[i], radii[i], mask[i] = c, r, True
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return s.replace(
        pos=f32(pos),
        vel=jnp.zeros(d, jnp.float32),
        prev_action=jnp.zeros(d, jnp.float32),
        goal=f32(goal),
        tool=f32(s.tool if tool is None else tool),
        obstacles=jnp.asarray(centres),
        radii=jnp.asarray(radii),
        obstacle_mask=jnp.asarray(mask),
        collisions=jnp.int32(0),
        **fields,
    )


def step(env, params, state, action):
    """One compiled `env.step_env` (no auto-reset, so the next state is the real one);
    returns `(obs, next_state, r, terminated, info)` and checks that the weighted
    components sum to the reward."""
    action = jnp.asarray(action, jnp.float32)
    out = STEP_ENV[env.dim](jax.random.key(7), state, action, params)
    r, info = out[2], out[4]
    np.testing.assert_allclose(sum(info["reward_components"].values()), r, atol=1e-6)
    return out


def unit(dim, axis=0, sign=1.0):
    e = np.zeros(dim, np.float32)
    e[axis] = sign
    return e


@pytest.mark.parametrize("dim", [2, 3])
def test_driving_into_an_obstacle_counts_a_collision_and_stays_outside(dim):
    env = ENVS[dim]
    params = env.default_params
    pos = np.full(dim, 1.0, np.float32)
    radius = 0.5
    # surface 0.1 m ahead: the capped move (0.5 m/s x 0.5 s) would end inside
    centre = pos + unit(dim) * (radius + 0.1)
    goal = np.full(dim, 2.5, np.float32)
    s = place(env, params, pos, goal, obstacles=[(centre, radius)])
    _, s1, _, term, info = step(env, params, s, unit(dim))
    assert not bool(term)
    assert int(s1.collisions) == 1 and int(info["task"]["collisions"]) == 1
    w = float(params.reward_weights["collision"])
    np.testing.assert_allclose(info["reward_components"]["collision"], w)
    # head-on: the whole motion is inward, so the agent stays, outside the obstacle
    np.testing.assert_allclose(s1.pos, pos, atol=1e-6)
    assert np.linalg.norm(np.asarray(s1.pos) - centre) >= radius

    # oblique: the inward part is removed and the agent slides along the surface
    action = unit(dim) + 0.5 * unit(dim, 1)
    _, s2, _, _, info = step(env, params, s, action)
    assert int(s2.collisions) == 1
    np.testing.assert_allclose(info["reward_components"]["collision"], w)
    moved = np.asarray(s2.pos) - pos
    normal = (pos - centre) / np.linalg.norm(pos - centre)
    assert np.linalg.norm(moved) > 0.05
    assert abs(np.dot(moved, normal)) < 1e-5  # tangential only
    assert moved[1] > 0  # in the commanded sideways direction
    assert np.linalg.norm(np.asarray(s2.pos) - centre) >= radius
    speed = np.linalg.norm(moved) / float(params.dt)
    assert speed <= float(params.max_velocity_near_obstacle) + 1e-6

    # the counter accumulates over the episode
    _, s3, _, _, info = step(env, params, s1, unit(dim))
    assert int(s3.collisions) == 2 and int(info["task"]["collisions"]) == 2


def test_collision_ends_terminates_on_the_first_collision_as_a_failure():
    env = ENVS[2]
    params = env.default_params.replace(collision_ends=jnp.bool_(True))
    pos = np.full(2, 1.0, np.float32)
    centre = pos + unit(2) * 0.6  # surface 0.1 m ahead: a full-speed move ends inside
    s = place(env, params, pos, np.full(2, 2.5, np.float32), obstacles=[(centre, 0.5)])
    _, s1, _, term, info = step(env, params, s, unit(2))
    assert bool(term) and not bool(info["task"]["success"])
    assert int(info["task"]["collisions"]) == 1
    # a clear move does not end it, and without the flag the same collision does not either
    _, _, _, term, _ = step(env, params, s, -unit(2))
    assert not bool(term)
    _, _, _, term, _ = step(env, env.default_params, s, unit(2))
    assert not bool(term)


def test_a_curriculum_stage_switches_collision_ends_on():
    from jaxlearn.curriculum import Curriculum, CurriculumConfig

    env = ENVS[2]
    fields = [n for n in env.default_params.__dataclass_fields__ if n != "reward_weights"]
    spec = {
        "stages": [
            {"name": "A", "num_obstacles": 3, "success_rate": 0.5},
            {"name": "B", "num_obstacles": 5, "collision_ends": True},
        ]
    }
    cur = Curriculum(CurriculumConfig.from_dict(spec, env_fields=fields), env, env.default_params)
    state = cur.init()
    assert not bool(cur.env_params(state).collision_ends)
    assert bool(cur.env_params(state.replace(stage=jnp.int32(1))).collision_ends)


def test_clear_move_has_no_collision_and_walls_clip_without_one():
    env = ENVS[2]
    params = env.default_params
    dt, vmax = float(params.dt), float(params.max_velocity)
    far_obstacle = [(np.array([4.0, 4.0]), 0.5)]
    s = place(env, params, [1.0, 1.0], [4.0, 1.0], obstacles=far_obstacle)
    _, s1, _, _, info = step(env, params, s, [1.0, 0.0])
    np.testing.assert_allclose(s1.pos, [1.0 + vmax * dt, 1.0], atol=1e-6)
    np.testing.assert_allclose(s1.vel, [vmax, 0.0], atol=1e-5)
    assert int(s1.collisions) == 0
    assert float(info["reward_components"]["collision"]) == 0.0
    # the progress component is the metres gained towards the goal
    w_base = float(params.reward_weights["base"])
    np.testing.assert_allclose(info["reward_components"]["base"], w_base * vmax * dt, rtol=1e-5)

    ws = np.asarray(params.workspace_size)[:2]
    for pos, action, expected in [
        ([0.2, 2.5], [-1.0, 0.0], [0.0, 2.5]),
        ([2.5, ws[1] - 0.1], [0.0, 1.0], [2.5, ws[1]]),
        ([ws[0] - 0.2, 0.1], [1.0, -1.0], [ws[0], 0.0]),
    ]:
        s = place(env, params, pos, [2.5, 2.5], obstacles=far_obstacle)
        _, s1, _, _, info = step(env, params, s, action)
        np.testing.assert_allclose(s1.pos, expected, atol=1e-6)
        assert int(s1.collisions) == 0
        assert float(info["reward_components"]["collision"]) == 0.0


def test_stopping_slowly_at_the_goal_succeeds_passing_fast_does_not():
    env = ENVS[2]
    params = env.default_params
    dt, vmax = float(params.dt), float(params.max_velocity)
    v_goal, r_goal = float(params.goal_speed), float(params.goal_radius)
    goal = np.array([2.5, 2.5], np.float32)
    w = float(params.reward_weights["completion"])

    # slowly into the goal radius: 0.8 x goal_speed, ending 0.5 x goal_radius from the goal
    slow = 0.8 * v_goal / vmax
    start = goal - [0.5 * r_goal + slow * vmax * dt, 0.0]
    s = place(env, params, start, goal)
    _, s1, _, term, info = step(env, params, s, [slow, 0.0])
    assert bool(term)
    assert bool(info["task"]["success"])
    np.testing.assert_allclose(info["reward_components"]["completion"], w)
    np.testing.assert_allclose(s1.pos, start + [slow * vmax * dt, 0.0], atol=1e-5)

    # standing still inside the radius also counts
    s = place(env, params, goal + [0.3 * r_goal, 0.0], goal)
    _, _, _, term, info = step(env, params, s, [0.0, 0.0])
    assert bool(term) and bool(info["task"]["success"])

    # at full speed through the goal: ends inside the radius, but too fast
    start = goal - [vmax * dt - 0.2 * r_goal, 0.0]
    s = place(env, params, start, goal)
    _, s1, _, term, info = step(env, params, s, [1.0, 0.0])
    assert np.linalg.norm(np.asarray(s1.pos) - goal) < r_goal
    assert not bool(term) and not bool(info["task"]["success"])
    assert float(info["reward_components"]["completion"]) == 0.0
    # just above goal_speed is still too fast
    fast = 1.2 * v_goal / vmax
    s = place(env, params, goal - [fast * vmax * dt, 0.0], goal)
    _, _, _, term, info = step(env, params, s, [fast, 0.0])
    assert not bool(term) and not bool(info["task"]["success"])


def test_tool_use_goal_counts_only_after_the_tool():
    env = ENVS[2]
    params = env.make_params(tool_use=True)
    goal = np.array([2.5, 2.5], np.float32)
    tool = np.array([1.0, 4.0], np.float32)
    s = place(env, params, goal, goal, tool=tool)
    assert bool(s.tool_needed) and not bool(s.has_tool)

    # stopped at the goal without the tool: not done
    obs, s1, _, term, info = step(env, params, s, [0.0, 0.0])
    assert not bool(term) and not bool(info["task"]["success"])
    assert float(info["reward_components"]["completion"]) == 0.0
    assert flags(env, obs) == (1.0, 0.0)
    # the tool's position relative to the agent is in the observation
    scale = 5.0  # metres: the fixed OBS_SCALE, whatever the workspace
    np.testing.assert_allclose(np.asarray(obs)[5:7], (tool - goal) / scale, atol=1e-6)

    # visit the tool
    s = place(env, params, tool - [0.3, 0.0], goal, tool=tool, tool_needed=jnp.bool_(True))
    obs, s1, _, term, info = step(env, params, s, [0.2, 0.0])
    assert bool(s1.has_tool) and not bool(term)
    assert flags(env, obs) == (1.0, 1.0)

    # now stopping at the goal succeeds
    s2 = s1.replace(pos=jnp.asarray(goal), vel=jnp.zeros(2))
    _, _, _, term, info = step(env, params, s2, [0.0, 0.0])
    assert bool(term) and bool(info["task"]["success"])

    # without tool use the tool is not needed and its block is zeros
    params0 = env.default_params
    s = place(env, params0, goal, goal, tool=tool)
    obs, _, _, term, info = step(env, params0, s, [0.0, 0.0])
    assert bool(term) and bool(info["task"]["success"])
    final = np.asarray(obs)
    assert flags(env, final) == (0.0, 0.0)
    assert np.all(final[5:7] == 0.0)


@pytest.mark.parametrize("dim", [2, 3])
def test_vision_flag_controls_the_obstacle_sensor(dim):
    env = ENVS[dim]
    k = env.num_sensed
    for vision in (False, True):
        params = env.make_params(num_obstacles=k + 2, vision=vision)
        obs, s = env.reset(jax.random.key(3), params)
        sensor = sensor_block(env, obs)
        if not vision:
            assert np.all(sensor == 0.0)
            continue
        pos, mask = np.asarray(s.pos), np.asarray(s.obstacle_mask)
        centres, radii = np.asarray(s.obstacles), np.asarray(s.radii)
        present = min(int(mask.sum()), k)
        assert present >= 1
        np.testing.assert_array_equal(sensor[:, -1], np.arange(k) < present)
        dist = surface(pos, centres, radii, mask)
        order = np.argsort(dist)[:present]
        rel = centres[order] - pos
        prox = np.clip(1.0 - dist[order] / 2.0, 0.0, 1.0)  # 2 m: the fixed SENSOR_RANGE
        direction = rel / np.linalg.norm(rel, axis=-1, keepdims=True)
        np.testing.assert_allclose(sensor[:present, :dim], direction * prox[:, None], atol=1e-5)
        np.testing.assert_allclose(sensor[:present, dim], prox, atol=1e-5)
        assert np.all(np.abs(sensor) <= 1.0)
        assert np.all(sensor[present:] == 0.0)


def test_observed_lengths_read_the_same_in_every_workspace():
    # a curriculum grows the room: 1.5 m to the goal and an obstacle 0.9 m away must read
    # the same in a 5 m and a 15 m room (lengths / a fixed 5 m, the sensor's proximity
    # over a fixed 2 m range), only the wall-relative position block differs
    env = ENVS[2]
    rows = []
    for ws in ([5.0, 5.0], [15.0, 15.0]):
        params = env.make_params(workspace_size=ws, vision=True)
        s = place(env, params, [2.0, 2.0], [3.5, 2.0], obstacles=[([2.0, 3.2], 0.3)])
        s = s.replace(workspace=jnp.asarray(ws, jnp.float32))
        rows.append(np.asarray(env.observe_state(s, params)))
    a, b = rows
    np.testing.assert_allclose(a[2:5], [1.5 / 5.0, 0.0, 1.5 / 5.0], atol=1e-6)
    # obstacle surface 0.9 m away straight up: proximity 1 - 0.9 / 2 m
    np.testing.assert_allclose(sensor_block(env, a)[0], [0.0, 0.55, 0.55, 1.0], atol=1e-6)
    np.testing.assert_allclose(a[2:], b[2:], atol=1e-6)
    assert not np.allclose(a[:2], b[:2])


@pytest.mark.parametrize("dim", [2, 3])
def test_fewer_obstacle_slots_than_sensor_rows(dim):
    # max_obstacles=2 < num_sensed=4 used to crash in obstacle_sensor at reset (argsort of 2
    # distances gives 2 rows, not 4): the missing rows read as absent obstacles
    env = Navigation(dim=dim, max_obstacles=2, num_sensed=4)
    params = env.make_params(num_obstacles=2, vision=True)
    obs, s = env.reset(jax.random.key(5), params)
    assert obs.shape == env.observation_space(params).shape
    sensor = sensor_block(env, obs)
    mask = np.asarray(s.obstacle_mask)
    present = int(mask.sum())
    assert present >= 1
    np.testing.assert_array_equal(sensor[:, -1], np.arange(4) < present)
    dist = surface(np.asarray(s.pos), np.asarray(s.obstacles), np.asarray(s.radii), mask)
    prox = np.clip(1.0 - np.sort(dist)[:present] / 2.0, 0.0, 1.0)  # 2 m: SENSOR_RANGE
    np.testing.assert_allclose(sensor[:present, dim], prox, atol=1e-5)
    assert np.all(sensor[present:] == 0.0)
    obs2, *_ = env.step(jax.random.key(6), s, jnp.ones(dim), params)
    assert np.all(np.isfinite(np.asarray(obs2)))


# ---- params under jit ------------------------------------------------------------------


def test_params_change_without_retracing_and_truncate_at_ceil_time_limit_over_dt():
    env = ENVS[2]
    traces = []
    horizon = 40

    @jax.jit
    def run(key, params):
        traces.append(1)
        obs0, state = env.reset(key, params)

        def body(state, k):
            obs, state, _, term, trunc, _ = env.step(k, state, jnp.zeros(2), params)
            return state, (obs, term, trunc)

        _, (obs, term, trunc) = jax.lax.scan(body, state, jax.random.split(key, horizon))
        return obs0, obs, term, trunc

    cases = [
        dict(time_limit=7.0),
        dict(num_obstacles=12, time_limit=7.2, vision=True),
        dict(workspace_size=[15.0, 15.0], num_obstacles=0, time_limit=0.3),
        dict(workspace_size=[3.0, 4.0], vision=False, time_limit=4.9, dt=0.25),
        dict(num_obstacles=5, time_limit=3.0, dt=0.25, vision=True),
    ]
    obs_dim = env.observation_space(env.default_params).shape[0]
    for fields in cases:
        # goal_radius 0: standing still never reaches the goal, so only truncation ends
        params = env.make_params(goal_radius=1e-6, goal_speed=0.0, **fields)
        obs0, obs, term, trunc = map(np.asarray, run(jax.random.key(0), params))
        assert obs0.shape == (obs_dim,) and obs.shape == (horizon, obs_dim)
        assert np.all(np.isfinite(obs))
        n = math.ceil(fields["time_limit"] / float(params.dt))
        assert not term.any()
        np.testing.assert_array_equal(np.flatnonzero(trunc), np.arange(n - 1, horizon, n))
        if n > 1:  # (with n == 1 the first step already shows the reset observation)
            np.testing.assert_allclose(obs[0, 4 * env.dim + 3], 1.0 - 1.0 / n, rtol=1e-5)
        sensor = sensor_block(env, obs0)
        assert np.any(sensor != 0.0) == (
            bool(fields.get("vision")) and fields.get("num_obstacles", 3) > 0
        )
    assert len(traces) == 1


# ---- argument checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(dim=1), "dim"),
        (dict(dim=4), "dim"),
        (dict(max_obstacles=-1), "max_obstacles"),
        (dict(max_obstacles=2.0), "max_obstacles"),
        (dict(max_obstacles=True), "max_obstacles"),
        (dict(num_sensed=0), "num_sensed"),
        (dict(num_sensed=1.5), "num_sensed"),
        (dict(num_obstacles=13), "num_obstacles"),
        (dict(workspace_size=[16.0, 5.0]), "workspace_size"),
        (dict(workspace_size=[5.0, 5.0, 7.0]), "workspace_size"),
        (dict(workspace_size=[0.0, 5.0]), "workspace_size"),
        (dict(workspace_size=[[5.0]]), "workspace_size"),
        (dict(speed=1.0), "speed"),
        (dict(reward_weights={"base": 2.0}), "reward_weights"),
    ],
)
def test_bad_constructor_args_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Navigation(**kwargs)


def test_make_params_checks_limits_and_names():
    env = ENVS[3]
    with pytest.raises(ValueError, match="num_obstacles"):
        env.make_params(num_obstacles=99)
    with pytest.raises(ValueError, match="workspace_size"):
        env.make_params(workspace_size=[5.0, 5.0, 6.5])
    with pytest.raises(ValueError, match="goal_tolerance"):
        env.make_params(goal_tolerance=1.0)
    p = env.make_params(num_obstacles=env.max_obstacles, workspace_size=list(env.max_workspace))
    assert int(p.num_obstacles) == env.max_obstacles
    # a 2-element workspace keeps the default z
    p = ENVS[2].make_params(workspace_size=[6.0, 7.0])
    np.testing.assert_allclose(p.workspace_size, [6.0, 7.0, 3.0])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(max_velocity=-1.0), "max_velocity"),
        (dict(obstacle_radius_min=1.0, obstacle_radius_max=0.1), "obstacle_radius"),
        (dict(goal_radius=-1.0), "goal_radius"),
        (dict(goal_speed=-0.1), "goal_speed"),
    ],
)
def test_bad_navigation_params_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Navigation(**kwargs)


def test_no_obstacles_env_defaults_to_zero_obstacles():
    env = Navigation(max_obstacles=0)
    assert int(env.default_params.num_obstacles) == 0
    obs, state = env.reset(jax.random.key(0), env.default_params)
    assert np.all(np.isfinite(np.asarray(obs)))


def test_make_builds_the_registered_envs():
    env, params = jaxlearn.make("Navigation3D-v0", num_sensed=2, num_obstacles=5)
    assert isinstance(env, Navigation) and env.dim == 3 and env.num_actions == 3
    assert int(params.num_obstacles) == 5
    assert env.observation_space(params).shape == (4 * 3 + 4 + 2 * 5,)
    assert env.action_space(params).shape == (3,)
    for d, venv in VENVS.items():  # the rollouts above ran these stacks
        assert isinstance(ENVS[d], Navigation) and ENVS[d].dim == d
        assert venv.num_envs == NUM_ENVS
