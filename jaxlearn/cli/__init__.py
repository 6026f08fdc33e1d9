"""Command-line entry points: `jaxlearn-train`, `jaxlearn-sweep`, `jaxlearn-evaluate`,
`jaxlearn-bench` (console scripts) and `python scripts/<name>.py` run the same `main`.

Each `main(argv=None) -> int` parses flags, builds a config and calls the library; it first
applies `jaxlearn.configure_cpu()` (the library's import does not). Modules here import
nothing heavy at the top, so `--distributed` can initialise JAX before any backend starts.
"""
