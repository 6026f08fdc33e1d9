"""Trajectory buffer: contiguous single-env windows behind the write head, period, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.buffers import TrajectorySample, trajectory_buffer

EXAMPLE = {"obs": jnp.zeros(2, jnp.float32), "tag": jnp.int32(0)}


def make_step(t, num_envs: int) -> dict:
    """Time step ``t`` of every env; ``tag = 1000 * env + t`` names the (env, time) pair."""
    tags = 1000 * jnp.arange(num_envs, dtype=jnp.int32) + t
    return {"obs": jnp.stack([tags, -tags], -1).astype(jnp.float32), "tag": tags}


def valid_windows(steps: int, capacity: int, length: int, period: int, num_envs: int) -> set:
    """NumPy-free enumeration of (env, start time) of every window a sample may return."""
    oldest = max(0, steps - capacity)
    starts = [t for t in range(oldest, steps - length + 1) if t % period == 0]
    return set(itertools.product(range(num_envs), starts))


def check_sample(sample, steps: int, capacity: int, length: int, period: int, offset: int = 0):
    """Every sequence is one env, contiguous in time, aligned, inside the valid data.

    ``offset`` is subtracted from the times the tags carry (steps added are ``offset + t``).
    """
    tags = np.asarray(sample.experience["tag"])  # [B, L]
    envs, times = tags // 1000, tags % 1000 - offset
    np.testing.assert_array_equal(np.asarray(sample.experience["obs"])[..., 1], -tags)
    assert np.all(envs == envs[:, :1]), envs  # one env per sequence
    np.testing.assert_array_equal(envs[:, 0], np.asarray(sample.env_indices))
    assert np.all(times == times[:, :1] + np.arange(length)), times  # contiguous in time
    np.testing.assert_array_equal(np.asarray(sample.time_indices), times % capacity)
    starts = times[:, 0]
    assert np.all(starts >= max(0, steps - capacity)), starts  # not overwritten
    assert np.all(starts + length <= steps), starts  # never past the write head
    assert np.all(starts % period == 0), starts
    return set(zip(envs[:, 0].tolist(), starts.tolist(), strict=True))


@pytest.mark.parametrize(("period", "num_envs"), [(1, 3), (2, 2), (3, 2)])
def test_windows_are_contiguous_valid_and_all_reachable(period, num_envs):
    capacity, length = 7, 3
    buffer = trajectory_buffer(
        capacity, num_envs, sample_batch_size=2, sequence_length=length, period=period
    )
    add = jax.jit(buffer.add)
    many = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0)))
    can_sample = jax.jit(buffer.can_sample)
    state = buffer.init(EXAMPLE)
    for steps in range(1, 3 * capacity + 2):
        state = add(state, make_step(steps - 1, num_envs))
        assert int(state.size) == min(steps, capacity)
        assert int(state.insert_pos) == steps % capacity
        windows = valid_windows(steps, capacity, length, period, num_envs)
        assert bool(can_sample(state)) == (len(windows) >= 2)
        if not windows:
            continue
        samples = many(state, jax.random.split(jax.random.key(steps), 100))
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)
        seen = check_sample(TrajectorySample(*flat), steps, capacity, length, period)
        assert seen == windows, (steps, sorted(seen), sorted(windows))


def test_sample_frequencies_are_uniform_over_windows():
    capacity, num_envs, length = 8, 2, 3
    buffer = trajectory_buffer(capacity, num_envs, sample_batch_size=12, sequence_length=length)
    state = buffer.init(EXAMPLE)
    for t in range(11):
        state = buffer.add(state, make_step(t, num_envs))
    sample = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0)))(
        state, jax.random.split(jax.random.key(0), 800)
    )
    tags = np.asarray(sample.experience["tag"])[..., 0].ravel()
    windows = sorted(valid_windows(11, capacity, length, 1, num_envs))
    counts = np.array([np.sum(tags == 1000 * env + start) for env, start in windows])
    assert counts.sum() == tags.size
    expected = tags.size / len(windows)
    # 12 windows: chi-square with 11 degrees of freedom, upper 0.1% point 31.26.
    assert np.sum((counts - expected) ** 2 / expected) < 31.26, counts


def _run(buffer, state, offset, key, num_steps=9, num_envs=2):
    def step(state, inputs):
        t, key = inputs
        state = buffer.add(state, make_step(offset + t, num_envs))
        return state, buffer.sample(state, key)

    return jax.lax.scan(step, state, (jnp.arange(num_steps), jax.random.split(key, num_steps)))


def test_scan_and_vmap_over_seeds_match_per_seed_runs():
    buffer = trajectory_buffer(5, 2, sample_batch_size=3, sequence_length=2, period=2)
    seeds = jnp.arange(3)
    offsets = 100 * seeds
    keys = jax.random.split(jax.random.key(9), 3)
    run = jax.jit(lambda s, o, k: _run(buffer, s, o, k))
    states = jax.vmap(lambda _: buffer.init(EXAMPLE))(seeds)
    assert states.items["obs"].shape == (3, 2, 5, 2)
    vmapped_state, vmapped = jax.jit(jax.vmap(run))(states, offsets, keys)
    for seed in range(3):
        single = run(buffer.init(EXAMPLE), offsets[seed], keys[seed])
        jax.tree.map(
            lambda a, b, s=seed: np.testing.assert_array_equal(a[s], b),
            (vmapped_state, vmapped),
            single,
        )
    # Once enough data is in, the scanned samples obey the window rules.
    tags = np.asarray(vmapped.experience["tag"])  # [seed, step, B, L]
    for seed, step in itertools.product(range(3), range(4, 9)):
        sample = jax.tree.map(lambda x, s=seed, t=step: x[s, t], vmapped)
        check_sample(sample, steps=step + 1, capacity=5, length=2, period=2, offset=100 * seed)
        assert np.all(tags[seed, step] % 1000 >= 100 * seed)

    # A Python loop of the bare functions agrees with the scan.
    state = buffer.init(EXAMPLE)
    for t in range(9):
        state = buffer.add(state, make_step(100 + t, 2))
    np.testing.assert_array_equal(state.items["tag"], vmapped_state.items["tag"][1])
    sample = buffer.sample(state, jax.random.split(keys[1], 9)[-1])
    np.testing.assert_array_equal(sample.experience["tag"], vmapped.experience["tag"][1, -1])


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity_steps": 0}, r"capacity_steps must be an integer >= 1, got 0"),
        ({"num_envs": 0}, r"num_envs must be an integer >= 1, got 0"),
        ({"sample_batch_size": -1}, r"sample_batch_size must be an integer >= 1, got -1"),
        ({"sequence_length": 0}, r"sequence_length must be an integer >= 1, got 0"),
        ({"period": 0}, r"period must be an integer >= 1, got 0"),
        (
            {"sequence_length": 11},
            r"sequence_length must be <= capacity_steps=10, got 11",
        ),
        (
            {"sequence_length": 8, "period": 4},
            r"period must be <= capacity_steps - sequence_length \+ 1 = 3 .*got 4",
        ),
        (
            {"sequence_length": 8, "sample_batch_size": 13},
            r"sample_batch_size must be <= num_envs \* .* = 12, .*got 13",
        ),
    ],
)
def test_build_errors(kwargs, match):
    config = {"capacity_steps": 10, "num_envs": 4, "sample_batch_size": 2, "sequence_length": 3}
    with pytest.raises(ValueError, match=match):
        trajectory_buffer(**{**config, **kwargs})


def test_use_errors():
    buffer = trajectory_buffer(6, 2, sample_batch_size=1, sequence_length=2)
    with pytest.raises(ValueError, match=r"example_item\['obs'\]\[0\] must be an array.*float"):
        buffer.init({"obs": [0.0, 0.0], "tag": jnp.int32(0)})
    state = buffer.init(EXAMPLE)
    with pytest.raises(ValueError, match=r"batch leading axis must equal num_envs=2, got 3"):
        jax.jit(buffer.add)(state, make_step(0, 3))
    with pytest.raises(ValueError, match=r"(?s)expected item: .*\['obs'\]: float32\[2\].*\[3\]"):
        buffer.add(state, {"obs": jnp.zeros((2, 3)), "tag": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ValueError, match=r"tree structure differs"):
        buffer.add(state, {"obs": jnp.zeros((2, 2))})
