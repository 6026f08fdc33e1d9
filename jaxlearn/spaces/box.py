"""`Box(low, high, shape)`: arrays bounded elementwise, possibly unbounded on either side."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.spaces.base import (
    Space,
    _canonical_dtype,
    _first_bad,
    _fmt,
    _fmt_bound,
    _host_array,
    _index_str,
    _integral,
    _is_bool,
    _is_float,
    _is_int,
    _readonly,
    _shape_ok,
)


def _raw_bound(name: str, value: Any) -> np.ndarray:
    raw = np.asarray(value)
    if not (_is_float(raw.dtype) or _is_int(raw.dtype) or _is_bool(raw.dtype)):
        raise ValueError(f"Box.{name} has dtype {raw.dtype}: must be numeric")
    if _is_float(raw.dtype) and np.isnan(raw).any():
        index, _ = _first_bad(~np.isnan(raw))
        raise ValueError(f"Box.{name}{_index_str(index)}=nan is invalid: bounds must not be NaN")
    return raw


@dataclasses.dataclass(frozen=True, eq=False)
class Box(Space):
    """Arrays of ``shape`` bounded elementwise: ``low <= x <= high``.

    Args:
        low: lower bound, scalar or array broadcastable to ``shape``; ``-inf`` means unbounded.
        high: upper bound, likewise; ``+inf`` means unbounded.
        shape: shape of one element; inferred by broadcasting ``low`` and ``high`` when omitted.
        dtype: float, integer or bool dtype (canonicalised: float64 becomes float32 without x64).

    After construction ``low`` and ``high`` are read-only numpy arrays of ``shape`` and ``dtype``.
    """

    low: Any
    high: Any
    shape: Any = None
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        dtype = _canonical_dtype(self.dtype, "Box")
        if not (_is_float(dtype) or _is_int(dtype) or _is_bool(dtype)):
            raise ValueError(f"Box.dtype={dtype} is invalid: must be a float, int or bool dtype")
        low, high = _raw_bound("low", self.low), _raw_bound("high", self.high)
        shape = self._resolve_shape(low, high)
        low, high = np.broadcast_to(low, shape), np.broadcast_to(high, shape)
        if np.any(low > high):
            index, count = _first_bad(~(low > high))
            raise ValueError(
                f"Box.low > Box.high at index {index} ({count} element(s)): "
                f"low={_fmt(low[index])}, high={_fmt(high[index])}; must have low <= high"
            )
        for name, bound, empty in (("low", low, np.inf), ("high", high, -np.inf)):
            if np.any(bound == empty):
                index, _ = _first_bad(bound != empty)
                raise ValueError(
                    f"Box.{name}{_index_str(index)}={_fmt(empty)} is invalid: the interval "
                    "would be empty; use -inf for low and +inf for high to leave a side unbounded"
                )
        if not _is_float(dtype):
            low, high = self._integer_bounds(low, high, dtype)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "low", _readonly(low.astype(dtype)))
        object.__setattr__(self, "high", _readonly(high.astype(dtype)))

    def _resolve_shape(self, low: np.ndarray, high: np.ndarray) -> tuple[int, ...]:
        if self.shape is None:
            try:
                return tuple(np.broadcast_shapes(low.shape, high.shape))
            except ValueError as err:
                raise ValueError(
                    f"Box.low shape {low.shape} and Box.high shape {high.shape} do not broadcast; "
                    "pass matching bounds or an explicit shape"
                ) from err
        raw = self.shape
        shape = (raw,) if isinstance(raw, int | np.integer) else raw
        try:
            shape = tuple(shape)
            ok = all(isinstance(d, int | np.integer) and not isinstance(d, bool) for d in shape)
        except TypeError:
            ok = False
        if not ok or any(d < 0 for d in shape):
            raise ValueError(
                f"Box.shape={raw!r} is invalid: must be a tuple of non-negative integers"
            )
        shape = tuple(int(d) for d in shape)
        for name, bound in (("low", low), ("high", high)):
            try:
                np.broadcast_to(bound, shape)
            except ValueError as err:
                raise ValueError(
                    f"Box.{name} shape {bound.shape} cannot be broadcast to Box.shape {shape}"
                ) from err
        return shape

    @staticmethod
    def _integer_bounds(
        low: np.ndarray, high: np.ndarray, dtype: np.dtype
    ) -> tuple[np.ndarray, np.ndarray]:
        info = (0, 1) if _is_bool(dtype) else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        for name, bound in (("low", low), ("high", high)):
            as_float = bound.astype(np.float64)
            ok = np.isfinite(as_float) & (as_float == np.floor(as_float))
            ok &= (as_float >= info[0]) & (as_float <= info[1])
            if not ok.all():
                index, _ = _first_bad(ok)
                raise ValueError(
                    f"Box.{name}{_index_str(index)}={_fmt(bound[index])} is invalid for dtype "
                    f"{dtype}: must be an integer in [{info[0]}, {info[1]}]"
                )
        return low, high

    # Equality and hashing by value, so equal boxes hit the same jit cache entry as static args.
    def _key(self) -> tuple:
        return (self.shape, self.dtype, self.low.tobytes(), self.high.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Box(low={_fmt_bound(self.low)}, high={_fmt_bound(self.high)}, "
            f"shape={self.shape}, dtype={self.dtype.name})"
        )

    @property
    def bounded_below(self) -> np.ndarray:
        """``[*shape]`` bool: where ``low`` is finite."""
        return np.isfinite(self.low) if _is_float(self.dtype) else np.ones(self.shape, bool)

    @property
    def bounded_above(self) -> np.ndarray:
        """``[*shape]`` bool: where ``high`` is finite."""
        return np.isfinite(self.high) if _is_float(self.dtype) else np.ones(self.shape, bool)

    @property
    def is_bounded(self) -> bool:
        """Whether every bound is finite (required by ``normalize``/``denormalize``)."""
        return bool(self.bounded_below.all() and self.bounded_above.all())

    def sample(self, key: jax.Array) -> jax.Array:
        """Random element of ``[*shape]`` and ``dtype``, following the gym convention.

        Uniform on ``[low, high]`` where both bounds are finite, standard normal where unbounded,
        ``low + Exp(1)`` / ``high - Exp(1)`` where bounded below / above only. Integer and bool
        boxes are uniform over the integers in ``[low, high]``.
        """
        if not _is_float(self.dtype):
            return self._sample_int(key)
        below, above = self.bounded_below, self.bounded_above
        bounded = bool((below & above).all())
        k_uni, k_norm, k_exp = (key, None, None) if bounded else jax.random.split(key, 3)
        # Replace infinite bounds with 0 so unused branches never make inf - inf = nan.
        low = np.where(below, self.low, 0).astype(self.dtype)
        high = np.where(above, self.high, 0).astype(self.dtype)
        u = jax.random.uniform(k_uni, self.shape, self.dtype)
        # Lerp form: high - low may overflow for bounds near the dtype's limits.
        out = low * (1 - u) + high * u
        if not bounded:
            normal = jax.random.normal(k_norm, self.shape, self.dtype)
            expo = jax.random.exponential(k_exp, self.shape, self.dtype)
            out = jnp.where(below & above, out, normal)
            out = jnp.where(below & ~above, low + expo, out)
            out = jnp.where(~below & above, high - expo, out)
        # Rounding can step one ulp past a bound.
        return jnp.clip(out, self.low, self.high).astype(self.dtype)

    def _sample_int(self, key: jax.Array) -> jax.Array:
        # Narrow dtypes (bool, int8, uint8, ...) sample in int32 so that maxval = high + 1 fits.
        wide = np.dtype(np.int32)
        narrow = _is_bool(self.dtype) or (
            np.iinfo(self.dtype).min >= np.iinfo(wide).min
            and np.iinfo(self.dtype).max < np.iinfo(wide).max
        )
        dtype = wide if narrow else self.dtype
        # maxval is exclusive; only at a 32/64-bit dtype's maximum is the top value left out.
        high, top = self.high.astype(dtype), np.iinfo(dtype).max
        with np.errstate(over="ignore"):
            maxval = np.where(high < top, high + np.ones((), dtype), top).astype(dtype)
        low = self.low.astype(dtype)
        return jax.random.randint(key, self.shape, low, maxval, dtype=dtype).astype(self.dtype)

    def contains(self, x: Any) -> jax.Array:
        """True iff ``x.shape == shape`` and ``low <= x <= high`` everywhere. Returns ``[]`` bool.

        For integer and bool boxes the values must also be integral. NaN is never contained.
        """
        x = jnp.asarray(x)
        if not _shape_ok(x, self.shape):
            return jnp.asarray(False)
        if not (_is_float(x.dtype) or _is_int(x.dtype) or _is_bool(x.dtype)):
            return jnp.asarray(False)
        ok = (x >= self.low) & (x <= self.high)
        if not _is_float(self.dtype):
            ok = ok & _integral(x)
        return jnp.all(ok)

    def clip(self, x: Any) -> jax.Array:
        """Clip to ``[low, high]`` (rounding first for integer boxes). Returns ``[*shape]``."""
        x = jnp.asarray(x)
        if not _is_float(self.dtype) and _is_float(x.dtype):
            x = jnp.round(x)
        return jnp.clip(x, self.low, self.high).astype(self.dtype)

    def _float_dtype(self) -> Any:
        return self.dtype if _is_float(self.dtype) else jnp.result_type(float)

    def _require_bounded(self, method: str) -> None:
        for name, bounded in (("low", self.bounded_below), ("high", self.bounded_above)):
            if not bounded.all():
                index, _ = _first_bad(bounded)
                value = getattr(self, name)[index]
                raise ValueError(
                    f"Box.{method} needs finite bounds, but Box.{name}{_index_str(index)}="
                    f"{_fmt(value)}; allowed: finite low and high (use a bounded Box)"
                )

    def normalize(self, x: Any) -> jax.Array:
        """Affine map of ``[low, high]`` onto ``[-1, 1]``; ``low -> -1`` and ``high -> 1`` exactly.

        Degenerate dimensions (``low == high``) map to 0. Raises ``ValueError`` (at trace time) if
        any bound is infinite. Returns ``[*shape]`` float (``dtype`` for float boxes).
        """
        self._require_bounded("normalize")
        ft = self._float_dtype()
        low, high = self.low.astype(ft), self.high.astype(ft)
        span = high - low
        degenerate = span == 0
        safe_span = np.where(degenerate, 1, span).astype(ft)
        x = jnp.asarray(x).astype(ft)
        y = (x - low) / safe_span * 2 - 1
        return jnp.where(degenerate, jnp.zeros((), ft), y)

    def denormalize(self, y: Any) -> jax.Array:
        """Inverse of ``normalize``: ``-1 -> low`` and ``1 -> high`` exactly; degenerate -> low.

        Not clipped: values outside ``[-1, 1]`` extrapolate. Returns ``[*shape]`` float.
        """
        self._require_bounded("denormalize")
        ft = self._float_dtype()
        low, high = self.low.astype(ft), self.high.astype(ft)
        t = (jnp.asarray(y).astype(ft) + 1) / 2
        # Lerp form hits both end points exactly, unlike low + t * (high - low).
        x = low * (1 - t) + high * t
        return jnp.where(low == high, low, x)

    def _validate(self, x: Any, path: str) -> None:
        arr = _host_array(x, path)
        if arr.shape != self.shape:
            raise ValueError(f"{path} must have shape {self.shape} for {self!r}, got {arr.shape}")
        if arr.size == 0:
            return
        bounds = f"allowed [{_fmt_bound(self.low)}, {_fmt_bound(self.high)}]"
        if not _is_float(self.dtype):
            integral = ~np.isnan(arr) & (arr == np.round(arr)) if _is_float(arr.dtype) else None
            if integral is not None and not integral.all():
                index, count = _first_bad(integral)
                raise ValueError(
                    f"{path}{_index_str(index)}={_fmt(arr[index])} is not an integer "
                    f"({count} element(s)); {self.dtype} Box {bounds}"
                )
        ok = (arr >= self.low) & (arr <= self.high)
        if not ok.all():
            index, count = _first_bad(ok)
            raise ValueError(
                f"{path}{_index_str(index)}={_fmt(arr[index])} is out of bounds "
                f"({count} element(s)): allowed [low={_fmt(self.low[index])}, "
                f"high={_fmt(self.high[index])}]"
            )
