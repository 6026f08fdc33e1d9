"""Uniform replay buffer: ring writes, valid-only sampling, jit/scan/vmap invariance, errors."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.buffers import BufferState, Sample, uniform_buffer


class Transition(NamedTuple):
    obs: jax.Array  # [3]
    action: jax.Array  # [] int32, the item id
    reward: jax.Array  # []
    terminated: jax.Array  # [] bool


EXAMPLE = Transition(
    obs=jnp.zeros(3, jnp.float32),
    action=jnp.int32(0),
    reward=jnp.float32(0.0),
    terminated=jnp.bool_(False),
)


def make_batch(first_id, num: int) -> Transition:
    """Items with ids ``first_id .. first_id + num - 1``; every leaf encodes the id."""
    ids = first_id + jnp.arange(num, dtype=jnp.int32)
    return Transition(
        obs=jnp.stack([ids, -ids, 2 * ids], axis=-1).astype(jnp.float32),
        action=ids,
        reward=ids.astype(jnp.float32) / 2,
        terminated=ids % 2 == 1,
    )


def assert_consistent(experience: Transition) -> None:
    """Every leaf of a sampled item belongs to the same added item."""
    ids = np.asarray(experience.action)
    np.testing.assert_array_equal(np.asarray(experience.obs), np.stack([ids, -ids, 2 * ids], -1))
    np.testing.assert_array_equal(np.asarray(experience.reward), ids / 2)
    np.testing.assert_array_equal(np.asarray(experience.terminated), ids % 2 == 1)


def assert_trees_equal(a, b) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_init_allocates_zeros_per_leaf():
    buffer = uniform_buffer(capacity=6, sample_batch_size=2)
    state = buffer.init(EXAMPLE)
    assert isinstance(state, BufferState)
    assert state.items.obs.shape == (6, 3) and state.items.obs.dtype == jnp.float32
    assert state.items.action.shape == (6,) and state.items.action.dtype == jnp.int32
    assert state.items.terminated.dtype == jnp.bool_
    assert state.insert_pos.dtype == jnp.int32 and int(state.insert_pos) == 0
    assert state.size.dtype == jnp.int32 and int(state.size) == 0
    assert not bool(buffer.can_sample(state))
    assert all(not np.asarray(leaf).any() for leaf in jax.tree.leaves(state.items))


@pytest.mark.parametrize(
    ("add_batch_size", "num"),
    [
        (None, 4),  # free batch size: scatter, wraps inside an add
        (3, 3),  # fixed, does not divide capacity: scatter
        (5, 5),  # fixed, divides capacity: dynamic_update_slice
    ],
)
def test_wraparound_overwrites_oldest(add_batch_size, num):
    capacity = 10
    buffer = uniform_buffer(capacity, sample_batch_size=2, add_batch_size=add_batch_size)
    add = jax.jit(buffer.add)
    state = buffer.init(EXAMPLE)
    expected = np.zeros(capacity, np.int32)  # NumPy ring of ids
    added = 0
    while added < 3 * capacity + 2:
        state = add(state, make_batch(added, num))
        for item_id in range(added, added + num):
            expected[item_id % capacity] = item_id
        added += num
        np.testing.assert_array_equal(np.asarray(state.items.action), expected)
        assert int(state.insert_pos) == added % capacity
        assert int(state.size) == min(added, capacity)
    assert_consistent(state.items)
    # After capacity + k items the oldest k are gone.
    assert set(np.asarray(state.items.action)) == set(range(added - capacity, added))


def test_samples_only_valid_items_uniformly():
    capacity, batch_size, num_added = 100, 16, 30
    buffer = uniform_buffer(capacity, sample_batch_size=batch_size)
    state = buffer.init(EXAMPLE)
    for first in range(1, num_added + 1, 10):  # ids 1..30, slots 0..29
        state = buffer.add(state, make_batch(first, 10))
    assert bool(buffer.can_sample(state))

    keys = jax.random.split(jax.random.key(0), 1000)
    samples = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0)))(state, keys)
    assert isinstance(samples, Sample)
    indices = np.asarray(samples.indices)
    ids = np.asarray(samples.experience.action)
    assert samples.indices.dtype == jnp.int32 and indices.shape == (1000, batch_size)
    assert indices.min() >= 0 and indices.max() < num_added
    np.testing.assert_array_equal(ids, indices + 1)
    assert_consistent(samples.experience)
    # Uniform over the 30 valid items: every per-item count within 5 sigma of n / 30.
    counts = np.bincount(ids.ravel(), minlength=num_added + 1)[1:]
    n = ids.size
    expected, sigma = n / num_added, np.sqrt(n * (1 / num_added) * (1 - 1 / num_added))
    assert np.all(np.abs(counts - expected) < 5 * sigma), counts


def test_can_sample_needs_sample_batch_size_items():
    buffer = uniform_buffer(capacity=8, sample_batch_size=5)
    state = buffer.init(EXAMPLE)
    state = buffer.add(state, make_batch(0, 4))
    assert not bool(buffer.can_sample(state))
    state = buffer.add(state, make_batch(4, 1))
    assert bool(buffer.can_sample(state))
    state = buffer.add(state, make_batch(5, 8))
    assert bool(buffer.can_sample(state)) and int(state.size) == 8


def _run(buffer, state, first_ids, key, num_steps=7, num=3):
    """Add ``num`` items then sample, ``num_steps`` times in a ``lax.scan``."""

    def step(state, inputs):
        step_index, key = inputs
        state = buffer.add(state, make_batch(first_ids + step_index * num, num))
        return state, buffer.sample(state, key)

    inputs = (jnp.arange(num_steps), jax.random.split(key, num_steps))
    return jax.lax.scan(step, state, inputs)


def test_scan_matches_python_loop():
    buffer = uniform_buffer(capacity=8, sample_batch_size=4)
    state0 = buffer.init(EXAMPLE)
    key = jax.random.key(3)
    scanned_state, scanned = jax.jit(lambda s, k: _run(buffer, s, 100, k))(state0, key)

    add, sample = jax.jit(buffer.add), jax.jit(buffer.sample)
    state = state0
    for step_index, step_key in enumerate(jax.random.split(key, 7)):
        state = add(state, make_batch(100 + 3 * step_index, 3))
        looped = sample(state, step_key)
        assert_trees_equal(jax.tree.map(lambda x, i=step_index: x[i], scanned), looped)
    assert_trees_equal(scanned_state, state)
    assert int(state.size) == 8 and int(state.insert_pos) == 21 % 8


def test_vmap_over_seeds_matches_per_seed_runs():
    buffer = uniform_buffer(capacity=8, sample_batch_size=4)
    seeds = jnp.arange(3)
    states = jax.vmap(lambda _: buffer.init(EXAMPLE))(seeds)
    assert states.items.obs.shape == (3, 8, 3)
    first_ids = 1000 * seeds
    keys = jax.random.split(jax.random.key(7), 3)
    run = jax.jit(lambda s, f, k: _run(buffer, s, f, k))
    vmapped_state, vmapped = jax.vmap(run)(states, first_ids, keys)
    for seed in range(3):
        single_state, single = run(buffer.init(EXAMPLE), first_ids[seed], keys[seed])
        assert_trees_equal(jax.tree.map(lambda x, s=seed: x[s], vmapped_state), single_state)
        assert_trees_equal(jax.tree.map(lambda x, s=seed: x[s], vmapped), single)
    # Seeds really differ: each only holds its own ids.
    ids = np.asarray(vmapped.experience.action)
    for seed in range(3):
        assert np.all((ids[seed] >= 1000 * seed) & (ids[seed] < 1000 * seed + 21))

    # The bare functions vmap too, as the brief's usage shows.
    states = jax.jit(jax.vmap(buffer.add))(states, jax.vmap(lambda f: make_batch(f, 8))(first_ids))
    sample = jax.jit(jax.vmap(buffer.sample))(states, keys)
    assert sample.experience.obs.shape == (3, 4, 3)
    np.testing.assert_array_equal(
        np.asarray(sample.experience.action) // 1000, np.repeat(np.arange(3)[:, None], 4, 1)
    )


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0, "sample_batch_size": 1}, r"capacity must be an integer >= 1, got 0"),
        ({"capacity": -5, "sample_batch_size": 1}, r"capacity must be an integer >= 1, got -5"),
        ({"capacity": 2.5, "sample_batch_size": 1}, r"capacity must be an integer >= 1, got 2.5"),
        ({"capacity": 10, "sample_batch_size": 0}, r"sample_batch_size must be .*>= 1, got 0"),
        ({"capacity": 10, "sample_batch_size": 11}, r"sample_batch_size must be <= capacity=10"),
        (
            {"capacity": 10, "sample_batch_size": 2, "add_batch_size": 11},
            r"add_batch_size must be None or <= capacity=10.*got 11",
        ),
        (
            {"capacity": 10, "sample_batch_size": 2, "add_batch_size": 0},
            r"add_batch_size must be an integer >= 1, got 0",
        ),
    ],
)
def test_build_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uniform_buffer(**kwargs)


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ({"obs": jnp.zeros(3), "reward": 0.0}, r"example_item\['reward'\] must be an array"),
        ({"obs": jnp.zeros(3), "name": "cart"}, r"example_item\['name'\] must be an array.*str"),
        ({}, r"example_item must contain at least one array"),
    ],
)
def test_init_rejects_non_array_leaves(item, match):
    with pytest.raises(ValueError, match=match):
        uniform_buffer(capacity=4, sample_batch_size=1).init(item)


def _bad_batches():
    good = make_batch(0, 2)
    as_dict = dict(good._asdict())
    return [
        (as_dict, r"(?s)tree structure differs.*expected: .*Transition.*got: .*'action'"),
        (
            good._replace(obs=jnp.zeros((2, 4))),
            r"(?s)expected item: \.obs: float32\[3\].*got item: +\.obs: float32\[4\]",
        ),
        (good._replace(action=good.action.astype(jnp.float32)), r"action: int32\[\].*float32\[\]"),
        (good._replace(reward=jnp.zeros(3)), r"share the leading 1 axes.*\.reward: \[3\]"),
        (good._replace(terminated=jnp.bool_(True)), r"batch leaves must be \[1 leading axes"),
    ]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(("batch", "match"), _bad_batches())
def test_add_rejects_mismatched_batch(batch, match, jit):
    buffer = uniform_buffer(capacity=4, sample_batch_size=1)
    state = buffer.init(EXAMPLE)
    add = jax.jit(buffer.add) if jit else buffer.add
    with pytest.raises(ValueError, match=match):
        add(state, batch)


def test_add_rejects_wrong_leading_axis():
    buffer = uniform_buffer(capacity=4, sample_batch_size=1, add_batch_size=2)
    state = buffer.init(EXAMPLE)
    with pytest.raises(ValueError, match=r"must equal add_batch_size=2, got 3"):
        jax.jit(buffer.add)(state, make_batch(0, 3))
    free = uniform_buffer(capacity=4, sample_batch_size=1)
    with pytest.raises(ValueError, match=r"must be in \[1, capacity=4\], got 5"):
        free.add(state, make_batch(0, 5))
