"""Export a trained policy for inference, and restore checkpoints of a run folder.

An exported policy is a directory (never overwritten) with two files:

- `policy.json`: `format`, `algo`, only the config fields that define the network and how
  its outputs become env actions (PPO: `env`, `env_kwargs`, `hidden_sizes`, `activation`,
  `action_squash`, `log_std_init`, `policy`, `normalize_observations`; DQN: `env`,
  `env_kwargs`, `hidden_sizes`, `activation`), the observation shape and action space (for
  information), the parameter count, the SHA-256 of `params.msgpack`, and, for PPO trained
  with `normalize_observations`, the frozen observation mean/variance applied before the
  network;
- `params.msgpack`: `flax.serialization.to_bytes` of one seed's network parameters.

    save_policy("cartpole_policy", "ppo", cfg, params)
    policy = load_policy("cartpole_policy")
    action = policy.act(obs)  # obs [B, *obs_shape] -> greedy action [B, ...]

`export_from_run(run_dir, path)` does both steps from a run folder's checkpoint, read
through `jaxlearn.rundir.load_run` (re-exported here with `parse_checkpoint` and
`RestoredRun`, as `scripts/evaluate.py` uses them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
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

FORMAT = 1
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


class ExportedPolicy(NamedTuple):
    """A policy loaded by `load_policy`, for inference only.

    Attributes:
        act: `obs [B, *obs_shape] -> action [B, ...]`, greedy (jitted).
        params: the network parameters (a pytree of arrays).
        spec: the contents of `policy.json`.
        network: the Flax module the parameters belong to.
    """

    act: Callable[[Any], Any]
    params: Any
    spec: dict[str, Any]
    network: Any


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
            network, or missing/unexpected observation statistics.
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
        mean = np.asarray(jax.device_get(mean), np.float32)
        var = np.asarray(jax.device_get(var), np.float32)
        if mean.shape != obs_shape or var.shape != obs_shape:
            raise ValueError(
                f"save_policy: obs_stats mean {mean.shape} / var {var.shape} must have the "
                f"observation shape {obs_shape} (one seed's statistics)"
            )
        norm = {**_normalizer_defaults(), "mean": mean.tolist(), "var": var.tolist()}
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
        "num_parameters": int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))),
        "params_file": PARAMS_FILE,
        "params_sha256": hashlib.sha256(data).hexdigest(),
        "observation_normalization": norm,
    }
    if algo == "ppo":
        spec["policy_kind"] = algo_cfg.policy_kind()
    if source is not None:
        spec["source"] = dict(source)
    text = json.dumps(spec, indent=2, default=_json_default)

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


def _read_spec(path: str) -> dict[str, Any]:
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
    if spec.get("format") != FORMAT:
        raise ValueError(
            f"load_policy: {file!r} has format {spec.get('format')!r}; this jaxlearn reads "
            f"format {FORMAT}"
        )
    if spec.get("algo") not in POLICY_FIELDS:
        raise ValueError(
            f"load_policy: {file!r} has algo={spec.get('algo')!r}; known: {sorted(POLICY_FIELDS)}"
        )
    return spec


def _config_from_spec(spec: dict[str, Any], where: str) -> Any:
    algo = spec["algo"]
    cls = _config_class(algo)
    fields = dict(spec.get("config") or {})
    unknown = sorted(set(fields) - set(POLICY_FIELDS[algo]))
    missing = sorted(set(POLICY_FIELDS[algo]) - set(fields) - {"normalize_observations"})
    if unknown or missing:
        raise ValueError(f"{where}: config fields unknown {unknown}, missing {missing}")
    if isinstance(fields.get("hidden_sizes"), list):
        fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in fields.items() if k in known})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: its config is invalid: {e}") from None


def load_policy(path: str) -> ExportedPolicy:
    """Load a policy written by `save_policy`; needs nothing but the directory.

    Raises:
        FileNotFoundError: the directory or one of its files is missing.
        ValueError: unknown format or algo, a damaged `params.msgpack`, or parameters that
            do not fit the network described by `policy.json`.
    """
    spec = _read_spec(path)
    where = f"load_policy {path!r}"
    cfg = _config_from_spec(spec, where)
    network, act_greedy, env, env_params = _greedy(spec["algo"], cfg)

    file = os.path.join(path, PARAMS_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{where}: {file!r} is missing")
    with open(file, "rb") as f:
        data = f.read()
    if spec.get("params_sha256") and hashlib.sha256(data).hexdigest() != spec["params_sha256"]:
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
    params = flax.serialization.from_state_dict(template, raw)
    params = jax.tree.map(jnp.asarray, params)

    norm = spec.get("observation_normalization")
    if norm is not None:
        mean = jnp.asarray(norm["mean"], jnp.float32)
        var = jnp.asarray(norm["var"], jnp.float32)
        clip, eps = float(norm["clip"]), float(norm["eps"])

        def preprocess(obs):
            return jnp.clip((obs - mean) / jnp.sqrt(var + eps), -clip, clip)
    else:

        def preprocess(obs):
            return obs

    act_jit = jax.jit(lambda p, obs: act_greedy(p, preprocess(obs)))

    def act(obs: Any) -> Any:
        """Greedy action for a batch of observations `[B, *obs_shape]`."""
        return act_jit(params, jnp.asarray(obs))

    return ExportedPolicy(act, params, spec, network)


# ---- from a run folder ----------------------------------------------------------------------


def export_from_run(
    run_dir: str, path: str, seed_index: int = 0, checkpoint: Any = "best"
) -> dict[str, Any]:
    """Export seed `seed_index`'s policy from a checkpoint of `run_dir` to `path`.

    `checkpoint` is as in `jaxlearn.rundir.load_run`. Returns the written `policy.json`
    contents.
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
