"""`Discrete(n)`: the integers `{0, ..., n-1}`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.spaces.base import (
    Space,
    _canonical_dtype,
    _host_array,
    _integral,
    _is_bool,
    _is_float,
    _is_int,
    _shape_ok,
)


@dataclasses.dataclass(frozen=True)
class Discrete(Space):
    """Integers ``{0, ..., n-1}``; one element has shape ``()``.

    Args:
        n: number of values, a positive integer.
        dtype: integer dtype of samples (canonicalised: int64 becomes int32 without x64).
    """

    n: int
    dtype: Any = jnp.int32
    shape: tuple[int, ...] = dataclasses.field(default=(), init=False)

    def __post_init__(self) -> None:
        n = self.n
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"Discrete.n={n!r} is invalid: must be a positive integer")
        dtype = _canonical_dtype(self.dtype, "Discrete")
        if not _is_int(dtype):
            raise ValueError(f"Discrete.dtype={dtype} is invalid: must be an integer dtype")
        if n - 1 > np.iinfo(dtype).max:
            raise ValueError(
                f"Discrete.n={n} is invalid for dtype {dtype}: must be <= {np.iinfo(dtype).max + 1}"
            )
        object.__setattr__(self, "n", int(n))
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self) -> str:
        return f"Discrete({self.n}, dtype={self.dtype.name})"

    def sample(self, key: jax.Array) -> jax.Array:
        """Uniform over ``{0, ..., n-1}``. Returns: ``[]`` of ``dtype``."""
        return jax.random.randint(key, (), 0, self.n, dtype=self.dtype)

    def contains(self, x: Any) -> jax.Array:
        """True iff ``x`` has shape ``()``, an integral value and ``0 <= x < n``. Returns ``[]``."""
        x = jnp.asarray(x)
        if not _shape_ok(x, ()) or not (_is_int(x.dtype) or _is_float(x.dtype)):
            return jnp.asarray(False)
        return _integral(x) & (x >= 0) & (x < self.n)

    def clip(self, x: Any) -> jax.Array:
        """Round to the nearest integer and clip to ``[0, n-1]``. Returns: ``[]`` of ``dtype``."""
        x = jnp.asarray(x)
        if _is_float(x.dtype):
            x = jnp.round(x)
        return jnp.clip(x, 0, self.n - 1).astype(self.dtype)

    def normalize(self, x: Any) -> jax.Array:
        """Identity: a discrete action is an index, not a magnitude (one-hot it yourself)."""
        return jnp.asarray(x)

    def denormalize(self, y: Any) -> jax.Array:
        """Identity, the inverse of ``normalize``."""
        return jnp.asarray(y)

    def _validate(self, x: Any, path: str) -> None:
        arr = _host_array(x, path)
        if arr.shape != ():
            raise ValueError(f"{path} must have shape () for Discrete({self.n}), got {arr.shape}")
        value = arr.item()
        allowed = f"allowed integers 0..{self.n - 1} (Discrete(n={self.n}))"
        integral = not _is_bool(arr.dtype) and math.isfinite(value) and value == math.floor(value)
        if not integral:
            raise ValueError(f"{path}={value!r} is not an integer; {allowed}")
        if not 0 <= value < self.n:
            raise ValueError(f"{path}={value!r} is out of range; {allowed}")
