"""One persistent compilation cache for the whole test run, fresh for each run.

Many tests compile the same small programs (the same tiny configs, in this process and in
the `scripts/*.py` children they start). With JAX's persistent cache in a folder made for
this run, the second compile of a program loads it instead, which only changes how long a
test takes, never what it computes. The folder starts empty, so no run depends on an
earlier one; `pytest-xdist` workers share it (`PYTEST_XDIST_TESTRUNUID` names the run) and
the last process to finish removes it. `tests/test_compile_cache.py` checks the cache
itself in folders of its own. Set `JAXLEARN_TEST_COMPILE_CACHE=off` to compile everything
from scratch.
"""

import os
import shutil
import tempfile

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_CACHE = os.path.join(tempfile.gettempdir(), f"jaxlearn-test-xla-{_RUN}")

if os.environ.get("JAXLEARN_TEST_COMPILE_CACHE", "").lower() == "off":
    os.environ["JAXLEARN_COMPILE_CACHE"] = "off"
else:
    os.environ["JAXLEARN_COMPILE_CACHE"] = _CACHE  # children started by tests use it too

    from jaxlearn import compile_cache

    compile_cache.enable(_CACHE)


def pytest_sessionfinish(session, exitstatus):
    # The xdist controller (or a plain run) finishes after every worker: remove the folder.
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(_CACHE, ignore_errors=True)
