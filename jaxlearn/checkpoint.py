"""Checkpoints of whole training runs on top of Orbax's `CheckpointManager`, with integrity.

A checkpoint holds the entire train state pytree (parameters, target parameters,
optimizer state, replay buffer, env states, RNG keys, curriculum state, counters), the
host-side metric history, and a JSON record: the algorithm, the resolved config, the
update index, the evaluation return, and a SHA-256 content hash of every array and of the
config. With `JAXLEARN_CHECKPOINT_KEY` set in the environment, the record also carries an
HMAC-SHA256 of that hash, and restoring requires it.

Saving copies the arrays to the host (the only device stall) and lets Orbax write them in
a background thread; Orbax writes into a temporary folder and renames it when complete, so
a process killed mid-save leaves nothing that lists as a checkpoint. Restoring checks the
record (algorithm, config, tree structure) before reading any array, then the hash of what
was read: a tampered, truncated or foreign checkpoint raises `CheckpointError` naming the
step and the reason, and older checkpoints stay untouched and loadable.

Retention: the newest `keep` checkpoints, plus the one with the best evaluation return.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from typing import Any

import jax
import numpy as np

HMAC_ENV = "JAXLEARN_CHECKPOINT_KEY"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, tampered with, or belongs to another run."""


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


def content_hash(tree: Any, config: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, then the config's JSON."""
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _signature(digest: str) -> str | None:
    key = os.environ.get(HMAC_ENV)
    if not key:
        return None
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


def _structure(tree: Any) -> str:
    """The tree structure with every leaf's shape and dtype (keys as key dtypes)."""
    leaves, treedef = jax.tree.flatten(tree)
    return f"{treedef}|" + ",".join(f"{x.dtype}{list(np.shape(x))}" for x in leaves)


def _field_defaults() -> dict[str, Any]:
    """Default value of every run and algorithm config field (for configs saved before a
    field existed)."""
    import dataclasses

    from jaxlearn import algos
    from jaxlearn.runner import RunConfig

    out: dict[str, Any] = {}
    for cls in (RunConfig, *(c for c, _ in algos.ALGOS.values())):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, []).append(f.default)
    return out


def _config_diff(current: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Fields whose values differ. A field missing from `saved` (added to jaxlearn after the
    checkpoint was written) matches when `current` holds its default."""
    defaults = _field_defaults()
    diff = []
    for k in sorted(set(current) | set(saved)):
        if k not in saved and k in current:
            d = defaults.get(k, [])
            value = current[k]
            if any(value == x or (isinstance(x, tuple) and value == list(x)) for x in d):
                continue
        if current.get(k) != saved.get(k):
            diff.append(k)
    return diff


class Checkpointer:
    """Save and restore whole runs in `directory` (created if missing).

    Args:
        directory: where step folders go (e.g. `RUN_DIR/checkpoints`).
        keep: newest checkpoints kept (older ones are deleted, except the best).
        async_save: write in a background thread (Orbax) after the host copy.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"Checkpointer: keep={keep!r} is invalid: must be an int >= 1")
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        policy = pp.AnyPreservationPolicy(
            [
                pp.LatestN(keep),
                pp.BestN(
                    get_metric_fn=lambda m: m["eval_return"],
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
        arrays so far; `eval_return` ranks checkpoints for the best one.
        """
        ocp = self._ocp
        host = jax.device_get(to_savable(state))  # the device copy; the rest is host work
        history = {k: np.asarray(v) for k, v in (history or {}).items()}
        digest = content_hash({"state": host, "history": history}, config)
        record = {
            "format": FORMAT,
            "algo": algo,
            "step": int(step),
            "config": config,
            "structure": _structure(state),
            "sha256": digest,
            "hmac": _signature(digest),
            "eval_return": None if eval_return is None else float(eval_return),
            **(extra or {}),
        }
        items = {
            "state": ocp.args.StandardSave(host),
            "record": ocp.args.JsonSave(record),
        }
        if history:
            items["history"] = ocp.args.StandardSave(history)
        metrics = None if eval_return is None else {"eval_return": float(eval_return)}
        self.manager.wait_until_finished()
        self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics)

    def wait(self) -> None:
        """Block until pending background writes are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ---- query --------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def record(self, step: int) -> dict[str, Any]:
        """The JSON record of `step` (raises CheckpointError when unreadable)."""
        ocp = self._ocp
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
            return dict(out["record"])
        except Exception as e:  # noqa: BLE001 - any read failure means a damaged checkpoint
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is unreadable: {e}"
            ) from e

    def best_step(self) -> int | None:
        """The step with the highest recorded evaluation return (None without evaluations)."""
        best, best_ret = None, -np.inf
        for s in self.steps():
            try:
                r = self.record(s).get("eval_return")
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
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
        """Restore `step` (None: the latest) into the structure of `like`.

        Args:
            like: a state of the right structure (concrete, or `jax.eval_shape` output).
            algo, config: when given, the checkpoint must have been written by this
                algorithm with this config (a foreign checkpoint raises before any array
                is read).

        Returns:
            (state, history, record).

        Raises:
            CheckpointError: no checkpoint, damaged or tampered data, bad signature, or
                another run's checkpoint.
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
        record = self.record(step)
        where = f"checkpoint step {step} in {self.directory}"
        if record.get("format") != FORMAT:
            raise CheckpointError(f"{where} has format {record.get('format')}, not {FORMAT}")
        if algo is not None and record.get("algo") != algo:
            raise CheckpointError(
                f"{where} was written by algo={record.get('algo')!r}; this run is algo={algo!r}"
            )
        if config is not None and record.get("config") != config:
            diff = _config_diff(config, record.get("config") or {})
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
        digest = content_hash({"state": host, "history": history}, record["config"])
        if digest != record.get("sha256"):
            raise CheckpointError(
                f"{where} failed its integrity check: the content hash of its arrays and "
                "config does not match the one recorded at save time (tampered or corrupt)"
            )
        expected = _signature(digest)
        if expected is not None and not hmac.compare_digest(expected, record.get("hmac") or ""):
            raise CheckpointError(
                f"{where} has a missing or wrong HMAC signature for the key in ${HMAC_ENV}"
            )
        if expected is None and record.get("hmac"):
            raise CheckpointError(
                f"{where} is signed; set ${HMAC_ENV} to the signing key to verify and load it"
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
