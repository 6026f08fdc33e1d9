"""Fuzzing the edge: random damage to shipped configs and sweep specs either validates into a
run that traces and fits in memory, or is refused with a message naming what was damaged.

Each case mutates one thing of a shipped YAML file (a field's type, sign, size, NaN/inf, an
unknown key, a dropped key, or the YAML text itself) and must end in exactly one of:
- refused with a `ValueError` (the scripts print `error: ...` and exit 2) whose message
  names the mutated field, or the file and line for damaged YAML;
- accepted, with a memory estimate, and (for a sample) the whole training run traced
  abstractly (`jax.eval_shape`: every shape and dtype checked, nothing compiled).
Anything else (TypeError, KeyError, a crash in tracing) is a bug in the validation.
"""

from __future__ import annotations

import glob
import math
import os
import random

import jax
import pytest
import yaml

from jaxlearn import algos, resources, sweep
from jaxlearn.config import ConfigError
from jaxlearn.runner import resolve_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.yaml")))
SPECS = sorted(glob.glob(os.path.join(ROOT, "experiments", "sweeps", "*.yaml")))
BAD_VALUES = [
    -1,
    0,
    -0.5,
    0.5,
    3,
    10**12,
    2**40,
    1e39,
    -1e39,
    math.nan,
    math.inf,
    -math.inf,
    "abc",
    "",
    True,
    None,
    [],
    {},
    [1, 2],
    [64, -1],
    {"x": 1},
    "1e15",
]
FIELDS = sorted(
    {f for cls, _ in algos.ALGOS.values() for f in cls.__dataclass_fields__}
    | {"num_seeds", "seed", "eval_episodes", "checkpoint_every", "num_chunks", "algo"}
)
MEMORY = (8 * 1024**3, "8 GiB test budget")
TRACED = 6  # accepted cases whose whole run is traced (about a second each)


def _damage_text(rng: random.Random, text: str) -> tuple[str, str]:
    """Damage one line of YAML text; returns (text, the key on that line)."""
    lines = text.splitlines()
    keyed = [j for j, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]
    i = rng.choice(keyed)
    key = lines[i].split(":")[0].strip(" -")
    kind = rng.choice(["dup", "indent", "colon", "bracket", "tab"])
    if kind == "dup":  # the same key twice
        lines.insert(i + 1, lines[i])
    elif kind == "indent":
        lines[i] = "   " + lines[i] + ":"
    elif kind == "colon":
        lines[i] = lines[i] + ": : x"
    elif kind == "bracket":
        lines[i] = lines[i] + " ["
    else:
        lines[i] = "\t" + lines[i]
    return "\n".join(lines) + "\n", key


def _mutate(rng: random.Random, raw: dict) -> tuple[dict, str]:
    """One mutation of a config mapping; returns (new mapping, the field it touched)."""
    raw = dict(raw)
    kind = rng.choice(["value", "value", "value", "unknown", "drop", "nested"])
    if kind == "unknown":
        name = rng.choice(["learnin_rate", "num_env", "gama", "hidden"])
        raw[name] = 1
        return raw, name
    if kind == "drop" and raw:
        name = rng.choice(sorted(raw))
        del raw[name]
        return raw, ""  # a missing field takes its default: must still validate or name one
    if kind == "nested" and isinstance(raw.get("curriculum"), dict):
        stages = [dict(s) for s in raw["curriculum"]["stages"]]
        s = rng.randrange(len(stages))
        key = rng.choice(sorted(stages[s]) + ["success_rate", "min_episodes", "bogus"])
        stages[s][key] = rng.choice(BAD_VALUES)
        raw["curriculum"] = {**raw["curriculum"], "stages": stages}
        return raw, key
    name = rng.choice(FIELDS)
    raw[name] = rng.choice(BAD_VALUES)
    return raw, name


def _check_accepted(path: str, traced: list) -> None:
    run_cfg, algo_cfg = resolve_config(config_file=path)
    try:
        est = resources.estimate(algo_cfg, run_cfg.num_seeds, run_cfg.eval_episodes)
        resources.check(est, MEMORY)
    except ConfigError:
        return  # refused for its size, naming the field: fine
    if len(traced) < TRACED:
        traced.append(path)
        _, make_learner = algos.ALGOS[run_cfg.algo]
        learner = make_learner(algo_cfg)
        state = jax.eval_shape(learner.init, jax.random.key(0), learner.hparams)
        jax.eval_shape(learner.update, state, learner.hparams)


@pytest.mark.parametrize("seed", range(4))
def test_damaged_configs_are_refused_naming_the_field_or_run(tmp_path, seed):
    rng = random.Random(seed)
    refused = accepted = 0
    traced: list[str] = []
    for case in range(50):
        src = rng.choice(CONFIGS)
        with open(src) as f:
            text = f.read()
        path = str(tmp_path / f"case{case}.yaml")
        if rng.random() < 0.2:  # broken YAML names the file; YAML that still parses, the key
            damaged, key = _damage_text(rng, text)
            field = path
        else:
            mutated, field = _mutate(rng, yaml.safe_load(text))
            damaged = yaml.safe_dump(mutated, sort_keys=False)
        with open(path, "w") as f:
            f.write(damaged)
        try:
            _check_accepted(path, traced)
            accepted += 1
        except ValueError as e:  # ConfigError or a ValueError the scripts also report
            refused += 1
            named = field in str(e) or (field == path and key in str(e))
            assert named, f"{os.path.basename(src)}: {field!r} not named in: {e}"
    assert refused > 0 and accepted + refused == 50


@pytest.mark.parametrize("seed", range(2))
def test_damaged_sweep_specs_are_refused_naming_the_key(tmp_path, seed):
    rng = random.Random(100 + seed)
    for _ in range(40):
        src = rng.choice(SPECS)
        with open(src) as f:
            raw = yaml.safe_load(f)
        raw["base"] = os.path.join(os.path.dirname(src), raw["base"]) if "base" in raw else None
        if raw["base"] is None:
            del raw["base"]
        kind = rng.choice(["top", "space", "config"])
        if kind == "top":
            key = rng.choice(
                ["num_trials", "batch_size", "seeds_per_trial", "sampler", "pruner", "name"]
                + ["storage", "seed", "num_chunks", "direction", "bogus"]
            )
            raw[key] = rng.choice(BAD_VALUES)
        elif kind == "space":
            name = rng.choice(sorted(raw["space"]))
            key = rng.choice(["low", "high", "log", "step", "choices"])
            raw["space"] = {
                **raw["space"],
                name: {**raw["space"][name], key: rng.choice(BAD_VALUES)},
            }
            key = name
        else:
            raw["config"], key = _mutate(rng, dict(raw.get("config") or {}))
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            sweep.spec_from_dict(raw, base_dir=ROOT)
        except ValueError as e:
            assert key in str(e), f"{os.path.basename(src)}: {key!r} not named in: {e}"
        finally:
            os.chdir(cwd)
        assert os.listdir(tmp_path) == []  # validation writes nothing
