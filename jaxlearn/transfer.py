"""Policy transfer: start a run from another run's trained network, and compare with scratch.

`init_from` (a run field; `scripts/train.py --init-from RUN_DIR`) loads the source run's
network parameters (its best checkpoint by default) into the new run's freshly initialised
state before the first update. Target seed `i` starts from source seed `i % source_seeds`.
Every source leaf must exist in the target network with the same shape; the only target
leaves the source may lack are LoRA adapters (`lora_rank > 0`), which start at zero so
the transferred policy acts exactly as the source at the first step. Anything else is a
`ValueError` naming the parameter and both shapes, raised before the run folder is made.

The optimizer state, env states and observation-normalisation statistics start fresh.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from jaxlearn import rundir
from jaxlearn.networks import ADAPTER_NAMES


class Source(NamedTuple):
    """The network parameters of a source run, per seed (host arrays `[source_seeds, ...]`)."""

    run_dir: str
    algo: str
    env: str
    step: int
    checkpoint: str  # which checkpoint was chosen: best / latest / step
    params: Any
    num_seeds: int


def _flat(params: Any) -> dict[str, Any]:
    return traverse_util.flatten_dict(serialization.to_state_dict(params), sep="/")


def load_source(run_dir: str, checkpoint: Any = "best") -> Source:
    """Read the network parameters of every seed of the run folder `run_dir`."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"init_from={run_dir!r}: no such run folder")
    restored = rundir.load_run(run_dir, checkpoint)
    params = jax.device_get(restored.state.params)
    return Source(
        run_dir,
        restored.run_cfg.algo,
        restored.algo_cfg.env,
        restored.step,
        restored.choice,
        params,
        restored.run_cfg.num_seeds,
    )


def check_fits(source: Source, target_params: Any, algo: str) -> list[str]:
    """Check that `source` loads into `target_params` (one seed's, shapes only).

    Returns the target's adapter paths the source lacks (they keep their fresh init).
    Raises ValueError naming each mismatch.
    """
    if source.algo != algo:
        raise ValueError(
            f"init_from={source.run_dir!r} is a {source.algo} run; this run is {algo}: "
            "transfer needs the same algorithm"
        )
    src = {k: np.shape(v)[1:] for k, v in _flat(source.params).items()}
    tgt = {k: tuple(np.shape(v)) for k, v in _flat(target_params).items()}
    problems = []
    for k, shape in src.items():
        if k not in tgt:
            problems.append(f"{k} {tuple(shape)} is not in this network")
        elif tuple(shape) != tgt[k]:
            problems.append(f"{k} has shape {tuple(shape)} in the source but {tgt[k]} here")
    extra = [k for k in tgt if k not in src]
    not_adapters = [k for k in extra if k.rsplit("/", 1)[-1] not in ADAPTER_NAMES]
    problems += [f"{k} {tgt[k]} is missing from the source" for k in not_adapters]
    if problems:
        shown = "; ".join(problems[:6]) + (
            f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        )
        raise ValueError(
            f"init_from={source.run_dir!r} ({source.env}) does not fit this network: {shown}. "
            "The observation and action shapes and hidden_sizes must match the source run"
        )
    return extra


def graft(params: Any, source: Source, seeds: list[int]) -> Any:
    """`params` (lanes `[L, ...]`) with lane `j` taking source seed `seeds[j] % S`'s leaves."""
    flat = _flat(params)
    src = _flat(source.params)
    idx = np.asarray([s % source.num_seeds for s in seeds])
    for k, v in src.items():
        flat[k] = jnp.asarray(np.asarray(v)[idx], dtype=flat[k].dtype)
    return serialization.from_state_dict(params, traverse_util.unflatten_dict(flat, sep="/"))


def apply(state: Any, source: Source, seeds: list[int]) -> Any:
    """A train state (PPO or DQN, lanes `[L, ...]`) starting from the source network; a DQN
    target network starts equal to the online one."""
    params = graft(jax.device_get(state.params), source, seeds)
    state = state.replace(params=params)
    if hasattr(state, "target_params"):
        state = state.replace(target_params=params)
    return state


def compare(transfer_dir: str, scratch_dir: str, out_dir: str) -> dict[str, Any]:
    """Plot and summarise two finished runs' return curves: fine-tuned vs from scratch.

    Writes `transfer.png` and `transfer.json` (final returns, the mean return over the
    first 10% of training, and the env steps each run's smoothed curve (a moving mean over
    5% of the updates) needed to reach the scratch run's final return) into `out_dir`;
    returns the JSON.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    summary: dict[str, Any] = {}
    for name, run_dir in (("transfer", transfer_dir), ("scratch", scratch_dir)):
        m = rundir.read_metrics(run_dir)
        curves[name] = _curve(run_dir)
        summary[name] = {"run_dir": run_dir, "final_return_mean": m["final_return_mean"]}
    target = summary["scratch"]["final_return_mean"]
    for name, (steps, returns) in curves.items():
        early = returns[: max(1, len(returns) // 10)]
        summary[name]["return_first_10pct"] = float(np.nanmean(early))
        w = max(1, len(returns) // 20)
        smooth = np.convolve(returns, np.ones(w) / w, mode="valid")
        hit = np.nonzero(smooth >= target)[0] if np.isfinite(target) else []
        reached = int(steps[hit[0] + w - 1]) if len(hit) else None
        summary[name]["steps_to_scratch_final_return"] = reached
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (steps, returns) in curves.items():
        ax.plot(steps, returns, label=name)
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("episode return (mean over seeds)")
    ax.set_title("Fine-tuned from a source policy vs trained from scratch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "transfer.png"), dpi=100)
    plt.close(fig)
    with open(os.path.join(out_dir, "transfer.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _curve(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, mean episode return over seeds per update) from the run's `curve.csv`."""
    data = np.genfromtxt(rundir.RunFolder(run_dir).curve_file, delimiter=",", names=True)
    return np.atleast_1d(data["env_steps"]), _fill(np.atleast_1d(data["episode_return_mean"]))


def _fill(x: np.ndarray) -> np.ndarray:
    """Carry the last value over updates where no episode finished (NaN)."""
    out = np.array(x, dtype=float)
    for i in range(1, len(out)):
        if not np.isfinite(out[i]):
            out[i] = out[i - 1]
    return out
