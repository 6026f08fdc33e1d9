"""`policy.json`, the record of an exported policy: its fields, reading it, checking them.

Format 5 (written now) adds DQN's `epsilon_end`, the epsilon of `ExportedPolicy.sample`.
Format 4 added the network fields beyond the MLP: the torso (`torso`,
`cnn_channels`, `cnn_kernels`, `cnn_strides`, `layer_norm`) and, for PPO, the recurrent
core (`core`, `core_size`, `core_layers`) and the observation mask (`obs_mask`). Format 3
added `env_params`: the full env parameters the policy was trained on (a run's checkpoint at
its curriculum stage), and the config field `env_params` (the overrides its env was built
with).
Formats 2 to 4 still load (what they lack takes the config's defaults: DQN's
`epsilon_end` 0.05, an MLP without a core or a mask, and for format 2 the env parameters its
config builds); format 1 is refused (not hashed).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import flax.serialization
import flax.traverse_util
import numpy as np

from jaxlearn.checkpoint import record_hash, signature_problem

FORMAT = 5  # 4: no DQN epsilon_end, 3: MLP only, 2: no env_params (all read); 1: refused
READABLE_FORMATS = (2, 3, 4, 5)
SPEC_FILE = "policy.json"
PARAMS_FILE = "params.msgpack"

_TORSO_FIELDS = ("torso", "cnn_channels", "cnn_kernels", "cnn_strides", "layer_norm")
# The fields format 4 added (PPO; DQN has the torso only).
_FORMAT_4_FIELDS = (*_TORSO_FIELDS, "core", "core_size", "core_layers", "obs_mask")
# Config fields that define the network and the action mapping, per algorithm.
POLICY_FIELDS = {
    "ppo": (
        "env",
        "env_kwargs",
        "env_params",
        "hidden_sizes",
        "activation",
        "action_squash",
        "log_std_init",
        "policy",
        "normalize_observations",
        *_FORMAT_4_FIELDS,
    ),
    "dqn": (
        "env",
        "env_kwargs",
        "env_params",
        "hidden_sizes",
        "activation",
        *_TORSO_FIELDS,
        "epsilon_end",
    ),
}
# Fields (record and config) that older formats did not have: the config's defaults hold.
ABSENT = {
    2: ("env_params", *_FORMAT_4_FIELDS, "epsilon_end"),
    3: (*_FORMAT_4_FIELDS, "epsilon_end"),
    4: ("epsilon_end",),
}


# Fields every policy.json holds (PPO adds `policy_kind`; `source` is optional).
SPEC_FIELDS = (
    "format",
    "algo",
    "config",
    "observation_shape",
    "observation_dtype",
    "action_space",
    "num_parameters",
    "params_file",
    "params_sha256",
    "observation_normalization",
    "env_params",
    "signed",
    "sha256",
    "hmac",
)
NORMALIZATION_FIELDS = ("clip", "eps", "mean", "var")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def json_default(x: Any) -> Any:
    if isinstance(x, np.generic | np.ndarray) or hasattr(x, "__array__"):  # jax arrays too
        return np.asarray(x).tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def float32(v: int | float) -> np.float32:
    """`v` in float32: beyond its range (even beyond float64's, for a huge int) is inf."""
    try:
        f = float(v)
    except OverflowError:
        f = math.copysign(math.inf, v)
    with np.errstate(over="ignore"):
        return np.float32(f)


def check_normalization(norm: Any, obs_shape: tuple[int, ...], where: str) -> None:
    """Raise ValueError, naming the field, unless `norm` is valid observation statistics for
    observations of shape `obs_shape`."""
    field = "observation_normalization"
    if not isinstance(norm, dict):
        raise ValueError(f"{where}: {field} must be an object, got {type(norm).__name__}")
    if set(norm) != set(NORMALIZATION_FIELDS):
        raise ValueError(
            f"{where}: {field} must have exactly the fields {list(NORMALIZATION_FIELDS)}, "
            f"got {sorted(norm)}"
        )
    for name in ("clip", "eps"):
        v = norm[name]
        if not is_number(v) or not np.isfinite(float32(v)) or float32(v) <= 0:
            raise ValueError(
                f"{where}: {field}.{name}={v!r} is invalid: must be a finite number > 0 "
                "(in float32)"
            )
    for name in ("mean", "var"):
        raw = np.asarray(norm[name], dtype=object)
        if raw.shape != obs_shape:
            raise ValueError(
                f"{where}: {field}.{name} has shape {raw.shape}, the observation's shape is "
                f"{obs_shape}"
            )
        if not all(is_number(v) for v in raw.flat):
            raise ValueError(f"{where}: {field}.{name} must hold numbers only")
        a = np.array([float32(v) for v in raw.flat], np.float32).reshape(raw.shape)
        if not np.isfinite(a).all():
            at = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(
                f"{where}: {field}.{name} holds NaN or inf (or beyond float32) at index {at}"
            )
        if name == "var" and (a < 0).any():
            at = tuple(int(i) for i in np.argwhere(a < 0)[0])
            raise ValueError(
                f"{where}: {field}.var is negative at index {at} ({a[at]}): a variance must be >= 0"
            )


def read_spec(path: str) -> dict[str, Any]:
    """`policy.json` of the export `path`, after checking its format, its hash and its
    signature (`signature_problem`); the fields are checked by `check_spec`."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_policy: {path!r} is not a directory (an exported policy)")
    file = os.path.join(path, SPEC_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"load_policy: {file!r} is missing; is {path!r} an export?")
    try:
        with open(file) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"load_policy: {file!r} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"load_policy: {file!r} must hold a JSON object")
    fmt = spec.get("format")
    if fmt not in READABLE_FORMATS or isinstance(fmt, bool):
        if fmt == 1:
            raise ValueError(
                f"load_policy: {file!r} was written by an older jaxlearn (export format 1), "
                "whose policy.json was not hashed and whose params hash was optional; it "
                "cannot be verified, so it is refused: export the policy again "
                "(export_from_run or save_policy)"
            )
        raise ValueError(
            f"load_policy: {file!r} has format {fmt!r}; this jaxlearn reads formats "
            f"{list(READABLE_FORMATS)}"
        )
    digest = spec.get("sha256")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError(f"load_policy: {file!r} has no valid sha256 field (its record hash)")
    if record_hash(spec) != digest:
        raise ValueError(
            f"load_policy: {file!r} failed its integrity check: its fields do not match the "
            "hash recorded when it was exported (edited or corrupt)"
        )
    problem = signature_problem(spec)
    if problem is not None:
        raise ValueError(f"load_policy: {file!r} {problem}")
    return spec


def check_spec(spec: dict[str, Any], where: str) -> None:
    """The fields of `policy.json` that can be checked without the network: present,
    known, of the right type."""
    algo = spec.get("algo")
    if algo not in POLICY_FIELDS:
        raise ValueError(f"{where}: algo={algo!r} is invalid: known {sorted(POLICY_FIELDS)}")
    required = set(SPEC_FIELDS) | ({"policy_kind"} if algo == "ppo" else set())
    if spec["format"] == 2:
        required.discard("env_params")
    missing = sorted(required - set(spec))
    unknown = sorted(set(spec) - required - {"source"})
    if missing or unknown:
        raise ValueError(f"{where}: {SPEC_FILE} fields missing {missing}, unknown {unknown}")
    if not isinstance(spec["config"], dict):
        raise ValueError(f"{where}: config must be an object of config fields")
    shape = spec["observation_shape"]
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        raise ValueError(
            f"{where}: observation_shape={shape!r} is invalid: must be a list of ints >= 0"
        )
    for name in ("observation_dtype", "action_space"):
        if not isinstance(spec[name], str):
            raise ValueError(f"{where}: {name}={spec[name]!r} is invalid: must be a string")
    n = spec["num_parameters"]
    if not is_int(n) or n < 1:
        raise ValueError(f"{where}: num_parameters={n!r} is invalid: must be an int >= 1")
    if spec["params_file"] != PARAMS_FILE:
        raise ValueError(
            f"{where}: params_file={spec['params_file']!r} is invalid: must be {PARAMS_FILE!r}"
        )
    sha = spec["params_sha256"]
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise ValueError(
            f"{where}: params_sha256={sha!r} is invalid: the SHA-256 of {PARAMS_FILE} (64 "
            "lowercase hex digits) is required"
        )
    if "source" in spec and not isinstance(spec["source"], dict):
        raise ValueError(f"{where}: source must be an object")
    if "env_params" in spec and not isinstance(spec["env_params"], dict):
        raise ValueError(f"{where}: env_params must be an object of env parameter values")


# ---- env parameters --------------------------------------------------------------------------


def env_params_record(env_params: Any) -> dict[str, Any]:
    """The env parameters (a gymnax `EnvParams` pytree) as JSON values: name -> number or
    nested list (`reward_weights` of a task env: name -> number)."""
    state = flax.serialization.to_state_dict(env_params)
    return json.loads(json.dumps(state, default=json_default))


def env_params_from_record(record: Any, template: Any, where: str) -> Any:
    """`record` (from `env_params_record`) back into the `EnvParams` of `template` (the
    params the exported config builds). Raises ValueError naming the parameter unless the
    record has exactly the template's parameters, each of its shape, finite, and a whole
    number where the template holds an integer."""
    field = "env_params"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: {field} must be an object, got {type(record).__name__}")
    want = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(template), sep=".")
    got = flax.traverse_util.flatten_dict(record, sep=".") if record else {}
    if set(got) != set(want):
        raise ValueError(
            f"{where}: {field} must hold exactly the env's parameters: missing "
            f"{sorted(set(want) - set(got))}, unknown {sorted(set(got) - set(want))}"
        )
    restored = {}
    for name, ref in want.items():
        ref_arr = np.asarray(ref)
        raw = np.asarray(got[name], dtype=object)
        if ref_arr.dtype == np.bool_:
            if raw.shape != ref_arr.shape or not all(isinstance(v, bool) for v in raw.flat):
                raise ValueError(
                    f"{where}: {field}.{name}={got[name]!r} is invalid: must be true/false of "
                    f"shape {ref_arr.shape}"
                )
            restored[name] = (
                type(ref)(raw.astype(bool)) if isinstance(ref, bool) else raw.astype(bool)
            )
            continue
        if raw.shape != ref_arr.shape or not all(is_number(v) for v in raw.flat):
            raise ValueError(
                f"{where}: {field}.{name}={got[name]!r} is invalid: must be numbers of shape "
                f"{ref_arr.shape}"
            )
        values = np.array([float(v) for v in raw.flat], np.float64).reshape(raw.shape)
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: {field}.{name} holds NaN or inf")
        if not np.issubdtype(ref_arr.dtype, np.inexact) and not (values == np.round(values)).all():
            raise ValueError(f"{where}: {field}.{name}={got[name]!r} must be whole numbers")
        value = values.astype(ref_arr.dtype)
        restored[name] = type(ref)(value) if isinstance(ref, int | float) else value
    tree = flax.traverse_util.unflatten_dict({tuple(k.split(".")): v for k, v in restored.items()})
    return flax.serialization.from_state_dict(template, tree)
