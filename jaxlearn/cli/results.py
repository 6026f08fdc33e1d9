"""Learning results table: `jaxlearn-results` or `python scripts/results.py` [...].

Trains every shipped config in `experiments/*.yaml` (top level, not `sweeps/`) on N seeds,
each config's seeds vmapped in one program, and writes into `--out` (default docs/results/):
`results.md` (Markdown tables), `results.csv`, `task_metrics.csv` (the task envs' success,
collisions, coverage, cooperation and final curriculum stage per seed), and per config
`<name>.png` (mean and min-max band over seeds against env steps, references as dashed
lines) and `<name>_curve.csv`. The tables and CSVs are rewritten after each config, so a
long run keeps what it finished.
Every flag and every selected config is checked, and `--out` created and written to once,
before anything is compiled. Exit status: 0 done, 2 bad input (nothing trained), 1 a write
failed (files are replaced whole, so the rows written before are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import os
import sys
import tempfile

DEFAULT_OUT = os.path.join("docs", "results")


def default_experiments() -> str:
    """experiments/ of the checkout jaxlearn is installed from, else ./experiments."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(os.path.dirname(package), "experiments")
    return path if os.path.isdir(path) else "experiments"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train every shipped config on N seeds and write the results table "
        "(Markdown + CSV) and one learning-curve plot per config.",
    )
    p.add_argument("--seeds", type=int, default=8, help="seeds per config (default 8)")
    p.add_argument("--only", metavar="NAME,...", help="configs to run, by file stem")
    p.add_argument(
        "--total-timesteps",
        type=int,
        help="env steps per seed for every config (default: each config's own; smaller for "
        "a smoke run)",
    )
    p.add_argument("--eval-episodes", type=int, default=16, help="greedy episodes per seed")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--experiments",
        metavar="DIR",
        default=None,
        help="folder of the configs (default: the checkout's experiments/)",
    )
    return p.parse_args(argv)


class UsageError(ValueError):
    """Bad flags: `error: ...`, exit 2."""


def select_configs(folder: str, only: str | None) -> list[tuple[str, str]]:
    """`(name, path)` of the configs to run, sorted by name; `only` picks some by stem."""
    paths = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    available = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
    if not available:
        raise UsageError(f"--experiments {folder!r}: no *.yaml configs in it")
    if only is None:
        return sorted(available.items())
    names = [n.strip() for n in only.split(",")]
    unknown = [n for n in names if n not in available]
    if unknown or not any(names):
        raise UsageError(
            f"--only {only!r}: unknown config(s) {unknown or ['']}; allowed: "
            f"{', '.join(sorted(available))}"
        )
    return [(n, available[n]) for n in dict.fromkeys(names)]


def check_out(out: str) -> None:
    """The output folder must be a folder (existing or creatable), not a file."""
    if not out:
        raise UsageError("--out: empty path")
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"--out {out!r}: {probe!r} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"--out {out!r}: {probe!r} is not writable")
    from jaxlearn import results, task_results

    try:  # the configs run now replace their rows; the other rows are kept
        results.read_rows(os.path.join(out, "results.csv"))
        results.read_rows(os.path.join(out, results.TASK_CSV), task_results.CSV_COLUMNS)
    except ValueError as e:
        raise UsageError(f"--out {out!r}: {e}") from None


def validate(args: argparse.Namespace) -> list[tuple[str, str, object, object]]:
    """Check the flags and resolve every selected config: `(name, path, run_cfg, algo_cfg)`."""
    import jax

    from jaxlearn.rundir import resolve_config
    from jaxlearn.runner import check_memory

    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be an integer >= 1")
    if args.total_timesteps is not None and args.total_timesteps < 1:
        raise UsageError(f"--total-timesteps {args.total_timesteps}: must be an integer >= 1")
    if args.eval_episodes < 1:
        raise UsageError(f"--eval-episodes {args.eval_episodes}: must be an integer >= 1")
    check_out(args.out)
    folder = args.experiments or default_experiments()
    if not os.path.isdir(folder):
        raise UsageError(f"--experiments {folder!r}: no such folder")
    overrides = {}
    if args.total_timesteps is not None:
        overrides["total_timesteps"] = args.total_timesteps
    chosen = []
    for name, path in select_configs(folder, args.only):
        try:
            run_cfg, algo_cfg = resolve_config(config_file=path, overrides=overrides)
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
        try:  # the seeds train vmapped on one device: do they fit?
            seeds, episodes = args.seeds, args.eval_episodes
            sized = dataclasses.replace(run_cfg, num_seeds=seeds, eval_episodes=episodes)
            check_memory(sized, algo_cfg, jax.local_devices()[:1])
        except ValueError as e:
            raise UsageError(f"--seeds {args.seeds} for {name}: {e}") from None
        chosen.append((name, path, run_cfg, algo_cfg))
    make_out(args.out)
    return chosen


def make_out(out: str) -> None:
    """Create the output folder and write a probe file in it, last of the checks, so that
    an output folder that cannot be written is refused before hours of training rather than
    after (`os.access` is no test for root, or for read-only and special file systems)."""
    existed = os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        if not existed:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # the empty folder made just now, if it was made
        raise UsageError(
            f"--out {out!r}: cannot write there ({e.strerror or e}); choose a writable folder"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        chosen = validate(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from jaxlearn import results, task_results

    done = []
    for name, path, run_cfg, algo_cfg in chosen:
        print(f"[results] {name}: {args.seeds} seeds ({path})", file=sys.stderr, flush=True)
        r = results.train_config(name, run_cfg, algo_cfg, args.seeds, args.eval_episodes)
        done.append(r)
        try:
            results.write_all(args.out, done, chosen[0][2].final_fraction)
        except OSError as e:  # a full disk, an I/O error: say what is kept, exit 1
            kept = ", ".join(d.name for d in done[:-1]) or "none"
            print(
                f"error: writing {name}'s results into {args.out!r} failed ({e.strerror or e}: "
                f"{e.filename}); configs written before it: {kept}",
                file=sys.stderr,
            )
            return 1
        row = results.csv_row(r)
        print(
            f"[results] {name}: training mean {row['mean']} worst {row['worst']}; greedy mean "
            f"{row['greedy_mean']} worst {row['greedy_worst']}; {row['compile_s']} s compile "
            f"+ {row['run_s']} s run",
            file=sys.stderr,
            flush=True,
        )
        for t in task_results.rows(name, r.task, r.stage_names):
            print(
                f"[results] {name}: {t['metric']} mean {t['mean']} worst {t['worst']} "
                f"(per seed {t['per_seed'].replace(';', ', ')})",
                file=sys.stderr,
                flush=True,
            )
    print(os.path.join(args.out, "results.md"))
    return 0
