#!/usr/bin/env python
"""Learning results table over N seeds: `python scripts/results.py [...]`, the same command
as `jaxlearn-results`.

The code and flags (`--help`) are in jaxlearn/cli/results.py.
"""

import sys

from jaxlearn.cli.results import main

if __name__ == "__main__":
    sys.exit(main())
