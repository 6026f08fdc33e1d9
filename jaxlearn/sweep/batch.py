"""Training one group of trials that share a compiled program, on a vmapped lane axis.

Each trial owns `seeds_per_trial` lanes; the group's lane count is padded to a power of two
(at most the batch size) so few distinct lane counts compile. Between chunks of updates
each trial reports its chunk value to Optuna, which may prune it; a trial whose metrics
turn NaN/Inf fails alone. When at most half of the lanes are still live, the live ones are
gathered onto a smaller lane axis (a smaller cached program), so pruning saves compute.
The lanes are split over the sweep's devices; they never communicate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from optuna.trial import TrialState

from jaxlearn import algos
from jaxlearn.loop import choose_chunk_size, make_chunk
from jaxlearn.parallel import seed_mesh, shard_seeds
from jaxlearn.sinks import final_episode_metrics, final_returns
from jaxlearn.sweep import report
from jaxlearn.sweep.spec import BASE_OBJECTIVES, SweepSpec
from jaxlearn.sweep.trials import stack, trial_hparams


class Program:
    """The compiled init/chunk/evaluate of one static config (cached by jit per lane count).

    Attributes:
        learner: the algorithm's `Learner` for the static config.
        chunk_size: updates per chunk call.
        init: `(keys [L], hparams [L]) -> state [L]`.
        chunk: `(state [L], hparams [L], active updates) -> (state, metrics [L, chunk])`.
        lane_counts: lane counts compiled so far (each one compile of `chunk`).
    """

    def __init__(self, cfg: Any, algo: str, num_chunks: int):
        _, make_learner = algos.ALGOS[algo]
        self.learner = make_learner(cfg)
        self.num_updates = self.learner.num_updates
        self.chunk_size = choose_chunk_size(self.num_updates, num_chunks)
        chunk = make_chunk(self.learner, self.chunk_size)
        self.init = jax.jit(jax.vmap(self.learner.init))
        self.chunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)), donate_argnums=0)
        self._evaluate = None
        self.lane_counts: set[int] = set()

    def evaluate(self, state: Any, keys: jax.Array, episodes: int) -> jax.Array:
        """Greedy episode returns `[L, episodes]` of every lane (compiled on first use)."""
        if self._evaluate is None:
            self._evaluate = jax.jit(
                jax.vmap(lambda st, k: self.learner.greedy_episodes(st, k, episodes)["returns"])
            )
        return self._evaluate(state, keys)


@dataclasses.dataclass
class Outcome:
    """How a trial of a batch ended: `state` is complete, pruned or fail; `value` the
    objective (complete) or the last reported chunk value (pruned); `detail` the reason."""

    number: int
    state: str
    value: float | None = None
    detail: str = ""


@dataclasses.dataclass
class _Live:
    trial: Any  # optuna Trial
    lanes: list[int]  # positions in the group's lane axis
    last: float | None = None  # the last chunk value
    done: bool = False


def padded(n: int, cap: int) -> int:
    """Trials per program: the next power of two >= n (at most `cap`, the batch size)."""
    p = 1
    while p < n:
        p *= 2
    return min(p, max(cap, n))


def _num_lanes(state: Any) -> int:
    return int(jax.tree.leaves(state)[0].shape[0])


def trial_keys(spec: SweepSpec, seed_index: int) -> jax.Array:
    """The `seeds_per_trial` keys of a trial: fixed by its seed index, so a re-run trial
    trains exactly as before."""
    base = jax.random.fold_in(jax.random.key(spec.seed), seed_index)
    return jax.random.split(base, spec.seeds_per_trial)


def chunk_value(spec: SweepSpec, m: dict[str, np.ndarray]) -> float:
    """The intermediate value of one trial over one chunk (lanes pooled)."""
    n = m["episode_count"].sum()
    if n <= 0:
        return float("nan")
    key = "episode_return_sum"
    if spec.objective not in BASE_OBJECTIVES:
        key = f"episode_{spec.objective}_sum"
    return float(m[key].sum() / n)


def objective_value(spec: SweepSpec, history: dict[str, np.ndarray], eval_returns) -> float:
    """A finished trial's objective from its metrics `[seeds, updates]` (and eval returns)."""
    if spec.objective == "final_return_mean":
        return float(np.nanmean(final_returns(history, spec.run_cfg.final_fraction)))
    if spec.objective == "final_return_min":  # the worst of the trial's seeds (NaN counts)
        return float(np.min(final_returns(history, spec.run_cfg.final_fraction)))
    if spec.objective == "eval_return":
        return float(np.mean(eval_returns))
    extras = final_episode_metrics(history, spec.run_cfg.final_fraction)
    return float(extras.get(spec.objective, float("nan")))


def _place(tree: Any, devices: list) -> Any:
    """Split the lane axis over as many of `devices` as divide the lane count (all of them
    for the usual power-of-two counts); lanes are independent, so `jit` then runs each
    device's lanes there with no communication."""
    d = math.gcd(_num_lanes(tree), len(devices))
    return shard_seeds(tree, seed_mesh(devices[:d]))


def _compact(spec: SweepSpec, live: list[_Live], state: Any, hp: Any, devices: list):
    """Gather the lanes of the `live` trials onto the smallest padded lane axis that holds
    them (padding with copies of the first trial's lanes)."""
    s = spec.seeds_per_trial
    slots = padded(len(live), spec.batch_size)
    order = [i for t in live for i in t.lanes]
    order += live[0].lanes * (slots - len(live))
    idx = jnp.asarray(order)
    for j, t in enumerate(live):
        t.lanes = list(range(j * s, (j + 1) * s))
    state = jax.tree.map(lambda x: x[idx], state)
    return _place(state, devices), _place(jax.tree.map(lambda x: x[idx], hp), devices)


def train_group(
    spec: SweepSpec,
    program: Program,
    static: Any,
    members: list[tuple[Any, Any]],
    *,
    devices: list,
    study: Any,
    heartbeat: Callable[[Any], None],
    log: Callable[[str], None],
) -> list[Outcome]:
    """Train the trials `members` ((optuna trial, trial config) pairs) of one program
    together and tell Optuna how each ended. Returns their outcomes in `members` order.

    Args:
        spec: the sweep.
        program: the compiled program of their shared static config `static`.
        devices: the local devices the lanes are split over.
        study: the Optuna study the trials belong to (told FAIL/PRUNED/values).
        heartbeat: marks a trial alive (called for every live trial after each chunk).
        log: receives one plain progress line per chunk.
    """
    s = spec.seeds_per_trial
    live, keys, hps = [], [], []
    for j, (trial, cfg) in enumerate(members):
        hp = trial_hparams(spec, cfg, static)
        live.append(_Live(trial, list(range(j * s, (j + 1) * s))))
        keys.append(trial_keys(spec, trial.user_attrs["seed_index"]))
        hps += [hp] * s
    outcomes = {t.trial.number: Outcome(t.trial.number, "running") for t in live}
    pad = padded(len(live), spec.batch_size) - len(live)
    keys += [keys[0]] * pad
    hps += hps[:s] * pad
    hp_arr = _place(stack(hps), devices)
    state = _place(program.init(_place(jnp.concatenate(keys), devices), hp_arr), devices)
    histories: dict[int, list[dict[str, np.ndarray]]] = {t.trial.number: [] for t in live}
    num_updates, done_updates = program.num_updates, 0
    num_calls = math.ceil(num_updates / program.chunk_size)
    label = report.chunk_label(spec.objective)
    for c in range(num_calls):
        program.lane_counts.add(_num_lanes(state))  # a new (program, lane count): a compile
        active = min(program.chunk_size, num_updates - done_updates)
        state, metrics = program.chunk(state, hp_arr, jnp.int32(active))
        metrics = {k: np.asarray(v)[:, :active] for k, v in jax.device_get(metrics).items()}
        done_updates += active
        chunk_values = {}
        for t in live:
            m = {k: v[t.lanes] for k, v in metrics.items()}
            histories[t.trial.number].append(m)
            if np.any(m.get("nonfinite", 0) > 0):
                reason = f"NaN/Inf by update {done_updates}"
                t.trial.set_user_attr("error", reason)
                study.tell(t.trial, state=TrialState.FAIL)
                outcomes[t.trial.number] = Outcome(t.trial.number, "fail", None, reason)
                chunk_values[t.trial.number] = (None, "failed")
                t.done = True
                continue
            value = chunk_value(spec, m)
            chunk_values[t.trial.number] = (value, "")
            if np.isfinite(value):
                t.last = value
            if np.isfinite(value) and done_updates < num_updates:
                t.trial.report(value, step=c)
                if t.trial.should_prune():
                    study.tell(t.trial, state=TrialState.PRUNED)
                    outcomes[t.trial.number] = Outcome(
                        t.trial.number, "pruned", t.last, f"after chunk {c + 1}/{num_calls}"
                    )
                    chunk_values[t.trial.number] = (value, "pruned")
                    t.done = True
        live = [t for t in live if not t.done]
        for t in live:  # still alive: other workers must not fail it as stale
            heartbeat(t.trial)
        if live and padded(len(live), spec.batch_size) * s < _num_lanes(state):
            state, hp_arr = _compact(spec, live, state, hp_arr, devices)
        on = len(jax.tree.leaves(state)[0].sharding.device_set)
        log(
            f"  chunk {c + 1}/{num_calls}: {len(live)} live trial(s) on {_num_lanes(state)} "
            f"lane(s) over {on} device(s); {label}: "
            + report.format_values(chunk_values)
            + report.best_so_far(study, spec.objective)
        )
        if not live:
            break
    else:
        _finish(spec, program, live, state, histories, study, outcomes)
    return list(outcomes.values())


def _finish(spec, program, live: list[_Live], state, histories, study, outcomes) -> None:
    """Objectives of the trials that ran to the end, told to Optuna."""
    eval_returns = {}
    if spec.objective == "eval_return" and live:
        keys = jax.random.split(jax.random.key(spec.seed + 1), _num_lanes(state))
        returns = np.asarray(program.evaluate(state, keys, spec.eval_episodes))
        eval_returns = {t.trial.number: returns[t.lanes].mean() for t in live}
    for t in live:
        hist = {
            k: np.concatenate([h[k] for h in histories[t.trial.number]], axis=1)
            for k in histories[t.trial.number][0]
        }
        value = objective_value(spec, hist, eval_returns.get(t.trial.number))
        per_seed = final_returns(hist, spec.run_cfg.final_fraction)
        t.trial.set_user_attr("final_return_per_seed", [float(x) for x in per_seed])
        extras = final_episode_metrics(hist, spec.run_cfg.final_fraction)  # success, ...
        t.trial.set_user_attr("final_episode_metrics", {k: float(v) for k, v in extras.items()})
        n = t.trial.number
        if np.isfinite(value):
            study.tell(t.trial, value)
            outcomes[n] = Outcome(n, "complete", value)
        else:
            reason = f"objective {spec.objective} is not finite"
            t.trial.set_user_attr("error", reason)
            study.tell(t.trial, state=TrialState.FAIL)
            outcomes[n] = Outcome(n, "fail", None, reason)


__all__ = ["Outcome", "Program", "padded", "train_group"]
