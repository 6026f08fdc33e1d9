"""A curriculum of task stages that advances inside the jitted training loop.

Stages are a table of env parameters stacked on the device (`[num_stages, ...]` per leaf);
the current stage's params are `table[stage]`, a gather, so advancing never changes a shape
and never recompiles. The state keeps a window of recent episode outcomes of the current
stage; after each update the stage advances when every criterion of the stage holds:

- at least `min_episodes` episodes finished in this stage, and over the last `window`:
- success rate >= `success_rate`;
- optionally mean episode return >= `average_reward`, mean final coverage >= `coverage`,
  and fraction of episodes with a collision <= `max_collision_rate`.

A stage table lists stages from easiest to hardest. Each stage inherits the env fields of
the one before and sets what changes; difficulty must grow: workspace and obstacle count
never shrink, the time limit never grows, vision/tool use never switch off, and each stage
differs from the previous one. Times are seconds (the env's `dt` is seconds per step).

    curriculum = Curriculum(CurriculumConfig.from_dict(spec), env, env_params)
    state = curriculum.init()
    params = curriculum.env_params(state)          # inside jit
    state = curriculum.update(state, done, outcomes)  # [N] arrays of finished episodes

The thresholds are data too: `curriculum.thresholds()` is a dict of `[num_stages]` float32
arrays (`min_episodes`, `success_rate`, `average_reward`, `coverage`,
`max_collision_rate`) that `update(..., thresholds=...)` accepts, so a sweep can vmap
over them (see `jaxlearn.sweep`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxlearn.config import FLOAT32_MAX, ConfigError, is_real
from jaxlearn.envs.task import STAGE_FIELDS, TaskEnv

# The default stages: workspace (x, y, z) metres, obstacles, time limit seconds, features.
DEFAULT_STAGES: tuple[dict[str, Any], ...] = (
    dict(
        name="BEGINNER",
        workspace_size=[5.0, 5.0, 3.0],
        num_obstacles=3,
        time_limit=300.0,
        vision=False,
        tool_use=False,
        success_rate=0.70,
    ),
    dict(
        name="INTERMEDIATE",
        workspace_size=[8.0, 8.0, 4.0],
        num_obstacles=5,
        time_limit=250.0,
        vision=True,
        success_rate=0.60,
    ),
    dict(
        name="ADVANCED",
        workspace_size=[10.0, 10.0, 5.0],
        num_obstacles=8,
        time_limit=200.0,
        tool_use=True,
        success_rate=0.50,
    ),
    dict(
        name="EXPERT",
        workspace_size=[15.0, 15.0, 6.0],
        num_obstacles=12,
        time_limit=180.0,
        success_rate=0.40,
    ),
)

# Criteria: name -> (allowed low, allowed high) of its threshold; None = unbounded.
RATE_CRITERIA = ("success_rate", "coverage", "max_collision_rate")
CRITERIA = (*RATE_CRITERIA, "average_reward")
# Episode outcomes the curriculum reads, in the column order of its window.
OUTCOMES = ("success", "return", "coverage", "collided")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: its name, env parameter overrides and advancement criteria."""

    name: str
    env: Mapping[str, Any]
    success_rate: float = 0.0
    min_episodes: int = 100
    average_reward: float | None = None
    coverage: float | None = None
    max_collision_rate: float | None = None


STAGE_KEYS = ("name", "min_episodes", *CRITERIA)


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """A validated stage table plus the outcome window length (episodes)."""

    stages: tuple[Stage, ...]
    window: int = 100

    @classmethod
    def from_dict(cls, spec: Any, env_fields: Sequence[str] | None = None) -> CurriculumConfig:
        """Parse `{"window": W, "stages": [...]}`, `"default"`, or a bare list of stages.

        `env_fields` are the env parameter names a stage may set (default: `STAGE_FIELDS`).
        Raises ValueError naming the stage and field for unknown fields, thresholds outside
        [0, 1], non-positive counts, or a stage that is not harder than the one before.
        """
        if spec == "default" or spec is True:
            spec = {"stages": [dict(s) for s in DEFAULT_STAGES]}
        if isinstance(spec, list | tuple):
            spec = {"stages": list(spec)}
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"curriculum={spec!r} is invalid: expected 'default', a list of stages, or a "
                "mapping with keys 'stages' and optional 'window'"
            )
        unknown = [k for k in spec if k not in ("stages", "window")]
        if unknown:
            raise ValueError(f"curriculum: unknown key(s) {unknown}; allowed: stages, window")
        window = spec.get("window", 100)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"curriculum.window={window!r} is invalid: must be an int >= 1")
        raw = spec.get("stages")
        if not isinstance(raw, list | tuple) or not raw:
            raise ValueError("curriculum.stages is invalid: must be a non-empty list of stages")
        env_fields = tuple(env_fields if env_fields is not None else STAGE_FIELDS)
        stages = []
        for i, s in enumerate(raw):
            stages.append(_parse_stage(i, s, env_fields))
        _check_names(stages)
        return cls(tuple(stages), window)

    def to_dict(self) -> dict[str, Any]:
        out = []
        for s in self.stages:
            d = {"name": s.name, **{k: _plain(v) for k, v in s.env.items()}}
            for k in ("success_rate", "min_episodes", *CRITERIA[1:]):
                v = getattr(s, k)
                if v is not None:
                    d[k] = v
            out.append(d)
        return {"window": self.window, "stages": out}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray | tuple):
        return np.asarray(v).tolist()
    return v


def _parse_stage(i: int, s: Any, env_fields: tuple[str, ...]) -> Stage:
    where = f"curriculum.stages[{i}]"
    if not isinstance(s, Mapping):
        raise ValueError(f"{where} is invalid: expected a mapping of field: value")
    name = s.get("name", f"STAGE_{i}")
    where = f"curriculum.stages[{i}] ({name})"
    allowed = (*STAGE_KEYS, *env_fields)
    unknown = [k for k in s if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name={name!r} must be a non-empty string")
    kw: dict[str, Any] = {}
    for k in RATE_CRITERIA:
        if k in s and s[k] is not None:
            v = s[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}: {k}={v!r} is invalid: must be a number in [0, 1]")
            kw[k] = float(v)
    if s.get("average_reward") is not None:
        v = s["average_reward"]
        if not is_real(v) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
            raise ConfigError(
                f"{where}: average_reward={v!r} is invalid: must be a finite number within "
                "float32 range (|x| <= 3.4e38)"
            )
        kw["average_reward"] = float(v)
    if "min_episodes" in s:
        v = s["min_episodes"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: min_episodes={v!r} is invalid: must be an int >= 1")
        kw["min_episodes"] = v
    env = {k: v for k, v in s.items() if k in env_fields}
    return Stage(name=name, env=env, **kw)


def _check_names(stages: list[Stage]) -> None:
    names = [s.name for s in stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"curriculum.stages: duplicate stage name(s) {dup}")


@struct.dataclass
class CurriculumState:
    """The curriculum's part of a train state (a pytree of arrays).

    Attributes:
        stage: `[]` int32 current stage index.
        episodes_in_stage: `[]` int32 episodes finished since the stage began.
        outcomes: `[window, 4]` float32 recent outcomes (success, return, coverage, collided).
        updates: `[]` int32 `update` calls so far.
        stage_start: `[num_stages]` int32 `updates` value when each stage began (-1: not yet).
    """

    stage: jax.Array
    episodes_in_stage: jax.Array
    outcomes: jax.Array
    updates: jax.Array
    stage_start: jax.Array


class Curriculum:
    """A stage table bound to an env: params per stage on the device, pure `update`."""

    def __init__(self, config: CurriculumConfig, env: Any, env_params: Any):
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, TaskEnv):
            raise ValueError(
                f"curriculum: env {type(base).__name__} is not a jaxlearn task env; a "
                "curriculum needs Navigation2D-v0/Navigation3D-v0/Exploration-v0/Cooperative-v0"
            )
        metrics = set(base.task_metrics)
        for i, s in enumerate(config.stages):
            if s.coverage is not None and "coverage" not in metrics:
                raise ValueError(
                    f"curriculum.stages[{i}] ({s.name}): coverage criterion needs an env that "
                    f"reports coverage; {base.name} reports {sorted(metrics)}"
                )
            if s.success_rate > 0 and "success" not in metrics:
                raise ValueError(
                    f"curriculum.stages[{i}] ({s.name}): success_rate needs an env that "
                    f"reports success; {base.name} reports {sorted(metrics)}"
                )
        self.config = config
        self.env = base
        params, fields = [], {}
        for i, s in enumerate(config.stages):
            fields = {**fields, **s.env}
            params.append(
                base.with_fields(env_params, fields, owner=f"curriculum.stages[{i}] ({s.name})")
            )
            if i:
                _check_harder(params[i - 1], params[i], i, s.name)
        self.stage_params = params
        self.table = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
        st = config.stages
        self.min_episodes = jnp.asarray([s.min_episodes for s in st], jnp.int32)
        self.success_rate = jnp.asarray([s.success_rate for s in st], jnp.float32)
        self.average_reward = jnp.asarray(
            [-jnp.inf if s.average_reward is None else s.average_reward for s in st], jnp.float32
        )
        self.coverage = jnp.asarray([s.coverage or 0.0 for s in st], jnp.float32)
        self.max_collision_rate = jnp.asarray(
            [1.0 if s.max_collision_rate is None else s.max_collision_rate for s in st],
            jnp.float32,
        )

    @property
    def num_stages(self) -> int:
        return len(self.config.stages)

    def init(self) -> CurriculumState:
        n = self.num_stages
        return CurriculumState(
            stage=jnp.int32(0),
            episodes_in_stage=jnp.int32(0),
            outcomes=jnp.zeros((self.config.window, len(OUTCOMES)), jnp.float32),
            updates=jnp.int32(0),
            stage_start=jnp.full((n,), -1, jnp.int32).at[0].set(0),
        )

    def env_params(self, state: CurriculumState) -> Any:
        """The current stage's env params (a gather from the table; no recompile)."""
        return jax.tree.map(lambda t: t[state.stage], self.table)

    def window_means(self, state: CurriculumState) -> dict[str, jax.Array]:
        """Means of the outcomes over the valid part of the window (0 when empty)."""
        w = self.config.window
        n = jnp.minimum(state.episodes_in_stage, w)
        # entries are written at (episodes_in_stage + j) % w; the last n are valid
        age = (state.episodes_in_stage - 1 - jnp.arange(w)) % w
        valid = (age < n).astype(jnp.float32)
        denom = jnp.maximum(n, 1).astype(jnp.float32)
        means = (state.outcomes * valid[:, None]).sum(0) / denom
        return dict(zip(OUTCOMES, means, strict=True))

    def thresholds(self) -> dict[str, jax.Array]:
        """The advancement thresholds as data: name -> `[num_stages]` float32."""
        return {
            "min_episodes": self.min_episodes.astype(jnp.float32),
            "success_rate": self.success_rate,
            "average_reward": self.average_reward,
            "coverage": self.coverage,
            "max_collision_rate": self.max_collision_rate,
        }

    def criteria_met(
        self, state: CurriculumState, thresholds: Mapping[str, jax.Array] | None = None
    ) -> jax.Array:
        """`[]` bool: the current stage's criteria all hold (ignores whether a next exists).

        `thresholds` (default `self.thresholds()`) may be traced arrays, e.g. vmapped.
        """
        t = self.thresholds() if thresholds is None else thresholds
        m = self.window_means(state)
        s = state.stage
        return (
            (state.episodes_in_stage.astype(jnp.float32) >= t["min_episodes"][s])
            & (m["success"] >= t["success_rate"][s])
            & (m["return"] >= t["average_reward"][s])
            & (m["coverage"] >= t["coverage"][s])
            & (m["collided"] <= t["max_collision_rate"][s])
        )

    def update(
        self,
        state: CurriculumState,
        done: jax.Array,
        outcomes: Mapping[str, jax.Array],
        thresholds: Mapping[str, jax.Array] | None = None,
    ) -> CurriculumState:
        """Fold in finished episodes and advance the stage if its criteria hold.

        Args:
            done: `[N]` bool, which entries are finished episodes (any leading shape is
                flattened, in time-major order).
            outcomes: `[N]` arrays for keys of `OUTCOMES` (missing keys count as 0).
            thresholds: the stage thresholds to use (default: the table's; see
                `thresholds()`).
        """
        done = done.reshape(-1)
        cols = [
            jnp.asarray(outcomes[k], jnp.float32).reshape(-1)
            if k in outcomes
            else jnp.zeros(done.shape, jnp.float32)
            for k in OUTCOMES
        ]
        vals = jnp.stack(cols, axis=-1)  # [N, 4]
        w = self.config.window
        rank = jnp.cumsum(done) - 1  # order among this batch's finished episodes
        n_new = jnp.sum(done).astype(jnp.int32)
        keep = done & (rank >= n_new - w)  # only the last `w` can matter
        pos = jnp.where(keep, (state.episodes_in_stage + rank) % w, w)
        outcomes_buf = state.outcomes.at[pos].set(vals, mode="drop")
        state = state.replace(
            outcomes=outcomes_buf,
            episodes_in_stage=state.episodes_in_stage + n_new,
            updates=state.updates + 1,
        )
        advance = self.criteria_met(state, thresholds) & (state.stage < self.num_stages - 1)
        new_stage = state.stage + advance.astype(jnp.int32)
        return state.replace(
            stage=new_stage,
            episodes_in_stage=jnp.where(advance, 0, state.episodes_in_stage),
            outcomes=jnp.where(advance, 0.0, state.outcomes),
            stage_start=jnp.where(
                advance & (jnp.arange(self.num_stages) == new_stage),
                state.updates,
                state.stage_start,
            ),
        )

    def metrics(self, state: CurriculumState) -> dict[str, jax.Array]:
        """Per-update scalars for logging (prefix `curriculum_`)."""
        m = self.window_means(state)
        return {
            "curriculum_stage": state.stage.astype(jnp.float32),
            "curriculum_success_rate": m["success"],
            "curriculum_episodes_in_stage": state.episodes_in_stage.astype(jnp.float32),
        }


def _check_harder(prev: Any, cur: Any, i: int, name: str) -> None:
    """Raise unless `cur` is at least as hard as `prev` on every field and harder on one."""
    where = f"curriculum.stages[{i}] ({name})"
    harder = False
    for field, direction in STAGE_FIELDS.items():
        a = np.asarray(getattr(prev, field), np.float64)
        b = np.asarray(getattr(cur, field), np.float64)
        if np.any(direction * (b - a) < 0):
            rule = "larger or equal" if direction > 0 else "smaller or equal"
            raise ValueError(
                f"{where}: difficulty must not decrease: {field} goes from {a.tolist()} to "
                f"{b.tolist()}; it must be {rule} than the previous stage's"
            )
        harder = harder or bool(np.any(b != a))
    if not harder:
        raise ValueError(
            f"{where}: difficulty must increase: it sets the same "
            f"{', '.join(STAGE_FIELDS)} as the previous stage"
        )


def episode_outcomes(
    episode_return: jax.Array, extras: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """The outcomes `update` reads, from episode returns and a learner's episode extras
    (`jaxlearn.algos.base.episode_extras`); valid where episodes are done."""
    out = {"return": episode_return}
    if "success" in extras:
        out["success"] = extras["success"]
    if "coverage" in extras:
        out["coverage"] = extras["coverage"]
    if "collisions" in extras:
        out["collided"] = extras["collisions"] > 0
    return out
