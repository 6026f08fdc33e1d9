"""PPO: GAE and loss against NumPy, config validation, vmap over seeds, hparams as data."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import distributions as D
from jaxlearn.algos.ppo import (
    PPOBatch,
    PPOConfig,
    gae,
    make_learner,
    make_train,
    ppo_loss,
)

TINY = dict(
    total_timesteps=4 * 16 * 3,
    num_envs=4,
    num_steps=16,
    num_minibatches=2,
    num_epochs=2,
    hidden_sizes=(8,),
)


def gae_numpy(rewards, values, next_values, terminated, done, gamma, lam):
    T, B = rewards.shape
    adv = np.zeros((T, B))
    last = np.zeros(B)
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv, adv + values


def test_gae_matches_numpy_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    T, B = 23, 5
    rewards = rng.normal(size=(T, B))
    values = rng.normal(size=(T, B))
    next_values = rng.normal(size=(T, B))
    terminated = rng.random((T, B)) < 0.1
    truncated = (rng.random((T, B)) < 0.1) & ~terminated
    done = terminated | truncated
    adv, ret = gae(
        *(jnp.asarray(x, jnp.float32) for x in (rewards, values, next_values)),
        jnp.asarray(terminated),
        jnp.asarray(done),
        0.97,
        0.9,
    )
    ref_adv, ref_ret = gae_numpy(rewards, values, next_values, terminated, done, 0.97, 0.9)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-4, atol=1e-5)


def test_gae_truncation_bootstraps_and_termination_does_not():
    # One env, two steps; step 0 ends the episode. With lambda = 1 the advantage of step 0
    # must be r0 + gamma * V(final obs) - V0 when truncated, and r0 - V0 when terminated.
    r = jnp.array([[1.0], [0.0]])
    v = jnp.array([[0.5], [0.0]])
    nv = jnp.array([[10.0], [0.0]])
    done = jnp.array([[True], [False]])
    adv_trunc, _ = gae(r, v, nv, jnp.array([[False], [False]]), done, 0.9, 1.0)
    adv_term, _ = gae(r, v, nv, jnp.array([[True], [False]]), done, 0.9, 1.0)
    assert float(adv_trunc[0, 0]) == pytest.approx(1.0 + 0.9 * 10.0 - 0.5)
    assert float(adv_term[0, 0]) == pytest.approx(1.0 - 0.5)


def _loss_numpy(logp_new, logp_old, adv, v_new, v_old, target, ent, clip, vf, ec):
    """(total loss, {term: value}) of the clipped-surrogate PPO loss, in float64."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = np.exp(logp_new - logp_old)
    pg = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv))
    v_clip = v_old + np.clip(v_new - v_old, -clip, clip)
    vl = 0.5 * np.mean(np.maximum((v_new - target) ** 2, (v_clip - target) ** 2))
    terms = dict(
        policy=pg,
        value=vl,
        entropy=ent.mean(),
        # KL(old || new) estimated per sample as r - 1 - log r (Schulman's k3)
        approx_kl=np.mean(ratio - 1.0 - np.log(ratio)),
        clip_fraction=np.mean(np.abs(ratio - 1.0) > clip),
    )
    return pg + vf * vl - ec * ent.mean(), terms


def test_ppo_loss_matches_numpy():
    rng = np.random.default_rng(1)
    n, k = 64, 3
    logits = rng.normal(size=(n, k)).astype(np.float32)
    action = rng.integers(0, k, size=n)
    v_new = rng.normal(size=n).astype(np.float32)
    logp = np.asarray(D.categorical_log_prob(jnp.asarray(logits), jnp.asarray(action)))
    # old log-probs spread around the new ones so that some ratios leave [0.8, 1.2]
    old_logp = (logp + rng.normal(size=n) * 0.3).astype(np.float32)
    batch = PPOBatch(
        obs=jnp.asarray(logits),  # the "network" below reads logits straight from obs
        action=jnp.asarray(action),
        log_prob=jnp.asarray(old_logp),
        value=jnp.asarray(rng.normal(size=n).astype(np.float32)),
        advantage=jnp.asarray(rng.normal(size=n).astype(np.float32)),
        target=jnp.asarray(rng.normal(size=n).astype(np.float32)),
    )

    def lev(params, obs, a):
        return D.categorical_log_prob(obs, a), D.categorical_entropy(obs), params["v"]

    loss, info = ppo_loss(
        {"v": jnp.asarray(v_new)}, batch, lev, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01
    )
    ent = np.asarray(D.categorical_entropy(jnp.asarray(logits)))
    ref, terms = _loss_numpy(
        logp,
        np.asarray(batch.log_prob),
        np.asarray(batch.advantage),
        v_new,
        np.asarray(batch.value),
        np.asarray(batch.target),
        ent,
        0.2,
        0.5,
        0.01,
    )
    assert float(loss) == pytest.approx(ref, rel=1e-4)
    assert float(info.total) == pytest.approx(ref, rel=1e-4)
    assert 0.1 < terms["clip_fraction"] < 0.9  # the batch exercises both sides of the clip
    for name, value in terms.items():
        assert float(getattr(info, name)) == pytest.approx(value, rel=1e-4, abs=1e-7), name


def test_distributions_against_closed_forms():
    mean = jnp.array([0.5, -1.0])
    log_std = jnp.array([0.0, np.log(2.0)])
    x = jnp.array([1.0, 1.0])
    ref = sum(
        -0.5 * ((xi - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        for xi, m, s in zip([1.0, 1.0], [0.5, -1.0], [1.0, 2.0], strict=True)
    )
    assert float(D.gaussian_log_prob(mean, log_std, x)) == pytest.approx(ref, rel=1e-5)
    u = jnp.array([0.3, -2.0])
    np.testing.assert_allclose(
        D.tanh_log_det_jacobian(u), np.sum(np.log(1 - np.tanh(u) ** 2)), rtol=1e-5
    )
    p = np.array([0.2, 0.3, 0.5])
    assert float(D.categorical_entropy(jnp.log(jnp.asarray(p)))) == pytest.approx(
        -(p * np.log(p)).sum(), rel=1e-5
    )


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_envs", 0, r"num_envs=0 is invalid: must be a positive integer"),
        ("num_steps", -5, r"num_steps=-5"),
        ("num_minibatches", 3, r"must divide num_envs \* num_steps = 512"),
        ("gamma", 1.5, r"gamma=1.5 is invalid: must be a finite number in \[0.0, 1.0\]"),
        ("learning_rate", 0.0, r"learning_rate=0.0"),
        ("env", "Nope-v0", r"env='Nope-v0' is invalid: must be a registered env: .*CartPole-v1"),
        ("activation", "sigmoid", r"activation='sigmoid' is invalid: must be one of"),
        ("hidden_sizes", (), r"hidden_sizes"),
        ("total_timesteps", 100, r"total_timesteps=100 is invalid: must be >= "),
    ],
)
def test_config_validation_messages(field, value, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**{field: value}).check_env()  # construction, then the checks with the env


def test_policy_must_fit_the_action_space():
    with pytest.raises(ValueError, match=r"policy='discrete'.*needs a continuous policy"):
        PPOConfig(env="Pendulum-v1", policy="discrete").check_env()
    with pytest.raises(ValueError, match=r"needs a discrete policy"):
        PPOConfig(env="CartPole-v1", policy="continuous").check_env()
    assert PPOConfig(env="Pendulum-v1").policy_kind() == "continuous"


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_vmap_over_seeds_equals_separate_runs(env):
    cfg = PPOConfig(env=env, **TINY)
    train = jax.jit(make_train(cfg))
    keys = jax.random.split(jax.random.key(0), 3)
    vs, vm = jax.jit(jax.vmap(make_train(cfg)))(keys)
    for i in range(3):
        s, m = train(keys[i])
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=2e-5, atol=2e-6), vm, m
        )
    assert vm["loss"].shape == (3, cfg.num_updates)
    assert np.all(np.isfinite(vm["loss"]))
    # Different seeds give different parameters.
    leaf = jax.tree.leaves(vs.params)[0]
    assert not np.allclose(leaf[0], leaf[1])


def test_hparams_are_data_and_do_not_recompile():
    cfg = PPOConfig(**TINY)
    traces = []

    def train(key, hp):
        traces.append(1)
        return make_train(cfg)(key, hp)

    f = jax.jit(train)
    hp = cfg.hparams()
    _, m1 = f(jax.random.key(0), hp)
    _, m2 = f(jax.random.key(0), hp.replace(learning_rate=jnp.float32(1e-2)))
    assert len(traces) == 1, "changing a hyperparameter value must not retrace"
    assert not np.allclose(m1["loss"], m2["loss"])
    # A batch of 3 configurations in one vmapped call: lane i is the run with ent_coef[i].
    ent_coefs = [0.0, 0.01, 0.1]
    hps = jax.tree.map(lambda x: jnp.stack([x, x, x]), hp)
    hps = hps.replace(ent_coef=jnp.array(ent_coefs, jnp.float32))
    keys = jax.random.split(jax.random.key(0), 3)
    _, mb = jax.jit(jax.vmap(make_train(cfg)))(keys, hps)
    assert mb["entropy"].shape == (3, cfg.num_updates)
    for i, c in enumerate(ent_coefs):
        _, m = f(keys[i], hp.replace(ent_coef=jnp.float32(c)))
        for name in ("loss", "entropy", "policy_loss", "value_loss", "grad_norm"):
            np.testing.assert_allclose(mb[name][i], m[name], rtol=2e-5, atol=2e-6, err_msg=name)
    assert len(traces) == 1
    # Same key, different ent_coef: the coefficient reaches the loss.
    _, m_same_key = f(keys[0], hp.replace(ent_coef=jnp.float32(ent_coefs[2])))
    assert not np.allclose(mb["loss"][0], m_same_key["loss"])


def test_continuous_actions_stay_in_bounds_with_tanh_squash():
    cfg = PPOConfig(env="Pendulum-v1", action_squash="tanh", log_std_init=2.0, **TINY)
    learner = make_learner(cfg)
    from jaxlearn.algos.ppo import make_policy
    from jaxlearn.envs import make_vec

    env, params = make_vec("Pendulum-v1", 4)
    policy = make_policy(cfg, env, params)
    state = learner.init(jax.random.key(0), learner.hparams)
    u, logp, _ = policy.sample(jax.random.key(1), state.params, state.obs)
    a = policy.to_env(u * 100.0)
    assert np.all(np.abs(np.asarray(a)) <= 2.0)
    assert np.all(np.isfinite(np.asarray(logp)))


def test_truncated_steps_bootstrap_inside_the_learner():
    """The same rollouts reported as time-limit truncations vs as terminations: only the
    truncated run may bootstrap from V(final obs), so its value targets (and loss) differ.
    A learner that folded truncation into termination would give identical numbers."""
    import gymnax

    from jaxlearn.envs import Wrapper, registry

    class TruncAsTerm(Wrapper):
        def step(self, key, state, action, params):
            obs, state, r, term, trunc, info = self._env.step(key, state, action, params)
            return obs, state, r, term | trunc, jnp.zeros_like(trunc), info

    genv, gparams = gymnax.make("CartPole-v1")
    gparams = gparams.replace(max_steps_in_episode=1)
    registry.register("CartPole-trunc-test", lambda: (genv, gparams), overwrite=True)
    registry.register("CartPole-term-test", lambda: (TruncAsTerm(genv), gparams), overwrite=True)

    def first_update(env_name):
        cfg = dataclasses.replace(PPOConfig(**TINY), env=env_name, gae_lambda=0.0)
        learner = make_learner(cfg)
        state = learner.init(jax.random.key(0), learner.hparams)
        return jax.jit(learner.update)(state, learner.hparams)[1]

    m_trunc = first_update("CartPole-trunc-test")
    m_term = first_update("CartPole-term-test")
    n = TINY["num_envs"] * TINY["num_steps"]
    for m in (m_trunc, m_term):  # every step ended a one-step episode
        assert float(m["episode_count"]) == n and float(m["episode_length_sum"]) == n
    # Same rollouts, same policy loss inputs except the targets: value losses differ.
    assert abs(float(m_trunc["value_loss"]) - float(m_term["value_loss"])) > 1e-6
