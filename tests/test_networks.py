"""The LAPACK-free orthogonal initializer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos.ppo import PPOConfig, make_train
from jaxlearn.networks import orthogonal


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (3, 5, 7)])
def test_orthogonal_matches_flax_and_is_orthogonal(shape):
    key = jax.random.key(7)
    ours = orthogonal(1.5)(key, shape)
    ref = nn.initializers.orthogonal(1.5)(key, shape, jnp.float32)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    m = np.asarray(ours).reshape(-1, shape[-1]) / 1.5
    small = min(m.shape)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


def test_vmapped_training_program_has_no_lapack_call():
    # A batched LAPACK QR can deadlock XLA's CPU thread pool (README, CPU backend settings).
    keys = jax.random.split(jax.random.key(0), 4)
    train = make_train(PPOConfig(total_timesteps=1024, num_envs=4, num_steps=32))
    assert "custom_call" not in jax.jit(jax.vmap(train)).lower(keys).as_text()
