"""`Checkpointer`: saving, listing, retaining and restoring the checkpoints of one run on top
of Orbax's `CheckpointManager` (see `jaxlearn.checkpoint`). Imports nothing of jaxlearn
outside this package: which run folder, which config fields and their defaults come from
the caller."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxlearn.checkpoint.records import (
    FORMAT,
    CheckpointError,
    abstract_tree,
    arrays_hash,
    config_diff,
    from_savable,
    record_hash,
    seal,
    signature_problem,
    to_savable,
    tree_structure,
)


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
            "structure": tree_structure(state),
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
            diff = config_diff(config, record.get("config") or {}, defaults or {})
            if diff:
                raise CheckpointError(
                    f"{where} was written with another config (fields differ: {diff})"
                )
        if record.get("structure") != tree_structure(like):
            raise CheckpointError(
                f"{where} holds a state of another structure (another algorithm, network "
                "or buffer shape); it cannot be restored into this run"
            )
        items = {"state": ocp.args.StandardRestore(abstract_tree(like))}
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
