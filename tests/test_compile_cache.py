"""The entry points' persistent compilation cache: where it lives, off, and a second run
of the same shapes compiling faster than the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest

from jaxlearn import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_enable_off_and_default(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv(compile_cache.ENV_VAR, "off")
        assert compile_cache.enable() is None
        assert jax.config.jax_compilation_cache_dir == before
        monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "c"))
        assert compile_cache.enable() == str(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
        assert os.path.isdir(tmp_path / "c")
        monkeypatch.delenv(compile_cache.ENV_VAR)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache.enable() == str(tmp_path / "xdg" / "jaxlearn" / "xla")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


@pytest.mark.slow  # two fresh training processes
def test_a_second_run_of_the_same_shapes_compiles_faster(tmp_path):
    env = {**os.environ, compile_cache.ENV_VAR: str(tmp_path / "cache")}
    args = ["--total-timesteps", "4096", "--set", "num_envs=4", "--set", "num_steps=64"]
    seconds = []
    for i in range(2):
        proc = subprocess.run(
            [sys.executable, "scripts/train.py", *args, "--out", str(tmp_path / f"run{i}")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        seconds.append(json.loads(proc.stdout.strip().splitlines()[-1])["compile_seconds"])
    assert os.listdir(tmp_path / "cache")  # programs were written
    assert seconds[1] < 0.7 * seconds[0], seconds
