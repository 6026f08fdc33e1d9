"""Episodic memory: exact retrieval against a NumPy brute force, chunking, bounded memory,
approximate recall, wrap-around, the valid mask and bad input; DQN with memory-mixed batches
(config errors, a short run, checkpoints) and a slow CartPole learning run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import memory as mem
from jaxlearn.algos import dqn
from jaxlearn.algos.dqn.replay import make_memory
from jaxlearn.checkpoint import Checkpointer
from jaxlearn.config import to_dict

# Orbax/TensorStore leave "Event loop is closed" noise behind
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ITEM = {"obs": jnp.zeros(3, jnp.float32), "id": jnp.int32(0)}


def filled(capacity, num, dim, metric="l2", seed=0, **kwargs):
    """A memory holding `num` random items (id = insertion order) and their keys [num, dim]."""
    keys = np.random.default_rng(seed).normal(size=(num, dim)).astype(np.float32)
    memory = mem.episodic_memory(capacity, dim, metric=metric, **kwargs)
    state = memory.init(ITEM)
    batch = {"obs": jnp.asarray(keys[:, :3]), "id": jnp.arange(num, dtype=jnp.int32)}
    return memory, memory.add(state, batch, keys), keys


def np_scores(queries, keys, metric):
    """Brute-force similarity [Q, N]: cosine, or minus the squared Euclidean distance."""
    if metric == "cosine":
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
        return q @ k.T
    return -((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1)


# --------------------------------------------------------------------------------------------
# Exact retrieval


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_retrieval_matches_numpy_brute_force(metric):
    # 700 of 1000 slots filled; chunks of 64 rows, the last one overlapping the one before.
    memory, state, keys = filled(1000, 700, 8, metric, chunk_size=64)
    queries = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    out = memory.retrieve(state, jnp.asarray(queries), 5)
    ref = np_scores(queries, keys, metric)
    ref_top = -np.sort(-ref, axis=1)[:, :5]
    assert out.indices.shape == (16, 5) and out.experience["obs"].shape == (16, 5, 3)
    assert bool(np.all(out.valid))
    np.testing.assert_allclose(out.scores, ref_top, rtol=1e-4, atol=1e-4)
    # The returned slots are the brute-force top 5 (compared by score, so a near-tie in
    # float32 cannot fail the test), in order, distinct, and their items are the stored ones.
    got = np.take_along_axis(ref, np.asarray(out.indices), axis=1)
    np.testing.assert_allclose(got, ref_top, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.argsort(-ref, axis=1)[:, :5], out.indices)
    assert all(len(set(row)) == 5 for row in np.asarray(out.indices))
    np.testing.assert_array_equal(out.experience["id"], out.indices)
    np.testing.assert_allclose(out.experience["obs"], keys[np.asarray(out.indices)][..., :3])


@pytest.mark.parametrize("chunk_size", [5, 7, 64, 999, 5000, None])
def test_chunk_size_does_not_change_the_result(chunk_size):
    _, state, _ = filled(1000, 1000, 6)
    queries = jax.random.normal(jax.random.key(2), (9, 6))
    ref = mem.search(state.keys, state.size, queries, 5, chunk_size=1000)
    out = mem.search(state.keys, state.size, queries, 5, chunk_size=chunk_size)
    np.testing.assert_array_equal(out[1], ref[1])
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)


def test_peak_memory_is_queries_times_chunk_not_capacity():
    capacity, num_queries, dim = 1 << 16, 64, 8
    keys = jax.ShapeDtypeStruct((capacity, dim), jnp.float32)
    queries = jax.ShapeDtypeStruct((num_queries, dim), jnp.float32)
    full_scores = capacity * num_queries * 4

    def temp_bytes(chunk):
        fn = lambda k, q: mem.search(k, capacity, q, 5, chunk_size=chunk)  # noqa: E731
        analysis = jax.jit(fn).lower(keys, queries).compile().memory_analysis()
        return analysis.temp_size_in_bytes

    assert temp_bytes(1024) < full_scores / 16  # 64 x 1024 scores and a few copies
    assert temp_bytes(capacity) >= full_scores  # one chunk: the whole score matrix


# --------------------------------------------------------------------------------------------
# Approximate retrieval

RECALL_BAR = 0.95  # the recall_target asked of approx_max_k


def test_approximate_recall_against_exact_is_above_the_bar():
    _, state, _ = filled(20_000, 20_000, 16)
    queries = jax.random.normal(jax.random.key(3), (64, 16))
    exact = mem.search(state.keys, state.size, queries, 10)
    approx = mem.search(state.keys, state.size, queries, 10, approximate=True, recall_target=0.95)
    assert float(mem.recall(approx[1], exact[1])) >= RECALL_BAR
    assert bool(np.all(approx[2]))


def test_approximate_mode_uses_approx_max_k_on_tpu_and_top_k_elsewhere():
    keys = jax.ShapeDtypeStruct((100, 8), jnp.float32)
    queries = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    fn = jax.jit(lambda k, q: mem.search(k, 100, q, 5, approximate=True))
    tpu = fn.trace(keys, queries).lower(lowering_platforms=("tpu",)).as_text()
    cpu = fn.trace(keys, queries).lower(lowering_platforms=("cpu",)).as_text()
    assert "ApproxTopK" in tpu and "is_fallback" not in tpu  # the real approximation
    assert "ApproxTopK" not in cpu


def test_recall_counts_shared_slots():
    exact = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = jnp.array([[4, 3, 2, 9], [8, 7, 6, 5]])
    assert float(mem.recall(approx, exact)) == pytest.approx(7 / 8)


# --------------------------------------------------------------------------------------------
# Ring, valid mask, bad input


@pytest.mark.parametrize("add_batch_size", [None, 5])
def test_wrap_around_overwrites_the_oldest_items(add_batch_size):
    memory = mem.episodic_memory(10, 2, add_batch_size=add_batch_size)
    state = memory.init(ITEM)
    for start in range(0, 15, 5):  # ids 0..14 into 10 slots: 0..4 are overwritten
        ids = jnp.arange(start, start + 5, dtype=jnp.int32)
        keys = jnp.stack([ids.astype(jnp.float32), jnp.zeros(5)], axis=1)  # key = (id, 0)
        state = memory.add(state, {"obs": jnp.zeros((5, 3)), "id": ids}, keys)
    assert int(state.size) == 10 and int(state.insert_pos) == 5
    assert sorted(np.asarray(state.items["id"]).tolist()) == list(range(5, 15))
    # The nearest to (0, 0) are now ids 5, 6, 7, stored in the slots that held 0, 1, 2.
    out = memory.retrieve(state, jnp.zeros((1, 2)), 3)
    np.testing.assert_array_equal(out.experience["id"], [[5, 6, 7]])
    np.testing.assert_array_equal(out.indices, [[5, 6, 7]])
    np.testing.assert_allclose(out.scores, [[-25.0, -36.0, -49.0]])


def test_fewer_items_than_k_are_flagged_under_jit_and_refused_eagerly():
    memory, state, _ = filled(100, 3, 4)
    queries = jnp.ones((2, 4))
    out = jax.jit(lambda s, q: memory.retrieve(s, q, 5))(state, queries)
    np.testing.assert_array_equal(out.valid, [[True] * 3 + [False] * 2] * 2)
    assert np.all(np.isneginf(out.scores[:, 3:])) and np.all(out.indices[:, 3:] == 0)
    assert sorted(np.asarray(out.indices[0, :3]).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"k=5 is larger than the number of stored items \(3\)"):
        memory.retrieve(state, queries, 5)
    with pytest.raises(ValueError, match="k=4 is larger"):
        mem.check_retrievable(state, 4)
    mem.check_retrievable(state, 3)
    assert bool(memory.can_retrieve(state, 3)) and not bool(memory.can_retrieve(state, 4))
    # An empty memory under jit: nothing valid, no error, nothing out of bounds.
    empty = jax.jit(lambda s, q: memory.retrieve(s, q, 2))(memory.init(ITEM), queries)
    assert not np.any(empty.valid)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="capacity must be an integer >= 1, got 0"):
        mem.episodic_memory(0, 8)
    with pytest.raises(ValueError, match="embed_dim must be an integer >= 1, got -2"):
        mem.episodic_memory(10, -2)
    with pytest.raises(ValueError, match=r"metric must be one of \['l2', 'cosine'\], got 'dot'"):
        mem.episodic_memory(10, 8, metric="dot")
    memory, state, _ = filled(50, 20, 8)
    with pytest.raises(ValueError, match="k must be <= capacity=50, got k=51"):
        memory.retrieve(state, jnp.ones((2, 8)), 51)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        memory.retrieve(state, jnp.ones((2, 8)), 0)
    with pytest.raises(ValueError, match=r"queries must be \[Q, embed_dim=8\].*got shape \(2, 6\)"):
        memory.retrieve(state, jnp.ones((2, 6)), 3)
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        memory.retrieve(state, jnp.ones(8), 3)
    with pytest.raises(ValueError, match=r"queries must be .*got shape \(2, 6\)"):  # under jit
        jax.jit(lambda s, q: memory.retrieve(s, q, 3))(state, jnp.ones((2, 6)))
    batch = {"obs": jnp.zeros((4, 3)), "id": jnp.zeros(4, jnp.int32)}
    with pytest.raises(ValueError, match=r"keys must be a float array \[N=4, embed_dim=8\]"):
        memory.add(state, batch, jnp.ones((4, 7)))
    with pytest.raises(ValueError, match="tree structure differs"):
        memory.add(state, {"obs": jnp.zeros((4, 3))}, jnp.ones((4, 8)))
    with pytest.raises(ValueError, match="recall_target must be a finite number in"):
        memory.retrieve(state, jnp.ones((2, 8)), 3, approximate=True, recall_target=1.5)
    with pytest.raises(ValueError, match="projection expects 3"):
        mem.project(mem.random_projection(jax.random.key(0), (3,), 4), jnp.ones((2, 5)))


def test_vmap_over_seeds_equals_separate_memories():
    memory = mem.episodic_memory(64, 4, chunk_size=16)
    keys = jax.random.normal(jax.random.key(4), (2, 40, 4))
    batch = {"obs": jnp.zeros((2, 40, 3)), "id": jnp.tile(jnp.arange(40, dtype=jnp.int32), (2, 1))}
    queries = jax.random.normal(jax.random.key(5), (2, 3, 4))

    def run(keys, batch, queries):
        state = memory.add(memory.init(ITEM), batch, keys)
        return memory.retrieve(state, queries, 4)

    batched = jax.jit(jax.vmap(run))(keys, batch, queries)
    for i in range(2):
        one = run(keys[i], jax.tree.map(lambda x, i=i: x[i], batch), queries[i])
        np.testing.assert_array_equal(batched.indices[i], one.indices)
        np.testing.assert_allclose(batched.scores[i], one.scores, rtol=1e-6)


def test_random_projection_keeps_distances_roughly():
    proj = mem.random_projection(jax.random.key(0), (10, 10), 256)
    x = jax.random.normal(jax.random.key(1), (20, 10, 10))
    z = mem.project(proj, x)
    assert z.shape == (20, 256)
    d_x = np.linalg.norm(np.asarray(x[:10] - x[10:]).reshape(10, -1), axis=1)
    d_z = np.linalg.norm(np.asarray(z[:10] - z[10:]), axis=1)
    np.testing.assert_allclose(d_z / d_x, 1.0, atol=0.3)


# --------------------------------------------------------------------------------------------
# DQN with memory-mixed batches


def tiny_dqn(**overrides):
    values = dict(
        total_timesteps=400,
        num_envs=2,
        buffer_size=100,
        batch_size=16,
        learning_starts=36,  # first gradient step in update 8
        train_frequency=4,
        target_update_period=40,
        hidden_sizes=(16,),
        memory_fraction=0.25,  # 4 of 16 from memory: 2 queries x memory_k=2
        memory_size=200,
        memory_k=2,
    )
    values.update(overrides)
    return dqn.DQNConfig(**values)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            {"memory_fraction": 1.0},
            r"memory_fraction=1.0 is invalid: must be a finite number in \[0.0, 1.0\)",
        ),
        ({"memory_fraction": -0.1}, r"memory_fraction=-0.1 is invalid"),
        ({"memory_fraction": 0.01}, r"memory_fraction=0.01 .* = 0 memory items per batch"),
        ({"memory_fraction": 0.99}, r"memory_fraction=0.99 .* leaving none from replay"),
        ({"memory_fraction": 0.75, "memory_k": 1}, r"memory_k=1 .* use memory_k >= 3"),
        ({"memory_size": 50}, r"memory_size=50 .* must be >= buffer_size=100"),
        ({"memory_size": 0}, r"memory_size=0 is invalid: must be a positive integer"),
        ({"memory_k": 0}, r"memory_k=0 is invalid: must be a positive integer"),
        ({"memory_embed_dim": 0}, r"memory_embed_dim=0 is invalid"),
        ({"memory_metric": "dot"}, r"memory_metric='dot' .* one of \['l2', 'cosine'\]"),
        ({"memory_embedding": "pixels"}, r"memory_embedding='pixels' .* \['projection', 'feat"),
        ({"memory_approx": "yes"}, r"memory_approx='yes' is invalid: must be a bool"),
    ],
)
def test_dqn_memory_config_errors_name_field_and_allowed(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_dqn(**overrides)


def test_dqn_memory_is_off_by_default():
    cfg = dqn.DQNConfig()
    assert cfg.memory_fraction == 0.0 and cfg.memory_batch_size == 0
    assert cfg.replay_batch_size == cfg.batch_size
    learner = dqn.make_learner(dataclasses.replace(tiny_dqn(), memory_fraction=0.0))
    state = jax.eval_shape(learner.init, jax.random.key(0), learner.hparams)
    assert state.memory is None


@pytest.fixture(scope="module")
def memory_run():
    """Two seeds of a short run: prioritized, 2-step, Q-network features as keys."""
    cfg = tiny_dqn(prioritized=True, n_step=2, memory_embedding="features")
    keys = jax.random.split(jax.random.key(0), 2)
    state, metrics = jax.jit(jax.vmap(dqn.make_train(cfg)))(keys)
    return cfg, state, metrics


def test_dqn_batches_mix_in_retrieved_transitions(memory_run):
    cfg, state, metrics = memory_run
    assert (cfg.replay_batch_size, cfg.memory_batch_size, cfg.memory_queries) == (12, 4, 2)
    assert state.memory.keys.shape == (2, 200, 16)  # features: the last hidden layer
    np.testing.assert_array_equal(state.memory.size, [200, 200])  # 400 env steps, wrapped
    learning = np.asarray(metrics["learning"]) > 0
    assert learning[:, 8:].all() and not learning[:, :8].any()
    found = np.asarray(metrics["memory_found"])
    assert np.all(found[learning] == 1.0)  # every retrieved neighbour existed
    score = np.asarray(metrics["memory_score_mean"])[learning]
    assert np.all(np.isfinite(score)) and np.all(score <= 0.0)  # minus squared distances
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    # Prioritized replay still updates one priority set per gradient step.
    np.testing.assert_array_equal(state.buffer.beta_step, cfg.num_updates - 8)


def test_dqn_memory_state_survives_a_checkpoint(memory_run, tmp_path):
    cfg, state, _ = memory_run
    ckpt = Checkpointer(str(tmp_path / "c"))
    ckpt.save(1, state, algo="dqn", config=to_dict(cfg))
    ckpt.close()
    learner = dqn.make_learner(cfg)
    like = jax.eval_shape(
        jax.vmap(learner.init, in_axes=(0, None)),
        jax.random.split(jax.random.key(0), 2),
        learner.hparams,
    )
    restored, _, _ = Checkpointer(str(tmp_path / "c")).restore(1, like, config=to_dict(cfg))
    for a, b in zip(jax.tree.leaves(restored.memory), jax.tree.leaves(state.memory), strict=True):
        np.testing.assert_array_equal(a, b)
    # The restored memory answers queries like the original one.
    env, env_params = jaxlearn.make(cfg.env)
    memory = make_memory(cfg, dqn.make_agent(cfg, env, env_params), (4,)).memory
    one = jax.tree.map(lambda x: x[0], restored.memory)
    out = memory.retrieve(one, one.keys[:3], 1)
    np.testing.assert_allclose(out.scores, 0.0, atol=1e-5)  # each stored key finds itself


# --------------------------------------------------------------------------------------------
# Learning


# The bar is the one the plain DQN CartPole test uses for prioritized replay (float
# differences change the trajectory). The test shrinks the memory to the replay buffer's 10k
# transitions: every retrieval scans a fifth of the shipped 50k, so the run takes ~60 s on
# the 2-core CPU (measured on the fixed seed with the config's 10 envs, 3-step returns and
# decaying learning rate: 467.2, every learning update retrieving; 493.1 with its earlier
# 1 env, 1-step returns and constant rate).
MEMORY_THRESHOLD = 450.0


@pytest.mark.slow
@pytest.mark.optimized
def test_dqn_with_memory_mixed_batches_solves_cartpole():
    from jaxlearn.runner import resolve_config
    from jaxlearn.sinks import final_returns

    run_cfg, cfg = resolve_config(
        config_file="experiments/dqn_cartpole_memory.yaml", overrides={"memory_size": 10_000}
    )
    assert cfg.memory_batch_size == 32 and cfg.memory_size == cfg.buffer_size
    key = jax.random.split(jax.random.key(run_cfg.seed), run_cfg.num_seeds)[0]  # as the runner
    state, metrics = jax.jit(dqn.make_train(cfg))(key)
    metrics = {k: np.asarray(v)[None] for k, v in metrics.items()}
    assert np.all(metrics["memory_found"][metrics["learning"] > 0] == 1.0)
    assert float(final_returns(metrics, run_cfg.final_fraction)[0]) >= MEMORY_THRESHOLD
