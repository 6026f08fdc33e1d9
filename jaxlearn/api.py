"""The command line's equal in Python: `jaxlearn.train(...)` and `jaxlearn.load(run_dir)`.

    run = jaxlearn.train("experiments/ppo_cartpole.yaml", out="runs/a", total_timesteps=100_000)
    run.summary["final_return_mean"]
    action = run.act(obs)                   # [*obs_shape] -> action, or [B, *obs_shape] -> [B]
    run.evaluate(episodes=32)["return_mean"]
    run = jaxlearn.load("runs/a")           # the same object for an existing run folder

`train` validates exactly as `scripts/train.py` does (the same layered config, the same
errors, the same run folder with its lock, checkpoints and reports), and `load` reads a run
folder as `scripts/evaluate.py` does.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax
import numpy as np

from jaxlearn import export, rundir, runner
from jaxlearn.evaluation import POLICIES, summarize


def episode_returns(metrics: dict[str, Any]) -> np.ndarray:
    """Mean return of the episodes that finished in each update, from `make_train`'s
    metrics (sums and counts): `[..., num_updates]` in, the same shape out; NaN where no
    episode finished in that update."""
    n = np.asarray(metrics["episode_count"], np.float64)
    total = np.asarray(metrics["episode_return_sum"], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


class Run:
    """A trained run folder: its config, summary, greedy policy and evaluation."""

    def __init__(self, run_dir: str, summary: dict[str, Any] | None = None):
        self.path = run_dir
        self.run_config, self.config = rundir.RunFolder(run_dir).read_config()
        self.summary = summary if summary is not None else _read_summary(run_dir)
        self._policies: dict[int, Any] = {}

    def __repr__(self) -> str:
        ret = self.summary.get("final_return_mean") if self.summary else None
        return f"Run({self.path!r}, {self.run_config.algo} on {self.config.env}, return={ret})"

    def policy(self, seed_index: int = 0, checkpoint: Any = "best") -> export.ExportedPolicy:
        """Seed `seed_index`'s greedy policy from a checkpoint (`export.load_policy`)."""
        key = (seed_index, str(checkpoint))
        if key not in self._policies:
            with tempfile.TemporaryDirectory(prefix="jaxlearn-policy-") as tmp:
                path = os.path.join(tmp, "policy")
                export.export_from_run(self.path, path, seed_index, checkpoint)
                self._policies[key] = export.load_policy(path)
        return self._policies[key]

    def act(self, obs: Any, seed_index: int = 0, state: Any = None) -> Any:
        """Greedy action(s) of seed `seed_index` (best checkpoint) for `obs`, batched
        `[B, *obs_shape]` or unbatched `[*obs_shape]`. A recurrent policy (`core: gru` or
        `lstm`) takes its core `state` (`[B, S]`, or `[S]`; each episode starts from
        `self.policy(seed_index).initial_state(B)`) and returns `(action, state)`."""
        policy = self.policy(seed_index)
        if policy.initial_state is None:
            if state is not None:
                raise ValueError("act: state given, but this run's policy is not recurrent")
            return policy.act(obs)
        if state is None:
            raise ValueError(
                f"act: this run's policy is recurrent (core: {policy.spec['config']['core']}): "
                "pass its core state, "
                "starting each episode from run.policy(seed_index).initial_state(B), and "
                "carry the state it returns"
            )
        return policy.act(obs, state)

    def evaluate(
        self, episodes: int = 32, seed: int = 0, checkpoint: Any = "best", policy: str = "greedy"
    ) -> dict:
        """Episodes of every seed on the device, summarised as `scripts/evaluate.py` prints
        them: `return_mean`, `return_std`, `length_mean`, task metrics, ... `policy`:
        "greedy" (argmax or mean) or "sampled" (actions drawn as in training)."""
        if policy not in POLICIES:
            raise ValueError(
                f"evaluate: policy={policy!r} is invalid: allowed values are {', '.join(POLICIES)}"
            )
        restored = rundir.load_run(self.path, checkpoint)
        n = restored.run_cfg.num_seeds
        keys = jax.random.split(jax.random.key(seed), n)
        episodes_of = getattr(restored.learner, f"{policy}_episodes")
        run_eval = jax.jit(jax.vmap(lambda s, k: episodes_of(s, k, episodes)))
        result = jax.device_get(run_eval(restored.state, keys))
        out = summarize(result)
        out["return_per_seed"] = [float(x) for x in np.mean(result["returns"], axis=1)]
        out["checkpoint_step"] = restored.step
        return out


def _read_summary(run_dir: str) -> dict[str, Any] | None:
    import json

    path = rundir.RunFolder(run_dir).metrics_file
    if not os.path.isfile(path):
        return None  # not finished yet
    with open(path) as f:
        return json.load(f)


def train(config: str | None = None, out: str | None = None, **overrides: Any) -> Run:
    """Train like `scripts/train.py --config CONFIG --out OUT --set k=v ...` and return the
    finished `Run`.

    Args:
        config: a YAML config file (e.g. `experiments/ppo_cartpole.yaml`), or None for the
            algorithm's defaults.
        out: the run folder to create (must not exist); None for `runs/{algo}_{env}_{time}`.
        overrides: any run or algorithm field (`algo`, `env`, `num_seeds`, `learning_rate`,
            `hidden_sizes`, ...), applied after the file.

    Raises:
        jaxlearn.config.ConfigError: bad input (nothing compiled or written);
        jaxlearn.runner.DivergenceError: the run diverged.
    """
    run_cfg, algo_cfg = rundir.resolve_config(config_file=config, overrides=overrides)
    summary = runner.run(run_cfg, algo_cfg, out=out)
    return Run(summary["run_dir"], summary)


def load(run_dir: str) -> Run:
    """An existing run folder as a `Run` (finished or interrupted with a checkpoint)."""
    if not os.path.isfile(rundir.RunFolder(run_dir).config_file):
        raise rundir.RunFolderError(f"{run_dir!r} is not a run folder (no config.yaml)")
    return Run(run_dir)
