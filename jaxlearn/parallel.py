"""Several devices: seeds sharded over devices, and data-parallel updates of one agent.

**Seeds.** The vmapped seed axis sharded over local devices with `NamedSharding`.

Every array of a vmapped train state has the seeds on its leading axis. Placing that axis
on a one-dimensional mesh (`"seeds"`) and letting `jit` propagate the sharding runs each
device's share of the seeds on that device, with no communication: seeds are independent.
With 8 devices, 8x the seeds train in about the time of one device's share.

Device choice (`RunConfig.devices`, `train.py --devices`):

- `"auto"` (default): all local devices when `num_seeds` is a multiple of their count,
  else one device;
- `"all"`: all local devices (`num_seeds` must be a multiple of their count);
- `N`: the first N local devices (`num_seeds` must be a multiple of N).

**Several processes** (`train.py --distributed`, or `jax.distributed.initialize()` called
before `import jaxlearn`, whose gymnax import starts the XLA backend): JAX's own
distributed runtime connects the processes; each trains `num_seeds / processes` of the
seeds on its local devices (the rules above apply per process), process 0 gathers every
chunk's metrics (`process_allgather`) and writes the run folder, including one checkpoint
of every process's seeds (gathered; each process restores its own on `--resume`).

With `num_seeds = 1` (per process) and several devices (`all` or `N`), the one agent trains data
parallel: its envs are split over the devices (PPO and DQN, whose replay buffer is split
too; `num_envs` must be a multiple, and DQN's `buffer_size` and `batch_size`).

With `num_seeds = 1` in all and several processes, the one agent trains data parallel
across the processes: one global mesh of every process's devices (`process_devices`, the
device rule applied per process), host values placed on it with `put_global`, and
gradients averaged over all of them by the same `pmean`; `fetch` gives every process a
host copy for evaluation and the checkpoint, which process 0 writes.

**One agent, data parallel.** `data_parallel(fn, mesh, sharded)` wraps an update function
with `jax.shard_map` (the successor of `pmap`): the arguments named in `sharded` (a batch
of transitions) are split over the mesh's `"data"` axis, everything else (parameters,
optimizer state, hyperparameters) is replicated, and `fn` averages its gradients with
`lax.pmean(..., "data")`; PPO's `learn` and DQN's `update` take `axis_name="data"` for
this. Every device then applies the same update, so parameters stay identical.

    mesh = data_mesh(jax.local_devices())
    step = data_parallel(partial(learn, policy=policy, config=cfg, axis_name=DATA_AXIS),
                         mesh, sharded=("batch",))
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seeds"
DATA_AXIS = "data"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def select_devices(spec: Any, num_seeds: int, devices: list | None = None) -> list:
    """The devices a run of `num_seeds` seeds uses, from `spec` ("auto", "all" or a count).

    Raises ValueError naming `devices` and what would divide, for an impossible split.
    """
    local = list(devices if devices is not None else jax.local_devices())
    n_local = len(local)
    if spec in (None, "auto"):
        return local if n_local > 1 and num_seeds % n_local == 0 else local[:1]
    if spec == "all":
        n = n_local
    else:
        try:
            n = int(spec)
            if isinstance(spec, float) and spec != n:  # 1.5 devices is not 1
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                f"devices={spec!r} is invalid: use 'auto', 'all' or a count in 1..{n_local}"
            ) from None
        if isinstance(spec, bool) or not 1 <= n <= n_local:
            raise ValueError(
                f"devices={spec!r} is invalid: this machine has {n_local} local device(s); "
                f"use 'auto', 'all' or a count in 1..{n_local}"
            )
    if num_seeds == 1:  # one agent: data parallel over its envs (the learner checks them)
        return local[:n]
    if num_seeds % n:
        fits = [d for d in _divisors(num_seeds) if d <= n_local]
        raise ValueError(
            f"devices={spec!r} gives {n} devices, which does not divide num_seeds={num_seeds}: "
            f"use a device count in {fits}, or a num_seeds that is a multiple of {n}"
        )
    return local[:n]


def seed_mesh(devices: list) -> Mesh:
    """A one-dimensional mesh over `devices` with axis name `"seeds"`."""
    return Mesh(np.asarray(devices), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf's leading (seed) axis over the mesh's devices."""
    sharding = seed_sharding(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A full copy of every leaf on every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def process_devices(per_process: int) -> list:
    """Every process's first `per_process` local devices, in process order: the devices of
    one agent trained data parallel across processes (hosts)."""
    out = []
    for p in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        if len(mine) < per_process:
            raise ValueError(
                f"devices: process {p} has {len(mine)} device(s), fewer than the "
                f"{per_process} per process this run asks for"
            )
        out += mine[:per_process]
    return out


def put_global(tree: Any, sharding: NamedSharding) -> Any:
    """Host values, the same on every process, placed on `sharding` (whose devices may
    belong to several processes); typed PRNG keys stay keys."""

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            data = put(np.asarray(jax.device_get(jax.random.key_data(x))))
            return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl))(data)
        x = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def fetch(tree: Any) -> Any:
    """Host copies of arrays that may span processes: whole arrays on every process
    (gathered when not addressable here); typed PRNG keys stay keys."""
    from jax.experimental import multihost_utils

    def get(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = get(jax.jit(jax.random.key_data)(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def data_mesh(devices: list) -> Mesh:
    """A one-dimensional mesh over `devices` with axis name `"data"`."""
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_parallel(fn: Any, mesh: Mesh, sharded: tuple[str, ...] = ("batch",)) -> Any:
    """`jit(shard_map(fn))` with keyword arguments in `sharded` split on their leading axis
    over the mesh's `"data"` axis and every other argument replicated; outputs must be
    identical on every device (replicated), as after a `pmean` of the gradients.

    The returned function takes keyword arguments only. A batch whose leading size is not
    a multiple of the device count is rejected with the sizes that would divide.
    """
    import inspect

    names = list(inspect.signature(fn).parameters)
    n = mesh.devices.size
    compiled: dict[tuple[str, ...], Any] = {}

    def call(**kwargs):
        for name in sharded:
            size = jax.tree.leaves(kwargs[name])[0].shape[0]
            if size % n:
                fits = [d for d in _divisors(size) if d <= 64]
                raise ValueError(
                    f"data_parallel: {name} has {size} items, not a multiple of the {n} "
                    f"devices; use a batch that is a multiple of {n}, or a device count in {fits}"
                )
        given = tuple(k for k in names if k in kwargs)
        if given not in compiled:
            specs = tuple(
                PartitionSpec(DATA_AXIS) if k in sharded else PartitionSpec() for k in given
            )

            def positional(*a, given=given):
                return fn(**dict(zip(given, a, strict=True)))

            compiled[given] = jax.jit(
                jax.shard_map(
                    positional,
                    mesh=mesh,
                    in_specs=specs,
                    out_specs=PartitionSpec(),
                    check_vma=False,
                )
            )
        return compiled[given](*(kwargs[k] for k in given))

    return call
