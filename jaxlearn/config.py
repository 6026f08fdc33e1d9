"""Config helpers: validation with clear messages, and building frozen dataclasses from dicts.

Every config in jaxlearn is a frozen dataclass validated once, at construction, before
anything is compiled. Errors are `ConfigError`s (a `ValueError`) that name the class, the
field, the value and what is allowed. Real numbers must be finite and fit in float32 (they
become float32 device arrays), unless a field documents infinity as meaningful.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import yaml

T = TypeVar("T")

FLOAT32_MAX = float(np.finfo(np.float32).max)  # ~3.4e38: larger values become inf on device


class ConfigError(ValueError):
    """A user's input is invalid: scripts print `error: <message>` and exit 2."""


def fail(cls_name: str, field: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{cls_name}.{field}={value!r} is invalid: {allowed}")


def is_real(value: Any) -> bool:
    """An int or float (not a bool)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def check_float32(owner: str, field: str, value: Any, *, allow_inf: bool = False) -> float:
    """`value` as a float, if it is a real number that float32 holds: not NaN, |value| <=
    FLOAT32_MAX (a larger finite number would become inf on the device), and finite unless
    `allow_inf`. Raises `ConfigError` naming `owner.field` otherwise."""
    if not is_real(value):
        fail(owner, field, value, "must be a real number")
    v = float(value)
    if v != v:
        fail(owner, field, value, "must be a real number, not NaN")
    if abs(v) > FLOAT32_MAX and not (allow_inf and abs(v) == float("inf")):
        kind = "a number" if allow_inf else "a finite number"
        fail(owner, field, value, f"must be {kind} within float32 range (|x| <= 3.4e38)")
    return v


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps
    the last one silently), and so is a key that is not a string (every key jaxlearn reads
    is a name: a field, a component, an env parameter)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "a collection"
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {shown} is not a name: every key must be a string (quote it)",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str, what: str = "--config") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is `{}`).

    Raises `ConfigError` naming `what`, the file and, for syntax errors and duplicate keys,
    the line and column.
    """
    try:
        with open(path) as f:
            loaded = yaml.load(f, Loader=_StrictLoader)
    except OSError as e:
        raise ConfigError(f"{what} {path!r}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {path!r}: not a UTF-8 text file (byte {e.start}); give a YAML file"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{what} {where}: invalid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path!r}: expected a mapping of field: value at the top")
    return loaded


INT32_MAX = 2**31 - 1  # integer fields become int32 device values
MAX_ENV_STEPS = 2**30  # per seed: step counters (int32) then never pass 2**31
MAX_SEED = 2**63 - 1  # the largest seed jax.random.key takes (a signed 64-bit integer)


def check_positive_int(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= INT32_MAX:
            fail(type(obj).__name__, f, v, f"must be a positive integer, at most {INT32_MAX}")


def check_nonnegative_int(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= INT32_MAX:
            fail(type(obj).__name__, f, v, f"must be an integer >= 0, at most {INT32_MAX}")


def check_total_timesteps(obj: Any) -> None:
    """`total_timesteps` (env steps per seed) small enough for int32 step counters."""
    v = obj.total_timesteps
    if isinstance(v, int) and v > MAX_ENV_STEPS:
        fail(
            type(obj).__name__,
            "total_timesteps",
            v,
            f"must be <= {MAX_ENV_STEPS} (2**30) env steps per seed: step counters on the "
            "device are int32; for more, train in several runs with --init-from",
        )


def check_range(
    obj: Any,
    field: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> None:
    """Check `low <(=) value <(=) high` for a real-valued field that float32 holds; infinity
    only where `allow_inf` (a field whose docs give inf a meaning, e.g. no clipping)."""
    v = getattr(obj, field)
    lo = "-inf" if low is None else str(low)
    hi = "inf" if high is None else str(high)
    left = "(" if low_open or (low is None and not allow_inf) else "["
    right = ")" if high_open or (high is None and not allow_inf) else "]"
    kind = "a number" if allow_inf else "a finite number"
    allowed = f"must be {kind} in {left}{lo}, {hi}{right}"
    try:
        v = check_float32(type(obj).__name__, field, v, allow_inf=allow_inf)
    except ConfigError:
        fail(type(obj).__name__, field, getattr(obj, field), f"{allowed} (float32)")
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (lo_ok and hi_ok):
        fail(type(obj).__name__, field, getattr(obj, field), allowed)


def check_choice(obj: Any, field: str, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    v = getattr(obj, field)
    if v not in allowed:
        fail(type(obj).__name__, field, v, f"must be one of {allowed}")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _parse_inline(text: str, where: str) -> Any:
    """A YAML flow value given on the command line (`[64, 64]`, `{collision: -1}`)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: cannot parse {text!r}: {problem}") from None


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
        raise ConfigError(f"{where}: cannot read {value!r} as {tp}") from last_error
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = _parse_inline(value if value.strip().startswith("[") else f"[{value}]", where)
        if not isinstance(value, (list, tuple)):  # e.g. `hidden_sizes: 64` in YAML
            raise ConfigError(f"{where}: {value!r} is not a list (write [{value}] for one item)")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, where) for v in value)
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = _parse_inline(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {value!r} is not a mapping (use {{key: value, ...}})")
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
        raise ConfigError(f"{where}: {value!r} is not a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            try:  # digits exactly (a float holds integers exactly only up to 2**53)
                return int(text)
            except ValueError:
                pass
            try:  # then 1e6, 2.5e5
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{where}: {value!r} is not an integer")
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} is not a string")
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
        raise ConfigError(
            f"{cls.__name__}: unknown field(s) {unknown}; allowed fields: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in values.items():
        kwargs[k] = _coerce(v, hints[k], f"{cls.__name__}.{k}")
    cfg = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    if hasattr(cfg, "check_env"):  # checks that build the env: once, here at the edge
        cfg.check_env()
    return cfg


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


DOTTED_FIELDS = ("reward_weights", "env_kwargs", "env_params")  # `field.key` sets one key


def merge_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """`reward_weights.collision: -2` (a YAML key or `--set reward_weights.collision=-2`) ->
    that one key of the `reward_weights` mapping, the mapping's other keys kept; the same
    for `env_kwargs.<name>` and `env_params.<name>`. Sweeps name reward weights this way."""
    out = {k: v for k, v in values.items() if "." not in k}
    for key, value in values.items():
        if "." not in key:
            continue
        head, sub = key.split(".", 1)
        if head not in DOTTED_FIELDS or not sub:
            raise ConfigError(
                f"{key}={value!r} is invalid: a dotted name sets one key of "
                f"{', '.join(f'{f}.<name>' for f in DOTTED_FIELDS)}"
            )
        base = out.get(head) or {}
        if isinstance(base, str):
            base = _parse_inline(base, head)
        if not isinstance(base, Mapping):
            raise ConfigError(f"{head}: {base!r} is not a mapping (use {{key: value, ...}})")
        parsed = _parse_inline(value, key) if isinstance(value, str) else value
        out[head] = {**base, sub: parsed}
    return out


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated `--set field=value` strings into a dict (values stay strings)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is invalid: expected field=value")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ConfigError(f"--set {item!r} is invalid: empty field name")
        if k in out:  # as a YAML key given twice: which one was meant?
            raise ConfigError(
                f"--set {k} is given twice ({out[k]!r}, then {v.strip()!r}): give it once"
            )
        out[k] = v.strip()
    return out
