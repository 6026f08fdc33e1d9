"""Recurrent cores: a GRU scanned over time that resets its state where an episode began.

Shapes follow time-major rollouts: inputs `[T, B, d]`, resets `[T, B]` bool (True where the
step's observation is the first of a new episode), the carried state `[B, H]`. One step of
acting is the same call with `T = 1`, so acting and the update's replay of a stored sequence
run the very same function.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.networks import orthogonal

CORES = ("none", "gru")


def initial_state(batch: int, size: int) -> jax.Array:
    """The state a core starts every episode from: zeros `[batch, size]`."""
    return jnp.zeros((batch, size), jnp.float32)


def reset_where(reset: jax.Array, state: jax.Array) -> jax.Array:
    """`state` `[B, H]` with the rows where `reset` `[B]` is True set to zeros."""
    return jnp.where(reset[:, None], jnp.zeros_like(state), state)


class _ResetGRUStep(nn.Module):
    """One GRU step that first zeroes the state of envs whose episode starts here."""

    size: int

    @nn.compact
    def __call__(self, state: jax.Array, inputs: tuple[jax.Array, jax.Array]):
        x, reset = inputs
        state = reset_where(reset, state)
        # our LAPACK-free orthogonal init (see jaxlearn.networks.orthogonal), as flax's default
        cell = nn.GRUCell(self.size, recurrent_kernel_init=orthogonal(), name="cell")
        state, y = cell(state, x)
        return state, y


class GRUCore(nn.Module):
    """A GRU with per-env resets, scanned over the leading time axis.

    `__call__(state [B, H], x [T, B, d], reset [T, B]) -> (state [B, H], y [T, B, H])`.
    """

    size: int

    @nn.compact
    def __call__(self, state: jax.Array, x: jax.Array, reset: jax.Array):
        scan = nn.scan(
            _ResetGRUStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
        )
        return scan(self.size, name="gru")(state, (x, reset))
