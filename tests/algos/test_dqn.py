"""DQN: n-step targets and double-DQN against NumPy, epsilon schedules, action selection,
config errors, vmap/jit invariance of the whole run and hyperparameters as data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos import ALGOS, dqn
from jaxlearn.runner import resolve_config

GAMMA = 0.9


# --------------------------------------------------------------------------------------------
# NumPy references


def np_n_step(rewards, terminated, truncated, gamma):
    """Loop reference of `n_step_returns` for [n, B] windows."""
    n, batch = rewards.shape
    returns, discounts, last = np.zeros(batch), np.zeros(batch), np.zeros(batch, int)
    for b in range(batch):
        g = 0.0
        for k in range(n):
            g += gamma**k * rewards[k, b]
            if terminated[k, b] or truncated[k, b] or k == n - 1:
                returns[b], last[b] = g, k
                discounts[b] = 0.0 if terminated[k, b] else gamma ** (k + 1)
                break
    return returns, discounts, last


def random_episode_flags(rng, shape, p_term=0.15, p_trunc=0.1):
    u = rng.random(shape)
    terminated = u < p_term
    truncated = (u >= p_term) & (u < p_term + p_trunc)
    return terminated, truncated


# --------------------------------------------------------------------------------------------
# Targets


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_step_returns_match_numpy(n):
    rng = np.random.default_rng(n)
    batch = 64
    rewards = rng.normal(size=(n, batch)).astype(np.float32)
    terminated, truncated = random_episode_flags(rng, (n, batch))
    # Hand-made windows: an end at every position, and both flags at once.
    terminated[:, :n] = False
    truncated[:, :n] = False
    for k in range(n):
        terminated[k, k] = True
        truncated[k, n + k] = True
    ref = np_n_step(rewards, terminated, truncated, GAMMA)
    out = jax.jit(dqn.n_step_returns)(rewards, terminated, truncated, GAMMA)
    np.testing.assert_allclose(out.returns, ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.discounts, ref[1], rtol=1e-6)
    np.testing.assert_array_equal(out.last, ref[2])


def test_n_step_returns_window_with_truncation_then_termination():
    # Window of 4: truncated after step 1 (bootstraps, gamma^2), the termination at step 3
    # belongs to the next episode and must not count.
    rewards = np.array([[1.0], [2.0], [100.0], [100.0]], np.float32)
    terminated = np.array([[False], [False], [False], [True]])
    truncated = np.array([[False], [True], [False], [False]])
    out = dqn.n_step_returns(rewards, terminated, truncated, 0.5)
    np.testing.assert_allclose(out.returns, [1.0 + 0.5 * 2.0])
    np.testing.assert_allclose(out.discounts, [0.25])
    np.testing.assert_array_equal(out.last, [1])


@pytest.mark.parametrize("n", [1, 3])
def test_window_emits_n_step_transitions_like_numpy(n):
    """Streaming pushes emit, n - 1 steps late, exactly the NumPy n-step transitions."""
    rng = np.random.default_rng(10 + n)
    steps, envs = 40, 3
    obs = rng.normal(size=(steps, envs, 2)).astype(np.float32)
    next_obs = rng.normal(size=(steps, envs, 2)).astype(np.float32)
    actions = rng.integers(0, 4, size=(steps, envs)).astype(np.int32)
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    terminated, truncated = random_episode_flags(rng, (steps, envs))

    xs = dqn.Step(
        obs=jnp.asarray(obs),
        action=jnp.asarray(actions),
        reward=jnp.asarray(rewards),
        terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        next_obs=jnp.asarray(next_obs),
    )
    window = dqn.window_init(jax.tree.map(lambda x: x[0], xs), n)
    push = jax.jit(lambda w, s: jax.lax.scan(lambda w, s: dqn.window_push(w, s, GAMMA), w, s))
    _, out = push(window, xs)
    valid = np.asarray(out.valid)
    assert not valid[: n - 1].any() and valid[n - 1 :].all()
    for t in range(steps - n + 1):  # the transition starting at t is emitted at t + n - 1
        e = t + n - 1
        ref_ret, ref_disc, ref_last = np_n_step(
            rewards[t : t + n], terminated[t : t + n], truncated[t : t + n], GAMMA
        )
        np.testing.assert_allclose(out.reward[e], ref_ret, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.discount[e], ref_disc, rtol=1e-6)
        np.testing.assert_array_equal(out.obs[e], obs[t])
        np.testing.assert_array_equal(out.action[e], actions[t])
        expected_next = next_obs[t + ref_last, np.arange(envs)]
        np.testing.assert_array_equal(out.next_obs[e], expected_next)


def test_double_q_target_matches_numpy():
    rng = np.random.default_rng(0)
    online = rng.normal(size=(32, 5)).astype(np.float32)
    target = rng.normal(size=(32, 5)).astype(np.float32)
    expected = target[np.arange(32), online.argmax(axis=1)]
    np.testing.assert_allclose(dqn.double_q_target(online, target), expected)
    np.testing.assert_allclose(dqn.q_learning_target(target), target.max(axis=1))


def test_dqn_loss_golden_values():
    params = {"q": jnp.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])}

    def q_apply(p, obs):
        return p["q"][obs]

    obs = jnp.arange(3)
    actions = jnp.array([1, 0, 1])
    targets = jnp.array([2.5, 3.0, 3.0])  # td = 0.5, 3.0, 0.0
    weights = jnp.array([1.0, 0.5, 2.0])
    loss, info = dqn.dqn_loss(params, q_apply, obs, actions, targets, weights, "mse")
    np.testing.assert_allclose(info.td_error, [0.5, 3.0, 0.0])
    np.testing.assert_allclose(info.q_selected, [2.0, 0.0, 3.0])
    np.testing.assert_allclose(loss, (0.5 * 0.25 * 1.0 + 0.5 * 9.0 * 0.5) / 3, rtol=1e-6)
    loss, _ = dqn.dqn_loss(params, q_apply, obs, actions, targets, weights, "huber")
    np.testing.assert_allclose(loss, (0.5 * 0.25 * 1.0 + (3.0 - 0.5) * 0.5) / 3, rtol=1e-6)
    grads = jax.grad(lambda p: dqn.dqn_loss(p, q_apply, obs, actions, targets, weights)[0])(params)
    # d/dq of 0.5 * w * (y - q)^2 / B = -w * td / B, only at the taken actions.
    expected = np.zeros((3, 2))
    expected[0, 1] = -1.0 * 0.5 / 3
    expected[1, 0] = -0.5 * 3.0 / 3
    np.testing.assert_allclose(grads["q"], expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Exploration


def test_linear_epsilon_values():
    total, start, end, frac = 1000, 1.0, 0.05, 0.5
    f = jax.jit(lambda t: dqn.linear_epsilon(t, total, start, end, frac))
    for t, expected in [(0, 1.0), (250, 0.525), (500, 0.05), (499, 1.0 - 0.95 * 499 / 500)]:
        np.testing.assert_allclose(f(jnp.int32(t)), expected, rtol=1e-6)
    np.testing.assert_allclose(f(jnp.int32(900)), 0.05, rtol=1e-6)


def test_exponential_epsilon_per_episode():
    f = jax.jit(lambda k: dqn.exponential_epsilon(k, 1.0, 0.01, 0.995))
    for k in [0, 1, 10, 500, 918, 919, 5000]:
        np.testing.assert_allclose(f(jnp.int32(k)), max(0.01, 0.995**k), rtol=1e-5)


def test_epsilon_greedy_is_greedy_at_zero_and_uniform_at_one():
    q = jax.random.normal(jax.random.key(1), (4096, 4))
    greedy = dqn.epsilon_greedy(jax.random.key(2), q, 0.0)
    np.testing.assert_array_equal(greedy, np.argmax(q, axis=-1))
    random = np.asarray(dqn.epsilon_greedy(jax.random.key(3), q, 1.0))
    counts = np.bincount(random, minlength=4)
    assert random.dtype == np.int32 and random.shape == (4096,)
    assert np.all(np.abs(counts / 4096 - 0.25) < 0.03), counts
    # Per-row epsilon: rows with 0 are greedy.
    eps = jnp.where(jnp.arange(4096) % 2 == 0, 0.0, 1.0)
    mixed = np.asarray(dqn.epsilon_greedy(jax.random.key(4), q, eps))
    np.testing.assert_array_equal(mixed[::2], np.argmax(q, axis=-1)[::2])


def np_q_network(params, obs):
    """NumPy ReLU MLP of `QNetwork`'s parameters on observations flattened to [B, -1]."""
    layers = params["params"]
    x = np.asarray(obs, np.float64).reshape(len(obs), -1)
    for i in range(len(layers)):
        x = x @ np.asarray(layers[f"Dense_{i}"]["kernel"]) + np.asarray(
            layers[f"Dense_{i}"]["bias"]
        )
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def test_select_action_takes_argmax_of_network():
    cfg = tiny_config()
    env, env_params = dqn_env(cfg)
    agent = dqn.make_agent(cfg, env, env_params)
    obs = jax.random.normal(jax.random.key(0), (16, 4))
    params = agent.network.init(jax.random.key(1), obs)
    q = agent.q_values(params, obs)
    assert q.shape == (16, 2)
    assert [k for k in params["params"]] == ["Dense_0", "Dense_1"]  # hidden_sizes=(16,)
    np.testing.assert_allclose(q, np_q_network(params, obs), rtol=1e-5, atol=1e-6)
    a = jax.jit(agent.select_action)(jax.random.key(2), params, obs, 0.0)
    np.testing.assert_array_equal(a, np.argmax(q, axis=-1))
    np.testing.assert_array_equal(agent.greedy_action(params, obs), a)


def test_q_network_flattens_any_observation_rank():
    net = dqn.QNetwork(action_dim=3, obs_ndim=3, hidden_sizes=(8, 6))
    obs = jax.random.normal(jax.random.key(1), (2, 5, 10, 10, 4))
    params = net.init(jax.random.key(0), obs[0])
    q = net.apply(params, obs[0])
    assert q.shape == (5, 3)
    # the trailing obs_ndim axes are flattened row-major, then a ReLU MLP
    np.testing.assert_allclose(q, np_q_network(params, obs[0]), rtol=1e-5, atol=1e-5)
    q2 = net.apply(params, obs)  # extra leading axes are batch axes
    assert q2.shape == (2, 5, 3)
    expected = np_q_network(params, obs.reshape(10, 10, 10, 4)).reshape(2, 5, 3)
    np.testing.assert_allclose(q2, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Config


def tiny_config(**overrides):
    values = dict(
        total_timesteps=2_000,
        num_envs=2,
        buffer_size=500,
        batch_size=32,
        learning_starts=200,
        train_frequency=4,
        target_update_period=100,
        hidden_sizes=(16,),
    )
    values.update(overrides)
    return dqn.DQNConfig(**values)


def dqn_env(cfg):
    from jaxlearn.envs import make_vec

    return make_vec(cfg.env, cfg.num_envs)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"buffer_size": 0}, r"DQNConfig\.buffer_size=0 is invalid: must be a positive integer"),
        ({"batch_size": -1}, r"batch_size=-1 is invalid: must be a positive integer"),
        ({"batch_size": 256, "buffer_size": 128}, r"batch_size=256 .* <= buffer_size=128"),
        ({"env": "Pendulum-v1"}, r"env='Pendulum-v1' .* needs a Discrete action space"),
        ({"env": "NoSuchEnv-v0"}, r"env='NoSuchEnv-v0' .* must be a registered env"),
        ({"learning_starts": 600_000}, r"learning_starts=600000 .* <= total_timesteps=500000"),
        ({"n_step": 0}, r"n_step=0 is invalid: must be a positive integer"),
        ({"num_envs": 4}, r"train_frequency=10 .* multiple of num_envs=4"),
        ({"target_update_period": 505}, r"target_update_period=505 .* multiple of train_freq"),
        ({"train_frequency": 20_000}, r"train_frequency=20000 .* <= buffer_size=10000"),
        ({"loss": "l1"}, r"loss='l1' is invalid: must be one of \['huber', 'mse'\]"),
        ({"epsilon_schedule": "cosine"}, r"epsilon_schedule='cosine' .* one of"),
        ({"gamma": 1.5}, r"gamma=1.5 is invalid: must be a finite number in \[0.0, 1.0\]"),
        ({"tau": 0.0}, r"tau=0.0 is invalid: must be a finite number in \(0.0, 1.0\]"),
        ({"hidden_sizes": ()}, r"hidden_sizes=\(\) is invalid"),
        ({"total_timesteps": 5}, r"total_timesteps=5 .* >= train_frequency=10"),
        ({"prioritized": "yes"}, r"prioritized='yes' is invalid: must be a bool"),
    ],
)
def test_config_errors_name_field_value_and_allowed(overrides, match):
    with pytest.raises(ValueError, match=match):
        dqn.DQNConfig(**overrides).check_env()  # construction, then the checks with the env


def test_registered_and_shipped_configs_load():
    assert ALGOS["dqn"] == (dqn.DQNConfig, dqn.make_learner)
    for name in ["dqn_cartpole", "dqn_cartpole_per", "dqn_minatar_breakout"]:
        run_cfg, cfg = resolve_config(config_file=f"experiments/{name}.yaml")
        assert run_cfg.algo == "dqn" and isinstance(cfg, dqn.DQNConfig)
    _, cfg = resolve_config(config_file="experiments/dqn_cartpole.yaml")
    assert (cfg.total_timesteps, cfg.buffer_size, cfg.batch_size) == (500_000, 10_000, 128)
    assert (cfg.learning_rate, cfg.gamma, cfg.learning_starts) == (2.5e-4, 0.99, 10_000)
    assert (cfg.target_update_period, cfg.train_frequency) == (500, 10)


# --------------------------------------------------------------------------------------------
# The whole run


@pytest.fixture(scope="module")
def tiny_runs():
    """One compiled vmapped run over 2 seeds, and the same seeds run one by one."""
    # target every 96 // 4 = 24 updates: the last copy is after update 479, 20 before the end
    cfg = tiny_config(
        prioritized=True, n_step=3, double_dqn=True, loss="huber", target_update_period=96
    )
    train = dqn.make_train(cfg)
    keys = jax.random.split(jax.random.key(7), 2)
    batched = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    separate = [single(k) for k in keys]
    return cfg, batched, separate


@pytest.mark.slow
def test_vmap_over_seeds_equals_separate_runs(tiny_runs):
    cfg, (state, metrics), separate = tiny_runs
    assert metrics["loss"].shape == (2, cfg.num_updates)
    for i, (s_i, m_i) in enumerate(separate):
        for k in metrics:
            np.testing.assert_allclose(metrics[k][i], m_i[k], rtol=2e-4, atol=1e-5, err_msg=k)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(s_i.params), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=2e-4, atol=1e-5)
    # The seeds differ.
    assert not np.array_equal(metrics["episode_count"][0], metrics["episode_count"][1])


def test_run_masks_learning_and_updates_target_on_schedule(tiny_runs):
    cfg, (state, metrics), _ = tiny_runs
    learning = np.asarray(metrics["learning"][0])
    first = cfg.first_learning_update  # update 49: its rollout reaches 200 env steps
    assert first == 49
    assert not learning[:first].any() and learning[first:].all()
    assert set(metrics) >= {
        "episode_return_sum",
        "episode_length_sum",
        "episode_count",
        "epsilon",
        "loss",
        "q_mean",
        "td_abs_mean",
    }
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    # 500 updates, target every 24: the last copy was after update 479, and the 20 learning
    # updates since moved the online net away from it (a target copied every update would
    # equal it); and it was copied at all (it is not the initial network). The exact
    # schedule and Polyak amount: test_target_frozen_between_copies_then_polyak_on_schedule.
    learner = dqn.make_learner(cfg)
    init = learner.init(jax.random.split(jax.random.key(7), 2)[0], learner.hparams)
    for i in range(2):
        online = [np.asarray(x[i]) for x in jax.tree.leaves(state.params)]
        target = [np.asarray(x[i]) for x in jax.tree.leaves(state.target_params)]
        first_net = [np.asarray(x) for x in jax.tree.leaves(init.params)]
        assert max(np.abs(t - p).max() for t, p in zip(target, online, strict=True)) > 1e-4
        if i == 0:
            assert max(np.abs(t - p).max() for t, p in zip(target, first_net, strict=True)) > 1e-4
    # Prioritized replay: one priority update per gradient step after learning starts.
    np.testing.assert_array_equal(state.buffer.beta_step, cfg.num_updates - first)
    # Leaves hold (|td| + eps)^alpha of the last time each item was replayed (or the max
    # priority^alpha it was added with): many distinct values, none above max_priority^alpha.
    # Priorities of 1 instead of |td| would leave only 1, (1 + eps)^alpha and eps^alpha.
    cap = cfg.buffer_size
    num_leaves = 1 << (cap - 1).bit_length()
    for i in range(2):
        leaves = np.asarray(state.buffer.tree[i, num_leaves : num_leaves + cap])
        max_priority = float(state.buffer.max_priority[i])
        assert max_priority > 1.5  # |td| > 1 happened: CartPole's 3-step returns are near 3
        assert np.all(leaves <= max_priority**cfg.per_alpha * (1 + 1e-6))
        assert len(np.unique(leaves)) > cap // 2, np.unique(leaves)
        tree = np.asarray(state.buffer.tree[i])
        np.testing.assert_allclose(tree[1], leaves.sum(dtype=np.float64), rtol=1e-4)


def test_learner_reports_linear_epsilon(tiny_runs):
    cfg, (_, metrics), _ = tiny_runs
    # 2 envs, 4 env steps per update: the last env step of update u is env step 4 u + 2.
    t = 4 * np.arange(cfg.num_updates) + 2
    expected = np.maximum(1.0 - 0.95 * t / (0.5 * cfg.total_timesteps), 0.05)
    np.testing.assert_allclose(metrics["epsilon"][0], expected, rtol=1e-5)


def other_hparams():
    """Hyperparameters of the second `hparams_runs` run: Polyak targets every 10 updates."""
    return dqn.DQNHParams(
        learning_rate=jnp.float32(1e-3),
        lr_end_fraction=jnp.float32(1.0),
        gamma=jnp.float32(0.9),
        tau=jnp.float32(0.5),
        max_grad_norm=jnp.float32(1.0),
        epsilon_start=jnp.float32(0.5),
        epsilon_end=jnp.float32(0.1),
        exploration_fraction=jnp.float32(0.2),
        epsilon_decay=jnp.float32(0.99),
        target_update_period=jnp.float32(40.0),
    )


@pytest.fixture(scope="module")
def hparams_runs():
    """40 updates with hparams as traced arguments: two values, one compile; then a vmap."""
    cfg = tiny_config(
        total_timesteps=400,
        learning_starts=36,  # first gradient step in update 8
        epsilon_schedule="exponential",
        epsilon_end=0.05,
        epsilon_decay=0.9,
    )
    learner = dqn.make_learner(cfg)
    traces = []

    def train(key, hparams):
        traces.append(1)

        def step(state, _):
            state, metrics = learner.update(state, hparams)
            return state, (metrics, state.params, state.target_params)

        state = learner.init(key, hparams)
        state, (metrics, params_history, target_history) = jax.lax.scan(step, state, None, 40)
        return state, params_history, target_history, metrics

    other = other_hparams()
    jitted = jax.jit(train)
    runs = [jitted(jax.random.key(0), hp) for hp in (cfg.hparams(), other)]
    num_traces = len(traces)
    batch = jax.tree.map(lambda a, b: jnp.stack([a, b]), cfg.hparams(), other)
    batched = jax.jit(jax.vmap(train, in_axes=(None, 0)))(jax.random.key(0), batch)
    return cfg, learner, runs, num_traces, batched


def test_hparams_as_data_compile_once(hparams_runs):
    cfg, learner, runs, num_traces, (*_, batched) = hparams_runs
    assert num_traces == 1
    (*_, m1), (*_, m2) = runs
    assert float(m1["epsilon"][0]) != float(m2["epsilon"][0])
    # A batch of hyperparameters runs in one vmapped call, like the separate calls.
    for k in ("epsilon", "episode_count", "learning"):
        np.testing.assert_allclose(batched[k][1], m2[k], rtol=1e-5, err_msg=k)


def test_params_frozen_until_learning_starts(hparams_runs):
    cfg, learner, runs, _, _ = hparams_runs
    init_params = learner.init(jax.random.key(0), learner.hparams).params
    state, params_history, _, metrics = runs[0]
    frozen = jax.tree.map(lambda x: x[7], params_history)  # after update 7
    assert cfg.first_learning_update == 8
    np.testing.assert_array_equal(metrics["learning"], [0.0] * 8 + [1.0] * 32)
    # init here and inside the train program are two compiled programs, which may round the
    # orthogonal init differently (by ~6e-8); a learning step moves weights far more
    for a, b in zip(jax.tree.leaves(init_params), jax.tree.leaves(frozen), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    frozen_0 = jax.tree.map(lambda x: x[0], params_history)  # after update 0
    for a, b in zip(jax.tree.leaves(frozen_0), jax.tree.leaves(frozen), strict=True):
        np.testing.assert_array_equal(a, b)  # one program: exactly unchanged
    leaves = zip(jax.tree.leaves(frozen), jax.tree.leaves(state.params), strict=True)
    assert max(float(np.max(np.abs(a - b))) for a, b in leaves) > 1e-4  # then it learns


def test_learner_reports_exponential_epsilon(hparams_runs):
    _, _, runs, _, _ = hparams_runs
    *_, metrics = runs[0]
    episodes = np.cumsum(np.asarray(metrics["episode_count"]))
    eps = np.asarray(metrics["epsilon"])
    assert episodes[-1] >= 2 and eps[-1] < eps[0]
    # The last step of an update counts the episodes finished before it, so epsilon lies
    # between the values after the previous update's and this update's episodes.
    before = np.concatenate([[0], episodes[:-1]])
    assert np.all(eps <= np.maximum(0.05, 0.9**before) + 1e-6)
    assert np.all(eps >= np.maximum(0.05, 0.9**episodes) - 1e-6)


def test_target_frozen_between_copies_then_polyak_on_schedule(hparams_runs):
    """After update u the target is `tau * online + (1 - tau) * target` when (u + 1) is a
    multiple of target_update_period / train_frequency (hparams as data: 25 updates with
    tau 1, 10 updates with tau 0.5), and unchanged after every other update."""
    cfg, learner, runs, _, _ = hparams_runs
    init = learner.init(jax.random.key(0), learner.hparams).params
    for (_, params_history, target_history, _), hp in zip(
        runs, (cfg.hparams(), other_hparams()), strict=True
    ):
        every = int(hp.target_update_period) // cfg.train_frequency
        tau = float(hp.tau)
        expected = [np.asarray(x, np.float64) for x in jax.tree.leaves(init)]
        copies = 0
        for u in range(40):
            online = [np.asarray(x[u], np.float64) for x in jax.tree.leaves(params_history)]
            if (u + 1) % every == 0:
                copies += 1
                expected = [tau * p + (1 - tau) * t for p, t in zip(online, expected, strict=True)]
            got = [np.asarray(x[u]) for x in jax.tree.leaves(target_history)]
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7, err_msg=f"update {u}")
        assert copies == 40 // every
        # the online net moved after the last copy, so a target copied every update fails
        last_copy = 40 // every * every - 1
        moved = [
            np.abs(np.asarray(x[39]) - np.asarray(x[last_copy])).max()
            for x in jax.tree.leaves(params_history)
        ]
        assert last_copy == 39 or max(moved) > 1e-5
