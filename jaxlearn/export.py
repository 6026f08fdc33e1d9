"""Export a trained policy for inference, and restore checkpoints of a run folder.

An exported policy is a directory (never overwritten) with two files:

- `policy.json`: `format`, `algo`, only the config fields that define the network and how
  its outputs become env actions (PPO: `env`, `env_kwargs`, `hidden_sizes`, `activation`,
  `action_squash`, `log_std_init`, `policy`, `normalize_observations`; DQN: `env`,
  `env_kwargs`, `hidden_sizes`, `activation`), the observation shape and dtype, the action
  space, the parameter count, the SHA-256 of `params.msgpack`, for PPO trained with
  `normalize_observations` the frozen observation mean/variance applied before the network,
  where it came from (`source`, optional), and the record's seal: `signed`, `sha256` (of
  every other field, as a checkpoint record's) and `hmac`;
- `params.msgpack`: `flax.serialization.to_bytes` of one seed's network parameters.

    save_policy("cartpole_policy", "ppo", cfg, params)
    policy = load_policy("cartpole_policy")
    action = policy.act(obs)  # obs [B, *obs_shape] -> [B, ...]; obs [*obs_shape] -> [...]

`export_from_run(run_dir, path)` does both steps from a run folder's checkpoint, read
through `jaxlearn.rundir.load_run` (re-exported here with `parse_checkpoint` and
`RestoredRun`, as `scripts/evaluate.py` uses them).

What `load_policy` guarantees (it raises `ValueError` naming the field otherwise):

- every field of `policy.json` is present, known and valid: the config builds, the
  observation shape and dtype, the action space, the policy kind and the parameter count
  are those of the network the config describes, the observation statistics have the
  observation's shape and are finite with variance >= 0, and `params_sha256` is required
  and matches `params.msgpack`, whose parameters fit the network and are finite;
- `policy.json` is sealed like a format-2 checkpoint record (`jaxlearn.checkpoint.seal`):
  `sha256` covers every field, so an edited field is refused, not only edited parameters;
- signing: with `$JAXLEARN_CHECKPOINT_KEY` set, `save_policy` (and so `export_from_run`)
  signs the record with an HMAC of that key (a signed run can only be read with its key,
  so exports of signed runs are signed), and `load_policy` accepts only records signed
  with that key. A record that says `signed: true` without a well-formed `hmac` is refused
  with or without a key, and a signed one is refused without the key (it cannot be
  verified).

Not guaranteed without a key: the SHA-256s catch corruption and careless edits, but anyone
who can write the folder can change a field or the parameters, set `signed` to false, drop
`hmac` and recompute both hashes, and that export loads where no key is set. Only the
HMAC authenticates an export: set the key wherever exports of signed runs are loaded.

`policy.act` is a host API: it checks the observation's shape (`[B, *obs_shape]` or one
`[*obs_shape]`) and that it is finite before running the jitted network. Under a JAX
transformation (`jit`, `vmap`, `lax.scan`) it checks the shape only, since values are
not known there. `policy.apply(params, obs [B, *obs_shape])` is the pure, jittable
function behind it (normalisation included, no checks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import algos
from jaxlearn.algos.dqn.train import make_agent
from jaxlearn.algos.ppo.train import make_policy
from jaxlearn.checkpoint import HMAC_ENV, record_hash, seal, signature_problem
from jaxlearn.envs.setup import base_env
from jaxlearn.envs.wrappers import NormalizeObservation, NormalizeObservationState
from jaxlearn.rundir import RestoredRun, load_run, parse_checkpoint

__all__ = [
    "ExportedPolicy",
    "RestoredRun",
    "export_from_run",
    "load_policy",
    "load_run",
    "observation_stats",
    "parse_checkpoint",
    "save_policy",
]

FORMAT = 2  # 1: policy.json was not hashed, params_sha256 optional (refused, see load_policy)
SPEC_FILE = "policy.json"
PARAMS_FILE = "params.msgpack"

# Config fields that define the network and the action mapping, per algorithm.
POLICY_FIELDS = {
    "ppo": (
        "env",
        "env_kwargs",
        "hidden_sizes",
        "activation",
        "action_squash",
        "log_std_init",
        "policy",
        "normalize_observations",
    ),
    "dqn": ("env", "env_kwargs", "hidden_sizes", "activation"),
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
    "signed",
    "sha256",
    "hmac",
)
NORMALIZATION_FIELDS = ("clip", "eps", "mean", "var")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ExportedPolicy(NamedTuple):
    """A policy loaded by `load_policy`, for inference only.

    Attributes:
        act: host API, `obs [B, *obs_shape] -> action [B, ...]` or `obs [*obs_shape] ->
            action [...]`, greedy; raises ValueError for another shape or a NaN/inf
            observation (under `jit`/`vmap` only the shape is checked).
        params: the network parameters (a pytree of arrays).
        spec: the contents of `policy.json`.
        network: the Flax module the parameters belong to.
        apply: `apply(params, obs [B, *obs_shape]) -> action [B, ...]`, the pure, jittable
            function behind `act` (observation normalisation included, nothing checked).
    """

    act: Callable[[Any], Any]
    params: Any
    spec: dict[str, Any]
    network: Any
    apply: Callable[[Any, Any], Any]


# ---- building the network ----------------------------------------------------------------


def _config_class(algo: str) -> type:
    if algo not in POLICY_FIELDS or algo not in algos.ALGOS:
        raise ValueError(
            f"algo={algo!r} cannot be exported: must be one of {sorted(POLICY_FIELDS)}"
        )
    return algos.ALGOS[algo][0]


def _greedy(algo: str, cfg: Any) -> tuple[Any, Callable, Any, Any]:
    """`(network, act(params, obs), env, env_params)` for `cfg`, on its unwrapped env."""
    env, env_params = base_env(cfg)
    if algo == "ppo":
        policy = make_policy(cfg, env, env_params)
        return policy.network, policy.act_greedy, env, env_params
    agent = make_agent(cfg, env, env_params)
    return agent.network, agent.greedy_action, env, env_params


def _template(network: Any, env: Any, env_params: Any) -> Any:
    """ShapeDtypeStructs of the network's parameters (nothing is computed)."""
    space = env.observation_space(env_params)
    dummy = jax.ShapeDtypeStruct((1, *tuple(space.shape)), jnp.dtype(space.dtype))
    return jax.eval_shape(network.init, jax.random.key(0), dummy)


def _check_fits(params: Any, template: Any, where: str) -> None:
    """Raise ValueError unless `params` has the template's leaves, shapes and dtypes."""
    got = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(params), sep="/")
    want = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(template), sep="/")
    if set(got) != set(want):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        raise ValueError(
            f"{where}: parameters do not fit the network (missing {missing[:5]}, "
            f"unexpected {extra[:5]})"
        )
    for k, ref in want.items():
        shape, dtype = tuple(np.shape(got[k])), np.asarray(got[k]).dtype
        if shape != tuple(ref.shape) or dtype != ref.dtype:
            hint = ""
            if len(shape) == len(ref.shape) + 1 and shape[1:] == tuple(ref.shape):
                hint = "; these look like stacked seeds: pass one seed's params"
            raise ValueError(
                f"{where}: parameter {k!r} has shape {shape} {dtype}, the network needs "
                f"{tuple(ref.shape)} {ref.dtype}{hint}"
            )


# ---- observation normalisation -------------------------------------------------------------


def observation_stats(env_state: Any) -> Any:
    """The `RunningMeanStd` a `NormalizeObservation` wrapper keeps in `env_state` (or None)."""
    s = env_state
    while s is not None:
        if isinstance(s, NormalizeObservationState):
            return s.obs_stats
        s = getattr(s, "env_state", None)
    return None


def _normalizer_defaults() -> dict[str, float]:
    """`clip` and `eps` of the `NormalizeObservation` wrapper that training uses."""
    sig = inspect.signature(NormalizeObservation.__init__).parameters
    return {"clip": float(sig["clip"].default), "eps": float(sig["eps"].default)}


# ---- save / load ---------------------------------------------------------------------------


def save_policy(
    path: str,
    algo: str,
    algo_cfg: Any,
    params: Any,
    *,
    obs_stats: Any = None,
    source: Mapping[str, Any] | None = None,
) -> None:
    """Write one seed's policy to the new directory `path` (see the module docstring).

    The record is sealed (`jaxlearn.checkpoint.seal`): hashed in full, and signed with the
    key in `$JAXLEARN_CHECKPOINT_KEY` when one is set.

    Args:
        path: directory to create; it must not exist.
        algo: `"ppo"` or `"dqn"`.
        algo_cfg: the training config (`PPOConfig` or `DQNConfig`).
        params: one seed's network parameters (`state.params`, no seed axis).
        obs_stats: for PPO with `normalize_observations`, the observation statistics
            (a `RunningMeanStd`, or a mapping with `mean` and `var` `[*obs_shape]`), e.g.
            `observation_stats(state.env_state)` of the same seed.
        source: where the policy comes from (run folder, step, seed), stored as is.

    Raises:
        FileExistsError: `path` exists.
        ValueError: unknown algo, config of another algorithm, params that do not fit the
            network or are not finite, or missing, unexpected or invalid observation
            statistics (wrong shape, NaN/inf, negative variance).
    """
    cls = _config_class(algo)
    if not isinstance(algo_cfg, cls):
        raise ValueError(
            f"save_policy: algo={algo!r} needs a {cls.__name__}, got {type(algo_cfg).__name__}"
        )
    if os.path.exists(path):
        raise FileExistsError(
            f"export path {path!r} already exists; jaxlearn never overwrites an exported "
            "policy: choose a new path or remove it yourself"
        )
    network, _, env, env_params = _greedy(algo, algo_cfg)
    params = jax.device_get(params)
    _check_fits(params, _template(network, env, env_params), "save_policy")
    _check_finite_params(params, "save_policy")

    obs_space = env.observation_space(env_params)
    obs_shape = tuple(int(d) for d in obs_space.shape)
    normalized = bool(getattr(algo_cfg, "normalize_observations", False))
    norm = None
    if normalized:
        if obs_stats is None:
            raise ValueError(
                "save_policy: the config has normalize_observations=True, so the policy "
                "needs the observation statistics it was trained with: pass "
                "obs_stats=observation_stats(state.env_state) of the same seed "
                "(export_from_run does this)"
            )
        mean, var = (
            (obs_stats["mean"], obs_stats["var"])
            if isinstance(obs_stats, Mapping)
            else (obs_stats.mean, obs_stats.var)
        )
        mean = np.asarray(jax.device_get(mean)).tolist()
        var = np.asarray(jax.device_get(var)).tolist()
        norm = {**_normalizer_defaults(), "mean": mean, "var": var}
        _check_normalization(norm, obs_shape, "save_policy: obs_stats")  # before float32
        for name in ("mean", "var"):
            norm[name] = np.asarray(norm[name], np.float32).tolist()
    elif obs_stats is not None:
        raise ValueError("save_policy: obs_stats given, but normalize_observations is off")

    data = flax.serialization.to_bytes(params)
    fields = {f: getattr(algo_cfg, f) for f in POLICY_FIELDS[algo]}
    fields["hidden_sizes"] = list(fields["hidden_sizes"])
    spec = {
        "format": FORMAT,
        "algo": algo,
        "config": fields,
        "observation_shape": list(obs_shape),
        "observation_dtype": str(jnp.dtype(obs_space.dtype)),
        "action_space": repr(algo_cfg.action_space()),
        "num_parameters": _count(params),
        "params_file": PARAMS_FILE,
        "params_sha256": hashlib.sha256(data).hexdigest(),
        "observation_normalization": norm,
    }
    if algo == "ppo":
        spec["policy_kind"] = algo_cfg.policy_kind()
    if source is not None:
        spec["source"] = dict(source)
    spec = seal(json.loads(json.dumps(spec, default=_json_default)))
    text = json.dumps(spec, indent=2)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.mkdir(path)  # atomic claim: a concurrent export of the same path fails here
    try:
        with open(os.path.join(path, PARAMS_FILE), "wb") as f:
            f.write(data)
        with open(os.path.join(path, SPEC_FILE), "w") as f:
            f.write(text + "\n")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _count(params: Any) -> int:
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _float32(v: int | float) -> np.float32:
    """`v` in float32: beyond its range (even beyond float64's, for a huge int) is inf."""
    try:
        f = float(v)
    except OverflowError:
        f = math.copysign(math.inf, v)
    with np.errstate(over="ignore"):
        return np.float32(f)


def _check_finite_params(params: Any, where: str) -> None:
    flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(params), sep="/")
    for k, x in flat.items():
        a = np.asarray(x)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            raise ValueError(
                f"{where}: parameter {k!r} holds NaN or inf (a diverged run?); such a "
                "policy acts on garbage and is refused"
            )


def _check_normalization(norm: Any, obs_shape: tuple[int, ...], where: str) -> None:
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
        if not _is_number(v) or not np.isfinite(_float32(v)) or _float32(v) <= 0:
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
        if not all(_is_number(v) for v in raw.flat):
            raise ValueError(f"{where}: {field}.{name} must hold numbers only")
        a = np.array([_float32(v) for v in raw.flat], np.float32).reshape(raw.shape)
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


def _read_spec(path: str) -> dict[str, Any]:
    """`policy.json` of the export `path`, after checking its format, its hash and its
    signature (`signature_problem`); the fields are checked by `_check_spec`."""
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
    if fmt != FORMAT or isinstance(fmt, bool):
        if fmt == 1:
            raise ValueError(
                f"load_policy: {file!r} was written by an older jaxlearn (export format 1), "
                "whose policy.json was not hashed and whose params hash was optional; it "
                "cannot be verified, so it is refused: export the policy again "
                "(export_from_run or save_policy)"
            )
        raise ValueError(
            f"load_policy: {file!r} has format {fmt!r}; this jaxlearn reads format {FORMAT}"
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


def _check_spec(spec: dict[str, Any], where: str) -> None:
    """The fields of `policy.json` that can be checked without the network: present,
    known, of the right type."""
    algo = spec.get("algo")
    if algo not in POLICY_FIELDS:
        raise ValueError(f"{where}: algo={algo!r} is invalid: known {sorted(POLICY_FIELDS)}")
    required = set(SPEC_FIELDS) | ({"policy_kind"} if algo == "ppo" else set())
    missing = sorted(required - set(spec))
    unknown = sorted(set(spec) - required - {"source"})
    if missing or unknown:
        raise ValueError(f"{where}: {SPEC_FILE} fields missing {missing}, unknown {unknown}")
    if not isinstance(spec["config"], dict):
        raise ValueError(f"{where}: config must be an object of config fields")
    shape = spec["observation_shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ValueError(
            f"{where}: observation_shape={shape!r} is invalid: must be a list of ints >= 0"
        )
    for name in ("observation_dtype", "action_space"):
        if not isinstance(spec[name], str):
            raise ValueError(f"{where}: {name}={spec[name]!r} is invalid: must be a string")
    n = spec["num_parameters"]
    if not _is_int(n) or n < 1:
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


def _config_from_spec(spec: dict[str, Any], where: str) -> Any:
    algo = spec["algo"]
    cls = _config_class(algo)
    fields = dict(spec["config"])
    unknown = sorted(set(fields) - set(POLICY_FIELDS[algo]))
    missing = sorted(set(POLICY_FIELDS[algo]) - set(fields))
    if unknown or missing:
        raise ValueError(f"{where}: config fields unknown {unknown}, missing {missing}")
    if isinstance(fields.get("hidden_sizes"), list):
        fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in fields.items() if k in known})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: its config is invalid: {e}") from None


def _check_against_network(
    spec: dict[str, Any], cfg: Any, env: Any, env_params: Any, where: str
) -> tuple[int, ...]:
    """The fields that describe the network and its env must be those `cfg` builds;
    returns the observation shape."""
    space = env.observation_space(env_params)
    obs_shape = tuple(int(d) for d in space.shape)
    expected = {
        "observation_shape": list(obs_shape),
        "observation_dtype": str(jnp.dtype(space.dtype)),
        "action_space": repr(cfg.action_space()),
    }
    if spec["algo"] == "ppo":
        expected["policy_kind"] = cfg.policy_kind()
    for name, want in expected.items():
        if spec[name] != want:
            raise ValueError(
                f"{where}: {name}={spec[name]!r} does not match the network its config "
                f"describes ({want!r})"
            )
    norm = spec["observation_normalization"]
    if bool(getattr(cfg, "normalize_observations", False)):
        if norm is None:
            raise ValueError(
                f"{where}: observation_normalization is missing, but the config has "
                "normalize_observations=True"
            )
        _check_normalization(norm, obs_shape, where)
    elif norm is not None:
        raise ValueError(
            f"{where}: observation_normalization must be null: the policy was not trained "
            "on normalised observations"
        )
    return obs_shape


def load_policy(path: str) -> ExportedPolicy:
    """Load a policy written by `save_policy`; needs nothing but the directory.

    Checks, before any parameter is used: the format, the hash of `policy.json` (every
    field), its signature (see the module docstring: with `$JAXLEARN_CHECKPOINT_KEY` set,
    only records signed with that key load), every field, then `params.msgpack` against
    the required `params_sha256`, the network's shapes, the parameter count and finiteness.

    Raises:
        FileNotFoundError: the directory or one of its files is missing.
        ValueError: an older or unknown format, an edited or unsigned/wrongly signed
            `policy.json`, an invalid field (the message names it), a damaged or replaced
            `params.msgpack`, or parameters that do not fit the network.
    """
    spec = _read_spec(path)
    where = f"load_policy {path!r}"
    _check_spec(spec, where)
    cfg = _config_from_spec(spec, where)
    network, act_greedy, env, env_params = _greedy(spec["algo"], cfg)
    obs_shape = _check_against_network(spec, cfg, env, env_params, where)

    file = os.path.join(path, PARAMS_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{where}: {file!r} is missing")
    with open(file, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != spec["params_sha256"]:
        raise ValueError(
            f"{where}: {PARAMS_FILE} does not match the SHA-256 recorded in {SPEC_FILE} "
            "(corrupt, truncated or replaced)"
        )
    try:
        raw = flax.serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 - any decode failure means a damaged file
        raise ValueError(f"{where}: {PARAMS_FILE} is damaged (not readable msgpack): {e}") from None
    template = _template(network, env, env_params)
    _check_fits(raw, template, where)
    if _count(raw) != spec["num_parameters"]:
        raise ValueError(
            f"{where}: num_parameters={spec['num_parameters']} does not match the "
            f"{_count(raw)} parameters of the network"
        )
    _check_finite_params(raw, where)
    params = flax.serialization.from_state_dict(template, raw)
    params = jax.tree.map(jnp.asarray, params)

    apply = _apply_fn(act_greedy, spec["observation_normalization"])
    act = _host_act(jax.jit(apply), params, obs_shape)
    return ExportedPolicy(act, params, spec, network, apply)


def _apply_fn(act_greedy: Callable, norm: dict[str, Any] | None) -> Callable[[Any, Any], Any]:
    """`apply(params, obs [B, *obs_shape]) -> action [B, ...]`: pure, jittable."""
    if norm is None:
        return act_greedy
    mean = jnp.asarray(norm["mean"], jnp.float32)
    var = jnp.asarray(norm["var"], jnp.float32)
    clip, eps = float(norm["clip"]), float(norm["eps"])

    def apply(params: Any, obs: Any) -> Any:
        return act_greedy(params, jnp.clip((obs - mean) / jnp.sqrt(var + eps), -clip, clip))

    return apply


def _host_act(
    apply_jit: Callable[[Any, Any], Any], params: Any, obs_shape: tuple[int, ...]
) -> Callable[[Any], Any]:
    def act(obs: Any) -> Any:
        """Greedy action for `obs [B, *obs_shape]` (-> `[B, ...]`) or one `obs [*obs_shape]`
        (-> `[...]`).

        Raises:
            ValueError: another shape (the message gives the expected and the got shape),
                or a NaN/inf observation (checked unless `obs` is traced under jit/vmap).
            TypeError: an observation that is not real numbers.
        """
        traced = isinstance(obs, jax.core.Tracer)
        x = obs if traced else jnp.asarray(obs)
        if not any(jnp.issubdtype(x.dtype, t) for t in (jnp.floating, jnp.integer, jnp.bool_)):
            raise TypeError(f"act: the observation has dtype {x.dtype}; it must be real numbers")
        shape = tuple(x.shape)
        single = shape == obs_shape
        if not single and not (len(shape) == len(obs_shape) + 1 and shape[1:] == obs_shape):
            batch = "(" + ", ".join(["B", *map(str, obs_shape)]) + ")"
            raise ValueError(
                f"act: the observation has shape {shape}; this policy takes one observation "
                f"[*obs_shape] = {obs_shape} or a batch [B, *obs_shape] = {batch}"
            )
        if not traced and jnp.issubdtype(x.dtype, jnp.inexact):
            bad = ~np.isfinite(np.asarray(x))
            if bad.any():
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"act: the observation holds NaN or inf (at index {at}); no action is "
                    "defined for it, so it is refused"
                )
        if single:
            return jax.tree.map(lambda a: a[0], apply_jit(params, x[None]))
        return apply_jit(params, x)

    return act


# ---- from a run folder ----------------------------------------------------------------------


def _signed(record: Mapping[str, Any]) -> bool:
    return bool(record.get("signed") or record.get("hmac"))


def export_from_run(
    run_dir: str, path: str, seed_index: int = 0, checkpoint: Any = "best"
) -> dict[str, Any]:
    """Export seed `seed_index`'s policy from a checkpoint of `run_dir` to `path`.

    `checkpoint` is as in `jaxlearn.rundir.load_run`. A run whose checkpoints are signed
    can only be read with its key in `$JAXLEARN_CHECKPOINT_KEY`, and the export is signed
    with that same key. Returns the written `policy.json` contents.
    """
    if os.path.exists(path):
        raise FileExistsError(
            f"export path {path!r} already exists; jaxlearn never overwrites an exported "
            "policy: choose a new path or remove it yourself"
        )
    run = load_run(run_dir, checkpoint)
    n = run.run_cfg.num_seeds
    if isinstance(seed_index, bool) or not isinstance(seed_index, int) or not 0 <= seed_index < n:
        raise ValueError(f"seed_index={seed_index!r} is invalid: the run has seeds 0..{n - 1}")
    if _signed(run.record) and not os.environ.get(HMAC_ENV):
        # load_run verified the signature, so the key was set then: never export unsigned
        raise ValueError(
            f"export_from_run: {run_dir!r} is a signed run; set ${HMAC_ENV} to its key so "
            "that the export is signed too"
        )
    one = jax.tree.map(lambda x: x[seed_index], run.state)
    stats = observation_stats(one.env_state) if run.run_cfg.algo == "ppo" else None
    if not getattr(run.algo_cfg, "normalize_observations", False):
        stats = None
    save_policy(
        path,
        run.run_cfg.algo,
        run.algo_cfg,
        one.params,
        obs_stats=stats,
        source={
            "run_dir": os.path.abspath(run_dir),
            "checkpoint_step": run.step,
            "checkpoint_choice": run.choice,
            "seed_index": seed_index,
            "eval_return": run.record.get("eval_return"),
        },
    )
    return _read_spec(path)
