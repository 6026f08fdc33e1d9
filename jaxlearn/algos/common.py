"""The learner scaffold PPO and DQN share: env stack, optimizer, gradient step, update tail.

Everything here is algorithm-neutral; an algorithm keeps its rollout, loss and action
selection and calls these for the rest. The per-update work of a learner is its
`update(state, hparams)`: rollout, learning (through `apply_gradients`), then
`finish_update` (episode metrics, the finite check, curriculum advance).

Hyperparameters stay data: the optimizer is an `optax.chain` built from the traced
`hparams` inside the update (`make_optimizer(config, hparams.max_grad_norm, lr)`); its state
does not depend on them, so a vmapped batch of hparams compiles one program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlearn import lora
from jaxlearn.algos.base import all_finite, episode_extras
from jaxlearn.config import fail
from jaxlearn.curriculum import episode_outcomes
from jaxlearn.envs.setup import base_env, build_env
from jaxlearn.evaluation import run_episodes

# ---------------------------------------------------------------------------------------------
# Envs


class EnvStack(NamedTuple):
    """The training envs of one learner and the unvectorised env its evaluation runs."""

    env: Any  # vectorised training env
    params: Any  # env params without a curriculum (and the curriculum's base)
    curriculum: Any  # jaxlearn.curriculum.Curriculum or None
    eval_env: Any  # unvectorised env for greedy episodes

    def params_of(self, c_state: Any) -> Any:
        """The env params now: fixed, or the curriculum's current stage."""
        return self.params if self.curriculum is None else self.curriculum.env_params(c_state)


def make_env_stack(config: Any, num_envs: int, **wrappers: Any) -> EnvStack:
    """`EnvStack` of `config`'s env fields; `wrappers` go to `make_vec` (normalisation).

    Building the envs validates the env fields (errors name the field), and the config's
    `check_env_space` then sees the env: a config built in Python is checked here, before
    anything is compiled (`from_dict` already checked one read from YAML or the CLI).
    """
    eval_env, params = base_env(config)
    config.check_env_space(eval_env, params)
    env, params, curriculum = build_env(config, num_envs, **wrappers)
    return EnvStack(env, params, curriculum, eval_env)


def reset_envs(key: jax.Array, stack: EnvStack, axis: str | None):
    """Split `key` and reset the envs. With data parallelism (`axis`) every device gets the
    same network key and its own env key.

    Returns:
        `(k_net, k_run, obs [num_envs, ...], env_state, curriculum state or None)`.
    """
    k_net, k_env, k_run = jax.random.split(key, 3)
    if axis is not None:
        k_env = jax.random.fold_in(k_env, jax.lax.axis_index(axis))
    c_state = None if stack.curriculum is None else stack.curriculum.init()
    obs, env_state = stack.env.reset(k_env, stack.params_of(c_state))
    return k_net, k_run, obs, env_state, c_state


# ---------------------------------------------------------------------------------------------
# Optimizer and gradient application


def make_optimizer(
    config: Any, max_grad_norm: jax.Array | float = jnp.inf, learning_rate: Any = 1.0
) -> optax.GradientTransformation:
    """Global-norm clipping, Adam (`config.adam_eps`), then the step `-learning_rate`.

    `max_grad_norm` and `learning_rate` may be traced (hparams, an annealed rate): build the
    chain inside the update from them. Its state is Adam's alone (the other links keep
    none), so `make_optimizer(config).init(params)` initialises it for any values. With LoRA
    (`config.lora_rank > 0`) only the adapters have Adam state and move.
    """
    adam = optax.scale_by_adam(eps=config.adam_eps)
    if config.lora_rank:
        adam = lora.only_adapters(adam)
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        adam,
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_state(opt_state: Any) -> Any:
    """The `ScaleByAdamState` (count, mu, nu) inside a `make_optimizer` state (without LoRA)."""
    return opt_state[1]


def learning_rate_at(
    learning_rate: jax.Array, update_step: jax.Array, num_updates: int, anneal: bool
) -> jax.Array:
    """`learning_rate`, or with `anneal` linearly decayed to 0: `lr * (1 - step / num_updates)`
    at update `update_step` (counted from 0)."""
    if not anneal:
        return learning_rate
    return learning_rate * (1.0 - update_step.astype(jnp.float32) / num_updates)


def apply_gradients(
    tx: optax.GradientTransformation,
    grads: Any,
    opt_state: Any,
    params: Any,
    averaged: Any = None,
    axis_name: str | None = None,
) -> tuple[Any, Any, jax.Array, Any]:
    """One optimizer step: LoRA freeze, data-parallel mean, `tx`, new parameters.

    Args:
        tx: the chain of this step (`make_optimizer`).
        grads, opt_state, params: as optax takes them.
        averaged: a pytree averaged over `axis_name` with the gradients (losses, metrics).
        axis_name: data parallelism: each device computed `grads` on its shard; they are
            averaged (`lax.pmean`) so every device applies the same step.

    Returns:
        `(params, opt_state, grad_norm [] before clipping, averaged)`.
    """
    if lora.has_adapters(grads):  # LoRA: the base network stays frozen
        grads = lora.freeze(grads)
    if axis_name is not None:
        grads, averaged = jax.lax.pmean((grads, averaged), axis_name)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, grad_norm, averaged


def update_target(
    target: Any, online: Any, tau: jax.Array, step: jax.Array, period: jax.Array
) -> Any:
    """`tau * online + (1 - tau) * target` when `step % period == 0`, else `target`
    (`optax.incremental_update` inside `optax.periodic_update`; `tau`, `period` may be
    traced hparams)."""
    moved = optax.incremental_update(online, target, tau)
    return optax.periodic_update(moved, target, step, period)


# ---------------------------------------------------------------------------------------------
# The end of every update


class Episodes(NamedTuple):
    """Per env step and env: which episodes finished and their totals ([T, N] each)."""

    done: jax.Array  # bool
    returns: jax.Array  # undiscounted return of the finished episode
    lengths: jax.Array  # its length in env steps
    extras: dict  # task metrics and reward components (`base.episode_extras`)


def episodes_of(info: dict) -> Episodes:
    """The `Episodes` fields of one env step's `info` ([N] each)."""
    return Episodes(
        info["episode_done"], info["episode_return"], info["episode_length"], episode_extras(info)
    )


def finish_update(
    metrics: dict[str, jax.Array],
    params: Any,
    episodes: Episodes,
    curriculum: Any,
    c_state: Any,
    hparams: Any,
    axis: str | None = None,
) -> tuple[dict[str, jax.Array], Any]:
    """Add episode sums (over every device's envs), the finite check and the curriculum.

    Args:
        metrics: the update's metrics so far; must hold `loss`.
        params: the parameters after the update (checked for NaN/Inf).
        episodes: the update's `Episodes` ([T, N] each).
        curriculum, c_state: the learner's curriculum (or None) and its state.
        hparams: the learner's hparams (`hparams.curriculum`: stage thresholds).
        axis: data-parallel axis: episode sums are summed over it (`lax.psum`).

    Returns:
        `(metrics, c_state)`: metrics gain `episode_return_sum`, `episode_length_sum`,
        `episode_count`, `episode_<extra>_sum`, `nonfinite` (1.0 when the loss or a
        parameter is NaN/Inf) and the curriculum's metrics.
    """
    done = episodes.done
    sums = {
        "episode_return_sum": jnp.sum(jnp.where(done, episodes.returns, 0.0)),
        "episode_length_sum": jnp.sum(jnp.where(done, episodes.lengths, 0)).astype(jnp.float32),
        "episode_count": jnp.sum(done.astype(jnp.int32)).astype(jnp.float32),
    }
    for k, v in episodes.extras.items():
        sums[f"episode_{k}_sum"] = jnp.sum(jnp.where(done, v, 0.0))
    if axis is not None:
        sums = jax.lax.psum(sums, axis)
    metrics = {**metrics, **sums}
    finite = jnp.isfinite(metrics["loss"]) & all_finite(params)
    metrics["nonfinite"] = (~finite).astype(jnp.float32)
    if curriculum is not None:
        outcomes = episode_outcomes(episodes.returns, episodes.extras)
        c_state = curriculum.update(c_state, done, outcomes, hparams.curriculum)
        metrics.update(curriculum.metrics(c_state))
    return metrics, c_state


# ---------------------------------------------------------------------------------------------
# Evaluation and data parallelism


def policy_episodes(
    stack: EnvStack, act_of: Callable[[Any], Callable[..., Any]], sampled: bool = False
) -> Callable[[Any, jax.Array, int], dict[str, jax.Array]]:
    """A learner's `greedy_episodes(state, key, num_episodes)` (or `sampled_episodes`):
    episodes of one seed's policy `act_of(state)` on its current env params, run by
    `jaxlearn.evaluation.run_episodes`. The act is `(params, obs) -> action`, or with
    `sampled` `(params, obs, key) -> action`."""

    def run(state: Any, key: jax.Array, num_episodes: int) -> dict[str, jax.Array]:
        env_params = stack.params_of(state.curriculum)
        return run_episodes(
            act_of(state),
            state.params,
            stack.eval_env,
            env_params,
            key,
            num_episodes,
            sampled=sampled,
        )

    return run


def check_data_parallel(config: Any, shards: int, multiples: dict[str, str]) -> str:
    """Validate a data-parallel split of one agent over `shards` devices.

    Args:
        multiples: field -> why it must be a multiple of the device count.

    Returns:
        The axis name gradients are averaged over (`jaxlearn.parallel.DATA_AXIS`).
    """
    from jaxlearn.parallel import DATA_AXIS

    name = type(config).__name__
    fits = [
        d
        for d in range(1, config.num_envs + 1)
        if all(getattr(config, f) % d == 0 for f in multiples)
    ]
    for field, why in multiples.items():
        if getattr(config, field) % shards:
            fail(
                name,
                field,
                getattr(config, field),
                f"must be a multiple of the {shards} devices for data-parallel training "
                f"({why}); device counts that divide {', '.join(multiples)}: {fits}",
            )
    if config.curriculum is not None:
        fail(
            name,
            "curriculum",
            config.curriculum,
            "data-parallel training of one agent does not support a curriculum yet",
        )
    return DATA_AXIS
