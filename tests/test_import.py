"""`import jaxlearn` changes nothing in the process: no environment variable, no `jax.config`.

The check runs in a fresh interpreter whose environment holds none of the variables jaxlearn
once set at import (XLA_FLAGS for the CPU backend, ...), so setting any of them is caught.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHOSEN_BY_USER = ("XLA_FLAGS", "JAX_CPU_ENABLE_ASYNC_DISPATCH")


def _child(code: str, cwd: str = ROOT) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line, returned here."""
    base = {k: v for k, v in os.environ.items() if k not in CHOSEN_BY_USER}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**base, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_changes_no_environment_variable_or_jax_config_value():
    out = _child(
        """
        import json, os, sys
        import jax
        from jax._src import xla_bridge

        def snapshot():
            return dict(os.environ), {k: repr(v) for k, v in jax.config.values.items()}

        env0, cfg0 = snapshot()
        import jaxlearn
        env1, cfg1 = snapshot()
        loaded = sorted(m for m in sys.modules if m.startswith("jaxlearn"))
        backend_started = xla_bridge.backends_are_initialized()
        for name in jaxlearn.__all__:  # the lazy names load the whole public library
            getattr(jaxlearn, name)
        env2, cfg2 = snapshot()

        def diff(a, b):
            return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))

        print(json.dumps({
            "num_config_values": len(cfg0),
            "env_after_import": diff(env0, env1),
            "config_after_import": diff(cfg0, cfg1),
            "env_after_public_names": diff(env0, env2),
            "config_after_public_names": diff(cfg0, cfg2),
            "async_dispatch": jax.config.read("jax_cpu_enable_async_dispatch"),
            "loaded_by_import": loaded,
            "backend_started_by_import": backend_started,
        }))
        """
    )
    assert out["num_config_values"] > 50  # the snapshot really covers jax.config
    assert out["env_after_import"] == [] and out["config_after_import"] == []
    # Loading the envs imports gymnax, which imports gymnasium, which sets this one variable
    # (to silence pygame's banner); jaxlearn itself sets none.
    assert out["env_after_public_names"] in ([], ["PYGAME_HIDE_SUPPORT_PROMPT"])
    assert out["config_after_public_names"] == []
    assert out["async_dispatch"] is True  # JAX's default, left alone
    # Lazy: the bare import loads no submodule and so starts no backend (gymnax's import
    # computes an array, which would), leaving the program free to configure JAX after it.
    assert out["loaded_by_import"] == ["jaxlearn"]
    assert out["backend_started_by_import"] is False
