"""Tests compile from scratch: the scripts' persistent compilation cache stays off unless a
test turns it on (`tests/test_compile_cache.py`), so no test depends on an earlier run."""

import os

os.environ["JAXLEARN_COMPILE_CACHE"] = "off"
