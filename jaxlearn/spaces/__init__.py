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

from jaxlearn.spaces.base import Space
from jaxlearn.spaces.box import Box
from jaxlearn.spaces.convert import flat_dim, from_gymnax, leaves
from jaxlearn.spaces.discrete import Discrete
from jaxlearn.spaces.hybrid import Dict, Hybrid

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
