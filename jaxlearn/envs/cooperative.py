"""Cooperative: N point agents move their team to a goal in 2-D while keeping a formation.

- Workspace: the box `[0, workspace_size[:2]]` metres; walls clip positions.
- Formation: agent i's slot is `centroid + formation_radius * (cos, sin)(2 pi i / N)`, a
  regular polygon around the team centroid (for 2 agents, a line). An agent's score is
  `exp(-(distance to its slot / formation_radius)^2)`; the team's cooperation score is the
  mean over agents, in [0, 1].
- Action: `{"move": [N, 2], "comm": [N, comm_dim]}`, both in [-1, 1]. `move` is a velocity
  command scaled by `max_velocity` (m/s, the speed is capped at `max_velocity`) applied for
  `dt` seconds; `comm` is a signal the other agents observe next step.
- Collision: a move whose path would enter an obstacle, or whose end lies closer than
  `min_agent_distance` to another agent, slides along it (as in navigation); a slid move
  that still collides is cancelled, resolved to a fixed point so that every pair stays at
  least `min_agent_distance` apart once it is. Each blocked agent counts one collision.
- Vision (when `params.vision`): each agent observes its `num_sensed` nearest obstacles;
  without it that block is zeros.
- Reward: `cooperation` is the change of the team score this step (potential-based
  shaping); `formation` is the team score minus 1 every step, a cost of travelling out of
  formation (weight 0 by default; `experiments/cooperative.yaml` sets it). docs/tasks.md
  gives the measurements behind both choices and behind sliding.
- Ends: terminated when the centroid is within `goal_radius` of the goal with a cooperation
  score >= 0.5 (`task["success"]`), truncated after `time_limit` seconds.

Observation `[N, obs_dim]` float32, one row per agent with the same layout (N agents,
C = comm_dim, K = num_sensed, positions relative to the agent / largest side): own position
scaled to [-1, 1] (2), goal (2), team centroid (2), own slot (2), the other agents in index
order ((N - 1) x 2), their last comm ((N - 1) x C), obstacle sensor (K x 4), fraction of the
time limit left (1).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxlearn import spaces
from jaxlearn.envs import task as T

# Success needs at least this team cooperation score at the goal.
FORMATION_THRESHOLD = 0.5
# `discrete_moves`: move index -> unit move (stay, then E, NE, N, NW, W, SW, S, SE).
MOVES = np.concatenate(
    [
        np.zeros((1, 2)),
        np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=-1),
    ]
).astype(np.float32)


@struct.dataclass
class CooperativeParams(T.TaskParams):
    max_velocity: jax.Array  # [] m/s per agent
    formation_radius: jax.Array  # [] metres from the centroid to each slot
    min_agent_distance: jax.Array  # [] metres between any two agents
    goal_radius: jax.Array  # [] metres: the centroid reaching the goal
    obstacle_radius_min: jax.Array  # [] metres
    obstacle_radius_max: jax.Array  # [] metres


@struct.dataclass
class CooperativeState(T.TaskState):
    pos: jax.Array  # [N, 2] metres
    prev_move: jax.Array  # [N, 2] last move action (clipped)
    comm: jax.Array  # [N, C] last comm action (clipped)
    goal: jax.Array  # [2] metres
    vision: jax.Array  # [] bool
    workspace: jax.Array  # [2] metres, fixed at reset
    obstacles: jax.Array  # [M, 2] centres
    radii: jax.Array  # [M]
    obstacle_mask: jax.Array  # [M] bool
    collisions: jax.Array  # [] int32 blocked or cancelled moves this episode
    cooperation_sum: jax.Array  # [N] float32 per-agent scores summed over the episode


class Cooperative(T.TaskEnv):
    """Multi-agent formation transport with communication (see the module docstring)."""

    components = (
        "base",
        "time_penalty",
        "collision",
        "completion",
        "cooperation",
        "efficiency",
        "formation",
    )
    task_metrics = ("success", "collisions", "cooperation")

    def __init__(
        self,
        num_agents: int = 3,
        comm_dim: int = 2,
        max_obstacles: int = 12,
        num_sensed: int = 3,
        discrete_moves: bool = False,
        reward: Any = None,
        **param_overrides: Any,
    ):
        for name, value, low in (
            ("num_agents", num_agents, 2),
            ("comm_dim", comm_dim, 0),
            ("max_obstacles", max_obstacles, 0),
            ("num_sensed", num_sensed, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"Cooperative: {name}={value!r} is invalid: must be an int >= {low}"
                )
        if not isinstance(discrete_moves, bool):
            raise ValueError(
                f"Cooperative: discrete_moves={discrete_moves!r} is invalid: must be true or false"
            )
        super().__init__(reward)
        self.discrete_moves = discrete_moves
        self.num_agents = num_agents
        self.comm_dim = comm_dim
        self.max_obstacles = max_obstacles
        self.num_sensed = num_sensed
        # others[i] = the other agents' indices in increasing order, [N, N - 1]
        self._others = np.array(
            [[j for j in range(num_agents) if j != i] for i in range(num_agents)]
        )
        self._overrides = dict(param_overrides)
        self.make_params()  # validate the overrides now

    @property
    def name(self) -> str:
        return "Cooperative"

    def make_params(self, **fields: Any) -> CooperativeParams:
        p = CooperativeParams(
            **T.base_params(
                dt=0.5,
                num_obstacles=min(3, self.max_obstacles),
                reward_weights=self.default_weights(),
            ),
            max_velocity=jnp.float32(1.0),
            formation_radius=jnp.float32(1.0),
            min_agent_distance=jnp.float32(0.3),
            goal_radius=jnp.float32(1.0),
            obstacle_radius_min=jnp.float32(0.3),
            obstacle_radius_max=jnp.float32(0.6),
        )
        return self.with_fields(p, {**self._overrides, **fields}, owner=self.name)

    def slot_spacing(self, formation_radius: float) -> float:
        """Metres between neighbouring slots: the chord `2 R sin(pi / N)`."""
        return 2.0 * formation_radius * math.sin(math.pi / self.num_agents)

    def check_limits(self, params: Any, owner: str = "env") -> None:
        super().check_limits(params, owner)
        for name in ("max_velocity", "formation_radius", "goal_radius", "obstacle_radius_min"):
            if not float(getattr(params, name)) > 0:
                raise ValueError(f"{owner}: {name}={float(getattr(params, name))} must be > 0")
        r_min, r_max = float(params.obstacle_radius_min), float(params.obstacle_radius_max)
        if r_max < r_min:
            raise ValueError(
                f"{owner}: obstacle_radius_max={r_max} must be >= obstacle_radius_min={r_min}"
            )
        radius = float(params.formation_radius)
        spacing = self.slot_spacing(radius)
        d_min = float(params.min_agent_distance)
        if not 0 <= d_min < spacing:
            raise ValueError(
                f"{owner}: min_agent_distance={d_min} is invalid: must be in [0, {spacing:.4g}), "
                f"the slot spacing of {self.num_agents} agents at formation_radius={radius}"
            )
        ws = np.asarray(params.workspace_size)[:2]
        if np.any(ws < 2 * radius):
            raise ValueError(
                f"{owner}: workspace_size={ws.tolist()} is too small for formation_radius="
                f"{radius}: x and y must be >= {2 * radius} so the formation fits"
            )

    @property
    def obs_dim(self) -> int:
        n, c, k = self.num_agents, self.comm_dim, self.num_sensed
        return 8 + (n - 1) * (2 + c) + k * 4 + 1

    def observation_space(self, params) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.num_agents, self.obs_dim), jnp.float32)

    def action_space(self, params) -> spaces.Hybrid:
        """`move`: a velocity per agent in [-1, 1]^2 (x max_velocity), or with
        `discrete_moves` one of `len(MOVES)` = 9 moves per agent (stay or one of 8 compass
        directions at full speed; a Discrete leaf of a multi-agent env is one choice per
        agent: `[N]` int32); `comm`: `[N, comm_dim]` in [-1, 1]."""
        n = self.num_agents
        move = (
            spaces.Discrete(len(MOVES))
            if self.discrete_moves
            else spaces.Box(-1.0, 1.0, (n, 2), jnp.float32)
        )
        return spaces.Hybrid(
            {"move": move, "comm": spaces.Box(-1.0, 1.0, (n, self.comm_dim), jnp.float32)}
        )

    @property
    def num_actions(self) -> int:
        return spaces.flat_dim(self.action_space(self.default_params))

    def slot_offsets(self, params: CooperativeParams) -> jax.Array:
        """`[N, 2]` metres from the centroid to each agent's slot."""
        angle = 2.0 * jnp.pi * jnp.arange(self.num_agents) / self.num_agents
        return params.formation_radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)

    def agent_scores(self, pos: jax.Array, params: CooperativeParams) -> jax.Array:
        """`[N]` per-agent formation scores in [0, 1] (1 on the slot)."""
        slots = jnp.mean(pos, axis=0) + self.slot_offsets(params)
        dist = jnp.linalg.norm(pos - slots, axis=-1)
        return jnp.exp(-((dist / params.formation_radius) ** 2))

    # ---- reset / step ----------------------------------------------------------------

    def reset_env(self, key, params: CooperativeParams):
        n = self.num_agents
        k_start, k_team, k_goal, k_obs = jax.random.split(key, 4)
        ws = params.workspace_size[:2]
        radius = params.formation_radius
        offsets = self.slot_offsets(params)
        # start and goal at least one formation radius from the walls, so the slots fit
        start = radius + jax.random.uniform(k_start, (2,)) * (ws - 2 * radius)
        pos = self._cluster(k_team, start, params)
        cand = radius + jax.random.uniform(k_goal, (4, 2)) * (ws - 2 * radius)
        goal = cand[jnp.argmax(jnp.linalg.norm(cand - start, axis=-1))]
        keep = jnp.concatenate([pos, start[None], goal[None], goal + offsets])
        centres, radii, mask = T.sample_obstacles(
            k_obs,
            ws,
            params.num_obstacles,
            self.max_obstacles,
            (params.obstacle_radius_min, params.obstacle_radius_max),
            keep,
            clearance=params.min_agent_distance,
        )
        state = CooperativeState(
            time=jnp.int32(0),
            reward_sums=self.zero_sums(),
            pos=pos,
            prev_move=jnp.zeros((n, 2)),
            comm=jnp.zeros((n, self.comm_dim)),
            goal=goal,
            vision=params.vision,
            workspace=ws,
            obstacles=centres,
            radii=radii,
            obstacle_mask=mask,
            collisions=jnp.int32(0),
            cooperation_sum=jnp.zeros(n),
        )
        return self.observe_state(state, params), state

    def _cluster(self, key, start: jax.Array, params: CooperativeParams, tries: int = 16):
        """`[N, 2]` random positions within `formation_radius` of `start`, pairwise at least
        `min_agent_distance` apart; placed one agent at a time, each taking the first of
        `tries` clear candidates. If any agent finds none, the team starts on its slots."""
        n = self.num_agents
        k_r, k_a = jax.random.split(key)
        r = params.formation_radius * jnp.sqrt(jax.random.uniform(k_r, (n, tries)))
        a = 2.0 * jnp.pi * jax.random.uniform(k_a, (n, tries))
        cand = start + r[..., None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)  # [N, T, 2]
        pos = jnp.zeros((n, 2))
        all_ok = jnp.bool_(True)
        for i in range(n):
            d = jnp.linalg.norm(cand[i][:, None] - pos[None, :i], axis=-1)  # [T, i]
            ok = jnp.all(d >= params.min_agent_distance + 1e-4, axis=-1)
            pos = pos.at[i].set(cand[i, jnp.argmax(ok)])
            all_ok = all_ok & jnp.any(ok)
        return jnp.where(all_ok, pos, start + self.slot_offsets(params))

    def transition(self, key, state: CooperativeState, action, params: CooperativeParams):
        if self.discrete_moves:  # [N] (or one for all) move indices -> [N, 2] unit moves
            index = jnp.broadcast_to(jnp.asarray(action["move"], jnp.int32), (self.num_agents,))
            move = jnp.asarray(MOVES)[jnp.clip(index, 0, len(MOVES) - 1)]
        else:
            move = jnp.clip(jnp.asarray(action["move"], jnp.float32), -1.0, 1.0)
        comm = jnp.clip(jnp.asarray(action["comm"], jnp.float32), -1.0, 1.0)
        v = move * params.max_velocity
        speed = jnp.linalg.norm(v, axis=-1, keepdims=True)
        v = v * jnp.minimum(1.0, params.max_velocity / jnp.maximum(speed, 1e-8))
        new_pos, blocked = self._move(state, v, params)

        centroid = jnp.mean(state.pos, axis=0)
        new_centroid = jnp.mean(new_pos, axis=0)
        progress = jnp.linalg.norm(centroid - state.goal) - jnp.linalg.norm(
            new_centroid - state.goal
        )
        scores = self.agent_scores(new_pos, params)
        team = jnp.mean(scores)
        at_goal = jnp.linalg.norm(new_centroid - state.goal) < params.goal_radius
        success = at_goal & (team >= FORMATION_THRESHOLD)
        n_blocked = jnp.sum(blocked.astype(jnp.int32))
        collisions = state.collisions + n_blocked
        coop_sum = state.cooperation_sum + scores
        steps = (state.time + 1).astype(jnp.float32)

        next_state = state.replace(
            pos=new_pos,
            prev_move=move,
            comm=comm,
            collisions=collisions,
            cooperation_sum=coop_sum,
        )
        comps = {
            "base": progress,
            "time_penalty": jnp.float32(1.0),
            "collision": n_blocked.astype(jnp.float32),
            "completion": success.astype(jnp.float32),
            # potential-based: the change of the team score, so holding formation pays
            # nothing by itself and the episode sum is final minus initial score
            "cooperation": team - jnp.mean(self.agent_scores(state.pos, params)),
            "efficiency": -jnp.mean((move - state.prev_move) ** 2) / 4.0,
            # a per-step cost of the formation gap (never a bonus, so lingering never pays)
            "formation": team - 1.0,
        }
        task = {
            "success": success,
            "collisions": collisions,
            "cooperation": (jnp.mean(coop_sum) / steps).astype(jnp.float32),
            "agent_cooperation": (coop_sum / steps).astype(jnp.float32),
        }
        # time advances in step_env; observe with the advanced clock
        obs = self.observe_state(next_state.replace(time=state.time + 1), params)
        return next_state, obs, success, comps, task

    def _move(self, state: CooperativeState, v: jax.Array, params) -> tuple[jax.Array, jax.Array]:
        """New positions `[N, 2]` and which agents were blocked `[N]` bool, for velocities
        `v` `[N, 2]` (m/s) applied for `dt` seconds, by the collision rule above (the other
        agents block as discs of radius `min_agent_distance`). Cancelling can create new
        conflicts (with the agent left behind), so it repeats N times: each round changes
        nothing or cancels one more move, so N rounds reach a fixed point where no moved
        agent conflicts; agents that stayed keep their old, valid distances."""
        n, d_min = self.num_agents, params.min_agent_distance
        off_diag = ~jnp.eye(n, dtype=bool)
        straight = jnp.clip(state.pos + v * params.dt, 0.0, state.workspace)
        to_others = jnp.linalg.norm(straight[:, None] - state.pos[None], axis=-1)  # [N, N]
        hit = jnp.any(straight != state.pos, axis=-1) & (
            self._path_hits(state, straight) | jnp.any(off_diag & (to_others < d_min), axis=-1)
        )
        # what a move can be blocked by: the obstacles, then the other agents as discs
        centres = jnp.concatenate([state.obstacles, state.pos])
        radii = jnp.concatenate([state.radii, jnp.full((n,), d_min, jnp.float32)])
        mask = jnp.concatenate(
            [jnp.broadcast_to(state.obstacle_mask, (n, self.max_obstacles)), off_diag], axis=1
        )
        along = jax.vmap(T.slide_velocity, in_axes=(0, 0, 0, None, None, 0))(
            state.pos, v, straight, centres, radii, mask
        )
        slid = jnp.clip(state.pos + along * params.dt, 0.0, state.workspace)
        proposed = jnp.where(hit[:, None], slid, straight)
        moves = jnp.any(proposed != state.pos, axis=-1)
        stuck = moves & self._path_hits(state, proposed)

        def resolve(_, cancelled):
            new = jnp.where(cancelled[:, None], state.pos, proposed)
            d = jnp.linalg.norm(new[:, None] - new[None], axis=-1)
            close = jnp.any(off_diag & (d < d_min), axis=-1)
            return cancelled | (moves & close)

        cancelled = jax.lax.fori_loop(0, n, resolve, stuck)
        return jnp.where(cancelled[:, None], state.pos, proposed), hit | cancelled

    def _path_hits(self, state: CooperativeState, end: jax.Array) -> jax.Array:
        """`[N]` whether the segment from each agent's position to `end` enters an obstacle
        (checking the whole path, so a fast agent cannot jump through a small obstacle)."""
        seg = end - state.pos  # [N, 2]
        rel = state.obstacles[None] - state.pos[:, None]  # [N, M, 2]
        t = jnp.sum(rel * seg[:, None], axis=-1) / jnp.maximum(jnp.sum(seg**2, -1), 1e-12)[:, None]
        closest = state.pos[:, None] + jnp.clip(t, 0.0, 1.0)[..., None] * seg[:, None]
        d = jnp.linalg.norm(closest - state.obstacles[None], axis=-1)  # [N, M]
        return jnp.any(state.obstacle_mask[None] & (d < state.radii[None]), axis=-1)

    def observe_state(self, state: CooperativeState, params: CooperativeParams) -> jax.Array:
        n, k = self.num_agents, self.num_sensed
        ws = state.workspace
        scale = jnp.max(ws)
        pos = state.pos
        centroid = jnp.mean(pos, axis=0)
        slots = centroid + self.slot_offsets(params)
        others = jnp.asarray(self._others)
        rel_others = (pos[others] - pos[:, None]) / scale  # [N, N - 1, 2]
        comm_others = state.comm[others]  # [N, N - 1, C]
        if self.max_obstacles:
            sensor = jax.vmap(
                lambda p: T.obstacle_sensor(
                    p, state.obstacles, state.radii, state.obstacle_mask, k, scale, state.vision
                )
            )(pos)
        else:
            sensor = jnp.zeros((n, k, 4))
        t_left = 1.0 - state.time.astype(jnp.float32) / T.max_steps(params)
        return jnp.concatenate(
            [
                pos / ws * 2.0 - 1.0,
                (state.goal - pos) / scale,
                (centroid - pos) / scale,
                (slots - pos) / scale,
                rel_others.reshape(n, -1),
                comm_others.reshape(n, -1),
                sensor.reshape(n, -1),
                jnp.broadcast_to(t_left, (n, 1)),
            ],
            axis=-1,
        ).astype(jnp.float32)
