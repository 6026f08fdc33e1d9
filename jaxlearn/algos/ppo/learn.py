"""One PPO update's learning step: epochs x minibatches of clipped-surrogate gradient steps.

Shared by the MLP learner (`jaxlearn.algos.ppo.train`) and the recurrent one
(`jaxlearn.algos.ppo.recurrent`), whose minibatches are whole env sequences.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlearn.algos.common import apply_gradients, make_optimizer
from jaxlearn.algos.ppo.config import PPOConfig, PPOHParams
from jaxlearn.algos.ppo.losses import LossInfo, PPOBatch, ppo_loss


def learn(
    params: Any,
    opt_state: Any,
    batch: PPOBatch,
    key: jax.Array,
    hparams: PPOHParams,
    learning_rate: jax.Array,
    policy: Any,  # a Policy or RecurrentPolicy: only its log_prob_entropy_value is used
    config: PPOConfig,
    axis_name: str | None = None,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """One PPO update: `num_epochs` passes over `batch` in `num_minibatches` shuffled minibatches.

    Args:
        params, opt_state: network parameters and optimizer state (`make_optimizer`).
        batch: `PPOBatch` of N = num_envs * num_steps transitions (leading axis [N]), or
            (recurrent PPO) of N = num_envs whole sequences (leading axes [N, T]).
        key: PRNG key for the shuffles.
        hparams: `PPOHParams`; `learning_rate` is the (annealed) step size to use now.
        axis_name: data parallelism: each device holds a shard of `batch`; gradients,
            advantage statistics and metrics are averaged over `axis_name` (`lax.pmean`),
            so every device applies the same update (see `jaxlearn.parallel`).

    Returns:
        (params, opt_state, metrics averaged over all minibatch steps).
    """
    tx = make_optimizer(config, hparams.max_grad_norm, learning_rate)
    n = batch.advantage.shape[0]  # transitions, or whole env sequences (recurrent)
    mb = n // config.num_minibatches

    coefs = {k: getattr(hparams, k) for k in ("clip_eps", "vf_coef", "ent_coef")}  # data

    def loss_fn(p, b):
        return ppo_loss(
            p,
            b,
            policy.log_prob_entropy_value,
            **coefs,
            clip_value=config.clip_value,
            normalize_advantages=config.normalize_advantages,
            axis_name=axis_name,
        )

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def minibatch_step(carry, b):
        p, o = carry
        grads, info = grad_fn(p, b)
        p, o, g_norm, info = apply_gradients(tx, grads, o, p, info, axis_name)
        return (p, o), (info, g_norm)

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)
        shuffled = jax.tree.map(
            lambda x: jnp.take(x, perm, axis=0).reshape(config.num_minibatches, mb, *x.shape[1:]),
            batch,
        )
        return jax.lax.scan(minibatch_step, carry, shuffled)

    (params, opt_state), (infos, g_norms) = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, config.num_epochs)
    )
    infos: LossInfo = jax.tree.map(jnp.mean, infos)
    metrics = {
        "loss": infos.total,
        "policy_loss": infos.policy,
        "value_loss": infos.value,
        "entropy": infos.entropy,
        "approx_kl": infos.approx_kl,
        "clip_fraction": infos.clip_fraction,
        "grad_norm": jnp.mean(g_norms),
    }
    return params, opt_state, metrics
