"""Peers in their own virtual environments: rejax in `ppo_e2e`/`dqn_e2e`, and `purejaxrl`.

rejax 0.1.x and PureJaxRL pin the gymnax 0.0.9 API, so they run in a venv of their own
(`--setup-peers` makes it) as a subprocess, through the drivers in scripts/peers/ of the
checkout, on the same device. `bench_rejax` runs right after the matching jaxlearn run and
emits rejax's rows and one ratio row (jaxlearn env steps/s over rejax's) per seed count run
by both. `bench_purejaxrl` times jaxlearn against the user's PureJaxRL clone on its CartPole
configs in interleaved rounds (`jaxlearn.bench.side_by_side`). `run_peer` also runs the
`devices` bench's forced-CPU-devices child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from jaxlearn.bench.rows import ROOT, STALL_NOTE, Emitter, cpu_seconds, error_text, log, watched

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
# The drivers run with the peer venv's interpreter, so they stay scripts in the checkout
# (scripts/peers/), found beside the package as `python scripts/bench.py` always found them.
REJAX_SCRIPT = os.path.join(ROOT, "scripts", "peers", "rejax_bench.py")
PUREJAXRL_SCRIPT = os.path.join(ROOT, "scripts", "peers", "purejaxrl_bench.py")


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
# purejaxrl: the user's PureJaxRL clone against jaxlearn, interleaved rounds


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
