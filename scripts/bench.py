#!/usr/bin/env python
"""Throughput benchmark of jaxlearn against its peers: one JSON object per line on stdout.

    python scripts/bench.py                      # everything, sizes chosen for the device
    python scripts/bench.py --quick              # small sizes (smoke tests, CI)
    python scripts/bench.py --only env_step,buffer --out bench.jsonl
    python scripts/bench.py --setup-peers        # venv with rejax + gymnax 0.0.9; prints its python
    python scripts/bench.py --only ppo_e2e --peer-python .bench-venvs/peers/bin/python

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
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import faulthandler
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
ENV_NAME = "CartPole-v1"
ENV_STEP_LENGTH = 1000  # steps per env in the env_step bench
FINAL_FRACTION = 0.05  # final_return_* average the last 5% of updates
QUICK_TIMESTEPS = 50_000
DEFAULT_PEER_VENV = os.path.join(".bench-venvs", "peers")
# rejax 0.1.x and PureJaxRL (ppo.py, dqn.py and the wrappers.py they import) need gymnax 0.0.9;
# the rest are what PureJaxRL's CartPole scripts import.
PEER_PACKAGES = (
    "rejax",
    "gymnax==0.0.9",
    "distrax",
    "flashbax",
    "chex",
    "wandb",
    "brax",
    "navix",
)
REJAX_SCRIPT = os.path.join(ROOT, "scripts", "peers", "rejax_bench.py")
PUREJAXRL_SCRIPT = os.path.join(ROOT, "scripts", "peers", "purejaxrl_bench.py")
PUREJAXRL_SCRIPTS = ("ppo.py", "dqn.py")
EXPERIMENTS = {
    "ppo": os.path.join(ROOT, "experiments", "ppo_cartpole.yaml"),
    "dqn": os.path.join(ROOT, "experiments", "dqn_cartpole.yaml"),
}
# Replay buffer bench: capacity, items added and sampled per op.
BUFFER_CAPACITY = 1_000_000
BUFFER_ADD = 128
BUFFER_SAMPLE = 4096
# Episodic memory bench: items stored (the constants of the query batch are with bench_memory).
MEMORY_CAPACITY = 1_000_000


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


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


def purejaxrl_file(clone: str, name: str) -> str | None:
    """Path of PureJaxRL's `name` in a clone (its purejaxrl/ folder, or the folder itself)."""
    for path in (os.path.join(clone, "purejaxrl", name), os.path.join(clone, name)):
        if os.path.isfile(path):
            return path
    return None


# ---------------------------------------------------------------------------------------------
# Rows


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Emitter:
    """Prints rows as JSON lines (and appends them to `--out`), adding the run's common fields."""

    def __init__(self, out: str | None, common: dict[str, Any]):
        self.out = out
        self.common = common
        self.rows: list[dict[str, Any]] = []
        self.errors = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        row = _clean({**row, **{k: v for k, v in self.common.items() if k not in row}})
        line = json.dumps(row, allow_nan=False)
        print(line, flush=True)
        if self.out:
            with open(self.out, "a") as f:
                f.write(line + "\n")
        self.rows.append(row)
        self.errors += "error" in row
        return row


def host_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def device_fields() -> dict[str, Any]:
    import jax

    d = jax.devices()[0]
    return {
        "device": d.device_kind,
        "platform": d.platform,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
    }


def memory_fields() -> dict[str, Any]:
    """Process-wide peaks so far (device allocator and host RSS), as the brief defines them."""
    import jax

    peak = None
    try:
        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            peak = int(stats["peak_bytes_in_use"])
    except Exception:  # some backends do not implement memory_stats
        peak = None
    return {
        "peak_device_memory_bytes": peak,
        "host_peak_rss_bytes": host_peak_rss_bytes(),
        "host_load_1min": os.getloadavg()[0],
    }


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}{'+dirty' if dirty else ''}" if rev else None


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


# ---------------------------------------------------------------------------------------------
# Stall detection. XLA's CPU runtime can wedge intermittently on vmapped graphs (seen here with
# jax 0.10.2: every worker thread idle, the caller blocked for good in block_until_ready;
# XLA_FLAGS=--xla_cpu_multi_thread_eigen=false avoids it). A wedged run uses no CPU, so on the
# CPU platform a run whose process makes no CPU progress for `--stall-seconds` is reported as
# an error row instead of hanging the command (or a CI job) forever.

STALL_NOTE = (
    "no CPU progress: XLA's CPU runtime looks wedged (known intermittent hang on vmapped graphs; "
    "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false avoids it)"
)


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system, all threads) of this process or of `pid` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Watchdog:
    """Ends the process with an error row if an armed section stops using the CPU."""

    def __init__(self, emit: Emitter, stall_seconds: float, enabled: bool):
        self.emit = emit
        self.stall_seconds = stall_seconds
        self.enabled = enabled and stall_seconds > 0
        self.what: dict[str, Any] | None = None
        self.mark = (0.0, 0.0)  # (wall, cpu) of the last observed progress
        if self.enabled:
            threading.Thread(target=self._loop, daemon=True).start()

    def arm(self, what: dict[str, Any]) -> None:
        self.mark = (time.monotonic(), time.process_time())
        self.what = what

    def disarm(self) -> None:
        self.what = None

    def _loop(self) -> None:
        while True:
            time.sleep(min(5.0, self.stall_seconds / 4))
            what = self.what
            if what is None:
                continue
            wall, cpu = time.monotonic(), time.process_time()
            if cpu - self.mark[1] > 0.01 * (wall - self.mark[0]) + 0.5:
                self.mark = (wall, cpu)
            elif wall - self.mark[0] > self.stall_seconds:
                log(f"stalled for {self.stall_seconds:.0f}s in {what}; Python stacks follow")
                faulthandler.dump_traceback(all_threads=True)
                self.emit({**what, "error": f"{STALL_NOTE}; stalled {self.stall_seconds:.0f}s"})
                sys.stdout.flush()
                os._exit(3)


WATCHDOG: Watchdog | None = None


# ---------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class Timed:
    output: Any
    compile_seconds: float
    run_seconds: float
    compiled_peak_memory_bytes: int | None


def compile_and_time(
    fn: Callable,
    make_args: Callable[[], tuple],
    donate_argnums: tuple[int, ...] = (),
    what: dict[str, Any] | None = None,
) -> Timed:
    """AOT-compile `fn`, run it once to warm up, then time a second run.

    `make_args()` builds fresh inputs (ready on the device before the clock starts), so donated
    arguments can be rebuilt for the timed run. `what` names the row for the stall watchdog.
    """
    if WATCHDOG is not None:
        WATCHDOG.arm(what or {"bench": "unknown"})
    try:
        return _compile_and_time(fn, make_args, donate_argnums)
    finally:
        if WATCHDOG is not None:
            WATCHDOG.disarm()


def _compile_and_time(
    fn: Callable, make_args: Callable[[], tuple], donate_argnums: tuple[int, ...]
) -> Timed:
    import jax

    args = jax.block_until_ready(make_args())
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    compile_seconds = time.perf_counter() - t0
    try:
        peak = int(compiled.memory_analysis().peak_memory_in_bytes)
    except Exception:  # not every backend reports it
        peak = None
    jax.block_until_ready(compiled(*args))  # warm-up run
    if donate_argnums:
        args = jax.block_until_ready(make_args())
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    run_seconds = time.perf_counter() - t0
    return Timed(out, compile_seconds, run_seconds, peak)


def timing_fields(t: Timed) -> dict[str, Any]:
    return {
        "run_seconds": t.run_seconds,
        "compile_seconds": t.compile_seconds,
        "compiled_peak_memory_bytes": t.compiled_peak_memory_bytes,
    }


# ---------------------------------------------------------------------------------------------
# env_step


def random_stepper(step: Callable, num_envs: int, num_actions: int, num_steps: int) -> Callable:
    """`run(state, obs, key)`: `num_steps` random-action steps of `num_envs` envs in one scan.

    The last observation, per-env reward sums and done counts are carried and returned, so XLA
    cannot drop any output of `step`.
    """
    import jax
    import jax.numpy as jnp

    def run(state, obs, key):
        def body(carry, k):
            state, obs, reward_sum, done_count = carry
            k_act, k_env = jax.random.split(k)
            action = jax.random.randint(k_act, (num_envs,), 0, num_actions)
            obs, state, reward, terminated, truncated, _ = step(k_env, state, action)
            done = jnp.logical_or(terminated, truncated).astype(jnp.int32)
            return (state, obs, reward_sum + reward, done_count + done), None

        zeros = jnp.zeros(num_envs, jnp.float32)
        carry = (state, obs, zeros, zeros.astype(jnp.int32))
        carry, _ = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
        return carry

    return run


def bench_env_step(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    import gymnax
    import jax

    from jaxlearn.envs import make_vec

    if args.env_counts:
        counts = args.env_counts
    elif on_gpu and not args.quick:
        counts = [1024, 16384, 131072, 1048576]
    else:
        counts = [1024, 16384]
    gym_env, gym_params = gymnax.make(ENV_NAME)
    num_actions = int(gym_env.action_space(gym_params).n)

    for n in counts:
        total = n * ENV_STEP_LENGTH
        base = {"bench": "env_step", "env": ENV_NAME, "num_envs": n, "num_steps": ENV_STEP_LENGTH}

        # Raw gymnax (the peer, in this process: we share gymnax 1.0.1).
        def gym_step(k, s, a, n=n):
            keys = jax.random.split(k, n)
            return jax.vmap(gym_env.step, in_axes=(0, 0, 0, None))(keys, s, a, gym_params)

        def gym_reset(key, n=n):
            keys = jax.random.split(key, n)
            return jax.vmap(gym_env.reset, in_axes=(0, None))(keys, gym_params)

        # jaxlearn's training stack: EpisodeStats -> VecEnv.
        vec_env, vec_params = make_vec(ENV_NAME, n)

        def vec_step(k, s, a, vec_env=vec_env, vec_params=vec_params):
            return vec_env.step(k, s, a, vec_params)

        def vec_reset(key, vec_env=vec_env, vec_params=vec_params):
            return vec_env.reset(key, vec_params)

        results = {}
        for impl, reset, step, stack in (
            ("gymnax", gym_reset, gym_step, "gymnax.make + jax.vmap"),
            ("jaxlearn", vec_reset, vec_step, "make_vec: EpisodeStats -> VecEnv"),
        ):
            log(f"env_step {impl} {n} envs x {ENV_STEP_LENGTH} steps")
            reset_fn = jax.jit(reset)

            def make_args(reset_fn=reset_fn):
                obs, state = reset_fn(jax.random.key(0))
                return state, obs, jax.random.key(1)

            try:
                stepper = random_stepper(step, n, num_actions, ENV_STEP_LENGTH)
                t = compile_and_time(stepper, make_args, what={**base, "impl": impl})
            except Exception as e:
                emit({**base, "impl": impl, "error": error_text(e)})
                traceback.print_exc()
                continue
            sps = total / t.run_seconds
            results[impl] = t
            row = {
                **base,
                "impl": impl,
                "stack": stack,
                "total_env_steps": total,
                **timing_fields(t),
                "env_steps_per_second": sps,
                **memory_fields(),
            }
            if impl == "jaxlearn" and "gymnax" in results:
                g = results["gymnax"]
                row["ratio_vs_gymnax"] = g.run_seconds / t.run_seconds
                row["wrapper_overhead_fraction"] = t.run_seconds / g.run_seconds - 1.0
            emit(row)
            del t


# ---------------------------------------------------------------------------------------------
# ppo_e2e / dqn_e2e


def count_optimizer_steps(state: Any) -> int | None:
    """Gradient updates done, read from the first Adam state's `count` (seed 0), if any."""
    import jax
    import numpy as np
    import optax

    adam = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(x, optax.ScaleByAdamState)
    ]
    if not adam:
        return None
    return int(np.asarray(adam[0].count).reshape(-1)[0])


def algo_config(algo: str, quick: bool, timesteps: int | None = None) -> tuple[Any, Any, str]:
    """(run_cfg, algo_cfg, config_file) from experiments/{algo}_cartpole.yaml (+ quick budget,
    or `timesteps` env steps per seed when given)."""
    from jaxlearn.runner import resolve_config

    path = EXPERIMENTS[algo]
    overrides = {"total_timesteps": QUICK_TIMESTEPS} if quick else {}
    if timesteps is not None:
        overrides = {"total_timesteps": timesteps}
    run_cfg, cfg = resolve_config(config_file=path, overrides=overrides)
    return run_cfg, cfg, path


def bench_algo(
    algo: str, seeds: list[int], args: argparse.Namespace, emit: Emitter
) -> list[dict[str, Any]]:
    """Train `algo` end to end (one jit) for each seed count; returns the jaxlearn rows."""
    import jax
    import numpy as np

    from jaxlearn.algos import ALGOS, make_train_fn
    from jaxlearn.bench.side_by_side import final_returns
    from jaxlearn.config import to_dict

    bench = f"{algo}_e2e"
    timesteps = args.dqn_timesteps if algo == "dqn" else args.ppo_timesteps
    run_cfg, cfg, path = algo_config(algo, args.quick, timesteps)
    _, make_learner = ALGOS[algo]
    learner = make_learner(cfg)
    train = make_train_fn(learner)
    steps_per_seed = learner.num_updates * learner.env_steps_per_update
    config = to_dict(cfg)
    rows = []
    for num_seeds in seeds:
        log(f"{bench} jaxlearn {num_seeds} seed(s) x {steps_per_seed:,} env steps")
        base = {
            "bench": bench,
            "impl": "jaxlearn",
            "env": cfg.env,
            "num_seeds": num_seeds,
            "config_file": os.path.relpath(path, ROOT),
        }
        if num_seeds == 1:
            fn, make_args = train, lambda: (jax.random.key(run_cfg.seed),)
        else:
            fn = jax.vmap(train)
            make_args = lambda s=num_seeds: (jax.random.split(jax.random.key(run_cfg.seed), s),)
        try:
            t = compile_and_time(fn, make_args, what=base)
        except Exception as e:
            emit({**base, "error": error_text(e)})
            traceback.print_exc()
            continue
        state, metrics = t.output
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        if num_seeds == 1:
            metrics = {k: v[None] for k, v in metrics.items()}
        per_seed = final_returns(metrics, FINAL_FRACTION)
        grad_updates = count_optimizer_steps(state)
        total = num_seeds * steps_per_seed
        row = {
            **base,
            "total_timesteps": steps_per_seed,
            "num_updates": learner.num_updates,
            "env_steps_per_update": learner.env_steps_per_update,
            "total_env_steps": total,
            **timing_fields(t),
            "env_steps_per_second": total / t.run_seconds,
            "env_steps_per_second_per_agent": steps_per_seed / t.run_seconds,
            "final_return_mean": float(np.nanmean(per_seed)) if per_seed.size else None,
            "final_return_min": float(np.nanmin(per_seed)) if per_seed.size else None,
            "final_return_kind": f"training episodes, last {FINAL_FRACTION:.0%} of updates",
            "grad_updates_per_seed": grad_updates,
            "grad_updates_per_env_step": (
                grad_updates / steps_per_seed if grad_updates is not None else None
            ),
            **memory_fields(),
            "config": config,
        }
        rows.append(emit(row))
        del t, state, metrics
    return rows


def skip_reason_dqn() -> str | None:
    from jaxlearn.algos import ALGOS

    if "dqn" not in ALGOS:
        return f"'dqn' is not in jaxlearn.algos.ALGOS (has: {', '.join(sorted(ALGOS))})"
    if not os.path.isfile(EXPERIMENTS["dqn"]):
        return f"{os.path.relpath(EXPERIMENTS['dqn'], ROOT)} does not exist"
    return None


# ---------------------------------------------------------------------------------------------
# Peers in their own venvs (rejax)


def _tee(stream, sink, keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        sink.write(line)
        sink.flush()


def run_peer(
    peer_python: str,
    script: str,
    peer_args: list[str],
    timeout: float,
    stall_seconds: float,
    env_extra: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Run a peer script in its own interpreter; returns (its JSON rows, error or None).

    The child's stderr is shown live and its tail kept for the error message. PYTHONPATH and
    VIRTUAL_ENV are dropped so that nothing of this venv leaks into the peer's; `env_extra`
    is added. With `stall_seconds > 0` (CPU platform) a child that uses no CPU for that long
    is killed.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(env_extra or {})
    cmd = [peer_python, script, *peer_args]
    log(f"peer: {' '.join(cmd[:3])} ...")
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
    except OSError as e:
        return [], f"could not start {peer_python}: {error_text(e)}"
    err_lines: list[str] = []
    out_lines: list[str] = []
    t_err = threading.Thread(target=_tee, args=(proc.stderr, sys.stderr, err_lines), daemon=True)
    t_out = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    t_err.start()
    t_out.start()
    start = time.monotonic()
    mark = (start, cpu_seconds(proc.pid) or 0.0)
    failure = None
    while proc.poll() is None:
        time.sleep(1.0)
        now, cpu = time.monotonic(), cpu_seconds(proc.pid)
        if now - start > timeout:
            failure = f"peer timed out after {timeout:.0f}s"
        elif stall_seconds > 0 and cpu is not None:
            if cpu - mark[1] > 0.01 * (now - mark[0]) + 0.5:
                mark = (now, cpu)
            elif now - mark[0] > stall_seconds:
                failure = f"peer stalled for {stall_seconds:.0f}s, {STALL_NOTE}"
        if failure:
            proc.kill()
            proc.wait()
            t_out.join(5)
            return _parse_rows(out_lines), failure
    t_err.join(5)
    t_out.join(5)
    rows = _parse_rows(out_lines)
    if proc.returncode != 0:
        tail = "".join(err_lines[-15:]).strip()
        return rows, f"peer exited with status {proc.returncode}: {tail}"
    if not rows:
        return rows, "peer printed no JSON rows; stderr tail: " + "".join(err_lines[-15:]).strip()
    return rows, None


def _parse_rows(lines: list[str]) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log(f"peer printed a line that is not JSON: {line[:200]}")
    return rows


def bench_rejax(
    algo: str,
    seeds: list[int],
    ours: list[dict[str, Any]],
    args: argparse.Namespace,
    emit: Emitter,
) -> None:
    """rejax on the same config as our rows, then one ratio row per seed count run by both."""
    bench = f"{algo}_e2e"
    if not args.peer_python:
        hint = DEFAULT_PEER_VENV + "/bin/python"
        emit(
            {
                "bench": bench,
                "impl": "rejax",
                "skipped": "--peer-python not given (create one with --setup-peers; "
                f"default interpreter {hint})",
            }
        )
        return
    if not ours:
        emit({"bench": bench, "impl": "rejax", "skipped": "no jaxlearn row to compare against"})
        return
    ref = ours[0]
    spec = {
        "config": ref["config"],
        "num_updates": ref["num_updates"],
        "env_steps_per_update": ref["env_steps_per_update"],
        "total_timesteps": ref["total_timesteps"],
        "grad_updates_per_env_step": ref.get("grad_updates_per_env_step"),
        "seed": 0,
    }
    peer_args = [
        "--algo",
        algo,
        "--spec",
        json.dumps(spec),
        "--seeds",
        ",".join(str(s) for s in seeds),
    ]
    stall = args.stall_seconds if args.platform == "cpu" else 0.0
    rows, err = run_peer(args.peer_python, REJAX_SCRIPT, peer_args, args.peer_timeout, stall)
    peer_rows = []
    for row in rows:
        row = {**row, "bench": bench, "impl": "rejax"}
        peer_rows.append(emit(row))
    if err is not None:
        emit({"bench": bench, "impl": "rejax", "skipped": err})
    by_seeds = {r["num_seeds"]: r for r in ours if "env_steps_per_second" in r}
    for peer in peer_rows:
        mine = by_seeds.get(peer.get("num_seeds"))
        if mine is None or not peer.get("env_steps_per_second"):
            continue
        if (peer.get("platform"), peer.get("device")) != (mine["platform"], mine["device"]):
            emit(
                {
                    "bench": bench,
                    "impl": "ratio",
                    "num_seeds": mine["num_seeds"],
                    "skipped": f"rejax ran on {peer.get('device')} ({peer.get('platform')}), "
                    f"jaxlearn on {mine['device']} ({mine['platform']}): not comparable; "
                    "install the peer venv's jax for this device (--setup-peers does when a "
                    "jax CUDA plugin is installed here)",
                }
            )
            continue
        ratio = {
            "bench": bench,
            "impl": "ratio",
            "env": mine["env"],
            "num_seeds": mine["num_seeds"],
            "ratio_vs_rejax": mine["env_steps_per_second"] / peer["env_steps_per_second"],
            "jaxlearn_env_steps_per_second": mine["env_steps_per_second"],
            "rejax_env_steps_per_second": peer["env_steps_per_second"],
            "jaxlearn_total_env_steps": mine["total_env_steps"],
            "rejax_total_env_steps": peer.get("total_env_steps"),
            "jaxlearn_grad_updates_per_env_step": mine.get("grad_updates_per_env_step"),
            "rejax_grad_updates_per_env_step": peer.get("grad_updates_per_env_step"),
            "equal_grad_updates_per_env_step": _close(
                mine.get("grad_updates_per_env_step"), peer.get("grad_updates_per_env_step")
            ),
            "jaxlearn_final_return_mean": mine.get("final_return_mean"),
            "rejax_final_return_mean": peer.get("final_return_mean"),
            "comparison": (
                "same process command, back to back on the same device; jaxlearn's return is "
                "over training episodes, rejax's from rejax.evaluate after training"
            ),
        }
        emit(ratio)


def _close(a: float | None, b: float | None, rel: float = 0.01) -> bool | None:
    if a is None or b is None:
        return None
    return abs(a - b) <= rel * max(abs(a), abs(b))


def setup_peers(venv_dir: str) -> int:
    """Create `venv_dir` with rejax and gymnax 0.0.9 from PyPI; print its interpreter path."""
    import importlib.metadata

    venv_dir = os.path.abspath(venv_dir)
    python = os.path.join(venv_dir, "bin", "python")
    packages = list(PEER_PACKAGES)
    # The peer must run on the same device: if this venv's jax has a CUDA plugin, ask pip for
    # the same CUDA flavour of jax there (pip still picks the version rejax accepts).
    for cuda in ("cuda13", "cuda12"):
        try:
            importlib.metadata.version(f"jax-{cuda}-plugin")
        except importlib.metadata.PackageNotFoundError:
            continue
        packages.append(f"jax[{cuda}]")
        break
    steps = [
        [sys.executable, "-m", "venv", venv_dir],
        [python, "-m", "pip", "install", "--upgrade", "pip"],
        [python, "-m", "pip", "install", *packages],
        [
            python,
            "-c",
            "import importlib.metadata as m; "
            "print(' '.join(f'{p}=={m.version(p)}' for p in "
            "('rejax', 'gymnax', 'jax', 'jaxlib', 'flax', 'optax', 'distrax')))",
        ],
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for cmd in steps:
        log("$ " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        noisy = ("is ignored: it is neither a file nor a directory",)
        for line in (proc.stdout + proc.stderr).splitlines():
            if not any(n in line for n in noisy):
                print(line, file=sys.stderr)
        if proc.returncode != 0:
            tail = "\n".join(
                ln for ln in proc.stderr.splitlines() if not any(n in ln for n in noisy)
            )[-2000:]
            row = {
                "bench": "setup_peers",
                "impl": "rejax",
                "skipped": f"`{' '.join(cmd)}` failed with status {proc.returncode}: {tail}",
            }
            print(json.dumps(row))
            return 1
    print(python)
    return 0


# ---------------------------------------------------------------------------------------------
# buffer

BUFFER_ITEM_DOC = (
    "obs [4] f32, action i32, reward f32, next_obs [4] f32, terminated bool, truncated bool"
)


def buffer_item():
    import jax.numpy as jnp

    return {
        "obs": jnp.zeros(4, jnp.float32),
        "action": jnp.int32(0),
        "reward": jnp.float32(0.0),
        "next_obs": jnp.zeros(4, jnp.float32),
        "terminated": jnp.bool_(False),
        "truncated": jnp.bool_(False),
    }


def buffer_batch(op, n: int):
    """The `n` items of add number `op`: cheap arithmetic, the same for every implementation."""
    import jax.numpy as jnp

    ids = op * n + jnp.arange(n, dtype=jnp.int32)
    f = ids.astype(jnp.float32)
    return {
        "obs": f[:, None] + jnp.arange(4, dtype=jnp.float32),
        "action": ids % 2,
        "reward": f * 0.5,
        "next_obs": f[:, None] - jnp.arange(4, dtype=jnp.float32),
        "terminated": ids % 97 == 0,
        "truncated": ids % 101 == 0,
    }


def checksum(tree):
    """Sum of every leaf as float32, so no sampled read can be dropped."""
    import jax
    import jax.numpy as jnp

    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(tree))


def buffer_ops(add: Callable, sample: Callable, num_ops: int, first_op: int) -> Callable:
    """`run(state, key)`: `num_ops` x (add BUFFER_ADD items, sample) in one scan."""
    import jax
    import jax.numpy as jnp

    def run(state, key):
        def body(carry, op):
            state, acc = carry
            state = add(state, buffer_batch(op, BUFFER_ADD))
            drawn = sample(state, jax.random.fold_in(key, op))
            return (state, acc + checksum(drawn)), None

        ops = first_op + jnp.arange(num_ops, dtype=jnp.int32)
        return jax.lax.scan(body, (state, jnp.float32(0.0)), ops)[0]

    return run


def filled_state_maker(init: Callable, add: Callable) -> tuple[Callable, int]:
    """`make_args()` -> (a full buffer state, key), and the number of adds that filled it."""
    import jax

    num_fill = math.ceil(BUFFER_CAPACITY / BUFFER_ADD)

    def fill(state):
        return jax.lax.fori_loop(
            0, num_fill, lambda i, s: add(s, buffer_batch(i, BUFFER_ADD)), state
        )

    fill = jax.jit(fill, donate_argnums=0)

    def make_args():
        return fill(init(buffer_item())), jax.random.key(0)

    return make_args, num_fill


def bench_buffer(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    from jaxlearn.buffers import prioritized_buffer, uniform_buffer

    num_ops = args.buffer_ops or (10_000 if on_gpu and not args.quick else 1_000)
    items_per_op = BUFFER_ADD + BUFFER_SAMPLE
    base = {
        "bench": "buffer",
        "capacity": BUFFER_CAPACITY,
        "add_batch_size": BUFFER_ADD,
        "sample_batch_size": BUFFER_SAMPLE,
        "num_ops": num_ops,
        "item": BUFFER_ITEM_DOC,
        "items_per_op": items_per_op,
        "items_definition": "items added + items sampled",
        "prefilled": True,
        "state_donated": True,
    }

    def measure(impl: str, kind: str, init, add, sample, extra=None) -> dict[str, Any] | None:
        log(f"buffer {impl} {kind}: {num_ops} ops")
        make_args, num_fill = filled_state_maker(init, add)
        fn = buffer_ops(add, sample, num_ops, first_op=num_fill)
        what = {**base, "impl": impl, "kind": kind}
        t = compile_and_time(fn, make_args, donate_argnums=(0,), what=what)
        row = {
            **base,
            "impl": impl,
            "kind": kind,
            **(extra or {}),
            **timing_fields(t),
            "ops_per_second": num_ops / t.run_seconds,
            "items_per_second": num_ops * items_per_op / t.run_seconds,
            **memory_fields(),
        }
        del t
        return row

    # flashbax first (if importable here), so our rows can carry the ratios: its item
    # buffer against our uniform one, its prioritised item buffer against our prioritized.
    flashbax_rows: dict[str, dict[str, Any]] = {}
    try:
        import flashbax
    except ImportError as e:
        emit(
            {
                **base,
                "impl": "flashbax",
                "kind": "item",
                "skipped": f"flashbax is not importable in this venv ({error_text(e)}); "
                "install the 'bench' extra: pip install -e '.[bench]'",
            }
        )
    else:
        import importlib.metadata

        version = getattr(flashbax, "__version__", None) or importlib.metadata.version("flashbax")
        peers = (
            ("uniform", "item", "make_item_buffer", {}),
            (
                "prioritized",
                "prioritised_item",
                "make_prioritised_item_buffer",
                {"priority_exponent": 0.6, "device": "gpu" if on_gpu else "cpu"},
            ),
        )
        for ours, kind, api, kwargs in peers:
            try:
                fbx = getattr(flashbax, api)(
                    max_length=BUFFER_CAPACITY,
                    min_length=1,
                    sample_batch_size=BUFFER_SAMPLE,
                    add_sequences=False,
                    add_batches=True,
                    **kwargs,
                )
                row = measure(
                    "flashbax",
                    kind,
                    fbx.init,
                    fbx.add,
                    fbx.sample,
                    {"flashbax_version": version, "api": f"flashbax.{api}"},
                )
                emit(row)
                flashbax_rows[ours] = row
            except Exception as e:
                emit({**base, "impl": "flashbax", "kind": kind, "skipped": error_text(e)})
                traceback.print_exc()

    uni = uniform_buffer(BUFFER_CAPACITY, BUFFER_SAMPLE, add_batch_size=BUFFER_ADD)
    pri = prioritized_buffer(BUFFER_CAPACITY, BUFFER_SAMPLE, add_batch_size=BUFFER_ADD)
    for kind, buf in (("uniform", uni), ("prioritized", pri)):
        try:
            row = measure("jaxlearn", kind, buf.init, buf.add, buf.sample)
        except Exception as e:
            emit({**base, "impl": "jaxlearn", "kind": kind, "error": error_text(e)})
            traceback.print_exc()
            continue
        if kind == "prioritized":
            row["note"] = "add + sample only (no update_priorities)"
        if kind in flashbax_rows:
            row["ratio_vs_flashbax"] = row["ops_per_second"] / flashbax_rows[kind]["ops_per_second"]
        emit(row)


# ---------------------------------------------------------------------------------------------
# memory

MEMORY_QUERIES = 256  # query states per retrieval batch
MEMORY_K = 5
MEMORY_EMBED_DIM = 64
MEMORY_GPU_TARGET_MS = 100.0  # issue 9: well under this per batch on a GPU


def bench_memory(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    """Episodic-memory retrieval latency: a full store, batches of 256 queries, k = 5, exact
    and approximate (`jaxlearn.memory`); the approximate row carries its recall against exact.
    """
    import jax
    import jax.numpy as jnp

    from jaxlearn.memory import SCORES_PER_CHUNK, episodic_memory, recall

    capacity = args.memory_capacity or (65_536 if args.quick else MEMORY_CAPACITY)
    num_batches = 2 if args.quick else (50 if on_gpu else 3)
    memory = episodic_memory(capacity, MEMORY_EMBED_DIM, metric="l2")
    log(f"memory: filling {capacity:,} items")
    keys = jax.random.normal(jax.random.key(0), (capacity, MEMORY_EMBED_DIM), jnp.float32)
    state = jax.block_until_ready(
        jax.jit(memory.add)(memory.init(buffer_item()), buffer_batch(0, capacity), keys)
    )
    del keys
    # Queries near stored keys (a stored key plus noise), as a learner's states would be.
    picks = jax.random.randint(jax.random.key(1), (num_batches, MEMORY_QUERIES), 0, capacity)
    noise = jax.random.normal(jax.random.key(2), (num_batches, MEMORY_QUERIES, MEMORY_EMBED_DIM))
    queries = jax.block_until_ready(state.keys[picks] + 0.3 * noise)
    base = {
        "bench": "memory",
        "impl": "jaxlearn",
        "capacity": capacity,
        "num_queries": MEMORY_QUERIES,
        "k": MEMORY_K,
        "embed_dim": MEMORY_EMBED_DIM,
        "metric": "l2",
        "item": BUFFER_ITEM_DOC,
        "num_batches": num_batches,
        "chunk_size": min(SCORES_PER_CHUNK // MEMORY_QUERIES, capacity),
        "queries": "stored keys plus N(0, 0.3^2) noise",
    }

    def batches(approximate: bool) -> Callable:
        def run(state, queries):
            def body(acc, q):
                out = memory.retrieve(state, q, MEMORY_K, approximate=approximate)
                return acc + checksum((out.experience, out.scores)), out.indices

            return jax.lax.scan(body, jnp.float32(0.0), queries)

        return run

    indices = {}
    for kind in ("exact", "approximate"):
        approximate = kind == "approximate"
        log(f"memory {kind}: {num_batches} batches of {MEMORY_QUERIES} queries, k={MEMORY_K}")
        what = {**base, "kind": kind}
        try:
            t = compile_and_time(batches(approximate), lambda: (state, queries), what=what)
        except Exception as e:
            emit({**what, "error": error_text(e)})
            traceback.print_exc()
            continue
        indices[kind] = t.output[1]
        latency_ms = 1e3 * t.run_seconds / num_batches
        row = {
            **what,
            **timing_fields(t),
            "latency_ms_per_batch": latency_ms,
            "queries_per_second": num_batches * MEMORY_QUERIES / t.run_seconds,
            **memory_fields(),
        }
        if approximate:
            row["approximation"] = (
                "default matmul precision; jax.lax.approx_max_k on TPU, lax.top_k elsewhere "
                "(JAX lowers approx_max_k to an exact sort off TPU)"
            )
            if "exact" in indices:
                flat = lambda x: x.reshape(-1, MEMORY_K)  # noqa: E731
                row["recall_vs_exact"] = float(recall(flat(indices[kind]), flat(indices["exact"])))
        if on_gpu:
            row["gpu_target_ms_per_batch"] = MEMORY_GPU_TARGET_MS
            row["within_gpu_target"] = latency_ms < MEMORY_GPU_TARGET_MS
        emit(row)
        del t


# ---------------------------------------------------------------------------------------------


def bench_sweep(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    """Trials per hour of a PPO CartPole sweep through `jaxlearn.sweep`: the same trials in
    batches of B (one vmapped call per batch) and one at a time (batch_size 1). Random
    sampler, no pruning, a throwaway sqlite study; compile time included, since a sweep
    pays it too (once per program: one for the batch, one for single trials)."""
    import tempfile

    from jaxlearn import sweep

    trials = args.sweep_trials or (2 if args.quick else 16)
    steps = 8_192 if args.quick else 100_000
    raw = {
        "base": EXPERIMENTS["ppo"],
        "config": {"total_timesteps": steps, "eval_episodes": 0},
        "num_trials": trials,
        "pruner": "none",
        "sampler": "random",
        "num_chunks": 4,
        "space": {
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
            "ent_coef": {"low": 0.0, "high": 0.05},
        },
    }
    rows = {}
    for mode, batch in (("batched", trials), ("one_at_a_time", 1)):
        base = {
            "bench": "sweep",
            "impl": "jaxlearn",
            "mode": mode,
            "algo": "ppo",
            "env": ENV_NAME,
            "trials": trials,
            "batch_size": batch,
            "total_timesteps_per_trial": steps,
        }
        log(f"sweep: {trials} PPO trials, {mode} (batch {batch})")
        try:
            spec = sweep.spec_from_dict({**raw, "batch_size": batch})
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                summary = sweep.run(spec, os.path.join(d, "sweep"), log=lambda s: None)
                wall = time.perf_counter() - t0
        except Exception as e:
            emit({**base, "error": error_text(e)})
            continue
        row = {
            **base,
            "wall_seconds": wall,
            "trials_per_hour": trials * 3600.0 / wall,
            "env_steps_per_second": trials * steps / wall,
            "compiles": summary["compiles"],
            "trials_complete": summary["trials"]["complete"],
            "best_final_return": summary.get("best", {}).get("value"),
            **memory_fields(),
        }
        rows[mode] = emit(row)
    if len(rows) == 2:
        emit(
            {
                "bench": "sweep",
                "impl": "ratio",
                "trials": trials,
                "batched_over_one_at_a_time": rows["batched"]["trials_per_hour"]
                / rows["one_at_a_time"]["trials_per_hour"],
            }
        )


# ---------------------------------------------------------------------------------------------
# devices: env steps/s against the number of devices

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
            os.path.abspath(__file__),
            child_args,
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


# ---------------------------------------------------------------------------------------------
# purejaxrl: the user's PureJaxRL clone against jaxlearn, interleaved rounds


@contextlib.contextmanager
def watched(what: dict[str, Any]):
    """The stall watchdog armed for the duration of the block (see compile_and_time)."""
    if WATCHDOG is not None:
        WATCHDOG.arm(what)
    try:
        yield
    finally:
        if WATCHDOG is not None:
            WATCHDOG.disarm()


def bench_purejaxrl(args: argparse.Namespace, emit: Emitter, on_cpu: bool) -> None:
    """PureJaxRL's ppo.py/dqn.py CartPole configs, both sides, `--rounds` interleaved rounds."""
    from jaxlearn.bench.side_by_side import PeerError, run_side_by_side, table

    try:
        summaries = run_side_by_side(
            clone=os.path.abspath(args.purejaxrl),
            peer_python=args.peer_python,
            driver=PUREJAXRL_SCRIPT,
            algos=["ppo", "dqn"],
            rounds=args.rounds,
            seed=args.bench_seed,
            emit=emit,
            log=log,
            timeout=args.peer_timeout,
            stall_seconds=args.stall_seconds if on_cpu else 0.0,
            cwd=ROOT,
            watch=watched,
        )
    except PeerError as e:
        emit({"bench": "purejaxrl", "impl": "purejaxrl", "error": str(e)})
        return
    log("jaxlearn against PureJaxRL, same configs, interleaved rounds:\n" + table(summaries))


# ---------------------------------------------------------------------------------------------


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
    global WATCHDOG
    WATCHDOG = Watchdog(emit, args.stall_seconds, enabled=on_cpu)
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
