"""A run's own settings (`RunConfig`: algo, seeds, chunks, checkpoints, evaluation, devices)
and the one way a run's config is resolved from a YAML file and overrides."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jaxlearn import algos, resources
from jaxlearn.config import (
    MAX_SEED,
    ConfigError,
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_range,
    field_names,
    from_dict,
    load_yaml,
    merge_dotted,
    to_dict,
)


def parse_checkpoint(value: Any) -> str | int:
    """`"best"`, `"latest"`, or a step (int >= 0, also as a string); ValueError otherwise."""
    if isinstance(value, str) and value in ("best", "latest"):
        return value
    try:
        step = int(value)
    except (TypeError, ValueError):
        step = None
    if isinstance(value, bool) or step is None or step < 0 or str(value).strip() != str(step):
        raise ValueError(f"checkpoint={value!r} is invalid: must be best, latest or a step >= 0")
    return step


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a run does around the algorithm: which algo, how many seeds, how it reports."""

    algo: str = "ppo"  # the algorithm: ppo | dqn
    seed: int = 0  # the run's seed: agent i trains from jax.random.split(key(seed), num_seeds)[i]
    num_seeds: int = 1  # agents trained side by side (vmapped, or sharded over devices)
    num_chunks: int = 20  # host reports between chunks; more chunks = finer progress
    final_fraction: float = 0.05  # final_return_* average the last 5% of training
    checkpoint_every: int = 0  # updates between checkpoints (0: at the end of every chunk)
    keep_checkpoints: int = 3  # newest checkpoints kept (plus the best by eval return)
    eval_episodes: int = 16  # greedy episodes per seed at each checkpoint (0: no evaluation)
    devices: str | int = "auto"  # auto | all | N: local devices the seeds are sharded over
    init_from: str | None = None  # a run folder whose network this run starts from
    init_checkpoint: str = "best"  # which of its checkpoints: best | latest | an update step
    max_memory: str | None = None  # refuse runs estimated above this (e.g. 8GiB); None: free

    def __post_init__(self):
        check_choice(self, "algo", sorted(algos.ALGOS))
        check_positive_int(self, "num_seeds", "num_chunks", "keep_checkpoints")
        check_nonnegative_int(self, "checkpoint_every", "eval_episodes")
        d = str(self.devices)
        if d not in ("auto", "all") and not (d.isdigit() and int(d) >= 1):
            raise ValueError(
                f"RunConfig.devices={self.devices!r} is invalid: use 'auto', 'all' or a "
                "positive device count"
            )
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(
                f"RunConfig.seed={seed!r} is invalid: must be an integer in [0, 2**63 - 1] "
                "(a jax.random.key seed)"
            )
        check_range(self, "final_fraction", 0.0, 1.0, low_open=True)
        if self.max_memory is not None:
            resources.parse_bytes(self.max_memory, "RunConfig.max_memory")
        try:
            parse_checkpoint(self.init_checkpoint)
        except ValueError:
            raise ValueError(
                f"RunConfig.init_checkpoint={self.init_checkpoint!r} is invalid: must be best, "
                "latest or an update step >= 0"
            ) from None
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(
                f"RunConfig.init_from={self.init_from!r} is invalid: must be a run folder path"
            )
        if self.init_from is None and str(self.init_checkpoint) != "best":  # not ignored
            raise ValueError(
                f"RunConfig.init_checkpoint={self.init_checkpoint!r} needs init_from (--init-from "
                "RUN_DIR): it picks which checkpoint of that run to start from"
            )


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def resolve_config(
    *,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    what: str = "--config",
) -> tuple[RunConfig, Any]:
    """Build (RunConfig, AlgoConfig) from an optional YAML file and overrides.

    The YAML file is flat: run fields (`algo`, `seed`, `num_seeds`, ...) and algorithm fields
    side by side. Later sources win: file, then `overrides`; a dotted name such as
    `reward_weights.collision` sets one key of that mapping (`config.merge_dotted`).
    Unknown fields are errors that list the allowed ones. Errors about the file name it as
    `what` (the flag or the file's role).
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        if os.path.isdir(config_file):
            raise ConfigError(f"{what} {config_file!r}: a folder; give a YAML file")
        if not os.path.isfile(config_file):
            raise ConfigError(f"{what} {config_file!r}: no such file")
        values.update(merge_dotted(load_yaml(config_file, what)))
    values = merge_dotted({**values, **(overrides or {})})  # a whole mapping, then its keys
    run_values = {k: v for k, v in values.items() if k in RUN_FIELDS}
    run_cfg = from_dict(RunConfig, run_values)
    config_cls, _ = algos.ALGOS[run_cfg.algo]
    algo_values = {k: v for k, v in values.items() if k not in RUN_FIELDS}
    names = field_names(config_cls)
    unknown = [k for k in algo_values if k not in names]
    if unknown:
        raise ConfigError(
            f"{config_cls.__name__}: unknown field(s) {unknown}; allowed fields: "
            f"{', '.join(names)}; run fields: {', '.join(RUN_FIELDS)}"
            + _other_algos(algo_values, run_cfg.algo)
        )
    return run_cfg, from_dict(config_cls, algo_values)


def _other_algos(values: Mapping[str, Any], algo: str) -> str:
    """`; core is a ppo field, not a dqn one` for the unknown fields another algo has."""
    own = field_names(algos.ALGOS[algo][0])
    notes = []
    for k in values:
        if k in own:
            continue
        owners = [name for name, (cls, _) in algos.ALGOS.items() if k in field_names(cls)]
        if owners:
            notes.append(f"{k} is a {'/'.join(owners)} field, not a {algo} one")
    return "".join(f"; {n}" for n in notes)


def resolved(run_cfg: RunConfig, algo_cfg: Any) -> dict[str, Any]:
    """The flat config dict a run folder stores (config.yaml, checkpoint records)."""
    return {**to_dict(run_cfg), **to_dict(algo_cfg)}


def config_defaults() -> dict[str, list[Any]]:
    """Default values of every run and algorithm config field, for checkpoints written
    before a field existed (`Checkpointer.restore(defaults=...)`)."""
    out: dict[str, list[Any]] = {}
    for cls in (RunConfig, *(c for c, _ in algos.ALGOS.values())):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, []).append(f.default)
    return out
