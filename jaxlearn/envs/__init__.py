"""Functional environments (gymnax 1.0 interface), a name registry and pure wrappers."""

from jaxlearn.envs.registry import is_registered, make, make_vec, register, registered_envs
from jaxlearn.envs.task import TaskEnv, TaskParams
from jaxlearn.envs.wrappers import (
    AutoReset,
    ClipReward,
    EpisodeStats,
    NormalizeObservation,
    RunningMeanStd,
    ScaleReward,
    VecEnv,
    Wrapper,
)

__all__ = [
    "AutoReset",
    "ClipReward",
    "EpisodeStats",
    "NormalizeObservation",
    "RunningMeanStd",
    "ScaleReward",
    "TaskEnv",
    "TaskParams",
    "VecEnv",
    "Wrapper",
    "is_registered",
    "make",
    "make_vec",
    "register",
    "registered_envs",
]
