"""Benchmark helpers behind `scripts/bench.py`: peers run side by side with jaxlearn.

`purejaxrl`: PureJaxRL's CartPole configs mapped onto jaxlearn's, and the statistics of
interleaved rounds. `side_by_side`: the rounds themselves, jaxlearn in this process and the
peer in its own virtual environment (a subprocess). Nothing here is imported by the library.
"""
