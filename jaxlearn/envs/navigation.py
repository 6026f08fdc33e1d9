"""Navigation: a point agent reaches a goal among spherical obstacles, in 2-D or 3-D.

- Workspace: the box `[0, workspace_size]` metres (x, y; and z in 3-D).
- Action: a velocity command in `Box(-1, 1, (dim,))`, scaled by `max_velocity` (m/s, the
  speed is capped at `max_velocity`) and applied for `dt` seconds. Within
  `safety_distance` metres of an obstacle's surface the speed is capped at
  `max_velocity_near_obstacle` (the safety constraint).
- Collision: a move that would enter an obstacle slides along its surface (the inward part
  of the motion is removed), or is cancelled if it would still collide; either way the step
  counts one collision. Walls clip the position without a collision. With
  `collision_ends` the first collision instead terminates the episode as a failure (a
  curriculum stage can switch it on: sliding along obstacles is then no longer a shortcut).
- Tool use (when `params.tool_use`): the goal only counts after the agent has visited the
  tool's position; the observation shows where the tool is and whether it is held.
- Vision (when `params.vision`): the observation includes the `num_sensed` nearest
  obstacles; without it that block is zeros.
- Ends: terminated when the agent stops at the goal, i.e. ends a step within `goal_radius`
  of it moving no faster than `goal_speed` (`task["success"]`); truncated after
  `time_limit` seconds. (Arriving slowly is what makes the task more than a random walk:
  in a 5 x 5 m room a uniformly random policy would otherwise pass by the goal in most
  episodes of the BEGINNER time limit.)

Observation `[obs_dim]` float32 (D = dim, K = num_sensed): position scaled to [-1, 1] (D),
goal minus position / OBS_SCALE (D), goal distance / OBS_SCALE (1), tool minus
position / OBS_SCALE (D), tool needed and tool held flags (2), last velocity /
max_velocity (D), fraction of the time limit left (1), obstacle sensor (K x (D + 2):
direction x proximity, proximity, present; see `proximity_sensor`). Lengths are divided
by a fixed scale, not by the workspace: a curriculum grows the workspace, and a policy
that learned to brake 0.5 m before the goal in a 5 m room must read the same 0.5 m in a 15 m room.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn import spaces
from jaxlearn.envs import task as T

OBS_SCALE = 5.0  # metres: relative positions and distances in the observation are / this
# metres: the obstacle sensor reads proximity 1 - surface distance / SENSOR_RANGE (0 beyond
# it). Lengths / 5 m read only 0.0-0.2 in the last metre, where avoidance is decided (a
# full-speed step is 0.5 m); lengths / 1 m were unbounded (up to ~10 for far obstacles)
# and slowed the tool stage. See docs/tasks.md for what each variant measured.
SENSOR_RANGE = 2.0


@struct.dataclass
class NavigationParams(T.TaskParams):
    max_velocity: jax.Array  # [] m/s
    max_velocity_near_obstacle: jax.Array  # [] m/s, within safety_distance of an obstacle
    safety_distance: jax.Array  # [] metres from an obstacle's surface
    goal_radius: jax.Array  # [] metres: reaching the goal (or the tool)
    goal_speed: jax.Array  # [] m/s: the agent must arrive at the goal no faster than this
    obstacle_radius_min: jax.Array  # [] metres
    obstacle_radius_max: jax.Array  # [] metres
    collision_ends: jax.Array  # [] bool: a collision terminates the episode (a failure)


@struct.dataclass
class NavigationState(T.TaskState):
    pos: jax.Array  # [D] metres
    vel: jax.Array  # [D] m/s applied last step
    prev_action: jax.Array  # [D]
    goal: jax.Array  # [D]
    tool: jax.Array  # [D]
    tool_needed: jax.Array  # [] bool
    has_tool: jax.Array  # [] bool
    vision: jax.Array  # [] bool
    workspace: jax.Array  # [D] metres, fixed at reset
    obstacles: jax.Array  # [M, D] centres
    radii: jax.Array  # [M]
    obstacle_mask: jax.Array  # [M] bool
    collisions: jax.Array  # [] int32 this episode


class Navigation(T.TaskEnv):
    """Point-agent navigation with obstacles (see the module docstring)."""

    components = ("base", "time_penalty", "collision", "completion", "efficiency")
    task_metrics = ("success", "collisions")

    def __init__(
        self,
        dim: int = 2,
        max_obstacles: int = 12,
        num_sensed: int = 4,
        reward: Any = None,
        **param_overrides: Any,
    ):
        if dim not in (2, 3):
            raise ValueError(f"Navigation: dim={dim!r} is invalid: must be 2 or 3")
        if (
            isinstance(max_obstacles, bool)
            or not isinstance(max_obstacles, int)
            or max_obstacles < 0
        ):
            raise ValueError(f"Navigation: max_obstacles={max_obstacles!r} must be an int >= 0")
        if isinstance(num_sensed, bool) or not isinstance(num_sensed, int) or num_sensed < 1:
            raise ValueError(f"Navigation: num_sensed={num_sensed!r} must be an int >= 1")
        super().__init__(reward)
        self.dim = dim
        self.max_obstacles = max_obstacles
        self.num_sensed = num_sensed
        self._overrides = dict(param_overrides)
        self.make_params()  # validate the overrides now

    @property
    def name(self) -> str:
        return f"Navigation{self.dim}D"

    def make_params(self, **fields: Any) -> NavigationParams:
        p = NavigationParams(
            **T.base_params(
                dt=0.5,
                num_obstacles=min(3, self.max_obstacles),
                reward_weights=self.default_weights(),
            ),
            max_velocity=jnp.float32(1.0),
            max_velocity_near_obstacle=jnp.float32(0.5),
            safety_distance=jnp.float32(0.5),
            goal_radius=jnp.float32(0.5),
            goal_speed=jnp.float32(0.25),
            obstacle_radius_min=jnp.float32(0.3),
            obstacle_radius_max=jnp.float32(0.6),
            collision_ends=jnp.bool_(False),
        )
        return self.with_fields(p, {**self._overrides, **fields}, owner=self.name)

    def check_limits(self, params: NavigationParams, owner: str = "env") -> None:
        super().check_limits(params, owner)
        for name in ("max_velocity", "max_velocity_near_obstacle", "goal_radius"):
            v = float(getattr(params, name))
            if not v > 0:
                raise ValueError(f"{owner}: {name}={v} is invalid: must be > 0")
        for name in ("safety_distance", "goal_speed"):
            v = float(getattr(params, name))
            if not v >= 0:
                raise ValueError(f"{owner}: {name}={v} is invalid: must be >= 0")
        lo, hi = float(params.obstacle_radius_min), float(params.obstacle_radius_max)
        if not 0 < lo <= hi:
            raise ValueError(
                f"{owner}: obstacle_radius_min={lo}, obstacle_radius_max={hi} are invalid: "
                "need 0 < obstacle_radius_min <= obstacle_radius_max"
            )

    def observation_space(self, params) -> spaces.Box:
        d, k = self.dim, self.num_sensed
        n = d + d + 1 + d + 2 + d + 1 + k * (d + 2)
        return spaces.Box(-jnp.inf, jnp.inf, (n,), jnp.float32)

    def action_space(self, params) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.dim,), jnp.float32)

    # ---- reset / step ----------------------------------------------------------------

    def reset_env(self, key, params: NavigationParams):
        d = self.dim
        k_pos, k_goal, k_tool, k_obs = jax.random.split(key, 4)
        ws = params.workspace_size[:d]
        margin = jnp.minimum(0.5, 0.25 * ws)
        pos = margin + jax.random.uniform(k_pos, (d,)) * (ws - 2 * margin)
        # the farther of two random goals: episodes need real travel
        cand = margin + jax.random.uniform(k_goal, (2, d)) * (ws - 2 * margin)
        goal = cand[jnp.argmax(jnp.linalg.norm(cand - pos, axis=-1))]
        tool = margin + jax.random.uniform(k_tool, (d,)) * (ws - 2 * margin)
        keep = jnp.stack([pos, goal, tool])
        centres, radii, mask = T.sample_obstacles(
            k_obs,
            ws,
            params.num_obstacles,
            self.max_obstacles,
            (params.obstacle_radius_min, params.obstacle_radius_max),
            keep,
            clearance=params.goal_radius + 0.2,
        )
        state = NavigationState(
            time=jnp.int32(0),
            reward_sums=self.zero_sums(),
            pos=pos,
            vel=jnp.zeros(d),
            prev_action=jnp.zeros(d),
            goal=goal,
            tool=tool,
            tool_needed=params.tool_use,
            has_tool=jnp.bool_(False),
            vision=params.vision,
            workspace=ws,
            obstacles=centres,
            radii=radii,
            obstacle_mask=mask,
            collisions=jnp.int32(0),
        )
        return self.observe_state(state, params), state

    def safe_velocity(self, state: NavigationState, action: jax.Array, params) -> jax.Array:
        """Commanded velocity `[D]` m/s after the near-obstacle speed cap."""
        v = jnp.clip(action, -1.0, 1.0) * params.max_velocity
        speed = jnp.linalg.norm(v)
        v = v * jnp.minimum(1.0, params.max_velocity / jnp.maximum(speed, 1e-8))
        near = (
            jnp.min(surface_distance(state), initial=jnp.inf) < params.safety_distance
            if self.max_obstacles
            else jnp.bool_(False)
        )
        speed = jnp.linalg.norm(v)
        cap = jnp.where(near, params.max_velocity_near_obstacle, jnp.inf)
        return v * jnp.minimum(1.0, cap / jnp.maximum(speed, 1e-8))

    def transition(self, key, state: NavigationState, action, params: NavigationParams):
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        v = self.safe_velocity(state, action, params)
        new_pos, collided = self._move(state, v, params.dt)
        v_applied = (new_pos - state.pos) / params.dt

        seeking_tool = state.tool_needed & ~state.has_tool
        target = jnp.where(seeking_tool, state.tool, state.goal)
        progress = jnp.linalg.norm(state.pos - target) - jnp.linalg.norm(new_pos - target)
        got_tool = seeking_tool & (jnp.linalg.norm(new_pos - state.tool) < params.goal_radius)
        has_tool = state.has_tool | got_tool
        at_goal = (jnp.linalg.norm(new_pos - state.goal) < params.goal_radius) & (
            jnp.linalg.norm(v_applied) <= params.goal_speed
        )
        success = at_goal & (~state.tool_needed | has_tool)
        collisions = state.collisions + collided.astype(jnp.int32)

        next_state = state.replace(
            pos=new_pos,
            vel=v_applied,
            prev_action=action,
            has_tool=has_tool,
            collisions=collisions,
        )
        comps = {
            "base": progress,
            "time_penalty": jnp.float32(1.0),
            "collision": collided.astype(jnp.float32),
            "completion": success.astype(jnp.float32),
            "efficiency": -jnp.mean((action - state.prev_action) ** 2) / 4.0,
        }
        task = {"success": success, "collisions": collisions}
        # time advances in step_env; observe with the advanced clock
        obs = self.observe_state(next_state.replace(time=state.time + 1), params)
        terminated = success | (collided & params.collision_ends)
        return next_state, obs, terminated, comps, task

    def _move(self, state: NavigationState, v: jax.Array, dt) -> tuple[jax.Array, jax.Array]:
        """New position `[D]` and whether the move hit an obstacle (slide, else stay)."""
        ws = state.workspace
        proposed = jnp.clip(state.pos + v * dt, 0.0, ws)
        if not self.max_obstacles:
            return proposed, jnp.bool_(False)
        hit = _inside(proposed, state)
        # slide: drop the motion towards the obstacle that would be hit first
        along = T.slide_velocity(
            state.pos, v, proposed, state.obstacles, state.radii, state.obstacle_mask
        )
        slid = jnp.clip(state.pos + along * dt, 0.0, ws)
        slid_ok = ~_inside(slid, state)
        new_pos = jnp.where(hit, jnp.where(slid_ok, slid, state.pos), proposed)
        return new_pos, hit

    def observe_state(self, state: NavigationState, params: NavigationParams) -> jax.Array:
        ws = state.workspace
        scale = jnp.float32(OBS_SCALE)
        rel_goal = state.goal - state.pos
        sensor = (
            proximity_sensor(state, self.num_sensed)
            if self.max_obstacles
            else jnp.zeros((self.num_sensed, self.dim + 2))
        )
        t_left = 1.0 - state.time.astype(jnp.float32) / T.max_steps(params)
        return jnp.concatenate(
            [
                state.pos / ws * 2.0 - 1.0,
                rel_goal / scale,
                jnp.linalg.norm(rel_goal)[None] / scale,
                jnp.where(state.tool_needed, (state.tool - state.pos) / scale, 0.0),
                jnp.stack([state.tool_needed, state.has_tool]).astype(jnp.float32),
                state.vel / params.max_velocity,
                t_left[None],
                sensor.reshape(-1),
            ]
        ).astype(jnp.float32)


def proximity_sensor(state: NavigationState, k: int) -> jax.Array:
    """The `k` nearest obstacles as `[k, D + 2]`: unit direction x proximity (D), proximity
    `clip(1 - surface distance / SENSOR_RANGE, 0, 1)` (1), present flag (1); zeros for
    missing obstacles or without vision. Every entry is in [-1, 1]."""
    raw = T.obstacle_sensor(
        state.pos,
        state.obstacles,
        state.radii,
        state.obstacle_mask,
        k,
        jnp.float32(1.0),
        state.vision,
    )
    d = state.pos.shape[0]
    rel, sd, present = raw[:, :d], raw[:, d], raw[:, d + 1]
    direction = rel / jnp.maximum(jnp.linalg.norm(rel, axis=-1, keepdims=True), 1e-6)
    prox = jnp.clip(1.0 - sd / SENSOR_RANGE, 0.0, 1.0) * present
    return jnp.concatenate([direction * prox[:, None], prox[:, None], present[:, None]], -1)


def _surface(pos: jax.Array, state: NavigationState) -> jax.Array:
    return jnp.linalg.norm(state.obstacles - pos, axis=-1) - state.radii


def _inside(pos: jax.Array, state: NavigationState) -> jax.Array:
    return jnp.any(state.obstacle_mask & (_surface(pos, state) < 0.0))


def surface_distance(state: NavigationState) -> jax.Array:
    """`[M]` metres from the agent to each active obstacle's surface (inf if inactive)."""
    return T.surface_distance(state.pos, state.obstacles, state.radii, state.obstacle_mask)
