"""Recurrent cores: a GRU or an LSTM, one layer or a stack, scanned over time, resetting
its state where an episode began.

Shapes follow time-major rollouts: inputs `[T, B, d]`, resets `[T, B]` bool (True where the
step's observation is the first of a new episode), the carried state `[B, S]` with
`S = state_size(kind, size, layers)`: per layer `H` (GRU) or `2H` (LSTM: the cell then the
hidden state), layers side by side. One flat array keeps the state one leaf for the train
state, checkpoints and exported policies, whatever the core. One step of acting is the same
call with `T = 1`, so acting and the update's replay of a stored sequence run the very same
function.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.networks import orthogonal

CORES = ("none", "gru", "lstm")


def state_size(kind: str, size: int, layers: int = 1) -> int:
    """Width `S` of a core's carried state `[B, S]` (0 for `none`)."""
    if kind == "none":
        return 0
    return layers * size * (2 if kind == "lstm" else 1)


def initial_state(batch: int, size: int) -> jax.Array:
    """The state a core starts every episode from: zeros `[batch, size]` (`size` is the
    state width `S`, see `state_size`)."""
    return jnp.zeros((batch, size), jnp.float32)


def reset_where(reset: jax.Array, state: jax.Array) -> jax.Array:
    """`state` `[B, S]` with the rows where `reset` `[B]` is True set to zeros."""
    return jnp.where(reset[:, None], jnp.zeros_like(state), state)


class _ResetStep(nn.Module):
    """One step of the stacked cells, after zeroing the state of envs whose episode starts
    here. Layer 0's cell is named `cell` (a one-layer GRU's parameters are those it always
    had), layer i > 0's `cell_i`."""

    kind: str
    size: int
    layers: int

    @nn.compact
    def __call__(self, state: jax.Array, inputs: tuple[jax.Array, jax.Array]):
        y, reset = inputs
        state = reset_where(reset, state)
        width = state_size(self.kind, self.size)
        out = []
        for i in range(self.layers):
            s = state[:, i * width : (i + 1) * width]
            name = "cell" if i == 0 else f"cell_{i}"
            # an orthogonal recurrent init as flax's default, but ours (jaxlearn.networks
            # .orthogonal: no LAPACK QR)
            if self.kind == "gru":
                cell = nn.GRUCell(self.size, recurrent_kernel_init=orthogonal(), name=name)
                s, y = cell(s, y)
            else:
                cell = nn.LSTMCell(self.size, recurrent_kernel_init=orthogonal(), name=name)
                (c, h), y = cell((s[:, : self.size], s[:, self.size :]), y)
                s = jnp.concatenate([c, h], axis=-1)
            out.append(s)
        state = out[0] if self.layers == 1 else jnp.concatenate(out, axis=-1)
        return state, y


class Core(nn.Module):
    """A recurrent core (`kind` `gru` or `lstm`, `layers` stacked cells of `size` units)
    with per-env resets, scanned over the leading time axis.

    `__call__(state [B, S], x [T, B, d], reset [T, B]) -> (state [B, S], y [T, B, size])`.
    """

    size: int
    kind: str = "gru"
    layers: int = 1

    @nn.compact
    def __call__(self, state: jax.Array, x: jax.Array, reset: jax.Array):
        scan = nn.scan(
            _ResetStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
        )
        step = scan(self.kind, self.size, self.layers, name=self.kind)
        return step(state, (x, reset))
