"""Deep Q-Networks (double, n-step, prioritized replay), end to end in one jit.

The same kinds of entry points as `jaxlearn.ppo`: `DQNConfig` (validated once) and its data
fields `DQNHParams`; `make_train(config)` (the whole run as one pure function of a key) and
`make_learner(config)` (the `Learner` the runner, sweeps and checkpoints drive) over a
`DQNState`; `make_agent` (the Q-network and how it acts); `dqn_loss` and the targets it is
built from. Other pieces are importable from their modules (`jaxlearn.algos.dqn.train`, ...).
"""

from jaxlearn.algos.dqn.config import DQNConfig, DQNHParams
from jaxlearn.algos.dqn.exploration import epsilon_greedy, exponential_epsilon, linear_epsilon
from jaxlearn.algos.dqn.losses import (
    LossInfo,
    NStepReturn,
    double_q_target,
    dqn_loss,
    n_step_returns,
    q_learning_target,
    td_loss,
)
from jaxlearn.algos.dqn.networks import Agent, QNetwork, make_agent

# Step, window_init, window_push: internals of the n-step window, importable here for existing
# callers (tests/algos/test_dqn.py), not in __all__.
from jaxlearn.algos.dqn.nstep import Step, Transition, window_init, window_push  # noqa: F401
from jaxlearn.algos.dqn.train import DQNState, make_learner, make_train

__all__ = [
    "Agent",
    "DQNConfig",
    "DQNHParams",
    "DQNState",
    "LossInfo",
    "NStepReturn",
    "QNetwork",
    "Transition",
    "double_q_target",
    "dqn_loss",
    "epsilon_greedy",
    "exponential_epsilon",
    "linear_epsilon",
    "make_agent",
    "make_learner",
    "make_train",
    "n_step_returns",
    "q_learning_target",
    "td_loss",
]
