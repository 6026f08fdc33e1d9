"""Config helpers: validation with clear messages, and building frozen dataclasses from dicts.

Every config in jaxlearn is a frozen dataclass validated once, at construction, before
anything is compiled. Errors are `ValueError`s that name the class, the field, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def fail(cls_name: str, field: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ValueError(f"{cls_name}.{field}={value!r} is invalid: {allowed}")


def check_positive_int(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            fail(type(obj).__name__, f, v, "must be a positive integer")


def check_nonnegative_int(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            fail(type(obj).__name__, f, v, "must be an integer >= 0")


def check_range(
    obj: Any,
    field: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Check `low <(=) value <(=) high` for a real-valued field."""
    v = getattr(obj, field)
    name = type(obj).__name__
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        fail(name, field, v, "must be a real number")
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (lo_ok and hi_ok):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        fail(name, field, v, f"must be in {interval}")


def check_choice(obj: Any, field: str, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    v = getattr(obj, field)
    if v not in allowed:
        fail(type(obj).__name__, field, v, f"must be one of {allowed}")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML/CLI value to the annotated field type (int, float, bool, str, tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if len(args) < len(typing.get_args(tp)):
                return None
        last_error: Exception | None = None
        for a in args:
            try:
                return _coerce(value, a, where)
            except (TypeError, ValueError) as e:
                last_error = e
        raise ValueError(f"{where}: cannot read {value!r} as {tp}") from last_error
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, where) for v in value)
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {value!r} is not a mapping (use {{key: value, ...}})")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{where}: {value!r} is not a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: {value!r} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ValueError(f"{where}: {value!r} is not an integer")
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {value!r} is not a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: {value!r} is not a string")
        return value
    return value


def from_dict(cls: type[T], values: Mapping[str, Any], *, base: T | None = None) -> T:
    """Build `cls` from a mapping, coercing values by field type; unknown keys are errors.

    Args:
        cls: a dataclass type.
        values: field -> value (strings from the command line are parsed by field type).
        base: an instance whose values are used for fields missing from `values`.
    """
    names = field_names(cls)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown field(s) {unknown}; allowed fields: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in values.items():
        kwargs[k] = _coerce(v, hints[k], f"{cls.__name__}.{k}")
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def hparams_from(cfg: Any, cls: type[T], **given: Any) -> T:
    """Build a hyperparameter pytree `cls`: fields in `given` as given, the others from the
    same-named fields of `cfg` (float32 [])."""
    import jax.numpy as jnp

    values = {
        f.name: given[f.name] if f.name in given else jnp.float32(getattr(cfg, f.name))
        for f in dataclasses.fields(cls)
    }
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples become lists, for YAML)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated `--set field=value` strings into a dict (values stay strings)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is invalid: expected field=value")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ValueError(f"--set {item!r} is invalid: empty field name")
        out[k] = v.strip()
    return out
