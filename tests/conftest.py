"""One persistent compilation cache for the whole test run, fresh for each run.

Many tests compile the same small programs (the same tiny configs, in this process and in
the `scripts/*.py` children they start). With JAX's persistent cache in a folder made for
this run, the second compile of a program loads it instead, which only changes how long a
test takes, never what it computes. The folder starts empty, so no run depends on an
earlier one; `pytest-xdist` workers share it (`PYTEST_XDIST_TESTRUNUID` names the run) and
the last process to finish removes it. `tests/test_compile_cache.py` checks the cache
itself in folders of its own. Set `JAXLEARN_TEST_COMPILE_CACHE=off` to compile everything
from scratch.

Tests run with JAX's `jax_disable_most_optimizations` (XLA's backend at optimisation level
0, also in the scripts they start) unless marked `optimized`: most programs here are tiny
and run for well under a second, so compiling them is nearly all their time, and level 0
compiles them about twice as fast (a tiny PPO train program: 9 s against 16 s on the 2-core
CPU) while running about 2.7x slower. The `optimized` tests (learning runs to a threshold,
a memory measurement, one vmapped-equals-separate check whose float32 drift at level 0
exceeds its tolerance) compile with the defaults users get. `JAXLEARN_TEST_XLA_OPT=full`
compiles every test with the defaults.
"""

import os
import shutil
import tempfile

import jax
import pytest

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_CACHE = os.path.join(tempfile.gettempdir(), f"jaxlearn-test-xla-{_RUN}")

if os.environ.get("JAXLEARN_TEST_COMPILE_CACHE", "").lower() == "off":
    os.environ["JAXLEARN_COMPILE_CACHE"] = "off"
else:
    os.environ["JAXLEARN_COMPILE_CACHE"] = _CACHE  # children started by tests use it too

    from jaxlearn import compile_cache

    compile_cache.enable(_CACHE)


# Level 0 by default, so module-scoped fixtures (set up before a test's own fixtures) get it.
_FULL_OPT = os.environ.get("JAXLEARN_TEST_XLA_OPT", "").lower() == "full"
if not _FULL_OPT:
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(autouse=True)
def _xla_optimisation_level(request, monkeypatch):
    """XLA's default optimisation for a test marked `optimized` (and its children)."""
    if _FULL_OPT or request.node.get_closest_marker("optimized") is None:
        yield
        return
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", True)


def pytest_sessionfinish(session, exitstatus):
    # The xdist controller (or a plain run) finishes after every worker: remove the folder.
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(_CACHE, ignore_errors=True)
