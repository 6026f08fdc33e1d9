"""Train an agent: `jaxlearn-train` or `python scripts/train.py` [--algo ppo] [...].

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

from jaxlearn.cli import fields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a jaxlearn agent; writes config.yaml, TensorBoard events, "
        "metrics.json and learning_curve.png into a new run folder.",
        add_help=False,  # fields.add_help: -h lists the flags, then every config field
    )
    fields.add_help(p)
    p.add_argument("--algo", help="algorithm (default ppo)")
    p.add_argument("--env", help="environment name (default CartPole-v1)")
    # read as --set reads them (1e6 is 1000000), and checked with the config's own messages
    p.add_argument("--num-seeds", help="independent agents trained in one vmapped call")
    p.add_argument("--total-timesteps", help="env steps per seed (1e6 = 1000000)")
    p.add_argument("--seed", help="base random seed")
    p.add_argument(
        "--devices",
        help="local devices to shard the seeds over: auto (all when they divide "
        "--num-seeds, else one), all, or a count; with --num-seeds 1 and several devices, "
        "one PPO or DQN agent trains data parallel over them",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create (must not exist)")
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse the run when its memory estimate exceeds SIZE (e.g. 8GiB); default: "
        "the device's free memory (the host's available memory on the CPU)",
    )
    p.add_argument("--config", metavar="FILE", help="YAML, e.g. experiments/ppo_cartpole.yaml")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed); every process runs the same "
        "command with its own --process-id; the seeds are split over the processes, or "
        "with --num-seeds 1 one agent trains data parallel across them",
    )
    p.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    p.add_argument("--num-processes", type=int, help="processes in the run")
    p.add_argument("--process-id", type=int, help="this process's index (0 writes the run)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this run from its newest valid checkpoint (no other flags)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from this run's trained network (policy transfer; shapes must match)",
    )
    p.add_argument(
        "--init-checkpoint",
        metavar="WHICH",
        help="with --init-from: best (default), latest, or an update step",
    )
    p.add_argument(
        "--compare-scratch",
        action="store_true",
        help="with --init-from: also train the same config from scratch (RUN_DIR/scratch) "
        "and write transfer.png / transfer.json comparing the two return curves",
    )
    p.add_argument(
        "--set",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="override any config field (repeatable)",
    )
    return p.parse_args(argv)


def _initialize_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize` before jaxlearn's envs are imported (their gymnax import
    starts the XLA backend, after which JAX refuses to initialise). Flags left out come from the
    environment as JAX reads it (SLURM, Open MPI, TPU pods, or JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID); CPU processes talk through gloo."""
    import jax

    env = os.environ
    address = args.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    n = args.num_processes if args.num_processes is not None else env.get("JAX_NUM_PROCESSES")
    i = args.process_id if args.process_id is not None else env.get("JAX_PROCESS_ID")
    n = None if n is None else int(n)
    i = None if i is None else int(i)
    if n is not None and n < 1:
        raise ValueError(f"--num-processes={n} is invalid: must be >= 1")
    if i is not None and n is not None and not 0 <= i < n:
        raise ValueError(f"--process-id={i} is invalid: must be in 0..{n - 1}")
    if env.get("JAX_PLATFORMS", "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=i)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 a write failed (disk full, I/O error: the run stopped, its
    checkpoints kept), 2 bad input (nothing written), 3 the run diverged, 130 Ctrl-C (143
    SIGTERM): one line says how to resume, no traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt as e:
        from jaxlearn.runner import RunInterrupted

        if isinstance(e, RunInterrupted):
            print(e.message(), file=sys.stderr)
            return 128 + e.signum
        print("interrupted before the run folder was created; nothing to resume", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    from jaxlearn import compile_cache

    compile_cache.enable()  # a second run of the same shapes loads its programs from disk
    dist_flags = ("distributed", "coordinator_address", "num_processes", "process_id")
    if args.distributed:
        try:
            _initialize_distributed(args)
        except (ValueError, RuntimeError) as e:
            print(f"error: --distributed: {e}", file=sys.stderr)
            return 2
    elif any(getattr(args, f) is not None for f in dist_flags[1:]):
        print(
            "error: --coordinator-address/--num-processes/--process-id need --distributed",
            file=sys.stderr,
        )
        return 2
    from jaxlearn.checkpoint import CheckpointError
    from jaxlearn.config import parse_set
    from jaxlearn.runner import DivergenceError, RunWriteError, resolve_config, resume, run

    if args.resume is not None:
        given = [
            f"--{k.replace('_', '-')}"
            for k, v in vars(args).items()
            if k not in ("resume", *dist_flags) and v is not None and v != [] and v is not False
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
        except RunWriteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return _report(summary)

    overrides: dict = {}
    for flag, field in [
        ("algo", "algo"),
        ("env", "env"),
        ("num_seeds", "num_seeds"),
        ("total_timesteps", "total_timesteps"),
        ("seed", "seed"),
        ("devices", "devices"),
        ("init_from", "init_from"),
        ("init_checkpoint", "init_checkpoint"),
        ("max_memory", "max_memory"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    try:
        overrides.update(parse_set(args.set))
        run_cfg, algo_cfg = resolve_config(config_file=args.config, overrides=overrides)
        if args.compare_scratch and run_cfg.init_from is None:
            raise ValueError("--compare-scratch needs --init-from RUN_DIR")
        chief = not args.distributed or __import__("jax").process_index() == 0
        if args.out is not None and os.path.exists(args.out) and chief:
            raise FileExistsError(
                f"--out {args.out!r} already exists; jaxlearn never overwrites a run folder"
            )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run(run_cfg, algo_cfg, out=args.out)
        if args.compare_scratch:
            summary = _compare_scratch(run_cfg, algo_cfg, summary)
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except RunWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, CheckpointError) as e:  # checked before anything is written
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _report(summary)


def _compare_scratch(run_cfg, algo_cfg, summary: dict) -> dict:
    """Train the same config from a fresh network (all parameters, no adapters) in
    RUN_DIR/scratch, then compare the return curves (transfer.png, transfer.json)."""
    import dataclasses

    from jaxlearn import transfer
    from jaxlearn.runner import run

    run_dir = summary["run_dir"]
    scratch = run(
        dataclasses.replace(run_cfg, init_from=None, init_checkpoint="best"),
        dataclasses.replace(algo_cfg, lora_rank=0),
        out=os.path.join(run_dir, "scratch"),
    )
    result = transfer.compare(run_dir, scratch["run_dir"], run_dir)
    print(json.dumps({"transfer": result}), file=sys.stderr)
    return summary


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
