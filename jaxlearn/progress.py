"""What a run prints while it trains: a progress bar on a terminal, plain lines elsewhere.

On a terminal (the stream's `isatty()`), one tqdm bar counts env steps per seed with the
elapsed time, the ETA, env steps/s (all seeds) and the current return (mean and min-max
over seeds, from `jaxlearn.sinks.returns`); other lines (checkpoints, curriculum stages)
print above it. Elsewhere (a pipe, a file, a CI log, a `log` callback), each chunk prints
one plain line with the same figures.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import numpy as np


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def return_text(mean: float, lo: float, hi: float, num_seeds: int) -> str:
    """`return 12.34` (one seed) or `return 12.34 [10.00, 15.00]` (min-max over seeds)."""
    text = f"return {_fmt(mean)}"
    if num_seeds > 1:
        text += f" [{_fmt(lo)}, {_fmt(hi)}]"
    return text


class Progress:
    """The run's report to the user between chunks.

    Args:
        total_updates: updates of the whole run.
        steps_per_update: env steps per update and seed.
        num_seeds: seeds trained together (steps/s counts all of them).
        log: where plain lines go (default: `stream`).
        stream: the bar's stream (default `sys.stderr`); a bar (from `start`) only when
            it is a terminal and no `log` callback was given.
    """

    def __init__(
        self,
        total_updates: int,
        steps_per_update: int,
        num_seeds: int,
        *,
        log: Callable[[str], None] | None = None,
        stream: IO[str] | None = None,
    ):
        self.total_updates = total_updates
        self.steps_per_update = steps_per_update
        self.num_seeds = num_seeds
        self.stream = stream if stream is not None else sys.stderr
        self._start_updates = 0
        self._t0 = time.perf_counter()
        self._want_bar = log is None and _is_terminal(self.stream)
        self.bar: Any = None
        self._log = log or (lambda s: print(s, file=self.stream, flush=True))

    def start(self, done_updates: int) -> None:
        """Start the clock (and the bar, on a terminal) with `done_updates` already done."""
        self._start_updates = done_updates
        self._t0 = time.perf_counter()
        if self._want_bar and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total_updates * self.steps_per_update,
                initial=done_updates * self.steps_per_update,
                unit=" steps",
                unit_scale=True,
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
            )

    def log(self, line: str) -> None:
        """Print a line (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self._log(line)

    def chunk(
        self,
        index: int,
        num_chunks: int,
        done_updates: int,
        steps_per_second: float,
        ret: tuple[float, float, float],
    ) -> None:
        """Report chunk `index` (0-based) of `num_chunks`, after which `done_updates` are
        done; `ret` is the current (mean, min, max) return over seeds."""
        elapsed = time.perf_counter() - self._t0
        rate = (done_updates - self._start_updates) / max(elapsed, 1e-9)
        eta = (self.total_updates - done_updates) / rate if rate > 0 else math.inf
        text = return_text(*ret, self.num_seeds)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{steps_per_second:,.0f} steps/s, {text}", refresh=False)
            self.bar.update(done_updates * self.steps_per_update - self.bar.n)
            return
        steps = done_updates * self.steps_per_update
        total = self.total_updates * self.steps_per_update
        self._log(
            f"  chunk {index + 1}/{num_chunks}  step {steps:,}/{total:,}  "
            f"elapsed {_duration(elapsed)}  ETA {_duration(eta)}  "
            f"{steps_per_second:,.0f} steps/s  {text}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def stage_changes(
    stage: np.ndarray,
    previous: np.ndarray | None,
    first_update: int,
    steps_per_update: int,
    names: list[str],
) -> list[str]:
    """Lines for the curriculum stages reached in a chunk: `stage` is `[S, K]` (the stage
    after each update of the chunk), `previous` `[S]` the stage before it (None: the run's
    first chunk, which starts at each seed's initial stage). One line per stage reached,
    naming the seeds and the env step at which each got there."""
    stage = np.asarray(stage).astype(int)
    before = stage[:, :1] if previous is None else np.asarray(previous).astype(int)[:, None]
    path = np.concatenate([before, stage], axis=1)  # [S, K + 1]
    reached: dict[int, list[tuple[int, int]]] = {}
    for s in range(stage.shape[0]):
        for k in np.flatnonzero(path[s, 1:] != path[s, :-1]):
            step = (first_update + int(k) + 1) * steps_per_update
            reached.setdefault(int(path[s, k + 1]), []).append((s, step))
    lines = []
    for st in sorted(reached):
        name = names[st] if 0 <= st < len(names) else str(st)
        who = ", ".join(f"seed {s} at step {step:,}" for s, step in reached[st])
        lines.append(f"  curriculum: stage {st} ({name}) reached by {who}")
    return lines
