"""PPO's policy: the actor-critic network and how actions are sampled, scored, sent to the
env and chosen greedily, for Discrete, Box and Hybrid action spaces and several agents."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import distributions as D
from jaxlearn import spaces
from jaxlearn.algos.ppo.config import PPOConfig
from jaxlearn.algos.ppo.networks import ActorCritic


class Policy(NamedTuple):
    """The network plus how actions are sampled, scored and sent to the env."""

    network: ActorCritic
    sample: Any  # (key, params, obs) -> (action, log_prob, value)
    log_prob_entropy_value: Any  # (params, obs, action) -> (log_prob, entropy, value)
    to_env: Any  # action -> env action (clipped/squashed into the Box)
    act_greedy: Any  # (params, obs) -> env action (argmax or mean, for evaluation)
    value: Any  # (params, obs) -> V(obs) [...]


def sampled_act(policy: Policy) -> Any:
    """`(params, obs [B, ...], key) -> env action [B, ...]`: an action drawn as in training
    (the rollout's sample, sent to the env), for evaluation's `sampled` policy and
    `ExportedPolicy.sample`."""

    def act(params, obs, key):
        return policy.to_env(policy.sample(key, params, obs)[0])

    return act


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
        **config.network_kwargs(),
    )

    def value_fn(params, obs):
        return net.apply(params, obs, method=ActorCritic.value)

    if discrete:

        def sample(key, params, obs):
            logits, value = net.apply(params, obs)
            action = D.categorical_sample(key, logits)
            return action, D.categorical_log_prob(logits, action), value

        def log_prob_entropy_value(params, obs, action):
            logits, value = net.apply(params, obs)
            return D.categorical_log_prob(logits, action), D.categorical_entropy(logits), value

        def to_env(action):
            return action

        def act_greedy(params, obs):
            return D.categorical_mode(net.apply(params, obs, method=ActorCritic.policy))

        return Policy(net, sample, log_prob_entropy_value, to_env, act_greedy, value_fn)

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

    def log_prob_entropy_value(params, obs, u):
        (mean, log_std), value = net.apply(params, obs)
        # With tanh squashing the entropy has no closed form; the Gaussian's is the usual proxy.
        return log_prob_of(mean, log_std, u), D.gaussian_entropy(log_std), value

    def to_env(u):
        return box_to_env(u, low, high, squash)

    def act_greedy(params, obs):
        mean, _ = net.apply(params, obs, method=ActorCritic.policy)
        return to_env(mean)

    return Policy(net, sample, log_prob_entropy_value, to_env, act_greedy, value_fn)


def box_to_env(u: jax.Array, low: jax.Array, high: jax.Array, squash: bool) -> jax.Array:
    """A Gaussian sample `u` as a Box action: clipped, or tanh-squashed into [low, high]."""
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
    agent axis and every Box leaf's shape starts with it, while a Discrete(n) leaf is one
    choice per agent (the env gets `[num_agents]` int32 for it): the same parameters act for
    each agent (parameter sharing), the joint log-probability also sums over agents, and the
    value is the mean of the per-agent values (one shared team reward).

    The stored action is a dict: `"discrete"` `[..., (A,) n_discrete]` int32 and
    `"continuous"` `[..., (A,) d]` float32 (the pre-squash Gaussian sample).
    """
    multi = num_agents > 1
    layout = []  # (path, kind, size, low, high, leaf shape)
    num_logits = cont_dim = 0
    for path, leaf in spaces.leaves(space):
        name = "/".join(path) or "action"
        if isinstance(leaf, spaces.Discrete):  # per agent when multi: logits [..., A, n]
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
        **config.network_kwargs(),
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

    def log_prob_entropy_value(params, obs, action):
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
                leaf = box_to_env(u, low, high, squash)
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

    return Policy(net, sample, log_prob_entropy_value, to_env, act_greedy, value_fn)
