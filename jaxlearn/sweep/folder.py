"""The sweep folder: its layout, creating it, and copying its best config out.

SWEEP_DIR/
  sweep.yaml          the resolved spec (base config inlined): what --resume reads
  worker.json         this folder's worker id (its trials in a shared study)
  writer.lock         held by the one process running the sweep (`rundir.RunLock`)
  study.db            the Optuna study (sqlite), unless the spec names a `storage`
  results.csv, objective.png, best_config.yaml, summary.json   (`report`)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import uuid
from typing import Any

import yaml

from jaxlearn.config import to_dict
from jaxlearn.sweep.spec import SweepSpec

SPEC_FILE = "sweep.yaml"
WORKER_FILE = "worker.json"
DB_FILE = "study.db"
RESULTS_FILE = "results.csv"
PLOT_FILE = "objective.png"
BEST_FILE = "best_config.yaml"
SUMMARY_FILE = "summary.json"


def spec_record(spec: SweepSpec) -> dict[str, Any]:
    """The spec as a self-contained mapping (the base config inlined) for sweep.yaml."""
    config = {**to_dict(spec.run_cfg), **to_dict(spec.algo_cfg)}
    config.pop("num_seeds", None)
    config.pop("devices", None)
    config.pop("init_from", None)
    space = {}
    for p in spec.space:
        if p.kind == "categorical":
            space[p.name] = {"choices": list(p.choices)}
        else:
            d: dict[str, Any] = {"low": p.low, "high": p.high, "type": p.kind}
            if p.log:
                d["log"] = True
            if p.step is not None:
                d["step"] = p.step
            space[p.name] = d
    out = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in ("run_cfg", "algo_cfg", "space")
    }
    return {**out, "config": config, "space": space}


def new_sweep(spec: SweepSpec, out: str | None = None) -> str:
    """Create the sweep folder (never an existing one) with sweep.yaml and a worker id.
    Without `out`: sweeps/<name>_<date-time>[-<n>]. Returns its path."""
    if out is not None:
        if os.path.exists(out):
            raise FileExistsError(
                f"--out {out!r} already exists; jaxlearn never overwrites a sweep folder: "
                f"choose a new path, or continue it with --resume {out}"
            )
        _make_folder(out)
        folder = out
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join("sweeps", f"{spec.name}_{stamp}")
        folder, i = base, 1
        while True:
            try:
                _make_folder(folder)
                break
            except FileExistsError:
                folder, i = f"{base}-{i}", i + 1
    with open(os.path.join(folder, SPEC_FILE), "w") as f:
        yaml.safe_dump(spec_record(spec), f, sort_keys=False)
    with open(os.path.join(folder, WORKER_FILE), "w") as f:
        json.dump({"worker": uuid.uuid4().hex}, f)
    return folder


def _make_folder(path: str) -> None:
    """`os.makedirs(path)`; a path that cannot be created (no permission, a file on the way,
    a read-only or special file system) is bad input: ValueError naming `--out`."""
    try:
        os.makedirs(path)
    except FileExistsError:
        raise
    except OSError as e:
        raise ValueError(
            f"--out {path!r}: cannot create a folder there ({e.strerror or e}: "
            f"{e.filename}); choose a writable path"
        ) from None


def is_sweep_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, SPEC_FILE)) and os.path.isfile(
        os.path.join(folder, WORKER_FILE)
    )


def export_best(folder: str, path: str) -> str:
    """Copy the sweep's best_config.yaml to `path` (e.g. experiments/x.yaml); never
    overwrites an existing file."""
    src = os.path.join(folder, BEST_FILE)
    if not os.path.isfile(src):
        raise ValueError(f"{folder!r} has no {BEST_FILE}: no trial completed yet")
    with open(src) as f:
        text = f.read()
    with open(path, "x") as f:  # "x": fails if it exists
        f.write(text)
    return path
