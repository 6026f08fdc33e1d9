"""Known-answer tests of DQN's wiring: one gradient step (`dqn.train.gradient_step`) and whole
updates (`make_learner(...).update`) against a plain NumPy re-implementation.

The NumPy side computes the one-hidden-layer ReLU Q-network, its targets (plain and double),
the Huber/MSE loss gradient by hand-written backprop, global-norm clipping, Adam, prioritized
replay's importance weights and new priorities `(|td| + eps) ** alpha` in a NumPy sum-tree,
and the target network's schedule (frozen between copies, Polyak `tau` on schedule).

The learner runs on `Chain`, a tiny env whose n-step transitions are a known function of
their first observation, so the replay contents (terminal masking, bootstrapping on
truncation, `gamma ** m`) are checked item by item.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxlearn import spaces
from jaxlearn.algos import dqn
from jaxlearn.algos.common import adam_state, make_optimizer
from jaxlearn.algos.dqn.nstep import Transition
from jaxlearn.algos.dqn.replay import make_replay
from jaxlearn.algos.dqn.train import gradient_step
from jaxlearn.envs import registry

# --------------------------------------------------------------------------------------------
# A tiny env with known n-step transitions

CHAIN = "DQNReferenceChain-v0"


@struct.dataclass
class ChainState:
    pos: jax.Array  # [] int32
    t: jax.Array  # [] int32 steps in this episode


@struct.dataclass
class ChainParams:
    goal: int = 5  # terminated when pos reaches it
    limit: int = 3  # truncated after this many steps


class Chain:
    """Walks one cell right per step whatever the action. obs = [pos, t]; reward 1 + pos (before
    the move); terminated at pos >= goal, truncated at t >= limit (both can hold at once);
    resets itself to a random pos in [0, goal) and puts the last observation in
    `info["final_observation"]`. Starts 0 and 1 truncate, 3 and 4 terminate, 2 does both."""

    default_params = ChainParams()

    def reset(self, key, params):
        state = ChainState(jax.random.randint(key, (), 0, params.goal), jnp.int32(0))
        return self._obs(state), state

    @staticmethod
    def _obs(state):
        return jnp.stack([state.pos, state.t]).astype(jnp.float32)

    def step(self, key, state, action, params):
        del action
        reward = 1.0 + state.pos.astype(jnp.float32)
        moved = ChainState(state.pos + 1, state.t + 1)
        terminated = moved.pos >= params.goal
        truncated = moved.t >= params.limit
        final = self._obs(moved)
        reset_obs, reset_state = self.reset(key, params)
        done = terminated | truncated
        obs = jnp.where(done, reset_obs, final)
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), reset_state, moved)
        return obs, state, reward, terminated, truncated, {"final_observation": final}

    def observation_space(self, params):
        return spaces.Box(0.0, 10.0, (2,))

    def action_space(self, params):
        return spaces.Discrete(2)


def np_chain_transition(obs, n, gamma, goal=5, limit=3):
    """The n-step transition starting at chain observation [pos, t]: (reward, discount,
    next_obs), by walking the chain step by step."""
    pos, t = int(obs[0]), int(obs[1])
    ret = 0.0
    for k in range(n):
        ret += gamma**k * (1.0 + pos)
        pos, t = pos + 1, t + 1
        terminated, truncated = pos >= goal, t >= limit
        if terminated or truncated or k == n - 1:
            discount = 0.0 if terminated else gamma ** (k + 1)
            return ret, discount, np.array([pos, t], np.float32)
    raise AssertionError("unreachable")


def test_np_chain_transition_known_values():
    # start 0, t 0, n 3: rewards 1, 2, 3; truncated at t = 3 -> bootstraps with gamma^3
    r, d, nxt = np_chain_transition([0, 0], 3, 0.5)
    assert (r, d, list(nxt)) == (1 + 0.5 * 2 + 0.25 * 3, 0.125, [3, 3])
    # start 3: rewards 4, 5, terminated at pos 5 after 2 steps -> no bootstrap
    r, d, nxt = np_chain_transition([3, 0], 3, 0.5)
    assert (r, d, list(nxt)) == (4 + 0.5 * 5, 0.0, [5, 2])
    # start 2: terminated and truncated together -> terminated wins
    assert np_chain_transition([2, 0], 3, 0.5)[1] == 0.0
    # start 1 at t 2: truncated after one step -> gamma^1
    assert np_chain_transition([1, 2], 3, 0.5)[:2] == (2.0, 0.5)


# --------------------------------------------------------------------------------------------
# NumPy reference of the Q-network and one gradient step


def np_layers(tree):
    """Flax params (or Adam moments shaped like them) -> [(kernel, bias)] in float64."""
    layers = tree["params"]
    return [
        (
            np.asarray(layers[f"Dense_{i}"]["kernel"], np.float64),
            np.asarray(layers[f"Dense_{i}"]["bias"], np.float64),
        )
        for i in range(len(layers))
    ]


def np_forward(layers, obs):
    """ReLU MLP: returns (q [B, A], inputs of each layer, pre-activations of hidden layers)."""
    x = np.asarray(obs, np.float64).reshape(len(obs), -1)
    inputs, pre = [x], []
    for i, (w, b) in enumerate(layers):
        z = inputs[-1] @ w + b
        if i == len(layers) - 1:
            return z, inputs, pre
        pre.append(z)
        inputs.append(np.maximum(z, 0.0))
    raise AssertionError("no layers")


def np_backward(layers, inputs, pre, dq):
    grads = [None] * len(layers)
    d = dq
    for i in reversed(range(len(layers))):
        grads[i] = (inputs[i].T @ d, d.sum(axis=0))
        if i > 0:
            d = (d @ layers[i][0].T) * (pre[i - 1] > 0)
    return grads


def np_targets(layers, target_layers, batch, double):
    q_next_target, _, _ = np_forward(target_layers, batch["next_obs"])
    rows = np.arange(len(q_next_target))
    if double:
        q_next_online, _, _ = np_forward(layers, batch["next_obs"])
        value = q_next_target[rows, q_next_online.argmax(axis=1)]
    else:
        value = q_next_target.max(axis=1)
    return batch["reward"] + batch["discount"] * value


def np_dqn_step(layers, target_layers, adam, batch, weights, *, lr, max_norm, eps, double, loss):
    """One DQN gradient step in NumPy.

    adam: (count, mu, nu) with mu/nu as [(kernel, bias)]. Returns (layers, adam, td, metrics).
    """
    targets = np_targets(layers, target_layers, batch, double)
    q, inputs, pre = np_forward(layers, batch["obs"])
    rows = np.arange(len(q))
    q_sel = q[rows, batch["action"]]
    td = targets - q_sel
    if loss == "mse":
        per_item, dloss_dq = 0.5 * td**2, -td
    else:
        small = np.abs(td) <= 1.0
        per_item = np.where(small, 0.5 * td**2, np.abs(td) - 0.5)
        dloss_dq = -np.clip(td, -1.0, 1.0)
    size = len(td)
    dq = np.zeros_like(q)
    dq[rows, batch["action"]] = weights * dloss_dq / size
    grads = np_backward(layers, inputs, pre, dq)
    g_norm = np.sqrt(sum(np.sum(g**2) for pair in grads for g in pair))
    # optax.clip_by_global_norm: g unchanged below max_norm, else g / |g| * max_norm
    scale = 1.0 if g_norm < max_norm else max_norm / g_norm
    count, mu, nu = adam
    count += 1
    b1, b2 = 0.9, 0.999
    new_layers, new_mu, new_nu = [], [], []
    for (w, b), g_pair, m_pair, v_pair in zip(layers, grads, mu, nu, strict=True):
        out_p, out_m, out_v = [], [], []
        for p, g, m, v in zip((w, b), g_pair, m_pair, v_pair, strict=True):
            g = g * scale
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            direction = (m / (1 - b1**count)) / (np.sqrt(v / (1 - b2**count)) + eps)
            out_p.append(p - lr * direction)
            out_m.append(m)
            out_v.append(v)
        new_layers.append(tuple(out_p))
        new_mu.append(tuple(out_m))
        new_nu.append(tuple(out_v))
    valid = batch["valid"].astype(np.float64)
    metrics = {
        "loss": np.mean(weights * per_item),
        "q_mean": np.sum(q_sel * valid) / max(valid.sum(), 1.0),
        "td_abs_mean": np.sum(np.abs(td) * valid) / max(valid.sum(), 1.0),
        "grad_norm": g_norm,
    }
    return new_layers, (count, new_mu, new_nu), td, metrics


def assert_layers_close(tree, expected, rtol=1e-5, atol=1e-6, msg=""):
    for i, (got, want) in enumerate(zip(np_layers(tree), expected, strict=True)):
        for name, g, w in zip(("kernel", "bias"), got, want, strict=True):
            np.testing.assert_allclose(
                g, w, rtol=rtol, atol=atol, err_msg=f"{msg} Dense_{i}.{name}"
            )


def np_batch(transition):
    return {k: np.asarray(v) for k, v in transition._asdict().items()}


# --------------------------------------------------------------------------------------------
# One gradient step: `dqn.train.gradient_step`

OBS_DIM, NUM_ACTIONS, BATCH, GAMMA = 4, 3, 16, 0.9


@pytest.fixture(scope="module")
def step_setup():
    """A Q-network with 8 hidden units, online and target params that differ, Adam moments
    from earlier steps, and a batch with terminal, truncated and full n-step discounts."""
    cfg = dqn.DQNConfig(adam_eps=1e-4)
    net = dqn.QNetwork(action_dim=NUM_ACTIONS, hidden_sizes=(8,))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32)
    params = net.init(jax.random.key(0), obs)
    target_params = net.init(jax.random.key(1), obs)
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    mu = jax.tree.map(lambda x: 0.01 * rng.normal(size=x.shape).astype(np.float32), params)
    nu = jax.tree.map(lambda x: rng.uniform(1e-5, 1e-3, x.shape).astype(np.float32), params)
    adam = adam_state(opt_state)._replace(count=jnp.int32(4), mu=mu, nu=nu)
    opt_state = (opt_state[0], adam, opt_state[2])  # clip, Adam, learning rate
    # discount 0: terminated; gamma, gamma^2: truncated early in a 3-step window; gamma^3: full
    discount = rng.choice([0.0, GAMMA, GAMMA**2, GAMMA**3], size=BATCH).astype(np.float32)
    discount[:4] = [0.0, GAMMA, GAMMA**2, GAMMA**3]
    valid = np.ones(BATCH, bool)
    valid[[3, 10]] = False
    batch = Transition(
        obs=jnp.asarray(obs),
        action=jnp.asarray(rng.integers(0, NUM_ACTIONS, BATCH), jnp.int32),
        reward=jnp.asarray(rng.normal(size=BATCH), jnp.float32),
        discount=jnp.asarray(discount),
        next_obs=jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), jnp.float32),
        valid=jnp.asarray(valid),
    )
    weights = (valid * rng.uniform(0.2, 1.0, BATCH)).astype(np.float32)
    return cfg, net, params, target_params, tx, opt_state, batch, weights


@pytest.mark.parametrize(
    "double, loss, clip",
    [(False, "mse", False), (True, "huber", True), (True, "mse", False), (False, "huber", True)],
)
def test_update_matches_numpy_step(step_setup, double, loss, clip):
    """Targets (plain or double, discounts 0 / gamma^m), weighted loss, backprop, global-norm
    clipping, Adam from a non-fresh state with the configured eps, and the learning rate."""
    cfg, net, params, target_params, tx, opt_state, batch, weights = step_setup
    layers, target_layers = np_layers(params), np_layers(target_params)
    b = np_batch(batch)
    adam = (4, np_layers(adam_state(opt_state).mu), np_layers(adam_state(opt_state).nu))
    lr = 0.05
    common = dict(lr=lr, eps=cfg.adam_eps, double=double, loss=loss)
    # the unclipped global norm fixes the clip threshold: a third of it when clipping
    _, _, _, free = np_dqn_step(layers, target_layers, adam, b, weights, max_norm=np.inf, **common)
    max_norm = free["grad_norm"] / 3 if clip else 1e6
    ref_layers, ref_adam, ref_td, ref_metrics = np_dqn_step(
        layers, target_layers, adam, b, weights, max_norm=max_norm, **common
    )
    if clip:  # with Adam moments from earlier steps, clipping changes the step
        unclipped = np_dqn_step(layers, target_layers, adam, b, weights, max_norm=1e6, **common)
        diffs = [
            np.abs(a - c).max()
            for p, q in zip(unclipped[0], ref_layers, strict=True)
            for a, c in zip(p, q, strict=True)
        ]
        assert max(diffs) > 1e-4
    if loss == "huber":  # both branches of the Huber loss are used
        assert np.any(np.abs(ref_td) > 1.0) and np.any(np.abs(ref_td) < 1.0)

    hparams = cfg.hparams().replace(
        learning_rate=jnp.float32(lr), max_grad_norm=jnp.float32(max_norm), gamma=jnp.float32(0.5)
    )  # gamma must not be read: the batch's discounts hold it

    step_cfg = dataclasses.replace(cfg, double_dqn=double, loss=loss)

    @jax.jit
    def step(params, target_params, opt_state, batch, weights, hparams):
        return gradient_step(
            params, target_params, opt_state, batch, weights, hparams, net.apply, step_cfg
        )

    new_params, new_opt, td, metrics = step(
        params, target_params, opt_state, batch, jnp.asarray(weights), hparams
    )
    np.testing.assert_allclose(td, ref_td, rtol=1e-5, atol=1e-5)
    for k in ("loss", "q_mean", "td_abs_mean", "grad_norm"):
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert_layers_close(new_params, ref_layers, msg="params")
    new_adam = adam_state(new_opt)
    assert int(new_adam.count) == 5
    assert_layers_close(new_adam.mu, ref_adam[1], atol=1e-8, msg="mu")
    assert_layers_close(new_adam.nu, ref_adam[2], atol=1e-10, msg="nu")


def test_double_and_plain_targets_differ_on_this_batch(step_setup):
    """The batch of the step tests is one where double DQN's targets differ from plain ones,
    so a learner that evaluates the target net's own argmax fails the double cases above."""
    _, net, params, target_params, _, _, batch, _ = step_setup
    layers, target_layers = np_layers(params), np_layers(target_params)
    b = np_batch(batch)
    double = np_targets(layers, target_layers, b, double=True)
    plain = np_targets(layers, target_layers, b, double=False)
    differ = np.abs(double - plain) > 1e-3
    assert differ.sum() >= 3, differ
    # and the network the tests use is the NumPy network
    q = net.apply(params, batch.obs)
    np.testing.assert_allclose(q, np_forward(layers, b["obs"])[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Whole learner updates on the chain env

LEARNER_CONFIGS = {
    # double DQN, prioritized replay, 3-step returns, Polyak target, 2 gradient steps/update
    "double_per_nstep": dict(
        env=CHAIN,
        total_timesteps=40,
        num_envs=2,
        buffer_size=16,
        batch_size=6,
        train_frequency=4,
        learning_starts=12,  # first gradient steps in update 2; update 1 could sample
        target_update_period=12,  # every 3 updates
        tau=0.5,
        gradient_steps=2,
        double_dqn=True,
        prioritized=True,
        n_step=3,
        gamma=0.9,
        loss="huber",
        learning_rate=0.01,
        max_grad_norm=0.5,
        hidden_sizes=(8,),
        epsilon_start=0.5,
        epsilon_end=0.5,
    ),
    # plain DQN, uniform replay, 1-step returns, hard target copies
    "plain_uniform": dict(
        env=CHAIN,
        total_timesteps=24,
        num_envs=1,
        buffer_size=8,
        batch_size=4,
        train_frequency=2,
        learning_starts=4,  # first gradient step in update 1
        target_update_period=4,  # every 2 updates
        tau=1.0,
        gradient_steps=1,
        double_dqn=False,
        prioritized=False,
        n_step=1,
        gamma=0.8,
        loss="mse",
        learning_rate=0.02,
        max_grad_norm=10.0,
        hidden_sizes=(8,),
        epsilon_start=0.5,
        epsilon_end=0.5,
    ),
}
NUM_UPDATES = 8


@pytest.fixture(scope="module", params=list(LEARNER_CONFIGS))
def learner_run(request):
    """The states before and after each of NUM_UPDATES learner updates."""
    registry.register(CHAIN, Chain, overwrite=True)
    cfg = dqn.DQNConfig(**LEARNER_CONFIGS[request.param])
    learner = dqn.make_learner(cfg)
    hparams = learner.hparams
    if cfg.prioritized:  # hparams are data: the rollout must use these, not the config's
        hparams = hparams.replace(gamma=jnp.float32(0.8))
    learner_update = jax.jit(learner.update)
    states, metrics = [learner.init(jax.random.key(3), hparams)], []
    for _ in range(NUM_UPDATES):
        state, m = learner_update(states[-1], hparams)
        states.append(state)
        metrics.append(m)
    return cfg, hparams, states, metrics


def test_replay_holds_the_chain_n_step_transitions(learner_run):
    """Every transition the learner adds is the chain's n-step transition from its obs:
    rewards summed with gamma^k, discount 0 after a termination, gamma^m after a truncation
    or a full window, next_obs the observation the window ended on; padding only while the
    window fills; the rest of the buffer untouched."""
    cfg, hparams, states, _ = learner_run
    gamma = float(hparams.gamma)
    n, cap = cfg.n_step, cfg.buffer_size
    terminal, bootstrap = 0, set()
    for before, after in zip(states[:-1], states[1:], strict=True):
        u = int(before.update_step)
        slots = (int(before.buffer.insert_pos) + np.arange(cfg.train_frequency)) % cap
        untouched = np.setdiff1d(np.arange(cap), slots)
        items_before, items = np_batch(before.buffer.items), np_batch(after.buffer.items)
        for k in items:
            np.testing.assert_array_equal(items[k][untouched], items_before[k][untouched])
        # added in env-step order, all envs of one step together
        step = u * cfg.steps_per_env + np.arange(cfg.train_frequency) // cfg.num_envs
        np.testing.assert_array_equal(items["valid"][slots], step >= n - 1)
        for s in slots[items["valid"][slots]]:
            reward, discount, next_obs = np_chain_transition(items["obs"][s], n, gamma)
            np.testing.assert_allclose(items["reward"][s], reward, rtol=1e-6)
            np.testing.assert_allclose(items["discount"][s], discount, rtol=1e-6)
            np.testing.assert_array_equal(items["next_obs"][s], next_obs)
            if discount == 0.0:
                terminal += 1
            else:
                bootstrap.add(round(discount, 6))
    # the run covered terminations, and for n > 1 windows cut short by a truncation
    assert terminal >= 2 and len(bootstrap) >= min(n, 2), (terminal, bootstrap)


def np_tree(leaves, num_leaves):
    """A float32 sum-tree over `leaves`, parents summed from children like the buffer's."""
    tree = np.zeros(2 * num_leaves, np.float32)
    tree[num_leaves : num_leaves + len(leaves)] = leaves
    for node in range(num_leaves - 1, 0, -1):
        tree[node] = tree[2 * node] + tree[2 * node + 1]
    return tree


def test_learner_update_matches_numpy(learner_run):
    """Each update's parameters, Adam state, priorities and metrics equal the NumPy steps on
    the batches the buffer samples with the update's keys: no change before learning_starts,
    importance weights (N P)^-beta / max in the loss, new leaves (|td| + eps)^alpha, new items
    at max_priority^alpha, beta annealed per gradient step."""
    cfg, hparams, states, metrics = learner_run
    buffer = make_replay(cfg)
    cap, per = cfg.buffer_size, cfg.prioritized
    num_leaves = 1 << (cap - 1).bit_length()
    learned, smallest_is_weight = 0, 1.0
    for before, after, m in zip(states[:-1], states[1:], metrics, strict=True):
        u = int(before.update_step)
        assert int(after.update_step) == u + 1
        keys = jax.random.split(before.key, 2 + cfg.steps_per_env + cfg.gradient_steps)
        np.testing.assert_array_equal(jax.random.key_data(after.key), jax.random.key_data(keys[0]))
        learn_keys = keys[2 + cfg.steps_per_env :]
        size = int(after.buffer.size)
        do_learn = u >= cfg.first_learning_update and size >= cfg.batch_size
        np.testing.assert_array_equal(m["learning"], float(do_learn))
        assert do_learn == (u >= cfg.first_learning_update), "masked only by learning_starts"

        buf = after.buffer
        if per:
            slots = (int(before.buffer.insert_pos) + np.arange(cfg.train_frequency)) % cap
            leaves = np.asarray(before.buffer.tree)[num_leaves : num_leaves + cap].copy()
            max_priority = float(before.buffer.max_priority)
            leaves[slots] = np.float32(max_priority) ** np.float32(cfg.per_alpha)
            beta_step = int(before.buffer.beta_step)
            buf = buf.replace(
                tree=jnp.asarray(np_tree(leaves, num_leaves)),
                max_priority=before.buffer.max_priority,
                beta_step=before.buffer.beta_step,
            )
        layers, target_layers = np_layers(before.params), np_layers(before.target_params)
        opt = adam_state(before.opt_state)
        adam = (int(opt.count), np_layers(opt.mu), np_layers(opt.nu))
        step_metrics = []
        for j in range(cfg.gradient_steps if do_learn else 0):
            sample = buffer.sample(buf, learn_keys[j])
            b = np_batch(sample.experience)
            weights = b["valid"].astype(np.float64)
            if per:
                idx = np.asarray(sample.indices)
                prob = leaves[idx].astype(np.float64) / leaves.astype(np.float64).sum()
                frac = min(beta_step / cfg.num_learning_steps, 1.0)
                beta = cfg.per_beta_start + (cfg.per_beta_end - cfg.per_beta_start) * frac
                is_weights = (size * prob) ** -beta
                weights = weights * is_weights / is_weights.max()
                smallest_is_weight = min(smallest_is_weight, is_weights.min() / is_weights.max())
            layers, adam, td, sm = np_dqn_step(
                layers,
                target_layers,
                adam,
                b,
                weights,
                lr=float(hparams.learning_rate),
                max_norm=float(hparams.max_grad_norm),
                eps=cfg.adam_eps,
                double=cfg.double_dqn,
                loss=cfg.loss,
            )
            step_metrics.append(sm)
            if per:
                priority = np.where(b["valid"], np.abs(td), 0.0) + cfg.per_eps
                leaves[idx] = (priority**cfg.per_alpha).astype(np.float32)
                max_priority = max(max_priority, priority.max())
                beta_step = min(beta_step + 1, cfg.num_learning_steps)
                buf = buf.replace(
                    tree=jnp.asarray(np_tree(leaves, num_leaves)),
                    max_priority=jnp.float32(max_priority),
                    beta_step=jnp.int32(beta_step),
                )
        if do_learn:
            learned += 1
            assert_layers_close(after.params, layers, msg=f"update {u} params")
            opt = adam_state(after.opt_state)
            assert int(opt.count) == adam[0]
            assert_layers_close(opt.mu, adam[1], atol=1e-8, msg=f"update {u} mu")
            assert_layers_close(opt.nu, adam[2], atol=1e-10, msg=f"update {u} nu")
            for k in ("loss", "q_mean", "td_abs_mean", "grad_norm"):
                want = np.mean([sm[k] for sm in step_metrics])
                np.testing.assert_allclose(m[k], want, rtol=1e-5, atol=1e-6, err_msg=k)
        else:  # before learning_starts nothing the optimiser owns moves
            for a, c in zip(
                jax.tree.leaves(after.params), jax.tree.leaves(before.params), strict=True
            ):
                np.testing.assert_array_equal(a, c)
            for a, c in zip(
                jax.tree.leaves(after.opt_state), jax.tree.leaves(before.opt_state), strict=True
            ):
                np.testing.assert_array_equal(a, c)
        if per:
            got = np.asarray(after.buffer.tree)
            np.testing.assert_allclose(got, np_tree(leaves, num_leaves), rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(after.buffer.max_priority, max_priority, rtol=1e-5)
            assert int(after.buffer.beta_step) == beta_step
    assert learned >= 5
    if per:  # the importance weights were not all 1, so dropping them changes a step
        assert smallest_is_weight < 0.9
    # the learning updates moved the network
    assert (
        np.abs(np_layers(states[-1].params)[0][0] - np_layers(states[0].params)[0][0]).max() > 1e-3
    )


def test_target_network_frozen_between_copies_and_polyak_on_schedule(learner_run):
    """target <- tau * online + (1 - tau) * target exactly after updates u with
    (u + 1) % (target_update_period / train_frequency) == 0, and bit-for-bit unchanged after
    every other update."""
    cfg, hparams, states, _ = learner_run
    every = int(hparams.target_update_period) // cfg.train_frequency
    tau = float(hparams.tau)
    copies = 0
    for before, after in zip(states[:-1], states[1:], strict=True):
        u = int(before.update_step)
        pairs = zip(
            jax.tree.leaves(after.target_params),
            jax.tree.leaves(before.target_params),
            jax.tree.leaves(after.params),
            strict=True,
        )
        if (u + 1) % every == 0:
            copies += 1
            for target, old, online in pairs:
                want = tau * np.asarray(online, np.float64) + (1 - tau) * np.asarray(old)
                np.testing.assert_allclose(target, want, rtol=1e-6, atol=1e-7, err_msg=str(u))
        else:
            for target, old, _ in pairs:
                np.testing.assert_array_equal(target, old, err_msg=f"update {u}")
    assert copies >= 2
    # a copy after learning started moved the target (not vacuous), and with tau < 1 the
    # target then sits strictly between its old value and the online network
    last = states[-1]
    moved = [
        np.abs(np.asarray(t) - np.asarray(p)).max()
        for t, p in zip(
            jax.tree.leaves(states[0].target_params),
            jax.tree.leaves(last.target_params),
            strict=True,
        )
    ]
    assert max(moved) > 1e-4
    if tau < 1.0:
        gaps = [
            np.abs(np.asarray(t) - np.asarray(p)).max()
            for t, p in zip(
                jax.tree.leaves(last.target_params), jax.tree.leaves(last.params), strict=True
            )
        ]
        assert max(gaps) > 1e-5
