"""`import jaxlearn` changes nothing in the process; `jaxlearn.configure_cpu()` is explicit.

Each check runs in a fresh interpreter: JAX reads its CPU settings once, when the backend
starts, and the test session itself has them applied (tests/conftest.py). The children start
from an environment without any of the variables involved, so a library that set them at
import would be caught.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHOSEN_BY_USER = ("XLA_FLAGS", "JAXLEARN_CPU_DEFAULTS", "JAX_CPU_ENABLE_ASYNC_DISPATCH")


def _child(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line, returned here."""
    base = {k: v for k, v in os.environ.items() if k not in CHOSEN_BY_USER}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**base, "JAX_PLATFORMS": "cpu", **env},
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
    # computes an array, which would), leaving configure_cpu() time to act.
    assert out["loaded_by_import"] == ["jaxlearn", "jaxlearn._runtime"]
    assert out["backend_started_by_import"] is False


def test_configure_cpu_before_the_backend_applies_both_settings_and_keeps_user_flags():
    out = _child(
        """
        import json, os, warnings
        warnings.simplefilter("error")
        import jaxlearn
        first = jaxlearn.configure_cpu()
        flags_first = os.environ["XLA_FLAGS"]
        import jax
        async_first = jax.config.read("jax_cpu_enable_async_dispatch")
        x = jax.numpy.arange(4.0).sum()  # starts the backend with the settings
        again = jaxlearn.configure_cpu()  # after the backend: already in effect, no warning
        print(json.dumps({
            "first": first, "again": again, "flags_first": flags_first,
            "flags_after": os.environ["XLA_FLAGS"], "async": async_first,
            "devices": jax.local_device_count(), "sum": float(x),
        }))
        """,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    flags = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"
    assert out["first"] is True and out["again"] is True
    assert out["flags_first"] == flags and out["flags_after"] == flags
    assert out["async"] is False
    assert out["devices"] == 2  # the user's flag still reached XLA, next to ours
    assert out["sum"] == 6.0


def test_configure_cpu_opt_out_and_a_late_call_change_nothing():
    out = _child(
        """
        import json, os, warnings
        import jaxlearn
        import jax
        opted_out = jaxlearn.configure_cpu()
        def state():
            return os.environ.get("XLA_FLAGS"), jax.config.read("jax_cpu_enable_async_dispatch")

        state_opted_out = state()
        del os.environ["JAXLEARN_CPU_DEFAULTS"]
        jax.numpy.zeros(3).block_until_ready()  # the backend starts with JAX's defaults
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            late = jaxlearn.configure_cpu()
        print(json.dumps({
            "opted_out": opted_out, "state_opted_out": state_opted_out, "late": late,
            "state_late": state(),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        }))
        """,
        JAXLEARN_CPU_DEFAULTS="1",
    )
    assert out["opted_out"] is False and out["state_opted_out"] == [None, True]
    assert out["late"] is False and out["state_late"] == [None, True]
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("RuntimeWarning")
    assert "before the first computation" in out["warnings"][0]
