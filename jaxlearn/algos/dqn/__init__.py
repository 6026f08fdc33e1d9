"""Deep Q-Networks (double, n-step, prioritized replay), end to end in one jit."""

from jaxlearn.algos.dqn.config import DQNConfig, DQNHParams
from jaxlearn.algos.dqn.exploration import (
    ExplorationNoise,
    epsilon_greedy,
    epsilon_greedy_with_noise,
    exploration_noise,
    exponential_epsilon,
    linear_epsilon,
)
from jaxlearn.algos.dqn.losses import (
    LossInfo,
    NStepReturn,
    double_q_target,
    dqn_loss,
    n_step_returns,
    q_learning_target,
    td_loss,
)
from jaxlearn.algos.dqn.networks import QNetwork
from jaxlearn.algos.dqn.nstep import NStepWindow, Step, Transition, window_init, window_push
from jaxlearn.algos.dqn.train import (
    Agent,
    DQNState,
    epsilon_at,
    make_agent,
    make_learner,
    make_optimizer,
    make_replay,
    make_train,
    update,
)

__all__ = [
    "Agent",
    "DQNConfig",
    "DQNHParams",
    "DQNState",
    "ExplorationNoise",
    "LossInfo",
    "NStepReturn",
    "NStepWindow",
    "QNetwork",
    "Step",
    "Transition",
    "double_q_target",
    "dqn_loss",
    "epsilon_at",
    "epsilon_greedy",
    "epsilon_greedy_with_noise",
    "exploration_noise",
    "exponential_epsilon",
    "linear_epsilon",
    "make_agent",
    "make_learner",
    "make_optimizer",
    "make_replay",
    "make_train",
    "n_step_returns",
    "q_learning_target",
    "td_loss",
    "update",
    "window_init",
    "window_push",
]
