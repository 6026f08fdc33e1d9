"""JAX's persistent compilation cache for jaxlearn's entry points.

`scripts/train.py`, `sweep.py` and `evaluate.py` (and the `jaxlearn-*` console scripts) call
`enable()` before compiling anything, so a second run of the same shapes, or a `--resume`,
loads its programs from disk instead of compiling them again. `import jaxlearn` alone never
turns it on.

Where: `$JAXLEARN_COMPILE_CACHE` when set (`off` disables it), else JAX's own
`JAX_COMPILATION_CACHE_DIR` / `jax_compilation_cache_dir` when the user set one, else
`$XDG_CACHE_HOME/jaxlearn/xla` (`~/.cache/jaxlearn/xla`). The cache is trusted code: keep it
in a folder only you can write to.
"""

from __future__ import annotations

import os

ENV_VAR = "JAXLEARN_COMPILE_CACHE"
MIN_COMPILE_SECONDS = 0.2  # JAX's default (1 s) skips the many small programs of a run


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxlearn", "xla")


def enable(path: str | None = None) -> str | None:
    """Turn the cache on at `path` (default: see the module docs); returns the folder used,
    or None when it is off. Call before the first compilation."""
    import jax

    choice = path if path is not None else os.environ.get(ENV_VAR)
    if choice is not None and choice.strip().lower() in ("off", "0", "false", "none", ""):
        return None
    if choice is None:
        choice = jax.config.jax_compilation_cache_dir or default_dir()
    try:
        os.makedirs(choice, mode=0o700, exist_ok=True)
    except OSError:  # an unwritable cache must not stop a run: it only costs compile time
        return None
    jax.config.update("jax_compilation_cache_dir", choice)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return choice
