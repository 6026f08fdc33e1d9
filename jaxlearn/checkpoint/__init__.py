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


The code: `records` (array conversion, hashes, sealing, signatures) and `manager`
(`Checkpointer`).
"""

from __future__ import annotations

from jaxlearn.checkpoint.manager import Checkpointer
from jaxlearn.checkpoint.records import (
    FORMAT,
    HMAC_ENV,
    CheckpointError,
    arrays_hash,
    from_savable,
    record_hash,
    seal,
    signature_problem,
    to_savable,
)

__all__ = [
    "FORMAT",
    "HMAC_ENV",
    "CheckpointError",
    "Checkpointer",
    "arrays_hash",
    "from_savable",
    "record_hash",
    "seal",
    "signature_problem",
    "to_savable",
]
