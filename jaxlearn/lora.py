"""Low-rank adapters (LoRA) on a trained network: freeze the base, train only the adapters.

With `lora_rank > 0` in a PPO or DQN config every Dense layer is a
`jaxlearn.networks.LoRADense` (`y = x W + b + (alpha / rank) (x A) B`, `B` starting at
zero). The helpers here treat the adapter leaves (`lora_a`, `lora_b`) as the trainable
part of an ordinary parameter pytree:

    grads = lora.freeze(grads)                 # zero every non-adapter gradient
    tx = lora.only_adapters(optax.adam(...))   # optimizer state for the adapters only
    trainable, total = lora.count(params)
    lora.save_adapters("adapters", params)     # the adapters alone, with their shapes
    params = lora.load_adapters("adapters", params)
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, traverse_util

from jaxlearn.networks import ADAPTER_NAMES

ADAPTERS_FILE = "adapters.msgpack"
SPEC_FILE = "adapters.json"


def _name(path: tuple) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def path_str(path: tuple) -> str:
    """'params/actor_torso/Dense_0/kernel' for a `jax.tree_util` key path."""
    return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def adapter_mask(params: Any) -> Any:
    """Pytree of bools like `params`: True at adapter leaves (`lora_a`, `lora_b`)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _name(p) in ADAPTER_NAMES, params)


def has_adapters(params: Any) -> bool:
    return any(jax.tree.leaves(adapter_mask(params)))


def freeze(grads: Any) -> Any:
    """Zero the gradient of every non-adapter leaf (the frozen base network)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, g: g if _name(p) in ADAPTER_NAMES else jnp.zeros_like(g), grads
    )


def only_adapters(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the adapter leaves only; other leaves get a zero update and no state."""
    return optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()},
        lambda params: jax.tree.map(lambda m: "train" if m else "freeze", adapter_mask(params)),
    )


def count(params: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts: with adapters only they train."""
    leaves = jax.tree.leaves(params)
    total = int(sum(np.size(x) for x in leaves))
    if not has_adapters(params):
        return total, total
    mask = jax.tree.leaves(adapter_mask(params))
    trainable = int(sum(np.size(x) for x, m in zip(leaves, mask, strict=True) if m))
    return trainable, total


def adapters_of(params: Any) -> dict[str, np.ndarray]:
    """The adapter leaves as a flat dict 'path' -> host array."""
    flat = traverse_util.flatten_dict(serialization.to_state_dict(params), sep="/")
    return {k: np.asarray(v) for k, v in flat.items() if k.rsplit("/", 1)[-1] in ADAPTER_NAMES}


def save_adapters(directory: str, params: Any, meta: dict[str, Any] | None = None) -> str:
    """Write the adapters of `params` (one seed's, unbatched) to a new folder `directory`.

    Files: `adapters.msgpack` (the adapter arrays) and `adapters.json` (rank, shapes,
    SHA-256 of the arrays, `meta`). Refuses an existing folder: nothing is overwritten.
    """
    adapters = adapters_of(params)
    if not adapters:
        raise ValueError("save_adapters: these parameters have no LoRA adapters (lora_rank=0)")
    if os.path.exists(directory):
        raise FileExistsError(f"save_adapters: {directory!r} already exists; choose a new path")
    os.makedirs(directory)
    blob = serialization.msgpack_serialize(adapters)
    spec = {
        "format": "jaxlearn-lora-1",
        "shapes": {k: list(v.shape) for k, v in adapters.items()},
        "parameters": int(sum(v.size for v in adapters.values())),
        "sha256": hashlib.sha256(blob).hexdigest(),
        **(meta or {}),
    }
    with open(os.path.join(directory, ADAPTERS_FILE), "wb") as f:
        f.write(blob)
    with open(os.path.join(directory, SPEC_FILE), "w") as f:
        json.dump(spec, f, indent=2)
    return directory


def load_adapters(directory: str, params: Any) -> Any:
    """`params` with its adapters replaced by those saved in `directory`.

    Raises ValueError when the folder's checksum fails or an adapter's path or shape does not
    match `params` (naming both shapes).
    """
    path = os.path.join(directory, ADAPTERS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"load_adapters: no {ADAPTERS_FILE} in {directory!r}")
    with open(path, "rb") as f:
        blob = f.read()
    with open(os.path.join(directory, SPEC_FILE)) as f:
        spec = json.load(f)
    if hashlib.sha256(blob).hexdigest() != spec.get("sha256"):
        raise ValueError(f"load_adapters: {path} does not match its SHA-256 in {SPEC_FILE}")
    saved = serialization.msgpack_restore(blob)
    state = serialization.to_state_dict(params)
    flat = traverse_util.flatten_dict(state, sep="/")
    mine = {k for k in flat if k.rsplit("/", 1)[-1] in ADAPTER_NAMES}
    if set(saved) != mine:
        raise ValueError(
            f"load_adapters: the saved adapters are at {sorted(saved)}, but these parameters "
            f"have adapters at {sorted(mine)}"
        )
    for k, v in saved.items():
        if tuple(np.shape(v)) != tuple(np.shape(flat[k])):
            raise ValueError(
                f"load_adapters: adapter {k} has shape {tuple(np.shape(v))} in {directory!r} "
                f"but {tuple(np.shape(flat[k]))} here (lora_rank or layer sizes differ)"
            )
        flat[k] = jnp.asarray(v, dtype=flat[k].dtype)
    return serialization.from_state_dict(params, traverse_util.unflatten_dict(flat, sep="/"))
