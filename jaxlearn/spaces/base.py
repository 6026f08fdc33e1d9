"""The `Space` base class, and the checks and formatting its subclasses share."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Space:
    """Base class of all spaces: a static description of a set of valid elements.

    Attributes:
        shape: shape of one element (``()`` for ``Discrete`` and ``Hybrid``).
        dtype: dtype of one element (``None`` for ``Hybrid``, whose sub-spaces have their own).
    """

    shape: tuple[int, ...]
    dtype: Any

    def sample(self, key: jax.Array) -> Any:
        """Draw one random element. Args: key: PRNG key. Returns: ``[*shape]`` of ``dtype``."""
        raise NotImplementedError

    def contains(self, x: Any) -> jax.Array:
        """Whether ``x`` has the right shape and every element is valid. Returns: ``[]`` bool."""
        raise NotImplementedError

    def validate(self, x: Any) -> Any:
        """Host-side check, not for jit: return ``x``, or raise ``ValueError`` naming the fault."""
        self._validate(x, "x")
        return x

    def clip(self, x: Any) -> Any:
        """Project ``x`` onto the space elementwise. Returns: ``[*shape]`` of ``dtype``."""
        raise NotImplementedError

    def normalize(self, x: Any) -> Any:
        """Map ``x`` from the space to a canonical range (``[-1, 1]`` for a bounded ``Box``)."""
        raise NotImplementedError

    def denormalize(self, y: Any) -> Any:
        """Inverse of ``normalize``."""
        raise NotImplementedError

    def _validate(self, x: Any, path: str) -> None:
        raise NotImplementedError


# ---- shared by the subclasses: dtype and bound checks, error-message formatting ----------


def _canonical_dtype(dtype: Any, owner: str) -> np.dtype:
    """The dtype jax will actually use (int64 -> int32 without x64), validated."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"{owner}.dtype={dtype!r} is invalid: must be a numeric dtype") from err
    return np.dtype(jax.dtypes.canonicalize_dtype(dt))


def _is_float(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _is_int(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.integer))


def _is_bool(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.bool_))


def _integral(x: jax.Array) -> jax.Array:
    """Elementwise: whether the values of ``x`` are integers (always True for int/bool dtypes)."""
    if _is_float(x.dtype):
        return x == jnp.round(x)
    return jnp.ones(x.shape, dtype=bool)


def _index_str(index: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in index)


def _fmt(value: Any) -> str:
    """Format a scalar compactly and in its own precision (0.1, -inf, 3, True)."""
    return str(np.asarray(value)[()])


def _fmt_bound(bound: np.ndarray) -> str:
    """A bound array as a scalar when it is uniform, else as a short array."""
    if bound.size > 0 and np.all(bound == bound.flat[0]):
        return _fmt(bound.flat[0])
    return np.array2string(bound, threshold=8, separator=", ")


def _first_bad(ok: np.ndarray) -> tuple[tuple[int, ...], int]:
    """Index of the first False element of ``ok`` and the number of False elements."""
    bad = np.argwhere(~ok)
    return tuple(int(i) for i in bad[0]), len(bad)


def _host_array(x: Any, path: str) -> np.ndarray:
    arr = np.asarray(x)  # a ragged nested list raises ValueError itself
    if not (_is_float(arr.dtype) or _is_int(arr.dtype) or _is_bool(arr.dtype)):
        raise ValueError(f"{path} must be numeric, got dtype {arr.dtype}")
    return arr


def _shape_ok(x: jax.Array, shape: tuple[int, ...]) -> bool:
    return tuple(x.shape) == shape


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.flags.writeable = False
    return a
