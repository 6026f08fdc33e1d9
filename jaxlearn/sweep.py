"""Batched hyperparameter sweeps: Optuna proposes, one vmapped call trains the whole batch.

A sweep asks Optuna (ask/tell) for a batch of `batch_size` trials, groups them by what
fixes array shapes (network sizes, `num_envs`, ...; one compile per distinct shape,
cached), and trains each group in a single jitted call with the trials on a vmapped lane
axis, split over the local devices (`devices`). Everything that does not change a shape
is data (`PPOHParams`/`DQNHParams`: learning rate, discounts, coefficients, epsilon
schedule, tau, target period, reward weights, curriculum thresholds), so trials with
different values share one compiled program.

Between training chunks each trial reports an intermediate value (the chunk's mean
episode return, or of the objective's episode metric) and the pruner (median by default,
Hyperband available) may stop it: a pruned trial's lane stops counting, and when at most
half of a group's lanes are still live the group is compacted onto fewer lanes (a smaller
cached program), so pruning also saves compute. A trial whose loss or parameters turn
NaN/Inf fails (state FAIL) without stopping the others.

The study lives in an sqlite file in the sweep folder unless `storage` names another
database (any RDB URL, e.g. PostgreSQL, lets several machines share one study). An
interrupted sweep resumes (`resume(folder)`): its trials that were running are marked
failed and asked again with the same parameters and seeds.

Spec (YAML, see `experiments/sweeps/`):

    base: ../ppo_cartpole.yaml       # a train.py config (relative to this file), optional
    config: {total_timesteps: 100000}  # field overrides on the base
    objective: final_return_mean       # | eval_return | an episode metric: success, ...
    direction: maximize
    num_trials: 32
    batch_size: 8                       # trials trained together
    seeds_per_trial: 1                  # the objective is the mean over these seeds
    sampler: tpe                        # tpe | random
    pruner: median                      # median | hyperband | none
    space:
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      ent_coef: {low: 0.0, high: 0.05}
      num_layers: {choices: [1, 2, 3]}   # architecture: hidden_sizes = (units,) * num_layers
      units: {choices: [32, 64, 128]}
      activation: {choices: [tanh, relu]}
      reward_weights.collision: {low: -2.0, high: 0.0}   # task envs
      curriculum.success_rate: {low: 0.5, high: 0.9}     # every stage; or curriculum.STAGE.x
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import fcntl
import json
import math
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from jaxlearn import algos
from jaxlearn.config import ConfigError, check_float32, load_yaml, to_dict
from jaxlearn.logging import final_episode_metrics, final_returns
from jaxlearn.parallel import seed_mesh, select_devices, shard_seeds
from jaxlearn.rundir import RunLock
from jaxlearn.runner import RUN_FIELDS, RunConfig, choose_chunk_size, make_chunk

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")
BASE_OBJECTIVES = ("final_return_mean", "eval_return")
ARCH_PARAMS = ("num_layers", "units")
CURRICULUM_CRITERIA = (
    "min_episodes",
    "success_rate",
    "average_reward",
    "coverage",
    "max_collision_rate",
)
SPEC_FILE = "sweep.yaml"
WORKER_FILE = "worker.json"
RESULTS_FILE = "results.csv"
PLOT_FILE = "objective.png"
BEST_FILE = "best_config.yaml"
DB_FILE = "study.db"
PARAM_KEYS = {"low", "high", "log", "step", "choices", "type"}


# --------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched parameter: a float/int range or a categorical choice."""

    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def distribution(self):
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log, step=self.step
        )

    def extremes(self) -> list[Any]:
        """Values that must all be valid (checked before anything runs)."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _bad(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"sweep.{field}={value!r} is invalid: {allowed}")


def parse_param(name: str, spec: Any) -> Param:
    """A `space` entry -> `Param`; errors name the parameter and what is allowed."""
    where = f"space.{name}"
    if not isinstance(spec, Mapping):
        raise _bad(where, spec, "expected a mapping: {low, high[, log, step, type]} or {choices}")
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        raise _bad(where, dict(spec), f"unknown key(s) {unknown}; allowed: {sorted(PARAM_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list | tuple) or not choices:
            raise _bad(f"{where}.choices", choices, "must be a non-empty list")
        for c in choices:
            if not (c is None or isinstance(c, bool | int | float | str)):
                raise _bad(
                    f"{where}.choices",
                    choices,
                    "choices must be numbers, strings, booleans or null (for an architecture "
                    "use num_layers and units)",
                )
        extra = sorted(set(spec) - {"choices", "type"})
        if extra:
            raise _bad(where, dict(spec), f"{extra} do not apply to choices")
        return Param(name, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise _bad(where, dict(spec), "a range needs both low and high (or give choices)")
    low, high = spec["low"], spec["high"]
    for k, v in (("low", low), ("high", high)):
        try:
            check_float32("sweep", f"{where}.{k}", v)
        except ConfigError:
            raise _bad(f"{where}.{k}", v, "must be a finite number (|x| <= 3.4e38)") from None
    kind = spec.get("type")
    if kind is None:
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    if kind not in ("int", "float"):
        raise _bad(f"{where}.type", kind, "must be int or float")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise _bad(where, dict(spec), "an int range needs integer low and high")
    if low > high:
        raise _bad(where, dict(spec), f"low ({low}) must be <= high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _bad(f"{where}.log", log, "must be true or false")
    if log and low <= 0:
        raise _bad(where, dict(spec), f"a log scale needs low > 0 (got low={low})")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
            raise _bad(f"{where}.step", step, "must be a number > 0")
        if log:
            raise _bad(where, dict(spec), "step and log cannot be combined")
    return Param(name, kind, low, high, log, step)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base run/algo config, the space, and how to search it."""

    run_cfg: RunConfig
    algo_cfg: Any
    space: tuple[Param, ...]
    objective: str = "final_return_mean"
    direction: str = "maximize"
    num_trials: int = 16
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


def _int_field(d: Mapping, key: str, default: int, low: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _bad(key, v, f"must be an integer >= {low}")
    return v


def _choice_field(d: Mapping, key: str, default: str, allowed: tuple[str, ...]) -> str:
    v = d.get(key, default)
    if v not in allowed:
        raise _bad(key, v, f"must be one of {list(allowed)}")
    return v


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _name_field(value: Any) -> str:
    """A sweep name becomes a folder name under sweeps/: one plain path component."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _bad(
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
    import sqlalchemy
    from sqlalchemy.engine import make_url

    allowed = "must be a database URL such as sqlite:///path/study.db or postgresql://host/db"
    if not isinstance(value, str):
        raise _bad("storage", value, allowed)
    try:
        make_url(value).get_dialect()
    except sqlalchemy.exc.ArgumentError:
        raise _bad("storage", value, allowed) from None
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        raise _bad(
            "storage", value, f"{allowed}; its database driver is not available: {e}"
        ) from None
    return value


def load_spec(path: str, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read a sweep spec from YAML (`base` is relative to the file); `overrides` replace
    top-level spec keys."""
    if not os.path.isfile(path):
        raise ValueError(f"sweep spec {path!r}: no such file")
    raw = load_yaml(path, "sweep spec")
    raw = {**raw, **(overrides or {})}
    raw.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return spec_from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)))


def spec_from_dict(raw: Mapping[str, Any], base_dir: str = ".") -> SweepSpec:
    """Validate a sweep spec mapping; nothing is compiled or written."""
    from jaxlearn.runner import resolve_config

    unknown = sorted(set(raw) - SPEC_FIELDS)
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {sorted(SPEC_FIELDS)}")
    base = raw.get("base")
    if base is not None and not os.path.isabs(base):
        base = os.path.join(base_dir, base)
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        raise _bad("config", config, "must be a mapping of train.py config fields")
    for k in ("num_seeds", "devices", "init_from"):
        if k in config:
            raise _bad(f"config.{k}", config[k], "is set by the sweep (use seeds_per_trial)")
    run_cfg, algo_cfg = resolve_config(config_file=base, overrides=dict(config))
    if run_cfg.num_seeds != 1:
        run_cfg = dataclasses.replace(run_cfg, num_seeds=1)
    space_raw = raw.get("space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise _bad("space", space_raw, "must be a non-empty mapping of parameter: range")
    space = tuple(parse_param(str(k), v) for k, v in space_raw.items())
    spec = SweepSpec(
        run_cfg=run_cfg,
        algo_cfg=algo_cfg,
        space=space,
        objective=str(raw.get("objective", "final_return_mean")),
        direction=_choice_field(raw, "direction", "maximize", DIRECTIONS),
        num_trials=_int_field(raw, "num_trials", 16, 1),
        batch_size=_int_field(raw, "batch_size", 8, 1),
        seeds_per_trial=_int_field(raw, "seeds_per_trial", 1, 1),
        sampler=_choice_field(raw, "sampler", "tpe", SAMPLERS),
        pruner=_choice_field(raw, "pruner", "median", PRUNERS),
        pruner_startup_trials=_int_field(raw, "pruner_startup_trials", 4, 0),
        pruner_warmup_chunks=_int_field(raw, "pruner_warmup_chunks", 2, 0),
        seed=_int_field(raw, "seed", 0, 0),
        num_chunks=_int_field(raw, "num_chunks", 10, 1),
        eval_episodes=_int_field(raw, "eval_episodes", 16, 1),
        storage=_storage_field(raw.get("storage")),
        study_name=str(raw.get("study_name", "jaxlearn")),
        name=_name_field(raw.get("name", "sweep")),
        devices=raw.get("devices", "auto"),
    )
    _check_objective(spec)
    lane_devices(spec.devices)
    for p in spec.space:  # every bound and choice must make a valid config
        for v in p.extremes():
            try:
                trial_config(spec, {p.name: v})
            except ValueError as e:
                raise ValueError(f"sweep.space.{p.name}: the value {v!r} is invalid: {e}") from None
    return spec


def _episode_metric_names(algo_cfg: Any) -> list[str]:
    from jaxlearn.envs.setup import base_env
    from jaxlearn.envs.task import TaskEnv

    env, params = base_env(algo_cfg)
    if not isinstance(env, TaskEnv):
        return []
    names = list(env.task_metrics)
    names += [f"reward_{k}" for k in params.reward_weights]
    return names


def _check_objective(spec: SweepSpec) -> None:
    allowed = [*BASE_OBJECTIVES, *_episode_metric_names(spec.algo_cfg)]
    if spec.objective not in allowed:
        raise _bad("objective", spec.objective, f"must be one of {allowed}")


# ----------------------------------------------------------- trial -> config + hparams


def _set_arch(values: dict[str, Any], arch: dict[str, Any], base: Any) -> None:
    layers = arch.get("num_layers", len(base.hidden_sizes))
    units = arch.get("units", base.hidden_sizes[0])
    for k, v in (("num_layers", layers), ("units", units)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k}={v!r} must be an integer >= 1")
    values["hidden_sizes"] = (units,) * layers


def split_params(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort a trial's values into config fields, architecture, reward weights and
    curriculum thresholds; unknown names are errors."""
    cls = type(spec.algo_cfg)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, dict[str, Any]] = {"config": {}, "arch": {}, "reward": {}, "curriculum": {}}
    for name, value in params.items():
        if name in ARCH_PARAMS:
            if "hidden_sizes" in params:
                raise ValueError(f"{name} and hidden_sizes cannot both be searched")
            out["arch"][name] = value
        elif name.startswith("reward_weights."):
            out["reward"][name.split(".", 1)[1]] = value
        elif name.startswith("curriculum."):
            out["curriculum"][name.split(".", 1)[1]] = value
        elif name in fields and name not in ("env", "curriculum", "reward_weights"):
            out["config"][name] = value
        elif name in RUN_FIELDS:
            raise ValueError(f"{name} is a run field; a sweep searches algorithm fields")
        else:
            allowed = sorted(fields - {"env", "curriculum", "reward_weights"})
            raise ValueError(
                f"unknown parameter {name!r}; allowed: {', '.join(allowed)}, num_layers, "
                "units, reward_weights.<component>, curriculum.[<stage>.]<criterion>"
            )
    return out


def _curriculum_dict(algo_cfg: Any) -> dict[str, Any]:
    from jaxlearn.curriculum import CurriculumConfig
    from jaxlearn.envs.setup import base_env

    _, params = base_env(algo_cfg)
    fields = [n for n in params.__dataclass_fields__ if n != "reward_weights"]
    return CurriculumConfig.from_dict(algo_cfg.curriculum, env_fields=fields).to_dict()


def _curriculum_targets(spec: SweepSpec, key: str) -> tuple[list[int], str]:
    """'success_rate' -> (every stage, criterion); 'BEGINNER.success_rate' -> one stage."""
    if spec.algo_cfg.curriculum is None:
        raise ValueError(f"curriculum.{key}: the base config has no curriculum")
    names = [s["name"] for s in _curriculum_dict(spec.algo_cfg)["stages"]]
    stage, _, crit = key.rpartition(".")
    if crit not in CURRICULUM_CRITERIA:
        raise ValueError(f"curriculum.{key}: criterion must be one of {list(CURRICULUM_CRITERIA)}")
    if not stage:
        return list(range(len(names))), crit
    if stage not in names:
        raise ValueError(f"curriculum.{key}: no stage {stage!r}; stages: {names}")
    return [names.index(stage)], crit


def trial_config(spec: SweepSpec, params: Mapping[str, Any]) -> Any:
    """The full algorithm config a trial's values describe (validated): what
    `best_config.yaml` holds and what `train.py` would run."""
    parts = split_params(spec, params)
    values = dict(parts["config"])
    if parts["arch"]:
        _set_arch(values, parts["arch"], spec.algo_cfg)
    if parts["reward"]:
        weights = dict(spec.algo_cfg.reward_weights or {})
        weights.update(parts["reward"])
        values["reward_weights"] = weights
    if parts["curriculum"]:
        targets = {k: _curriculum_targets(spec, k) for k in parts["curriculum"]}
        table = _curriculum_dict(spec.algo_cfg)
        for key, v in parts["curriculum"].items():
            stages, crit = targets[key]
            for i in stages:
                table["stages"][i][crit] = int(v) if crit == "min_episodes" else v
        values["curriculum"] = table
    return dataclasses.replace(spec.algo_cfg, **values)


def static_config(spec: SweepSpec, cfg: Any) -> Any:
    """`cfg` with its data fields (see `data_fields`) reset to the base: the config that
    fixes the compiled program. Trials with equal static configs share one compile.
    (A trial's curriculum differs from the base only in its thresholds, which are data.)"""
    return _program_view(cfg, spec.algo_cfg)


def _program_view(cfg: Any, ref: Any) -> Any:
    """`cfg` with data (hparams, reward weights, curriculum thresholds) taken from `ref`."""
    reset = {f: getattr(ref, f) for f in cfg.data_fields()}
    reset["reward_weights"] = ref.reward_weights
    if cfg.curriculum is not None and ref.curriculum is not None:
        same = _without_thresholds(cfg) == _without_thresholds(ref)
        reset["curriculum"] = ref.curriculum if same else cfg.curriculum
    return dataclasses.replace(cfg, **reset)


def _without_thresholds(cfg: Any) -> Any:
    table = _curriculum_dict(cfg)
    for stage in table["stages"]:
        for k in CURRICULUM_CRITERIA:
            stage.pop(k, None)
    return table


def static_key(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, default=str)


def trial_hparams(spec: SweepSpec, cfg: Any, static_cfg: Any) -> Any:
    """The hparams pytree of the trial config `cfg` for the program of `static_cfg`."""
    full = cfg.hparams()
    base = static_cfg.hparams()
    values = {f: getattr(full, f) for f in static_cfg.data_fields()}
    return base.replace(
        **values,
        reward_weights=full.reward_weights,
        curriculum=full.curriculum,
    )


def stack(trees: list[Any]) -> Any:
    """Stack pytrees of equal structure on a new leading axis (for `vmap`)."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def batched_hparams(configs: list[Any]) -> Any:
    """`[B]` hparams of configs that share one program, for
    `jax.vmap(make_train(configs[0]))(keys, batched_hparams(configs))`.

    Raises when a config differs from the first in a field that fixes shapes or the program.
    """
    ref = _program_view(configs[0], configs[0])
    for i, c in enumerate(configs[1:], 1):
        view = _program_view(c, configs[0])
        if static_key(view) != static_key(ref):
            diff = [
                f.name
                for f in dataclasses.fields(view)
                if getattr(view, f.name) != getattr(ref, f.name)
            ]
            raise ValueError(
                f"batched_hparams: config {i} differs from config 0 in {diff}, which fix "
                "array shapes or the program; batch them separately"
            )
    return stack([c.hparams() for c in configs])


# ------------------------------------------------------------------------ execution


def _padded(n: int, cap: int) -> int:
    """Trials per program: the next power of two >= n (at most `cap`, the batch size)."""
    p = 1
    while p < n:
        p *= 2
    return min(p, max(cap, n))


class _Program:
    """The compiled init/chunk/evaluate of one static config (cached by jit per lane count)."""

    def __init__(self, cfg: Any, algo: str, num_chunks: int):
        _, make_learner = algos.ALGOS[algo]
        self.learner = make_learner(cfg)
        self.chunk_size = choose_chunk_size(self.learner.num_updates, num_chunks)
        chunk = make_chunk(self.learner, self.chunk_size)
        self.init = jax.jit(jax.vmap(self.learner.init))
        self.chunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)), donate_argnums=0)
        self.evaluate = None
        self.lane_counts: set[int] = set()  # lane counts compiled so far


@dataclasses.dataclass
class _Live:
    trial: Any  # optuna Trial
    cfg: Any
    hparams: Any
    lanes: list[int]  # positions in the group's lane axis
    done: bool = False


def _num_lanes(state: Any) -> int:
    return int(jax.tree.leaves(state)[0].shape[0])


def _trial_keys(spec: SweepSpec, seed_index: int) -> jax.Array:
    base = jax.random.fold_in(jax.random.key(spec.seed), seed_index)
    return jax.random.split(base, spec.seeds_per_trial)


def _chunk_value(spec: SweepSpec, m: dict[str, np.ndarray]) -> float:
    """The intermediate value of one trial over one chunk (lanes pooled)."""
    n = m["episode_count"].sum()
    if n <= 0:
        return float("nan")
    key = "episode_return_sum"
    if spec.objective not in BASE_OBJECTIVES:
        key = f"episode_{spec.objective}_sum"
    return float(m[key].sum() / n)


def _objective(spec: SweepSpec, history: dict[str, np.ndarray], eval_returns) -> float:
    if spec.objective == "final_return_mean":
        return float(np.nanmean(final_returns(history, spec.run_cfg.final_fraction)))
    if spec.objective == "eval_return":
        return float(np.mean(eval_returns))
    extras = final_episode_metrics(history, spec.run_cfg.final_fraction)
    return float(extras.get(spec.objective, float("nan")))


HEARTBEAT_SECONDS = 60  # live trials are marked alive at least this often (between chunks)
STALE_SECONDS = 1800  # a RUNNING trial silent this long belongs to a dead worker


def _requeue(study: Any, trial: Any) -> None:
    """Queue a failed (interrupted or stale) trial again: same parameters, same seeds."""
    study.enqueue_trial(
        trial.params,
        user_attrs={
            "seed_index": trial.user_attrs.get("seed_index", trial.number),
            "retry_of": trial.number,
        },
    )


class _creating:
    """Serialise creating a study's sqlite tables: two sweeps starting at once on a new
    file otherwise race on Optuna's schema setup (`IntegrityError` on alembic_version).
    Other databases handle concurrent setup themselves."""

    def __init__(self, url: str):
        self.path = url[len("sqlite:///") :] + ".lock" if url.startswith("sqlite:///") else None
        self.fd: int | None = None

    def __enter__(self):
        if self.path:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


class Sweep:
    """A sweep folder bound to its study. `run()` trains trials until `num_trials` are done."""

    def __init__(self, spec: SweepSpec, folder: str, log: Callable[[str], None] | None = None):
        import optuna

        self.spec = spec
        self.folder = folder
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        with open(os.path.join(folder, WORKER_FILE)) as f:
            self.worker = json.load(f)["worker"]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = spec.storage or f"sqlite:///{os.path.abspath(os.path.join(folder, DB_FILE))}"
        with _creating(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            self.storage = optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=STALE_SECONDS,
                heartbeat_stale_trial_callback=_requeue,
            )
            self.study = optuna.create_study(
                study_name=spec.study_name,
                storage=self.storage,
                pruner=self._pruner(),
                direction=spec.direction,
                load_if_exists=True,
            )
        self.study.sampler = self._sampler(self._sampler_seed())
        self.distributions = {p.name: p.distribution() for p in spec.space}
        self.programs: dict[str, _Program] = {}
        self.devices = lane_devices(spec.devices)
        self.compiles = 0
        self.batches = 0

    def _sampler_seed(self) -> int:
        """`spec.seed` for the first worker of a new study (a fresh sweep is reproducible);
        otherwise a seed mixed from it, this worker's join order and the trials so far, so a
        resumed sweep or another worker on the same study does not replay the proposals
        already made. Trial seeds (`seed_index`) do not depend on it."""
        key = f"worker:{self.worker}"
        if key not in self.study.user_attrs:
            self.study.set_user_attr(key, time.time_ns())
        joined = sorted((v, k) for k, v in self.study.user_attrs.items() if k.startswith("worker:"))
        index = [k for _, k in joined].index(key)
        count = len(self.study.get_trials(deepcopy=False))
        if index == 0 and count == 0:
            return self.spec.seed
        return int(np.random.SeedSequence([self.spec.seed, index, count]).generate_state(1)[0])

    def _sampler(self, seed: int):
        import optuna

        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=min(10, self.spec.num_trials),
        )

    def _pruner(self):
        import optuna

        if self.spec.pruner == "none":
            return optuna.pruners.NopPruner()
        if self.spec.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
        return optuna.pruners.MedianPruner(
            n_startup_trials=self.spec.pruner_startup_trials,
            n_warmup_steps=self.spec.pruner_warmup_chunks,
        )

    # -- bookkeeping -----------------------------------------------------------------

    def _counted(self) -> int:
        """Trials that count toward `num_trials`: finished ones (not interrupted ones, which
        run again) and those running elsewhere (another machine sharing the study)."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        n = 0
        for t in trials:
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                n += 1
            elif t.state == TrialState.FAIL and t.number not in retried:
                n += 1
            elif t.state == TrialState.RUNNING and t.user_attrs.get("worker") != self.worker:
                n += 1
        return n

    def recover(self) -> int:
        """Mark this folder's trials left RUNNING by an interruption as failed and queue
        them again (same parameters, same seeds). Returns how many."""
        from optuna.trial import TrialState

        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") != self.worker:
                continue
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            _requeue(self.study, t)
            n += 1
        return n

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        import optuna

        with warnings.catch_warnings():  # heartbeats outside Study.optimize are our own
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            optuna.storages.fail_stale_trials(self.study)  # a dead worker's: run them again
            trial = self.study.ask(self.distributions)
        self.storage.record_heartbeat(trial._trial_id)
        if "seed_index" not in trial.user_attrs:
            trial.set_user_attr("seed_index", trial.number)
        trial.set_user_attr("worker", self.worker)
        return trial, dict(trial.params)

    # -- the loop --------------------------------------------------------------------

    def run(self, stop_after_batches: int | None = None) -> dict[str, Any]:
        """Ask, train and tell batches until `num_trials` trials are done (or, for tests
        and interruptions, after `stop_after_batches` batches)."""
        recovered = self.recover()
        if recovered:
            self.log(f"[sweep] re-queued {recovered} trial(s) interrupted earlier")
        t_start = time.perf_counter()
        while True:
            remaining = self.spec.num_trials - self._counted()
            if remaining <= 0:
                break
            if stop_after_batches is not None and self.batches >= stop_after_batches:
                self.write_reports()
                return {"stopped_after_batches": self.batches, "folder": self.folder}
            n = min(self.spec.batch_size, remaining)
            asked = [self._ask() for _ in range(n)]
            self._run_batch(asked)
            self.batches += 1
        summary = self.write_reports()
        summary["sweep_seconds_this_process"] = time.perf_counter() - t_start
        best = summary.get("best")
        if best:
            self.log(
                f"[sweep] done: {summary['trials']['complete']} complete, "
                f"{summary['trials']['pruned']} pruned, {summary['trials']['fail']} failed; "
                f"best trial {best['number']} {self.spec.objective}={best['value']:.4g}; "
                f"wrote {self.folder}"
            )
        return summary

    def _run_batch(self, asked: list[tuple[Any, dict[str, Any]]]) -> None:
        groups: dict[str, list[tuple[Any, Any, Any]]] = {}
        statics: dict[str, Any] = {}
        from optuna.trial import TrialState

        for trial, params in asked:
            try:
                cfg = trial_config(self.spec, params)
            except ValueError as e:  # a combination the single-value checks cannot catch
                trial.set_user_attr("error", str(e))
                self.study.tell(trial, state=TrialState.FAIL)
                self.log(f"  trial {trial.number} failed: {e}")
                continue
            static = static_config(self.spec, cfg)
            key = static_key(static)
            statics[key] = static
            groups.setdefault(key, []).append((trial, cfg, params))
        numbers = [t.number for t, _ in asked]
        self.log(
            f"[sweep] batch {self.batches + 1}: trials {min(numbers)}-{max(numbers)} in "
            f"{len(groups)} program(s)"
        )
        for key, members in groups.items():
            if key not in self.programs:
                self.programs[key] = _Program(statics[key], self.spec.algo, self.spec.num_chunks)
            self._run_group(self.programs[key], statics[key], members)

    def _place(self, tree: Any) -> Any:
        """Split the lane axis over as many of the sweep's devices as divide the lane count
        (all of them for the usual power-of-two counts); lanes are independent, so `jit`
        then runs each device's lanes there with no communication."""
        d = math.gcd(_num_lanes(tree), len(self.devices))
        return shard_seeds(tree, seed_mesh(self.devices[:d]))

    def _compact(self, live: list[_Live], state: Any, hp: Any) -> tuple[Any, Any]:
        """Gather the lanes of the `live` trials onto the smallest padded lane axis that
        holds them (padding with copies of the first trial's lanes)."""
        s = self.spec.seeds_per_trial
        slots = _padded(len(live), self.spec.batch_size)
        order = [i for t in live for i in t.lanes]
        order += live[0].lanes * (slots - len(live))
        idx = jnp.asarray(order)
        for j, t in enumerate(live):
            t.lanes = list(range(j * s, (j + 1) * s))
        state = jax.tree.map(lambda x: x[idx], state)
        return self._place(state), self._place(jax.tree.map(lambda x: x[idx], hp))

    def _run_group(self, program: _Program, static: Any, members: list) -> None:
        from optuna.trial import TrialState

        spec, s = self.spec, self.spec.seeds_per_trial
        live, keys, hps = [], [], []
        for j, (trial, cfg, _) in enumerate(members):
            hp = trial_hparams(spec, cfg, static)
            live.append(_Live(trial, cfg, hp, list(range(j * s, (j + 1) * s))))
            keys.append(_trial_keys(spec, trial.user_attrs["seed_index"]))
            hps += [hp] * s
        pad = _padded(len(live), spec.batch_size) - len(live)
        keys += [keys[0]] * pad
        hps += hps[:s] * pad
        hp_arr = self._place(stack(hps))
        t0 = time.perf_counter()
        state = self._place(program.init(self._place(jnp.concatenate(keys)), hp_arr))
        histories: dict[int, list[dict[str, np.ndarray]]] = {t.trial.number: [] for t in live}
        num_updates = program.learner.num_updates
        done_updates = 0
        num_calls = math.ceil(num_updates / program.chunk_size)
        for c in range(num_calls):
            lanes = _num_lanes(state)
            if lanes not in program.lane_counts:  # a new (program, lane count): a compile
                program.lane_counts.add(lanes)
                self.compiles += 1
            active = min(program.chunk_size, num_updates - done_updates)
            state, metrics = program.chunk(state, hp_arr, jnp.int32(active))
            metrics = {k: np.asarray(v)[:, :active] for k, v in jax.device_get(metrics).items()}
            done_updates += active
            for t in live:
                m = {k: v[t.lanes] for k, v in metrics.items()}
                histories[t.trial.number].append(m)
                if np.any(m.get("nonfinite", 0) > 0):
                    t.trial.set_user_attr("error", f"NaN/Inf by update {done_updates}")
                    self.study.tell(t.trial, state=TrialState.FAIL)
                    t.done = True
                    continue
                value = _chunk_value(spec, m)
                if np.isfinite(value) and done_updates < num_updates:
                    t.trial.report(value, step=c)
                    if t.trial.should_prune():
                        self.study.tell(t.trial, state=TrialState.PRUNED)
                        t.done = True
            live = [t for t in live if not t.done]
            for t in live:  # still alive: other workers must not fail it as stale
                self.storage.record_heartbeat(t.trial._trial_id)
            if not live:
                break
            if _padded(len(live), spec.batch_size) * s < _num_lanes(state):
                state, hp_arr = self._compact(live, state, hp_arr)
            best = self._best_value()
            on = len(jax.tree.leaves(state)[0].sharding.device_set)
            self.log(
                f"  chunk {c + 1}/{num_calls}: {len(live)} live trial(s) on "
                f"{_num_lanes(state)} lane(s) over {on} device(s)"
                + (f"; best so far {best:.4g}" if best is not None else "")
            )
        else:
            self._finish(program, live, state, histories)
        self.log(f"  program done in {time.perf_counter() - t0:.1f}s")

    def _finish(self, program, live: list[_Live], state: Any, histories) -> None:
        from optuna.trial import TrialState

        spec = self.spec
        eval_returns = {}
        if spec.objective == "eval_return" and live:
            if program.evaluate is None:
                n = spec.eval_episodes
                program.evaluate = jax.jit(
                    jax.vmap(lambda st, k: program.learner.evaluate(st, k, n)["returns"])
                )
            lanes = jax.tree.leaves(state)[0].shape[0]
            keys = jax.random.split(jax.random.key(spec.seed + 1), lanes)
            returns = np.asarray(program.evaluate(state, keys))
            eval_returns = {t.trial.number: returns[t.lanes].mean() for t in live}
        for t in live:
            hist = {
                k: np.concatenate([h[k] for h in histories[t.trial.number]], axis=1)
                for k in histories[t.trial.number][0]
            }
            value = _objective(spec, hist, eval_returns.get(t.trial.number))
            per_seed = final_returns(hist, spec.run_cfg.final_fraction)
            t.trial.set_user_attr("final_return_per_seed", [float(x) for x in per_seed])
            if np.isfinite(value):
                self.study.tell(t.trial, value)
            else:
                t.trial.set_user_attr("error", f"objective {spec.objective} is not finite")
                self.study.tell(t.trial, state=TrialState.FAIL)

    def _best_value(self) -> float | None:
        try:
            return float(self.study.best_value)
        except ValueError:
            return None

    # -- reports ---------------------------------------------------------------------

    def write_reports(self) -> dict[str, Any]:
        """results.csv, objective.png and best_config.yaml in the sweep folder."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        names = [p.name for p in self.spec.space]
        path = os.path.join(self.folder, RESULTS_FILE)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", "state", "value", "duration_s", "last_intermediate", *names])
            for t in trials:
                dur = t.duration.total_seconds() if t.duration is not None else ""
                last = (
                    t.intermediate_values[max(t.intermediate_values)]
                    if t.intermediate_values
                    else ""
                )
                w.writerow(
                    [
                        t.number,
                        t.state.name,
                        "" if t.value is None else t.value,
                        dur,
                        last,
                        *[t.params.get(n, "") for n in names],
                    ]
                )
        counts = {
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "fail": sum(t.state == TrialState.FAIL for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
        }
        summary: dict[str, Any] = {
            "folder": self.folder,
            "trials": counts,
            "compiles": self.compiles,
        }
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = self.study.best_trial
            cfg = trial_config(self.spec, best.params)
            run = to_dict(
                dataclasses.replace(self.spec.run_cfg, num_seeds=self.spec.seeds_per_trial)
            )
            run = {k: v for k, v in run.items() if k not in ("init_from",) or v is not None}
            header = (
                f"# Best trial {best.number} of sweep {self.spec.name} ({self.folder}):\n"
                f"# {self.spec.objective} = {best.value:.6g} ({self.spec.direction}), "
                f"params {json.dumps(best.params)}\n"
                "# Ready for: python scripts/train.py --config THIS_FILE\n"
            )
            body = yaml.safe_dump({**run, **to_dict(cfg)}, sort_keys=False)
            with open(os.path.join(self.folder, BEST_FILE), "w") as f:
                f.write(header + body)
            summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
            self._plot(trials)
        with open(os.path.join(self.folder, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        return summary

    def _plot(self, trials: list) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.trial import TrialState

        fig, ax = plt.subplots(figsize=(6, 4))
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        ax.scatter([t.number for t in done], [t.value for t in done], label="complete", s=18)
        if pruned:
            ax.scatter(
                [t.number for t in pruned],
                [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                marker="x",
                label="pruned (last report)",
                s=18,
            )
        order = sorted(done, key=lambda t: t.number)
        best, xs, ys = None, [], []
        better = max if self.spec.direction == "maximize" else min
        for t in order:
            best = t.value if best is None else better(best, t.value)
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="k", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(self.spec.objective)
        ax.set_title(f"Sweep {self.spec.name}: {self.spec.algo} on {self.spec.algo_cfg.env}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(self.folder, PLOT_FILE), dpi=100)
        plt.close(fig)


# ------------------------------------------------------------------ folder handling


def _spec_record(spec: SweepSpec) -> dict[str, Any]:
    """The spec as a self-contained mapping (the base config inlined) for sweep.yaml."""
    config = {**to_dict(spec.run_cfg), **to_dict(spec.algo_cfg)}
    config.pop("num_seeds", None)
    config.pop("devices", None)
    config.pop("init_from", None)
    space = {}
    for p in spec.space:
        if p.kind == "categorical":
            space[p.name] = {"choices": list(p.choices)}
        else:
            d: dict[str, Any] = {"low": p.low, "high": p.high, "type": p.kind}
            if p.log:
                d["log"] = True
            if p.step is not None:
                d["step"] = p.step
            space[p.name] = d
    out = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in ("run_cfg", "algo_cfg", "space")
    }
    return {**out, "config": config, "space": space}


def new_sweep(spec: SweepSpec, out: str | None = None) -> str:
    """Create the sweep folder (never an existing one) with sweep.yaml and a worker id."""
    if out is not None:
        if os.path.exists(out):
            raise FileExistsError(
                f"--out {out!r} already exists; jaxlearn never overwrites a sweep folder: "
                f"choose a new path, or continue it with --resume {out}"
            )
        os.makedirs(out)
        folder = out
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join("sweeps", f"{spec.name}_{stamp}")
        folder, i = base, 1
        while True:
            try:
                os.makedirs(folder)
                break
            except FileExistsError:
                folder, i = f"{base}-{i}", i + 1
    with open(os.path.join(folder, SPEC_FILE), "w") as f:
        yaml.safe_dump(_spec_record(spec), f, sort_keys=False)
    with open(os.path.join(folder, WORKER_FILE), "w") as f:
        json.dump({"worker": uuid.uuid4().hex}, f)
    return folder


def run(
    spec: SweepSpec,
    out: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_batches: int | None = None,
) -> dict[str, Any]:
    """Start a sweep in a new folder and run it to `num_trials` trials. Returns the summary.
    The folder is locked for the sweep's life (`rundir.RunLock`): one writer at a time."""
    folder = new_sweep(spec, out)
    lock = RunLock.acquire(folder)
    try:
        return Sweep(spec, folder, log).run(stop_after_batches)
    finally:
        lock.release()


def resume(
    folder: str,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_batches: int | None = None,
) -> dict[str, Any]:
    """Continue the sweep in `folder` (its interrupted trials are run again)."""
    path = os.path.join(folder, SPEC_FILE)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(folder, WORKER_FILE)):
        raise ValueError(f"--resume {folder!r}: no {SPEC_FILE} there; is it a sweep folder?")
    spec = spec_from_dict(load_yaml(path, "--resume"), base_dir=folder)
    lock = RunLock.acquire(folder)  # a live sweep keeps its trials: refuse a second writer
    try:
        return Sweep(spec, folder, log).run(stop_after_batches)
    finally:
        lock.release()


def export_best(folder: str, path: str) -> str:
    """Copy the sweep's best_config.yaml to `path` (e.g. experiments/x.yaml); never
    overwrites an existing file."""
    src = os.path.join(folder, BEST_FILE)
    if not os.path.isfile(src):
        raise ValueError(f"{folder!r} has no {BEST_FILE}: no trial completed yet")
    with open(src) as f:
        text = f.read()
    with open(path, "x") as f:  # "x": fails if it exists
        f.write(text)
    return path


__all__ = [
    "Param",
    "Sweep",
    "SweepSpec",
    "batched_hparams",
    "export_best",
    "load_spec",
    "parse_param",
    "resume",
    "run",
    "spec_from_dict",
    "stack",
    "static_config",
    "trial_config",
    "trial_hparams",
]
