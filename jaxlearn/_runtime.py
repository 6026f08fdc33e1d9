"""Process-level JAX settings jaxlearn applies at import, before any backend exists.

XLA's CPU runtime can deadlock when its multi-threaded Eigen pool runs large vmapped
programs: every worker parks waiting for work while the caller waits for the result (seen
here on a 2-core machine with jax 0.10.2 in `jax.vmap(train)` runs; also reported publicly).
Single-threaded Eigen avoids it. XLA reads XLA_FLAGS when the first backend is created, so
this has no effect if a computation already ran. Set JAXLEARN_CPU_MULTI_THREAD_EIGEN=1 to
keep XLA's default.
"""

from __future__ import annotations

import os

_FLAG = "--xla_cpu_multi_thread_eigen"


def configure_xla_cpu() -> None:
    if os.environ.get("JAXLEARN_CPU_MULTI_THREAD_EIGEN") == "1":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags:  # the user chose explicitly
        return
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=false".strip()
