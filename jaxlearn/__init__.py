"""jaxlearn: vectorised reinforcement learning in JAX, end to end inside one jit.

import jax, jaxlearn
env, params = jaxlearn.make("CartPole-v1")
train = jax.jit(jax.vmap(jaxlearn.ppo.make_train(jaxlearn.ppo.PPOConfig())))
state, metrics = train(jax.random.split(jax.random.key(0), 8))

`import jaxlearn` changes nothing in the process (no environment variables, no `jax.config`)
and imports no submodule: `jaxlearn.ppo`, `jaxlearn.dqn`, `jaxlearn.buffers`, `jaxlearn.envs`,
`jaxlearn.spaces`, ... load on first use, so the bare import starts no JAX backend either.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

# Public name -> module that defines it (a module itself when the two are the same).
_SUBMODULES = {
    "algos": "jaxlearn.algos",
    "buffers": "jaxlearn.buffers",
    "distributions": "jaxlearn.distributions",
    "dqn": "jaxlearn.algos.dqn",
    "envs": "jaxlearn.envs",
    "ppo": "jaxlearn.algos.ppo",
    "spaces": "jaxlearn.spaces",
}
_ATTRIBUTES = {
    "Learner": "jaxlearn.algos.base",
    "Run": "jaxlearn.api",
    "episode_returns": "jaxlearn.api",
    "load": "jaxlearn.api",
    "train": "jaxlearn.api",
    "make": "jaxlearn.envs",
    "make_vec": "jaxlearn.envs",
    "register": "jaxlearn.envs",
    "registered_envs": "jaxlearn.envs",
}

__all__ = [
    "Learner",
    "Run",
    "algos",
    "buffers",
    "distributions",
    "dqn",
    "envs",
    "episode_returns",
    "load",
    "make",
    "make_vec",
    "ppo",
    "register",
    "registered_envs",
    "spaces",
    "train",
]

if _typing.TYPE_CHECKING:  # static tools see the lazy names
    from jaxlearn import algos, buffers, distributions, envs, spaces
    from jaxlearn.algos import dqn, ppo
    from jaxlearn.algos.base import Learner
    from jaxlearn.api import Run, episode_returns, load, train
    from jaxlearn.envs import make, make_vec, register, registered_envs


def __getattr__(name: str) -> object:
    """Import a public submodule or name on first access (PEP 562), then cache it."""
    if name in _SUBMODULES:
        value = _importlib.import_module(_SUBMODULES[name])
    elif name in _ATTRIBUTES:
        value = getattr(_importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'jaxlearn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
