"""Batched hyperparameter sweeps: Optuna proposes, one vmapped call trains the whole batch.

A sweep asks Optuna (ask/tell) for a batch of `batch_size` trials, groups them by what
fixes array shapes (network sizes, `num_envs`, ...; one compile per distinct shape,
cached), and trains each group in a single jitted call with the trials on a vmapped lane
axis, split over the local devices (`devices`). Everything that does not change a shape
is data (`PPOHParams`/`DQNHParams`: learning rate, discounts, coefficients, epsilon
schedule, tau, target period, reward weights, curriculum thresholds), so trials with
different values share one compiled program.

Between training chunks each trial reports an intermediate value (the chunk's mean
episode return, or of the objective's episode metric) and the pruner (median by default,
Hyperband available) may stop it: a pruned trial's lane stops counting, and when at most
half of a group's lanes are still live the group is compacted onto fewer lanes (a smaller
cached program), so pruning also saves compute. A trial whose loss or parameters turn
NaN/Inf fails (state FAIL) without stopping the others.

The study lives in an sqlite file in the sweep folder unless `storage` names another
database (any RDB URL, e.g. PostgreSQL, lets several machines share one study). An
interrupted sweep resumes (`resume(folder)`): its trials that were running are marked
failed and asked again with the same parameters and seeds.

Progress goes to the `log` callable (stderr by default) as plain lines: per chunk, each
live trial's chunk value; per batch, how each trial ended; both with the best value so far
and its trial.

One module per idea: `spec` (the spec and its checks), `space` (the searched parameters),
`trials` (a trial's values -> its config, program and hparams), `batch` (training one group
of trials on a lane axis), `study` (the folder's Optuna study: storage, workers,
heartbeats, the batch loop, `run`, `resume`), `report` (progress lines and the result
files), `folder` (the folder layout).

Spec (YAML, see `experiments/sweeps/`):

    base: ../ppo_cartpole.yaml       # a train.py config (relative to this file), optional
    config: {total_timesteps: 100000}  # field overrides on the base
    objective: final_return_mean       # | final_return_min (worst seed) | eval_return | success
    direction: maximize
    num_trials: 32
    batch_size: 8                       # trials trained together
    seeds_per_trial: 1                  # the objective is the mean over these seeds
    sampler: tpe                        # tpe | random | grid (every point once)
    pruner: median                      # median | hyperband | none
    space:
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      ent_coef: {low: 0.0, high: 0.05}
      num_layers: {choices: [1, 2, 3]}   # architecture: hidden_sizes = (units,) * num_layers
      units: {choices: [32, 64, 128]}
      activation: {choices: [tanh, relu]}
      reward_weights.collision: {low: -2.0, high: 0.0}   # task envs
      curriculum.success_rate: {low: 0.5, high: 0.9}     # every stage; or curriculum.STAGE.x
"""

from __future__ import annotations

from jaxlearn.sweep.batch import (
    Outcome,
    Program,
    chunk_value,
    objective_value,
    padded,
    train_group,
    trial_keys,
)
from jaxlearn.sweep.folder import (
    BEST_FILE,
    DB_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    SPEC_FILE,
    SUMMARY_FILE,
    WORKER_FILE,
    export_best,
    new_sweep,
    spec_record,
)
from jaxlearn.sweep.report import batch_lines, write_reports
from jaxlearn.sweep.space import PARAM_KEYS, Param, parse_param
from jaxlearn.sweep.spec import (
    BASE_OBJECTIVES,
    DIRECTIONS,
    PRUNERS,
    SAMPLERS,
    SPEC_FIELDS,
    SweepSpec,
    lane_devices,
    load_spec,
    spec_from_dict,
)
from jaxlearn.sweep.study import (
    HEARTBEAT_SECONDS,
    STALE_SECONDS,
    Sweep,
    resume,
    run,
)
from jaxlearn.sweep.trials import (
    ARCH_PARAMS,
    CURRICULUM_CRITERIA,
    batched_hparams,
    curriculum_table,
    split_params,
    stack,
    static_config,
    static_key,
    trial_config,
    trial_hparams,
)

# the names these had when the sweep was one module (tests and older code use them)
_objective = objective_value
_trial_keys = trial_keys
_curriculum_dict = curriculum_table

__all__ = [
    "ARCH_PARAMS",
    "BASE_OBJECTIVES",
    "BEST_FILE",
    "CURRICULUM_CRITERIA",
    "DB_FILE",
    "DIRECTIONS",
    "HEARTBEAT_SECONDS",
    "Outcome",
    "PARAM_KEYS",
    "PLOT_FILE",
    "PRUNERS",
    "Param",
    "Program",
    "RESULTS_FILE",
    "SAMPLERS",
    "SPEC_FIELDS",
    "SPEC_FILE",
    "STALE_SECONDS",
    "SUMMARY_FILE",
    "Sweep",
    "SweepSpec",
    "WORKER_FILE",
    "batch_lines",
    "batched_hparams",
    "chunk_value",
    "curriculum_table",
    "export_best",
    "lane_devices",
    "load_spec",
    "new_sweep",
    "objective_value",
    "padded",
    "parse_param",
    "resume",
    "run",
    "spec_from_dict",
    "spec_record",
    "split_params",
    "stack",
    "static_config",
    "static_key",
    "train_group",
    "trial_config",
    "trial_hparams",
    "trial_keys",
    "write_reports",
]
