"""Hyperparameter sweep: Optuna asks for a batch of trials, jaxlearn trains them in one call.

    jaxlearn-sweep experiments/sweeps/ppo_cartpole.yaml   # or: python scripts/sweep.py ...
    python scripts/sweep.py SPEC.yaml --out sweeps/lr --num-trials 64 --batch-size 16
    python scripts/sweep.py SPEC.yaml --storage postgresql://user@host/db --study-name nav
    python scripts/sweep.py SPEC.yaml --set total_timesteps=50000   # a shorter sweep
    python scripts/sweep.py --resume sweeps/lr               # after an interruption
    python scripts/sweep.py --resume sweeps/lr --export-best experiments/ppo_best.yaml

Writes into the sweep folder: sweep.yaml (the resolved spec), study.db (unless --storage),
results.csv, objective.png, best_config.yaml (ready for train.py --config) and
summary.json. Progress goes to stderr (per chunk each live trial's value, per batch how
each trial ended, both with the best so far); the summary JSON to stdout. Exit 2: bad input
(nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SPEC_FLAGS = (
    "num_trials",
    "batch_size",
    "seeds_per_trial",
    "storage",
    "study_name",
    "seed",
    "devices",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Batched Optuna sweep: trials of one batch train in one vmapped call."
    )
    p.add_argument("spec", nargs="?", help="sweep spec YAML (see experiments/sweeps/)")
    p.add_argument("--out", metavar="DIR", help="sweep folder to create (must not exist)")
    p.add_argument("--resume", metavar="DIR", help="continue this sweep folder")
    p.add_argument("--num-trials", type=int, help="trials in the study (over all batches)")
    p.add_argument("--batch-size", type=int, help="trials trained together in one call")
    p.add_argument("--seeds-per-trial", type=int, help="seeds averaged per trial")
    p.add_argument("--storage", metavar="URL", help="Optuna RDB URL (default sqlite in DIR)")
    p.add_argument("--study-name", help="study name in the storage (default jaxlearn)")
    p.add_argument("--seed", type=int, help="sampler and trial-key seed")
    p.add_argument(
        "--devices",
        help="local devices the batch's lanes are split over: auto or all (every one, "
        "default), or a count",
    )
    p.add_argument(
        "--set",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="override a field of the base train config, after the spec's base and config "
        "(repeatable; same fields and checks as train.py --set), e.g. total_timesteps=50000",
    )
    p.add_argument(
        "--export-best",
        metavar="PATH",
        help="also write the best config to PATH (e.g. experiments/x.yaml); never overwrites",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input, 1 the best config could not be written."""
    args = parse_args(argv)
    from jaxlearn import compile_cache

    compile_cache.enable()  # a second run of the same shapes loads its programs from disk
    from jaxlearn import sweep
    from jaxlearn.config import parse_set

    if args.export_best and os.path.exists(args.export_best):
        print(f"error: --export-best {args.export_best!r} already exists", file=sys.stderr)
        return 2
    if args.export_best and not os.path.isdir(os.path.dirname(os.path.abspath(args.export_best))):
        print(
            f"error: --export-best {args.export_best!r}: its folder does not exist; give a "
            "file path in an existing folder",
            file=sys.stderr,
        )
        return 2
    try:
        if args.resume is not None:
            given = [
                f"--{k.replace('_', '-')}"
                for k in ("spec", "out", *SPEC_FLAGS)
                if getattr(args, k) is not None
            ]
            given += ["--set"] if args.set else []
            if given:
                raise ValueError(
                    f"--resume takes no {', '.join(given)}: a resumed sweep keeps its spec"
                )
            summary = sweep.resume(args.resume)
        else:
            if args.spec is None:
                raise ValueError("give a sweep spec YAML, or --resume DIR")
            overrides = {k: getattr(args, k) for k in SPEC_FLAGS if getattr(args, k) is not None}
            spec = sweep.load_spec(args.spec, overrides, parse_set(args.set))
            summary = sweep.run(spec, args.out)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.export_best:
        try:
            summary["exported"] = sweep.export_best(summary["folder"], args.export_best)
        except (ValueError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # the sweep itself is done and kept in its folder
            print(
                f"error: --export-best {args.export_best!r}: {e.strerror or e}; the sweep is "
                f"complete in {summary['folder']} (its best config: "
                f"{os.path.join(summary['folder'], 'best_config.yaml')})",
                file=sys.stderr,
            )
            return 1
    print(json.dumps(summary, default=str))
    return 0
