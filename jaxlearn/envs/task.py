"""The shared shape of jaxlearn's task envs: parameters a curriculum can change, reward
components, per-episode task metrics, and obstacle geometry.

A task env subclasses `TaskEnv` (itself a gymnax `Environment`, so it auto-resets and puts
the last real observation in `info["final_observation"]`) and implements

    reset_env(key, params) -> (obs, state)
    transition(key, state, action, params) -> (next_state, obs, terminated, components, task)

where `components` maps each name in `env.components` to its unweighted `[]` value and
`task` maps task-metric names (`success`, `collisions`, `coverage`, `cooperation`) to
their running per-episode values. `TaskEnv.step_env` adds user components, weights them,
keeps per-episode component sums and fills `info`:

- `info["reward_components"]`: weighted values this step (they sum to the reward);
- `info["episode_reward_components"]`: weighted sums over the episode so far (at a step
  with `done`, the finished episode's totals);
- `info["task"]`: the task metrics (at `done`, the finished episode's values).

Every array keeps its shape whatever the difficulty: obstacles are padded to
`max_obstacles` with a mask, and workspace sizes are values, not shapes. Time is in
seconds: `params.dt` seconds per env step, an episode is truncated after
`ceil(time_limit / dt)` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from jaxlearn import rewards as R
from jaxlearn.config import ConfigError, check_float32

# Fields of `TaskParams` a curriculum stage may set, and how difficulty grows along each:
# +1 harder when larger, -1 harder when smaller.
STAGE_FIELDS = {
    "workspace_size": +1,
    "num_obstacles": +1,
    "time_limit": -1,
    "vision": +1,
    "tool_use": +1,
}


@struct.dataclass
class TaskParams:
    """Parameters every task env shares; all arrays, so a curriculum can swap them in jit.

    Attributes:
        workspace_size: `[3]` float32 metres along x, y, z (2-D envs use x and y).
        num_obstacles: `[]` int32 active obstacles (the rest of `max_obstacles` are masked).
        time_limit: `[]` float32 seconds per episode.
        dt: `[]` float32 seconds per env step.
        vision: `[]` bool: the observation includes the obstacle sensor.
        tool_use: `[]` bool: the task needs a tool picked up first (navigation).
        reward_weights: component name -> `[]` float32 weight.
    """

    workspace_size: jax.Array
    num_obstacles: jax.Array
    time_limit: jax.Array
    dt: jax.Array
    vision: jax.Array
    tool_use: jax.Array
    reward_weights: dict


@struct.dataclass
class TaskState:
    """Fields every task env state has (subclasses add their own)."""

    time: jax.Array  # [] int32 steps into the episode
    reward_sums: dict  # component -> [] float32 weighted sum over the episode so far


def max_steps(params: TaskParams) -> jax.Array:
    """`[]` int32 steps per episode: `ceil(time_limit / dt)`."""
    return jnp.ceil(params.time_limit / params.dt - 1e-6).astype(jnp.int32)


def base_params(
    *,
    workspace_size=(5.0, 5.0, 3.0),
    num_obstacles=3,
    time_limit=300.0,
    dt=1.0,
    vision=False,
    tool_use=False,
    reward_weights: Mapping[str, float],
) -> dict[str, Any]:
    """The `TaskParams` fields as arrays of the canonical dtypes (for subclass constructors)."""
    return dict(
        workspace_size=jnp.asarray(workspace_size, jnp.float32).reshape(3),
        num_obstacles=jnp.int32(num_obstacles),
        time_limit=jnp.float32(time_limit),
        dt=jnp.float32(dt),
        vision=jnp.bool_(vision),
        tool_use=jnp.bool_(tool_use),
        reward_weights=R.weights_array(reward_weights),
    )


class TaskEnv(environment.Environment):
    """Base class of the task envs (navigation, exploration, cooperative).

    Subclasses set `components` (the built-in reward components they produce), and
    `max_obstacles`/`max_workspace` (static array sizes), and implement `reset_env`,
    `transition`, `observation_space`, `action_space` and `make_params`.
    """

    components: tuple[str, ...] = ()
    task_metrics: tuple[str, ...] = ()
    max_obstacles: int = 0
    max_workspace: tuple[float, float, float] = (15.0, 15.0, 6.0)
    extra_components: Mapping[str, R.ComponentFn] = {}
    extra_weights: Mapping[str, float] = {}

    def __init__(self, reward: R.RewardConfig | Mapping[str, float] | None = None):
        if reward is None:
            reward = R.RewardConfig()
        if isinstance(reward, Mapping):
            from jaxlearn.config import from_dict

            reward = from_dict(R.RewardConfig, reward)
        self.reward_config = reward
        self.extra_components = {}
        self.extra_weights = {}

    # ---- reward components ------------------------------------------------------------

    @property
    def reward_component_names(self) -> tuple[str, ...]:
        return tuple(self.components) + tuple(self.extra_components)

    def default_weights(self) -> dict[str, float]:
        w = self.reward_config.weights()
        out = {name: w[name] for name in self.components}
        out.update(self.extra_weights)
        return out

    def zero_sums(self) -> dict[str, jax.Array]:
        return {name: jnp.float32(0.0) for name in self.reward_component_names}

    # ---- params -------------------------------------------------------------------------

    def make_params(self, **fields: Any) -> Any:
        """Params with the env's defaults, overridden by `fields` (checked)."""
        raise NotImplementedError

    @property
    def default_params(self) -> Any:
        return self.make_params()

    def with_fields(self, params: Any, fields: Mapping[str, Any], owner: str = "env") -> Any:
        """`params` with some fields replaced by values cast to each field's dtype and shape.

        Raises ValueError naming the field for an unknown field, a wrong shape, or a value
        beyond the env's static limits (`max_obstacles`, `max_workspace`).
        """
        allowed = [n for n in params.__dataclass_fields__ if n != "reward_weights"]
        out = {}
        for name, value in fields.items():
            if name not in allowed:
                raise ValueError(
                    f"{owner}: unknown env parameter {name!r}; allowed: {', '.join(allowed)}"
                )
            old = np.asarray(getattr(params, name))
            arr = _finite_array(owner, name, value, old.dtype)
            if old.ndim == 1 and arr.ndim == 1 and arr.size < old.size:
                # a 2-element workspace [x, y] keeps the old z
                arr = np.concatenate([arr, old[arr.size :]])
            if arr.shape != old.shape:
                raise ValueError(
                    f"{owner}: {name}={value!r} has shape {arr.shape}; expected {old.shape}"
                )
            out[name] = jnp.asarray(arr.astype(old.dtype))
        new = params.replace(**out)
        self.check_limits(new, owner)
        return new

    def check_limits(self, params: Any, owner: str = "env") -> None:
        """Host-side check of the static limits (not for jit)."""
        n = int(params.num_obstacles)
        if not 0 <= n <= self.max_obstacles:
            raise ValueError(
                f"{owner}: num_obstacles={n} is invalid: must be in [0, {self.max_obstacles}] "
                f"(the env's max_obstacles)"
            )
        ws = np.asarray(params.workspace_size)
        if np.any(ws <= 0) or np.any(ws > np.asarray(self.max_workspace) + 1e-6):
            raise ValueError(
                f"{owner}: workspace_size={ws.tolist()} is invalid: each side must be in "
                f"(0, max_workspace={list(self.max_workspace)}]"
            )
        if float(params.time_limit) <= 0 or float(params.dt) <= 0:
            raise ValueError(
                f"{owner}: time_limit={float(params.time_limit)} and dt={float(params.dt)} "
                "must be > 0 (seconds)"
            )

    # ---- the step -------------------------------------------------------------------------

    def transition(self, key, state, action, params):
        raise NotImplementedError

    def step_env(self, key, state, action, params):
        next_state, obs, terminated, comps, task = self.transition(key, state, action, params)
        comps = dict(comps)
        for name, fn in self.extra_components.items():
            comps[name] = jnp.asarray(fn(state, action, next_state, params), jnp.float32)
        reward, weighted = R.weighted_sum(comps, params.reward_weights)
        sums = {k: state.reward_sums[k] + weighted[k] for k in weighted}
        next_state = next_state.replace(time=state.time + 1, reward_sums=sums)
        info = {
            "reward_components": weighted,
            "episode_reward_components": sums,
            "task": dict(task),
        }
        return obs, next_state, reward, terminated, info

    def is_truncated(self, state, params) -> jax.Array:
        return state.time >= max_steps(params)

    @property
    def num_actions(self) -> int:
        return int(np.prod(getattr(self.action_space(self.default_params), "shape", (1,))))


def episode_extras(info: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Scalar per-episode values a task env reports in a step's `info`, valid where
    `info["episode_done"]`: task metrics by name, reward components as `reward_<name>`
    (per-agent vectors are skipped). Empty for envs that report neither."""
    out = {}
    for k, v in info.get("task", {}).items():
        if jnp.ndim(v) == jnp.ndim(info["episode_done"]):
            out[k] = jnp.asarray(v, jnp.float32)
    for k, v in info.get("episode_reward_components", {}).items():
        out[f"reward_{k}"] = jnp.asarray(v, jnp.float32)
    return out


# ---- geometry shared by the task envs -------------------------------------------------------


def sample_obstacles(
    key: jax.Array,
    workspace: jax.Array,
    num_active: jax.Array,
    max_obstacles: int,
    radius: tuple[float, float],
    keep_clear: jax.Array,
    clearance: float,
    tries: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Place up to `max_obstacles` spheres (circles in 2-D) in the box `[0, workspace]`.

    Each obstacle tries `tries` random centres and keeps the first whose surface is at least
    `clearance` from every point of `keep_clear` `[P, D]`; if none is clear it is dropped.

    Returns:
        centres `[M, D]`, radii `[M]`, mask `[M]` (True for the first `num_active` placed).
    """
    dim = workspace.shape[0]
    k_pos, k_rad = jax.random.split(key)
    r = jax.random.uniform(k_rad, (max_obstacles,), minval=radius[0], maxval=radius[1])
    cand = jax.random.uniform(k_pos, (max_obstacles, tries, dim)) * workspace
    d = jnp.linalg.norm(cand[:, :, None, :] - keep_clear[None, None], axis=-1)  # [M, T, P]
    ok = jnp.all(d >= (r[:, None, None] + clearance), axis=-1)  # [M, T]
    first = jnp.argmax(ok, axis=1)
    centres = jnp.take_along_axis(cand, first[:, None, None], axis=1)[:, 0]
    placed = jnp.any(ok, axis=1)
    mask = placed & (jnp.arange(max_obstacles) < num_active)
    return centres, r, mask


def surface_distance(
    pos: jax.Array, centres: jax.Array, radii: jax.Array, mask: jax.Array
) -> jax.Array:
    """`[M]` distance from `pos` `[D]` to each obstacle's surface (inf where masked)."""
    d = jnp.linalg.norm(centres - pos, axis=-1) - radii
    return jnp.where(mask, d, jnp.inf)


def slide_velocity(
    pos: jax.Array,
    v: jax.Array,
    proposed: jax.Array,
    centres: jax.Array,
    radii: jax.Array,
    mask: jax.Array,
) -> jax.Array:
    """`v` `[D]` without its component into the obstacle whose surface is nearest to
    `proposed` (where `v` would take the agent from `pos`): what is left of a blocked move
    runs along that obstacle's surface."""
    j = jnp.argmin(surface_distance(proposed, centres, radii, mask))
    normal = pos - centres[j]
    normal = normal / jnp.maximum(jnp.linalg.norm(normal), 1e-8)
    inward = jnp.minimum(jnp.dot(v, normal), 0.0)
    return v - inward * normal


def obstacle_sensor(
    pos: jax.Array,
    centres: jax.Array,
    radii: jax.Array,
    mask: jax.Array,
    k: int,
    scale: jax.Array,
    visible: jax.Array,
) -> jax.Array:
    """The `k` nearest obstacles as `[k, D + 2]`: relative centre / scale, surface distance /
    scale, and a 1/0 present flag; zeros for missing obstacles or when `visible` is False."""
    m = centres.shape[0]
    if m < k:  # fewer obstacle slots than sensor rows: pad with absent (masked) obstacles
        centres = jnp.concatenate([centres, jnp.zeros((k - m, centres.shape[1]))])
        radii = jnp.concatenate([radii, jnp.zeros(k - m)])
        mask = jnp.concatenate([mask, jnp.zeros(k - m, bool)])
    dist = surface_distance(pos, centres, radii, mask)
    order = jnp.argsort(dist)[:k]
    rel = (centres[order] - pos) / scale
    sd = dist[order] / scale
    present = jnp.isfinite(dist[order]) & visible
    feat = jnp.concatenate([rel, sd[:, None], jnp.ones((k, 1))], axis=-1)
    return jnp.where(present[:, None], feat, 0.0)


def grid_shape(max_workspace: tuple[float, ...], cell: float, dim: int) -> tuple[int, ...]:
    """Static grid shape covering `max_workspace` with cubic cells of side `cell`."""
    return tuple(int(math.ceil(max_workspace[i] / cell - 1e-9)) for i in range(dim))


def _finite_array(owner: str, name: str, value: Any, dtype: Any) -> np.ndarray:
    """`value` as an array for a params field of `dtype`: true/false for flags; otherwise
    real numbers, float32-finite, and within int32 for integer fields."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name}={value!r} is not a number or list of numbers") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ConfigError(f"{owner}: {name}={value!r} must be a number or a list of numbers")
    if np.dtype(dtype).kind == "b":  # flags: true/false (or 0/1)
        if not np.all(np.isin(arr, (0, 1))):
            raise ConfigError(f"{owner}: {name}={value!r} is invalid: must be true or false")
        return arr
    for x in arr.reshape(-1).tolist():
        check_float32(owner, name, x)
        if np.dtype(dtype).kind in "iu" and not -(2**31) <= x < 2**31:
            raise ConfigError(f"{owner}: {name}={value!r} is invalid: must fit in int32")
    return arr
