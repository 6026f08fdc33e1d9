"""The shared learner scaffold (`jaxlearn.algos.common`) and config fields (`algos.fields`).

References are computed here in NumPy from the definitions (optax's global-norm clip, Adam,
Polyak averaging), never copied from the code's output.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos import dqn, ppo
from jaxlearn.algos.base import make_train_fn
from jaxlearn.algos.common import (
    Episodes,
    adam_state,
    apply_gradients,
    finish_update,
    learning_rate_at,
    make_optimizer,
    update_target,
)
from jaxlearn.algos.fields import EnvConfig, data_fields, with_data_of
from jaxlearn.config import ConfigError, from_dict
from jaxlearn.envs.setup import ENV_FIELDS

# ---------------------------------------------------------------------------------------------
# Optimizer chain


def _np_adam_step(g, mu, nu, count, lr, eps, b1=0.9, b2=0.999):
    mu = b1 * mu + (1 - b1) * g
    nu = b2 * nu + (1 - b2) * g * g
    t = count + 1
    m_hat, v_hat = mu / (1 - b1**t), nu / (1 - b2**t)
    return -lr * m_hat / (np.sqrt(v_hat) + eps), mu, nu


@pytest.mark.parametrize("max_norm", [0.5, 100.0, np.inf])
def test_optimizer_chain_clips_then_adam_then_learning_rate(max_norm):
    """Two steps of `apply_gradients` with traced `max_grad_norm` and learning rate equal
    clip-by-global-norm (g / |g| * max above the bound), Adam, `-lr` in NumPy."""
    cfg = ppo.PPOConfig(adam_eps=1e-3)
    params = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3, 0.1]])}
    grads = [
        {"a": jnp.array([3.0, -4.0, 1.0]), "b": jnp.array([[2.0, -1.0]])},
        {"a": jnp.array([-0.2, 0.1, 0.3]), "b": jnp.array([[0.05, 0.4]])},
    ]
    lrs = [0.1, 0.05]

    @jax.jit
    def step(p, o, g, max_grad_norm, lr):
        tx = make_optimizer(cfg, max_grad_norm, lr)
        return apply_gradients(tx, g, o, p)[:3]

    p, o = params, make_optimizer(cfg).init(params)
    ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in ref.items()}
    nu = {k: np.zeros_like(v) for k, v in ref.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True)):
        p, o, norm = step(p, o, g, jnp.float32(max_norm), jnp.float32(lr))
        gn = {k: np.asarray(v, np.float64) for k, v in g.items()}
        ref_norm = np.sqrt(sum((v**2).sum() for v in gn.values()))
        assert float(norm) == pytest.approx(ref_norm, rel=1e-6)
        if ref_norm >= max_norm:
            gn = {k: v / ref_norm * max_norm for k, v in gn.items()}
        for k in ref:
            u, mu[k], nu[k] = _np_adam_step(gn[k], mu[k], nu[k], t, lr, cfg.adam_eps)
            ref[k] = ref[k] + u
    for k in ref:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-7, err_msg=k)
        np.testing.assert_allclose(adam_state(o).mu[k], mu[k], rtol=1e-5, atol=1e-8)
    assert int(adam_state(o).count) == 2


def test_learning_rate_anneals_linearly_to_zero():
    lr = jnp.float32(0.3)
    for step, want in [(0, 0.3), (5, 0.15), (9, 0.03)]:
        got = learning_rate_at(lr, jnp.int32(step), 10, anneal=True)
        assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(learning_rate_at(lr, jnp.int32(7), 10, anneal=False)) == pytest.approx(0.3)


def test_target_update_polyak_on_its_period():
    """`update_target` moves `target` to `tau * online + (1 - tau) * target` on steps that
    are multiples of `period`, and leaves it elsewhere; tau and period may be traced."""
    online, target = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([-1.0, 0.0])}
    f = jax.jit(update_target)
    for step, tau, period, want in [
        (4, 0.25, 2, 0.25 * np.array([1.0, 2.0]) + 0.75 * np.array([-1.0, 0.0])),
        (5, 0.25, 2, np.array([-1.0, 0.0])),
        (3, 1.0, 3, np.array([1.0, 2.0])),
    ]:
        got = f(target, online, jnp.float32(tau), jnp.int32(step), jnp.int32(period))
        np.testing.assert_allclose(got["w"], want, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The end of an update


def test_finish_update_sums_finished_episodes_and_flags_nonfinite():
    rng = np.random.default_rng(0)
    done = rng.random((5, 3)) < 0.4
    done[0, 0] = True
    returns = rng.normal(size=(5, 3)).astype(np.float32)
    lengths = rng.integers(1, 50, size=(5, 3)).astype(np.int32)
    success = (rng.random((5, 3)) < 0.5).astype(np.float32)
    episodes = Episodes(
        jnp.asarray(done), jnp.asarray(returns), jnp.asarray(lengths), {"success": success}
    )
    params = {"w": jnp.ones(3)}
    metrics, c_state = finish_update({"loss": jnp.float32(0.5)}, params, episodes, None, None, None)
    assert c_state is None
    assert float(metrics["episode_return_sum"]) == pytest.approx(returns[done].sum(), rel=1e-5)
    assert float(metrics["episode_length_sum"]) == lengths[done].sum()
    assert float(metrics["episode_count"]) == done.sum()
    assert float(metrics["episode_success_sum"]) == success[done].sum()
    assert float(metrics["nonfinite"]) == 0.0
    bad = {"w": jnp.array([1.0, jnp.nan, 0.0])}
    metrics, _ = finish_update({"loss": jnp.float32(0.5)}, bad, episodes, None, None, None)
    assert float(metrics["nonfinite"]) == 1.0
    metrics, _ = finish_update({"loss": jnp.float32(jnp.inf)}, params, episodes, None, None, None)
    assert float(metrics["nonfinite"]) == 1.0


# ---------------------------------------------------------------------------------------------
# A vmapped batch of hyperparameters: one program

PPO_TINY = dict(total_timesteps=64, num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1)
DQN_TINY = dict(
    total_timesteps=64,
    buffer_size=64,
    batch_size=8,
    learning_starts=16,
    train_frequency=4,
    target_update_period=8,
    hidden_sizes=(8,),
)


@pytest.mark.parametrize(
    "algo, cfg",
    [(ppo, ppo.PPOConfig(hidden_sizes=(8,), **PPO_TINY)), (dqn, dqn.DQNConfig(**DQN_TINY))],
    ids=["ppo", "dqn"],
)
def test_vmapped_hparams_compile_one_program(algo, cfg):
    """A batch of learning rates and clip bounds (the optimizer chain's inputs) traces the
    update once, and a second batch of other values runs the same compiled program; the
    lanes differ, so the values reach the chain."""
    learner = algo.make_learner(cfg)
    traces = []

    def counted(state, hparams):
        traces.append(1)
        return learner.update(state, hparams)

    train = jax.jit(jax.vmap(make_train_fn(learner._replace(update=counted))))
    keys = jnp.stack([jax.random.key(0)] * 2)

    def batch(lrs, norms):
        hp = jax.tree.map(lambda x: jnp.stack([x, x]), cfg.hparams())
        return hp.replace(
            learning_rate=jnp.array(lrs, jnp.float32), max_grad_norm=jnp.array(norms, jnp.float32)
        )

    state, _ = train(keys, batch([1e-3, 3e-2], [0.5, 1e-3]))
    train(keys, batch([2e-3, 1e-2], [1.0, 10.0]))
    assert len(traces) == 1
    w = jax.tree.leaves(state.params)[0]
    assert not np.allclose(w[0], w[1])


# ---------------------------------------------------------------------------------------------
# Evaluation episodes: greedy and sampled


@pytest.mark.parametrize(
    "algo, cfg",
    [
        (ppo, ppo.PPOConfig(hidden_sizes=(8,), **PPO_TINY)),
        (ppo, ppo.PPOConfig(hidden_sizes=(8,), core="gru", core_size=8, **PPO_TINY)),
        (dqn, dqn.DQNConfig(epsilon_end=1.0, **DQN_TINY)),
    ],
    ids=["ppo", "ppo-gru", "dqn"],
)
def test_sampled_episodes_draw_actions_as_in_training(algo, cfg):
    """Untrained on CartPole: the greedy policy repeats one action (short episodes), the
    sampled one draws from its key (DQN at epsilon_end 1.0: uniformly), so the episodes
    differ; each is the same for the same key (tests/test_evaluation.py checks the keys)."""
    learner = algo.make_learner(cfg)
    state = learner.init(jax.random.key(0), learner.hparams)
    run = jax.jit(
        lambda k: (learner.greedy_episodes(state, k, 16), learner.sampled_episodes(state, k, 16))
    )
    greedy, sampled = run(jax.random.key(1))
    again = run(jax.random.key(1))[1]
    np.testing.assert_array_equal(sampled["returns"], again["returns"])
    assert sampled["returns"].shape == greedy["returns"].shape == (16,)
    assert not np.array_equal(sampled["lengths"], greedy["lengths"])
    assert np.all(np.asarray(sampled["done"]))  # CartPole episodes of a random policy end


# ---------------------------------------------------------------------------------------------
# Config fields


def test_data_fields_and_hparams_come_from_one_declaration():
    for cfg, hp_cls in [(ppo.PPOConfig(), ppo.PPOHParams), (dqn.DQNConfig(), dqn.DQNHParams)]:
        declared = [f.name for f in dataclasses.fields(cfg) if f.metadata.get("jaxlearn.data")]
        assert list(cfg.data_fields()) == declared == list(data_fields(cfg))
        hp_fields = [f.name for f in dataclasses.fields(hp_cls)]
        assert hp_fields == [*declared, "reward_weights", "curriculum"]
        hp = cfg.hparams()
        for name in declared:  # each leaf holds the config's value as float32
            assert float(getattr(hp, name)) == pytest.approx(getattr(cfg, name), rel=1e-6)
    # gamma is data, except while it is also the reward normaliser's discount
    assert "gamma" in ppo.PPOConfig().data_fields()
    assert "gamma" not in ppo.PPOConfig(normalize_rewards=True).data_fields()
    assert {"num_envs", "hidden_sizes", "adam_eps"}.isdisjoint(dqn.DQNConfig().data_fields())


def test_with_data_of_keeps_only_what_fixes_the_program():
    base = ppo.PPOConfig(env="Navigation2D-v0")
    trial = dataclasses.replace(base, learning_rate=1e-2, reward_weights={"collision": -3.0})
    assert with_data_of(trial, base) == base  # only data differ: one program
    wider = dataclasses.replace(trial, hidden_sizes=(32,))
    assert with_data_of(wider, base) == dataclasses.replace(base, hidden_sizes=(32,))


def test_env_fields_are_one_env_config_and_flat_keys_still_load():
    env_fields = [f.name for f in dataclasses.fields(EnvConfig)]
    assert tuple(env_fields) == ENV_FIELDS
    for cls, env in ((ppo.PPOConfig, "Navigation2D-v0"), (dqn.DQNConfig, "Exploration-v0")):
        assert issubclass(cls, EnvConfig)
        cfg = from_dict(cls, {"env": env, "reward_weights": "{collision: -2}"})
        assert cfg.env == env and cfg.reward_weights == {"collision": -2}
        assert float(cfg.hparams().reward_weights["collision"]) == -2.0


def test_env_checks_run_at_the_edge_not_at_construction():
    cfg = dqn.DQNConfig(env="Pendulum-v1")  # constructing builds no env
    with pytest.raises(ConfigError, match=r"env='Pendulum-v1' .* needs a Discrete action"):
        cfg.check_env()
    with pytest.raises(ConfigError, match=r"needs a Discrete action"):
        from_dict(dqn.DQNConfig, {"env": "Pendulum-v1"})
    with pytest.raises(ConfigError, match=r"needs a Discrete action"):
        dqn.make_learner(cfg)  # a config built in Python: checked before anything compiles
    with pytest.raises(ConfigError, match=r"policy='discrete'.*needs a continuous policy"):
        ppo.make_learner(ppo.PPOConfig(env="Pendulum-v1", policy="discrete"))
