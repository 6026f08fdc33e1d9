"""Run a Python child on N forced CPU devices (the XLA flag must be set before JAX starts)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_cpu_devices(args: list[str], num_devices: int, timeout: int = 600) -> str:
    """`python *args` in the repository root with `num_devices` CPU devices; fails the test
    on a non-zero exit (with the child's stderr) and returns its stdout."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def last_json(stdout: str) -> dict:
    """The child's report: its last stdout line, as JSON."""
    return json.loads(stdout.strip().splitlines()[-1])
