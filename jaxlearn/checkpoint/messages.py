"""Where Orbax's own messages go during a run: a file, not the terminal.

When a checkpoint write fails in Orbax's background threads (a full disk, say), Orbax logs
each failing thread's traceback through absl, and the writer threads that were still
waiting leave one unraisable `RuntimeError: Event loop is closed` each: hundreds of lines
on stderr before the run's own one-line error. `diverted_to(path)` sends both to a file
while a run trains, so the terminal shows the run's error and the details are kept.

The usual cause is a full disk, which is likely the disk of `path` too: a message that
cannot be written there goes to the system's temporary folder instead, and one that cannot
be written anywhere is counted and dropped (never raised from a logging call).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator


class Diverted:
    """The messages of one `diverted_to` block: `where` is the file that holds them (None:
    none written), `count` how many arrived, `dropped` how many no file could take."""

    def __init__(self, path: str, fallback_dir: str | None = None):
        fallback = f"jaxlearn-orbax-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self._targets = [path, os.path.join(fallback_dir or tempfile.gettempdir(), fallback)]
        self.where: str | None = None
        self.count = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        self.count += 1
        while self._targets:
            try:
                with open(self._targets[0], "a") as f:
                    f.write(text if text.endswith("\n") else text + "\n")
                self.where = self._targets[0]
                return
            except (OSError, ValueError):  # ValueError: text this file cannot encode
                gone = self._targets.pop(0)  # full or gone: the next target from now on
                with contextlib.suppress(OSError):
                    if os.path.getsize(gone) == 0:
                        os.remove(gone)  # leave no empty file behind
        self.dropped += 1

    def summary(self) -> str:
        """A phrase for an error line: where the messages are, or that they were lost."""
        if not self.count:
            return ""
        text = f"Orbax's own messages: {self.where}" if self.where else ""
        if self.dropped:
            lost = f"{self.dropped} of {self.count} Orbax message(s) could not be written"
            text = f"{text}; {lost}" if text else lost
        return text


class _Handler(logging.Handler):
    def __init__(self, sink: Diverted):
        super().__init__(logging.WARNING)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a log call in Orbax's thread must never raise
            text = f"{record.levelname} {record.name}: (message could not be formatted)"
        self.sink.write(text)


@contextlib.contextmanager
def diverted_to(path: str, fallback_dir: str | None = None) -> Iterator[Diverted]:
    """While open: absl log records at WARNING and above (Orbax logs through absl) and
    unraisable exceptions (`sys.unraisablehook`) are appended to `path` (see the module
    docs for a full disk) instead of stderr; files are created only when something is
    written; `fallback_dir` (default: the system's temporary folder) takes what `path`
    cannot. Restores the absl logger and the hook on exit, even on an error."""
    sink = Diverted(path, fallback_dir)
    absl = logging.getLogger("absl")
    handler = _Handler(sink)
    propagate, hook = absl.propagate, sys.unraisablehook

    def unraisable(u) -> None:
        lines = traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback)
        where = f" in {u.object!r}" if u.object is not None else ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sink.write(f"{stamp} unraisable exception{where}:\n{''.join(lines)}")

    absl.addHandler(handler)
    absl.propagate = False
    sys.unraisablehook = unraisable
    try:
        yield sink
    finally:
        sys.unraisablehook = hook
        absl.propagate = propagate
        absl.removeHandler(handler)
