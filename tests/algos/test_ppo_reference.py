"""Known-answer tests of one PPO learner step against a plain NumPy re-implementation.

`learn` runs on a tabular policy (logits and values indexed by a state id), whose loss
gradient has a closed form, so every part of the update is recomputed in NumPy: normalised
or raw advantages, the clipped surrogate, the value loss with and without clipping, the
entropy bonus, global-norm gradient clipping, Adam, and the minibatch permutation drawn
from each epoch key. `make_learner`'s `update` runs on a deterministic counter env whose
episodes end by truncation or termination, so its GAE inputs are known exactly.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from jaxlearn.algos.common import adam_state, make_optimizer
from jaxlearn.algos.ppo import Policy, PPOBatch, PPOConfig, learn, make_learner
from jaxlearn.envs import registry

# ---------------------------------------------------------------------------------------
# `learn` on a tabular policy

S, A = 6, 3  # states, actions
N, MINIBATCHES, EPOCHS = 24, 4, 2
CLIP_EPS, VF_COEF, ENT_COEF, MAX_GRAD_NORM, LR, ADAM_EPS = 0.2, 0.5, 0.05, 0.3, 0.05, 1e-5


def _tabular_log_prob_entropy_value(params, obs, action):
    """The "network": log pi(a|s), entropy and V(s) read from tables indexed by `obs`."""
    logp_all = jax.nn.log_softmax(params["logits"][obs])
    log_prob = jnp.take_along_axis(logp_all, action[:, None], axis=1)[:, 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=1)
    return log_prob, entropy, params["v"][obs]


TABULAR = Policy(None, None, _tabular_log_prob_entropy_value, None, None, None)


def _problem(seed=0):
    """Initial tables and a batch whose old policy/values differ from the current ones, so
    ratio clipping and value clipping are both active for some samples."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 0.5, (S, A))
    v = rng.normal(0.0, 1.0, S)
    obs = np.concatenate([np.arange(S), rng.integers(0, S, N - S)])
    action = rng.integers(0, A, N)
    old_logits = logits + rng.normal(0.0, 0.3, (S, A))
    old_logp = _log_softmax(old_logits)[obs, action]
    value = v[obs] + rng.normal(0.0, 0.3, N)
    batch = dict(
        obs=obs,
        action=action,
        log_prob=old_logp,
        value=value,
        advantage=rng.normal(1.0, 2.0, N),  # mean far from 0, std far from 1
        target=value + rng.normal(0.0, 1.0, N),
    )
    return {"logits": logits, "v": v}, batch


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _loss_and_grad_numpy(p, b, normalize, clip_value):
    """PPO loss terms on minibatch `b` and the closed-form gradient w.r.t. the tables."""
    m = len(b["obs"])
    s, a = b["obs"], b["action"]
    adv = b["advantage"]
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    logp_all = _log_softmax(p["logits"][s])  # [m, A]
    prob = np.exp(logp_all)
    logp = logp_all[np.arange(m), a]
    ratio = np.exp(logp - b["log_prob"])
    clipped = np.clip(ratio, 1 - CLIP_EPS, 1 + CLIP_EPS)
    policy = -np.mean(np.minimum(ratio * adv, clipped * adv))
    # d(-min(r A, clip(r) A))/d logp: -r A unless the clipped branch is taken and clips.
    live = (ratio * adv <= clipped * adv) | (np.abs(ratio - 1) <= CLIP_EPS)
    d_logp = -adv * ratio * live / m
    onehot = np.eye(A)[a]
    g_logits_rows = d_logp[:, None] * (onehot - prob)

    ent = -np.sum(prob * logp_all, axis=1)
    # dH/dlogit_j = -p_j (log p_j + H); the loss has -ent_coef * mean(H).
    g_logits_rows += -ENT_COEF / m * (-prob * (logp_all + ent[:, None]))

    v = p["v"][s]
    unclipped = (v - b["target"]) ** 2
    if clip_value:
        v_clip = b["value"] + np.clip(v - b["value"], -CLIP_EPS, CLIP_EPS)
        vc = (v_clip - b["target"]) ** 2
        value_loss = 0.5 * np.mean(np.maximum(unclipped, vc))
        inside = np.abs(v - b["value"]) <= CLIP_EPS
        d_v = np.where(unclipped >= vc, v - b["target"], (v_clip - b["target"]) * inside) / m
    else:
        value_loss = 0.5 * np.mean(unclipped)
        d_v = (v - b["target"]) / m
    g_logits = np.zeros((S, A))
    np.add.at(g_logits, s, g_logits_rows)
    g_v = np.zeros(S)
    np.add.at(g_v, s, VF_COEF * d_v)
    info = dict(
        loss=policy + VF_COEF * value_loss - ENT_COEF * ent.mean(),
        policy_loss=policy,
        value_loss=value_loss,
        entropy=ent.mean(),
        approx_kl=np.mean(ratio - 1 - (logp - b["log_prob"])),
        clip_fraction=np.mean(np.abs(ratio - 1) > CLIP_EPS),
    )
    return {"logits": g_logits, "v": g_v}, info


def _learn_numpy(params, batch, perms, normalize, clip_value, max_grad_norm=MAX_GRAD_NORM):
    """`num_epochs` passes, each over the batch permuted by `perms[e]` in equal minibatches;
    every minibatch: gradient, global-norm clip, Adam (b1 0.9, b2 0.999), step of size LR."""
    p = {k: v.copy() for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    infos, norms, scales = [], [], []
    t = 0
    mb = N // MINIBATCHES
    for perm in perms:
        for j in range(MINIBATCHES):
            idx = perm[j * mb : (j + 1) * mb]
            g, info = _loss_and_grad_numpy(
                p, {k: v[idx] for k, v in batch.items()}, normalize, clip_value
            )
            norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
            # optax.clip_by_global_norm: unchanged below the bound, else g / |g| * bound
            scale = 1.0 if norm < max_grad_norm else max_grad_norm / norm
            t += 1
            for k in p:
                gk = g[k] * scale
                mu[k] = 0.9 * mu[k] + 0.1 * gk
                nu[k] = 0.999 * nu[k] + 0.001 * gk**2
                m_hat = mu[k] / (1 - 0.9**t)
                v_hat = nu[k] / (1 - 0.999**t)
                p[k] = p[k] - LR * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
            infos.append(info)
            norms.append(norm)
            scales.append(scale)
    metrics = {k: np.mean([i[k] for i in infos]) for k in infos[0]}
    metrics["grad_norm"] = np.mean(norms)
    return p, mu, nu, metrics, np.array(scales)


def _config(normalize, clip_value):
    return PPOConfig(
        num_envs=4,
        num_steps=N // 4,
        total_timesteps=N,
        num_minibatches=MINIBATCHES,
        num_epochs=EPOCHS,
        clip_eps=CLIP_EPS,
        vf_coef=VF_COEF,
        ent_coef=ENT_COEF,
        max_grad_norm=MAX_GRAD_NORM,
        adam_eps=ADAM_EPS,
        normalize_advantages=normalize,
        clip_value=clip_value,
        hidden_sizes=(4,),
    )


def _epoch_perms(key):
    """The permutation each epoch must use: one per key of `split(key, num_epochs)`."""
    return [np.asarray(jax.random.permutation(k, N)) for k in jax.random.split(key, EPOCHS)]


@pytest.mark.parametrize("normalize,clip_value", [(True, True), (False, False), (True, False)])
def test_learn_matches_numpy_update(normalize, clip_value):
    params, batch = _problem()
    cfg = _config(normalize, clip_value)
    key = jax.random.key(3)
    f32 = lambda d: {k: jnp.asarray(v, jnp.float32) for k, v in d.items()}  # noqa: E731
    jparams = f32(params)
    jbatch = PPOBatch(
        **{
            k: jnp.asarray(v, jnp.int32 if k in ("obs", "action") else jnp.float32)
            for k, v in batch.items()
        }
    )
    opt_state = make_optimizer(cfg).init(jparams)
    run = jax.jit(learn, static_argnames=("policy", "config"))
    new_params, new_opt, metrics = run(
        jparams, opt_state, jbatch, key, cfg.hparams(), jnp.float32(LR), policy=TABULAR, config=cfg
    )
    ref, mu, nu, ref_metrics, scales = _learn_numpy(
        params, batch, _epoch_perms(key), normalize, clip_value
    )
    assert 0 < scales.min() < 1.0, "the gradient clip must be active on some steps"
    assert 0 < ref_metrics["clip_fraction"] < 1, "some ratios must leave the clip range"
    for k in ref:
        np.testing.assert_allclose(new_params[k], ref[k], rtol=1e-4, atol=2e-5, err_msg=k)
        new_adam = adam_state(new_opt)
        np.testing.assert_allclose(new_adam.mu[k], mu[k], rtol=1e-3, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(new_adam.nu[k], nu[k], rtol=1e-3, atol=1e-8, err_msg=k)
    assert int(adam_state(new_opt).count) == EPOCHS * MINIBATCHES
    for k, v in ref_metrics.items():
        assert float(metrics[k]) == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_numpy_reference_tells_each_wiring_choice_apart():
    """The known answer above is only a net if getting any one choice wrong moves the
    parameters by far more than the test's tolerance."""
    params, batch = _problem()
    perms = _epoch_perms(jax.random.key(3))
    ident = [np.arange(N)] * EPOCHS

    def final(perms=perms, normalize=True, clip_value=True, max_grad_norm=MAX_GRAD_NORM):
        p = _learn_numpy(params, batch, perms, normalize, clip_value, max_grad_norm)[0]
        return np.concatenate([p["logits"].ravel(), p["v"]])

    base = final()
    variants = {
        "no shuffle": final(perms=ident),
        "same permutation each epoch": final(perms=[perms[0]] * EPOCHS),
        "raw advantages": final(normalize=False),
        "no value clip": final(clip_value=False),
        "no gradient clip": final(max_grad_norm=1e9),
    }
    for name, p in variants.items():
        assert np.max(np.abs(p - base)) > 1e-2, name


# ---------------------------------------------------------------------------------------
# `make_learner(config).update` on a deterministic env: GAE inputs known exactly

TRUNC_AT, TERM_AT = 3, 2  # even episodes hit the time limit, odd ones terminate


@struct.dataclass
class CounterState:
    time: jax.Array  # steps into the current episode
    episode: jax.Array  # episodes finished since reset


class Counter(environment.Environment):
    """Obs and reward depend only on the step count, never on the action. Episodes
    alternate: even ones are truncated after TRUNC_AT steps, odd ones terminate after
    TERM_AT. The env resets itself, reporting the pre-reset obs as `final_observation`."""

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=TRUNC_AT)

    def reset(self, key, params=None):
        state = CounterState(jnp.int32(0), jnp.int32(0))
        return _counter_obs(state.time, jnp), state

    def step(self, key, state, action, params=None):
        t = state.time + 1
        odd = state.episode % 2 == 1
        terminated = odd & (t >= TERM_AT)
        truncated = ~odd & (t >= TRUNC_AT)
        done = terminated | truncated
        new = CounterState(jnp.where(done, 0, t), state.episode + done.astype(jnp.int32))
        reward = 1.0 + 0.5 * state.time.astype(jnp.float32)
        info = {"final_observation": _counter_obs(t, jnp)}
        return _counter_obs(new.time, jnp), new, reward, terminated, truncated, info

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-10.0, 10.0, (3,), jnp.float32)


def _counter_obs(t, xp):
    t = xp.asarray(t, xp.float32)
    return xp.stack([t / 2.0, (t - 1.0) ** 2 / 4.0, xp.cos(t)], axis=-1)


def _counter_rollout(num_steps):
    """Step times, and which steps were truncated / terminated, of every env's rollout."""
    times, trunc, term = [], [], []
    t, episode = 0, 0
    for _ in range(num_steps):
        times.append(t)
        t += 1
        trunc.append(episode % 2 == 0 and t == TRUNC_AT)
        term.append(episode % 2 == 1 and t == TERM_AT)
        if trunc[-1] or term[-1]:
            t, episode = 0, episode + 1
    return np.array(times), np.array(trunc), np.array(term)


def _critic_numpy(params, obs):
    """V(obs) of the ActorCritic's critic: tanh MLP then a linear head, in float64."""
    p = params["params"]
    x = np.asarray(obs, np.float64)
    for name in sorted(p["critic_torso"]):
        layer = p["critic_torso"][name]
        x = np.tanh(x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"]))
    head = p["value_head"]
    return (x @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"]))[..., 0]


def _gae_numpy(rewards, values, next_values, terminated, done, gamma, lam):
    adv = np.zeros_like(values)
    last = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv


@functools.cache
def _counter_learner():
    """(config, learner, jitted init, jitted update) on the counter env, compiled once."""
    registry.register("PPORefCounter-v0", lambda: Counter(), overwrite=True)
    cfg = PPOConfig(
        env="PPORefCounter-v0",
        num_envs=2,
        num_steps=8,
        total_timesteps=2 * 8 * 4,
        num_minibatches=1,
        num_epochs=1,
        gamma=0.9,
        gae_lambda=0.8,
        normalize_advantages=False,
        anneal_lr=True,
        hidden_sizes=(4,),
    )
    learner = make_learner(cfg)
    return cfg, learner, jax.jit(learner.init), jax.jit(learner.update)


def _counter_advantages(params, cfg, bootstrap_from="final_obs"):
    """NumPy GAE of the counter env's rollout (the same in every env: actions do not
    matter). A truncated step bootstraps from V of the observation before the auto-reset;
    a terminated step does not bootstrap."""
    times, trunc, term = _counter_rollout(cfg.num_steps)
    done = trunc | term
    values = _critic_numpy(params, _counter_obs(times, np))
    next_t = times + 1
    if bootstrap_from == "reset_obs":  # what the next rollout step sees
        next_t = np.where(done, 0, next_t)
    next_values = _critic_numpy(params, _counter_obs(next_t, np))
    rewards = 1.0 + 0.5 * times
    return _gae_numpy(rewards, values, next_values, term, done, cfg.gamma, cfg.gae_lambda)


def test_update_bootstraps_from_final_obs():
    """With one epoch of one minibatch, the loss is evaluated at the rollout's own params
    (ratio 1, V = V_old), so value_loss = mean(adv**2) / 2 and, with raw advantages,
    policy_loss = -mean(adv): two moments of the GAE advantages the update used."""
    cfg, learner, init, update = _counter_learner()
    state = init(jax.random.key(0), learner.hparams)
    _, metrics = update(state, learner.hparams)
    adv = _counter_advantages(state.params, cfg)
    times, trunc, term = _counter_rollout(cfg.num_steps)
    assert trunc.sum() == 2 and term.sum() == 1
    assert float(metrics["episode_count"]) == cfg.num_envs * 3
    assert float(metrics["value_loss"]) == pytest.approx(0.5 * np.mean(adv**2), rel=1e-4)
    assert float(metrics["policy_loss"]) == pytest.approx(-np.mean(adv), rel=1e-4)
    # Bootstrapping from the reset observation, or not at all, gives another answer.
    wrong = _counter_advantages(state.params, cfg, "reset_obs")
    assert abs(np.mean(wrong**2) - np.mean(adv**2)) > 1e-2
    values = _critic_numpy(state.params, _counter_obs(times, np))
    ends = trunc | term
    no_boot = _gae_numpy(
        1.0 + 0.5 * times, values, 0 * values, ends, ends, cfg.gamma, cfg.gae_lambda
    )
    assert abs(np.mean(no_boot**2) - np.mean(adv**2)) > 1e-2


def test_learning_rate_anneals_linearly_and_reaches_the_step():
    """One Adam step from the same state and rollout at update_step k moves the params by
    (1 - k / num_updates) times the move at k = 0; Adam's first step is ~lr * sign(grad),
    so the largest move is the learning rate itself."""
    cfg, learner, init, update = _counter_learner()
    lr = 0.01
    hparams = learner.hparams.replace(learning_rate=jnp.float32(lr))
    state = init(jax.random.key(1), hparams)
    flat = lambda p: np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])  # noqa: E731
    p0 = flat(state.params)
    moves = {}
    for k in (0, 1, 3):
        new, metrics = update(state.replace(update_step=jnp.int32(k)), hparams)
        frac = 1.0 - k / cfg.num_updates
        assert float(metrics["learning_rate"]) == pytest.approx(lr * frac, rel=1e-6)
        moves[k] = (flat(new.params) - p0, frac)
    d0 = moves[0][0]
    assert np.max(np.abs(d0)) == pytest.approx(lr, rel=1e-3)
    for d, frac in moves.values():
        np.testing.assert_allclose(d, frac * d0, rtol=1e-3, atol=1e-7)


def test_counter_env_rollout_is_what_the_reference_assumes():
    """The reference above replays the counter env by hand; check that replay once."""
    env = Counter()
    params = env.default_params
    obs, st = env.reset(jax.random.key(0), params)
    times, trunc, term = _counter_rollout(8)
    for step in range(8):
        t = times[step]
        np.testing.assert_allclose(obs, _counter_obs(t, np), rtol=1e-6)
        obs, st, r, te, tr, info = env.step(jax.random.key(step), st, 0, params)
        assert float(r) == 1.0 + 0.5 * t
        assert bool(te) == term[step] and bool(tr) == trunc[step]
        np.testing.assert_allclose(info["final_observation"], _counter_obs(t + 1, np))
