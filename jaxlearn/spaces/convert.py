"""gymnax spaces to ours (`from_gymnax`), scalars per element (`flat_dim`), a
`Hybrid`'s leaf spaces (`leaves`)."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlearn.spaces.base import Space, _is_int
from jaxlearn.spaces.box import Box
from jaxlearn.spaces.discrete import Discrete
from jaxlearn.spaces.hybrid import Hybrid


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
