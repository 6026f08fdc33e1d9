"""Learning algorithms. `ALGOS` maps a name to `(ConfigClass, make_learner)`."""

from jaxlearn.algos import dqn, ppo
from jaxlearn.algos.base import EPISODE_METRICS, Learner, make_train_fn, scan_updates

ALGOS = {
    "ppo": (ppo.PPOConfig, ppo.make_learner),
    "dqn": (dqn.DQNConfig, dqn.make_learner),
}

__all__ = [
    "ALGOS",
    "EPISODE_METRICS",
    "Learner",
    "dqn",
    "make_train_fn",
    "ppo",
    "scan_updates",
]
