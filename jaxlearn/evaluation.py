"""Evaluation: run a policy (greedy, or sampling its actions) for a fixed number of whole episodes.

`run_episodes` is one pure function: `num_episodes` copies of an env run side by side (vmap),
each for exactly one episode, in a `lax.while_loop` that stops when every episode is done or
after `max_steps` steps. Jit it with the policy and env static:

    ev = jax.jit(run_episodes, static_argnums=(0, 2, 5, 6))
    result = ev(policy.act_greedy, params, env, env_params, key, 32)
    print(json.dumps(summarize(result)))

or bind them with `functools.partial` and `jax.vmap` the result over `params` or `key`.

Keys: `key_reset, key_step = jax.random.split(key)`; episode `i` resets with
`jax.random.split(key_reset, num_episodes)[i]` and its step `t` (from 0) uses
`jax.random.split(jax.random.fold_in(key_step, t), num_episodes)[i]`. A sampling policy
(`sampled=True`) draws the actions of step `t` with `jax.random.fold_in(key_act, t)`,
`key_act = jax.random.fold_in(key, 1)`: greedy and sampled runs of one key start from the
same states and see the same env randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.envs import task as T

# How a trained policy acts in evaluation: `Learner.greedy_episodes` / `sampled_episodes`.
POLICIES = ("greedy", "sampled")


def default_max_steps(env_params: Any) -> Any:
    """Steps per episode from the env's params: gymnax `max_steps_in_episode`, or
    `ceil(time_limit / dt)` for task envs. An int, or a `[]` array (traced under jit).

    Raises:
        ValueError: when the params have neither.
    """
    if hasattr(env_params, "max_steps_in_episode"):
        return env_params.max_steps_in_episode
    if hasattr(env_params, "time_limit") and hasattr(env_params, "dt"):
        return T.max_steps(env_params)
    raise ValueError(
        f"run_episodes: cannot tell the episode length from env_params of type "
        f"{type(env_params).__name__} (no max_steps_in_episode, time_limit/dt); "
        "pass max_steps=<int>"
    )


def _check_positive(name: str, value: Any) -> None:
    """Raise for a value < 1 when it is known on the host (ints and concrete arrays)."""
    try:
        v = int(value)
    except TypeError:  # a tracer (params under jit): a bound < 1 just runs no steps
        return
    if v < 1:
        raise ValueError(f"run_episodes: {name}={value!r} is invalid: must be an int >= 1")


def run_episodes(
    act: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    env: Any,
    env_params: Any,
    key: jax.Array,
    num_episodes: int,
    max_steps: int | None = None,
    carry: Any = None,
    *,
    sampled: bool = False,
) -> dict[str, jax.Array]:
    """Run `num_episodes` episodes of the policy `act` in parallel.

    Each episode runs until its first `terminated or truncated` (later auto-resets are
    ignored) or until `max_steps` steps. Static under jit: `act`, `env`, `num_episodes`,
    `max_steps` (argnums 0, 2, 5, 6) and `sampled`.

    Args:
        act: `(params, obs [E, *obs_shape]) -> action [E, ...]`, e.g. PPO's
            `policy.act_greedy` or DQN's `agent.greedy_action`. (A learner's own
            `Learner.greedy_episodes(state, key, n)` calls this with its seed's policy.)
        params: the policy's parameters (any pytree).
        env: an unvectorised gymnax-1.0-style env (`jaxlearn.make(name)[0]`).
        env_params: its params (shared by all episodes).
        key: PRNG key; see the module docstring for how it is split.
        num_episodes: E, episodes run in parallel.
        max_steps: step limit per episode; default from `env_params`
            (`max_steps_in_episode`, or `ceil(time_limit / dt)` for task envs), which may
            be traced: the loop bound is dynamic, so traced `env_params` need no int here.
        carry: a recurrent policy's initial state (e.g. `[E, H]`, one row per episode);
            `act` is then `(params, carry, obs) -> (carry, action)` and the state is carried
            from step to step (each episode runs once from it, so it is never reset).
        sampled: `act` draws its actions and takes a key last: `(params, obs, key)`, or
            `(params, carry, obs, key)`; one key per step for all episodes (the module
            docstring says which).

    Returns:
        `returns` [E] float32 undiscounted, `lengths` [E] int32 steps, `done` [E] bool
        (the episode ended within `max_steps`); for task envs also each per-env scalar of
        `info["task"]` (`success`, `collisions`, ...) and `reward_<component>` episode sums,
        [E] float32, as at the episode's last step (its done step when `done`).
    """
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(
            f"run_episodes: num_episodes={num_episodes!r} is invalid: must be an int >= 1"
        )
    if max_steps is None:
        max_steps = default_max_steps(env_params)
    elif isinstance(max_steps, bool) or not isinstance(max_steps, int):
        raise ValueError(f"run_episodes: max_steps={max_steps!r} is invalid: must be an int >= 1")
    _check_positive("max_steps", max_steps)
    limit = jnp.asarray(max_steps, jnp.int32)

    n = num_episodes
    key_reset, key_step = jax.random.split(key)
    key_act = jax.random.fold_in(key, 1)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, n), env_params)
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def step(t, obs, state, memory):
        keys = jax.random.split(jax.random.fold_in(key_step, t), n)
        draw = (jax.random.fold_in(key_act, t),) if sampled else ()
        if memory is None:
            action = act(params, obs, *draw)
        else:
            memory, action = act(params, memory, obs, *draw)
        obs, state, reward, terminated, truncated, info = vstep(keys, state, action, env_params)
        done = jnp.logical_or(terminated, truncated).reshape(n)
        extras = T.episode_extras({**info, "episode_done": done})
        return obs, state, jnp.asarray(reward, jnp.float32).reshape(n), done, extras, memory

    # the extras' structure, without running a step
    extras_shape = jax.eval_shape(lambda: step(0, obs, state, carry)[4])
    loop = dict(
        t=jnp.int32(0),
        memory=carry,
        obs=obs,
        state=state,
        returns=jnp.zeros(n, jnp.float32),
        lengths=jnp.zeros(n, jnp.int32),
        done=jnp.zeros(n, jnp.bool_),
        extras=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), extras_shape),
    )

    def cond(c):
        return (c["t"] < limit) & ~jnp.all(c["done"])

    def body(c):
        obs, state, reward, done, extras, memory = step(c["t"], c["obs"], c["state"], c["memory"])
        active = ~c["done"]
        return dict(
            t=c["t"] + 1,
            memory=memory,
            obs=obs,
            state=state,
            returns=c["returns"] + jnp.where(active, reward, 0.0),
            lengths=c["lengths"] + active.astype(jnp.int32),
            done=c["done"] | done,
            extras=jax.tree.map(lambda new, old: jnp.where(active, new, old), extras, c["extras"]),
        )

    c = jax.lax.while_loop(cond, body, loop)
    return {"returns": c["returns"], "lengths": c["lengths"], "done": c["done"], **c["extras"]}


def summarize(result: dict[str, Any]) -> dict[str, float]:
    """Host-side summary of `run_episodes`'s output (any leading axes, e.g. from vmap).

    Returns plain floats for `json.dumps`: `return_mean`, `return_std`, `length_mean`,
    `episodes`, `finished` (episodes with `done`), and `<key>_mean` for every other key.
    """
    arr = {k: np.asarray(v) for k, v in result.items()}
    out = {
        "return_mean": float(arr["returns"].mean()),
        "return_std": float(arr["returns"].std()),
        "length_mean": float(arr["lengths"].mean()),
        "episodes": int(arr["returns"].size),
        "finished": int(arr["done"].sum()),
    }
    for k, v in arr.items():
        if k not in ("returns", "lengths", "done"):
            out[f"{k}_mean"] = float(v.mean())
    return out
