"""PPO as pure functions: rollout with `lax.scan`, GAE, epochs x minibatches of updates.

`make_train(config)` returns `train(key, hparams=None)`: the whole run as one pure function,
so `jax.jit(jax.vmap(train))(keys)` trains one agent per key in a single call.
`make_learner(config)` exposes the same run as `init`/`update` for chunked host loops.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxlearn import distributions as D
from jaxlearn import lora, spaces
from jaxlearn.algos.base import Learner, all_finite, episode_extras, make_train_fn
from jaxlearn.algos.ppo.config import PPOConfig, PPOHParams
from jaxlearn.algos.ppo.losses import LossInfo, PPOBatch, gae, ppo_loss
from jaxlearn.algos.ppo.networks import ActorCritic
from jaxlearn.config import fail
from jaxlearn.curriculum import episode_outcomes
from jaxlearn.envs.setup import base_env, build_env, with_reward_weights
from jaxlearn.envs.wrappers import observation_normalizer
from jaxlearn.evaluation import evaluate


@struct.dataclass
class PPOState:
    """Everything a PPO run carries between updates (a plain pytree)."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    key: jax.Array
    update_step: jax.Array  # [] int32 updates done so far
    curriculum: Any = None  # CurriculumState when the config has a curriculum


class Transition(NamedTuple):
    """One rollout step for all envs; stacked by the scan to [T, num_envs, ...]."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    episode_done: jax.Array
    episode_extras: dict  # per-episode task metrics and reward components (task envs)


class Policy(NamedTuple):
    """The network plus how actions are sampled, scored and sent to the env."""

    network: ActorCritic
    sample: Any  # (key, params, obs) -> (action, log_prob, value)
    evaluate: Any  # (params, obs, action) -> (log_prob, entropy, value)
    to_env: Any  # action -> env action (clipped/squashed into the Box)
    act_greedy: Any  # (params, obs) -> env action (argmax or mean, for evaluation)
    value: Any  # (params, obs) -> V(obs) [...]


def make_policy(config: PPOConfig, env: Any, env_params: Any) -> Policy:
    """Build the actor-critic and its action functions for the env's action space.

    Discrete: categorical. Box: diagonal Gaussian, clipped or tanh-squashed into the box.
    Hybrid, or several agents (`env.num_agents > 1`): see `make_factored_policy`.
    """
    space = spaces.from_gymnax(env.action_space(env_params))
    obs_shape = tuple(env.observation_space(env_params).shape)
    if isinstance(space, spaces.Hybrid) or getattr(env, "num_agents", 1) > 1:
        return make_factored_policy(config, space, obs_shape, getattr(env, "num_agents", 1))
    discrete = isinstance(space, spaces.Discrete)
    action_dim = space.n if discrete else spaces.flat_dim(space)
    net = ActorCritic(
        action_dim=action_dim,
        discrete=discrete,
        obs_ndim=len(obs_shape),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        log_std_init=config.log_std_init,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
    )

    def value_fn(params, obs):
        return net.apply(params, obs, method=ActorCritic.value)

    if discrete:

        def sample(key, params, obs):
            logits, value = net.apply(params, obs)
            action = D.categorical_sample(key, logits)
            return action, D.categorical_log_prob(logits, action), value

        def evaluate(params, obs, action):
            logits, value = net.apply(params, obs)
            return D.categorical_log_prob(logits, action), D.categorical_entropy(logits), value

        def to_env(action):
            return action

        def act_greedy(params, obs):
            return D.categorical_mode(net.apply(params, obs, method=ActorCritic.policy))

        return Policy(net, sample, evaluate, to_env, act_greedy, value_fn)

    low = jnp.asarray(space.low, jnp.float32)
    high = jnp.asarray(space.high, jnp.float32)
    squash = config.action_squash == "tanh"

    def log_prob_of(mean, log_std, u):
        lp = D.gaussian_log_prob(mean, log_std, u)
        return lp - D.tanh_log_det_jacobian(u) if squash else lp

    def sample(key, params, obs):
        (mean, log_std), value = net.apply(params, obs)
        u = D.gaussian_sample(key, mean, log_std)
        return u, log_prob_of(mean, log_std, u), value

    def evaluate(params, obs, u):
        (mean, log_std), value = net.apply(params, obs)
        # With tanh squashing the entropy has no closed form; the Gaussian's is the usual proxy.
        return log_prob_of(mean, log_std, u), D.gaussian_entropy(log_std), value

    def to_env(u):
        if squash:
            return low + 0.5 * (jnp.tanh(u) + 1.0) * (high - low)
        return jnp.clip(u, low, high)

    def act_greedy(params, obs):
        mean, _ = net.apply(params, obs, method=ActorCritic.policy)
        return to_env(mean)

    return Policy(net, sample, evaluate, to_env, act_greedy, value_fn)


def _box_to_env(u: jax.Array, low: jax.Array, high: jax.Array, squash: bool) -> jax.Array:
    if squash:
        return low + 0.5 * (jnp.tanh(u) + 1.0) * (high - low)
    return jnp.clip(u, low, high)


def make_factored_policy(
    config: PPOConfig, space: spaces.Space, obs_shape: tuple[int, ...], num_agents: int = 1
) -> Policy:
    """A policy over a Hybrid action (Discrete and Box leaves), optionally per agent.

    One network outputs every leaf's parameters: logits for each Discrete leaf and one
    diagonal Gaussian over all Box dimensions. The joint log-probability is the sum over
    leaves. With `num_agents > 1` the observation's leading axis `[num_agents, ...]` is the
    agent axis and every Box leaf's shape starts with it: the same parameters act for each
    agent (parameter sharing), the joint log-probability also sums over agents, and the
    value is the mean of the per-agent values (one shared team reward).

    The stored action is a dict: `"discrete"` `[..., (A,) n_discrete]` int32 and
    `"continuous"` `[..., (A,) d]` float32 (the pre-squash Gaussian sample).
    """
    multi = num_agents > 1
    layout = []  # (path, kind, size, low, high, leaf shape)
    num_logits = cont_dim = 0
    for path, leaf in spaces.leaves(space):
        name = "/".join(path) or "action"
        if isinstance(leaf, spaces.Discrete):
            if multi:
                raise ValueError(
                    f"PPO: multi-agent Discrete action leaf {name!r} is not supported; "
                    "use Box leaves with a leading agent axis"
                )
            layout.append((path, "discrete", leaf.n, None, None, ()))
            num_logits += leaf.n
        elif isinstance(leaf, spaces.Box):
            shape = tuple(leaf.shape)
            if multi and (not shape or shape[0] != num_agents):
                raise ValueError(
                    f"PPO: action leaf {name!r} has shape {shape}; with {num_agents} agents "
                    f"it must start with the agent axis ({num_agents}, ...)"
                )
            per = shape[1:] if multi else shape
            size = math.prod(per)
            lead = (num_agents,) if multi else ()
            low = jnp.asarray(np.broadcast_to(leaf.low, shape), jnp.float32).reshape(*lead, size)
            high = jnp.asarray(np.broadcast_to(leaf.high, shape), jnp.float32).reshape(*lead, size)
            layout.append((path, "box", size, low, high, shape))
            cont_dim += size
        else:
            raise ValueError(f"PPO: action leaf {name!r} is a {type(leaf).__name__}")
    squash = config.action_squash == "tanh"
    net = ActorCritic(
        action_dim=num_logits + cont_dim,
        discrete=False,
        obs_ndim=len(obs_shape) - (1 if multi else 0),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        log_std_init=config.log_std_init,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        num_logits=num_logits,
    )

    def heads(params, obs):
        out, value = net.apply(params, obs)
        if num_logits:
            logits, mean, log_std = out
        else:
            (mean, log_std), logits = out, None
        return logits, mean, log_std, value

    def reduce_agents(x):
        return x.sum(-1) if multi else x

    def team_value(v):
        return v.mean(-1) if multi else v

    def score(logits, mean, log_std, action):
        lp = jnp.zeros(mean.shape[:-1] if cont_dim else logits.shape[:-1])
        ent = jnp.zeros_like(lp)
        off = 0
        j = 0
        for _, kind, size, *_ in layout:
            if kind == "discrete":
                lg = logits[..., off : off + size]
                lp = lp + D.categorical_log_prob(lg, action["discrete"][..., j])
                ent = ent + D.categorical_entropy(lg)
                off += size
                j += 1
        if cont_dim:
            u = action["continuous"]
            g = D.gaussian_log_prob(mean, log_std, u)
            lp = lp + (g - D.tanh_log_det_jacobian(u) if squash else g)
            ent = ent + D.gaussian_entropy(log_std)
        return reduce_agents(lp), reduce_agents(ent)

    def sample(key, params, obs):
        logits, mean, log_std, value = heads(params, obs)
        k_d, k_c = jax.random.split(key)
        disc = []
        off = 0
        for i, (_, kind, size, *_) in enumerate(layout):
            if kind == "discrete":
                lg = logits[..., off : off + size]
                disc.append(D.categorical_sample(jax.random.fold_in(k_d, i), lg))
                off += size
        batch = mean.shape[:-1]
        action = {
            "discrete": jnp.stack(disc, -1) if disc else jnp.zeros((*batch, 0), jnp.int32),
            "continuous": D.gaussian_sample(k_c, mean, log_std),
        }
        lp, _ = score(logits, mean, log_std, action)
        return action, lp, team_value(value)

    def evaluate(params, obs, action):
        logits, mean, log_std, value = heads(params, obs)
        lp, ent = score(logits, mean, log_std, action)
        return lp, ent, team_value(value)

    def to_env(action):
        out: dict = {}
        off = j = 0
        for path, kind, size, low, high, shape in layout:
            if kind == "discrete":
                leaf = action["discrete"][..., j]
                j += 1
            else:
                u = action["continuous"][..., off : off + size]
                off += size
                leaf = _box_to_env(u, low, high, squash)
                leaf = leaf.reshape(*leaf.shape[: leaf.ndim - (2 if multi else 1)], *shape)
            if not path:
                return leaf
            node = out
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = leaf
        return out

    def act_greedy(params, obs):
        logits, mean, _, _ = heads(params, obs)
        disc = []
        off = 0
        for _, kind, size, *_ in layout:
            if kind == "discrete":
                disc.append(D.categorical_mode(logits[..., off : off + size]))
                off += size
        batch = mean.shape[:-1]
        d = jnp.stack(disc, -1) if disc else jnp.zeros((*batch, 0), jnp.int32)
        return to_env({"discrete": d, "continuous": mean})

    def value_fn(params, obs):
        return team_value(net.apply(params, obs, method=ActorCritic.value))

    return Policy(net, sample, evaluate, to_env, act_greedy, value_fn)


def _adam(config: PPOConfig) -> optax.GradientTransformation:
    """Adam's direction (the step size is applied in `learn`); adapters only with LoRA."""
    adam = optax.scale_by_adam(eps=config.adam_eps)
    return lora.only_adapters(adam) if config.lora_rank else adam


def learn(
    params: Any,
    opt_state: Any,
    batch: PPOBatch,
    key: jax.Array,
    hparams: PPOHParams,
    learning_rate: jax.Array,
    policy: Policy,
    config: PPOConfig,
    axis_name: str | None = None,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """One PPO update: `num_epochs` passes over `batch` in `num_minibatches` shuffled minibatches.

    Args:
        params, opt_state: network parameters and Adam state.
        batch: `PPOBatch` of N = num_envs * num_steps transitions (leading axis [N]).
        key: PRNG key for the shuffles.
        hparams: `PPOHParams`; `learning_rate` is the (annealed) step size to use now.
        axis_name: data parallelism: each device holds a shard of `batch`; gradients,
            advantage statistics and metrics are averaged over `axis_name` (`lax.pmean`),
            so every device applies the same update (see `jaxlearn.parallel`).

    Returns:
        (params, opt_state, metrics averaged over all minibatch steps).
    """
    tx = _adam(config)
    n = batch.obs.shape[0]
    mb = n // config.num_minibatches

    def loss_fn(p, b):
        return ppo_loss(
            p,
            b,
            policy.evaluate,
            clip_eps=hparams.clip_eps,
            vf_coef=hparams.vf_coef,
            ent_coef=hparams.ent_coef,
            clip_value=config.clip_value,
            normalize_advantages=config.normalize_advantages,
            axis_name=axis_name,
        )

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def minibatch_step(carry, b):
        p, o = carry
        grads, info = grad_fn(p, b)
        if lora.has_adapters(grads):  # LoRA: the base network stays frozen
            grads = lora.freeze(grads)
        if axis_name is not None:
            grads, info = jax.lax.pmean((grads, info), axis_name)
        g_norm = optax.tree.norm(grads)
        scale = jnp.minimum(1.0, hparams.max_grad_norm / (g_norm + 1e-6))
        grads = jax.tree.map(lambda g: g * scale, grads)
        updates, o = tx.update(grads, o, p)
        p = jax.tree.map(lambda x, u: x - learning_rate * u, p, updates)
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


def make_learner(config: PPOConfig, data_shards: int = 1) -> Learner:
    """PPO as `init(key, hparams)` / `update(state, hparams)` over a `PPOState`.

    With `data_shards = D > 1` the learner is one device's part of a data-parallel agent:
    it runs `num_envs / D` envs and must be called inside `shard_map` over the axis
    `jaxlearn.parallel.DATA_AXIS`; gradients are averaged over it and episode metrics
    summed, so every device holds the same parameters (see `jaxlearn.parallel`).
    """
    axis = None
    if data_shards > 1:
        axis = _check_data_parallel(config, data_shards)
    env, fixed_params, curriculum = build_env(
        config,
        config.num_envs // data_shards,
        normalize_observations=config.normalize_observations,
        normalize_rewards=config.normalize_rewards,
        gamma=config.gamma,
        reward_clip=config.reward_clip,
    )
    policy = make_policy(config, env, fixed_params)
    tx = _adam(config)
    num_updates = config.num_updates

    def env_params_of(state: PPOState) -> Any:
        return fixed_params if curriculum is None else curriculum.env_params(state.curriculum)

    def init(key: jax.Array, hparams: PPOHParams) -> PPOState:
        del hparams  # nothing in the initial state depends on them
        k_net, k_env, k_run = jax.random.split(key, 3)
        if axis is not None:  # same network on every device, different envs
            k_env = jax.random.fold_in(k_env, jax.lax.axis_index(axis))
        c_state = None if curriculum is None else curriculum.init()
        env_params = fixed_params if curriculum is None else curriculum.env_params(c_state)
        obs, env_state = env.reset(k_env, env_params)
        params = policy.network.init(k_net, obs[:1])
        return PPOState(params, tx.init(params), env_state, obs, k_run, jnp.int32(0), c_state)

    def rollout_step(carry, _, env_params):
        params, env_state, obs, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        action, log_prob, value = policy.sample(k_act, params, obs)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, policy.to_env(action), env_params
        )
        tr = Transition(
            obs=obs,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            done=jnp.logical_or(terminated, truncated),
            final_obs=info["final_observation"],
            episode_return=info["episode_return"],
            episode_length=info["episode_length"],
            episode_done=info["episode_done"],
            episode_extras=episode_extras(info),
        )
        return (params, env_state, next_obs, key), tr

    def update(state: PPOState, hparams: PPOHParams) -> tuple[PPOState, dict[str, jax.Array]]:
        key, k_roll, k_learn = jax.random.split(state.key, 3)
        if axis is not None:
            k_roll = jax.random.fold_in(k_roll, jax.lax.axis_index(axis))
        env_params = with_reward_weights(env_params_of(state), hparams)
        (_, env_state, obs, _), traj = jax.lax.scan(
            lambda c, x: rollout_step(c, x, env_params),
            (state.params, state.env_state, state.obs, k_roll),
            None,
            config.num_steps,
            unroll=config.rollout_unroll,
        )
        # V of the observation each step led to (pre-reset), in one batched pass.
        next_values = policy.value(state.params, traj.final_obs)
        advantages, targets = gae(
            traj.reward,
            traj.value,
            next_values,
            traj.terminated,
            traj.done,
            hparams.gamma,
            hparams.gae_lambda,
        )
        flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
        batch = PPOBatch(
            obs=flat(traj.obs),
            action=jax.tree.map(flat, traj.action),
            log_prob=flat(traj.log_prob),
            value=flat(traj.value),
            advantage=flat(advantages),
            target=flat(targets),
        )
        if config.anneal_lr:
            frac = 1.0 - state.update_step.astype(jnp.float32) / num_updates
            lr = hparams.learning_rate * frac
        else:
            lr = hparams.learning_rate
        params, opt_state, metrics = learn(
            state.params, state.opt_state, batch, k_learn, hparams, lr, policy, config, axis
        )
        ep_done = traj.episode_done.astype(jnp.float32)
        metrics.update(
            episode_return_sum=jnp.sum(traj.episode_return * ep_done),
            episode_length_sum=jnp.sum(traj.episode_length * ep_done),
            episode_count=jnp.sum(ep_done),
            learning_rate=lr,
        )
        metrics.update(
            {f"episode_{k}_sum": jnp.sum(v * ep_done) for k, v in traj.episode_extras.items()}
        )
        if axis is not None:  # episodes of every device's envs
            episodes = {k: v for k, v in metrics.items() if k.startswith("episode_")}
            metrics.update(jax.lax.psum(episodes, axis))
        finite = jnp.isfinite(metrics["loss"]) & all_finite(params)
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        c_state = state.curriculum
        if curriculum is not None:
            c_state = curriculum.update(
                c_state,
                traj.episode_done,
                episode_outcomes(traj.episode_return, traj.episode_extras),
                hparams.curriculum,
            )
            metrics.update(curriculum.metrics(c_state))
        new_state = PPOState(params, opt_state, env_state, obs, key, state.update_step + 1, c_state)
        return new_state, metrics

    eval_env, _ = base_env(config)

    def evaluate_fn(state: PPOState, key: jax.Array, num_episodes: int) -> dict:
        """Greedy episodes of this seed's policy on its current env params."""
        norm = observation_normalizer(env, state.env_state)

        def act(params, obs):
            return policy.act_greedy(params, obs if norm is None else norm(obs))

        return evaluate(act, state.params, eval_env, env_params_of(state), key, num_episodes)

    return Learner(
        init,
        update,
        num_updates,
        config.batch_size,
        config.hparams(),
        curriculum,
        evaluate_fn,
    )


def _check_data_parallel(config: PPOConfig, shards: int) -> str:
    """Validate a data-parallel split; returns the axis name."""
    from jaxlearn.parallel import DATA_AXIS

    name = type(config).__name__
    if config.num_envs % shards:
        fits = [d for d in range(1, config.num_envs + 1) if config.num_envs % d == 0]
        fail(
            name,
            "num_envs",
            config.num_envs,
            f"must be a multiple of the {shards} devices "
            f"for data-parallel training; device counts that divide it: {fits}",
        )
    local = config.num_envs // shards * config.num_steps
    if local % config.num_minibatches:
        fail(
            name,
            "num_minibatches",
            config.num_minibatches,
            f"must divide each device's batch (num_envs / devices * num_steps = {local})",
        )
    for field in ("normalize_observations", "normalize_rewards"):
        if getattr(config, field):
            fail(
                name,
                field,
                True,
                "data-parallel training keeps per-device running "
                "statistics, which would differ; set it to false (not supported yet)",
            )
    if config.curriculum is not None:
        fail(
            name,
            "curriculum",
            config.curriculum,
            "data-parallel training of one agent does not support a curriculum yet",
        )
    return DATA_AXIS


def make_train(config: PPOConfig):
    """`train(key, hparams=None) -> (PPOState, metrics)`: the whole PPO run, pure and jittable.

    `metrics` is a dict of arrays with a leading `[num_updates]` axis.
    """
    return make_train_fn(make_learner(config))
