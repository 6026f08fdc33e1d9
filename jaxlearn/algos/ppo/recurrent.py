"""Recurrent PPO (`core: gru`): the core's state lives in the train state and the rollout,
is reset where an episode ends, and the update replays each env's whole sequence from the
state it started the rollout with (truncated BPTT over `num_steps`; minibatches are made of
whole env sequences, never of single time steps).

`make_recurrent_learner(config)` is `make_learner` for a config with `core != "none"`;
`jaxlearn.algos.ppo.train.make_learner` dispatches to it, so the MLP path is untouched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxlearn import distributions as D
from jaxlearn import spaces
from jaxlearn.algos.base import Learner
from jaxlearn.algos.common import (
    Episodes,
    episodes_of,
    finish_update,
    learning_rate_at,
    make_env_stack,
    make_optimizer,
    reset_envs,
)
from jaxlearn.algos.ppo.config import PPOConfig, PPOHParams
from jaxlearn.algos.ppo.learn import learn
from jaxlearn.algos.ppo.losses import PPOBatch, gae
from jaxlearn.algos.ppo.networks import RecurrentActorCritic
from jaxlearn.algos.ppo.policy import box_to_env
from jaxlearn.config import fail
from jaxlearn.envs.setup import with_reward_weights
from jaxlearn.envs.wrappers import observation_normalizer
from jaxlearn.evaluation import run_episodes
from jaxlearn.recurrent import initial_state, state_size


@struct.dataclass
class RecurrentPPOState:
    """`PPOState` plus the core's state: everything a recurrent PPO run carries."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    key: jax.Array
    update_step: jax.Array  # [] int32 updates done so far
    # [num_envs, S] core state before `obs`, not yet reset (S: jaxlearn.recurrent.state_size)
    hidden: jax.Array
    first: jax.Array  # [num_envs] bool: `obs` starts an episode (reset `hidden` on it)
    curriculum: Any = None


class RecurrentPolicy(NamedTuple):
    """The recurrent network plus how actions are sampled, scored and chosen greedily.

    Sequences are env-major for the update (`[B, T, ...]`), one step for acting (`[B, ...]`).
    """

    network: RecurrentActorCritic
    sample: Any  # (key, params, hidden, obs, first) -> (hidden, action, log_prob, value)
    log_prob_entropy_value: Any  # (params, (h0, obs, first), action) -> 3 x [B, T]
    to_env: Any  # action -> env action
    act_greedy: Any  # (params, hidden, obs) -> (hidden, env action): no resets
    value: Any  # (params, hidden, obs) -> V(obs) [B], continuing from `hidden`


def sampled_act(policy: RecurrentPolicy) -> Any:
    """`(params, hidden [B, H], obs [B, ...], key) -> (hidden, env action [B, ...])`: an
    action drawn as in training, continuing from `hidden` (no reset), for evaluation's
    `sampled` policy and `ExportedPolicy.sample`."""

    def act(params, hidden, obs, key):
        no_reset = jnp.zeros(obs.shape[0], jnp.bool_)
        hidden, action, _, _ = policy.sample(key, params, hidden, obs, no_reset)
        return hidden, policy.to_env(action)

    return act


class RecurrentTransition(NamedTuple):
    """One rollout step for all envs; stacked by the scan to [T, num_envs, ...]."""

    obs: jax.Array
    first: jax.Array  # the core was reset before this step
    hidden: jax.Array  # the core state after this step (to bootstrap from final_obs)
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    episodes: Episodes


def make_recurrent_policy(config: PPOConfig, env: Any, env_params: Any) -> RecurrentPolicy:
    """`RecurrentActorCritic` with a categorical (Discrete) or Gaussian (Box) policy."""
    space = spaces.from_gymnax(env.action_space(env_params))
    obs_shape = tuple(env.observation_space(env_params).shape)
    discrete = isinstance(space, spaces.Discrete)
    net = RecurrentActorCritic(
        action_dim=space.n if discrete else spaces.flat_dim(space),
        discrete=discrete,
        core_size=config.core_size,
        core_kind=config.core,
        core_layers=config.core_layers,
        obs_ndim=len(obs_shape),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        log_std_init=config.log_std_init,
        **config.network_kwargs(),
    )
    squash = config.action_squash == "tanh"
    if not discrete:
        low = jnp.asarray(space.low, jnp.float32)
        high = jnp.asarray(space.high, jnp.float32)

    def draw(key, out):
        if discrete:
            return D.categorical_sample(key, out)
        return D.gaussian_sample(key, *out)

    def score(out, action):
        if discrete:
            return D.categorical_log_prob(out, action), D.categorical_entropy(out)
        mean, log_std = out
        lp = D.gaussian_log_prob(mean, log_std, action)
        lp = lp - D.tanh_log_det_jacobian(action) if squash else lp
        return lp, D.gaussian_entropy(log_std)

    def to_env(action):
        return action if discrete else box_to_env(action, low, high, squash)

    def step(params, hidden, obs, first):
        hidden, (out, value) = net.apply(params, hidden, obs[None], first[None])
        return hidden, jax.tree.map(lambda x: x[0], out), value[0]

    def sample(key, params, hidden, obs, first):
        hidden, out, value = step(params, hidden, obs, first)
        action = draw(key, out)
        return hidden, action, score(out, action)[0], value

    def log_prob_entropy_value(params, seq, action):
        h0, obs, first = seq  # [B, H], [B, T, ...], [B, T]
        tm = lambda x: jnp.swapaxes(x, 0, 1)  # env-major <-> time-major
        _, (out, value) = net.apply(params, h0, tm(obs), tm(first))
        lp, ent = score(jax.tree.map(tm, out), action)
        return lp, ent, tm(value)

    def act_greedy(params, hidden, obs):
        hidden, out, _ = step(params, hidden, obs, jnp.zeros(obs.shape[0], jnp.bool_))
        return hidden, to_env(D.categorical_mode(out) if discrete else out[0])

    def value(params, hidden, obs):
        return step(params, hidden, obs, jnp.zeros(obs.shape[0], jnp.bool_))[2]

    return RecurrentPolicy(net, sample, log_prob_entropy_value, to_env, act_greedy, value)


def make_recurrent_learner(config: PPOConfig, data_shards: int = 1) -> Learner:
    """Recurrent PPO as `init(key, hparams)` / `update(state, hparams)` over a
    `RecurrentPPOState` (one device; data parallelism is not supported yet)."""
    if data_shards > 1:
        fail(type(config).__name__, "core", config.core, "data-parallel training needs core: none")
    stack = make_env_stack(
        config,
        config.num_envs,
        normalize_observations=config.normalize_observations,
        normalize_rewards=config.normalize_rewards,
        gamma=config.gamma,
        reward_clip=config.reward_clip,
    )
    env = stack.env
    policy = make_recurrent_policy(config, env, stack.params)
    num_updates = config.num_updates
    n_envs = config.num_envs
    size = state_size(config.core, config.core_size, config.core_layers)

    def init(key: jax.Array, hparams: PPOHParams) -> RecurrentPPOState:
        del hparams
        k_net, k_run, obs, env_state, c_state = reset_envs(key, stack, None)
        h = initial_state(1, size)
        params = policy.network.init(k_net, h, obs[None, :1], jnp.ones((1, 1), jnp.bool_))
        opt_state = make_optimizer(config).init(params)
        return RecurrentPPOState(
            params,
            opt_state,
            env_state,
            obs,
            k_run,
            jnp.int32(0),
            initial_state(n_envs, size),
            jnp.ones(n_envs, jnp.bool_),
            c_state,
        )

    def rollout_step(carry, _, env_params):
        params, env_state, obs, first, hidden, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        hidden, action, log_prob, value = policy.sample(k_act, params, hidden, obs, first)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, policy.to_env(action), env_params
        )
        done = jnp.logical_or(terminated, truncated)
        tr = RecurrentTransition(
            obs=obs,
            first=first,
            hidden=hidden,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            done=done,
            final_obs=info["final_observation"],
            episodes=episodes_of(info),
        )
        return (params, env_state, next_obs, done, hidden, key), tr

    def update(state: RecurrentPPOState, hparams: PPOHParams):
        key, k_roll, k_learn = jax.random.split(state.key, 3)
        env_params = with_reward_weights(stack.params_of(state.curriculum), hparams)
        carry = (state.params, state.env_state, state.obs, state.first, state.hidden, k_roll)
        (_, env_state, obs, first, hidden, _), traj = jax.lax.scan(
            lambda c, x: rollout_step(c, x, env_params),
            carry,
            None,
            config.num_steps,
            unroll=config.rollout_unroll,
        )
        # V of the observation each step led to (pre-reset), continuing from the core state
        # after that step: one batched pass over all T x B steps.
        t, b = traj.reward.shape
        flat = lambda x: x.reshape(t * b, *x.shape[2:])
        next_values = policy.value(state.params, flat(traj.hidden), flat(traj.final_obs))
        advantages, targets = gae(
            traj.reward,
            traj.value,
            next_values.reshape(t, b),
            traj.terminated,
            traj.done,
            hparams.gamma,
            hparams.gae_lambda,
        )
        em = lambda x: jnp.swapaxes(x, 0, 1)  # [T, B, ...] -> [B, T, ...]: whole sequences
        batch = PPOBatch(
            obs=(state.hidden, em(traj.obs), em(traj.first)),
            action=jax.tree.map(em, traj.action),
            log_prob=em(traj.log_prob),
            value=em(traj.value),
            advantage=em(advantages),
            target=em(targets),
        )
        lr = learning_rate_at(
            hparams.learning_rate, state.update_step, num_updates, config.anneal_lr
        )
        params, opt_state, metrics = learn(
            state.params, state.opt_state, batch, k_learn, hparams, lr, policy, config
        )
        metrics["learning_rate"] = lr
        metrics, c_state = finish_update(
            metrics, params, traj.episodes, stack.curriculum, state.curriculum, hparams
        )
        new_state = RecurrentPPOState(
            params, opt_state, env_state, obs, key, state.update_step + 1, hidden, first, c_state
        )
        return new_state, metrics

    def episodes(sampled: bool):
        def run(state: RecurrentPPOState, key: jax.Array, num_episodes: int):
            norm = observation_normalizer(env, state.env_state)
            see = (lambda obs: obs) if norm is None else norm
            draw = sampled_act(policy)

            def greedy(params, hidden, obs):
                return policy.act_greedy(params, hidden, see(obs))

            def sample(params, hidden, obs, key):
                return draw(params, hidden, see(obs), key)

            return run_episodes(
                sample if sampled else greedy,
                state.params,
                stack.eval_env,
                stack.params_of(state.curriculum),
                key,
                num_episodes,
                carry=initial_state(num_episodes, size),
                sampled=sampled,
            )

        return run

    return Learner(
        init,
        update,
        num_updates,
        config.batch_size,
        config.hparams(),
        stack.curriculum,
        episodes(sampled=False),
        episodes(sampled=True),
    )
