"""A trial's values -> the config it describes, the program it needs and its hparams.

A trial's parameters are config fields, an architecture (`num_layers`, `units`), reward
weights (`reward_weights.<component>`) or curriculum thresholds (`curriculum.[<stage>.]
<criterion>`). Everything that does not fix an array shape is data, so trials whose configs
differ only in data share one compiled program (`static_config`, `static_key`) and train
side by side on a vmapped lane axis with their own hparams (`trial_hparams`, `stack`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxlearn.config import from_dict, to_dict
from jaxlearn.curriculum import CurriculumConfig
from jaxlearn.envs.setup import base_env
from jaxlearn.rundir import RUN_FIELDS

ARCH_PARAMS = ("num_layers", "units")
CURRICULUM_CRITERIA = (
    "min_episodes",
    "success_rate",
    "average_reward",
    "coverage",
    "max_collision_rate",
)


def _set_arch(values: dict[str, Any], arch: dict[str, Any], base: Any) -> None:
    layers = arch.get("num_layers", len(base.hidden_sizes))
    units = arch.get("units", base.hidden_sizes[0])
    for k, v in (("num_layers", layers), ("units", units)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k}={v!r} must be an integer >= 1")
    values["hidden_sizes"] = (units,) * layers


def split_params(spec: Any, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
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


def curriculum_table(algo_cfg: Any) -> dict[str, Any]:
    """The config's curriculum as a full stage table (every criterion spelled out)."""
    _, params = base_env(algo_cfg)
    fields = [n for n in params.__dataclass_fields__ if n != "reward_weights"]
    return CurriculumConfig.from_dict(algo_cfg.curriculum, env_fields=fields).to_dict()


def _curriculum_targets(spec: Any, key: str) -> tuple[list[int], str]:
    """'success_rate' -> (every stage, criterion); 'BEGINNER.success_rate' -> one stage."""
    if spec.algo_cfg.curriculum is None:
        raise ValueError(f"curriculum.{key}: the base config has no curriculum")
    names = [s["name"] for s in curriculum_table(spec.algo_cfg)["stages"]]
    stage, _, crit = key.rpartition(".")
    if crit not in CURRICULUM_CRITERIA:
        raise ValueError(f"curriculum.{key}: criterion must be one of {list(CURRICULUM_CRITERIA)}")
    if not stage:
        return list(range(len(names))), crit
    if stage not in names:
        raise ValueError(f"curriculum.{key}: no stage {stage!r}; stages: {names}")
    return [names.index(stage)], crit


def trial_config(spec: Any, params: Mapping[str, Any]) -> Any:
    """The full algorithm config a trial's values describe (validated): what
    `best_config.yaml` holds and what `train.py` would run.

    Args:
        spec: the `SweepSpec` (its `algo_cfg` is the base config).
        params: the trial's values by parameter name.
    """
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
        table = curriculum_table(spec.algo_cfg)
        for key, v in parts["curriculum"].items():
            stages, crit = targets[key]
            for i in stages:
                table["stages"][i][crit] = int(v) if crit == "min_episodes" else v
        values["curriculum"] = table
    # coerced and checked by field type, as train.py's --set values are
    return from_dict(type(spec.algo_cfg), values, base=spec.algo_cfg)


def static_config(spec: Any, cfg: Any) -> Any:
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
    table = curriculum_table(cfg)
    for stage in table["stages"]:
        for k in CURRICULUM_CRITERIA:
            stage.pop(k, None)
    return table


def static_key(cfg: Any) -> str:
    """A string equal for exactly the configs that compile to one program."""
    return json.dumps(to_dict(cfg), sort_keys=True, default=str)


def trial_hparams(spec: Any, cfg: Any, static_cfg: Any) -> Any:
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
