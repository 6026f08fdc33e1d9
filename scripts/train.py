#!/usr/bin/env python
"""Train an agent: `python scripts/train.py [--algo ppo] [--env CartPole-v1] [...]`.

With no arguments: PPO on CartPole-v1 with CleanRL's classic settings, one seed.
`--resume RUN_DIR` continues an interrupted run from its newest valid checkpoint.
Sources of settings, later ones winning: the algorithm's defaults, `--config FILE`, the
dedicated flags (`--env`, `--num-seeds`, ...), then each `--set field=value`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a jaxlearn agent; writes config.yaml, TensorBoard events, "
        "metrics.json and learning_curve.png into a new run folder.",
    )
    p.add_argument("--algo", help="algorithm (default ppo)")
    p.add_argument("--env", help="environment name (default CartPole-v1)")
    p.add_argument("--num-seeds", type=int, help="independent agents trained in one vmapped call")
    p.add_argument("--total-timesteps", type=int, help="env steps per seed")
    p.add_argument("--seed", type=int, help="base random seed")
    p.add_argument(
        "--devices",
        help="local devices to shard the seeds over: auto (all when they divide "
        "--num-seeds, else one), all, or a count",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create (must not exist)")
    p.add_argument("--config", metavar="FILE", help="YAML, e.g. experiments/ppo_cartpole.yaml")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this run from its newest valid checkpoint (no other flags)",
    )
    p.add_argument(
        "--set",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="override any config field (repeatable)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxlearn.checkpoint import CheckpointError
    from jaxlearn.config import parse_set
    from jaxlearn.runner import DivergenceError, resolve_config, resume, run

    if args.resume is not None:
        given = [
            f"--{k.replace('_', '-')}"
            for k, v in vars(args).items()
            if k != "resume" and v is not None and v != []
        ]
        if given:
            print(
                f"error: --resume takes no other flags (got {', '.join(given)}): a resumed "
                "run keeps the config it was started with",
                file=sys.stderr,
            )
            return 2
        try:
            summary = resume(args.resume)
        except (ValueError, CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except DivergenceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        return _report(summary)

    overrides: dict = {}
    for flag, field in [
        ("algo", "algo"),
        ("env", "env"),
        ("num_seeds", "num_seeds"),
        ("total_timesteps", "total_timesteps"),
        ("seed", "seed"),
        ("devices", "devices"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    try:
        overrides.update(parse_set(args.set))
        run_cfg, algo_cfg = resolve_config(config_file=args.config, overrides=overrides)
        if args.out is not None and os.path.exists(args.out):
            raise FileExistsError(
                f"--out {args.out!r} already exists; jaxlearn never overwrites a run folder"
            )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run(run_cfg, algo_cfg, out=args.out)
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # device/env splits are checked before anything is written
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _report(summary)


def _report(summary: dict) -> int:
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("final_return_mean", "env_steps_per_second", "compile_seconds", "run_dir")
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
