"""jaxlearn.progress: a tqdm bar on a terminal, plain lines elsewhere, curriculum lines."""

import io
import re

import numpy as np

from jaxlearn.progress import Progress, stage_changes


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_without_a_terminal():
    stream = io.StringIO()  # isatty() is False: a pipe, a file, a CI log
    p = Progress(10, 128, 3, stream=stream)
    p.start(0)
    p.chunk(0, 2, 5, 1234.4, (12.5, 10.0, 15.25))
    p.log("  checkpoint 5")
    p.chunk(1, 2, 10, 99.0, (float("nan"), float("nan"), float("nan")))
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert re.fullmatch(
        r"  chunk 1/2  step 640/1,280  elapsed \d\d:\d\d  ETA \d\d:\d\d  1,234 steps/s  "
        r"return 12\.50 \[10\.00, 15\.25\]",
        lines[0],
    ), lines[0]
    assert lines[1] == "  checkpoint 5"
    assert lines[2].endswith("99 steps/s  return n/a [n/a, n/a]")


def test_one_seed_has_no_spread_and_a_log_callback_gets_plain_lines():
    got = []
    p = Progress(4, 8, 1, log=got.append, stream=Terminal())  # a callback: never a bar
    p.start(2)  # resumed at update 2: the ETA counts the updates left
    p.chunk(2, 4, 3, 10.0, (1.0, 1.0, 1.0))
    assert len(got) == 1 and got[0].startswith("  chunk 3/4  step 24/32")
    assert got[0].endswith("return 1.00") and p.bar is None


def test_a_bar_on_a_terminal():
    stream = Terminal()
    p = Progress(10, 100, 2, stream=stream)
    p.start(0)
    p.log("  checkpoint 0")  # printed above the bar
    p.chunk(0, 2, 5, 2500.0, (3.0, 1.0, 5.0))
    p.chunk(1, 2, 10, 2500.0, (4.0, 2.0, 6.0))
    p.close()
    out = stream.getvalue()
    assert "\r" in out  # redrawn in place
    last = out.replace("\n", "\r").split("\r")
    bar = [s for s in last if "1.00k/1.00k" in s][-1]
    assert "100%" in bar and "2,500 steps/s, return 4.00 [2.00, 6.00]" in bar, bar
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", bar), bar  # elapsed < remaining
    assert "  checkpoint 0\n" in out
    assert "chunk 1/2" not in out  # no plain lines on a terminal


def test_stage_changes_name_the_seeds_and_steps():
    names = ["easy", "medium", "hard"]
    stage = np.array([[0, 1, 1], [0, 0, 0], [1, 1, 2]])  # [S=3, K=3] after each update
    lines = stage_changes(
        stage, np.array([0, 0, 0]), first_update=10, steps_per_update=64, names=names
    )
    assert lines == [
        "  curriculum: stage 1 (medium) reached by seed 0 at step 768, seed 2 at step 704",
        "  curriculum: stage 2 (hard) reached by seed 2 at step 832",
    ]
    assert stage_changes(stage[:, 1:], stage[:, 0], 11, 64, names)[0].startswith(
        "  curriculum: stage 1 (medium) reached by seed 0 at step 768"
    )
    assert stage_changes(np.zeros((2, 4)), None, 0, 8, names) == []  # the first chunk
