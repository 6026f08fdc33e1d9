"""The benches of `jaxlearn-bench` (`python scripts/bench.py`; flags in `jaxlearn.cli.bench`).

`rows`: JSON rows, memory peaks, AOT timing and the stall watchdog, shared by the rest.
`env_step`, `agents` (`ppo_e2e`, `dqn_e2e`, `sweep`), `buffers`, `memory`, `devices`: one
module per kind of measurement. `peers`: rejax and PureJaxRL, each in its own virtual
environment (a subprocess). `purejaxrl`: PureJaxRL's CartPole configs mapped onto jaxlearn's,
and the statistics of interleaved rounds; `side_by_side`: the rounds themselves, jaxlearn in
this process and the peer in its own virtual environment. Nothing here is imported by the
library.
"""
