"""The sweep spec: what is searched, how, and on which base config; validated at the edge.

`load_spec` reads a spec YAML (see `jaxlearn.sweep` for its keys), `spec_from_dict` checks
a mapping. Every check runs before anything is compiled or written: unknown keys, ranges,
the objective, the devices, and every bound and choice of the space (each must make a
valid trial config). Errors are `ConfigError`/`ValueError` naming the field as
`sweep.<field>=<value>` and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy
from sqlalchemy.engine import make_url

from jaxlearn.config import ConfigError, load_yaml
from jaxlearn.envs.setup import base_env
from jaxlearn.envs.task import TaskEnv
from jaxlearn.parallel import select_devices
from jaxlearn.rundir import RunConfig, resolve_config
from jaxlearn.sweep.space import MAX_GRID_POINTS, Param, bad, grid, parse_param
from jaxlearn.sweep.trials import trial_config

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")
BASE_OBJECTIVES = ("final_return_mean", "final_return_min", "eval_return")
SWEEP_SET_FIELDS = ("num_seeds", "devices", "init_from")  # the sweep decides these


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base run/algo config, the space, and how to search it."""

    run_cfg: RunConfig
    algo_cfg: Any
    space: tuple[Param, ...]
    objective: str = "final_return_mean"
    direction: str = "maximize"
    num_trials: int = 16  # sampler grid: the number of grid points
    batch_size: int = 8
    seeds_per_trial: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup_trials: int = 4  # median: completed trials before any pruning
    pruner_warmup_chunks: int = 2  # median: chunks a trial always runs
    seed: int = 0
    num_chunks: int = 10  # intermediate reports per trial
    eval_episodes: int = 16  # objective eval_return: greedy episodes per seed
    storage: str | None = None  # None: sqlite in the sweep folder
    study_name: str = "jaxlearn"
    name: str = "sweep"
    devices: Any = "auto"  # local devices the lanes are split over: auto/all, or a count

    @property
    def algo(self) -> str:
        return self.run_cfg.algo


SPEC_FIELDS = {
    "base",
    "config",
    "space",
    "objective",
    "direction",
    "num_trials",
    "batch_size",
    "seeds_per_trial",
    "sampler",
    "pruner",
    "pruner_startup_trials",
    "pruner_warmup_chunks",
    "seed",
    "num_chunks",
    "eval_episodes",
    "storage",
    "study_name",
    "name",
    "devices",
}


def lane_devices(value: Any) -> list:
    """The local devices a sweep splits its lanes over: `auto`/`all` every one, or the
    first N (`parallel.select_devices` checks the value)."""
    try:
        return select_devices("all" if value in (None, "auto") else value, num_seeds=1)
    except ValueError as e:
        raise ValueError(f"sweep.{e}") from None


def _num_trials(raw: Mapping, space: tuple[Param, ...]) -> int:
    """`num_trials` (default 16); with `sampler: grid`, the grid's size, which a given
    value must equal (each point trains once; `seeds_per_trial` repeats it on more seeds)."""
    if raw.get("sampler") != "grid":
        return _int_field(raw, "num_trials", 16, 1)
    points = math.prod(len(v) for v in grid(space).values())
    if points > MAX_GRID_POINTS:
        raise bad("space", f"{points} grid points", f"sampler grid allows {MAX_GRID_POINTS}")
    given = raw.get("num_trials", points)
    if given != points:
        raise bad(
            "num_trials",
            given,
            f"sampler grid trains each of the {points} grid points once: leave num_trials "
            f"out or set it to {points} (seeds_per_trial repeats a point on more seeds)",
        )
    return points


def _int_field(d: Mapping, key: str, default: int, low: int, high: int | None = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise bad(key, v, f"must be an integer >= {low}")
    if high is not None and v > high:
        raise bad(key, v, f"must be an integer in [{low}, {high}]")
    return v


def _text_field(d: Mapping, key: str, default: str | None) -> str | None:
    v = d.get(key, default)
    if v is not None and (not isinstance(v, str) or not v):
        raise bad(key, v, "must be a non-empty string")
    return v


def _choice_field(d: Mapping, key: str, default: str, allowed: tuple[str, ...]) -> str:
    v = d.get(key, default)
    if v not in allowed:
        raise bad(key, v, f"must be one of {list(allowed)}")
    return v


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _name_field(value: Any) -> str:
    """A sweep name becomes a folder name under sweeps/: one plain path component."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise bad(
            "name",
            value,
            "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it names a folder under sweeps/)",
        )
    return value


def _storage_field(value: Any) -> str | None:
    """An Optuna RDB URL whose database driver is installed (None: sqlite in the folder)."""
    if value is None:
        return None
    allowed = "must be a database URL such as sqlite:///path/study.db or postgresql://host/db"
    if not isinstance(value, str):
        raise bad("storage", value, allowed)
    try:
        make_url(value).get_dialect()
    except sqlalchemy.exc.ArgumentError:
        raise bad("storage", value, allowed) from None
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        raise bad(
            "storage", value, f"{allowed}; its database driver is not available: {e}"
        ) from None
    return value


def load_spec(
    path: str,
    overrides: Mapping[str, Any] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Read a sweep spec from YAML (`base` is relative to the file).

    Args:
        path: the spec YAML.
        overrides: replace top-level spec keys (`num_trials`, `batch_size`, ...).
        config_overrides: train.py config fields set on top of the spec's `base` and
            `config` (what `sweep.py --set field=value` gives; values may be strings,
            parsed and checked as train.py's `--set` values are).
    """
    if os.path.isdir(path):
        raise ValueError(
            f"sweep spec {path!r}: a folder; give a spec YAML (e.g. "
            "experiments/sweeps/ppo_cartpole.yaml), or --resume DIR to continue a sweep folder"
        )
    if not os.path.isfile(path):
        raise ValueError(f"sweep spec {path!r}: no such file")
    raw = load_yaml(path, "sweep spec")
    raw = {**raw, **(overrides or {})}
    if config_overrides:
        config = raw.get("config") or {}
        if not isinstance(config, Mapping):
            raise bad("config", config, "must be a mapping of train.py config fields")
        for k in SWEEP_SET_FIELDS:
            if k in config_overrides:
                raise ConfigError(
                    f"--set {k}={config_overrides[k]!r} is invalid: a sweep sets {k} itself "
                    "(use seeds_per_trial / --seeds-per-trial, --devices)"
                )
        raw["config"] = {**config, **config_overrides}
    raw.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return spec_from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)))


def spec_from_dict(raw: Mapping[str, Any], base_dir: str = ".") -> SweepSpec:
    """Validate a sweep spec mapping; nothing is compiled or written."""
    unknown = sorted(set(raw) - SPEC_FIELDS)
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {sorted(SPEC_FIELDS)}")
    base = _text_field(raw, "base", None)
    if base is not None and not os.path.isabs(base):
        base = os.path.join(base_dir, base)
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        raise bad("config", config, "must be a mapping of train.py config fields")
    for k in SWEEP_SET_FIELDS:
        if k in config:
            raise bad(f"config.{k}", config[k], "is set by the sweep (use seeds_per_trial)")
    run_cfg, algo_cfg = resolve_config(config_file=base, overrides=dict(config), what="base")
    if run_cfg.num_seeds != 1:
        run_cfg = dataclasses.replace(run_cfg, num_seeds=1)
    space_raw = raw.get("space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise bad("space", space_raw, "must be a non-empty mapping of parameter: range")
    space = tuple(parse_param(str(k), v) for k, v in space_raw.items())
    spec = SweepSpec(
        run_cfg=run_cfg,
        algo_cfg=algo_cfg,
        space=space,
        objective=_text_field(raw, "objective", "final_return_mean"),
        direction=_choice_field(raw, "direction", "maximize", DIRECTIONS),
        num_trials=_num_trials(raw, space),
        batch_size=_int_field(raw, "batch_size", 8, 1),
        seeds_per_trial=_int_field(raw, "seeds_per_trial", 1, 1),
        sampler=_choice_field(raw, "sampler", "tpe", SAMPLERS),
        pruner=_choice_field(raw, "pruner", "median", PRUNERS),
        pruner_startup_trials=_int_field(raw, "pruner_startup_trials", 4, 0),
        pruner_warmup_chunks=_int_field(raw, "pruner_warmup_chunks", 2, 0),
        seed=_int_field(raw, "seed", 0, 0, 2**32 - 1),  # the samplers take 32-bit seeds
        num_chunks=_int_field(raw, "num_chunks", 10, 1),
        eval_episodes=_int_field(raw, "eval_episodes", 16, 1),
        storage=_storage_field(raw.get("storage")),
        study_name=_text_field(raw, "study_name", "jaxlearn"),
        name=_name_field(raw.get("name", "sweep")),
        devices=raw.get("devices", "auto"),
    )
    _check_objective(spec)
    lane_devices(spec.devices)
    for p in spec.space:  # every bound and choice must make a valid config
        for v in p.extremes():
            try:
                trial_config(spec, {p.name: v}).check_env()  # env-side checks too
            except ValueError as e:
                raise ValueError(f"sweep.space.{p.name}: the value {v!r} is invalid: {e}") from None
    return spec


def _episode_metric_names(algo_cfg: Any) -> list[str]:
    env, params = base_env(algo_cfg)
    if not isinstance(env, TaskEnv):
        return []
    names = list(env.task_metrics)
    names += [f"reward_{k}" for k in params.reward_weights]
    return names


def _check_objective(spec: SweepSpec) -> None:
    allowed = [*BASE_OBJECTIVES, *_episode_metric_names(spec.algo_cfg)]
    if spec.objective not in allowed:
        raise bad("objective", spec.objective, f"must be one of {allowed}")
