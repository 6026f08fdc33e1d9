"""The searched space of a sweep: one `Param` per parameter (a float or int range, or a
categorical choice), parsed from the spec's `space` mapping and checked at the edge."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import optuna

from jaxlearn.config import ConfigError, check_float32

MAX_GRID_POINTS = 10_000  # a grid sampler trains every point: more is a typo, not a plan
PARAM_KEYS = {"low", "high", "log", "step", "choices", "type"}


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

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log, step=self.step
        )

    def grid_values(self) -> list[Any]:
        """Every value a grid sampler tries: the choices, or low..high by step."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise bad(
                f"space.{self.name}",
                {"low": self.low, "high": self.high},
                "sampler grid needs choices or a step for every parameter",
            )
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        if count > MAX_GRID_POINTS:
            raise bad(
                f"space.{self.name}.step",
                self.step,
                f"gives {count} grid values (at most {MAX_GRID_POINTS}); use a larger step",
            )
        if self.kind == "int":
            return [int(self.low) + i * int(self.step) for i in range(count)]
        return [round(float(self.low) + i * float(self.step), 12) for i in range(count)]

    def extremes(self) -> list[Any]:
        """Values that must all be valid (checked before anything runs)."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def bad(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"sweep.{field}={value!r} is invalid: {allowed}")


def parse_param(name: str, spec: Any) -> Param:
    """A `space` entry -> `Param`; errors name the parameter and what is allowed."""
    where = f"space.{name}"
    if not isinstance(spec, Mapping):
        raise bad(where, spec, "expected a mapping: {low, high[, log, step, type]} or {choices}")
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        raise bad(where, dict(spec), f"unknown key(s) {unknown}; allowed: {sorted(PARAM_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list | tuple) or not choices:
            raise bad(f"{where}.choices", choices, "must be a non-empty list")
        for c in choices:
            if not (c is None or isinstance(c, bool | int | float | str)):
                raise bad(
                    f"{where}.choices",
                    choices,
                    "choices must be numbers, strings, booleans or null (for an architecture "
                    "use num_layers and units)",
                )
        extra = sorted(set(spec) - {"choices", "type"})
        if extra:
            raise bad(where, dict(spec), f"{extra} do not apply to choices")
        return Param(name, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise bad(where, dict(spec), "a range needs both low and high (or give choices)")
    low, high = spec["low"], spec["high"]
    for k, v in (("low", low), ("high", high)):
        try:
            check_float32("sweep", f"{where}.{k}", v)
        except ConfigError:
            raise bad(f"{where}.{k}", v, "must be a finite number (|x| <= 3.4e38)") from None
    kind = spec.get("type")
    if kind is None:
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    if kind not in ("int", "float"):
        raise bad(f"{where}.type", kind, "must be int or float")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise bad(where, dict(spec), "an int range needs integer low and high")
    if low > high:
        raise bad(where, dict(spec), f"low ({low}) must be <= high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise bad(f"{where}.log", log, "must be true or false")
    if log and low <= 0:
        raise bad(where, dict(spec), f"a log scale needs low > 0 (got low={low})")
    step = spec.get("step")
    if step is not None:
        number = not isinstance(step, bool) and isinstance(step, int | float)
        if not number or not math.isfinite(step) or step <= 0:
            raise bad(f"{where}.step", step, "must be a finite number > 0")
        if kind == "int" and not float(step).is_integer():
            raise bad(f"{where}.step", step, "an int range needs an integer step >= 1")
        if high > low and step > high - low:
            raise bad(
                f"{where}.step",
                step,
                f"must be at most high - low = {high - low} (a larger step leaves {low} as "
                "the only value)",
            )
        if log:
            raise bad(where, dict(spec), "step and log cannot be combined")
    return Param(name, kind, low, high, log, step)


def grid(space: tuple[Param, ...]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every parameter's values."""
    return {p.name: p.grid_values() for p in space}
