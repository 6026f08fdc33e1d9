"""CPU backend settings that jaxlearn's entry points apply; importing jaxlearn applies none.

`configure_cpu()` turns off JAX's asynchronous CPU dispatch and XLA's multi-threaded Eigen
(`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`). Both are read once, when the CPU backend
is created, so the call must come before the first computation (and before importing gymnax,
whose import runs one). `scripts/*`, the `jaxlearn-*` console scripts and the test suite's
`conftest.py` call it first thing; a user's own program may call it or not.

Why: the CPU backend can deadlock when every thread of XLA's intra-op pool blocks inside a
kernel that waits for work scheduled on the same pool. jaxlearn's own case was LAPACK's
batched QR in the orthogonal init of vmapped seeds, now avoided in
`jaxlearn.networks.orthogonal`; jax-ml/jax#25861 reports hangs with asynchronous CPU
dispatch, and others with multi-threaded Eigen. The host loop waits on every chunk anyway,
and at jaxlearn's model sizes single-threaded Eigen is not slower (figures in the README).
GPU and TPU backends are not affected. `JAXLEARN_CPU_DEFAULTS=1` makes the call a no-op.
"""

from __future__ import annotations

import os
import warnings

_FLAG = "--xla_cpu_multi_thread_eigen"
OPT_OUT_ENV = "JAXLEARN_CPU_DEFAULTS"


def configure_cpu() -> bool:
    """Apply jaxlearn's CPU backend settings to this process, before its backend starts.

    Sets `--xla_cpu_multi_thread_eigen=false` in `XLA_FLAGS` (unless the flag is already
    there: the user chose) and `jax_cpu_enable_async_dispatch=False`. Idempotent. Does
    nothing when `JAXLEARN_CPU_DEFAULTS=1`.

    Returns:
        True when the settings are in effect for this process. False, with a warning and
        nothing changed, when a backend already runs with other settings (too late to
        change them), and False when opted out.
    """
    if os.environ.get(OPT_OUT_ENV) == "1":
        return False
    import jax
    from jax._src import xla_bridge  # no public way to ask whether a backend exists

    flags = os.environ.get("XLA_FLAGS", "")
    if xla_bridge.backends_are_initialized():
        if _FLAG in flags and not jax.config.read("jax_cpu_enable_async_dispatch"):
            return True  # applied before the backend started (e.g. by conftest.py)
        warnings.warn(
            "jaxlearn.configure_cpu() came after JAX's backend started, so it changes "
            "nothing; call it before the first computation (and before importing gymnax "
            "or jaxlearn.envs)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if _FLAG not in flags:  # else the user chose explicitly
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=false".strip()
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
