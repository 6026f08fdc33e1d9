"""A sweep folder bound to its Optuna study: storage, workers, heartbeats, the batch loop.

The study lives in an sqlite file in the sweep folder unless the spec names another
database (any RDB URL: several machines can share one study, each with its own folder and
worker id). Live trials send heartbeats between chunks; a RUNNING trial silent for
`STALE_SECONDS` belongs to a dead worker and is failed and asked again (same parameters,
same seeds) by whichever worker asks next. `resume` re-queues its own folder's interrupted
trials at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from jaxlearn.config import load_yaml
from jaxlearn.rundir import RunLock
from jaxlearn.sweep import report
from jaxlearn.sweep.batch import Outcome, Program, train_group
from jaxlearn.sweep.folder import DB_FILE, SPEC_FILE, WORKER_FILE, is_sweep_folder, new_sweep
from jaxlearn.sweep.sharing import check_joinable, claim, open_study
from jaxlearn.sweep.space import grid
from jaxlearn.sweep.spec import SweepSpec, lane_devices, spec_from_dict
from jaxlearn.sweep.trials import static_config, static_key, trial_config

HEARTBEAT_SECONDS = 60  # live trials are marked alive at least this often (between chunks)
STALE_SECONDS = 1800  # a RUNNING trial silent this long belongs to a dead worker


def _requeue(study: Any, trial: Any) -> None:
    """Queue a failed (interrupted or stale) trial again: same parameters, same seeds."""
    study.enqueue_trial(
        trial.params,
        user_attrs={
            "seed_index": trial.user_attrs.get("seed_index", trial.number),
            "retry_of": trial.number,
        },
    )


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is covered, which
    only works inside `Study.optimize`; the sweep stops at `num_trials` (the grid size)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class Sweep:
    """A sweep folder bound to its study. `run()` trains trials until `num_trials` are done.

    Attributes:
        programs: compiled programs by static key (one per distinct static config).
        make_program: builds a program from (static config, algo, num_chunks).
    """

    def __init__(self, spec: SweepSpec, folder: str, log: Callable[[str], None] | None = None):
        self.spec = spec
        self.folder = folder
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        with open(os.path.join(folder, WORKER_FILE)) as f:
            self.worker = json.load(f)["worker"]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = spec.storage or f"sqlite:///{os.path.abspath(os.path.join(folder, DB_FILE))}"
        self.storage, self.study = open_study(
            url,
            spec,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=STALE_SECONDS,
            heartbeat_stale_trial_callback=_requeue,
        )
        claim(self.study, spec)
        self.study.pruner = self._pruner()
        self.study.sampler = self._sampler(self._sampler_seed())
        self.distributions = {p.name: p.distribution() for p in spec.space}
        self.programs: dict[str, Program] = {}
        self.make_program: Callable[[Any, str, int], Program] = Program
        self.devices = lane_devices(spec.devices)
        self.batches = 0

    @property
    def compiles(self) -> int:
        """Programs compiled by this process: one per (static config, lane count)."""
        return sum(len(p.lane_counts) for p in self.programs.values())

    def _sampler_seed(self) -> int:
        """`spec.seed` for the first worker of a new study (a fresh sweep is reproducible);
        otherwise a seed mixed from it, this worker's join order and the trials so far, so a
        resumed sweep or another worker on the same study does not replay the proposals
        already made. Trial seeds (`seed_index`) do not depend on it."""
        key = f"worker:{self.worker}"
        if key not in self.study.user_attrs:
            self.study.set_user_attr(key, time.time_ns())
        joined = sorted((v, k) for k, v in self.study.user_attrs.items() if k.startswith("worker:"))
        index = [k for _, k in joined].index(key)
        count = len(self.study.get_trials(deepcopy=False))
        if index == 0 and count == 0:
            return self.spec.seed
        return int(np.random.SeedSequence([self.spec.seed, index, count]).generate_state(1)[0])

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.spec.sampler == "grid":  # one order for every worker: grid ids name points
            return _Grid(grid(self.spec.space), seed=self.spec.seed)
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=min(10, self.spec.num_trials),
        )

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.spec.pruner == "none":
            return optuna.pruners.NopPruner()
        if self.spec.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
        return optuna.pruners.MedianPruner(
            n_startup_trials=self.spec.pruner_startup_trials,
            n_warmup_steps=self.spec.pruner_warmup_chunks,
        )

    # -- bookkeeping -----------------------------------------------------------------

    def _counted(self) -> int:
        """Trials that count toward `num_trials`: finished ones (not interrupted ones, which
        run again) and those running elsewhere (another machine sharing the study)."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        n = 0
        for t in trials:
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                n += 1
            elif t.state == TrialState.FAIL and t.number not in retried:
                n += 1
            elif t.state == TrialState.RUNNING and t.user_attrs.get("worker") != self.worker:
                n += 1
        return n

    def recover(self) -> int:
        """Mark this folder's trials left RUNNING by an interruption as failed and queue
        them again (same parameters, same seeds). Returns how many."""
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") != self.worker:
                continue
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            _requeue(self.study, t)
            n += 1
        return n

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        with warnings.catch_warnings():  # heartbeats outside Study.optimize are our own
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            optuna.storages.fail_stale_trials(self.study)  # a dead worker's: run them again
            trial = self.study.ask(self.distributions)
        self.storage.record_heartbeat(trial._trial_id)
        if "seed_index" not in trial.user_attrs:
            trial.set_user_attr("seed_index", trial.number)
        trial.set_user_attr("worker", self.worker)
        return trial, dict(trial.params)

    def _repeats(self, asked: list[tuple[Any, dict[str, Any]]]) -> list[str]:
        """A line for each asked trial whose parameters an earlier trial (not failed) or an
        earlier one of this batch already has: the sampler drew them again, and the trial
        trains on its own seeds, so nothing is repeated silently."""
        mine = {t.number for t, _ in asked}
        first: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            if t.number not in mine and t.state != TrialState.FAIL:
                first.setdefault(_params_key(t.params), t.number)
        lines = []
        for trial, params in asked:
            key = _params_key(params)
            if key in first:
                lines.append(
                    f"  trial {trial.number} has the parameters of trial {first[key]} (the "
                    "sampler drew them again): it trains them on its own seeds"
                )
            else:
                first[key] = trial.number
        return lines

    def _heartbeat(self, trial: Any) -> None:
        self.storage.record_heartbeat(trial._trial_id)

    # -- the loop --------------------------------------------------------------------

    def run(self, stop_after_batches: int | None = None) -> dict[str, Any]:
        """Ask, train and tell batches until `num_trials` trials are done (or, for tests
        and interruptions, after `stop_after_batches` batches)."""
        recovered = self.recover()
        if recovered:
            self.log(f"[sweep] re-queued {recovered} trial(s) interrupted earlier")
        t_start = time.perf_counter()
        while True:
            remaining = self.spec.num_trials - self._counted()
            if remaining <= 0:
                break
            if stop_after_batches is not None and self.batches >= stop_after_batches:
                self.write_reports()
                return {"stopped_after_batches": self.batches, "folder": self.folder}
            n = min(self.spec.batch_size, remaining)
            asked = [self._ask() for _ in range(n)]
            self._run_batch(asked)
            self.batches += 1
        summary = self.write_reports()
        summary["sweep_seconds_this_process"] = time.perf_counter() - t_start
        best = summary.get("best")
        if best:
            self.log(
                f"[sweep] done: {summary['trials']['complete']} complete, "
                f"{summary['trials']['pruned']} pruned, {summary['trials']['fail']} failed; "
                f"best trial {best['number']} {self.spec.objective}={best['value']:.4g}; "
                f"wrote {self.folder}"
            )
        return summary

    def _run_batch(self, asked: list[tuple[Any, dict[str, Any]]]) -> list[Outcome]:
        """Train one batch of asked trials, grouped by program; print how each ended."""
        groups: dict[str, list[tuple[Any, Any]]] = {}
        statics: dict[str, Any] = {}
        outcomes: list[Outcome] = []
        for trial, params in asked:
            try:
                cfg = trial_config(self.spec, params)
            except ValueError as e:  # a combination the single-value checks cannot catch
                trial.set_user_attr("error", str(e))
                self.study.tell(trial, state=TrialState.FAIL)
                outcomes.append(Outcome(trial.number, "fail", None, str(e)))
                continue
            static = static_config(self.spec, cfg)
            key = static_key(static)
            statics[key] = static
            groups.setdefault(key, []).append((trial, cfg))
        numbers = [t.number for t, _ in asked]
        self.log(
            f"[sweep] batch {self.batches + 1}: trials {min(numbers)}-{max(numbers)} in "
            f"{len(groups)} program(s)"
        )
        for line in self._repeats(asked):
            self.log(line)
        for key, members in groups.items():
            if key not in self.programs:
                spec = self.spec
                self.programs[key] = self.make_program(statics[key], spec.algo, spec.num_chunks)
            t0 = time.perf_counter()
            outcomes += train_group(
                self.spec,
                self.programs[key],
                statics[key],
                members,
                devices=self.devices,
                study=self.study,
                heartbeat=self._heartbeat,
                log=self.log,
            )
            self.log(f"  program done in {time.perf_counter() - t0:.1f}s")
        for line in report.batch_lines(self.spec, self.batches + 1, outcomes, self.study):
            self.log(line)
        return outcomes

    def write_reports(self) -> dict[str, Any]:
        """results.csv, objective.png, best_config.yaml and summary.json in the folder."""
        return report.write_reports(self.spec, self.folder, self.study, self.compiles)


def run(
    spec: SweepSpec,
    out: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_batches: int | None = None,
) -> dict[str, Any]:
    """Start a sweep in a new folder and run it to `num_trials` trials. Returns the summary.
    The folder is locked for the sweep's life (`rundir.RunLock`): one writer at a time.
    A shared `storage` is checked first (`sharing.check_joinable`), before the folder exists."""
    if spec.storage is not None:
        check_joinable(spec)
    folder = new_sweep(spec, out)
    lock = RunLock.acquire(folder)
    try:
        return Sweep(spec, folder, log).run(stop_after_batches)
    finally:
        lock.release()


def resume(
    folder: str,
    *,
    log: Callable[[str], None] | None = None,
    stop_after_batches: int | None = None,
) -> dict[str, Any]:
    """Continue the sweep in `folder` (its interrupted trials are run again)."""
    if not is_sweep_folder(folder):
        raise ValueError(f"--resume {folder!r}: no {SPEC_FILE} there; is it a sweep folder?")
    spec = spec_from_dict(load_yaml(os.path.join(folder, SPEC_FILE), "--resume"), base_dir=folder)
    lock = RunLock.acquire(folder)  # a live sweep keeps its trials: refuse a second writer
    try:
        return Sweep(spec, folder, log).run(stop_after_batches)
    finally:
        lock.release()


def _params_key(params: dict[str, Any]) -> str:
    """Trial parameters as a comparable key (names sorted, values by repr)."""
    return repr(sorted((k, repr(v)) for k, v in params.items()))
