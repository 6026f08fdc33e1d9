"""Command-line entry points: `jaxlearn-train`, `jaxlearn-sweep`, `jaxlearn-evaluate`,
`jaxlearn-bench` (console scripts) and `python scripts/<name>.py` run the same `main`.

Each `main(argv=None) -> int` parses flags, builds a config and calls the library. Modules
here import nothing heavy at the top, so `--help` is quick and `--distributed` can initialise
JAX before any backend starts.
"""
