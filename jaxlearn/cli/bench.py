"""`jaxlearn-bench`: throughput benchmark of jaxlearn against its peers, one JSON object per line
on stdout; `python scripts/bench.py` is the same command.

    jaxlearn-bench                      # everything, sizes chosen for the device
    jaxlearn-bench --quick              # small sizes (smoke tests, CI)
    jaxlearn-bench --only env_step,buffer --out bench.jsonl
    jaxlearn-bench --setup-peers        # venv with rejax + gymnax 0.0.9; prints its python
    jaxlearn-bench --only ppo_e2e --peer-python .bench-venvs/peers/bin/python

Benches (`--only`): `env_step` (random stepping of vmapped CartPole-v1, raw gymnax against
jaxlearn's `make_vec` stack), `ppo_e2e` and `dqn_e2e` (a whole training run in one jit, 1 seed
and vmapped seeds), `buffer` (replay add+sample, against flashbax when it is importable),
`memory` (episodic-memory retrieval latency, 1M items x 256 queries, k=5, exact and
approximate, with the approximate recall), `sweep` (trials per hour of a PPO CartPole sweep
through `jaxlearn.sweep`: batched in one vmapped call vs one trial at a time), `devices` (PPO
and DQN env steps/s at 1, 2, 4, ... devices: seeds sharded over them, and one agent data
parallel; on a CPU host in a child with forced CPU devices, rows marked `correctness_only`).

Every timed function is compiled ahead of time (`jax.jit(f).lower(...).compile()`), run once to
warm up, then timed on a second run with `jax.block_until_ready`. Nothing is hard-coded: every
figure in a row was measured by this command. Peers that need another environment (rejax 0.1.x
pins the gymnax 0.0.9 API) run in their own virtual environment as a subprocess of this command,
on the same device, right after the matching jaxlearn run. Progress goes to stderr.

Here: the flags and `main`; the benches are modules of `jaxlearn.bench`. They read
experiments/*.yaml and run the peers' drivers (scripts/peers/) of the checkout jaxlearn is
installed from (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import traceback

from jaxlearn.bench import peers
from jaxlearn.bench import rows as bench_rows
from jaxlearn.bench.agents import bench_algo, bench_sweep, skip_reason_dqn
from jaxlearn.bench.buffers import bench_buffer
from jaxlearn.bench.devices import bench_devices
from jaxlearn.bench.env_step import bench_env_step
from jaxlearn.bench.memory import bench_memory
from jaxlearn.bench.peers import (
    DEFAULT_PEER_VENV,
    PEER_PACKAGES,
    bench_purejaxrl,
    bench_rejax,
    setup_peers,
)
from jaxlearn.bench.purejaxrl import PUREJAXRL_SCRIPTS, purejaxrl_file
from jaxlearn.bench.rows import (
    ROOT,
    Emitter,
    Watchdog,
    device_fields,
    error_text,
    git_revision,
    log,
)

BENCHES = (
    "env_step",
    "ppo_e2e",
    "dqn_e2e",
    "buffer",
    "memory",
    "sweep",
    "devices",
    "purejaxrl",
)


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def bench_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown bench {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHES)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="jaxlearn throughput benchmark: JSON lines on stdout, progress on stderr.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: 1 and 4 seeds, 50k steps")
    p.add_argument(
        "--only", type=bench_list, default=list(BENCHES), help=f"subset of {','.join(BENCHES)}"
    )
    p.add_argument("--seeds", type=int_list, help="PPO seed counts (default 1,64; quick 1,4)")
    p.add_argument(
        "--dqn-seeds", type=int_list, help="DQN seed counts (default 1,16,128; quick 1,4)"
    )
    p.add_argument(
        "--ppo-timesteps",
        type=int,
        help="ppo_e2e: env steps per seed (default the yaml's 500k; quick 50k), >= one update "
        "(num_envs x num_steps)",
    )
    p.add_argument(
        "--dqn-timesteps",
        type=int,
        help="dqn_e2e: env steps per seed (default the yaml's 500k; quick 50k); >= its "
        "learning_starts (10k)",
    )
    p.add_argument(
        "--device-counts",
        type=int_list,
        help="devices: device counts (default 1,2,4,... up to the local devices; a CPU host "
        "forces 8 CPU devices, 2 with --quick)",
    )
    p.add_argument(
        "--devices-timesteps",
        type=int,
        help="devices: env steps per agent (default 100k on CPU, 1M on GPU; quick 16,384)",
    )
    p.add_argument(
        "--devices-seeds",
        type=int,
        help="devices: seeds of the sharded-seeds job (default the lcm of the counts, x16 on "
        "GPU); a multiple of every count",
    )
    p.add_argument("--env-counts", type=int_list, help="env_step: numbers of vmapped envs")
    p.add_argument("--buffer-ops", type=int, help="buffer: ops per timed run (default by device)")
    p.add_argument("--sweep-trials", type=int, help="sweep: trials timed each way (default 16)")
    p.add_argument(
        "--memory-capacity", type=int, help="memory: items stored (default 1M; quick 65,536)"
    )
    p.add_argument("--out", metavar="FILE", help="also append the JSON lines to FILE")
    p.add_argument(
        "--peer-python",
        metavar="PATH",
        help="interpreter of a venv with rejax and gymnax 0.0.9 (see --setup-peers)",
    )
    p.add_argument("--peer-timeout", type=float, default=3600.0, help="seconds per peer run")
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=300.0,
        help="CPU platform: end a run (ours or a peer's) that makes no CPU progress for this "
        "long, with an error row, instead of hanging (0 disables)",
    )
    p.add_argument(
        "--purejaxrl",
        metavar="DIR",
        help="a local clone of PureJaxRL: run its ppo.py and dqn.py (CartPole configs) and "
        "jaxlearn on the same configs, interleaved over --rounds, in the venv of --peer-python "
        f"(default {DEFAULT_PEER_VENV}/bin/python); alone it implies --only purejaxrl",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="purejaxrl: timed rounds per side (default 3)"
    )
    p.add_argument("--bench-seed", type=int, default=0, help="purejaxrl: PRNG seed of both sides")
    p.add_argument(
        "--setup-peers",
        nargs="?",
        const=DEFAULT_PEER_VENV,
        metavar="DIR",
        help=f"create a venv at DIR (default {DEFAULT_PEER_VENV}) with "
        f"{' '.join(PEER_PACKAGES)} from PyPI, print its interpreter path and exit",
    )
    args = p.parse_args(argv)
    check_purejaxrl_args(p, args, argv)
    for flag in (
        "ppo_timesteps",
        "dqn_timesteps",
        "devices_timesteps",
        "devices_seeds",
        "sweep_trials",
    ):
        value = getattr(args, flag)
        if value is not None and value <= 0:  # never a silent default for 0
            p.error(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.devices_seeds is not None and args.device_counts is not None:
        odd = [c for c in args.device_counts if args.devices_seeds % c]
        if odd:
            p.error(
                f"--devices-seeds {args.devices_seeds} must be a multiple of every device "
                f"count; it is not of {odd}"
            )
    if not (math.isfinite(args.peer_timeout) and args.peer_timeout > 0):
        p.error(f"--peer-timeout must be a number of seconds > 0, got {args.peer_timeout}")
    if not (math.isfinite(args.stall_seconds) and args.stall_seconds >= 0):
        p.error(
            f"--stall-seconds must be a number of seconds >= 0 (0: off), got {args.stall_seconds}"
        )
    if args.buffer_ops is not None and args.buffer_ops <= 0:
        p.error(f"--buffer-ops must be a positive integer, got {args.buffer_ops}")
    if args.memory_capacity is not None and args.memory_capacity < 5:
        p.error(f"--memory-capacity must be an integer >= 5 (k), got {args.memory_capacity}")
    if args.peer_python is not None and not os.path.isfile(args.peer_python):
        p.error(f"--peer-python {args.peer_python!r}: no such file (run --setup-peers first)")
    check_peer_drivers(p, args)
    if args.out is not None:
        try:  # the rows are appended to it; better refused now than after the first row
            with open(args.out, "a"):
                pass
        except OSError as e:
            p.error(f"--out {args.out!r}: cannot append to it ({e.strerror or e})")
    return args


def check_purejaxrl_args(
    p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None
) -> None:
    """--purejaxrl DIR: a clone with purejaxrl/ppo.py and dqn.py, and a peer interpreter."""
    given = sys.argv[1:] if argv is None else argv
    only_given = any(a == "--only" or a.startswith("--only=") for a in given)
    if args.purejaxrl is None:
        if only_given and "purejaxrl" in args.only:
            p.error("--only purejaxrl needs --purejaxrl DIR (a local clone of PureJaxRL)")
        if not only_given:
            args.only = [b for b in args.only if b != "purejaxrl"]
        return
    if not only_given:
        args.only = ["purejaxrl"]
    if args.rounds <= 0:
        p.error(f"--rounds must be a positive integer, got {args.rounds}")
    missing = [f for f in PUREJAXRL_SCRIPTS if purejaxrl_file(args.purejaxrl, f) is None]
    if missing:
        p.error(
            f"--purejaxrl {args.purejaxrl!r}: no {' or '.join(missing)} in DIR/purejaxrl/ or "
            "DIR/ (expected a clone of github.com/luchris429/purejaxrl)"
        )
    if args.peer_python is None:
        default = os.path.join(ROOT, DEFAULT_PEER_VENV, "bin", "python")
        if not os.path.isfile(default):
            p.error(
                "--purejaxrl needs the peer venv (gymnax 0.0.9): create it with "
                "`python scripts/bench.py --setup-peers [DIR]` and pass --peer-python "
                f"DIR/bin/python (default {os.path.relpath(default, ROOT)} does not exist)"
            )
        args.peer_python = default


def check_peer_drivers(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The driver of each peer that will run (scripts/peers/*.py) must be in the checkout."""
    needed = []
    if "purejaxrl" in args.only:
        needed.append(peers.PUREJAXRL_SCRIPT)
    if args.peer_python is not None and {"ppo_e2e", "dqn_e2e"} & set(args.only):
        needed.append(peers.REJAX_SCRIPT)
    missing = [path for path in needed if not os.path.isfile(path)]
    if missing:
        p.error(
            f"no peer driver {missing[0]}: the drivers in scripts/peers/ run in the peer venv "
            "and come only with a source checkout; install jaxlearn from one with "
            "`pip install -e .`, or run without the peer flags"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup_peers is not None:
        return setup_peers(args.setup_peers)

    # Memory is allocated as needed instead of 75% of the GPU up front, so a peer subprocess
    # can run on the same device after us; recorded in every row.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    started = datetime.datetime.now(datetime.UTC)
    common = {
        "run_id": f"{started.strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}",
        "quick": args.quick,
        **device_fields(),
        "jaxlearn_revision": git_revision(),
        "host_cpu_count": os.cpu_count(),
        "host_load_1min_at_start": os.getloadavg()[0],
        "xla_python_client_preallocate": os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"],
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "peak_memory_scope": "process-wide peak so far (device allocator; host max RSS)",
    }
    emit = Emitter(args.out, common)
    on_gpu = jax.devices()[0].platform == "gpu"
    on_cpu = jax.devices()[0].platform == "cpu"
    bench_rows.WATCHDOG = Watchdog(emit, args.stall_seconds, enabled=on_cpu)
    log(f"device {common['device']} ({common['platform']}), jax {jax.__version__}")
    args.platform = common["platform"]
    ppo_seeds = args.seeds or ([1, 4] if args.quick else [1, 64])
    dqn_seeds = args.dqn_seeds or ([1, 4] if args.quick else [1, 16, 128])

    for bench in BENCHES:
        if bench not in args.only:
            continue
        try:
            if bench == "env_step":
                bench_env_step(args, emit, on_gpu)
            elif bench == "ppo_e2e":
                ours = bench_algo("ppo", ppo_seeds, args, emit)
                bench_rejax("ppo", ppo_seeds, ours, args, emit)
            elif bench == "dqn_e2e":
                reason = skip_reason_dqn()
                if reason is not None:
                    emit({"bench": "dqn_e2e", "skipped": reason})
                    continue
                ours = bench_algo("dqn", dqn_seeds, args, emit)
                bench_rejax("dqn", dqn_seeds, ours, args, emit)
            elif bench == "buffer":
                bench_buffer(args, emit, on_gpu)
            elif bench == "memory":
                bench_memory(args, emit, on_gpu)
            elif bench == "sweep":
                bench_sweep(args, emit, on_gpu)
            elif bench == "devices":
                bench_devices(args, emit, on_gpu)
            elif bench == "purejaxrl":
                bench_purejaxrl(args, emit, on_cpu)
        except Exception as e:
            emit({"bench": bench, "impl": "jaxlearn", "error": error_text(e)})
            traceback.print_exc()
    log(f"done: {len(emit.rows)} rows, {emit.errors} error(s)")
    return 1 if emit.errors else 0


if __name__ == "__main__":
    sys.exit(main())
