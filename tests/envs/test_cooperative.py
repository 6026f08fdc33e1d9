"""Cooperative env: shapes, the collision and spacing constraints, rewards, success, retracing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import rewards
from jaxlearn.envs.cooperative import Cooperative

NUM_ENVS, NUM_STEPS = 32, 200

# one env and one compiled step for the hand-built cases (eager steps are slow on CPU)
ENV = Cooperative(num_agents=3)
STEP_ENV = jax.jit(ENV.step_env)


def _rollout(env, params, key):
    """Random actions through `env.step` (auto-reset), vmapped over NUM_ENVS envs."""
    space = env.action_space(params)

    def one(key):
        k_reset, k_run = jax.random.split(key)
        _, state = env.reset(k_reset, params)

        def body(state, k):
            k_a, k_s = jax.random.split(k)
            action = space.sample(k_a)
            obs, nxt, r, term, trunc, info = env.step(k_s, state, action, params)
            out = dict(
                obs=obs,
                reward=r,
                done=term | trunc,
                term=term,
                pos_before=state.pos,
                pos_after=nxt.pos,
                comps=info["reward_components"],
                ep_comps=info["episode_reward_components"],
                task=info["task"],
            )
            return nxt, out

        return jax.lax.scan(body, state, jax.random.split(k_run, NUM_STEPS))[1]

    out = jax.jit(jax.vmap(one))(jax.random.split(key, NUM_ENVS))
    return jax.tree.map(np.asarray, out)


def _pairwise_min(pos):
    """`[...]` smallest distance between two different agents of `pos` `[..., N, 2]`."""
    d = np.linalg.norm(pos[..., :, None, :] - pos[..., None, :, :], axis=-1)
    n = pos.shape[-2]
    d = np.where(np.eye(n, dtype=bool), np.inf, d)
    return d.min(axis=(-1, -2))


@pytest.mark.parametrize(
    "kwargs, fields",
    [
        (dict(), dict(num_obstacles=8, vision=True, time_limit=20.0)),
        (dict(num_agents=5, comm_dim=0), dict(workspace_size=[3.0, 3.0], time_limit=20.0)),
    ],
)
def test_random_rollouts_keep_invariants(kwargs, fields):
    env = Cooperative(**kwargs)
    params = env.make_params(**fields)
    out = _rollout(env, params, jax.random.key(0))
    n = env.num_agents
    assert out["obs"].shape == (NUM_ENVS, NUM_STEPS, n, env.obs_dim)
    assert out["obs"].dtype == np.float32
    assert np.all(np.isfinite(out["obs"])) and np.all(np.isfinite(out["reward"]))
    # spacing holds for the stepped state and for the freshly reset one
    d_min = float(params.min_agent_distance)
    assert _pairwise_min(out["pos_after"]).min() >= d_min - 1e-5
    assert _pairwise_min(out["pos_before"]).min() >= d_min - 1e-5
    ws = np.asarray(params.workspace_size[:2])
    assert np.all(out["pos_after"] >= 0.0) and np.all(out["pos_after"] <= ws + 1e-6)
    # speed, on steps that did not end (after an auto-reset positions jump)
    steps = np.linalg.norm(out["pos_after"] - out["pos_before"], axis=-1)  # [B, T, N]
    speed = steps[~out["done"]] / float(params.dt)
    assert speed.max() <= float(params.max_velocity) + 1e-5
    assert speed.max() > 0.5 * float(params.max_velocity)  # agents do move
    # weighted components sum to the reward
    comp_sum = sum(out["comps"].values())
    np.testing.assert_allclose(comp_sum, out["reward"], rtol=1e-5, atol=1e-5)
    assert set(out["comps"]) == set(env.components)
    coop = out["comps"]["cooperation"] / float(params.reward_weights["cooperation"])
    assert np.all((coop >= -1 - 1e-6) & (coop <= 1 + 1e-6))  # change of a score in [0, 1]
    eff = out["comps"]["efficiency"] / float(params.reward_weights["efficiency"])
    assert np.all((eff >= -1 - 1e-6) & (eff <= 0))
    # at a done step the episode sums are that episode's summed rewards
    assert out["done"].sum() >= NUM_ENVS  # time_limit 20 s = 40 steps
    for b in range(NUM_ENVS):
        start = 0
        for t in np.flatnonzero(out["done"][b]):
            ep_total = sum(v[b, t] for v in out["ep_comps"].values())
            np.testing.assert_allclose(
                ep_total, out["reward"][b, start : t + 1].sum(), rtol=1e-4, atol=1e-4
            )
            start = t + 1
    task = out["task"]
    assert task["success"].dtype == np.bool_
    assert task["collisions"].dtype == np.int32
    assert task["cooperation"].dtype == np.float32
    assert task["agent_cooperation"].shape == (NUM_ENVS, NUM_STEPS, n)
    np.testing.assert_allclose(
        task["agent_cooperation"].mean(-1), task["cooperation"], rtol=1e-5, atol=1e-6
    )
    # collisions count blocked moves; the weighted component is -0.5 per blocked agent
    ncol = out["comps"]["collision"] / float(params.reward_weights["collision"])
    assert np.all(ncol == np.round(ncol)) and np.all((ncol >= 0) & (ncol <= n))


def _state(env, params, pos, goal=None, obstacles=()):
    """A reset state with agents at `pos` `[N, 2]` and the given `(centre, radius)` list."""
    _, state = env.reset(jax.random.key(0), params)
    m = env.max_obstacles
    centres = np.zeros((m, 2), np.float32)
    radii = np.full((m,), 0.3, np.float32)
    mask = np.zeros((m,), bool)
    for i, (c, r) in enumerate(obstacles):
        centres[i], radii[i], mask[i] = c, r, True
    goal = np.array([4.5, 4.5]) if goal is None else np.asarray(goal)
    return state.replace(
        pos=jnp.asarray(pos, jnp.float32),
        goal=jnp.asarray(goal, jnp.float32),
        obstacles=jnp.asarray(centres),
        radii=jnp.asarray(radii),
        obstacle_mask=jnp.asarray(mask),
    )


def _action(env, move, comm=None):
    n = env.num_agents
    comm = np.zeros((n, env.comm_dim)) if comm is None else comm
    return {"move": jnp.asarray(move, jnp.float32), "comm": jnp.asarray(comm, jnp.float32)}


def test_move_into_obstacle_is_cancelled_and_counted():
    env, params = ENV, ENV.default_params
    pos = [[1.0, 1.0], [1.0, 3.0], [3.0, 3.0]]
    # agent 0 would end inside; agent 1 would jump clean through a small obstacle
    obstacles = [([1.4, 1.0], 0.3), ([1.0, 3.25], 0.1)]
    state = _state(env, params, pos, obstacles=obstacles)
    move = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    _, nxt, reward, term, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    np.testing.assert_allclose(nxt.pos[0], pos[0])
    np.testing.assert_allclose(nxt.pos[1], pos[1])
    np.testing.assert_allclose(nxt.pos[2], [2.5, 3.0], atol=1e-6)
    assert int(nxt.collisions) == 2 and int(info["task"]["collisions"]) == 2
    w = float(params.reward_weights["collision"])
    np.testing.assert_allclose(info["reward_components"]["collision"], 2 * w)


def test_oblique_move_into_obstacle_slides_along_it_and_counts():
    env, params = ENV, ENV.default_params
    centre, radius = np.array([1.5, 1.0]), 0.3
    pos = [[1.0, 1.0], [1.0, 3.0], [3.0, 3.0]]  # agent 0's surface 0.2 m ahead
    state = _state(env, params, pos, obstacles=[(centre, radius)])
    move = [[1.0, 0.5], [0.0, 0.0], [0.0, 0.0]]  # into it and up: its straight path enters
    _, nxt, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    moved = np.asarray(nxt.pos[0]) - np.asarray(pos[0])
    normal = (np.asarray(pos[0]) - centre) / np.linalg.norm(np.asarray(pos[0]) - centre)
    assert moved[1] > 0.05  # it moved, in the commanded sideways direction
    assert abs(np.dot(moved, normal)) < 1e-6  # tangential only
    assert np.linalg.norm(np.asarray(nxt.pos[0]) - centre) >= radius
    assert int(info["task"]["collisions"]) == 1  # touching the obstacle still counts
    # a slide whose own path enters another obstacle is cancelled
    state = _state(env, params, pos, obstacles=[(centre, radius), ([1.0, 1.3], 0.1)])
    _, nxt, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    np.testing.assert_allclose(nxt.pos[0], pos[0])
    assert int(info["task"]["collisions"]) == 1


def test_agents_moving_into_each_other_keep_their_distance():
    env, params = ENV, ENV.default_params
    d_min = float(params.min_agent_distance)
    # 0 and 1 head-on (would end 0.1 m apart); 2 walks into 1's old spot... which 1 keeps
    pos = [[1.0, 2.0], [1.9, 2.0], [2.6, 2.0]]
    state = _state(env, params, pos)
    move = [[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]]
    _, nxt, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    new = np.asarray(nxt.pos)
    assert _pairwise_min(new) >= d_min - 1e-6
    np.testing.assert_allclose(new, pos)  # 0, 1 cancelled; then 2 would be 0.2 m from 1
    assert int(info["task"]["collisions"]) == 3
    # one agent walking into a standing one stays; the other is not blamed
    pos = [[1.0, 2.0], [1.6, 2.0], [3.0, 4.0]]
    state = _state(env, params, pos)
    move = [[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]]
    _, nxt, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    np.testing.assert_allclose(nxt.pos[:2], pos[:2])
    np.testing.assert_allclose(nxt.pos[2], [3.0, 3.5], atol=1e-6)
    assert int(info["task"]["collisions"]) == 1


def test_resolution_holds_in_crowds():
    env = Cooperative(num_agents=8, max_obstacles=0)
    params = env.make_params(workspace_size=[3.0, 3.0], min_agent_distance=0.5)

    def step(key):
        k_reset, k_a = jax.random.split(key)
        _, state = env.reset(k_reset, params)
        # everybody rushes towards the centroid
        to_c = jnp.mean(state.pos, axis=0) - state.pos
        move = to_c / jnp.maximum(jnp.abs(to_c).max(-1, keepdims=True), 1e-6)
        move = move + 0.3 * jax.random.normal(k_a, move.shape)
        _, nxt, _, _, _ = env.step_env(k_a, state, _action(env, move), params)
        return state.pos, nxt.pos

    before, after = jax.jit(jax.vmap(step))(jax.random.split(jax.random.key(0), 256))
    assert _pairwise_min(np.asarray(before)).min() >= 0.5 - 1e-5
    assert _pairwise_min(np.asarray(after)).min() >= 0.5 - 1e-5
    assert np.any(np.asarray(after) != np.asarray(before))


def test_cooperation_component_is_the_change_of_the_team_score():
    env, params = ENV, ENV.default_params
    angle = 2 * np.pi * np.arange(3) / 3
    slots = np.array([2.5, 2.5]) + float(params.formation_radius) * np.stack(
        [np.cos(angle), np.sin(angle)], -1
    )
    # agent 0 starts 0.5 m outside its slot and moves back onto it
    start = slots.copy()
    start[0] += [0.5, 0.0]
    state = _state(env, params, start, goal=[4.5, 4.5])
    move = np.zeros((3, 2))
    move[0] = [-1.0, 0.0]  # 1 m/s for dt = 0.5 s: 0.5 m
    _, nxt, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, move), params)
    before = float(np.mean(env.agent_scores(jnp.asarray(start), params)))
    after = float(np.mean(env.agent_scores(nxt.pos, params)))
    w = float(params.reward_weights["cooperation"])
    assert after > before
    np.testing.assert_allclose(
        info["reward_components"]["cooperation"], w * (after - before), rtol=1e-4, atol=1e-6
    )


def test_observation_layout_and_perfect_formation():
    env, params = ENV, ENV.make_params(vision=True)  # comm_dim 2, num_sensed 3
    centre = np.array([2.0, 2.5])
    angle = 2 * np.pi * np.arange(3) / 3
    slots = centre + float(params.formation_radius) * np.stack([np.cos(angle), np.sin(angle)], -1)
    state = _state(env, params, slots, goal=[4.0, 4.0], obstacles=[([0.5, 0.5], 0.3)])
    comm = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    obs, nxt, _, term, info = STEP_ENV(
        jax.random.key(1), state, _action(env, np.zeros((3, 2)), comm), params
    )
    assert not bool(term)
    # held formation: score 1 before and after, so the (potential-based) component is 0
    np.testing.assert_allclose(info["reward_components"]["cooperation"], 0.0, atol=1e-5)
    np.testing.assert_allclose(info["task"]["agent_cooperation"], np.ones(3), rtol=1e-5)
    obs = np.asarray(obs)
    assert obs.shape == (3, 8 + 2 * (2 + 2) + 3 * 4 + 1)
    scale = 5.0
    i = 1
    np.testing.assert_allclose(obs[i, 0:2], slots[i] / 5.0 * 2 - 1, atol=1e-5)
    np.testing.assert_allclose(obs[i, 2:4], ([4.0, 4.0] - slots[i]) / scale, atol=1e-5)
    np.testing.assert_allclose(obs[i, 4:6], (centre - slots[i]) / scale, atol=1e-5)
    np.testing.assert_allclose(obs[i, 6:8], 0.0, atol=1e-5)  # on its slot
    others = (slots[[0, 2]] - slots[i]) / scale
    np.testing.assert_allclose(obs[i, 8:12], others.reshape(-1), atol=1e-5)
    np.testing.assert_allclose(obs[i, 12:16], comm[[0, 2]].reshape(-1), atol=1e-6)
    sensor = obs[i, 16:28].reshape(3, 4)
    np.testing.assert_allclose(sensor[0, :2], ([0.5, 0.5] - slots[i]) / scale, atol=1e-5)
    assert sensor[0, 3] == 1.0 and np.all(sensor[1:] == 0.0)  # one obstacle present
    steps = int(np.ceil(float(params.time_limit) / float(params.dt)))
    np.testing.assert_allclose(obs[i, 28], 1.0 - 1.0 / steps, rtol=1e-6)
    # without vision the sensor block is zeros
    obs_blind, _ = env.reset(jax.random.key(0), params.replace(vision=jnp.bool_(False)))
    assert np.all(np.asarray(obs_blind)[:, 16:28] == 0.0)
    assert np.any(np.asarray(env.reset(jax.random.key(0), params)[0])[:, 16:28] != 0.0)


def test_reaching_goal_in_formation_terminates_with_success():
    env, params = ENV, ENV.default_params
    goal = np.array([3.0, 3.0])
    angle = 2 * np.pi * np.arange(3) / 3
    slots = np.stack([np.cos(angle), np.sin(angle)], -1)
    # centroid 1.2 m from the goal, moving 0.5 m towards it: inside goal_radius = 1 m
    state = _state(env, params, goal - [1.2, 0.0] + slots, goal=goal)
    move = np.tile([1.0, 0.0], (3, 1))
    obs, nxt, reward, term, trunc, info = jax.jit(env.step)(
        jax.random.key(1), state, _action(env, move), params
    )
    assert bool(term) and not bool(trunc)
    assert bool(info["task"]["success"])
    comps = info["reward_components"]
    np.testing.assert_allclose(comps["completion"], float(params.reward_weights["completion"]))
    np.testing.assert_allclose(comps["base"], 0.5, atol=1e-5)
    assert int(nxt.time) == 0  # auto-reset
    # at the goal but clustered (no formation): not done
    cluster = goal + np.array([[0.0, 0.0], [0.35, 0.0], [0.0, 0.35]])
    state = _state(env, params, cluster, goal=goal)
    _, _, _, term, info = STEP_ENV(jax.random.key(1), state, _action(env, np.zeros((3, 2))), params)
    assert not bool(term) and not bool(info["task"]["success"])
    assert float(info["task"]["cooperation"]) < 0.5


def test_param_changes_do_not_retrace():
    env = Cooperative()
    traces = []

    @jax.jit
    def run(key, params):
        traces.append(1)
        obs, state = env.reset(key, params)
        action = env.action_space(params).sample(key)
        return env.step(key, state, action, params)[0]

    for fields in (
        dict(),
        dict(num_obstacles=10),
        dict(workspace_size=[9.0, 7.0]),
        dict(num_obstacles=0, vision=True, workspace_size=[4.0, 12.0]),
    ):
        obs = run(jax.random.key(0), env.make_params(**fields))
        assert obs.shape == (3, env.obs_dim)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_agents=1), "num_agents"),
        (dict(num_agents=2.0), "num_agents"),
        (dict(comm_dim=-1), "comm_dim"),
        (dict(max_obstacles=-1), "max_obstacles"),
        (dict(num_sensed=0), "num_sensed"),
        (dict(min_agent_distance=2.0), "min_agent_distance"),
        (dict(num_agents=8, min_agent_distance=0.8), "min_agent_distance"),
        (dict(formation_radius=0.0), "formation_radius"),
        (dict(max_velocity=-1.0), "max_velocity"),
        (dict(obstacle_radius_max=0.1), "obstacle_radius_max"),
        (dict(workspace_size=[1.5, 5.0]), "workspace_size"),
        (dict(num_obstacles=13), "num_obstacles"),
        (dict(speed=1.0), "speed"),
        (dict(discrete_moves=1), "discrete_moves"),
    ],
)
def test_bad_constructor_args_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Cooperative(**kwargs)


def test_make_vec_reset_and_step():
    env, params = jaxlearn.make_vec("Cooperative-v0", 4, num_agents=4)
    assert env.num_agents == 4
    obs, state = jax.jit(env.reset)(jax.random.key(0), params)
    assert obs.shape == (4, 4, env.obs_dim)
    space = env.action_space(params)
    actions = jax.vmap(space.sample)(jax.random.split(jax.random.key(1), 4))
    assert actions["move"].shape == (4, 4, 2)
    obs, state, r, term, trunc, info = jax.jit(env.step)(jax.random.key(2), state, actions, params)
    assert obs.shape == (4, 4, env.obs_dim)
    for x in (r, term, trunc, info["episode_return"], info["task"]["cooperation"]):
        assert x.shape == (4,)
    assert info["task"]["agent_cooperation"].shape == (4, 4)
    assert env.num_actions == 4 * (2 + 2)


def test_formation_component_costs_the_formation_gap_every_step():
    env = ENV
    params = rewards.override_weights(ENV.default_params, {"formation": 0.7})
    radius = float(params.formation_radius)
    angle = 2 * np.pi * np.arange(3) / 3
    offsets = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
    pos = np.array([2.5, 2.5]) + offsets
    pos[0] += [0.6, 0.0]  # agent 0 off its slot; nobody moves
    state = _state(env, params, pos, goal=[4.5, 4.5])
    _, _, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, np.zeros((3, 2))), params)
    slots = pos.mean(0) + offsets  # the slots follow the centroid
    score = np.exp(-((np.linalg.norm(pos - slots, axis=-1) / radius) ** 2)).mean()
    assert score < 0.95
    got = info["reward_components"]["formation"]
    np.testing.assert_allclose(got, 0.7 * (score - 1.0), rtol=1e-4)
    # in perfect formation it costs nothing; the default weight is 0 (off)
    state = _state(env, params, np.array([2.5, 2.5]) + offsets, goal=[4.5, 4.5])
    _, _, _, _, info = STEP_ENV(jax.random.key(1), state, _action(env, np.zeros((3, 2))), params)
    np.testing.assert_allclose(info["reward_components"]["formation"], 0.0, atol=1e-5)
    assert float(ENV.default_params.reward_weights["formation"]) == 0.0


def test_discrete_moves_are_one_compass_move_per_agent():
    from jaxlearn import spaces
    from jaxlearn.envs.cooperative import MOVES

    env = Cooperative(num_agents=3, discrete_moves=True)
    params = env.default_params
    space = env.action_space(params)
    assert isinstance(space.spaces["move"], spaces.Discrete) and space.spaces["move"].n == 9
    # the 9 moves: stay, then 8 unit directions 45 degrees apart (reference by hand)
    s = np.sqrt(0.5)
    ref = [[0, 0], [1, 0], [s, s], [0, 1], [-s, s], [-1, 0], [-s, -s], [0, -1], [s, -s]]
    np.testing.assert_allclose(MOVES, ref, atol=1e-6)
    pos = [[1.0, 1.0], [3.0, 1.0], [2.0, 3.0]]
    state = _state(env, params, pos, obstacles=[])
    action = {"move": jnp.asarray([1, 3, 6], jnp.int32), "comm": jnp.zeros((3, env.comm_dim))}
    _, nxt, _, _, _ = jax.jit(env.step_env)(jax.random.key(1), state, action, params)
    step = float(params.max_velocity) * float(params.dt)  # metres per step at full speed
    expect = np.asarray(pos) + step * np.asarray([ref[1], ref[3], ref[6]])
    np.testing.assert_allclose(nxt.pos, expect, atol=1e-5)
    np.testing.assert_allclose(nxt.prev_move, np.asarray([ref[1], ref[3], ref[6]]), atol=1e-6)
