"""A learner with no env and no network, for tests of the host side (run folder, chunk loop,
sinks): it compiles in a moment and its metrics are a known function of the update.

Seed `i` has a "skill" drawn from its key; at update `t` (1-based) it finishes
`(t + skill) % (skill + 2)` episodes (0 to skill + 1: seeds finish unequal numbers),
each of return `t + 10 * skill` and length 5. Greedy episodes return `skill`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import algos
from jaxlearn.algos.base import Learner


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    env: str = "Fake-v0"
    total_timesteps: int = 96  # num_updates = total_timesteps / steps_per_update
    steps_per_update: int = 8
    batch_size: int = 1  # read by the memory estimate (jaxlearn.resources), as DQN's
    train_frequency: int = 1


class FakeState(NamedTuple):
    params: dict
    skill: jax.Array  # [] int32
    t: jax.Array  # [] int32, updates done


def skill_of(key: jax.Array) -> jax.Array:
    return jax.random.randint(key, (), 0, 5)


def make_learner(cfg: FakeConfig) -> Learner:
    def init(key, hparams):
        return FakeState({"w": jnp.zeros(3, jnp.float32)}, skill_of(key), jnp.int32(0))

    def update(state, hparams):
        t = state.t + 1
        count = ((t + state.skill) % (state.skill + 2)).astype(jnp.float32)
        ret = (t + 10 * state.skill).astype(jnp.float32)
        metrics = {
            "episode_return_sum": count * ret,
            "episode_length_sum": count * 5.0,
            "episode_count": count,
            "loss": t.astype(jnp.float32) * 0.5,
        }
        params = {"w": state.params["w"] + hparams}
        return state._replace(params=params, t=t), metrics

    def greedy(state, key, n):
        return {"returns": jnp.full((n,), state.skill, jnp.float32)}

    learner = Learner(
        init=init,
        update=update,
        num_updates=cfg.total_timesteps // cfg.steps_per_update,
        env_steps_per_update=cfg.steps_per_update,
        hparams=jnp.float32(0.25),
    )
    name = "greedy_episodes" if "greedy_episodes" in Learner._fields else "evaluate"
    return learner._replace(**{name: greedy})


def install(monkeypatch) -> None:
    """Register the fake learner as algo "fake" (for RunConfig, config.yaml and resume)."""
    monkeypatch.setitem(algos.ALGOS, "fake", (FakeConfig, make_learner))


def expected_metrics(seed: int, num_seeds: int, num_updates: int) -> dict[str, np.ndarray]:
    """The metrics `[S, U]` a run with base seed `seed` reports, computed in NumPy from the
    same keys the runner splits."""
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    skill = np.array([int(skill_of(k)) for k in keys])[:, None]
    t = np.arange(1, num_updates + 1)[None, :]
    count = ((t + skill) % (skill + 2)).astype(float)
    return {
        "episode_return_sum": count * (t + 10 * skill),
        "episode_count": count,
        "skill": skill[:, 0],
    }


def reference_return(sums: np.ndarray, counts: np.ndarray, window: int) -> float:
    """The documented return at the last update, written out with loops: each seed's total
    return / episodes over its last `window` updates (widened back one update at a time
    until an episode is in it), then the plain mean over the seeds that have one."""
    per_seed = []
    num_updates = sums.shape[1]
    for s in range(sums.shape[0]):
        w = window
        while w <= num_updates and counts[s, num_updates - w :].sum() == 0:
            w += 1
        if w <= num_updates:
            per_seed.append(sums[s, num_updates - w :].sum() / counts[s, num_updates - w :].sum())
    return sum(per_seed) / len(per_seed)
