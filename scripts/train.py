#!/usr/bin/env python
"""Train an agent: `python scripts/train.py [...]`, the same command as `jaxlearn-train`.

The code and flags (`--help`) are in jaxlearn/cli/train.py.
"""

import sys

from jaxlearn.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
