"""Smoke test of scripts/bench.py: every stdout line is a JSON row with the required keys.

Timings are not asserted: they depend on the machine and its load. Only the shape of the
output and that each measured throughput is positive.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "scripts", "bench.py")

REQUIRED = (
    "bench",
    "impl",
    "run_id",
    "device",
    "platform",
    "jax_version",
    "run_seconds",
    "compile_seconds",
    "peak_device_memory_bytes",
    "host_peak_rss_bytes",
)
CONFIG = {
    "env_step": ("env", "num_envs", "num_steps", "total_env_steps"),
    "buffer": ("capacity", "add_batch_size", "sample_batch_size", "num_ops", "kind"),
    "memory": ("capacity", "num_queries", "k", "embed_dim", "num_batches", "kind"),
}
THROUGHPUT = {
    "env_step": ("env_steps_per_second",),
    "buffer": ("ops_per_second", "items_per_second"),
    "memory": ("latency_ms_per_batch", "queries_per_second"),
}


@pytest.mark.slow
def test_bench_quick_env_step_and_buffer(tmp_path):
    out_file = tmp_path / "bench.jsonl"
    # XLA's multi-threaded Eigen pool can wedge intermittently on vmapped graphs on CPU; this
    # test checks the output format, not speed, so it runs single-threaded Eigen.
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
    only = "env_step,buffer,memory"
    cmd = [sys.executable, BENCH, "--quick", "--only", only, "--out", str(out_file)]
    proc = subprocess.run(
        [*cmd, "--stall-seconds", "60"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"

    lines = proc.stdout.splitlines()
    assert lines, f"no output rows; stderr:\n{proc.stderr[-4000:]}"
    rows = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert all(isinstance(r, dict) for r in rows)
    assert out_file.read_text().splitlines() == lines  # --out appends the same lines

    measured = []
    for row in rows:
        assert "error" not in row, row
        assert row["bench"] in ("env_step", "buffer", "memory"), row
        if "skipped" in row:  # e.g. flashbax not installed: a reason, no figures
            assert isinstance(row["skipped"], str) and row["skipped"], row
            assert not any(k in row for k in THROUGHPUT[row["bench"]]), row
            continue
        missing = [k for k in REQUIRED + CONFIG[row["bench"]] if k not in row]
        assert not missing, f"row lacks {missing}: {row}"
        assert row["run_seconds"] > 0 and row["compile_seconds"] > 0, row
        for key in THROUGHPUT[row["bench"]]:
            assert isinstance(row[key], int | float) and row[key] > 0, (key, row)
        measured.append(row)

    impls = {(r["bench"], r["impl"], r.get("kind")) for r in measured}
    assert {("env_step", "gymnax", None), ("env_step", "jaxlearn", None)} <= impls
    assert {("buffer", "jaxlearn", "uniform"), ("buffer", "jaxlearn", "prioritized")} <= impls
    assert {("memory", "jaxlearn", "exact"), ("memory", "jaxlearn", "approximate")} <= impls
    for row in measured:
        if row["bench"] == "memory" and row["kind"] == "approximate":
            assert 0.9 <= row["recall_vs_exact"] <= 1.0, row
    assert len({r["run_id"] for r in rows}) == 1
    for row in measured:
        if row["bench"] == "env_step" and row["impl"] == "jaxlearn":
            assert row["ratio_vs_gymnax"] > 0, row


@pytest.mark.slow
def test_bench_devices_rows_from_forced_cpu_devices(tmp_path):
    # On a CPU host the bench re-runs itself with 2 forced CPU devices (the flag must be set
    # before JAX starts) and marks the rows correctness-only; tiny runs, 4 compilations.
    cmd = [sys.executable, BENCH, "--quick", "--only", "devices", "--device-counts", "2"]
    proc = subprocess.run(
        [*cmd, "--devices-timesteps", "4096", "--stall-seconds", "60"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(r["algo"], r["mode"]) for r in rows} == {
        (a, m) for a in ("ppo", "dqn") for m in ("seeds", "data_parallel")
    }, rows
    for row in rows:
        assert "error" not in row, row
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, f"row lacks {missing}: {row}"
        assert row["devices_used"] == 2 and row["num_devices"] == 2, row
        assert row["correctness_only"] is True and "force_host_platform" in row["xla_flags"]
        assert row["env_steps_per_second"] > 0 and row["env_steps_per_second_per_agent"] > 0
        if row["mode"] == "data_parallel":
            assert row["num_seeds"] == 1 and row["replicas_identical"] is True, row
    assert len({r["run_id"] for r in rows}) == 1
