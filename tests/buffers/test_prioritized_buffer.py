"""Prioritized replay: frequencies against NumPy, weights, sum-tree invariants, beta, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.buffers import PrioritizedBufferState, PrioritizedSample, prioritized_buffer

EXAMPLE = {"obs": jnp.zeros(2, jnp.float32), "id": jnp.int32(0)}
ALPHA, EPS = 0.6, 1e-6


def make_batch(first_id, num: int) -> dict:
    ids = first_id + jnp.arange(num, dtype=jnp.int32)
    return {"obs": jnp.stack([ids, 10 * ids], -1).astype(jnp.float32), "id": ids}


def leaves(state: PrioritizedBufferState, capacity: int) -> np.ndarray:
    num_leaves = state.tree.shape[-1] // 2
    return np.asarray(state.tree[num_leaves : num_leaves + capacity])


def numpy_beta(step, beta_start=0.4, beta_end=1.0, beta_steps=100_000):
    return beta_start + (beta_end - beta_start) * min(step / beta_steps, 1.0)


def draw_counts(buffer, state, num_calls: int, capacity: int, seed: int = 0) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), num_calls)
    samples = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0)))(state, keys)
    ids = np.asarray(samples.experience["id"])
    np.testing.assert_array_equal(ids, np.asarray(samples.indices))  # id == slot here
    return np.bincount(ids.ravel(), minlength=capacity)


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(np.sum((counts - expected) ** 2 / expected))


# Upper 0.1% points of chi-square with 5 and 6 degrees of freedom.
CHI2_999 = {5: 20.52, 6: 22.46}


def test_init_state():
    buffer = prioritized_buffer(capacity=5, sample_batch_size=2)
    state = buffer.init(EXAMPLE)
    assert state.items["obs"].shape == (5, 2)
    assert state.tree.shape == (16,) and state.tree.dtype == jnp.float32  # 8 leaves
    assert not np.asarray(state.tree).any()
    assert float(state.max_priority) == 1.0 and int(state.beta_step) == 0
    assert not bool(buffer.can_sample(state))


def test_frequencies_follow_priorities_and_change_after_update():
    capacity, num_valid = 10, 7  # 16 leaves: 9 empty ones must never be drawn
    buffer = prioritized_buffer(capacity, sample_batch_size=8, alpha=ALPHA, eps=EPS)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, num_valid))

    # New items all get max_priority = 1: uniform.
    counts = draw_counts(buffer, state, 2000, capacity)
    assert counts[num_valid:].sum() == 0
    uniform = np.full(num_valid, 1 / num_valid)
    assert chi_square(counts[:num_valid], uniform) < CHI2_999[6]

    priorities = np.array([1.0, 2.0, 0.5, 4.0, 3.0, 0.25, 8.0], np.float32)
    state = jax.jit(buffer.update_priorities)(state, jnp.arange(num_valid), priorities)
    mass = (np.abs(priorities) + EPS) ** ALPHA
    reference = mass / mass.sum()
    counts = draw_counts(buffer, state, 2000, capacity, seed=1)
    assert counts[num_valid:].sum() == 0
    assert chi_square(counts[:num_valid], reference) < CHI2_999[6]
    # The test has power: the old uniform law is rejected.
    assert chi_square(counts[:num_valid], uniform) > 10 * CHI2_999[6]

    # Raising one priority raises its frequency to the new reference.
    state = buffer.update_priorities(state, jnp.array([2]), jnp.array([50.0]))
    priorities[2] = 50.0
    mass = (priorities + EPS) ** ALPHA
    counts = draw_counts(buffer, state, 2000, capacity, seed=2)
    assert chi_square(counts[:num_valid], mass / mass.sum()) < CHI2_999[6]
    assert counts[2] / counts.sum() > 0.3


def test_probabilities_and_weights_match_numpy():
    capacity, num_valid = 12, 9
    buffer = prioritized_buffer(capacity, sample_batch_size=8, alpha=ALPHA, eps=EPS)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, num_valid))
    priorities = np.linspace(0.1, 3.0, num_valid).astype(np.float32)
    state = buffer.update_priorities(state, jnp.arange(num_valid), -priorities)  # |.| is used
    sample = jax.jit(buffer.sample)(state, jax.random.key(4))
    assert isinstance(sample, PrioritizedSample)

    mass = (priorities + EPS) ** ALPHA
    probs = mass[np.asarray(sample.indices)] / mass.sum()
    np.testing.assert_allclose(np.asarray(sample.probabilities), probs, rtol=1e-5)
    raw = (num_valid * probs) ** -numpy_beta(1)
    np.testing.assert_allclose(np.asarray(sample.weights), raw / raw.max(), rtol=1e-5)
    assert float(np.max(sample.weights)) == pytest.approx(1.0)


def test_stratified_draws_cover_each_segment():
    """One draw per mass segment: with equal masses, B == size gives every slot exactly once."""
    buffer = prioritized_buffer(capacity=8, sample_batch_size=8)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 8))
    for seed in range(3):
        sample = buffer.sample(state, jax.random.key(seed))
        np.testing.assert_array_equal(np.asarray(sample.indices), np.arange(8))
        np.testing.assert_allclose(np.asarray(sample.weights), 1.0)


def test_sum_tree_invariants_after_many_updates():
    capacity, batch = 1000, 64  # 1024 leaves
    buffer = prioritized_buffer(capacity, sample_batch_size=8, alpha=ALPHA, eps=EPS)
    state = buffer.init(EXAMPLE)
    state = jax.jit(buffer.add)(state, make_batch(0, capacity))
    rng = np.random.default_rng(0)
    num_updates = 200
    # Small index range: many duplicates inside each update.
    indices = rng.integers(0, capacity, size=(num_updates, batch)).astype(np.int32)
    indices[::2] %= 50
    priorities = rng.exponential(2.0, size=(num_updates, batch)).astype(np.float32)

    def step(state, update):
        return buffer.update_priorities(state, *update), None

    state, _ = jax.jit(lambda s, u: jax.lax.scan(step, s, u))(state, (indices, priorities))

    # NumPy reference: the updates applied one by one, in order.
    expected = np.ones(capacity)
    for row_i, row_p in zip(indices, priorities, strict=True):
        for i, p in zip(row_i, row_p, strict=True):
            expected[i] = (abs(p) + EPS) ** ALPHA
    np.testing.assert_allclose(leaves(state, capacity), expected, rtol=1e-5)

    tree = np.asarray(state.tree, np.float64)
    num_leaves = tree.shape[0] // 2
    assert not tree[num_leaves + capacity :].any()
    np.testing.assert_allclose(tree[1], tree[num_leaves:].sum(), rtol=1e-5)
    inner = np.arange(1, num_leaves)
    np.testing.assert_allclose(tree[inner], tree[2 * inner] + tree[2 * inner + 1], rtol=1e-6)
    assert float(state.max_priority) == pytest.approx(priorities.max() + EPS, rel=1e-6)
    assert int(state.beta_step) == num_updates


def test_duplicate_indices_last_wins_and_invalid_ignored():
    buffer = prioritized_buffer(capacity=8, sample_batch_size=1, alpha=1.0, eps=EPS)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 4))
    indices = jnp.array([2, 2, 1, 2, 6, -1, 1])  # 6 and -1 are not valid slots
    values = jnp.array([5.0, 1.0, 7.0, 3.0, 9.0, 9.0, 2.0])
    state = jax.jit(buffer.update_priorities)(state, indices, values)
    np.testing.assert_allclose(
        leaves(state, 8), [1.0, 2.0 + EPS, 3.0 + EPS, 1.0, 0, 0, 0, 0], rtol=1e-6
    )
    # Only the surviving value of each slot counts: 7 was overwritten by 2, 9s were ignored.
    assert float(state.max_priority) == pytest.approx(3.0 + EPS)


def test_new_items_get_max_priority_and_wraparound():
    capacity = 5
    buffer = prioritized_buffer(capacity, sample_batch_size=2, alpha=ALPHA, eps=EPS)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 3))
    state = buffer.update_priorities(state, jnp.array([0, 1]), jnp.array([4.0, 0.5]))
    state = buffer.add(state, make_batch(3, 4))  # ids 3..6; 5 and 6 overwrite slots 0 and 1
    new_mass = (4.0 + EPS) ** ALPHA
    np.testing.assert_allclose(leaves(state, capacity), [new_mass, new_mass, 1.0] + 2 * [new_mass])
    np.testing.assert_array_equal(np.asarray(state.items["id"]), [5, 6, 2, 3, 4])
    assert int(state.insert_pos) == 2 and int(state.size) == capacity


def test_samples_only_valid_slots_with_skewed_priorities():
    """Float rounding near the end of the mass must not select an empty slot."""
    capacity, num_valid = 1000, 333
    buffer = prioritized_buffer(capacity, sample_batch_size=64, alpha=1.0)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, num_valid))
    priorities = np.full(num_valid, 1e-4, np.float32)
    priorities[0] = 1e6
    state = buffer.update_priorities(state, jnp.arange(num_valid), priorities)
    counts = draw_counts(buffer, state, 200, capacity)
    assert counts[num_valid:].sum() == 0
    assert counts[0] > 0.99 * counts.sum()


def test_sample_guards_against_drifted_sums():
    """Inner sums above their children's (rounding drift, exaggerated here) never pick empties."""
    buffer = prioritized_buffer(capacity=8, sample_batch_size=8)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 3))
    state = state.replace(tree=state.tree.at[1].multiply(2.0))  # half the draws land past the end
    sample = jax.vmap(buffer.sample, in_axes=(None, 0))(
        state, jax.random.split(jax.random.key(0), 20)
    )
    assert np.asarray(sample.indices).max() == 2
    np.testing.assert_array_equal(sample.experience["id"], sample.indices)


def test_beta_is_annealed_over_update_calls():
    beta_start, beta_end, beta_steps = 0.2, 0.8, 4
    buffer = prioritized_buffer(
        6, sample_batch_size=6, beta_start=beta_start, beta_end=beta_end, beta_steps=beta_steps
    )
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 6))
    priorities = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    sample_fn = jax.jit(buffer.sample)
    for step in range(7):
        sample = sample_fn(state, jax.random.key(step))
        probs = np.asarray(sample.probabilities, np.float64)
        beta = numpy_beta(step, beta_start, beta_end, beta_steps)
        raw = (6 * probs) ** -beta
        if step == 0:  # all priorities still equal
            np.testing.assert_allclose(np.asarray(sample.weights), 1.0)
        else:
            np.testing.assert_allclose(np.asarray(sample.weights), raw / raw.max(), rtol=1e-5)
        assert int(state.beta_step) == min(step, beta_steps)
        state = buffer.update_priorities(state, jnp.arange(6), priorities)


def _run(buffer, state, first_ids, key, num_steps=6, num=3):
    """Add, sample, then set the sampled priorities to the sampled ids, in a ``lax.scan``."""

    def step(state, inputs):
        step_index, key = inputs
        state = buffer.add(state, make_batch(first_ids + step_index * num, num))
        sample = buffer.sample(state, key)
        priorities = sample.experience["id"].astype(jnp.float32) % 7 + 0.5
        return buffer.update_priorities(state, sample.indices, priorities), sample

    inputs = (jnp.arange(num_steps), jax.random.split(key, num_steps))
    return jax.lax.scan(step, state, inputs)


def test_jit_scan_and_vmap_over_seeds_match_per_seed_runs():
    buffer = prioritized_buffer(capacity=8, sample_batch_size=4)
    seeds = jnp.arange(3)
    first_ids = 100 * seeds
    keys = jax.random.split(jax.random.key(5), 3)
    run = jax.jit(lambda s, f, k: _run(buffer, s, f, k))
    states = jax.vmap(lambda _: buffer.init(EXAMPLE))(seeds)
    vmapped_state, vmapped = jax.jit(jax.vmap(run))(states, first_ids, keys)
    for seed in range(3):
        single_state, single = run(buffer.init(EXAMPLE), first_ids[seed], keys[seed])
        jax.tree.map(
            lambda a, b, s=seed: np.testing.assert_allclose(a[s], b, rtol=1e-6),
            (vmapped_state, vmapped),
            (single_state, single),
        )
    assert vmapped_state.tree.shape == (3, 16)
    ids = np.asarray(vmapped.experience["id"])
    assert np.all(ids // 100 == np.arange(3)[:, None, None])

    # A Python loop of the bare functions agrees with the scan.
    state = buffer.init(EXAMPLE)
    for step_index, step_key in enumerate(jax.random.split(keys[0], 6)):
        state = buffer.add(state, make_batch(3 * step_index, 3))
        sample = buffer.sample(state, step_key)
        np.testing.assert_array_equal(sample.indices, vmapped.indices[0, step_index])
        priorities = sample.experience["id"].astype(jnp.float32) % 7 + 0.5
        state = buffer.update_priorities(state, sample.indices, priorities)
    np.testing.assert_allclose(state.tree, vmapped_state.tree[0], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, r"capacity must be an integer >= 1, got 0"),
        ({"sample_batch_size": 0}, r"sample_batch_size must be an integer >= 1, got 0"),
        ({"sample_batch_size": 11}, r"sample_batch_size must be <= capacity=10, got 11"),
        ({"add_batch_size": 12}, r"add_batch_size must be None or <= capacity=10.*got 12"),
        ({"alpha": -0.1}, r"alpha must be a finite number >= 0.0, got -0.1"),
        ({"alpha": float("nan")}, r"alpha must be a finite number >= 0.0, got nan"),
        ({"beta_start": -0.5}, r"beta_start must be a finite number in \[0.0, 1.0\], got -0.5"),
        ({"beta_start": 1.5}, r"beta_start must be a finite number in \[0.0, 1.0\], got 1.5"),
        ({"beta_end": 1.01}, r"beta_end must be a finite number in \[0.0, 1.0\], got 1.01"),
        ({"beta_steps": 0}, r"beta_steps must be an integer >= 1, got 0"),
        ({"eps": 0.0}, r"eps must be a finite number > 0.0, got 0.0"),
        ({"eps": -1e-3}, r"eps must be a finite number > 0.0, got -0.001"),
    ],
)
def test_build_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prioritized_buffer(**{"capacity": 10, "sample_batch_size": 2, **kwargs})


def test_use_errors():
    buffer = prioritized_buffer(capacity=4, sample_batch_size=1, add_batch_size=2)
    with pytest.raises(ValueError, match=r"example_item\['id'\] must be an array.*int"):
        buffer.init({"obs": jnp.zeros(2), "id": 3})
    state = buffer.init(EXAMPLE)
    with pytest.raises(ValueError, match=r"must equal add_batch_size=2, got 3"):
        buffer.add(state, make_batch(0, 3))
    with pytest.raises(ValueError, match=r"(?s)expected item: .*\['id'\]: int32\[\].*float32"):
        jax.jit(buffer.add)(state, {"obs": jnp.zeros((2, 2)), "id": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"indices \[2\] and priorities \[3\]"):
        buffer.update_priorities(state, jnp.arange(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"indices must be integers, got float32"):
        jax.jit(buffer.update_priorities)(state, jnp.zeros(2), jnp.ones(2))


def test_masked_update_priorities_is_a_no_op_when_false_and_a_full_update_when_true():
    """`mask` (traced, as a learner's learning flag is) selects the whole update: False keeps
    the tree, max priority and beta counter; True equals the unmasked call."""
    buffer = prioritized_buffer(8, sample_batch_size=4, alpha=ALPHA, eps=EPS, beta_steps=10)
    state = buffer.add(buffer.init(EXAMPLE), make_batch(0, 6))
    idx, prio = jnp.array([1, 4]), jnp.array([3.0, 0.5])
    step = jax.jit(buffer.update_priorities)
    off = step(state, idx, prio, jnp.bool_(False))
    on = step(state, idx, prio, jnp.bool_(True))
    plain = buffer.update_priorities(state, idx, prio)
    for a, b in ((off, state), (on, plain)):
        np.testing.assert_array_equal(a.tree, b.tree)
        assert float(a.max_priority) == float(b.max_priority)
        assert int(a.beta_step) == int(b.beta_step)
    # the True branch really moved: slot 1 holds (3 + eps)^alpha, the max priority is 3 + eps
    np.testing.assert_allclose(leaves(on, 8)[1], (3.0 + EPS) ** ALPHA, rtol=1e-6)
    np.testing.assert_allclose(float(on.max_priority), 3.0 + EPS, rtol=1e-6)
    assert int(on.beta_step) == 1 and int(off.beta_step) == 0
