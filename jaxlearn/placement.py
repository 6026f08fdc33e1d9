"""Where a run's train state lives: how its lanes are laid out over devices and processes.

The leading axis of every train-state leaf is a *lane*: a seed (vmapped, the lanes sharded
over the devices), or for one data-parallel agent a device's replica (`jax.shard_map`).
Three layouts, one interface (`Placement`), so the chunk loop (`jaxlearn.loop`) has no
branch on them:

- `Seeds`: `num_seeds / processes` vmapped seeds on this process's devices (a multi-process
  run splits the seeds between processes; process 0 gathers metrics and checkpoints);
- `DataParallel`: one agent whose replicas are this process's devices;
- `AcrossProcesses`: one agent whose replicas are every process's devices (a global mesh).

A checkpoint holds every process's lanes, laid out as a one-process run's: process 0
gathers and writes it, and each process restores its own slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from jaxlearn import transfer
from jaxlearn.algos.base import Learner
from jaxlearn.parallel import DATA_AXIS, data_mesh, fetch, put_global, seed_mesh, seed_sharding


def barrier(name: str) -> None:
    """Wait for every process (multi-process runs only)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather(tree: Any) -> Any:
    """Host arrays of every process, concatenated on their leading (seed) axis."""
    if jax.process_count() == 1:
        return tree
    out = multihost_utils.process_allgather(tree)  # [P, local seeds, ...]
    return jax.tree.map(lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:]), out)


def gather_lanes(state: Any) -> Any:
    """A train state with every process's lanes, concatenated in process order (host
    arrays; keys stay keys). The state itself in a one-process run."""
    if jax.process_count() == 1:
        return state
    procs = jax.process_count()

    def one(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = gather(np.asarray(jax.device_get(jax.random.key_data(x))))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if x.size == 0:
            return np.zeros((procs * x.shape[0], *x.shape[1:]), x.dtype)
        return gather(np.asarray(jax.device_get(x)))

    return jax.tree.map(one, state)


class Placement:
    """The layout of a run's lanes. Built by `make_placement`; subclasses fill in the
    jitted functions and the host transfers.

    Attributes:
        devices: the devices the run uses. seeds: this process's seed indices (into the
        run's seeds). hparams: the hyperparameters as the chunk takes them. eval_keys:
        one evaluation key per lane. sharding: the lanes' sharding.
    """

    data_parallel = False  # one agent (replicas agree: keep one lane of its metrics)
    across = False  # one agent spread over processes (global arrays)

    def __init__(self, learner: Learner, devices: list, seeds: range, keys, eval_keys):
        self.learner, self.devices, self.seeds = learner, devices, seeds
        self.hparams = learner.hparams
        self.keys, self.eval_keys = keys, eval_keys

    # -- device programs ---------------------------------------------------------------
    def init_fn(self) -> tuple[Callable, tuple]:
        """(function of the lanes' init, its arguments)."""
        raise NotImplementedError

    def chunk_fn(self, chunk_one: Callable) -> Callable:
        """The chunk of all lanes, from `chunk_one(state, hparams, num_active)` of one."""
        raise NotImplementedError

    def init(self) -> Any:
        """A fresh train state, laid out."""
        fn, args = self.init_fn()
        return jax.jit(fn, out_shardings=self.sharding).lower(*args).compile()(*args)

    def compile_chunk(self, chunk_one: Callable, state: Any, chunk_size: int) -> Callable:
        """`chunk(state, hparams, num_active) -> (state, metrics)`, compiled, donating."""
        fn = jax.jit(self.chunk_fn(chunk_one), donate_argnums=0, out_shardings=self.sharding)
        return fn.lower(state, self.hparams, np.int32(chunk_size)).compile()

    def evaluator(self, greedy: Callable, num_episodes: int) -> Callable:
        """`evaluate(state, eval_keys) -> {"returns": [lanes, episodes], ...}`, jitted."""
        return jax.jit(jax.vmap(lambda s, k: greedy(s, k, num_episodes)))

    # -- host side ---------------------------------------------------------------------
    def stored_like(self) -> Any:
        """The abstract train state a checkpoint holds (every process's lanes)."""
        fn, args = self.init_fn()
        like = jax.eval_shape(fn, *args)
        stored = jax.process_count() * jax.tree.leaves(like)[0].shape[0]
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((stored, *x.shape[1:]), x.dtype), like)

    def restore(self, stored: Any) -> Any:
        """This process's lanes of a restored checkpoint (host arrays), laid out."""
        n = jax.tree.leaves(stored)[0].shape[0] // jax.process_count()  # lanes per process
        rank = jax.process_index()
        mine = jax.tree.map(lambda x: x[rank * n : (rank + 1) * n], stored)
        return jax.device_put(mine, self.sharding)

    def start_from(self, state: Any, source: Any) -> Any:
        """`state` with the network of a `transfer.load_source` run (`--init-from`)."""
        return jax.device_put(transfer.apply(state, source, list(self.seeds)), self.sharding)

    def host_metrics(self, metrics: dict[str, Any], active: int) -> dict[str, np.ndarray]:
        """Every seed's metrics of a chunk on the host: `[num_seeds, active]`."""
        metrics = jax.device_get(metrics)  # waits for the device
        return gather({k: np.asarray(v)[:, :active] for k, v in metrics.items()})

    def host_eval(self, result: Any) -> dict[str, np.ndarray]:
        """Every seed's evaluation results on the host."""
        return gather(jax.device_get(result))

    def host_state(self, state: Any) -> Any:
        """Every process's lanes of `state` on the host (a checkpoint's content)."""
        return gather_lanes(state)

    def host_params(self, params: Any) -> tuple[Any, list[int]]:
        """(this process's lanes of `params` on the host, the seed index of each lane whose
        adapters this process saves)."""
        return jax.device_get(params), list(self.seeds)


class Seeds(Placement):
    """Vmapped seeds, sharded over this process's devices (no communication)."""

    def __init__(self, learner, devices, seeds, keys, eval_keys):
        super().__init__(learner, devices, seeds, keys, eval_keys)
        self.mesh = seed_mesh(devices)
        self.sharding = seed_sharding(self.mesh)
        self.keys = jax.device_put(keys, self.sharding)
        self.eval_keys = jax.device_put(eval_keys, self.sharding)

    def init_fn(self):
        return jax.vmap(self.learner.init, in_axes=(0, None)), (self.keys, self.hparams)

    def chunk_fn(self, chunk_one):
        return jax.vmap(chunk_one, in_axes=(0, None, None))


class DataParallel(Placement):
    """One agent: a replica per device (`jax.shard_map`), gradients averaged with `pmean`."""

    data_parallel = True

    def __init__(self, learner, devices, seeds, keys, eval_keys):
        super().__init__(learner, devices, seeds, keys, eval_keys)
        self.mesh = data_mesh(devices)
        self.sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        self.init_key = keys[0]

    def _per_device(self, f: Callable, in_specs: tuple) -> Callable:
        return jax.shard_map(
            f,
            mesh=self.mesh,
            in_specs=in_specs,
            out_specs=PartitionSpec(DATA_AXIS),
            check_vma=False,
        )

    def init_fn(self):
        fn = self._per_device(
            lambda k, hp: _expand(self.learner.init(k, hp)), (PartitionSpec(), PartitionSpec())
        )
        return fn, (self.init_key, self.hparams)

    def chunk_fn(self, chunk_one):
        return self._per_device(
            lambda s, hp, n: _expand(chunk_one(_squeeze(s), hp, n)),
            (PartitionSpec(DATA_AXIS), PartitionSpec(), PartitionSpec()),
        )

    def evaluator(self, greedy, num_episodes):
        per_lane = jax.vmap(lambda s, k: greedy(s, k, num_episodes))
        # the replicas share their parameters: evaluate the first
        return jax.jit(lambda s, k: per_lane(jax.tree.map(lambda x: x[:1], s), k))

    def start_from(self, state, source):
        seeds = [0] * len(self.devices)
        return jax.device_put(transfer.apply(state, source, seeds), self.sharding)

    def host_metrics(self, metrics, active):
        metrics = jax.device_get(metrics)  # replicas agree: keep the first
        return gather({k: np.asarray(v)[:1, :active] for k, v in metrics.items()})

    def host_params(self, params):
        return jax.device_get(params), list(self.seeds)[:1]


class AcrossProcesses(DataParallel):
    """One agent whose replicas are every process's devices (one global mesh): host values
    that every process computes alike are placed as global arrays (`put_global`), and host
    copies are taken with `fetch`."""

    across = True

    def __init__(self, learner, devices, seeds, keys, eval_keys):
        super().__init__(learner, devices, seeds, keys, eval_keys)
        everywhere = NamedSharding(self.mesh, PartitionSpec())
        self.hparams = put_global(self.hparams, everywhere)
        self.eval_keys = put_global(eval_keys, everywhere)
        self.init_key = put_global(keys[0], everywhere)

    def evaluator(self, greedy, num_episodes):
        per_lane = jax.vmap(lambda s, k: greedy(s, k, num_episodes))
        return jax.jit(  # a copy of the results on every process
            lambda s, k: per_lane(jax.tree.map(lambda x: x[:1], s), k),
            out_shardings=NamedSharding(self.mesh, PartitionSpec()),
        )

    def stored_like(self):
        fn, args = self.init_fn()
        return jax.eval_shape(fn, *args)  # the global arrays: every replica already

    def restore(self, stored):
        return put_global(stored, self.sharding)

    def start_from(self, state, source):
        seeds = [0] * len(self.devices)
        return put_global(transfer.apply(fetch(state), source, seeds), self.sharding)

    def host_metrics(self, metrics, active):  # replicas agree: this process's first lane
        return {k: np.asarray(v.addressable_data(0))[:1, :active] for k, v in metrics.items()}

    def host_eval(self, result):
        return fetch(result)

    def host_state(self, state):
        return fetch(state)

    def host_params(self, params):  # one agent: process 0 saves its adapters
        return fetch(params), [0] if jax.process_index() == 0 else []


def _expand(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[None], tree)


def _squeeze(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


def make_placement(learner: Learner, devices: list, num_seeds: int, seed: int) -> Placement:
    """The placement of a run of `num_seeds` seeds (base seed `seed`) on `devices`: one
    agent across processes for one seed in a multi-process run; one data-parallel agent
    for one seed per process on several devices; vmapped seeds otherwise. The keys are
    those of a one-process run, each process taking its own seeds'."""
    procs, rank = jax.process_count(), jax.process_index()
    across = procs > 1 and num_seeds == 1
    local = 1 if across else num_seeds // procs
    seeds = range(0, 1) if across else range(rank * local, (rank + 1) * local)
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    eval_keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), num_seeds)
    mine = slice(seeds.start, seeds.stop)
    keys, eval_keys = keys[mine], eval_keys[mine]
    if across:
        return AcrossProcesses(learner, devices, seeds, keys, eval_keys)
    if local == 1 and len(devices) > 1:
        return DataParallel(learner, devices, seeds, keys, eval_keys)
    return Seeds(learner, devices, seeds, keys, eval_keys)


__all__ = [
    "AcrossProcesses",
    "DataParallel",
    "Placement",
    "Seeds",
    "barrier",
    "gather",
    "gather_lanes",
    "make_placement",
]
