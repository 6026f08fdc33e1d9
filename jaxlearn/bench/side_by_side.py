"""jaxlearn and PureJaxRL on identical configs, back to back, in interleaved rounds.

PureJaxRL runs from the user's clone in its own virtual environment, as a long-lived
subprocess (`scripts/peers/purejaxrl_bench.py`, a line-based JSON server), so that both sides
compile once and time the same thing each round: AOT-compile `jax.jit(train)` for one key,
run it once to warm up, then time one more run per round with `jax.block_until_ready`. The
order alternates (jaxlearn first in even rounds, PureJaxRL first in odd ones), so drift in
the machine's load falls on both sides; each round gives one ratio of env steps per second,
and the median and spread over rounds are what the bench reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from jaxlearn.bench.purejaxrl import CONFIGS, summarise

FINAL_FRACTION = 0.05


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) of process `pid`, from Linux's /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class PeerError(RuntimeError):
    """The peer process failed, timed out, stalled or answered with an error."""


class PeerServer:
    """A peer script in its own interpreter that answers one JSON line per command line."""

    def __init__(self, cmd: list[str], timeout: float, stall_seconds: float, cwd: str):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.timeout = timeout
        self.stall_seconds = stall_seconds
        self.lines: queue.Queue = queue.Queue()
        self.err_tail: list[str] = []
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=cwd,
            )
        except OSError as e:
            raise PeerError(f"could not start {cmd[0]}: {e}") from None
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except json.JSONDecodeError:
                    pass
        self.lines.put(None)  # end of output

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.err_tail = (self.err_tail + [line])[-15:]
            sys.stderr.write(line)
            sys.stderr.flush()

    def receive(self, event: str) -> dict[str, Any]:
        """The next JSON object, which must be `event`; waits for it with a timeout and, when
        `stall_seconds > 0`, fails if the peer uses no CPU for that long."""
        start = time.monotonic()
        mark = (start, cpu_seconds(self.proc.pid) or 0.0)
        while True:
            try:
                row = self.lines.get(timeout=1.0)
            except queue.Empty:
                now, cpu = time.monotonic(), cpu_seconds(self.proc.pid)
                if now - start > self.timeout:
                    raise PeerError(f"peer gave no {event!r} within {self.timeout:.0f}s") from None
                if self.stall_seconds > 0 and cpu is not None:
                    if cpu - mark[1] > 0.01 * (now - mark[0]) + 0.5:
                        mark = (now, cpu)
                    elif now - mark[0] > self.stall_seconds:
                        raise PeerError(
                            f"peer used no CPU for {self.stall_seconds:.0f}s waiting for {event!r}"
                        ) from None
                continue
            if row is None:
                self.proc.wait(10)
                tail = "".join(self.err_tail).strip()
                raise PeerError(f"peer exited with status {self.proc.returncode}: {tail}")
            if row.get("event") == "error":
                raise PeerError(f"peer: {row.get('error')}")
            if row.get("event") == event:
                return row

    def request(self, command: str, event: str) -> dict[str, Any]:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise PeerError(f"peer closed its input: {e}") from None
        return self.receive(event)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class JaxlearnRunner:
    """jaxlearn's public `make_train` for one algo and config, compiled for one key."""

    def __init__(self, algo: str, kwargs: dict[str, Any], seed: int):
        from jaxlearn.algos import dqn, ppo

        module = ppo if algo == "ppo" else dqn
        config_class = module.PPOConfig if algo == "ppo" else module.DQNConfig
        self.config = config_class(**kwargs)
        self.train = module.make_train(self.config)  # the public entry point users call
        learner = module.make_learner(self.config)  # only for the run's exact env steps
        self.env_steps = learner.num_updates * learner.env_steps_per_update
        self.seed = seed
        self.compiled = None
        self.key = None

    def prepare(self) -> dict[str, Any]:
        import jax

        self.key = jax.block_until_ready(jax.random.key(self.seed))
        t0 = time.perf_counter()
        self.compiled = jax.jit(self.train).lower(self.key).compile()
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(self.compiled(self.key))
        return {"compile_seconds": compile_seconds, "warm_run_seconds": time.perf_counter() - t0}

    def run(self) -> dict[str, Any]:
        import jax
        import numpy as np

        c0, t0 = time.process_time(), time.perf_counter()
        state, metrics = jax.block_until_ready(self.compiled(self.key))
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        metrics = {k: np.asarray(v)[None] for k, v in metrics.items()}
        ret = final_returns(metrics, FINAL_FRACTION)[0]
        return {
            "run_seconds": seconds,
            "cpu_seconds": cpu,
            "total_env_steps": self.env_steps,
            "env_steps_per_second": self.env_steps / seconds,
            "final_return_mean": None if np.isnan(ret) else float(ret),
            "final_return_kind": f"training episodes, last {FINAL_FRACTION:.0%} of updates",
            "grad_updates": adam_count(state.opt_state),
        }


def final_returns(metrics: dict[str, Any], fraction: float) -> Any:
    """`[num_seeds]` mean training return over the last `fraction` of updates (the library's
    own reducer, `jaxlearn.sinks.final_returns`)."""
    from jaxlearn.sinks import final_returns as reduce

    return reduce(metrics, fraction)


def adam_count(opt_state: Any) -> int | None:
    """Gradient steps applied: the `count` of the first Adam state in `opt_state`."""
    import jax
    import numpy as np
    import optax

    def is_adam(x):
        return isinstance(x, optax.ScaleByAdamState)

    adam = [x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x)]
    return int(np.asarray(adam[0].count)) if adam else None


def run_side_by_side(
    *,
    clone: str,
    peer_python: str,
    driver: str,
    algos: list[str],
    rounds: int,
    seed: int,
    emit: Callable[[dict[str, Any]], dict[str, Any]],
    log: Callable[[str], None],
    timeout: float,
    stall_seconds: float,
    cwd: str,
    watch: Callable[[dict[str, Any]], contextlib.AbstractContextManager] | None = None,
) -> list[dict[str, Any]]:
    """Run both sides `rounds` times per algo, interleaved; emit rows; return summary rows.

    `watch(row)` wraps each of jaxlearn's compiled calls (the bench's stall watchdog: it ends
    the process with an error row if the call stops using the CPU); the peer's calls are
    watched by `PeerServer` itself."""
    cmd = [peer_python, driver, "--clone", clone, "--algos", ",".join(algos), "--seed", str(seed)]
    log(f"purejaxrl: {' '.join(cmd)}")
    peer = PeerServer(cmd, timeout, stall_seconds, cwd)
    try:
        return _rounds(peer, algos, rounds, seed, emit, log, watch or _unwatched)
    finally:
        peer.close()


def _unwatched(row: dict[str, Any]) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _rounds(peer, algos, rounds, seed, emit, log, watch) -> list[dict[str, Any]]:
    theirs: dict[str, dict[str, Any]] = {}
    for _ in algos:
        row = peer.receive("config")
        theirs[row["algo"]] = row
    ours: dict[str, JaxlearnRunner] = {}
    base: dict[str, dict[str, Any]] = {}
    for algo in algos:
        kwargs, not_mapped = CONFIGS[algo](theirs[algo]["config"])
        ours[algo] = JaxlearnRunner(algo, kwargs, seed)
        base[algo] = {"bench": "purejaxrl", "algo": algo, "env": kwargs.get("env")}
        emit(
            {
                **base[algo],
                "impl": "config",
                "purejaxrl_script": theirs[algo]["script"],
                "purejaxrl_config": theirs[algo]["config"],
                "purejaxrl_quiet_overrides": theirs[algo]["quiet_overrides"],
                "jaxlearn_config": kwargs,
                "not_mapped": not_mapped,
                "seed": seed,
                "purejaxrl_versions": {
                    k: v for k, v in theirs[algo].items() if k.endswith("_version")
                },
                "purejaxrl_compat_shims": theirs[algo]["compat_shims"],
            }
        )
    ready: dict[tuple[str, str], dict[str, Any]] = {}
    for algo in algos:
        log(f"purejaxrl bench: compiling and warming up jaxlearn {algo}")
        with watch({**base[algo], "impl": "jaxlearn", "phase": "prepare"}):
            ready[algo, "jaxlearn"] = ours[algo].prepare()
        log(f"purejaxrl bench: compiling and warming up PureJaxRL {algo}")
        ready[algo, "purejaxrl"] = peer.request(f"prepare {algo}", "ready")
        for impl in ("jaxlearn", "purejaxrl"):
            r = ready[algo, impl]
            emit(
                {
                    **base[algo],
                    "impl": impl,
                    "phase": "prepare",
                    "compile_seconds": r["compile_seconds"],
                    "warm_run_seconds": r["warm_run_seconds"],
                }
            )
    results: dict[tuple[str, str], list[dict[str, Any]]] = {
        (a, i): [] for a in algos for i in ("jaxlearn", "purejaxrl")
    }
    for r in range(rounds):
        for algo in algos:
            order = ("jaxlearn", "purejaxrl") if r % 2 == 0 else ("purejaxrl", "jaxlearn")
            for impl in order:
                log(f"purejaxrl bench: round {r + 1}/{rounds} {algo} {impl}")
                if impl == "jaxlearn":
                    with watch({**base[algo], "impl": impl, "round": r}):
                        got = ours[algo].run()
                else:
                    got = peer.request(f"run {algo}", "result")
                row = {
                    **base[algo],
                    "impl": impl,
                    "round": r,
                    "load_1min": os.getloadavg()[0],
                    **{k: got[k] for k in RESULT_KEYS},
                }
                results[algo, impl].append(emit(row))
    summaries = []
    for algo in algos:
        mine, peer_rows = results[algo, "jaxlearn"], results[algo, "purejaxrl"]
        ratios = [
            m["env_steps_per_second"] / p["env_steps_per_second"]
            for m, p in zip(mine, peer_rows, strict=True)
        ]
        # CPU seconds (all threads) of the same runs: on a loaded machine wall time also
        # measures when the scheduler let each side run; CPU time measures the work.
        cpu = summarise(
            [
                p["cpu_seconds"] / m["cpu_seconds"]
                for m, p in zip(mine, peer_rows, strict=True)
                if m.get("cpu_seconds") and p.get("cpu_seconds")
            ]
        )
        summary = {
            **base[algo],
            "impl": "ratio",
            "ratio": "jaxlearn / PureJaxRL env steps per second, per round",
            **summarise(ratios),
            "cpu_ratio": "PureJaxRL / jaxlearn CPU seconds of the same run, per round",
            **{f"cpu_{k}": v for k, v in cpu.items()},
            "load_1min": [m["load_1min"] for m in mine],
            "rounds": rounds,
            "jaxlearn_env_steps_per_second": [m["env_steps_per_second"] for m in mine],
            "purejaxrl_env_steps_per_second": [p["env_steps_per_second"] for p in peer_rows],
            "jaxlearn_total_env_steps": mine[-1]["total_env_steps"],
            "purejaxrl_total_env_steps": peer_rows[-1]["total_env_steps"],
            "jaxlearn_grad_updates": mine[-1]["grad_updates"],
            "purejaxrl_grad_updates": peer_rows[-1]["grad_updates"],
            "jaxlearn_compile_seconds": ready[algo, "jaxlearn"]["compile_seconds"],
            "purejaxrl_compile_seconds": ready[algo, "purejaxrl"]["compile_seconds"],
            "jaxlearn_final_return_mean": mine[-1]["final_return_mean"],
            "purejaxrl_final_return_mean": peer_rows[-1]["final_return_mean"],
            "jaxlearn_final_return_kind": mine[-1]["final_return_kind"],
            "purejaxrl_final_return_kind": peer_rows[-1]["final_return_kind"],
        }
        summaries.append(emit(summary))
    return summaries


RESULT_KEYS = (
    "run_seconds",
    "cpu_seconds",
    "total_env_steps",
    "env_steps_per_second",
    "final_return_mean",
    "final_return_kind",
    "grad_updates",
)


def table(summaries: list[dict[str, Any]]) -> str:
    """The summary rows as a small text table (for stderr)."""
    lines = [
        "algo  jaxlearn/PureJaxRL median [min, max] over rounds   env steps/s (median)"
        "            final return jaxlearn | PureJaxRL   CPU-time ratio median [min, max]"
    ]
    for s in summaries:
        if s.get("ratio_median") is None:
            continue
        ours = sorted(s["jaxlearn_env_steps_per_second"])[len(s["ratios"]) // 2]
        theirs = sorted(s["purejaxrl_env_steps_per_second"])[len(s["ratios"]) // 2]
        lines.append(
            f"{s['algo']:<5} {s['ratio_median']:.2f} [{s['ratio_min']:.2f}, {s['ratio_max']:.2f}]"
            f" over {s['rounds']} rounds{'':<17} {ours / 1e3:,.1f}k vs {theirs / 1e3:,.1f}k"
            f"{'':<12} {_fmt(s['jaxlearn_final_return_mean'])} | "
            f"{_fmt(s['purejaxrl_final_return_mean'])}   {_ratio(s, 'cpu_')}"
        )
    return "\n".join(lines)


def _ratio(s: dict[str, Any], prefix: str) -> str:
    if s.get(f"{prefix}ratio_median") is None:
        return "n/a"
    return (
        f"{s[prefix + 'ratio_median']:.2f} "
        f"[{s[prefix + 'ratio_min']:.2f}, {s[prefix + 'ratio_max']:.2f}]"
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"
