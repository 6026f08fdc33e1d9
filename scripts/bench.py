#!/usr/bin/env python
"""Throughput benchmark: `python scripts/bench.py [...]`, the same command as `jaxlearn-bench`.

The flags (`--help`) and `main` are in jaxlearn/cli/bench.py, the benches in jaxlearn/bench/.
"""

import sys

from jaxlearn.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
