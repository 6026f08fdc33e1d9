"""A complete gymnax-style environment written outside jaxlearn: 1-D "reach the target".

An agent at position `x` on the segment [-1, 1] must reach a target `goal`. Each step it moves
left, stays, or moves right by `step_size` (the segment's ends stop it) and gets the reward
`-|x' - goal|` (the distance after the move), so the fastest way to the target earns the most.
The episode terminates when the agent is within `tolerance` of the target, and is truncated
after `max_steps_in_episode` steps.

Train it from the command line (from the folder that holds `examples/`):

    python scripts/train.py --env examples.reach_env:make --total-timesteps 20000

or from Python: `jaxlearn.register("Reach1D-v0", make)` and then use "Reach1D-v0" as `env`.
docs/custom-env.md walks through this file.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class EnvState(environment.EnvState):
    """One episode's state; `time` (steps taken, from gymnax's EnvState) drives truncation."""

    x: jax.Array  # [] float32 agent position in [-1, 1]
    goal: jax.Array  # [] float32 target position in [-1, 1]


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Device data: changing a value needs no recompilation (and can be vmapped)."""

    max_steps_in_episode: int = 50  # truncation: gymnax's Environment.is_truncated reads it
    step_size: float = 0.1  # distance of one move
    tolerance: float = 0.05  # terminated when |x - goal| < tolerance


class Reach1D(environment.Environment[EnvState, EnvParams]):
    """Actions: 0 left, 1 stay, 2 right. Observation `[x, goal - x]` float32."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        """One move. Returns the 5 values gymnax 1.0 expects from `step_env`:
        `(obs, state, reward, terminated, info)`. `Environment.step` adds `truncated`
        (from `is_truncated` on the new state), resets the env when the episode ended, and
        puts the pre-reset observation in `info["final_observation"]`."""
        del key  # deterministic dynamics
        move = (jnp.asarray(action, jnp.int32) - 1).astype(jnp.float32) * params.step_size
        x = jnp.clip(state.x + move, -1.0, 1.0)
        distance = jnp.abs(x - state.goal)
        # `time` must count steps: gymnax truncates when state.time >= max_steps_in_episode
        new = state.replace(x=x, time=state.time + 1)
        reward = -distance
        terminated = distance < params.tolerance
        return self.get_obs(new), new, reward, terminated, {}

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """Agent and target uniform in [-1, 1]; `time` starts at 0."""
        k_x, k_goal = jax.random.split(key)
        state = EnvState(
            time=jnp.int32(0),
            x=jax.random.uniform(k_x, (), jnp.float32, -1.0, 1.0),
            goal=jax.random.uniform(k_goal, (), jnp.float32, -1.0, 1.0),
        )
        return self.get_obs(state), state

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        return jnp.stack([state.x, state.goal - state.x]).astype(jnp.float32)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.abs(state.x - state.goal) < params.tolerance

    @property
    def name(self) -> str:
        return "Reach1D-v0"

    @property
    def num_actions(self) -> int:
        return 3

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(3)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        # x in [-1, 1] and goal - x in [-2, 2]
        return spaces.Box(
            jnp.array([-1.0, -2.0], jnp.float32), jnp.array([1.0, 2.0], jnp.float32), (2,)
        )


def make(**params: Any) -> tuple[Reach1D, EnvParams]:
    """The factory `--env examples.reach_env:make` calls with the config's `env_kwargs`:
    here they override fields of `EnvParams` (e.g. `env_kwargs: {max_steps_in_episode: 30}`).
    Returns `(env, params)`; a factory may also return the env alone (then its
    `default_params` are used)."""
    return Reach1D(), EnvParams(**params)
