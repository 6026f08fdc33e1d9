"""Proximal Policy Optimisation (discrete and continuous), end to end in one jit."""

from jaxlearn.algos.ppo.config import PPOConfig, PPOHParams
from jaxlearn.algos.ppo.losses import LossInfo, PPOBatch, gae, ppo_loss
from jaxlearn.algos.ppo.networks import MLP, ActorCritic
from jaxlearn.algos.ppo.policy import Policy, make_policy
from jaxlearn.algos.ppo.train import PPOState, Transition, learn, make_learner, make_train

__all__ = [
    "MLP",
    "ActorCritic",
    "LossInfo",
    "PPOBatch",
    "PPOConfig",
    "PPOHParams",
    "PPOState",
    "Policy",
    "Transition",
    "gae",
    "learn",
    "make_learner",
    "make_policy",
    "make_train",
    "ppo_loss",
]
