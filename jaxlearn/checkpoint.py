"""Checkpoints of whole training runs on top of Orbax's `CheckpointManager`, with integrity.

The storage layer: it knows step folders, records and hashes, and imports nothing of
jaxlearn (which run folder, which config fields exist and their defaults come from the
caller, `jaxlearn.rundir`).

A checkpoint holds the entire train state pytree (parameters, target parameters,
optimizer state, replay buffer, env states, RNG keys, curriculum state, counters), the
host-side metric history, and a JSON record: the algorithm, the resolved config, the
update index, the evaluation return, the tree structure, anything the caller adds
(`extra`), and `arrays_sha256`, a SHA-256 of every array. `sha256` is the SHA-256 of every
other field of the record (the arrays' hash included), so no field that is read back lies
outside it; with `JAXLEARN_CHECKPOINT_KEY` set in the environment the record also carries
an HMAC-SHA256 of `sha256`, and restoring requires it. `signed` (true when a key was set) is
one of the hashed fields: a record that says it is signed and lacks a well-formed `hmac` is
refused with or without a key, so deleting the signature alone does not make a signed
checkpoint load as an unsigned one.

What holds without a key: the hash catches corruption and any edit that does not recompute
it. Someone who can write the files can still edit a record, set `signed` to false, drop
`hmac` and recompute `sha256`; nothing but a secret can tell that apart from a genuine
unsigned checkpoint. With the key set, only records signed with that key load (unsigned
ones are refused), so set the key wherever signed checkpoints are read.

Saving copies the arrays to the host (the only device stall) and lets Orbax write them in
a background thread; Orbax writes into a temporary folder and renames it when complete, so
a process killed mid-save leaves nothing that lists as a checkpoint. A step is *committed*
once that write has finished and the step lists on disk: `on_commit(step, record)` is called
then (from `save`, `poll`, `wait` or `close`, on the caller's thread), never before. A save
that Orbax declines, or whose write fails, raises `CheckpointError`.

Restoring checks the record (its hash and HMAC, then algorithm, config, tree structure)
before reading any array, then the hash of what was read: an edited, tampered, truncated or
foreign checkpoint raises `CheckpointError` naming the step and the reason, and older
checkpoints stay untouched and loadable. Checkpoints written by jaxlearn before format 2
(whose hash left `step` and `eval_return` out) are refused with a message saying so.

Retention: the newest `keep` checkpoints, plus the one with the best evaluation return.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

HMAC_ENV = "JAXLEARN_CHECKPOINT_KEY"
FORMAT = 2  # 1: the hash covered the arrays and the config only (refused, see `restore`)
_UNHASHED = ("sha256", "hmac")  # the record fields that are not part of its own hash


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, tampered with, or belongs to another run; or a
    save was declined or failed."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _empty(x: Any) -> bool:
    return not _is_key(x) and math.prod(np.shape(x)) == 0


def to_savable(tree: Any) -> Any:
    """Typed PRNG keys -> their raw uint32 data, and zero-size arrays (which Orbax refuses)
    -> a `[]` zero of the same dtype; `from_savable` undoes both."""

    def conv(x):
        if _is_key(x):
            return jax.random.key_data(x)
        if _empty(x):
            return np.zeros((), x.dtype)
        return x

    return jax.tree.map(conv, tree)


def from_savable(tree: Any, like: Any) -> Any:
    """Inverse of `to_savable`, with key implementations and empty shapes from `like`."""

    def conv(x, ref):
        if _is_key(ref):  # the key dtype carries its implementation, concrete or abstract
            return jax.random.wrap_key_data(x, impl=ref.dtype._impl)
        if _empty(ref):
            return np.zeros(np.shape(ref), ref.dtype)
        return x

    return jax.tree.map(conv, tree, like)


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs of the savable form of `tree` (concrete or abstract)."""

    def conv(x):
        if _is_key(x):
            return jax.eval_shape(jax.random.key_data, x)
        if _empty(x):
            return jax.ShapeDtypeStruct((), x.dtype)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

    return jax.tree.map(conv, tree)


def arrays_hash(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in record.items() if k not in _UNHASHED},
        sort_keys=True,
        separators=(",", ":"),
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of every field of `record` but `sha256` and `hmac` (canonical JSON)."""
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


def _signature(digest: str) -> str | None:
    key = os.environ.get(HMAC_ENV)
    if not key:
        return None
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def seal(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as JSON reads it back, with `signed`, `sha256` and `hmac` added.

    `signed` is whether `$JAXLEARN_CHECKPOINT_KEY` is set; it is hashed with every other
    field, and `hmac` is the HMAC-SHA256 of `sha256` with that key (None without one).
    Exports (`jaxlearn.export`) seal their `policy.json` the same way.
    """
    # exactly what JSON reads back (tuples -> lists, numpy scalars -> numbers), hashed
    out = json.loads(json.dumps(dict(record), default=_json_value))
    out["signed"] = bool(os.environ.get(HMAC_ENV))
    out["sha256"] = record_hash(out)
    out["hmac"] = _signature(out["sha256"])
    return out


def signature_problem(record: Mapping[str, Any]) -> str | None:
    """Why the signature of a record (whose `sha256` already matched) is not acceptable, as
    the end of a sentence about the record; None when it is.

    A record that says `signed: true` needs a well-formed `hmac`, with or without a key.
    With `$JAXLEARN_CHECKPOINT_KEY` set, the `hmac` must be that key's (unsigned records are
    refused); without one, a signed record is refused too (it cannot be verified).
    Records written before the `signed` field existed are judged by their `hmac` alone.
    """
    signed = record.get("signed")
    mac = record.get("hmac")
    if "signed" in record and not isinstance(signed, bool):
        return f"has signed={signed!r}: it must be true or false"
    if signed is True and not (isinstance(mac, str) and _HEX64.fullmatch(mac)):
        return (
            "says it is signed but carries no valid HMAC (the signature was removed or "
            "damaged); it is refused"
        )
    if signed is False and mac is not None:
        return "says it is unsigned but carries an HMAC (edited); it is refused"
    expected = _signature(str(record.get("sha256")))
    got = mac.encode() if isinstance(mac, str) else b""  # bytes: any text compares safely
    if expected is not None and not hmac.compare_digest(expected.encode(), got):
        return f"has a missing or wrong HMAC signature for the key in ${HMAC_ENV}"
    if expected is None and (signed or mac):
        return f"is signed; set ${HMAC_ENV} to the signing key to verify and load it"
    return None


def _json_value(x: Any) -> Any:
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    raise TypeError(f"checkpoint record: {type(x).__name__} is not JSON serialisable")


def _structure(tree: Any) -> str:
    """The tree structure with every leaf's shape and dtype (keys as key dtypes)."""
    leaves, treedef = jax.tree.flatten(tree)
    return f"{treedef}|" + ",".join(f"{x.dtype}{list(np.shape(x))}" for x in leaves)


def _config_diff(
    current: Mapping[str, Any],
    saved: Mapping[str, Any],
    defaults: Mapping[str, Sequence[Any]],
) -> list[str]:
    """Fields whose values differ. A field missing from `saved` (added to jaxlearn after the
    checkpoint was written) matches when `current` holds one of its `defaults`."""
    diff = []
    for k in sorted(set(current) | set(saved)):
        if k not in saved and k in current:
            value = current[k]
            if any(
                value == x or (isinstance(x, tuple) and value == list(x))
                for x in defaults.get(k, ())
            ):
                continue
        if current.get(k) != saved.get(k):
            diff.append(k)
    return diff


def _eval_return(metrics: Mapping[str, Any]) -> float:
    return metrics["eval_return"]


def _quiet_missing_metrics() -> None:
    """Drop Orbax's warning for a save without metrics (runs without evaluations)."""
    log = logging.getLogger("absl")
    if not any(getattr(f, "_jaxlearn", False) for f in log.filters):

        def keep(record: logging.LogRecord) -> bool:
            return "did not provide metrics" not in record.getMessage()

        keep._jaxlearn = True  # type: ignore[attr-defined]
        log.addFilter(keep)


class Checkpointer:
    """Save and restore whole runs in `directory` (created if missing).

    Args:
        directory: where step folders go (e.g. `RUN_DIR/checkpoints`).
        keep: newest checkpoints kept (older ones are deleted, except the best).
        async_save: write in a background thread (Orbax) after the host copy.
        on_commit: `(step, record) -> None`, called once per saved step when it is
            committed (written completely and listed), on the thread that called `save`,
            `poll`, `wait` or `close`.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 3,
        async_save: bool = True,
        on_commit: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        import orbax.checkpoint as ocp
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"Checkpointer: keep={keep!r} is invalid: must be an int >= 1")
        self._ocp = ocp
        self._on_commit = on_commit
        self._pending: tuple[int, dict[str, Any]] | None = None  # saved, not committed
        self._closed = False
        self.directory = os.path.abspath(directory)
        policy = pp.AnyPreservationPolicy(
            [
                pp.LatestN(keep),
                pp.BestN(
                    get_metric_fn=_eval_return,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        # In a multi-process run every process saves its own seeds on its own: Orbax would
        # otherwise treat host arrays as replicated and let process 0 alone write them.
        rank = jax.process_index()
        os.makedirs(self.directory, exist_ok=True)
        multi = jax.process_count() > 1
        multiprocessing = ocp.options.MultiprocessingOptions(
            primary_host=rank,
            active_processes={rank} if multi else None,
            barrier_sync_key_prefix=f"jaxlearn_process_{rank}" if multi else None,
        )
        # The item handlers need the same options: Orbax builds them with primary_host=0
        # otherwise, and process i > 0 would write empty `state`/`record` folders.
        _quiet_missing_metrics()
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        standard = (ocp.StandardCheckpointHandler, ocp.args.StandardSave, ocp.args.StandardRestore)
        json_ = (ocp.JsonCheckpointHandler, ocp.args.JsonSave, ocp.args.JsonRestore)
        for item, (handler, save_args, restore_args) in (
            ("state", standard),
            ("history", standard),
            ("record", json_),
        ):
            h = handler(multiprocessing_options=multiprocessing)
            registry.add(item, save_args, h)
            registry.add(item, restore_args, h)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                # Orbax writes each step's metrics to disk only with a best_fn; without
                # them a reloaded manager (a resumed run) forgets the best step's return
                # and retention deletes it
                best_fn=_eval_return,
                best_mode="max",
                enable_async_checkpointing=async_save and not multi,
                create=jax.process_count() == 1,
                multiprocessing_options=multiprocessing,
            ),
            handler_registry=registry,
        )

    # ---- save ---------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        algo: str,
        config: dict[str, Any],
        history: dict[str, np.ndarray] | None = None,
        eval_return: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Save `state` (any pytree, e.g. seeds stacked on a leading axis) as `step`.

        `config` is the run's resolved config (JSON-able); `history` the host-side metric
        arrays so far; `eval_return` ranks checkpoints for the best one; `extra` more
        JSON-able record fields. The write finishes in the background: the step is
        committed (and `on_commit` called) by a later `poll`, `wait`, `save` or `close`.

        Raises:
            CheckpointError: the previous save's write failed, or Orbax declines to save
                `step` (e.g. a checkpoint of this or a later step exists).
        """
        ocp = self._ocp
        step = int(step)
        self.wait()  # the previous step is committed (or its failure raised) first
        if not self.manager.should_save(step):
            raise CheckpointError(self._declined(step))
        host = jax.device_get(to_savable(state))  # the device copy; the rest is host work
        history = {k: np.asarray(v) for k, v in (history or {}).items()}
        record = {
            "format": FORMAT,
            "algo": algo,
            "step": step,
            "config": config,
            "structure": _structure(state),
            "arrays_sha256": arrays_hash({"state": host, "history": history}),
            "eval_return": None if eval_return is None else float(eval_return),
            **(extra or {}),
        }
        record = seal(record)
        items = {
            "state": ocp.args.StandardSave(host),
            "record": ocp.args.JsonSave(record),
        }
        if history:
            items["history"] = ocp.args.StandardSave(history)
        metrics = None if eval_return is None else {"eval_return": float(eval_return)}
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
        except Exception as e:  # noqa: BLE001 - any write failure is a failed save
            raise CheckpointError(
                f"saving checkpoint {step} in {self.directory} failed: {e}"
            ) from e
        if not saved:
            raise CheckpointError(self._declined(step))
        self._pending = (step, record)
        if not self.manager.is_saving_in_progress():  # a synchronous save: done already
            self.wait()

    def _declined(self, step: int) -> str:
        latest = self.manager.latest_step()
        return (
            f"checkpoint {step} was not saved: Orbax declined to write it in {self.directory} "
            f"(its newest checkpoint is step {latest}; a step can be saved only once, after "
            "the newest)"
        )

    def poll(self) -> None:
        """Commit the pending step if its background write has finished (never blocks)."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Block until the pending write is complete; commit it (calling `on_commit`).

        Raises:
            CheckpointError: the write failed, or its step does not list as complete.
        """
        pending, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - Orbax re-raises the writer thread's error
            what = f"checkpoint {pending[0]}" if pending else "a checkpoint"
            raise CheckpointError(f"writing {what} in {self.directory} failed: {e}") from e
        if pending is None:
            return
        step, record = pending
        # Orbax renames the step's temporary folder to its final name once complete (a
        # listing, not `steps()`: reloading Orbax's cache would drop the metrics it ranks by)
        if not os.path.isdir(os.path.join(self.directory, str(step))):
            raise CheckpointError(
                f"checkpoint {step} was not committed: its write in {self.directory} ended "
                "but the step does not list as a complete checkpoint"
            )
        if self._on_commit is not None:
            self._on_commit(step, record)

    def close(self, quiet: bool = False) -> None:
        """Commit the pending step (as `wait`), then release Orbax's resources; a no-op
        when closed already. `quiet`: a failed pending write raises nothing (for a caller
        that is already handling another error)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        except CheckpointError:
            if not quiet:
                raise
        finally:
            self.manager.close()

    def set_aside(self, step: int, destination: str) -> None:
        """Move the folder of `step` to `destination` (e.g. a damaged checkpoint kept for
        the user); the step no longer lists, and can be saved again."""
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        os.rename(os.path.join(self.directory, str(step)), destination)
        self.manager.reload()

    # ---- query --------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def record(self, step: int) -> dict[str, Any]:
        """The JSON record of `step`, unverified (raises CheckpointError when unreadable);
        `verified_record` checks it."""
        ocp = self._ocp
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
            return dict(out["record"])
        except Exception as e:  # noqa: BLE001 - any read failure means a damaged checkpoint
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is unreadable: {e}"
            ) from e

    def verified_record(self, step: int) -> dict[str, Any]:
        """The record of `step` after checking its format, its hash (every field) and its
        signature (`signature_problem`: with a key in `$JAXLEARN_CHECKPOINT_KEY`, its HMAC);
        no array is read.

        Raises:
            CheckpointError: unreadable, written by an older format, edited, a missing or
                wrong signature, or a record that says it is signed without an HMAC.
        """
        record = self.record(step)
        where = f"checkpoint step {step} in {self.directory}"
        fmt = record.get("format")
        if fmt != FORMAT:
            if fmt == 1:
                raise CheckpointError(
                    f"{where} was written by an older jaxlearn (checkpoint format 1), whose "
                    "hash and HMAC did not cover the record's step and evaluation return; "
                    "it cannot be verified, so it is refused: start a new run, or load it "
                    "with the jaxlearn version that wrote it"
                )
            raise CheckpointError(f"{where} has format {fmt!r}, not {FORMAT}")
        if record_hash(record) != record.get("sha256"):
            raise CheckpointError(
                f"{where} failed its integrity check: its record (step, evaluation return, "
                "config, structure, ...) does not match the hash recorded at save time "
                "(edited or corrupt)"
            )
        problem = signature_problem(record)
        if problem is not None:
            raise CheckpointError(f"{where} {problem}")
        return record

    def best_step(self) -> int | None:
        """The step with the highest evaluation return among checkpoints whose records
        verify (an edited record is no candidate); None without evaluations."""
        best, best_ret = None, -np.inf
        for s in self.steps():
            try:
                r = self.verified_record(s).get("eval_return")
            except CheckpointError:
                continue
            if r is not None and r > best_ret:
                best, best_ret = s, r
        return best

    # ---- restore ------------------------------------------------------------------------

    def restore(
        self,
        step: int | None,
        like: Any,
        *,
        algo: str | None = None,
        config: dict[str, Any] | None = None,
        defaults: Mapping[str, Sequence[Any]] | None = None,
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
        """Restore `step` (None: the latest) into the structure of `like`.

        Args:
            like: a state of the right structure (concrete, or `jax.eval_shape` output).
            algo, config: when given, the checkpoint must have been written by this
                algorithm with this config (a foreign checkpoint raises before any array
                is read).
            defaults: config field -> its default values; a field missing from the saved
                config (added after the checkpoint was written) matches a default.

        Returns:
            (state, history, record).

        Raises:
            CheckpointError: no checkpoint, an edited record, damaged or tampered data, a
                bad signature, an older format, or another run's checkpoint.
        """
        ocp = self._ocp
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {self.directory}")
        if step not in self.steps():
            raise CheckpointError(
                f"no complete checkpoint at step {step} in {self.directory}; "
                f"available: {self.steps()}"
            )
        record = self.verified_record(step)
        where = f"checkpoint step {step} in {self.directory}"
        if algo is not None and record.get("algo") != algo:
            raise CheckpointError(
                f"{where} was written by algo={record.get('algo')!r}; this run is algo={algo!r}"
            )
        if config is not None and record.get("config") != config:
            diff = _config_diff(config, record.get("config") or {}, defaults or {})
            if diff:
                raise CheckpointError(
                    f"{where} was written with another config (fields differ: {diff})"
                )
        if record.get("structure") != _structure(like):
            raise CheckpointError(
                f"{where} holds a state of another structure (another algorithm, network "
                "or buffer shape); it cannot be restored into this run"
            )
        items = {"state": ocp.args.StandardRestore(_abstract(like))}
        try:
            if "history" in (self.manager.item_metadata(step) or {}):
                items["history"] = ocp.args.StandardRestore()
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{where} is damaged (truncated or corrupt): {e}") from e
        host = jax.tree.map(np.asarray, out["state"])
        history = {k: np.asarray(v) for k, v in (out.get("history") or {}).items()}
        if arrays_hash({"state": host, "history": history}) != record.get("arrays_sha256"):
            raise CheckpointError(
                f"{where} failed its integrity check: the content hash of its arrays does "
                "not match the one recorded at save time (tampered or corrupt)"
            )
        return from_savable(host, like), history, record

    def restore_latest_valid(
        self, like: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any], list[tuple[int, str]]]:
        """Like `restore`, from the newest checkpoint that passes every check.

        Returns `(state, history, record, skipped)` where `skipped` lists `(step, reason)` of
        newer checkpoints that failed. Raises CheckpointError if none is valid.
        """
        skipped = []
        for step in reversed(self.steps()):
            try:
                return (*self.restore(step, like, **kwargs), skipped)
            except CheckpointError as e:
                skipped.append((step, str(e)))
        reasons = "; ".join(r for _, r in skipped) or "none saved"
        raise CheckpointError(f"no valid checkpoint in {self.directory}: {reasons}")
