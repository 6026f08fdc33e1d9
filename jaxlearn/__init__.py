"""jaxlearn: vectorised reinforcement learning in JAX, end to end inside one jit.

import jax, jaxlearn
env, params = jaxlearn.make("CartPole-v1")
train = jax.jit(jax.vmap(jaxlearn.ppo.make_train(jaxlearn.ppo.PPOConfig())))
state, metrics = train(jax.random.split(jax.random.key(0), 8))
"""

from jaxlearn._runtime import configure_xla_cpu

configure_xla_cpu()  # before any backend exists: avoids a CPU-backend hang (see _runtime.py)

from jaxlearn import algos, distributions, envs, spaces  # noqa: E402
from jaxlearn.algos import ppo  # noqa: E402
from jaxlearn.algos.base import Learner  # noqa: E402
from jaxlearn.envs import make, make_vec, register, registered_envs  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Learner",
    "algos",
    "distributions",
    "envs",
    "make",
    "make_vec",
    "ppo",
    "register",
    "registered_envs",
    "spaces",
]
