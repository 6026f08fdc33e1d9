"""`Hybrid({"name": space, ...})` (alias `Dict`): dicts of named sub-actions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxlearn.spaces.base import Space


@dataclasses.dataclass(frozen=True, eq=False)
class Hybrid(Space):
    """A composite of named sub-spaces; an element is a dict with the same keys.

    Example: ``Hybrid({"move": Box(-1, 1, (2,)), "choice": Discrete(3)})`` has elements like
    ``{"move": [2] float32, "choice": [] int32}``. Sub-spaces may be ``Hybrid`` themselves.

    Args:
        spaces: mapping from string keys to spaces, non-empty; insertion order is kept and is
            the order of ``sample``'s key split and of the output dicts.
    """

    spaces: Mapping[str, Space]
    shape: tuple[int, ...] = dataclasses.field(default=(), init=False)
    dtype: Any = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spaces, Mapping):
            raise ValueError(
                f"Hybrid.spaces must be a mapping of str to Space, got {type(self.spaces).__name__}"
            )
        if len(self.spaces) == 0:
            raise ValueError("Hybrid.spaces={} is invalid: must hold at least one sub-space")
        for key, space in self.spaces.items():
            if not isinstance(key, str):
                raise ValueError(f"Hybrid.spaces key {key!r} is invalid: keys must be str")
            if not isinstance(space, Space):
                raise ValueError(
                    f"Hybrid.spaces[{key!r}] is a {type(space).__name__}: must be a Space "
                    "(convert gymnax spaces with from_gymnax)"
                )
        object.__setattr__(self, "spaces", dict(self.spaces))

    def _key(self) -> tuple:
        return tuple(self.spaces.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hybrid) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self.spaces.items())
        return f"Hybrid({{{inner}}})"

    def _check_keys(self, x: Any, method: str) -> None:
        if not isinstance(x, Mapping):
            raise ValueError(
                f"Hybrid.{method} needs a mapping with keys {list(self.spaces)}, "
                f"got {type(x).__name__}"
            )
        missing = [k for k in self.spaces if k not in x]
        extra = [k for k in x if k not in self.spaces]
        if missing or extra:
            raise ValueError(
                f"Hybrid.{method}: keys do not match; missing {missing}, unexpected {extra}; "
                f"allowed keys {list(self.spaces)}"
            )

    def sample(self, key: jax.Array) -> dict[str, Any]:
        """Sample each sub-space with its own split of ``key``. Returns: dict of sub-samples."""
        keys = jax.random.split(key, len(self.spaces))
        return {name: space.sample(keys[i]) for i, (name, space) in enumerate(self.spaces.items())}

    def contains(self, x: Any) -> jax.Array:
        """AND over sub-spaces; False if ``x`` is not a mapping with exactly our keys."""
        if not isinstance(x, Mapping) or set(x) != set(self.spaces):
            return jnp.asarray(False)
        ok = jnp.asarray(True)
        for name, space in self.spaces.items():
            ok = ok & space.contains(x[name])
        return ok

    def _map(self, method: str, x: Any) -> dict[str, Any]:
        self._check_keys(x, method)
        out = {}
        for name, space in self.spaces.items():
            try:
                out[name] = getattr(space, method)(x[name])
            except ValueError as err:
                raise ValueError(f"Hybrid[{name!r}]: {err}") from err
        return out

    def clip(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """Clip each sub-action with its sub-space. Returns: dict of the same keys."""
        return self._map("clip", x)

    def normalize(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """Normalize each sub-action with its sub-space. Returns: dict of the same keys."""
        return self._map("normalize", x)

    def denormalize(self, y: Mapping[str, Any]) -> dict[str, Any]:
        """Denormalize each sub-action with its sub-space. Returns: dict of the same keys."""
        return self._map("denormalize", y)

    def _validate(self, x: Any, path: str) -> None:
        allowed = f"allowed keys {list(self.spaces)}"
        if not isinstance(x, Mapping):
            kind = type(x).__name__
            raise ValueError(f"{path} must be a mapping for Hybrid, got {kind}; {allowed}")
        for name in self.spaces:
            if name not in x:
                raise ValueError(f"{path} is missing key {name!r}; {allowed}")
        for name in x:
            if name not in self.spaces:
                raise ValueError(f"{path} has unexpected key {name!r}; {allowed}")
        for name, space in self.spaces.items():
            space._validate(x[name], f"{path}[{name!r}]")


Dict = Hybrid
