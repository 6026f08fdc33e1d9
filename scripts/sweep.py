#!/usr/bin/env python
"""Hyperparameter sweep: `python scripts/sweep.py [...]`, the same command as `jaxlearn-sweep`.

The code and flags (`--help`) are in jaxlearn/cli/sweep.py.
"""

import sys

from jaxlearn.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
