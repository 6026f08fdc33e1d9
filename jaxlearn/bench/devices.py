"""`devices`: PPO and DQN env steps/s against the number of devices (strong scaling).

At 1, 2, 4, ... local devices: (a) the same seeds sharded over them, (b) one agent trained data
parallel over them, with the speedup over 1 device. On a CPU host the devices are forced in a
child process (`python -m jaxlearn.cli.bench`), whose rows are marked `correctness_only`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback

from jaxlearn.bench.peers import run_peer
from jaxlearn.bench.rows import (
    ENV_NAME,
    EXPERIMENTS,
    FINAL_FRACTION,
    ROOT,
    Emitter,
    compile_and_time,
    error_text,
    log,
    memory_fields,
    timing_fields,
)

DEVICES_FORCED_ENV = "JAXLEARN_BENCH_FORCED_DEVICES"  # set in the forced-CPU-devices child
DQN_GRAD_STEPS_PER_ENV_STEP = 0.1  # as experiments/dqn_cartpole.yaml (1 per 10 env steps)


def device_counts(args: argparse.Namespace, available: int, on_cpu: bool) -> list[int]:
    """`--device-counts`, else 1, 2, 4, ... up to the local devices (a CPU host forces 8, or
    2 with --quick), with the local count itself when it is not a power of two."""
    if args.device_counts:
        return sorted(set(args.device_counts))
    top = (2 if args.quick else 8) if on_cpu else available
    counts = [1]
    while counts[-1] * 2 <= top:
        counts.append(counts[-1] * 2)
    return counts if counts[-1] == top else [*counts, top]


def devices_configs(algo: str, args: argparse.Namespace, lcm: int, on_gpu: bool) -> dict:
    """Config overrides of the two jobs timed at every device count, sized so that every
    count in the list divides them: the seeds job (`num_seeds`) and the one data-parallel
    agent (its `num_envs` and, for DQN, buffer and batch)."""
    steps = args.devices_timesteps or (16_384 if args.quick else (1_000_000 if on_gpu else 100_000))
    seeds = args.devices_seeds or lcm * (16 if on_gpu and not args.quick else 1)
    envs_per = 64 if on_gpu and not args.quick else 2
    base = {"total_timesteps": steps}
    if algo == "ppo":
        dp = {**base, "num_envs": lcm * envs_per * 2}
    else:
        num_envs = lcm * envs_per
        # keep the yaml's 0.1 gradient steps per env step with one env step per env and update
        train_frequency = math.lcm(num_envs, 10)
        gradient_steps = int(train_frequency * DQN_GRAD_STEPS_PER_ENV_STEP)
        dp = {
            **base,
            "num_envs": num_envs,
            "train_frequency": train_frequency,
            "gradient_steps": gradient_steps,
            "target_update_period": -(-500 // train_frequency) * train_frequency,
            "buffer_size": -(-10_000 // lcm) * lcm,
            "batch_size": -(-128 // lcm) * lcm,
        }
        base = {**base, "learning_starts": min(10_000, steps // 10)}
        dp["learning_starts"] = base["learning_starts"]
    return {"seeds": {**base, "num_seeds": seeds}, "data_parallel": {**dp, "num_seeds": 1}}


def devices_job(algo: str, mode: str, overrides: dict, devices: list) -> tuple:
    """(fn, make_args, env steps per agent) of one whole training run on `devices`: the seeds
    vmapped and sharded over them, or one agent data parallel (`shard_map`, with a leading
    per-device axis on every output)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxlearn.algos import ALGOS, make_train_fn
    from jaxlearn.parallel import DATA_AXIS, data_mesh, seed_mesh, shard_seeds
    from jaxlearn.runner import resolve_config

    run_cfg, cfg = resolve_config(config_file=EXPERIMENTS[algo], overrides=overrides)
    _, make_learner = ALGOS[algo]
    key = jax.random.key(run_cfg.seed)
    n = len(devices)
    learner = make_learner(cfg)
    steps = learner.num_updates * learner.env_steps_per_update
    if mode == "seeds":
        mesh = seed_mesh(devices)
        keys = jax.random.split(key, run_cfg.num_seeds)
        return jax.vmap(make_train_fn(learner)), lambda: (shard_seeds(keys, mesh),), steps
    if n == 1:
        return make_train_fn(learner), lambda: (jax.device_put(key, devices[0]),), steps
    mesh = data_mesh(devices)
    train = make_train_fn(make_learner(cfg, data_shards=n))

    def per_device(k):
        return jax.tree.map(lambda x: x[None], train(k))

    fn = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=PartitionSpec(),
        out_specs=PartitionSpec(DATA_AXIS),
        check_vma=False,
    )
    return fn, lambda: (jax.device_put(key, NamedSharding(mesh, PartitionSpec())),), steps


def bench_devices(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    """PPO and DQN on CartPole at 1, 2, 4, ... local devices: (a) the same seeds sharded over
    them, (b) one agent trained data parallel over them. Strong scaling: the job is the same
    at every count. On a CPU host the devices are forced
    (`--xla_force_host_platform_device_count`) in a child process, since the flag must be set
    before JAX starts; they share the same cores, so those rows show correctness only."""
    import jax
    import numpy as np

    from jaxlearn.bench.side_by_side import final_returns

    on_cpu = args.platform == "cpu"
    counts = device_counts(args, jax.local_device_count(), on_cpu)
    if on_cpu and jax.local_device_count() < max(counts):
        if os.environ.get(DEVICES_FORCED_ENV):
            raise RuntimeError(f"the child has {jax.local_device_count()} CPU devices")
        flags = f"{os.environ.get('XLA_FLAGS', '')} " + (
            f"--xla_force_host_platform_device_count={max(counts)}"
        )
        child_args = ["--only", "devices", "--device-counts", ",".join(map(str, counts))]
        child_args += ["--quick"] if args.quick else []
        for flag in ("devices_timesteps", "devices_seeds"):
            if getattr(args, flag):
                child_args += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        child_args += ["--stall-seconds", str(args.stall_seconds)]
        log(f"devices: forcing {max(counts)} CPU devices in a child process")
        rows, err = run_peer(
            sys.executable,
            "-m",  # this command again, `python -m jaxlearn.cli.bench ...` (cwd: ROOT)
            ["jaxlearn.cli.bench", *child_args],
            args.peer_timeout,
            args.stall_seconds,
            env_extra={
                "XLA_FLAGS": flags.strip(),
                "JAX_PLATFORMS": "cpu",
                DEVICES_FORCED_ENV: "1",
            },
        )
        for row in rows:  # the child's figures, under this run's id
            emit({**row, "child_run_id": row.get("run_id"), "run_id": emit.common["run_id"]})
        if err is not None:
            emit({"bench": "devices", "impl": "jaxlearn", "error": f"forced-device child: {err}"})
        return
    lcm = math.lcm(*counts)
    local = jax.local_devices()
    for algo in ("ppo", "dqn"):
        jobs = devices_configs(algo, args, lcm, on_gpu)
        for mode, overrides in jobs.items():
            one_device = None
            for n in counts:
                base = {
                    "bench": "devices",
                    "impl": "jaxlearn",
                    "algo": algo,
                    "mode": mode,
                    "env": ENV_NAME,
                    "devices_used": n,
                    "num_seeds": overrides["num_seeds"],
                    "correctness_only": on_cpu,
                    "config_file": os.path.relpath(EXPERIMENTS[algo], ROOT),
                    "overrides": overrides,
                }
                log(f"devices {algo} {mode} on {n} device(s)")
                try:
                    fn, make_args, steps_run = devices_job(algo, mode, overrides, local[:n])
                    t = compile_and_time(fn, make_args, what=base)
                except Exception as e:
                    emit({**base, "error": error_text(e)})
                    traceback.print_exc()
                    continue
                state, metrics = t.output
                metrics = {k: np.asarray(v) for k, v in metrics.items()}
                extra = {}
                if mode == "data_parallel":
                    lead = (lambda x: x[:1]) if n > 1 else (lambda x: x[None])
                    metrics = {k: lead(v) for k, v in metrics.items()}
                    if n > 1:  # pmean keeps every device's copy of the agent equal
                        extra["replicas_identical"] = all(
                            bool(np.all(np.asarray(x) == np.asarray(x)[:1]))
                            for x in jax.tree.leaves(state.params)
                        )
                per_seed = final_returns(metrics, FINAL_FRACTION)
                total = overrides["num_seeds"] * steps_run
                row = {
                    **base,
                    "total_timesteps": steps_run,
                    "total_env_steps": total,
                    **timing_fields(t),
                    "env_steps_per_second": total / t.run_seconds,
                    "env_steps_per_second_per_agent": steps_run / t.run_seconds,
                    **extra,
                    "final_return_mean": float(np.nanmean(per_seed)),
                    **memory_fields(),
                }
                if n == 1:
                    one_device = row
                elif one_device is not None:
                    row["speedup_vs_1_device"] = one_device["run_seconds"] / t.run_seconds
                emit(row)
                del t, state, metrics
