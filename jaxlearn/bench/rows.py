"""Rows, stall detection and timing, shared by every bench of `jaxlearn-bench`.

Measures nothing itself: `Emitter` prints the JSON rows (with the run's common fields, and
appended to `--out`), `memory_fields` reads the device and host memory peaks so far,
`compile_and_time` times an AOT-compiled function (compile, warm-up run, timed run), and the
`Watchdog` ends a run whose process makes no CPU progress on the CPU platform.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# The checkout jaxlearn is installed from (`pip install -e .`): the folder that holds
# jaxlearn/, experiments/ and scripts/peers/.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_NAME = "CartPole-v1"
FINAL_FRACTION = 0.05  # final_return_* average the last 5% of updates
EXPERIMENTS = {
    "ppo": os.path.join(ROOT, "experiments", "ppo_cartpole.yaml"),
    "dqn": os.path.join(ROOT, "experiments", "dqn_cartpole.yaml"),
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


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


WATCHDOG: Watchdog | None = None  # set by jaxlearn.cli.bench.main once the device is known


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
