"""Sweep progress people can read: each chunk's values per trial, how each trial of a batch
ended, and the best value so far with its trial, as plain lines.

The sweep runs on a stand-in program (no learner is compiled): every update of a lane
finishes one episode whose return is 1000 x the trial's learning rate, and a learning rate
above 8e-3 turns the metrics non-finite. So every value a line should show is known from
the trial's parameters alone."""

import math

import jax.numpy as jnp
import optuna
import pytest

from jaxlearn import sweep

LRS = [1e-3, 2e-3, 3e-3, 9e-3]  # trials 0..3; trial 3 fails (NaN/Inf)


class _StandIn:
    """A `sweep.Program` without a learner: 4 chunks of 2 updates."""

    def __init__(self, cfg, algo, num_chunks):
        self.num_updates, self.chunk_size = 8, 2
        self.lane_counts = set()

    def init(self, keys, hparams):
        return jnp.zeros(keys.shape[0])

    def chunk(self, state, hparams, active):
        lr = hparams.learning_rate[:, None] * jnp.ones((1, self.chunk_size))
        ones = jnp.ones_like(lr)
        metrics = {
            "episode_count": ones,
            "episode_return_sum": 1000.0 * lr,
            "episode_length_sum": ones,
            "nonfinite": (lr > 8e-3).astype(jnp.float32),
        }
        return state + 1, metrics


class _PruneOdd(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials at their second report."""

    def prune(self, study, trial):
        return trial.number % 2 == 1 and len(trial.intermediate_values) >= 2


def _run(tmp_path, raw, lrs, pruner=None):
    """Run the sweep `raw` on the stand-in program, its trials asked with `lrs` in order;
    returns the sweep and its logged lines."""
    spec = sweep.spec_from_dict(raw)
    logged = []
    sw = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "s")), log=logged.append)
    sw.make_program = _StandIn
    if pruner is not None:
        sw.study.pruner = pruner
    for lr in lrs:
        sw.study.enqueue_trial({"learning_rate": lr})
    sw.run()
    return sw, logged


@pytest.fixture
def lines(tmp_path):
    raw = {
        "config": {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "hidden_sizes": [8]},
        "num_trials": 4,
        "batch_size": 2,
        "num_chunks": 4,
        "sampler": "random",
        "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    sw, logged = _run(tmp_path, raw, LRS, _PruneOdd())
    states = {t.number: t.state.name for t in sw.study.get_trials()}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "FAIL"}
    return logged


def _ret(lr: float) -> str:
    """The return a line shows for a learning rate (float32 arithmetic, 4 digits)."""
    return f"{float(jnp.float32(lr) * 1000):.4g}"


def test_every_progress_message_is_one_plain_line(lines):
    assert lines
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line


def test_each_chunk_line_shows_every_trials_value_and_the_best_so_far(lines):
    chunks = [s for s in lines if s.lstrip().startswith("chunk ")]
    assert len(chunks) == 8  # 4 chunks per batch, 2 batches
    first = chunks[0]
    assert first.startswith("  chunk 1/4: 2 live trial(s)")
    assert f"chunk mean return: #0 {_ret(LRS[0])}, #1 {_ret(LRS[1])}" in first
    assert "best so far" not in first  # no trial has completed yet
    # trial 1 is pruned at its second report: marked on that chunk's line, absent after
    assert f"#1 {_ret(LRS[1])} (pruned)" in chunks[1]
    assert "#1" not in chunks[2]
    # batch 2: trial 3 fails on its first chunk; the best so far is batch 1's trial 0
    assert "#3 - (failed)" in chunks[4]
    assert f"best so far: trial 0, final_return_mean {_ret(LRS[0])}" in chunks[4]
    assert "1 live trial(s) on 1 lane(s)" in chunks[4]  # the survivor compacted


def test_each_batch_ends_with_every_trials_result_and_the_best_trial(lines):
    def block(batch):
        start = lines.index(f"[sweep] batch {batch} done:")
        return lines[start + 1 : start + 4]

    assert block(1) == [
        f"  trial 0: final_return_mean {_ret(LRS[0])} (new best)",
        f"  trial 1: pruned after chunk 2/4 (chunk mean return {_ret(LRS[1])})",
        f"[sweep] best so far: trial 0, final_return_mean {_ret(LRS[0])} (maximize), "
        f'params {{"learning_rate": {LRS[0]}}}',
    ]
    assert block(2) == [
        f"  trial 2: final_return_mean {_ret(LRS[2])} (new best)",
        "  trial 3: failed: NaN/Inf by update 2",
        f"[sweep] best so far: trial 2, final_return_mean {_ret(LRS[2])} (maximize), "
        f'params {{"learning_rate": {LRS[2]}}}',
    ]


def test_format_values_orders_trials_and_marks_missing_values():
    text = sweep.report.format_values({5: (math.nan, "failed"), 2: (12.345678, ""), 3: (-1.0, "")})
    assert text == "#2 12.35, #3 -1, #5 - (failed)"


def test_the_chunk_label_names_the_metric_a_trial_reports():
    assert sweep.report.chunk_label("final_return_mean") == "chunk mean return"
    assert sweep.report.chunk_label("eval_return") == "chunk mean return"
    assert sweep.report.chunk_label("success") == "chunk mean success"


def test_a_trial_drawn_again_with_earlier_parameters_is_said_so(tmp_path):
    raw = {
        "config": {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "hidden_sizes": [8]},
        "num_trials": 5,
        "batch_size": 3,
        "num_chunks": 4,
        "sampler": "random",
        "space": {"learning_rate": {"choices": [1e-3, 2e-3]}},
    }
    # asked in this order: batches 0-2 and 3-4
    sw, logged = _run(tmp_path, raw, (1e-3, 2e-3, 1e-3, 2e-3, 1e-3))
    said = [s for s in logged if "has the parameters of" in s]
    assert said == [
        "  trial 2 has the parameters of trial 0 (the sampler drew them again): it trains "
        "them on its own seeds",  # within a batch
        "  trial 3 has the parameters of trial 1 (the sampler drew them again): it trains "
        "them on its own seeds",  # across batches
        "  trial 4 has the parameters of trial 0 (the sampler drew them again): it trains "
        "them on its own seeds",
    ]
    seeds = {t.number: t.user_attrs["seed_index"] for t in sw.study.get_trials()}
    assert len(set(seeds.values())) == 5  # each trial trained on its own seeds
