"""The run folder: its layout, its config, its one writer, and reading its checkpoints.

This is the only module that knows where things go in a run folder:

    RUN_DIR/
      config.yaml              the resolved config (run and algorithm fields, flat)
      writer.lock              held (fcntl.flock) by the one process writing the run
      checkpoints/<update>/    Orbax checkpoints (jaxlearn.checkpoint)
      checkpoints_damaged/     checkpoints a resume found damaged, moved aside, never deleted
      events.out.tfevents.*    TensorBoard scalars
      restarted/<time>/        TensorBoard events of an attempt stopped before its first
                               checkpoint (moved aside when --resume restarts it)
      curve.csv, metrics.json, learning_curve.png, curriculum.png, adapters/seed_<i>/
                               written when the run finishes

A folder is created atomically: it is built under a hidden temporary name next to its final
path (config.yaml written, lock taken) and renamed into place, so a failure or a kill never
leaves a half-made run folder, and an existing folder is never reused or overwritten.

One writer at a time: `train`, `resume` (and sweeps) hold an exclusive `fcntl.flock` on
`writer.lock` for their whole life; the file records the holder's pid. A second writer
gets `RunLockedError` naming that pid (a `ConfigError`, the library's user error: scripts
print `error: ...` and exit 2). The kernel drops the lock when the holder exits, however
it exits. Readers
(`load_run`: evaluate, export, `--init-from`) take no lock: they only see checkpoints
that Orbax has finished writing.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import yaml

from jaxlearn import algos
from jaxlearn.checkpoint import Checkpointer, CheckpointError
from jaxlearn.config import ConfigError

# The run's config lives in jaxlearn.runconfig; its names stay importable from here.
from jaxlearn.runconfig import (  # noqa: F401
    RUN_FIELDS,
    RunConfig,
    config_defaults,
    parse_checkpoint,
    resolve_config,
    resolved,
)

CONFIG_FILE = "config.yaml"
LOCK_FILE = "writer.lock"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
RESTARTED_DIR = "restarted"
EVENTS_PREFIX = "events.out.tfevents"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.csv"  # the return per update (jaxlearn.sinks.write_curve)
LEARNING_CURVE_FILE = "learning_curve.png"
CURRICULUM_FILE = "curriculum.png"
ADAPTERS_DIR = "adapters"
ORBAX_LOG = "orbax.log"  # Orbax's own messages during training (jaxlearn.checkpoint.messages)


class RunFolderError(ConfigError):
    """A run folder cannot be used as asked: it exists, is not a run folder, is finished (a
    user error: scripts print `error: ...` and exit 2)."""


class RunLockedError(RunFolderError):
    """Another process is writing the run folder; `pid` is its process id (None if unknown)."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


# ---- the lock --------------------------------------------------------------------------------


class RunLock:
    """An exclusive `fcntl.flock` on `RUN_DIR/writer.lock`, recording the holder's pid."""

    def __init__(self, fd: int, path: str):
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, run_dir: str) -> RunLock:
        """Take the lock of `run_dir` without waiting.

        Raises:
            RunLockedError: another process (or another writer in this one) holds it.
        """
        path = os.path.join(run_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _holder(fd)
            os.close(fd)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            if host and host != socket.gethostname():
                who += f" on {host}"
            raise RunLockedError(
                f"run folder {run_dir!r} is in use by another jaxlearn process ({who}): one "
                "run folder has one writer at a time; wait for it to finish, or stop it and "
                "then --resume",
                pid,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode(), 0)
        return cls(fd, path)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (the pid is erased first); a no-op when already released."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and host recorded in a lock file (None where it holds none)."""
    lines = os.pread(fd, 256, 0).decode(errors="replace").splitlines()
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    host = lines[1].strip() if len(lines) > 1 else None
    return pid, host


# ---- the folder ------------------------------------------------------------------------------


class RunFolder:
    """A run folder's paths; with a `RunLock` when this process is its writer."""

    def __init__(self, path: str, lock: RunLock | None = None):
        self.path = path
        self.lock = lock

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config_file(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def checkpoint_dir(self) -> str:
        return self.file(CHECKPOINT_DIR)

    @property
    def metrics_file(self) -> str:
        return self.file(METRICS_FILE)

    @property
    def curve_file(self) -> str:
        return self.file(CURVE_FILE)

    @property
    def learning_curve_file(self) -> str:
        return self.file(LEARNING_CURVE_FILE)

    @property
    def curriculum_file(self) -> str:
        return self.file(CURRICULUM_FILE)

    @property
    def events_dir(self) -> str:
        """Where TensorBoard writes (the folder itself)."""
        return self.path

    def event_files(self) -> list[str]:
        """The TensorBoard event files in the folder, oldest first."""
        names = sorted(n for n in os.listdir(self.path) if n.startswith(EVENTS_PREFIX))
        return [self.file(n) for n in names]

    def new_event_file(self) -> str:
        """A fresh event file path for this writer (TensorBoard reads them in name order)."""
        stamp = f"{datetime.datetime.now():%Y%m%d%H%M%S%f}"
        return self.file(f"{EVENTS_PREFIX}.{stamp}.{socket.gethostname()}.{os.getpid()}")

    def adapters_dir(self, seed: int) -> str:
        return os.path.join(self.path, ADAPTERS_DIR, f"seed_{seed}")

    def damaged_path(self, step: int) -> str:
        """A fresh place to keep the damaged checkpoint `step` (never deleted)."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        return os.path.join(self.path, DAMAGED_DIR, f"{step}-{stamp}")

    def finished(self) -> bool:
        return os.path.exists(self.metrics_file)

    def read_config(self) -> tuple[RunConfig, Any]:
        return resolve_config(config_file=self.config_file, what="run folder config")

    def checkpointer(self, keep: int = 3, **kwargs: Any) -> Checkpointer:
        return Checkpointer(self.checkpoint_dir, keep=keep, **kwargs)

    def has_checkpoint(self) -> bool:
        """Whether any complete checkpoint lists (damaged ones included)."""
        if not os.path.isdir(self.checkpoint_dir):
            return False
        ckpt = Checkpointer(self.checkpoint_dir, async_save=False)
        try:
            return bool(ckpt.steps())
        finally:
            ckpt.close()

    def latest_checkpoint(self) -> int | None:
        """The newest step folder Orbax has committed (a listing; nothing is verified)."""
        if not os.path.isdir(self.checkpoint_dir):
            return None
        steps = [int(n) for n in os.listdir(self.checkpoint_dir) if n.isdigit()]
        return max(steps, default=None)

    def set_aside_events(self) -> str | None:
        """Move the TensorBoard events in the folder to `restarted/<time>/` (kept, and
        shown by TensorBoard as their own run); returns that folder, None if none."""
        events = [n for n in os.listdir(self.path) if n.startswith(EVENTS_PREFIX)]
        if not events:
            return None
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        dest = os.path.join(self.path, RESTARTED_DIR, stamp)
        os.makedirs(dest)
        for name in events:
            os.rename(self.file(name), os.path.join(dest, name))
        return dest


def default_path(algo: str, env: str) -> str:
    """`runs/{algo}_{env}_{YYYYmmdd-HHMMSS}`, one folder name: an import-path env such as
    `examples.reach_env:make` becomes `examples.reach_env-make` (no ':' or '/', which
    TensorBoard's --logdir and other tools read as separators)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", env).strip("-.") or "env"
    return os.path.join("runs", f"{algo}_{safe}_{stamp}")


def create(out: str | None, run_cfg: RunConfig, algo_cfg: Any) -> RunFolder:
    """Create a new run folder holding config.yaml, locked by this process, atomically.

    With `out` given, it must not exist (`RunFolderError` otherwise). Without it, a fresh
    `runs/{algo}_{env}_{timestamp}` is made (with a numeric suffix on a clash). The folder is
    built under a hidden temporary name in the same parent and renamed into place: on any
    failure nothing is left at `out`, and the lock is held from before it appears.
    """
    if out is not None and not out.strip():
        raise RunFolderError(f"--out {out!r} is invalid: give the path of a folder to create")
    if out is not None and os.path.lexists(out):
        raise RunFolderError(_exists_message(out))
    target = out if out is not None else default_path(run_cfg.algo, algo_cfg.env)
    parent = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(os.path.normpath(target))
    tmp = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(tmp)
    except OSError as e:
        raise RunFolderError(
            f"--out {target!r}: cannot create a folder there ({e.strerror or e}: "
            f"{e.filename}); choose a writable path"
        ) from None
    lock = None
    try:
        lock = RunLock.acquire(tmp)  # the open file keeps the lock across the rename
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            yaml.safe_dump(resolved(run_cfg, algo_cfg), f, sort_keys=False)
        path = _rename_into_place(tmp, target, numbered=out is None)
    except BaseException as e:
        if lock is not None:
            lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # e.g. the disk is full or the folder became read-only
            raise RunFolderError(
                f"--out {target!r}: cannot write the run folder ({e.strerror or e})"
            ) from None
        raise
    lock.path = os.path.join(path, LOCK_FILE)
    return RunFolder(path, lock)


def _exists_message(out: str) -> str:
    return (
        f"--out {out!r} already exists; jaxlearn never overwrites a run folder: choose a new "
        "path or remove it yourself (to continue an interrupted run, use --resume)"
    )


def _rename_into_place(tmp: str, target: str, numbered: bool) -> str:
    """Rename `tmp` to `target` (or `target-1`, `target-2`, ... when `numbered`), never onto
    an existing path: a populated folder refuses the rename, and an existing path of any
    kind is checked first."""
    path, i = target, 1
    while True:
        if not os.path.lexists(path):
            try:
                os.rename(tmp, path)
                return path
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
        if not numbered:
            raise RunFolderError(_exists_message(target))
        path, i = f"{target}-{i}", i + 1


def open_writer(run_dir: str) -> RunFolder:
    """The existing, unfinished run folder `run_dir`, locked by this process (resume).

    Raises:
        RunFolderError: not a run folder (no config.yaml), or already finished.
        RunLockedError: another process is writing it.
    """
    folder = RunFolder(run_dir)
    if not os.path.isfile(folder.config_file):
        raise RunFolderError(f"--resume {run_dir!r}: no {CONFIG_FILE} there; is it a run folder?")
    folder.lock = RunLock.acquire(run_dir)
    if folder.finished():
        folder.release()
        raise RunFolderError(
            f"--resume {run_dir!r}: this run already finished ({METRICS_FILE} exists)"
        )
    return folder


# ---- reading a run's checkpoints -------------------------------------------------------------


class RestoredRun(NamedTuple):
    """A checkpoint of a run folder, restored by `load_run`."""

    run_cfg: Any
    algo_cfg: Any
    learner: Any
    state: Any  # the train state, seeds stacked on a leading axis
    record: dict[str, Any]  # the checkpoint's JSON record (verified)
    step: int  # updates done at the checkpoint
    choice: str  # how the step was chosen: "best", "latest", "latest (no eval returns)", "step"


def load_run(run_dir: str, checkpoint: Any = "best") -> RestoredRun:
    """Restore a checkpoint of the run folder `run_dir` (all seeds); takes no lock.

    Args:
        checkpoint: `"best"` (highest evaluation return among checkpoints whose records
            verify; the latest when none has one), `"latest"`, or an update step.

    Raises:
        ValueError: not a run folder, or an invalid `checkpoint`.
        CheckpointError: no checkpoints, no such step, or a damaged, edited or foreign
            checkpoint.
    """
    checkpoint = parse_checkpoint(checkpoint)
    if not os.path.isdir(run_dir):
        what = "is a file, not a folder" if os.path.exists(run_dir) else "does not exist"
        raise RunFolderError(f"run folder {run_dir!r} {what}")
    folder = RunFolder(run_dir)
    if not os.path.isfile(folder.config_file):
        raise RunFolderError(f"{run_dir!r} has no {CONFIG_FILE}; is it a run folder?")
    if not os.path.isdir(folder.checkpoint_dir):
        raise CheckpointError(f"{run_dir!r} has no {CHECKPOINT_DIR}/ folder: nothing to restore")
    run_cfg, algo_cfg = folder.read_config()
    ckpt = folder.checkpointer(keep=run_cfg.keep_checkpoints, async_save=False)
    try:
        steps = ckpt.steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {ckpt.directory}")
        if checkpoint == "latest":
            step, choice = steps[-1], "latest"
        elif checkpoint == "best":
            step = ckpt.best_step()
            choice = "best"
            if step is None:
                step, choice = steps[-1], "latest (no eval returns)"
        else:
            if checkpoint not in steps:
                raise CheckpointError(
                    f"no checkpoint at step {checkpoint} in {ckpt.directory}; available: {steps}"
                )
            step, choice = checkpoint, "step"
        learner = algos.ALGOS[run_cfg.algo][1](algo_cfg)
        keys = jax.random.split(jax.random.key(run_cfg.seed), run_cfg.num_seeds)
        like = jax.eval_shape(jax.vmap(learner.init, in_axes=(0, None)), keys, learner.hparams)
        state, _, record = ckpt.restore(
            step,
            like,
            algo=run_cfg.algo,
            config=resolved(run_cfg, algo_cfg),
            defaults=config_defaults(),
        )
    finally:
        ckpt.close()
    return RestoredRun(run_cfg, algo_cfg, learner, state, record, int(step), choice)


def read_metrics(run_dir: str) -> Mapping[str, Any]:
    """The finished run's metrics.json."""
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return json.load(f)
