"""Memory a run needs, estimated from its config before anything is allocated or compiled.

The train state of one seed is measured exactly with `jax.eval_shape` of the learner's
`init` (an abstract trace: no allocation, no compilation): parameters, optimizer state,
target network, replay buffer, episodic memory, env states. To it come the arrays one
update creates and frees (PPO's rollout and its shuffled copy, DQN's sampled batches, the
activations of a minibatch), greedy evaluation's episodes, and a host copy of the state for
checkpoints. Everything is per seed times `num_seeds`.

    est = estimate(algo_cfg, num_seeds=16, eval_episodes=16)
    check(est, available_memory())   # ConfigError naming the field that drives it
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np

from jaxlearn import algos
from jaxlearn.config import ConfigError

GIB = 1024**3

# Which config field sizes each part of a learner's train state.
_DRIVER = {
    "buffer": "buffer_size",
    "memory": "memory_size",
    "params": "hidden_sizes",
    "target_params": "hidden_sizes",
    "opt_state": "hidden_sizes",
    "env_state": "num_envs",
    "obs": "num_envs",
    "window": "n_step",
}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a run needs. `parts` are per seed: name -> (bytes, config field behind it)."""

    num_seeds: int
    parts: dict[str, tuple[int, str]]
    host_bytes: int  # host memory for one checkpoint copy of every seed's state

    @property
    def per_seed_bytes(self) -> int:
        return sum(b for b, _ in self.parts.values())

    @property
    def device_bytes(self) -> int:
        return self.per_seed_bytes * self.num_seeds

    def largest(self) -> tuple[str, int, str]:
        """(part, bytes per seed, config field) of the largest part."""
        name, (size, field) = max(self.parts.items(), key=lambda kv: kv[1][0])
        return name, size, field

    def summary(self) -> str:
        """One line: total, per seed, and the three largest parts."""
        top = sorted(self.parts.items(), key=lambda kv: -kv[1][0])[:3]
        parts = ", ".join(f"{n} {_fmt(b)} ({f})" for n, (b, f) in top)
        return (
            f"memory estimate: {_fmt(self.device_bytes)} on the device "
            f"({self.num_seeds} seed(s) x {_fmt(self.per_seed_bytes)}: {parts}); "
            f"{_fmt(self.host_bytes)} host for checkpoints"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_bytes": self.device_bytes,
            "per_seed_bytes": self.per_seed_bytes,
            "host_bytes": self.host_bytes,
            "parts_per_seed": {n: b for n, (b, _) in self.parts.items()},
        }


def _fmt(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _nbytes(tree: Any) -> int:
    return sum(math.prod(x.shape) * _itemsize(x.dtype) for x in jax.tree.leaves(tree))


def _itemsize(dtype: Any) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # threefry: 2 x uint32
        return 8
    return np.dtype(dtype).itemsize


def state_parts(algo_cfg: Any) -> tuple[dict[str, tuple[int, str]], Any, Any]:
    """Per-seed bytes of each train-state field, by abstract evaluation of `init`.

    Returns (parts, abstract state, learner)."""
    _, make_learner = algos.ALGOS[_algo_name(algo_cfg)]
    learner = make_learner(algo_cfg)
    shapes = jax.eval_shape(learner.init, jax.random.key(0), learner.hparams)
    fields = (
        {f.name: getattr(shapes, f.name) for f in dataclasses.fields(shapes)}
        if dataclasses.is_dataclass(shapes)
        else {"state": shapes}
    )
    parts = {
        name: (_nbytes(value), _DRIVER.get(name, name))
        for name, value in fields.items()
        if value is not None and _nbytes(value)
    }
    return parts, shapes, learner


def _algo_name(algo_cfg: Any) -> str:
    for name, (cls, _) in algos.ALGOS.items():
        if isinstance(algo_cfg, cls):
            return name
    raise TypeError(f"not an algorithm config: {type(algo_cfg).__name__}")


def _update_parts(algo_cfg: Any, obs_bytes: int, params_bytes: int) -> dict[str, tuple]:
    """Arrays one update holds at its peak (per seed), by the field that sizes them."""
    act = 4 * 3 * sum(getattr(algo_cfg, "hidden_sizes", ()))  # fwd + bwd, float32, per row
    grads = (3 * params_bytes, "hidden_sizes")  # gradients, Adam's update, new parameters
    if hasattr(algo_cfg, "num_steps"):  # PPO: trajectory, flattened batch, shuffled copy
        rows = algo_cfg.num_envs * algo_cfg.num_steps
        per_row = 2 * obs_bytes + 64  # obs and final obs, action, log-prob, value, ...
        minibatch = rows // algo_cfg.num_minibatches
        return {"rollout": (3 * rows * per_row + minibatch * act, "num_steps"), "grads": grads}
    batch = algo_cfg.batch_size  # DQN: one sampled batch with its activations
    added = algo_cfg.train_frequency * (2 * obs_bytes + 16)  # transitions one update adds
    return {"batch": (batch * (2 * obs_bytes + 16 + act) + added, "batch_size"), "grads": grads}


def estimate(algo_cfg: Any, num_seeds: int = 1, eval_episodes: int = 0) -> Estimate:
    """The memory a run of `algo_cfg` with `num_seeds` seeds needs (see module docs)."""
    parts, shapes, learner = state_parts(algo_cfg)
    obs = getattr(shapes, "obs", None)
    num_envs = getattr(algo_cfg, "num_envs", 1)
    obs_bytes = _nbytes(obs) // num_envs if obs is not None else 0
    params_bytes = parts.get("params", (0, ""))[0]
    transient = _update_parts(algo_cfg, obs_bytes, params_bytes)
    if eval_episodes:
        env_bytes = parts.get("env_state", (0, ""))[0] // num_envs
        transient["evaluation"] = (
            eval_episodes * (env_bytes + 2 * obs_bytes + 16),
            "eval_episodes",
        )
    state_bytes = sum(b for b, _ in parts.values())
    return Estimate(num_seeds, {**parts, **transient}, host_bytes=state_bytes * num_seeds)


def available_memory(devices: list | None = None) -> tuple[int, str]:
    """(bytes, what) a run on `devices` may use: their accelerators' free memory added up,
    or on the CPU the host's available memory (`MemAvailable`)."""
    devices = devices or jax.local_devices()[:1]
    if devices[0].platform == "cpu":
        return _host_available(), "available host memory"
    total = 0
    for d in devices:
        try:
            stats = d.memory_stats() or {}
        except Exception:  # some backends do not report it
            stats = {}
        if not stats.get("bytes_limit"):
            return _host_available(), "available host memory"
        total += int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return total, f"free memory of {len(devices)} {devices[0].device_kind} device(s)"


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(est: Estimate, limit: tuple[int, str]) -> None:
    """Raise `ConfigError` when `est.device_bytes` does not fit in `limit` = (bytes, what).

    The host copy for checkpoints is not added: on the CPU `jax.device_get` returns views
    of the device buffers (measured: the resident memory grows by the state once), and on an
    accelerator it lives in host memory, not the device's.
    """
    limit_bytes, what = limit
    need = est.device_bytes
    if need <= limit_bytes:
        return
    part, size, field = est.largest()
    raise ConfigError(
        f"the run needs about {_fmt(need)} of memory but {what} is {_fmt(limit_bytes)}: "
        f"the largest part is {part} ({_fmt(size)} per seed x {est.num_seeds} seed(s)), "
        f"sized by {field}; lower {field} or num_seeds (or set max_memory)"
    )


def parse_bytes(text: str, where: str = "--max-memory") -> int:
    """`"8GiB"`, `"512MB"`, `"1e9"` -> bytes (binary and decimal units)."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    units.update({"KIB": 1024, "MIB": 1024**2, "GIB": GIB, "TIB": 1024**4})
    s = str(text).strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num) :]
    try:
        value = float(num) * units[unit]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{where}={text!r} is invalid: a size such as 8GiB, 512MiB, 16GB or 1e9"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}={text!r} is invalid: must be a positive size")
    return int(value)
