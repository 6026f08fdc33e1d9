"""Saving, loading and exporting a policy (see `jaxlearn.export` for the guarantees)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.checkpoint import HMAC_ENV, seal
from jaxlearn.envs.setup import make_curriculum
from jaxlearn.export.network import (
    apply_fn,
    check_finite_params,
    check_fits,
    config_class,
    core_state_width,
    count,
    host_act,
    normalizer_defaults,
    observation_stats,
    param_template,
    policy_network,
)
from jaxlearn.export.record import (
    ABSENT,
    FORMAT,
    PARAMS_FILE,
    POLICY_FIELDS,
    SPEC_FILE,
    check_normalization,
    check_spec,
    env_params_from_record,
    env_params_record,
    json_default,
    read_spec,
)
from jaxlearn.recurrent import initial_state
from jaxlearn.rundir import load_run


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
        env_params: the env parameters the policy was trained on (the env's `EnvParams`;
            for a run with a curriculum, those of its stage at the exported checkpoint).
        initial_state: for a recurrent policy (`core: gru` or `lstm`),
            `initial_state(batch=None)`: the core state every episode starts from, zeros
            `[batch, S]` (`[S]` for None; `jaxlearn.recurrent.state_size`); None for a
            feed-forward policy. A recurrent policy's `act` and `apply` then carry it:
            `act(obs, state) -> (action, state)`, `apply(params, obs, state) -> (action,
            state)`; reset the rows of envs whose episode ended (`jnp.where(done[:, None],
            policy.initial_state(B), state)`).
        sample: as `act`, with the actions drawn as in training from a PRNG key passed
            last: `sample(obs, key)` (recurrent: `sample(obs, state, key) -> (action,
            state)`). PPO draws from the policy's distribution, DQN acts epsilon-greedily
            at the config's `epsilon_end` (exports before format 5 did not record it:
            there the default, 0.05).
    """

    act: Callable[..., Any]
    params: Any
    spec: dict[str, Any]
    network: Any
    apply: Callable[..., Any]
    env_params: Any = None
    initial_state: Callable[..., Any] | None = None
    sample: Callable[..., Any] | None = None


def save_policy(
    path: str,
    algo: str,
    algo_cfg: Any,
    params: Any,
    *,
    obs_stats: Any = None,
    env_params: Any = None,
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
        env_params: the env parameters the policy was trained on, recorded in full
            (default: those the config builds; `export_from_run` passes the checkpoint's
            curriculum stage). Their structure must be the config's env's.
        source: where the policy comes from (run folder, step, seed), stored as is.

    Raises:
        FileExistsError: `path` exists.
        ValueError: unknown algo, config of another algorithm, params that do not fit the
            network or are not finite, or missing, unexpected or invalid observation
            statistics (wrong shape, NaN/inf, negative variance).
    """
    cls = config_class(algo)
    if not isinstance(algo_cfg, cls):
        raise ValueError(
            f"save_policy: algo={algo!r} needs a {cls.__name__}, got {type(algo_cfg).__name__}"
        )
    if os.path.exists(path):
        raise FileExistsError(
            f"export path {path!r} already exists; jaxlearn never overwrites an exported "
            "policy: choose a new path or remove it yourself"
        )
    network, _, _, env, base_params = policy_network(algo, algo_cfg)
    trained_on = env_params_record(base_params if env_params is None else env_params)
    env_params_from_record(trained_on, base_params, "save_policy")  # same structure, finite
    env_params = base_params
    params = jax.device_get(params)
    check_fits(params, param_template(network, env, env_params), "save_policy")
    check_finite_params(params, "save_policy")

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
        norm = {**normalizer_defaults(), "mean": mean, "var": var}
        check_normalization(norm, obs_shape, "save_policy: obs_stats")  # before float32
        for name in ("mean", "var"):
            norm[name] = np.asarray(norm[name], np.float32).tolist()
    elif obs_stats is not None:
        raise ValueError("save_policy: obs_stats given, but normalize_observations is off")

    data = flax.serialization.to_bytes(params)
    fields = {f: getattr(algo_cfg, f) for f in POLICY_FIELDS[algo]}
    spec = {
        "format": FORMAT,
        "algo": algo,
        "config": fields,
        "observation_shape": list(obs_shape),
        "observation_dtype": str(jnp.dtype(obs_space.dtype)),
        "action_space": repr(algo_cfg.action_space()),
        "num_parameters": count(params),
        "params_file": PARAMS_FILE,
        "params_sha256": hashlib.sha256(data).hexdigest(),
        "observation_normalization": norm,
        "env_params": trained_on,
    }
    if algo == "ppo":
        spec["policy_kind"] = algo_cfg.policy_kind()
    if source is not None:
        spec["source"] = dict(source)
    spec = seal(json.loads(json.dumps(spec, default=json_default)))
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


def _config_from_spec(spec: dict[str, Any], where: str) -> Any:
    algo = spec["algo"]
    cls = config_class(algo)
    fields = dict(spec["config"])
    absent = set(ABSENT.get(spec["format"], ())) - set(fields)  # the config's defaults hold
    unknown = sorted(set(fields) - set(POLICY_FIELDS[algo]))
    missing = sorted(set(POLICY_FIELDS[algo]) - set(fields) - absent)
    if unknown or missing:
        raise ValueError(f"{where}: config fields unknown {unknown}, missing {missing}")
    for name in ("hidden_sizes", "cnn_channels", "cnn_kernels", "cnn_strides", "obs_mask"):
        if isinstance(fields.get(name), list):  # JSON has no tuples
            fields[name] = tuple(fields[name])
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
        check_normalization(norm, obs_shape, where)
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
    spec = read_spec(path)
    where = f"load_policy {path!r}"
    check_spec(spec, where)
    cfg = _config_from_spec(spec, where)
    network, act_greedy, act_sampled, env, env_params = policy_network(spec["algo"], cfg)
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
    template = param_template(network, env, env_params)
    check_fits(raw, template, where)
    if count(raw) != spec["num_parameters"]:
        raise ValueError(
            f"{where}: num_parameters={spec['num_parameters']} does not match the "
            f"{count(raw)} parameters of the network"
        )
    check_finite_params(raw, where)
    params = flax.serialization.from_state_dict(template, raw)
    params = jax.tree.map(jnp.asarray, params)

    trained_on = env_params
    if "env_params" in spec:  # format 3
        trained_on = env_params_from_record(spec["env_params"], env_params, where)
    size = core_state_width(network)
    norm = spec["observation_normalization"]
    apply = apply_fn(act_greedy, norm, recurrent=size > 0)
    act = host_act(jax.jit(apply), params, obs_shape, size)
    draw = jax.jit(apply_fn(act_sampled, norm, recurrent=size > 0))
    sample = host_act(draw, params, obs_shape, size, sampled=True)
    initial = None
    if size:

        def initial(batch: int | None = None) -> jax.Array:
            zeros = initial_state(1 if batch is None else batch, size)
            return zeros[0] if batch is None else zeros

    return ExportedPolicy(act, params, spec, network, apply, trained_on, initial, sample)


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
    env, base_params = policy_network(run.run_cfg.algo, run.algo_cfg)[3:]
    curriculum = make_curriculum(run.algo_cfg, env, base_params)
    trained_on = base_params if curriculum is None else curriculum.env_params(one.curriculum)
    stats = observation_stats(one.env_state) if run.run_cfg.algo == "ppo" else None
    if not getattr(run.algo_cfg, "normalize_observations", False):
        stats = None
    save_policy(
        path,
        run.run_cfg.algo,
        run.algo_cfg,
        one.params,
        obs_stats=stats,
        env_params=jax.device_get(trained_on),
        source={
            "run_dir": os.path.abspath(run_dir),
            "checkpoint_step": run.step,
            "checkpoint_choice": run.choice,
            "seed_index": seed_index,
            "eval_return": run.record.get("eval_return"),
        },
    )
    return read_spec(path)
