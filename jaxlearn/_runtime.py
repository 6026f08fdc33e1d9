"""Process-level JAX settings jaxlearn applies at import, before any backend exists.

The CPU backend can deadlock when every thread of XLA's intra-op pool blocks inside a
kernel that waits for work scheduled on the same pool. jaxlearn's own case was LAPACK's
batched QR in the orthogonal init of vmapped seeds, now avoided in
`jaxlearn.networks.orthogonal`; jax-ml/jax#25861 reports hangs with asynchronous CPU
dispatch, and others with multi-threaded Eigen. jaxlearn turns both off on the CPU:
dispatch becomes synchronous (the host loop waits on every chunk anyway) and Eigen
single-threaded (no measurable cost for these model sizes).
XLA reads these when the first backend is created, so they do nothing if a computation
already ran. Set JAXLEARN_CPU_DEFAULTS=1 to keep JAX's defaults.
"""

from __future__ import annotations

import os

_FLAG = "--xla_cpu_multi_thread_eigen"


def configure_xla_cpu() -> None:
    if os.environ.get("JAXLEARN_CPU_DEFAULTS") == "1":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:  # else the user chose explicitly
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=false".strip()
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
