"""Sweeps never repeat work silently: resumes and extra workers propose new parameters;
spec fields that name files, folders or databases are checked before anything is written."""

from __future__ import annotations

import math
import multiprocessing
import os
import time

import pytest
from optuna.trial import TrialState

from jaxlearn import sweep
from jaxlearn.config import ConfigError

SPACE = {
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "ent_coef": {"low": 0.0, "high": 0.05},
}


def _spec(**extra):
    raw = {
        "config": {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64},
        "space": SPACE,
        "num_trials": 64,
        **extra,
    }
    return sweep.spec_from_dict(raw)


def _ask_and_finish(s: sweep.Sweep, n: int) -> list[tuple]:
    """Ask `n` trials and complete them with a dummy value; their parameter sets."""
    out = []
    for _ in range(n):
        trial, params = s._ask()
        s.study.tell(trial, float(params["learning_rate"]))
        out.append(tuple(sorted(params.items())))
    return out


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_resume_proposes_new_parameters(tmp_path, sampler):
    spec = _spec(sampler=sampler)
    folder = sweep.new_sweep(spec, str(tmp_path / "sw"))
    first = _ask_and_finish(sweep.Sweep(spec, folder), 4)
    resumed = _ask_and_finish(sweep.Sweep(spec, folder), 4)  # a new process, same folder
    assert len(set(first + resumed)) == 8


def test_a_fresh_sweep_is_reproducible_from_its_seed(tmp_path):
    spec = _spec(sampler="random", seed=7)
    a = _ask_and_finish(sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "a"))), 3)
    b = _ask_and_finish(sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "b"))), 3)
    assert a == b


def test_two_workers_on_one_study_propose_distinct_parameters(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = _spec(storage=db, sampler="tpe")
    w1 = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "w1")))
    w2 = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "w2")))
    got = []
    for _ in range(3):  # interleaved, as two machines would
        got += _ask_and_finish(w1, 2) + _ask_and_finish(w2, 2)
    assert len(got) == 12 and len(set(got)) == 12
    seeds = [t.user_attrs["seed_index"] for t in w1.study.get_trials()]
    assert sorted(seeds) == list(range(12))  # trial seeds stay the trial numbers


GRID = {
    "learning_rate": {"choices": [1e-3, 3e-3]},
    "ent_coef": {"low": 0.0, "high": 0.02, "step": 0.01},
}


def test_a_grid_sweep_trains_every_point_once_even_interrupted(tmp_path):
    spec = _spec(sampler="grid", space=GRID, num_trials=6)
    left_out = {"config": {"total_timesteps": 2048}, "space": GRID, "sampler": "grid"}
    assert spec.num_trials == 6 and sweep.spec_from_dict(left_out).num_trials == 6
    folder = sweep.new_sweep(spec, str(tmp_path / "sw"))
    s = sweep.Sweep(spec, folder)
    got = _ask_and_finish(s, 2)
    s._ask()  # left RUNNING: the process is interrupted here
    resumed = sweep.Sweep(spec, folder)
    assert resumed.recover() == 1
    got += _ask_and_finish(resumed, 4)
    points = {
        (("ent_coef", e), ("learning_rate", lr)) for lr in (1e-3, 3e-3) for e in (0.0, 0.01, 0.02)
    }
    assert set(got) == points and len(got) == 6  # the interrupted point ran again, no other twice
    assert resumed._counted() == spec.num_trials


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"num_trials": 4}, "sweep.num_trials=4 is invalid: sampler grid trains each of the 6"),
        ({"space": SPACE}, "sweep.space.learning_rate=.*sampler grid needs choices or a step"),
        ({"space": {"ent_coef": {"low": 0.0, "high": 1.0, "step": 1e-5}}}, "at most 10000"),
    ],
)
def test_a_grid_needs_a_finite_space_and_its_own_trial_count(extra, message):
    with pytest.raises(ConfigError, match=message):
        _spec(sampler="grid", **{"space": GRID, **extra})


def _open_study(args):
    spec_db, folder = args
    spec = _spec(storage=spec_db)
    s = sweep.Sweep(spec, sweep.new_sweep(spec, folder))
    return len(s.study.get_trials())


@pytest.mark.slow  # two fresh interpreters importing jax
def test_two_sweeps_create_one_new_sqlite_study_together(tmp_path):
    db = f"sqlite:///{tmp_path / 'new.db'}"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.map(_open_study, [(db, str(tmp_path / "a")), (db, str(tmp_path / "b"))])
    assert counts == [0, 0]


def test_stale_trials_of_a_dead_worker_run_again(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = _spec(storage=db, sampler="random")
    dead = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "dead")))
    trial, params = dead._ask()  # left RUNNING: that worker never reports again
    live = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "live")))
    live.storage.grace_period = 0  # the dead worker's heartbeat is now stale
    time.sleep(1.5)  # the database clock counts whole seconds
    retry, retry_params = live._ask()
    frozen = {t.number: t for t in live.study.get_trials()}
    assert frozen[trial.number].state == TrialState.FAIL
    assert retry_params == params and retry.user_attrs["retry_of"] == trial.number
    assert retry.user_attrs["seed_index"] == trial.user_attrs["seed_index"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("name", "../../../tmp/x", "sweep.name="),
        ("name", "a/b", "sweep.name="),
        ("name", "", "sweep.name="),
        ("storage", "notaurl://x", "sweep.storage="),
        ("storage", 5, "sweep.storage="),
    ],
)
def test_bad_names_and_storage_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        _spec(**{field: value})


@pytest.mark.parametrize("bound", [math.inf, -math.inf, math.nan, 1e39])
def test_space_bounds_must_be_finite(bound):
    space = {"learning_rate": {"low": 1e-4, "high": bound}}
    with pytest.raises(ConfigError, match="space.learning_rate.high"):
        sweep.spec_from_dict({"space": space})


def test_refused_spec_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        _spec(name="../escape")
    assert os.listdir(tmp_path) == []


def test_a_live_sweep_refuses_a_second_writer(tmp_path):
    from jaxlearn.rundir import RunLock, RunLockedError

    spec = _spec()
    folder = sweep.new_sweep(spec, str(tmp_path / "sw"))
    held = RunLock.acquire(folder)  # as a running `sweep.py` holds it
    try:
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            sweep.resume(folder)
    finally:
        held.release()
    assert not any(f.endswith(".db") for f in os.listdir(folder))  # nothing was touched


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"seed": 2**32}, r"sweep.seed=4294967296 .*\[0, 4294967295\]"),
        ({"study_name": ["a"]}, r"sweep.study_name=\['a'\] .*non-empty string"),
        ({"base": 5}, r"sweep.base=5 .*non-empty string"),
        ({"objective": 3}, r"sweep.objective=3 .*non-empty string"),
        ({"devices": 1.5}, r"sweep.devices=1.5 is invalid"),
        ({"space": {"num_minibatches": {"low": 1, "high": 8, "step": 0.5}}}, "integer step"),
        ({"space": {"ent_coef": {"low": 0.0, "high": 0.1, "step": math.inf}}}, "finite number"),
        ({"space": {"ent_coef": {"low": 0.0, "high": 0.1, "step": math.nan}}}, "finite number"),
        ({"space": {"ent_coef": {"low": 0.0, "high": 0.1, "step": 0.5}}}, "at most high - low"),
        ({"space": {"hidden_sizes": {"choices": [64]}}}, "hidden_sizes: 64 is not a list"),
    ],
)
def test_odd_spec_values_are_refused_naming_the_field(extra, message):
    with pytest.raises(ValueError, match=message):
        _spec(**extra)


def _foreign_study(db, direction, name="jaxlearn"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=db, direction=direction)
    study.optimize(lambda t: t.suggest_float("learning_rate", 0.1, 0.9), n_trials=2)


@pytest.mark.parametrize(
    "direction, message",
    [("minimize", "existing study that minimizes"), ("maximize", "no jaxlearn sweep recorded")],
)
def test_a_new_sweep_never_joins_a_study_it_did_not_make(tmp_path, direction, message):
    db = f"sqlite:///{tmp_path / 'other.db'}"
    _foreign_study(db, direction)
    with pytest.raises(ValueError, match=message):
        sweep.run(_spec(storage=db), str(tmp_path / "sw"))
    assert not os.path.exists(tmp_path / "sw")


def test_a_shared_study_takes_workers_of_the_same_spec_only(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = _spec(storage=db, sampler="random")
    first = sweep.Sweep(spec, sweep.new_sweep(spec, str(tmp_path / "w1")))
    _ask_and_finish(first, 2)
    sweep.sharing.check_joinable(_spec(storage=db, sampler="random", num_trials=8))  # same
    other = _spec(storage=db, space={"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}})
    with pytest.raises(ValueError, match=r"holds another sweep's trials \(its space differ"):
        sweep.run(other, str(tmp_path / "w2"))
    assert not os.path.exists(tmp_path / "w2")


def test_a_storage_that_cannot_be_opened_is_refused_before_the_folder(tmp_path):
    spec = _spec(storage=f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(ValueError, match="sweep.storage=.* cannot be opened"):
        sweep.run(spec, str(tmp_path / "sw"))
    assert not os.path.exists(tmp_path / "sw")
