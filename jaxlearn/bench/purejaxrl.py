"""PureJaxRL's CartPole configs as jaxlearn configs, and the statistics of interleaved rounds.

PureJaxRL's `ppo.py` and `dqn.py` keep their hyperparameters in an UPPERCASE dict; the rest
of what defines a run (network sizes, value clipping, the loss, no gradient clipping in DQN)
is fixed in their code. `ppo_config`/`dqn_config` map such a dict onto `PPOConfig`/`DQNConfig`
fields, set the fixed parts to what PureJaxRL's code does, and list what does not map.

`purejaxrl_file` finds those scripts in the user's clone (`jaxlearn-bench --purejaxrl DIR`).
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

# Keys that only print, log or pick seeds: nothing to map (the bench runs one seed per side).
IGNORED = ("DEBUG", "SEED", "NUM_SEEDS", "WANDB_MODE", "ENTITY", "PROJECT")


def _take(theirs: dict[str, Any], out: dict[str, Any], table: dict[str, tuple[str, Any]]):
    for key, (field, cast) in table.items():
        if key in theirs:
            out[field] = cast(theirs[key])


def _leftovers(theirs: dict[str, Any], used: set[str]) -> list[str]:
    return [
        f"{k}={theirs[k]!r}: no jaxlearn field known to the bench"
        for k in sorted(theirs)
        if k not in used and k not in IGNORED
    ]


def _int(x: Any) -> int:
    if float(x) != int(float(x)):
        raise ValueError(f"expected a whole number, got {x!r}")
    return int(float(x))


PPO_KEYS = {
    "ENV_NAME": ("env", str),
    "TOTAL_TIMESTEPS": ("total_timesteps", _int),
    "NUM_ENVS": ("num_envs", _int),
    "NUM_STEPS": ("num_steps", _int),
    "UPDATE_EPOCHS": ("num_epochs", _int),
    "NUM_MINIBATCHES": ("num_minibatches", _int),
    "LR": ("learning_rate", float),
    "ANNEAL_LR": ("anneal_lr", bool),
    "GAMMA": ("gamma", float),
    "GAE_LAMBDA": ("gae_lambda", float),
    "CLIP_EPS": ("clip_eps", float),
    "ENT_COEF": ("ent_coef", float),
    "VF_COEF": ("vf_coef", float),
    "MAX_GRAD_NORM": ("max_grad_norm", float),
    "ACTIVATION": ("activation", str),
}

# What PureJaxRL's ppo.py does in code rather than in its config.
PPO_FIXED = {
    "hidden_sizes": (64, 64),  # two Dense(64) layers for the actor and for the critic
    "clip_value": True,  # value_pred_clipped by CLIP_EPS
    "normalize_advantages": True,  # per minibatch
    "adam_eps": 1e-5,  # optax.adam(..., eps=1e-5)
}

PPO_DIFFERENCES = (
    "truncation: gymnax 0.0.9 reports one `done`, so PureJaxRL cuts the return at CartPole's "
    "500-step limit; jaxlearn bootstraps truncated steps with V(final obs), one extra value "
    "pass over the rollout per update",
    "network: PureJaxRL's actor and critic are separate 64x64 MLPs in one module, as "
    "jaxlearn's; both use orthogonal init",
)


def ppo_config(theirs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`PPOConfig` keyword arguments for PureJaxRL's ppo.py `config`, and what did not map."""
    out: dict[str, Any] = dict(PPO_FIXED)
    _take(theirs, out, PPO_KEYS)
    return out, _leftovers(theirs, set(PPO_KEYS)) + list(PPO_DIFFERENCES)


DQN_KEYS = {
    "ENV_NAME": ("env", str),
    "TOTAL_TIMESTEPS": ("total_timesteps", _int),
    "NUM_ENVS": ("num_envs", _int),
    "BUFFER_SIZE": ("buffer_size", _int),
    "BUFFER_BATCH_SIZE": ("batch_size", _int),
    "LR": ("learning_rate", float),
    "GAMMA": ("gamma", float),
    "TAU": ("tau", float),
    "TARGET_UPDATE_INTERVAL": ("target_update_period", _int),
    "LEARNING_STARTS": ("learning_starts", _int),
    "EPSILON_START": ("epsilon_start", float),
    "EPSILON_FINISH": ("epsilon_end", float),
}

# What PureJaxRL's dqn.py does in code: plain DQN target, squared TD error, optax.adam with
# its default eps and no gradient clipping, a 120-84 ReLU Q-network, 1-step returns.
DQN_FIXED = {
    "hidden_sizes": (120, 84),
    "activation": "relu",
    "double_dqn": False,
    "loss": "mse",
    "max_grad_norm": math.inf,
    "adam_eps": 1e-8,
    "n_step": 1,
    "gradient_steps": 1,
    "epsilon_schedule": "linear",
    "prioritized": False,
}

DQN_DIFFERENCES = (
    "loss scale: PureJaxRL minimises mean(td^2), jaxlearn's mse 0.5 * mean(td^2) (Adam "
    "normalises the step, so only its eps sees the factor 2)",
    "learning starts: PureJaxRL learns once its step counter exceeds LEARNING_STARTS, "
    "jaxlearn from the update that reaches it (one vector step earlier)",
    "truncation: PureJaxRL's buffer stores `done` at CartPole's 500-step limit and cuts the "
    "return there; jaxlearn bootstraps truncated steps",
)


def dqn_config(theirs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`DQNConfig` keyword arguments for PureJaxRL's dqn.py `config`, and what did not map.

    PureJaxRL takes a gradient step on every vector step whose step counter (advanced by
    NUM_ENVS per vector step) is a multiple of TRAINING_INTERVAL: every k vector steps with
    k = TRAINING_INTERVAL / gcd(NUM_ENVS, TRAINING_INTERVAL). jaxlearn's update is that
    many vector steps and one gradient step: `train_frequency = k * NUM_ENVS` env steps.
    """
    out: dict[str, Any] = dict(DQN_FIXED)
    _take(theirs, out, DQN_KEYS)
    used = set(DQN_KEYS)
    notes: list[str] = []
    if "TRAINING_INTERVAL" in theirs and "NUM_ENVS" in theirs:
        num_envs, interval = _int(theirs["NUM_ENVS"]), _int(theirs["TRAINING_INTERVAL"])
        out["train_frequency"] = interval // math.gcd(num_envs, interval) * num_envs
        used.add("TRAINING_INTERVAL")
    if "EPSILON_ANNEAL_TIME" in theirs and "TOTAL_TIMESTEPS" in theirs:
        out["exploration_fraction"] = float(theirs["EPSILON_ANNEAL_TIME"]) / float(
            theirs["TOTAL_TIMESTEPS"]
        )
        used.add("EPSILON_ANNEAL_TIME")
    if "LR_LINEAR_DECAY" in theirs:
        used.add("LR_LINEAR_DECAY")
        if theirs["LR_LINEAR_DECAY"]:
            notes.append("LR_LINEAR_DECAY=True: jaxlearn's DQN has no learning-rate decay")
    return out, _leftovers(theirs, used) + notes + list(DQN_DIFFERENCES)


CONFIGS = {"ppo": ppo_config, "dqn": dqn_config}


def summarise(ratios: list[float]) -> dict[str, Any]:
    """Median, min, max and relative spread ((max - min) / median) of per-round ratios."""
    if not ratios:
        return {"ratios": [], "ratio_median": None, "ratio_min": None, "ratio_max": None}
    median = statistics.median(ratios)
    return {
        "ratios": list(ratios),
        "ratio_median": median,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_spread": (max(ratios) - min(ratios)) / median if median else None,
    }


PUREJAXRL_SCRIPTS = ("ppo.py", "dqn.py")


def purejaxrl_file(clone: str, name: str) -> str | None:
    """Path of PureJaxRL's `name` in a clone (its purejaxrl/ folder, or the folder itself)."""
    for path in (os.path.join(clone, "purejaxrl", name), os.path.join(clone, name)):
        if os.path.isfile(path):
            return path
    return None
