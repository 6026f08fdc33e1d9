"""Network building blocks shared by the algorithms (Flax Linen)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.config import fail


def _gram_schmidt_q(z: jax.Array) -> jax.Array:
    """Q of the thin QR of `z` `[rows, cols]` (rows >= cols) with a positive diagonal in R,
    by Gram-Schmidt with re-orthogonalisation, in plain jnp ops (no LAPACK call)."""
    cols = z.shape[1]

    def column(j, q):
        v = z[:, j]
        earlier = (jnp.arange(cols) < j).astype(z.dtype)
        for _ in range(2):  # twice is enough for orthogonality to rounding error
            v = v - q @ ((q.T @ v) * earlier)
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, cols, column, jnp.zeros_like(z))


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initializer: the same draws and the same matrices (to float
    rounding) as `flax.linen.initializers.orthogonal(scale)`, without its LAPACK QR.

    Why: on the CPU backend, a batched QR (the orthogonal init of `vmap`ped seeds) runs as
    a LAPACK kernel that splits its batch over XLA's intra-op thread pool and blocks until
    the pieces finish. When every pool thread is inside such a kernel (2 threads on a
    2-core machine, 2 independent layers), nothing is left to run the pieces and the
    program never returns. Plain jnp ops never block a pool thread.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a 2-D or larger shape, got {tuple(shape)}")
        n_cols = shape[-1]
        n_rows = math.prod(shape) // n_cols
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _gram_schmidt_q(z)
        q = q.T if n_rows < n_cols else q
        return (jnp.asarray(scale, dtype) * q).reshape(shape)

    return init


ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


def flatten_obs(obs: jax.Array, obs_ndim: int) -> jax.Array:
    """[..., *obs_shape] -> [..., prod(obs_shape)] float32 (vectors, MinAtar grids, ...)."""
    obs = obs.astype(jnp.float32)
    return obs.reshape(*obs.shape[: obs.ndim - obs_ndim], -1)


LECUN_NORMAL = nn.initializers.lecun_normal()  # nn.Dense's default kernel init
# Parameter names of a low-rank adapter inside a `LoRADense` (see `jaxlearn.lora`).
ADAPTER_NAMES = ("lora_a", "lora_b")


class LoRADense(nn.Module):
    """A Dense layer with a low-rank adapter: `y = x W + b + (alpha / rank) (x A) B`.

    `kernel` `[d_in, features]` and `bias` are named as in `nn.Dense`, so a plain Dense
    checkpoint loads into it; `lora_a` `[d_in, rank]` starts random (normal, std
    1/sqrt(d_in)) and `lora_b` `[rank, features]` starts at zero, so a fresh adapter leaves
    the layer's output unchanged.
    """

    features: int
    rank: int
    alpha: float = 1.0
    kernel_init: Callable = LECUN_NORMAL

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (d_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        a = self.param("lora_a", nn.initializers.normal(1.0 / math.sqrt(d_in)), (d_in, self.rank))
        b = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features))
        return x @ kernel + bias + (self.alpha / self.rank) * ((x @ a) @ b)


def dense(
    features: int,
    lora_rank: int = 0,
    lora_alpha: float = 1.0,
    kernel_init: Callable = LECUN_NORMAL,
    name: str | None = None,
) -> nn.Module:
    """`nn.Dense`, or a `LoRADense` with the same parameter names when `lora_rank > 0`."""
    if lora_rank > 0:
        return LoRADense(features, lora_rank, lora_alpha, kernel_init, name=name)
    return nn.Dense(features, kernel_init=kernel_init, name=name)


class MLP(nn.Module):
    """Dense layers with an activation after each; input [..., d_in] -> [..., hidden[-1]].

    Kernels use orthogonal init with gain sqrt(2) (CleanRL/PureJaxRL's choice for PPO).
    With `lora_rank > 0` every layer carries a low-rank adapter (`LoRADense`).
    """

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    lora_rank: int = 0
    lora_alpha: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, h in enumerate(self.hidden_sizes):
            layer = dense(
                h,
                self.lora_rank,
                self.lora_alpha,
                orthogonal(math.sqrt(2.0)),
                name=f"Dense_{i}",
            )
            x = act(layer(x))
        return x


TORSOS = ("mlp", "cnn")


class CNN(nn.Module):
    """Convolutions over grid observations `[..., H, W, C]` -> flat features `[..., F]`.

    Each layer: a VALID convolution (`channels[i]` filters, `kernels[i]` square kernel,
    `strides[i]` stride; orthogonal init, gain sqrt(2)), optional LayerNorm, activation.
    """

    channels: Sequence[int]
    kernels: Sequence[int]
    strides: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        lead = x.shape[:-3]
        x = x.astype(jnp.float32).reshape(-1, *x.shape[-3:])
        for i, (c, k, s) in enumerate(zip(self.channels, self.kernels, self.strides, strict=True)):
            x = nn.Conv(
                c,
                (k, k),
                (s, s),
                padding="VALID",
                kernel_init=orthogonal(math.sqrt(2.0)),
                name=f"Conv_{i}",
            )(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"LayerNorm_{i}")(x)
            x = act(x)
        return x.reshape(*lead, -1)


def network_kwargs(cfg: Any) -> dict[str, Any]:
    """A config's torso fields as the networks take them: `torso` and `cnn` (channels,
    kernels, strides, layer_norm; empty for the MLP). A config without them is an MLP."""
    torso = getattr(cfg, "torso", "mlp")
    if torso != "cnn":
        return {"torso": torso, "cnn": ()}
    return {
        "torso": torso,
        "cnn": (cfg.cnn_channels, cfg.cnn_kernels, cfg.cnn_strides, cfg.layer_norm),
    }


def conv_output_size(size: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """The side of a square grid of side `size` after VALID convolutions (<= 0: too small)."""
    for k, s in zip(kernels, strides, strict=True):
        size = (size - k) // s + 1 if size >= k else 0
    return size


def check_torso(cfg: Any, obs_shape: tuple[int, ...]) -> None:
    """The torso fields of a network config (`torso`, `cnn_channels`, `cnn_kernels`,
    `cnn_strides`) against the observation shape; raises `ConfigError` naming the field."""
    name = type(cfg).__name__
    if cfg.torso not in TORSOS:
        fail(name, "torso", cfg.torso, f"must be one of {list(TORSOS)}")
    fields = ("cnn_channels", "cnn_kernels", "cnn_strides")
    for f in fields:  # checked even for the MLP, so a typo never waits for torso: cnn
        v = getattr(cfg, f)
        if not v or any(isinstance(i, bool) or not isinstance(i, int) or i <= 0 for i in v):
            fail(name, f, v, "must be a non-empty list of ints > 0")
    if cfg.torso != "cnn":
        return
    if len(obs_shape) != 3:
        fail(name, "torso", cfg.torso, f"cnn needs a [H, W, C] grid observation; got {obs_shape}")
    if len({len(getattr(cfg, f)) for f in fields}) != 1:
        lengths = {f: len(getattr(cfg, f)) for f in fields}
        fail(name, "cnn_kernels", cfg.cnn_kernels, f"one per layer: lengths differ {lengths}")
    side = min(obs_shape[:2])
    if conv_output_size(side, cfg.cnn_kernels, cfg.cnn_strides) < 1:
        fail(
            name,
            "cnn_kernels",
            cfg.cnn_kernels,
            f"with strides {list(cfg.cnn_strides)} the kernels do not fit the {obs_shape[0]}x"
            f"{obs_shape[1]} grid (VALID convolutions)",
        )
