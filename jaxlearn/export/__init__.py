"""Export a trained policy for inference, and restore checkpoints of a run folder.

An exported policy is a directory (never overwritten) with two files:

- `policy.json`: `format`, `algo`, only the config fields that define the network and how
  its outputs become env actions (PPO: `env`, `env_kwargs`, `hidden_sizes`, `activation`,
  `action_squash`, `log_std_init`, `policy`, `normalize_observations`, `core`, `core_size`,
  `core_layers`, `obs_mask`; DQN: `env`, `env_kwargs`, `hidden_sizes`, `activation`,
  `epsilon_end` (the epsilon of `sample`); both:
  the torso (`torso`, `cnn_channels`, `cnn_kernels`, `cnn_strides`, `layer_norm`) and
  `env_params`, the overrides the env was built with), the observation shape and dtype
  (after `obs_mask`), the action space, the parameter count, the SHA-256 of
  `params.msgpack`, for PPO trained with `normalize_observations` the frozen observation
  mean/variance applied before the network, the env parameters the policy was trained on
  (`env_params`, every parameter of the env's `EnvParams`: for a run with a curriculum, its
  stage at the exported checkpoint; `load_policy` gives them back as `policy.env_params`),
  where it came from (`source`, optional), and the record's seal: `signed`, `sha256` (of
  every other field, as a checkpoint record's) and `hmac`;
- `params.msgpack`: `flax.serialization.to_bytes` of one seed's network parameters.

    save_policy("cartpole_policy", "ppo", cfg, params)
    policy = load_policy("cartpole_policy")
    action = policy.act(obs)  # obs [B, *obs_shape] -> [B, ...]; obs [*obs_shape] -> [...]
    drawn = policy.sample(obs, key)  # as in training: PPO's distribution, DQN's epsilon_end

A recurrent policy (PPO `core: gru`) carries its core's state from step to step:

    state = policy.initial_state(B)          # zeros [B, H], where every episode starts
    action, state = policy.act(obs, state)   # obs [B, *obs_shape], state [B, H]
    state = jnp.where(done[:, None], policy.initial_state(B), state)  # episodes that ended

`export_from_run(run_dir, path)` does both steps from a run folder's checkpoint, read
through `jaxlearn.rundir.load_run` (re-exported here with `parse_checkpoint` and
`RestoredRun`, as `scripts/evaluate.py` uses them).

What `load_policy` guarantees (it raises `ValueError` naming the field otherwise):

- every field of `policy.json` is present, known and valid: the config builds, the
  observation shape and dtype, the action space, the policy kind and the parameter count
  are those of the network the config describes, the observation statistics have the
  observation's shape and are finite with variance >= 0, and `params_sha256` is required
  and matches `params.msgpack`, whose parameters fit the network and are finite;
- `policy.json` is sealed like a format-2 checkpoint record (`jaxlearn.checkpoint.seal`):
  `sha256` covers every field, so an edited field is refused, not only edited parameters;
- signing: with `$JAXLEARN_CHECKPOINT_KEY` set, `save_policy` (and so `export_from_run`)
  signs the record with an HMAC of that key (a signed run can only be read with its key,
  so exports of signed runs are signed), and `load_policy` accepts only records signed
  with that key. A record that says `signed: true` without a well-formed `hmac` is refused
  with or without a key, and a signed one is refused without the key (it cannot be
  verified).

Not guaranteed without a key: the SHA-256s catch corruption and careless edits, but anyone
who can write the folder can change a field or the parameters, set `signed` to false, drop
`hmac` and recompute both hashes, and that export loads where no key is set. Only the
HMAC authenticates an export: set the key wherever exports of signed runs are loaded.

Format 5 is written (DQN's `epsilon_end` recorded, for `sample`); format 4 exports (DQN
then samples at the default 0.05), format 3 exports (before the torso, core and mask were
recorded: MLPs) and format 2 exports (before `env_params` was recorded) still load, with
the defaults for what they lack (format 2: the env parameters their config builds).

The code: `record` (policy.json's fields and checks), `network` (the network, `apply`,
`act`), `policy` (`save_policy`, `load_policy`, `export_from_run`).

`policy.act` is a host API: it checks the observation's shape (`[B, *obs_shape]` or one
`[*obs_shape]`) and that it is finite before running the jitted network. Under a JAX
transformation (`jit`, `vmap`, `lax.scan`) it checks the shape only, since values are
not known there. `policy.apply(params, obs [B, *obs_shape])` is the pure, jittable
function behind it (normalisation included, no checks).
"""

from __future__ import annotations

from jaxlearn.export.network import observation_stats
from jaxlearn.export.policy import ExportedPolicy, export_from_run, load_policy, save_policy
from jaxlearn.export.record import (
    FORMAT,
    NORMALIZATION_FIELDS,
    PARAMS_FILE,
    POLICY_FIELDS,
    SPEC_FIELDS,
    SPEC_FILE,
)
from jaxlearn.rundir import RestoredRun, load_run, parse_checkpoint

__all__ = [
    "FORMAT",
    "NORMALIZATION_FIELDS",
    "PARAMS_FILE",
    "POLICY_FIELDS",
    "SPEC_FIELDS",
    "SPEC_FILE",
    "ExportedPolicy",
    "RestoredRun",
    "export_from_run",
    "load_policy",
    "load_run",
    "observation_stats",
    "parse_checkpoint",
    "save_policy",
]
