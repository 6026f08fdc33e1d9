#!/usr/bin/env python
"""Evaluate a run's checkpoint: `python scripts/evaluate.py RUN_DIR [...]`, the same command
as `jaxlearn-evaluate`. The code and flags (`--help`) are in jaxlearn/cli/evaluate.py.
"""

import sys

from jaxlearn.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
