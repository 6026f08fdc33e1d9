"""DQN targets against independent references: the Huber loss and its gradient (optax's
`huber_loss`, a NumPy formula), CartPole's truncated steps (bootstrapped from the last real
observation, computed here with NumPy Euler physics) and the learning-rate decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.algos import dqn
from jaxlearn.algos.dqn.nstep import Step, window_init, window_push
from jaxlearn.algos.dqn.train import learning_rate_now
from jaxlearn.config import ConfigError
from jaxlearn.envs import make_vec


def test_huber_loss_and_gradient_match_independent_references():
    rng = np.random.default_rng(0)
    batch, actions_n = 64, 2
    table = rng.normal(size=(batch, actions_n)).astype(np.float32) * 3.0
    actions = rng.integers(0, actions_n, size=batch)
    targets = rng.normal(size=batch).astype(np.float32) * 3.0  # |td| both < 1 and > 1
    weights = rng.uniform(0.2, 2.0, size=batch).astype(np.float32)
    q_sel = table[np.arange(batch), actions]
    td = targets - q_sel
    assert (np.abs(td) < 1).any() and (np.abs(td) > 1).any()

    def q_apply(p, obs):
        return p[obs]

    obs = jnp.arange(batch)
    args = (q_apply, obs, jnp.asarray(actions), jnp.asarray(targets), jnp.asarray(weights))
    loss, _ = dqn.dqn_loss(jnp.asarray(table), *args, "huber")
    ref = optax.losses.huber_loss(jnp.asarray(q_sel), jnp.asarray(targets), delta=1.0)
    np.testing.assert_allclose(loss, np.mean(weights * np.asarray(ref)), rtol=1e-5)
    grads = jax.grad(lambda p: dqn.dqn_loss(p, *args, "huber")[0])(jnp.asarray(table))
    # d/dq of huber(y - q) is -clip(y - q, -1, 1): only the taken actions move.
    expected = np.zeros_like(table)
    expected[np.arange(batch), actions] = -weights * np.clip(td, -1.0, 1.0) / batch
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)


def np_cartpole_step(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """CartPole-v1's Euler step (Barto et al. 1983, gym's constants), obs [N, 4]."""
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass, pml = masscart + masspole, masspole * length
    x, x_dot, theta, theta_dot = obs.T.astype(np.float64)
    force = np.where(action == 1, force_mag, -force_mag)
    cos, sin = np.cos(theta), np.sin(theta)
    temp = (force + pml * theta_dot**2 * sin) / total_mass
    theta_acc = (gravity * sin - cos * temp) / (
        length * (4.0 / 3.0 - masspole * cos**2 / total_mass)
    )
    x_acc = temp - pml * theta_acc * cos / total_mass
    new = (
        x + tau * x_dot,
        x_dot + tau * x_acc,
        theta + tau * theta_dot,
        theta_dot + tau * theta_acc,
    )
    return np.stack(new, axis=-1)


def test_cartpole_truncation_bootstraps_from_the_last_real_observation():
    # CartPole with a 16-step limit and random actions ends episodes both ways. Every step goes
    # through the training path (env.step -> Step(next_obs=info["final_observation"]) ->
    # window_push); each emitted transition must reach the physics' next state (not the reset
    # observation of the auto-reset) and be discounted by gamma unless the pole fell or the cart
    # left the track (terminated: 0).
    env, params = make_vec("CartPole-v1", 4)
    params = params.replace(max_steps_in_episode=16)
    gamma = 0.9
    obs, state = env.reset(jax.random.key(0), params)
    no = jnp.zeros((4,), bool)
    window = window_init(Step(obs, jnp.zeros((4,), jnp.int32), jnp.zeros((4,)), no, no, obs), 1)

    def one(carry, key):
        obs, state, window = carry
        k_act, k_env = jax.random.split(key)
        action = jax.random.randint(k_act, (4,), 0, 2)
        next_obs, state, reward, term, trunc, info = env.step(k_env, state, action, params)
        step = Step(obs, action, reward, term, trunc, info["final_observation"])
        window, tr = window_push(window, step, gamma)
        return (next_obs, state, window), (tr, term, trunc, next_obs)

    keys = jax.random.split(jax.random.key(1), 80)
    _, (tr, term, trunc, next_obs) = jax.jit(lambda c: jax.lax.scan(one, c, keys))(
        (obs, state, window)
    )
    tr, term, trunc = jax.tree.map(np.asarray, (tr, term, trunc))
    assert trunc.sum() >= 3 and term.sum() >= 3  # both kinds of episode end were seen
    expected_next = np_cartpole_step(tr.obs.reshape(-1, 4), tr.action.reshape(-1))
    np.testing.assert_allclose(tr.next_obs.reshape(-1, 4), expected_next, rtol=1e-4, atol=1e-5)
    x, theta = expected_next[:, 0], expected_next[:, 2]
    fell = (np.abs(x) > 2.4) | (np.abs(theta) > 12 * 2 * np.pi / 360)
    np.testing.assert_array_equal(fell, term.reshape(-1))
    np.testing.assert_allclose(tr.discount.reshape(-1), np.where(fell, 0.0, gamma))
    np.testing.assert_allclose(tr.reward, 1.0)
    # At a truncation the bootstrapped observation is not the one the env continues from.
    at_trunc = trunc & ~term
    assert not np.allclose(tr.next_obs[at_trunc], np.asarray(next_obs)[at_trunc])


def test_learning_rate_decays_linearly_from_the_first_gradient_step():
    cfg = dqn.DQNConfig(
        env="CartPole-v1", total_timesteps=1_000, learning_starts=200, train_frequency=10
    )
    first, last = cfg.first_learning_update, cfg.num_updates - 1  # 19, 99
    assert (first, last) == (19, 99)
    steps = jnp.array([0, first, 59, last])
    for end in (0.0, 0.25, 1.0):
        hp = cfg.hparams().replace(learning_rate=jnp.float32(1e-3), lr_end_fraction=end)
        lr = np.asarray(jax.vmap(lambda s, hp=hp: learning_rate_now(cfg, hp, s))(steps))
        mid = 1e-3 * (1.0 - (59 - 19) / (99 - 19) * (1.0 - end))
        np.testing.assert_allclose(lr, [1e-3, 1e-3, mid, 1e-3 * end], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_lr_end_fraction_out_of_range_names_the_field(value):
    with pytest.raises(ConfigError, match=r"lr_end_fraction=.* must be a finite number in \[0"):
        dqn.DQNConfig(env="CartPole-v1", lr_end_fraction=value)
