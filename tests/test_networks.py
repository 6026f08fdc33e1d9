"""The LAPACK-free orthogonal initializer, the CNN torso and its checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos.ppo import PPOConfig, make_train
from jaxlearn.config import ConfigError, from_dict
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


def test_cnn_matches_a_numpy_valid_convolution():
    from jaxlearn.networks import CNN, conv_output_size

    net = CNN(channels=(3,), kernels=(3,), strides=(2,), activation="relu")
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
    params = net.init(jax.random.key(1), x)
    y = np.asarray(jax.jit(net.apply)(params, x))
    w = np.asarray(params["params"]["Conv_0"]["kernel"])  # [3, 3, 4, 3]
    b = np.asarray(params["params"]["Conv_0"]["bias"])
    side = (7 - 3) // 2 + 1
    assert conv_output_size(7, (3,), (2,)) == side
    ref = np.zeros((2, side, side, 3), np.float32)
    xs = np.asarray(x)
    for i in range(side):
        for j in range(side):
            patch = xs[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]  # [2, 3, 3, 4]
            ref[:, i, j] = np.einsum("bhwc,hwcf->bf", patch, w) + b
    np.testing.assert_allclose(y, np.maximum(ref, 0).reshape(2, -1), atol=1e-5)


@pytest.mark.parametrize(
    "values, field, why",
    [
        ({"torso": "cnn"}, "torso", "grid observation"),
        ({"env": "Breakout-MinAtar", "torso": "cnn", "cnn_kernels": "[11]"}, "cnn_kernels", "fit"),
        ({"env": "Breakout-MinAtar", "torso": "cnn", "cnn_strides": "[0]"}, "cnn_strides", "> 0"),
        ({"torso": "resnet"}, "torso", "one of"),
    ],
)
def test_bad_torso_fields_name_the_field(values, field, why):
    with pytest.raises(ConfigError, match=rf"PPOConfig\.{field}=.*{why}"):
        from_dict(PPOConfig, values)


def test_dqn_cnn_torso_trains_on_a_minatar_grid():
    """DQN's Q-network with `torso: cnn`: a few gradient steps on Breakout-MinAtar move it."""
    from jaxlearn.algos.dqn import make_learner as make_dqn
    from jaxlearn.algos.dqn.config import DQNConfig

    cfg = DQNConfig(
        env="Breakout-MinAtar",
        torso="cnn",
        cnn_channels=(4,),
        cnn_kernels=(4,),
        cnn_strides=(2,),
        hidden_sizes=(16,),
        num_envs=2,
        total_timesteps=64,
        buffer_size=64,
        batch_size=8,
        learning_starts=16,
        train_frequency=2,
        target_update_period=8,
    )
    learner = make_dqn(cfg)
    state = learner.init(jax.random.key(0), learner.hparams)
    kernel0 = state.params["params"]["cnn"]["Conv_0"]["kernel"]
    assert kernel0.shape == (4, 4, 4, 4)
    update = jax.jit(learner.update)
    for _ in range(learner.num_updates):
        state, metrics = update(state, learner.hparams)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert not np.allclose(state.params["params"]["cnn"]["Conv_0"]["kernel"], kernel0)
    with pytest.raises(ConfigError, match=r"DQNConfig\.torso=.*grid observation"):
        from_dict(DQNConfig, {"torso": "cnn"})
