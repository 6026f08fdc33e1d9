#!/usr/bin/env python
"""PureJaxRL's side of `scripts/bench.py --purejaxrl DIR`: run with the peer venv's interpreter.

It runs the user's own clone of PureJaxRL (`DIR/purejaxrl/ppo.py` and `dqn.py`, which need
gymnax 0.0.9 and import brax, navix, flashbax, wandb): nothing of PureJaxRL is copied into
jaxlearn. Each script's CartPole config is read from the clone itself (the one dict literal
assigned to `config` in the file, found with `ast`), so the bench runs PureJaxRL's own
hyperparameters; only the switches that print or log (`DEBUG`, `WANDB_MODE`) are turned off.
This file imports nothing from jaxlearn.

It is a small server on stdin/stdout, one JSON object per line, so that the bench can
interleave rounds with jaxlearn's without recompiling:

    -> {"event": "config", "algo": "ppo", "config": {...}, ...}   (at start, per algo)
    <- prepare ALGO   -> {"event": "ready", "algo": ..., "compile_seconds": ..., ...}
    <- run ALGO       -> {"event": "result", "algo": ..., "run_seconds": ..., ...}
    <- quit

`prepare` compiles `jax.jit(make_train(config))` ahead of time for one key and runs it once
(the warm-up); each `run` times one more run of the compiled function with
`jax.block_until_ready`, the protocol jaxlearn's side follows. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import json
import math
import os
import sys
import time
import traceback
from typing import Any

FINAL_FRACTION = 0.05  # final returns: the last 5% of updates, as scripts/bench.py
SCRIPTS = {"ppo": "ppo.py", "dqn": "dqn.py"}
# Switches of PureJaxRL's configs that only print or log; off so that nothing but training
# is timed (DEBUG adds a host callback per update that prints every finished episode).
QUIET = {"ppo": {"DEBUG": False}, "dqn": {"WANDB_MODE": "disabled"}}


def log(msg: str) -> None:
    print(f"[purejaxrl] {msg}", file=sys.stderr, flush=True)


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(_clean(row), allow_nan=False), flush=True)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def source_dir(clone: str) -> str:
    """The folder holding ppo.py and dqn.py: `clone/purejaxrl` or `clone` itself."""
    inner = os.path.join(clone, "purejaxrl")
    return inner if os.path.isfile(os.path.join(inner, "ppo.py")) else clone


def read_config(path: str) -> dict[str, Any]:
    """The one dict literal assigned to a name `config` in the file at `path`."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    found = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Dict)
        and any(isinstance(t, ast.Name) and t.id == "config" for t in node.targets)
    ]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one `config = {{...}}` literal, found {len(found)}")
    return ast.literal_eval(found[0])


def versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("gymnax", "jax", "jaxlib", "flax", "optax", "distrax", "flashbax", "chex"):
        try:
            out[f"{pkg}_version"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[f"{pkg}_version"] = None
    return out


def compat_shims() -> list[str]:
    """Names PureJaxRL calls that this venv's jax no longer has, restored as aliases."""
    import jax

    shims = []
    if not hasattr(jax, "tree_map"):  # dqn.py calls jax.tree_map (removed in jax 0.6)
        jax.tree_map = jax.tree_util.tree_map
        shims.append("jax.tree_map = jax.tree_util.tree_map")
    return shims


def final_return(algo: str, out: dict[str, Any]) -> tuple[float | None, str]:
    """Mean training return over the last 5% of updates (how, in words)."""
    import numpy as np

    metrics = out["metrics"]
    if algo == "ppo":
        rets = np.asarray(metrics["returned_episode_returns"])  # [U, T, E]
        done = np.asarray(metrics["returned_episode"]).astype(bool)
        window = max(1, int(np.ceil(FINAL_FRACTION * rets.shape[0])))
        n = done[-window:].sum()
        value = float(rets[-window:][done[-window:]].mean()) if n else None
        return value, f"episodes finished in the last {FINAL_FRACTION:.0%} of updates"
    rets = np.asarray(metrics["returns"])  # [U] mean over envs of each env's last return
    window = max(1, int(np.ceil(FINAL_FRACTION * rets.shape[0])))
    return float(rets[-window:].mean()), (
        f"dqn.py's `returns` metric (mean over envs of each env's last finished episode) "
        f"averaged over the last {FINAL_FRACTION:.0%} of vector steps"
    )


def grad_updates(algo: str, out: dict[str, Any]) -> int | None:
    import numpy as np

    train_state = out["runner_state"][0]
    if algo == "dqn":
        return int(np.asarray(train_state.n_updates))
    return int(np.asarray(train_state.step))


class Runner:
    """One PureJaxRL script compiled for one key: `prepare` once, then `run` per round."""

    def __init__(self, algo: str, src: str, seed: int):
        self.algo = algo
        self.path = os.path.join(src, SCRIPTS[algo])
        self.config = read_config(self.path)
        self.overrides = {k: v for k, v in QUIET[algo].items() if self.config.get(k) != v}
        self.seed = seed
        self.compiled = None
        self.key = None

    def env_steps(self) -> int:
        c = self.config
        if self.algo == "ppo":
            updates = int(c["TOTAL_TIMESTEPS"]) // c["NUM_STEPS"] // c["NUM_ENVS"]
            return updates * c["NUM_STEPS"] * c["NUM_ENVS"]
        return int(c["TOTAL_TIMESTEPS"]) // c["NUM_ENVS"] * c["NUM_ENVS"]

    def prepare(self) -> dict[str, Any]:
        import jax

        module = importlib.import_module(SCRIPTS[self.algo][:-3])
        config = {**self.config, **self.overrides}
        train = module.make_train(dict(config))  # make_train adds derived keys to its dict
        self.key = jax.block_until_ready(jax.random.PRNGKey(self.seed))
        t0 = time.perf_counter()
        self.compiled = jax.jit(train).lower(self.key).compile()
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(self.compiled(self.key))
        return {
            "compile_seconds": compile_seconds,
            "warm_run_seconds": time.perf_counter() - t0,
        }

    def run(self) -> dict[str, Any]:
        import jax

        c0, t0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(self.compiled(self.key))
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        steps = self.env_steps()
        ret, kind = final_return(self.algo, out)
        return {
            "run_seconds": seconds,
            "cpu_seconds": cpu,
            "total_env_steps": steps,
            "env_steps_per_second": steps / seconds,
            "final_return_mean": ret,
            "final_return_kind": kind,
            "grad_updates": grad_updates(self.algo, out),
        }


def serve(args: argparse.Namespace) -> int:
    src = source_dir(args.clone)
    sys.path.insert(0, src)  # ppo.py imports its sibling wrappers.py as a top-level module
    import jax

    shims = compat_shims()
    common = {
        "impl": "purejaxrl",
        "clone": os.path.abspath(args.clone),
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        **versions(),
        "compat_shims": shims,
    }
    runners = {}
    for algo in args.algos.split(","):
        runner = Runner(algo, src, args.seed)
        runners[algo] = runner
        emit(
            {
                "event": "config",
                "algo": algo,
                "script": os.path.relpath(runner.path, args.clone),
                "config": runner.config,
                "quiet_overrides": runner.overrides,
                "total_env_steps": runner.env_steps(),
                "seed": args.seed,
                **common,
            }
        )
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return 0
        algo = words[1] if len(words) > 1 else ""
        if words[0] not in ("prepare", "run") or algo not in runners:
            emit({"event": "error", "error": f"unknown command {line.strip()!r}"})
            continue
        try:
            if words[0] == "prepare":
                log(f"compiling {runners[algo].path}")
                emit({"event": "ready", "algo": algo, **runners[algo].prepare(), **common})
            else:
                emit({"event": "result", "algo": algo, **runners[algo].run(), **common})
        except Exception as e:
            traceback.print_exc()
            emit({"event": "error", "algo": algo, "error": f"{type(e).__name__}: {e}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clone", required=True, help="the PureJaxRL clone (its root folder)")
    p.add_argument("--algos", default="ppo,dqn", help="comma-separated: ppo, dqn")
    p.add_argument("--seed", type=int, default=0, help="jax.random.PRNGKey(seed) for train")
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
