"""Action and observation spaces whose methods are jit- and vmap-safe.

A space is a static, immutable Python object (a frozen dataclass, never a pytree): close over it
in a jitted function or pass it as a static argument. Its methods take and return jax arrays:

- ``sample(key)``: a random element, ``[*shape]``.
- ``contains(x)``: ``[]`` bool array; False (never an exception) for a wrong shape or value.
- ``validate(x)``: host-side check, not for jit; raises ``ValueError`` naming the offending
  component, its value and the allowed range, and returns ``x`` when it is valid.
- ``clip(x)``, ``normalize(x)``, ``denormalize(x)``: elementwise maps, ``[*shape] -> [*shape]``.

``Discrete(n)`` holds integers ``{0, ..., n-1}``, ``Box(low, high, shape)`` holds arrays bounded
elementwise, and ``Hybrid({"name": space, ...})`` (alias ``Dict``) holds dicts of named sub-actions.
``from_gymnax`` converts gymnax spaces; ``flat_dim`` counts the scalars of a flattened element.

Every method works on a single element; for a batch ``[B, *shape]`` use ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Space",
    "Discrete",
    "Box",
    "Hybrid",
    "Dict",
    "from_gymnax",
    "flat_dim",
    "leaves",
]


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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Discrete
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Box
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Hybrid
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Conversion and sizes
# --------------------------------------------------------------------------------------------


def _gymnax_shape(shape: Any) -> tuple[int, ...] | None:
    if shape is None:
        return None
    if isinstance(shape, int | np.integer):
        return (int(shape),)
    arr = np.asarray(shape)
    if arr.ndim != 1 or not (_is_int(arr.dtype) or arr.size == 0):
        raise ValueError(f"gymnax Box.shape={shape!r} is invalid: must be a tuple of integers")
    return tuple(int(d) for d in arr)


def from_gymnax(space: Any) -> Space:
    """Convert a gymnax space into a ``jaxlearn`` space; our own spaces pass through unchanged.

    ``Discrete -> Discrete``, ``Box -> Box``, ``Dict -> Hybrid`` (same keys), ``Tuple -> Hybrid``
    with keys ``"0", "1", ...``. Raises ``TypeError`` for anything else.
    """
    if isinstance(space, Space):
        return space
    from gymnax.environments import spaces as gs

    if isinstance(space, gs.Discrete):
        return Discrete(int(space.n), dtype=getattr(space, "dtype", jnp.int32))
    if isinstance(space, gs.Box):
        return Box(
            np.asarray(space.low),
            np.asarray(space.high),
            shape=_gymnax_shape(space.shape),
            dtype=space.dtype,
        )
    if isinstance(space, gs.Dict):
        return Hybrid({str(k): from_gymnax(v) for k, v in space.spaces.items()})
    if isinstance(space, gs.Tuple):
        return Hybrid({str(i): from_gymnax(v) for i, v in enumerate(space.spaces)})
    raise TypeError(
        f"from_gymnax cannot convert {type(space).__module__}.{type(space).__qualname__}: "
        "expected a gymnax Discrete, Box, Dict or Tuple space, or a jaxlearn Space"
    )


def flat_dim(space: Any) -> int:
    """Number of scalars in one flattened element, e.g. for sizing a network's output layer.

    ``Discrete`` counts 1, ``Box`` ``prod(shape)``, ``Hybrid`` the sum over its sub-spaces.
    Gymnax spaces are converted with ``from_gymnax`` first.
    """
    space = from_gymnax(space)
    if isinstance(space, Discrete):
        return 1
    if isinstance(space, Box):
        return math.prod(space.shape)
    if isinstance(space, Hybrid):
        return sum(flat_dim(s) for s in space.spaces.values())
    raise TypeError(f"flat_dim does not know {type(space).__name__}")


def leaves(space: Any) -> list[tuple[tuple[str, ...], Space]]:
    """The non-Hybrid sub-spaces of ``space`` with their key paths, in insertion order.

    ``leaves(Hybrid({"a": Box(...), "b": Hybrid({"c": Discrete(2)})}))`` is
    ``[(("a",), Box(...)), (("b", "c"), Discrete(2))]``; a non-Hybrid space gives ``[((), space)]``.
    """
    space = from_gymnax(space)
    if not isinstance(space, Hybrid):
        return [((), space)]
    out = []
    for key, sub in space.spaces.items():
        out.extend(((key, *path), leaf) for path, leaf in leaves(sub))
    return out
