"""Evaluate a run's checkpoint: `jaxlearn-evaluate RUN_DIR [--episodes 32] [...]`
(or `python scripts/evaluate.py ...`).

Restores a checkpoint of RUN_DIR (every seed), runs `--episodes` episodes per seed of the
greedy policy (or, with `--policy sampled`, of the policy sampling its actions as in
training) with keys from `--seed`, and prints one JSON object to stdout: the checkpoint step,
`return_mean`/`return_std` over all episodes, per-seed mean returns, `length_mean`, and the
mean of every task metric. The same command prints the same numbers. Progress goes to
stderr; errors print `error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from jaxlearn.config import MAX_SEED


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Evaluate a run folder's checkpoint; prints JSON to stdout."
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by scripts/train.py")
    p.add_argument("--episodes", default="32", help="episodes per seed (default 32)")
    p.add_argument(
        "--checkpoint",
        default="best",
        help="best (highest eval return; latest when none has one), latest, or an update step",
    )
    p.add_argument("--seed", default="0", help="evaluation seed (default 0)")
    p.add_argument(
        "--policy",
        default="greedy",
        help="greedy (argmax or the Gaussian's mean; default) or sampled (actions drawn as in "
        "training: PPO from its distribution, DQN epsilon-greedy at epsilon_end); greedy and "
        "sampled episodes of one --seed start from the same states",
    )
    p.add_argument(
        "--render",
        metavar="FILE",
        default=None,
        help="also draw one episode of seed 0, acting as --policy says, to FILE (a new .gif, "
        "or .mp4 with ffmpeg on PATH); see docs/rendering.md",
    )
    return p.parse_args(argv)


def _int_at_least(flag: str, value: str, minimum: int, maximum: int | None = None) -> int:
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < minimum:
        raise ValueError(f"{flag} {value!r} is invalid: must be an integer >= {minimum}")
    if maximum is not None and n > maximum:
        raise ValueError(
            f"{flag} {value!r} is invalid: must be an integer in [{minimum}, {maximum}]"
        )
    return n


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input or checkpoint."""
    args = parse_args(argv)
    from jaxlearn import compile_cache

    compile_cache.enable()  # a second run of the same shapes loads its programs from disk
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        episodes = _int_at_least("--episodes", args.episodes, 1)
        seed = _int_at_least("--seed", args.seed, 0, MAX_SEED)
        from jaxlearn.export import parse_checkpoint

        checkpoint = parse_checkpoint(args.checkpoint)
        from jaxlearn.evaluation import POLICIES

        if args.policy not in POLICIES:
            raise ValueError(
                f"--policy {args.policy!r} is invalid: allowed values are {', '.join(POLICIES)}"
            )
        if args.render is not None:
            from jaxlearn.render import check_path

            check_path(args.render)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import jax
    import numpy as np

    # Orbax warns about every item it leaves unread when only a checkpoint's record is read.
    logging.getLogger("absl").addFilter(lambda r: "could not be restored" not in r.getMessage())

    from jaxlearn import resources
    from jaxlearn.checkpoint import CheckpointError
    from jaxlearn.evaluation import summarize
    from jaxlearn.export import load_run

    try:
        run = load_run(args.run_dir, checkpoint)
        evaluate = getattr(run.learner, f"{args.policy}_episodes")
        # the episodes run in parallel: refuse a count that cannot fit, naming --episodes
        est = resources.estimate(run.algo_cfg, run.run_cfg.num_seeds, episodes)
        try:
            resources.check(est, resources.available_memory())
        except ValueError as e:
            raise ValueError(f"--episodes {episodes}: {e}") from None
        if args.render is not None:  # an env without a renderer, before any episode runs
            from jaxlearn.envs.setup import base_env
            from jaxlearn.render import renderer_for

            try:
                renderer_for(base_env(run.algo_cfg)[0])
            except ValueError as e:
                raise ValueError(f"--render {args.render!r}: {e}") from None
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(
        f"[evaluate] {args.run_dir}: {run.run_cfg.algo} {run.algo_cfg.env}, checkpoint "
        f"{run.step} ({run.choice}), {run.run_cfg.num_seeds} seed(s) x {episodes} "
        f"{args.policy} episodes"
    )

    t0 = time.perf_counter()
    keys = jax.random.split(jax.random.key(seed), run.run_cfg.num_seeds)
    ev = jax.jit(jax.vmap(lambda s, k: evaluate(s, k, episodes)))
    result = jax.device_get(ev(run.state, keys))  # every leaf [num_seeds, episodes]
    log(f"[evaluate] done in {time.perf_counter() - t0:.1f}s")

    summary = summarize(result)
    out = {
        "run_dir": args.run_dir,
        "algo": run.run_cfg.algo,
        "env": run.algo_cfg.env,
        "checkpoint_step": run.step,
        "checkpoint_choice": run.choice,
        "num_seeds": run.run_cfg.num_seeds,
        "episodes_per_seed": episodes,
        "seed": seed,
        "policy": args.policy,
        "return_mean": summary.pop("return_mean"),
        "return_std": summary.pop("return_std"),
        "return_per_seed": [float(x) for x in np.mean(result["returns"], axis=1)],
        **summary,
    }
    print(json.dumps(out))
    if args.render is not None:
        from jaxlearn.render import render_episodes

        info = render_episodes(
            args.run_dir, args.render, seed=seed, checkpoint=run.step, policy=args.policy
        )
        log(
            f"[evaluate] wrote {args.render}: {info['frames']} frames, {args.policy} episode of "
            f"{info['lengths'][0]} steps, return {info['returns'][0]:.2f}"
        )
    return 0
