"""The network of an exported policy: built from its config, checked against parameters,
and wrapped as the pure `apply` and the checking host `act`.

A recurrent policy (PPO with `core: gru`) carries its core's state: `apply(params, obs,
state) -> (action, state)` and `act(obs, state) -> (action, state)`, starting each episode
from `initial_state`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import algos
from jaxlearn.algos.dqn.networks import sampled_act as dqn_sampled
from jaxlearn.algos.dqn.train import make_agent
from jaxlearn.algos.ppo.networks import RecurrentActorCritic
from jaxlearn.algos.ppo.policy import sampled_act as ppo_sampled
from jaxlearn.algos.ppo.recurrent import make_recurrent_policy
from jaxlearn.algos.ppo.recurrent import sampled_act as recurrent_sampled
from jaxlearn.algos.ppo.train import make_policy
from jaxlearn.envs.setup import base_env
from jaxlearn.envs.wrappers import NormalizeObservation, NormalizeObservationState
from jaxlearn.export.record import POLICY_FIELDS


def config_class(algo: str) -> type:
    if algo not in POLICY_FIELDS or algo not in algos.ALGOS:
        raise ValueError(
            f"algo={algo!r} cannot be exported: must be one of {sorted(POLICY_FIELDS)}"
        )
    return algos.ALGOS[algo][0]


def policy_network(algo: str, cfg: Any) -> tuple[Any, Callable, Callable, Any, Any]:
    """`(network, greedy, sampled, env, env_params)` for `cfg`, on its unwrapped env
    (observation mask applied). `greedy(params, obs) -> action` and `sampled(params, obs,
    key) -> action` (drawn as in training: PPO from its distribution, DQN epsilon-greedy at
    `epsilon_end`); for a recurrent core `greedy(params, state, obs) -> (state, action)`
    and `sampled(params, state, obs, key) -> (state, action)`."""
    env, env_params = base_env(cfg)
    if algo == "ppo" and cfg.core != "none":
        policy = make_recurrent_policy(cfg, env, env_params)
        return policy.network, policy.act_greedy, recurrent_sampled(policy), env, env_params
    if algo == "ppo":
        policy = make_policy(cfg, env, env_params)
        return policy.network, policy.act_greedy, ppo_sampled(policy), env, env_params
    agent = make_agent(cfg, env, env_params)
    sampled = dqn_sampled(agent, cfg.epsilon_end)
    return agent.network, agent.greedy_action, sampled, env, env_params


def param_template(network: Any, env: Any, env_params: Any) -> Any:
    """ShapeDtypeStructs of the network's parameters (nothing is computed)."""
    space = env.observation_space(env_params)
    dtype = jnp.dtype(space.dtype)
    if isinstance(network, RecurrentActorCritic):  # state [B, H], obs [T, B, ...], reset [T, B]
        state = jax.ShapeDtypeStruct((1, network.state_size), jnp.float32)
        obs = jax.ShapeDtypeStruct((1, 1, *tuple(space.shape)), dtype)
        reset = jax.ShapeDtypeStruct((1, 1), jnp.bool_)
        return jax.eval_shape(network.init, jax.random.key(0), state, obs, reset)
    dummy = jax.ShapeDtypeStruct((1, *tuple(space.shape)), dtype)
    return jax.eval_shape(network.init, jax.random.key(0), dummy)


def core_state_width(network: Any) -> int:
    """The width S of a recurrent network's core state; 0 for a feed-forward network."""
    return network.state_size if isinstance(network, RecurrentActorCritic) else 0


def check_fits(params: Any, template: Any, where: str) -> None:
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


def observation_stats(env_state: Any) -> Any:
    """The `RunningMeanStd` a `NormalizeObservation` wrapper keeps in `env_state` (or None)."""
    s = env_state
    while s is not None:
        if isinstance(s, NormalizeObservationState):
            return s.obs_stats
        s = getattr(s, "env_state", None)
    return None


def normalizer_defaults() -> dict[str, float]:
    """`clip` and `eps` of the `NormalizeObservation` wrapper that training uses."""
    sig = inspect.signature(NormalizeObservation.__init__).parameters
    return {"clip": float(sig["clip"].default), "eps": float(sig["eps"].default)}


def count(params: Any) -> int:
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def check_finite_params(params: Any, where: str) -> None:
    flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(params), sep="/")
    for k, x in flat.items():
        a = np.asarray(x)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            raise ValueError(
                f"{where}: parameter {k!r} holds NaN or inf (a diverged run?); such a "
                "policy acts on garbage and is refused"
            )


def apply_fn(act: Callable, norm: dict[str, Any] | None, recurrent: bool = False) -> Callable:
    """The pure, jittable policy: `apply(params, obs [B, *obs_shape], *key) -> action [B,
    ...]`, or with a recurrent core `apply(params, obs, state [B, H], *key) -> (action,
    state)`; `act` is `policy_network`'s greedy (no key) or sampled (a key last) function."""
    if norm is None:
        normalize = lambda obs: obs  # noqa: E731
    else:
        mean = jnp.asarray(norm["mean"], jnp.float32)
        var = jnp.asarray(norm["var"], jnp.float32)
        clip, eps = float(norm["clip"]), float(norm["eps"])
        normalize = lambda obs: jnp.clip((obs - mean) / jnp.sqrt(var + eps), -clip, clip)  # noqa: E731

    if recurrent:

        def apply_recurrent(params: Any, obs: Any, state: Any, *key: Any) -> tuple[Any, Any]:
            state, action = act(params, state, normalize(obs), *key)
            return action, state

        return apply_recurrent
    if norm is None:
        return act

    def apply(params: Any, obs: Any, *key: Any) -> Any:
        return act(params, normalize(obs), *key)

    return apply


def _checked_obs(obs: Any, obs_shape: tuple[int, ...]) -> tuple[Any, bool]:
    """`(obs as an array, whether it is one observation)`; raises on a wrong shape, dtype,
    or (unless traced) a NaN/inf value."""
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
    return x, single


def _checked_state(state: Any, batch: int | None, size: int) -> Any:
    """The core state for `batch` observations (None: one observation): `[batch, size]`
    (or `[size]`), real numbers; raises ValueError naming both shapes otherwise."""
    s = state if isinstance(state, jax.core.Tracer) else jnp.asarray(state)
    want = (size,) if batch is None else (batch, size)
    if tuple(s.shape) != want or not jnp.issubdtype(s.dtype, jnp.floating):
        raise ValueError(
            f"act: the core state has shape {tuple(s.shape)} {s.dtype}; for this observation "
            f"it must be float {want} (start each episode from policy.initial_state(...))"
        )
    return s.astype(jnp.float32)


def _checked_key(key: Any) -> Any:
    """`key` if it is one PRNG key (`jax.random.key(seed)`, or a raw `[2]` uint32 key)."""
    k = key if isinstance(key, jax.core.Tracer) else jnp.asarray(key)
    if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) and k.shape == ():
        return k
    if k.dtype == jnp.uint32 and tuple(k.shape) == (2,):
        return k
    raise ValueError(
        f"sample: key has shape {tuple(k.shape)} {k.dtype}; it must be one PRNG key "
        "(jax.random.key(seed)), a new one for every call"
    )


def host_act(
    apply_jit: Callable,
    params: Any,
    obs_shape: tuple[int, ...],
    state_size: int = 0,
    sampled: bool = False,
) -> Callable:
    """The checking host `act` around the jitted `apply` (see `ExportedPolicy.act`), or
    with `sampled` the host `sample`, which takes a PRNG key last (`ExportedPolicy.sample`)."""
    if state_size:

        def run_recurrent(obs: Any, state: Any, *key: Any) -> tuple[Any, Any]:
            x, single = _checked_obs(obs, obs_shape)
            s = _checked_state(state, None if single else x.shape[0], state_size)
            if single:
                action, s = apply_jit(params, x[None], s[None], *key)
                return jax.tree.map(lambda a: a[0], action), s[0]
            return apply_jit(params, x, s, *key)

        def act_recurrent(obs: Any, state: Any) -> tuple[Any, Any]:
            """Greedy action and next core state for `obs [B, *obs_shape]` and `state
            [B, H]` (-> `([B, ...], [B, H])`), or one `obs [*obs_shape]` and `state [H]`.

            Raises:
                ValueError: an observation or state of another shape (both named), or a
                    NaN/inf observation (checked unless traced under jit/vmap).
                TypeError: an observation that is not real numbers.
            """
            return run_recurrent(obs, state)

        def sample_recurrent(obs: Any, state: Any, key: Any) -> tuple[Any, Any]:
            """As `act`, with the action drawn as in training from PRNG `key`."""
            return run_recurrent(obs, state, _checked_key(key))

        return sample_recurrent if sampled else act_recurrent

    def run(obs: Any, *key: Any) -> Any:
        x, single = _checked_obs(obs, obs_shape)
        if single:
            return jax.tree.map(lambda a: a[0], apply_jit(params, x[None], *key))
        return apply_jit(params, x, *key)

    def act(obs: Any) -> Any:
        """Greedy action for `obs [B, *obs_shape]` (-> `[B, ...]`) or one `obs [*obs_shape]`
        (-> `[...]`).

        Raises:
            ValueError: another shape (the message gives the expected and the got shape),
                or a NaN/inf observation (checked unless `obs` is traced under jit/vmap).
            TypeError: an observation that is not real numbers.
        """
        return run(obs)

    def sample(obs: Any, key: Any) -> Any:
        """As `act`, with the action drawn as in training from PRNG `key` (PPO: from the
        policy's distribution; DQN: epsilon-greedy at `epsilon_end`); raises ValueError
        for a `key` that is not one PRNG key."""
        return run(obs, _checked_key(key))

    return sample if sampled else act
