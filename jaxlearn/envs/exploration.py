"""Exploration: an agent covers a 2-D grid of 1 m cells, avoiding obstacles, finding resources.

- Grid: a static `15 x 15` grid over `max_workspace[:2]`; the active workspace is the first
  `floor(workspace_size[:2])` cells along x and y (fixed at reset). Cells are `[x, y]`.
- Action: `Discrete(4)`: 0 up (+y), 1 right (+x), 2 down (-y), 3 left (-x). A move into a
  wall (outside the active workspace) or an obstacle cell leaves the agent where it is;
  entering an obstacle cell counts one collision, a wall does not.
- Reset: the agent starts on a random cell; `num_obstacles` obstacles and `num_resources`
  resources go on random distinct other cells (fewer if the workspace has too few cells).
  The start cell counts as visited.
- Coverage: visited free cells / free cells of the active workspace, in [0, 1].
- Vision (when `params.vision`): the view shows obstacles and resources; without it those
  channels are zeros (visited cells and walls are always shown).
- Ends: terminated when coverage >= `target_coverage` (`task["success"]`), truncated after
  `time_limit` seconds.

Observation `[obs_dim]` float32 (r = view_radius, P = 2r + 1): position scaled to [-1, 1]
over the active workspace (2), the `[P, P, 4]` view around the agent flattened (axis 0: x
offset -r..r, axis 1: y offset -r..r, channels: visited, wall, obstacle, undiscovered
resource), coverage (1), fraction of the time limit left (1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxlearn import spaces
from jaxlearn.envs import task as T

# (dx, dy) of actions 0 up, 1 right, 2 down, 3 left
MOVES = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], np.int32)


@struct.dataclass
class ExplorationParams(T.TaskParams):
    num_resources: jax.Array  # [] int32 active resources, <= max_resources
    resource_value: jax.Array  # [] float32 exploration units per resource found
    target_coverage: jax.Array  # [] float32 coverage fraction that completes the task


@struct.dataclass
class ExplorationState(T.TaskState):
    pos: jax.Array  # [2] int32 cell
    prev_action: jax.Array  # [] int32, -1 before the first step
    workspace: jax.Array  # [2] int32 active cells along x, y, fixed at reset
    vision: jax.Array  # [] bool
    visited: jax.Array  # [G, G] bool
    obstacles: jax.Array  # [M, 2] int32 cells
    obstacle_mask: jax.Array  # [M] bool
    obstacle_grid: jax.Array  # [G, G] bool, the active obstacles' cells
    resources: jax.Array  # [R, 2] int32 cells
    resource_mask: jax.Array  # [R] bool
    found: jax.Array  # [R] bool
    num_free: jax.Array  # [] int32 free cells of the active workspace
    collisions: jax.Array  # [] int32 this episode


class Exploration(T.TaskEnv):
    """Grid coverage with obstacles and resources (see the module docstring)."""

    components = ("time_penalty", "collision", "completion", "exploration", "efficiency")
    task_metrics = ("success", "collisions", "coverage")

    def __init__(
        self,
        max_obstacles: int = 12,
        max_resources: int = 4,
        view_radius: int = 2,
        reward: Any = None,
        **param_overrides: Any,
    ):
        self.grid = T.grid_shape(self.max_workspace, 1.0, 2)
        cells = self.grid[0] * self.grid[1]
        for name, value in (
            ("max_obstacles", max_obstacles),
            ("max_resources", max_resources),
            ("view_radius", view_radius),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Exploration: {name}={value!r} must be an int >= 0")
        if max_obstacles + max_resources > cells - 1:
            raise ValueError(
                f"Exploration: max_obstacles + max_resources = {max_obstacles + max_resources} "
                f"must be <= {cells - 1} (grid cells other than the start)"
            )
        super().__init__(reward)
        self.max_obstacles = max_obstacles
        self.max_resources = max_resources
        self.view_radius = view_radius
        self._overrides = dict(param_overrides)
        self.make_params()  # validate the overrides now

    @property
    def name(self) -> str:
        return "Exploration"

    def make_params(self, **fields: Any) -> ExplorationParams:
        p = ExplorationParams(
            **T.base_params(dt=1.0, reward_weights=self.default_weights()),
            num_resources=jnp.int32(0),
            resource_value=jnp.float32(5.0),
            target_coverage=jnp.float32(0.9),
        )
        return self.with_fields(p, {**self._overrides, **fields}, owner=self.name)

    def check_limits(self, params: Any, owner: str = "env") -> None:
        super().check_limits(params, owner)
        n = int(params.num_resources)
        if not 0 <= n <= self.max_resources:
            raise ValueError(
                f"{owner}: num_resources={n} is invalid: must be in [0, {self.max_resources}] "
                f"(the env's max_resources)"
            )
        ws = np.asarray(params.workspace_size)[:2]
        if np.any(ws < 1.0):
            raise ValueError(
                f"{owner}: workspace_size={np.asarray(params.workspace_size).tolist()} is "
                "invalid: x and y must be >= 1 (one 1 m cell)"
            )
        t = float(params.target_coverage)
        if not 0.0 < t <= 1.0:
            raise ValueError(f"{owner}: target_coverage={t} is invalid: must be in (0, 1]")
        v = float(params.resource_value)
        if not np.isfinite(v):
            raise ValueError(f"{owner}: resource_value={v} is invalid: must be finite")

    @property
    def obs_dim(self) -> int:
        p = 2 * self.view_radius + 1
        return 2 + p * p * 4 + 2

    def observation_space(self, params) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_dim,), jnp.float32)

    def action_space(self, params) -> spaces.Discrete:
        return spaces.Discrete(4)

    @property
    def num_actions(self) -> int:
        return 4

    # ---- reset / step ----------------------------------------------------------------

    def reset_env(self, key, params: ExplorationParams):
        gy = self.grid[1]
        m, r = self.max_obstacles, self.max_resources
        ws = jnp.floor(params.workspace_size[:2] + 1e-6).astype(jnp.int32)
        ws = jnp.clip(ws, 1, jnp.asarray(self.grid, jnp.int32))
        active = _active_grid(self.grid, ws)
        # a random order of the active cells (inactive ones last): the first is the start,
        # the next ones hold the obstacles and resources, so all are distinct
        prio = jnp.where(active, jax.random.uniform(key, self.grid), -1.0)
        score, flat = jax.lax.top_k(prio.reshape(-1), 1 + m + r)
        cells = jnp.stack([flat // gy, flat % gy], axis=-1).astype(jnp.int32)  # [1 + m + r, 2]
        pos, cells, score = cells[0], cells[1:], score[1:]
        start = jnp.zeros(self.grid, bool).at[pos[0], pos[1]].set(True)
        valid = score >= 0.0

        obstacles = cells[:m]
        obstacle_mask = valid[:m] & (jnp.arange(m) < params.num_obstacles)
        obstacle_grid = _scatter(self.grid, obstacles, obstacle_mask)
        # resources take the cells right after the active obstacles'
        n_obs = jnp.clip(params.num_obstacles, 0, m)
        resources = jax.lax.dynamic_slice_in_dim(cells, n_obs, r) if r else cells[:0]
        res_valid = jax.lax.dynamic_slice_in_dim(valid, n_obs, r) if r else valid[:0]
        resource_mask = res_valid & (jnp.arange(r) < params.num_resources)

        num_free = jnp.sum(active & ~obstacle_grid).astype(jnp.int32)
        state = ExplorationState(
            time=jnp.int32(0),
            reward_sums=self.zero_sums(),
            pos=pos,
            prev_action=jnp.int32(-1),
            workspace=ws,
            vision=jnp.asarray(params.vision, bool),
            visited=start,
            obstacles=obstacles,
            obstacle_mask=obstacle_mask,
            obstacle_grid=obstacle_grid,
            resources=resources,
            resource_mask=resource_mask,
            found=jnp.zeros((r,), bool),
            num_free=num_free,
            collisions=jnp.int32(0),
        )
        return self.observe_state(state, params), state

    def transition(self, key, state: ExplorationState, action, params: ExplorationParams):
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, 3)
        proposed = state.pos + jnp.asarray(MOVES)[action]
        in_ws = jnp.all((proposed >= 0) & (proposed < state.workspace))
        safe = jnp.clip(proposed, 0, jnp.asarray(self.grid) - 1)
        collided = in_ws & state.obstacle_grid[safe[0], safe[1]]
        moved = in_ws & ~collided
        pos = jnp.where(moved, proposed, state.pos).astype(jnp.int32)

        new_cell = ~state.visited[pos[0], pos[1]]
        visited = state.visited.at[pos[0], pos[1]].set(True)
        here = jnp.all(state.resources == pos, axis=-1)
        found_now = state.resource_mask & ~state.found & here
        collisions = state.collisions + collided.astype(jnp.int32)

        next_state = state.replace(
            pos=pos,
            prev_action=action,
            visited=visited,
            found=state.found | found_now,
            collisions=collisions,
        )
        cov = coverage(next_state)
        success = cov >= params.target_coverage - 1e-6
        turned = (state.prev_action >= 0) & (action != state.prev_action)
        comps = {
            "time_penalty": jnp.float32(1.0),
            "collision": collided.astype(jnp.float32),
            "completion": success.astype(jnp.float32),
            "exploration": new_cell.astype(jnp.float32)
            + params.resource_value * jnp.sum(found_now).astype(jnp.float32),
            "efficiency": jnp.where(turned, -0.25, 0.0).astype(jnp.float32),
        }
        task = {"success": success, "collisions": collisions, "coverage": cov}
        # time advances in step_env; observe with the advanced clock
        obs = self.observe_state(next_state.replace(time=state.time + 1), params)
        return next_state, obs, success, comps, task

    def observe_state(self, state: ExplorationState, params: ExplorationParams) -> jax.Array:
        rad = self.view_radius
        ws = state.workspace.astype(jnp.float32)
        wall = ~_active_grid(self.grid, state.workspace)
        resource_grid = _scatter(self.grid, state.resources, state.resource_mask & ~state.found)
        maps = jnp.stack(
            [
                state.visited,
                wall,
                state.obstacle_grid & state.vision,
                resource_grid & state.vision,
            ],
            axis=-1,
        ).astype(jnp.float32)  # [G, G, 4]
        # cells beyond the static grid are walls too
        pad = jnp.pad(maps, ((rad, rad), (rad, rad), (0, 0)))
        pad = pad.at[..., 1].set(jnp.pad(maps[..., 1], rad, constant_values=1.0))
        size = 2 * rad + 1
        view = jax.lax.dynamic_slice(pad, (state.pos[0], state.pos[1], 0), (size, size, 4))
        t_left = 1.0 - state.time.astype(jnp.float32) / T.max_steps(params)
        return jnp.concatenate(
            [
                (state.pos.astype(jnp.float32) + 0.5) / ws * 2.0 - 1.0,
                view.reshape(-1),
                coverage(state)[None],
                t_left[None],
            ]
        ).astype(jnp.float32)


def coverage(state: ExplorationState) -> jax.Array:
    """`[]` float32 fraction of the active workspace's free cells visited."""
    n = jnp.sum(state.visited & ~state.obstacle_grid)
    return (n / jnp.maximum(state.num_free, 1)).astype(jnp.float32)


def _active_grid(grid: tuple[int, int], ws: jax.Array) -> jax.Array:
    """`[G, G]` bool: the cells inside the active workspace of `ws` `[2]` cells."""
    x = jnp.arange(grid[0])[:, None] < ws[0]
    y = jnp.arange(grid[1])[None, :] < ws[1]
    return x & y


def _scatter(grid: tuple[int, int], cells: jax.Array, mask: jax.Array) -> jax.Array:
    """`[G, G]` bool, True at the masked-in `cells` `[N, 2]`."""
    out = jnp.zeros(grid, jnp.int32).at[cells[:, 0], cells[:, 1]].add(mask.astype(jnp.int32))
    return out > 0
