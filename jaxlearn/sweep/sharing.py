"""Opening a sweep's Optuna storage, and checking a shared study before a new sweep joins it.

Several sweep folders (machines) may share one study through `storage` and `study_name`;
their trials are only comparable when they search the same space of the same base config
for the same objective. The study records that as a user attribute (`STUDY_ATTR`, set by
the first jaxlearn sweep that opens it); a new sweep whose spec differs, or a study not made
by a jaxlearn sweep, is refused before its folder is created.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from typing import Any

import optuna

from jaxlearn.sweep.folder import spec_record
from jaxlearn.sweep.spec import SweepSpec

STUDY_ATTR = "jaxlearn:objective"  # what the study's trial values mean (`objective_record`)
# The spec keys that decide what a trial's value means; the others (trial counts, batch
# size, devices, sampler seed, ...) may differ between the workers of one study.
OBJECTIVE_KEYS = (
    "config",
    "space",
    "objective",
    "direction",
    "seeds_per_trial",
    "num_chunks",
    "eval_episodes",
)


class _creating:
    """Serialise creating a study's sqlite tables: two sweeps starting at once on a new
    file otherwise race on Optuna's schema setup (`IntegrityError` on alembic_version).
    Other databases handle concurrent setup themselves."""

    def __init__(self, url: str):
        self.path = url[len("sqlite:///") :] + ".lock" if url.startswith("sqlite:///") else None
        self.fd: int | None = None

    def __enter__(self):
        if self.path:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def open_study(url: str, spec: SweepSpec, **storage_kwargs: Any) -> tuple[Any, Any]:
    """`(storage, study)`: the RDB at `url` (`storage_kwargs` go to `RDBStorage`:
    heartbeats) and the spec's study in it, created if missing."""
    with _creating(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
        storage = optuna.storages.RDBStorage(url, **storage_kwargs)
        study = optuna.create_study(
            study_name=spec.study_name,
            storage=storage,
            direction=spec.direction,
            load_if_exists=True,
        )
    return storage, study


def objective_record(spec: SweepSpec) -> str:
    """The spec's `OBJECTIVE_KEYS` as canonical JSON: equal for sweeps whose values compare."""
    record = spec_record(spec)
    return json.dumps({k: record[k] for k in OBJECTIVE_KEYS}, sort_keys=True, default=str)


def claim(study: Any, spec: SweepSpec) -> None:
    """Record what the study's values mean, if no sweep has yet (a new or an older study)."""
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR, objective_record(spec))


def check_joinable(spec: SweepSpec) -> None:
    """Before a new sweep with `storage` creates its folder: the storage opens, and the
    study `study_name` in it is absent, empty, or holds trials of this same sweep.

    Raises:
        ValueError: the storage cannot be opened, or the study's direction or recorded
            spec differ, or it has trials and no record (made by another program, or by a
            jaxlearn older than the record); the message names `storage`/`study_name`.
    """
    where = f"sweep.study_name={spec.study_name!r} in storage {spec.storage!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(spec.storage)
    except Exception as e:  # noqa: BLE001 - a missing folder, a refused connection, ...
        raise ValueError(
            f"sweep.storage={spec.storage!r} cannot be opened ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else e}); give a reachable database URL"
        ) from None
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=storage)
    except KeyError:
        return  # a new study: this sweep creates it
    if study.direction.name.lower() != spec.direction:
        raise ValueError(
            f"{where} is an existing study that {study.direction.name.lower()}s; this spec "
            f"asks to {spec.direction}: choose another study_name (or --study-name)"
        )
    recorded = study.user_attrs.get(STUDY_ATTR)
    if recorded is None and study.get_trials(deepcopy=False):
        raise ValueError(
            f"{where} is an existing study with trials that no jaxlearn sweep recorded as "
            "its own (another program's, or an older jaxlearn's): its values may not compare "
            "with this spec's; choose another study_name (or --study-name)"
        )
    if recorded is not None and recorded != objective_record(spec):
        mine, theirs = json.loads(objective_record(spec)), json.loads(recorded)
        differ = [k for k in OBJECTIVE_KEYS if mine.get(k) != theirs.get(k)]
        raise ValueError(
            f"{where} holds another sweep's trials (its {', '.join(differ)} differ from this "
            "spec's): choose another study_name (or --study-name), or run the same spec"
        )
