"""Checkpoint records: what a checkpoint's arrays become on disk, and how its JSON record is
hashed, sealed and signed (`seal`, `signature_problem`; exports seal `policy.json` the same
way). Imports nothing of jaxlearn."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

HMAC_ENV = "JAXLEARN_CHECKPOINT_KEY"
FORMAT = 2  # 1: the hash covered the arrays and the config only (refused, see `restore`)
_UNHASHED = ("sha256", "hmac")  # the record fields that are not part of its own hash


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, tampered with, or belongs to another run; or a
    save was declined or failed."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _empty(x: Any) -> bool:
    return not _is_key(x) and math.prod(np.shape(x)) == 0


def to_savable(tree: Any) -> Any:
    """Typed PRNG keys -> their raw uint32 data, and zero-size arrays (which Orbax refuses)
    -> a `[]` zero of the same dtype; `from_savable` undoes both."""

    def conv(x):
        if _is_key(x):
            return jax.random.key_data(x)
        if _empty(x):
            return np.zeros((), x.dtype)
        return x

    return jax.tree.map(conv, tree)


def from_savable(tree: Any, like: Any) -> Any:
    """Inverse of `to_savable`, with key implementations and empty shapes from `like`."""

    def conv(x, ref):
        if _is_key(ref):  # the key dtype carries its implementation, concrete or abstract
            return jax.random.wrap_key_data(x, impl=ref.dtype._impl)
        if _empty(ref):
            return np.zeros(np.shape(ref), ref.dtype)
        return x

    return jax.tree.map(conv, tree, like)


def abstract_tree(tree: Any) -> Any:
    """ShapeDtypeStructs of the savable form of `tree` (concrete or abstract)."""

    def conv(x):
        if _is_key(x):
            return jax.eval_shape(jax.random.key_data, x)
        if _empty(x):
            return jax.ShapeDtypeStruct((), x.dtype)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

    return jax.tree.map(conv, tree)


def arrays_hash(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in record.items() if k not in _UNHASHED},
        sort_keys=True,
        separators=(",", ":"),
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of every field of `record` but `sha256` and `hmac` (canonical JSON)."""
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


def _signature(digest: str) -> str | None:
    key = os.environ.get(HMAC_ENV)
    if not key:
        return None
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def seal(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as JSON reads it back, with `signed`, `sha256` and `hmac` added.

    `signed` is whether `$JAXLEARN_CHECKPOINT_KEY` is set; it is hashed with every other
    field, and `hmac` is the HMAC-SHA256 of `sha256` with that key (None without one).
    Exports (`jaxlearn.export`) seal their `policy.json` the same way.
    """
    # exactly what JSON reads back (tuples -> lists, numpy scalars -> numbers), hashed
    out = json.loads(json.dumps(dict(record), default=_json_value))
    out["signed"] = bool(os.environ.get(HMAC_ENV))
    out["sha256"] = record_hash(out)
    out["hmac"] = _signature(out["sha256"])
    return out


def signature_problem(record: Mapping[str, Any]) -> str | None:
    """Why the signature of a record (whose `sha256` already matched) is not acceptable, as
    the end of a sentence about the record; None when it is.

    A record that says `signed: true` needs a well-formed `hmac`, with or without a key.
    With `$JAXLEARN_CHECKPOINT_KEY` set, the `hmac` must be that key's (unsigned records are
    refused); without one, a signed record is refused too (it cannot be verified).
    Records written before the `signed` field existed are judged by their `hmac` alone.
    """
    signed = record.get("signed")
    mac = record.get("hmac")
    if "signed" in record and not isinstance(signed, bool):
        return f"has signed={signed!r}: it must be true or false"
    if signed is True and not (isinstance(mac, str) and _HEX64.fullmatch(mac)):
        return (
            "says it is signed but carries no valid HMAC (the signature was removed or "
            "damaged); it is refused"
        )
    if signed is False and mac is not None:
        return "says it is unsigned but carries an HMAC (edited); it is refused"
    expected = _signature(str(record.get("sha256")))
    got = mac.encode() if isinstance(mac, str) else b""  # bytes: any text compares safely
    if expected is not None and not hmac.compare_digest(expected.encode(), got):
        return f"has a missing or wrong HMAC signature for the key in ${HMAC_ENV}"
    if expected is None and (signed or mac):
        return f"is signed; set ${HMAC_ENV} to the signing key to verify and load it"
    return None


def _json_value(x: Any) -> Any:
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    raise TypeError(f"checkpoint record: {type(x).__name__} is not JSON serialisable")


def tree_structure(tree: Any) -> str:
    """The tree structure with every leaf's shape and dtype (keys as key dtypes)."""
    leaves, treedef = jax.tree.flatten(tree)
    return f"{treedef}|" + ",".join(f"{x.dtype}{list(np.shape(x))}" for x in leaves)


def config_diff(
    current: Mapping[str, Any],
    saved: Mapping[str, Any],
    defaults: Mapping[str, Sequence[Any]],
) -> list[str]:
    """Fields whose values differ. A field missing from `saved` (added to jaxlearn after the
    checkpoint was written) matches when `current` holds one of its `defaults`."""
    diff = []
    for k in sorted(set(current) | set(saved)):
        if k not in saved and k in current:
            value = current[k]
            if any(
                value == x or (isinstance(x, tuple) and value == list(x))
                for x in defaults.get(k, ())
            ):
                continue
        if current.get(k) != saved.get(k):
            diff.append(k)
    return diff
