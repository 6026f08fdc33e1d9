"""`jaxlearn-bench`: run `scripts/bench.py` of the source checkout jaxlearn is installed from.

The benchmark reads `experiments/*.yaml` and `scripts/peers/` beside it and records the
checkout's git revision, none of which a wheel carries, so its code stays in the script; this
entry point finds the script next to the package (an editable install, `pip install -e .`)
and runs its `main` with the same flags and exit status as `python scripts/bench.py`.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_MODULE = "jaxlearn_bench_script"


def script_path() -> str | None:
    """Path of scripts/bench.py beside the installed package, or None (not a checkout)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(os.path.dirname(package), "scripts", "bench.py")
    return path if os.path.isfile(path) else None


def main(argv: list[str] | None = None) -> int:
    """Exit status: the script's (0 all rows measured, 1 a row failed, 2 bad flags)."""
    path = script_path()
    if path is None:
        print(
            "error: jaxlearn-bench runs scripts/bench.py of a source checkout; install jaxlearn "
            "from one with `pip install -e .`, or run `python scripts/bench.py` there",
            file=sys.stderr,
        )
        return 2
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module.main(argv)
