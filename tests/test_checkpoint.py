"""Orbax checkpoints: exact resume, retention, integrity (tamper, truncation, edited records,
HMAC, foreign and older-format checkpoints), commits and declined saves, a process killed
mid-save, the divergence guard, and `train.py --resume`."""

import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos.dqn import make_learner as make_dqn
from jaxlearn.algos.dqn.config import DQNConfig
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo import make_learner as make_ppo
from jaxlearn.algos.ppo.train import make_policy
from jaxlearn.checkpoint import (
    HMAC_ENV,
    Checkpointer,
    CheckpointError,
    record_hash,
)
from jaxlearn.config import to_dict
from jaxlearn.envs.setup import base_env
from jaxlearn.rundir import CHECKPOINT_DIR, config_defaults
from jaxlearn.runner import DivergenceError, RunConfig, resume, run

# Orbax/TensorStore leave "Event loop is closed" noise behind after a failed read
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TRAIN = os.path.join(ROOT, "scripts", "train.py")

PPO_SMALL = PPOConfig(total_timesteps=4096, num_envs=4, num_steps=32, num_minibatches=2)
# 32 updates in 4 chunks of 8
DQN_SMALL = DQNConfig(
    total_timesteps=1200,  # 120 updates of 10 env steps, 4 chunks of 30
    learning_starts=300,  # learning starts in chunk 2
    buffer_size=500,  # wraps around before the end
    batch_size=32,
    target_update_period=100,
    hidden_sizes=(32,),
    n_step=3,  # n_step=1 cannot be saved: see test_dqn_with_n_step_1_can_be_checkpointed
    prioritized=True,  # the sum tree and max priority are state too
)


def _quiet(_msg):
    pass


def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _like(make_learner, cfg, seed=0, num_seeds=1):
    learner = make_learner(cfg)
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    return jax.eval_shape(jax.vmap(learner.init, in_axes=(0, None)), keys, learner.hparams)


def _init(make_learner, cfg, seed=0, num_seeds=1):
    learner = make_learner(cfg)
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    return jax.vmap(learner.init, in_axes=(0, None))(keys, learner.hparams)


def _raw(x):
    x = jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return np.asarray(x)


def _assert_trees_identical(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        x, y = _raw(x), _raw(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), jax.tree_util.keystr(path)


def _data_files(ckpt_dir, step, item="state"):
    files = glob.glob(os.path.join(ckpt_dir, str(step), item, "**", "d", "*"), recursive=True)
    files = [f for f in files if os.path.isfile(f)]
    assert files, f"no data files under {ckpt_dir}/{step}/{item}"
    return files


def _flip_bytes(path, n=64):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    for i in range(mid, min(mid + n, len(data))):
        data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# ---- 1. exact resume ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algo,cfg,make_learner,run_cfg,stop",
    [
        # checkpoints at 16 and 32; stopped at 24, so the resume re-runs chunk 3 from 16
        (
            "ppo",
            PPO_SMALL,
            make_ppo,
            RunConfig(num_chunks=4, eval_episodes=2, checkpoint_every=16),
            3,
        ),
        # two seeds; replay buffer (prioritized), target network, epsilon schedule
        (
            "dqn",
            DQN_SMALL,
            make_dqn,
            RunConfig(algo="dqn", num_seeds=2, num_chunks=4, eval_episodes=2),
            2,
        ),
    ],
    ids=["ppo", "dqn-2seeds"],
)
@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(
    tmp_path, algo, cfg, make_learner, run_cfg, stop
):
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    run(run_cfg, cfg, out=a_dir, log=_quiet)
    stopped = run(run_cfg, cfg, out=b_dir, log=_quiet, stop_after_chunks=stop)
    num_updates = make_learner(cfg).num_updates
    assert 0 < stopped["stopped_at_update"] < num_updates
    assert not os.path.exists(os.path.join(b_dir, "metrics.json"))
    logs = []
    b = resume(b_dir, log=logs.append)

    last_ckpt = Checkpointer(os.path.join(b_dir, CHECKPOINT_DIR)).steps()
    restored_from = [m for m in logs if m.startswith("[resume]")]
    assert len(restored_from) == 1, logs
    from_update = int(re.search(r"restored update (\d+)/", restored_from[0]).group(1))
    assert 0 < from_update <= stopped["stopped_at_update"]
    # only the remaining chunks ran (nothing restarted from scratch)
    chunks_run = [m for m in logs if m.lstrip().startswith("chunk ")]
    chunk_size = num_updates // run_cfg.num_chunks
    assert len(chunks_run) == (num_updates - from_update) // chunk_size, logs
    assert last_ckpt[-1] == num_updates

    like = _like(make_learner, cfg, run_cfg.seed, run_cfg.num_seeds)
    state_a, hist_a, rec_a = Checkpointer(os.path.join(a_dir, CHECKPOINT_DIR)).restore(None, like)
    state_b, hist_b, rec_b = Checkpointer(os.path.join(b_dir, CHECKPOINT_DIR)).restore(None, like)
    assert rec_a["step"] == rec_b["step"] == num_updates
    assert rec_a["algo"] == rec_b["algo"] == algo
    _assert_trees_identical(state_a, state_b)  # params, optimizer, buffer, envs, keys, ...
    _assert_trees_identical(hist_a, hist_b)  # the metric history carried across the resume
    assert hist_a["episode_count"].shape == (run_cfg.num_seeds, num_updates)
    assert rec_a.get("eval") == rec_b.get("eval")
    assert rec_a["eval_return"] == rec_b["eval_return"]
    assert int(np.asarray(state_b.update_step).max()) == num_updates
    if algo == "dqn":  # the buffer wrapped around, priorities and learning moved
        assert np.all(np.asarray(state_b.buffer.size) == DQN_SMALL.buffer_size)
        assert rec_b["eval_return"] is not None and len(rec_b["eval"]["return_per_seed"]) == 2
        assert np.all(np.asarray(state_b.buffer.max_priority) != 1.0)
        assert float(np.sum(hist_b["learning"])) > 0

    ma = json.loads(open(os.path.join(a_dir, "metrics.json")).read())
    mb = json.loads(open(os.path.join(b_dir, "metrics.json")).read())
    assert ma["final_return_mean"] == mb["final_return_mean"] == b["final_return_mean"]
    assert ma["final_return_per_seed"] == mb["final_return_per_seed"]
    assert ma["resumed"] is False and mb["resumed"] is True


def test_ppo_learner_evaluates_like_a_plain_greedy_rollout():
    """`learner.greedy_episodes` against a rollout written here: the episodes reset and stepped in
    a Python loop (keys split as `jaxlearn.evaluation` documents), each return summed until
    its first done, with the policy's greedy action. Pendulum: every episode lasts exactly
    `max_steps_in_episode` steps, and a rounding difference does not flip a decision."""
    cfg = PPOConfig(
        env="Pendulum-v1", total_timesteps=256, num_envs=4, num_steps=32, hidden_sizes=(8,)
    )
    learner = make_ppo(cfg)
    state = learner.init(jax.random.key(3), learner.hparams)
    key, n = jax.random.key(11), 3
    result = jax.device_get(jax.jit(learner.greedy_episodes, static_argnums=2)(state, key, n))

    env, env_params = base_env(cfg)
    greedy = jax.jit(make_policy(cfg, env, env_params).act_greedy)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    limit = int(env_params.max_steps_in_episode)
    key_reset, key_step = jax.random.split(key)
    obs, s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, n), env_params)
    returns, lengths = np.zeros(n), np.zeros(n, int)
    done = np.zeros(n, bool)
    for t in range(limit):
        keys = jax.random.split(jax.random.fold_in(key_step, t), n)
        obs, s, reward, terminated, truncated, _ = step(
            keys, s, greedy(state.params, obs), env_params
        )
        returns += np.where(done, 0.0, np.asarray(reward))
        lengths += ~done
        done |= np.asarray(terminated) | np.asarray(truncated)
        if done.all():
            break
    assert result["returns"].shape == (n,) and result["lengths"].shape == (n,)
    np.testing.assert_array_equal(result["lengths"], lengths)
    assert np.all(lengths == limit) and np.all(result["done"])
    np.testing.assert_allclose(result["returns"], returns, rtol=1e-4)
    assert np.all(np.isfinite(returns)) and len(set(np.round(returns, 3))) == n  # distinct


# ---- 2. retention: keep-N plus the best -------------------------------------------------------


def test_keeps_newest_n_plus_the_best(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "c"), keep=2)
    for step, ret in zip([1, 2, 3, 4, 5], [1.0, 9.0, 2.0, 3.0, 4.0], strict=True):
        ckpt.save(step, {"x": np.arange(3) + step}, algo="x", config={}, eval_return=ret)
    ckpt.close()
    again = Checkpointer(str(tmp_path / "c"), keep=2)
    assert again.steps() == [2, 4, 5]
    assert again.best_step() == 2
    assert again.latest_step() == 5
    state, _, record = again.restore(2, {"x": jax.ShapeDtypeStruct((3,), np.arange(3).dtype)})
    assert record["eval_return"] == 9.0 and list(state["x"]) == [2, 3, 4]
    # a resumed run (a new manager, which reloads the steps from disk) still keeps the best
    for step, ret in ((6, 5.0), (7, 6.0)):
        again.save(step, {"x": np.arange(3) + step}, algo="x", config={}, eval_return=ret)
    again.close()
    assert Checkpointer(str(tmp_path / "c")).steps() == [2, 6, 7]


def test_without_evaluations_only_the_newest_n_are_kept(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "c"), keep=2)
    for step in range(1, 6):
        ckpt.save(step, {"x": np.arange(3) + step}, algo="x", config={})
    ckpt.close()
    again = Checkpointer(str(tmp_path / "c"))
    assert again.steps() == [4, 5]
    assert again.best_step() is None


@pytest.mark.parametrize("keep", [0, -1, True, 2.0])
def test_keep_must_be_a_positive_int(tmp_path, keep):
    with pytest.raises(ValueError, match="keep="):
        Checkpointer(str(tmp_path / "c"), keep=keep)


# ---- 3. tamper and truncation -----------------------------------------------------------------

CONFIG = {"lr": 0.1, "hidden": [8, 8]}


def _state(i):
    rng = np.random.default_rng(i)
    return {
        "w": rng.standard_normal(20_000).astype(np.float32),  # its own data file
        "n": np.arange(5, dtype=np.int32) + i,
        "key": jax.random.key(i),
    }


LIKE = jax.eval_shape(lambda: _state(0))


def _two_steps(directory):
    ckpt = Checkpointer(directory, keep=3)
    ckpt.save(1, _state(1), algo="x", config=CONFIG, history={"r": np.arange(4.0)})
    ckpt.save(2, _state(2), algo="x", config=CONFIG, history={"r": np.arange(8.0)})
    ckpt.close()
    return directory


def _assert_previous_step_still_good(directory, **kwargs):
    # fresh Checkpointers, as a new process would use (see test_damage_never_escapes_...)
    state, history, record = Checkpointer(directory).restore(1, LIKE, **kwargs)
    _assert_trees_identical(state, _state(1))
    assert list(history["r"]) == [0.0, 1.0, 2.0, 3.0]
    state, _, record, skipped = Checkpointer(directory).restore_latest_valid(LIKE, **kwargs)
    assert record["step"] == 1
    _assert_trees_identical(state, _state(1))
    assert [s for s, _ in skipped] == [2]
    assert "step 2" in skipped[0][1]


def test_round_trip_restores_exact_state_history_and_key_type(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    state, history, record = Checkpointer(d).restore(None, LIKE, algo="x", config=CONFIG)
    assert record["step"] == 2 and record["config"] == CONFIG and record["hmac"] is None
    _assert_trees_identical(state, _state(2))
    assert jnp.issubdtype(state["key"].dtype, jax.dtypes.prng_key)  # a typed key again
    assert list(history["r"]) == list(np.arange(8.0))


def test_missing_checkpoints_raise(tmp_path):
    empty = Checkpointer(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        empty.restore(None, LIKE)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        empty.restore_latest_valid(LIKE)
    d = _two_steps(str(tmp_path / "c"))
    with pytest.raises(CheckpointError, match=r"no complete checkpoint at step 7.*\[1, 2\]"):
        Checkpointer(d).restore(7, LIKE)


def test_flipped_bytes_in_array_data_fail_the_integrity_check(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    _flip_bytes(max(_data_files(d, 2), key=os.path.getsize))
    with pytest.raises(CheckpointError, match=r"step 2 .*(integrity|damaged)"):
        Checkpointer(d).restore(2, LIKE)
    with pytest.raises(CheckpointError, match=r"step 2 .*(integrity|damaged)"):
        Checkpointer(d).restore(None, LIKE)
    _assert_previous_step_still_good(d)
    assert Checkpointer(d).steps() == [1, 2]  # the damaged one is left in place


def test_every_data_file_flipped_is_detected(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    for f in _data_files(d, 2):
        _flip_bytes(f)
    with pytest.raises(CheckpointError, match=r"step 2 .*(integrity|damaged)"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_truncated_data_file_raises(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    _truncate(max(_data_files(d, 2), key=os.path.getsize))
    with pytest.raises(CheckpointError, match=r"step 2 .*(integrity|damaged)"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_truncated_history_raises(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    for f in _data_files(d, 2, item="history"):
        _truncate(f)
    with pytest.raises(CheckpointError, match=r"step 2 .*(integrity|damaged)"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_damage_never_escapes_as_a_raw_error(tmp_path):
    d = str(tmp_path / "c")
    ckpt = Checkpointer(d, keep=3)
    for i in (1, 2, 3):
        ckpt.save(i, _state(i), algo="x", config=CONFIG)
    ckpt.close()
    for step in (2, 3):
        for f in _data_files(d, step):
            _flip_bytes(f)
    reused = Checkpointer(d)
    reused.restore(1, LIKE)
    with pytest.raises(CheckpointError, match="step 2"):
        reused.restore(2, LIKE)
    _, _, record, skipped = Checkpointer(d).restore_latest_valid(LIKE)
    assert record["step"] == 1 and [s for s, _ in skipped] == [3, 2]


def _edit_record(directory, step, edit):
    path = os.path.join(directory, str(step), "record", "metadata")
    record = json.loads(open(path).read())
    edit(record)
    with open(path, "w") as f:
        json.dump(record, f)


RECORD_EDITS = {
    "step": lambda r: r.update(step=1),  # 7500 -> 1500 in the issue
    "eval_return": lambda r: r.update(eval_return=1e9),
    "config": lambda r: r["config"].update(lr=0.5),
    "algo": lambda r: r.update(algo="y"),
    "structure": lambda r: r.update(structure=r["structure"] + " "),
    "arrays_sha256": lambda r: r.update(arrays_sha256="0" * 64),
    "extra field": lambda r: r["eval"].update(return_per_seed=[5.0]),
    "added field": lambda r: r.update(note="hi"),
    "removed field": lambda r: r.pop("eval"),
}


def _two_evaluated_steps(directory):
    ckpt = Checkpointer(directory, keep=3)
    for step, ret in ((1, 3.0), (2, 2.0)):
        extra = {"eval": {"return_mean": ret, "return_per_seed": [ret]}}
        history = {"r": np.arange(4.0 * step)}
        ckpt.save(
            step,
            _state(step),
            algo="x",
            config=CONFIG,
            history=history,
            eval_return=ret,
            extra=extra,
        )
    ckpt.close()
    return directory


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "hmac"])
@pytest.mark.parametrize("field", list(RECORD_EDITS))
def test_an_edited_record_field_is_refused(tmp_path, monkeypatch, field, signed):
    if signed:
        monkeypatch.setenv(HMAC_ENV, "k1")
    d = _two_evaluated_steps(str(tmp_path / "c"))
    Checkpointer(d).restore(2, LIKE, algo="x", config=CONFIG)  # intact: restores
    _edit_record(d, 2, RECORD_EDITS[field])
    for kwargs in ({}, {"algo": "x", "config": CONFIG}):
        with pytest.raises(CheckpointError, match=r"step 2 .*integrity check: its record"):
            Checkpointer(d).restore(2, LIKE, **kwargs)
    with pytest.raises(CheckpointError, match=r"step 2 .*record"):
        Checkpointer(d).verified_record(2)
    _assert_previous_step_still_good(d, config=CONFIG)


def test_an_edited_eval_return_does_not_make_a_checkpoint_the_best(tmp_path):
    d = _two_evaluated_steps(str(tmp_path / "c"))
    assert Checkpointer(d).best_step() == 1  # returns 3.0 (step 1) and 2.0 (step 2)
    _edit_record(d, 2, RECORD_EDITS["eval_return"])
    assert Checkpointer(d).record(2)["eval_return"] == 1e9  # what an unchecked reader sees
    assert Checkpointer(d).best_step() == 1


def test_a_record_edited_together_with_its_hash_is_caught_by_the_hmac(tmp_path, monkeypatch):
    def forge(r):  # a careful forger recomputes the record hash
        r["step"] = 1
        r["sha256"] = record_hash(r)

    unsigned = _two_evaluated_steps(str(tmp_path / "unsigned"))
    _edit_record(unsigned, 2, forge)
    assert Checkpointer(unsigned).restore(2, LIKE)[2]["step"] == 1  # undetectable without a key
    monkeypatch.setenv(HMAC_ENV, "k1")
    signed = _two_evaluated_steps(str(tmp_path / "signed"))
    _edit_record(signed, 2, forge)
    with pytest.raises(CheckpointError, match=r"step 2 .*HMAC"):
        Checkpointer(signed).restore(2, LIKE)
    _assert_previous_step_still_good(signed, config=CONFIG)


def test_the_record_hash_covers_every_field_but_itself_and_the_hmac():
    record = {"format": 2, "step": 7500, "eval_return": 1.5, "config": {"lr": 0.1}}
    base = record_hash(record)
    assert record_hash({**record, "sha256": "x", "hmac": "y"}) == base
    assert record_hash(dict(reversed(record.items()))) == base  # key order is irrelevant
    for changed in ({"step": 1500}, {"eval_return": 1.25}, {"config": {"lr": 0.2}}, {"z": 0}):
        assert record_hash({**record, **changed}) != base, changed


def test_a_checkpoint_of_the_previous_format_is_refused_with_the_reason(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    _edit_record(d, 2, lambda r: r.update(format=1))
    with pytest.raises(CheckpointError, match=r"step 2 .*older jaxlearn \(checkpoint format 1\)"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_unreadable_record_is_a_checkpoint_error(tmp_path):
    d = _two_steps(str(tmp_path / "c"))
    with open(os.path.join(d, "2", "record", "metadata"), "w") as f:
        f.write('{"format": 1, "algo": "x", "ste')
    with pytest.raises(CheckpointError, match=r"step 2 .*unreadable"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


# ---- 4. HMAC -----------------------------------------------------------------------------------


def test_hmac_signed_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv(HMAC_ENV, "k1")
    d = _two_steps(str(tmp_path / "signed"))
    state, _, record = Checkpointer(d).restore(2, LIKE)
    assert record["hmac"] and len(record["hmac"]) == 64
    _assert_trees_identical(state, _state(2))

    monkeypatch.setenv(HMAC_ENV, "k2")
    with pytest.raises(CheckpointError, match=rf"step 2 .*wrong HMAC.*{HMAC_ENV}"):
        Checkpointer(d).restore(2, LIKE)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        Checkpointer(d).restore_latest_valid(LIKE)

    monkeypatch.delenv(HMAC_ENV)
    with pytest.raises(CheckpointError, match=rf"step 2 .*is signed.*{HMAC_ENV}"):
        Checkpointer(d).restore(2, LIKE)

    # an unsigned checkpoint is refused while a key is set
    unsigned = _two_steps(str(tmp_path / "unsigned"))
    monkeypatch.setenv(HMAC_ENV, "k1")
    with pytest.raises(CheckpointError, match=r"step 2 .*missing or wrong HMAC"):
        Checkpointer(unsigned).restore(2, LIKE)


@pytest.mark.parametrize(
    "strip",
    [
        lambda r: r.pop("hmac"),
        lambda r: r.update(hmac=None),
        lambda r: r.update(hmac=""),
        lambda r: r.update(hmac="zz" * 32),  # not hex
        lambda r: r.update(hmac=r["hmac"][:32]),  # truncated
    ],
    ids=["removed", "null", "empty", "not-hex", "truncated"],
)
def test_a_signed_record_stripped_of_its_hmac_is_refused_with_or_without_a_key(
    tmp_path, monkeypatch, strip
):
    """`signed: true` is under the record's hash: deleting `hmac` (outside the hash) no longer
    turns a signed checkpoint into an unsigned one that loads when no key is set."""
    monkeypatch.setenv(HMAC_ENV, "k1")
    d = _two_steps(str(tmp_path / "signed"))
    record = Checkpointer(d).verified_record(2)
    assert record["signed"] is True and len(record["hmac"]) == 64
    assert record["sha256"] == record_hash(record)  # the flag is one of the hashed fields
    assert record_hash({**record, "signed": False}) != record["sha256"]
    _edit_record(d, 2, strip)
    for key in ("k1", None):
        if key is None:
            monkeypatch.delenv(HMAC_ENV)
        with pytest.raises(CheckpointError, match=r"step 2 .*says it is signed but carries no"):
            Checkpointer(d).restore(2, LIKE)
    # removing the flag as well breaks the hash (only a recomputed hash gets past, and
    # then only without a key: test_hmac_catches_a_record_forged_with_a_recomputed_hash)
    monkeypatch.setenv(HMAC_ENV, "k1")
    _edit_record(d, 2, lambda r: r.pop("signed"))
    with pytest.raises(CheckpointError, match=r"step 2 .*integrity check: its record"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_an_unsigned_record_says_so_and_loads_without_a_key(tmp_path, monkeypatch):
    d = _two_steps(str(tmp_path / "unsigned"))
    record = Checkpointer(d).verified_record(2)
    assert record["signed"] is False and record["hmac"] is None
    _edit_record(d, 2, lambda r: r.update(hmac="ab" * 32))  # a signature added afterwards
    with pytest.raises(CheckpointError, match=r"step 2 .*says it is unsigned but carries"):
        Checkpointer(d).restore(2, LIKE)
    _assert_previous_step_still_good(d)


def test_hmac_catches_a_record_forged_with_a_recomputed_hash(tmp_path, monkeypatch):
    """The SHA-256 alone catches corruption, not an edit that recomputes it; the HMAC does."""
    forged_config = {**CONFIG, "lr": 0.5}

    def forge(r):
        r["config"] = forged_config
        r["sha256"] = record_hash(r)

    unsigned = _two_steps(str(tmp_path / "unsigned"))
    _edit_record(unsigned, 2, forge)
    _, _, record = Checkpointer(unsigned).restore(2, LIKE)  # undetectable without a key
    assert record["config"] == forged_config

    monkeypatch.setenv(HMAC_ENV, "k1")
    signed = _two_steps(str(tmp_path / "signed"))
    _edit_record(signed, 2, forge)
    with pytest.raises(CheckpointError, match=r"step 2 .*HMAC"):
        Checkpointer(signed).restore(2, LIKE)
    _assert_previous_step_still_good(signed)


# ---- 4b. commits and declined saves -----------------------------------------------------------


def test_a_step_is_reported_only_once_committed(tmp_path):
    d = str(tmp_path / "c")
    seen = []

    def on_commit(step, record):
        # at this moment a fresh reader (another process) already lists and loads the step
        assert step in Checkpointer(d).steps()
        seen.append((step, record["step"], record["eval_return"]))

    ckpt = Checkpointer(d, keep=3, on_commit=on_commit)
    ckpt.save(1, _state(1), algo="x", config=CONFIG, eval_return=0.5)
    ckpt.save(2, _state(2), algo="x", config=CONFIG)  # commits 1 first
    assert seen[0] == (1, 1, 0.5)
    ckpt.close()
    assert seen == [(1, 1, 0.5), (2, 2, None)]
    sync = []
    ckpt = Checkpointer(
        str(tmp_path / "sync"), async_save=False, on_commit=lambda s, r: sync.append(s)
    )
    ckpt.save(4, _state(4), algo="x", config=CONFIG)
    assert sync == [4]  # a synchronous save is committed when save returns
    ckpt.close()
    assert sync == [4]


@pytest.mark.parametrize("async_save", [True, False])
def test_a_declined_save_is_an_error(tmp_path, async_save):
    d = str(tmp_path / "c")
    seen = []
    ckpt = Checkpointer(d, async_save=async_save, on_commit=lambda s, r: seen.append(s))
    ckpt.save(2, _state(2), algo="x", config=CONFIG)
    for step in (2, 1):  # Orbax's should_save is False for a step at or before the newest
        with pytest.raises(
            CheckpointError, match=rf"checkpoint {step} was not saved: Orbax declined"
        ):
            ckpt.save(step, _state(step), algo="x", config=CONFIG)
    ckpt.close()
    assert seen == [2]
    assert Checkpointer(d).steps() == [2]
    _assert_trees_identical(Checkpointer(d).restore(2, LIKE)[0], _state(2))


def test_a_step_set_aside_can_be_saved_again(tmp_path):
    d = str(tmp_path / "c")
    ckpt = Checkpointer(d, keep=3)
    ckpt.save(1, _state(1), algo="x", config=CONFIG)
    ckpt.save(2, _state(2), algo="x", config=CONFIG)
    ckpt.wait()
    ckpt.set_aside(2, str(tmp_path / "aside" / "2"))
    assert ckpt.steps() == [1] and os.path.isdir(tmp_path / "aside" / "2" / "state")
    ckpt.save(2, _state(5), algo="x", config=CONFIG)  # not declined: 2 no longer lists
    ckpt.close()
    _assert_trees_identical(Checkpointer(d).restore(2, LIKE)[0], _state(5))


# ---- 5. foreign checkpoints ------------------------------------------------------------------

PPO_TINY = PPOConfig(
    total_timesteps=4096, num_envs=4, num_steps=32, num_minibatches=2, hidden_sizes=(8,)
)


def _ppo_checkpoint(directory):
    ckpt = Checkpointer(directory)
    ckpt.save(1, _init(make_ppo, PPO_TINY), algo="ppo", config=to_dict(PPO_TINY))
    ckpt.close()
    return directory


def test_foreign_checkpoints_are_refused_before_reading_arrays(tmp_path):
    d = _ppo_checkpoint(str(tmp_path / "c"))
    ppo_like = _like(make_ppo, PPO_TINY)
    Checkpointer(d).restore(1, ppo_like, algo="ppo", config=to_dict(PPO_TINY))  # sanity
    # every array file destroyed: the checks below must not need them
    for f in _data_files(d, 1):
        with open(f, "wb"):
            pass
    with pytest.raises(CheckpointError, match="damaged"):
        Checkpointer(d).restore(1, ppo_like)

    with pytest.raises(CheckpointError, match=r"algo='ppo'.*algo='dqn'"):
        Checkpointer(d).restore(1, ppo_like, algo="dqn")
    dqn_like = _like(make_dqn, DQN_SMALL)
    with pytest.raises(CheckpointError, match=r"step 1 .*another structure"):
        Checkpointer(d).restore(1, dqn_like)
    deeper = PPOConfig(**{**to_dict(PPO_TINY), "hidden_sizes": (8, 8)})
    with pytest.raises(CheckpointError, match=r"step 1 .*another structure"):
        Checkpointer(d).restore(1, _like(make_ppo, deeper))
    with pytest.raises(CheckpointError, match=r"another config.*hidden_sizes"):
        Checkpointer(d).restore(1, ppo_like, config=to_dict(deeper))


def test_same_structure_other_shapes_is_refused(tmp_path):
    d = _ppo_checkpoint(str(tmp_path / "c"))
    two_seeds = _like(make_ppo, PPO_TINY, num_seeds=2)
    with pytest.raises(CheckpointError, match="structure|shape"):
        Checkpointer(d).restore(1, two_seeds)
    wider = PPOConfig(**{**to_dict(PPO_TINY), "hidden_sizes": (16,)})
    with pytest.raises(CheckpointError, match="structure|shape"):
        Checkpointer(d).restore(1, _like(make_ppo, wider))


def test_dqn_with_n_step_1_can_be_checkpointed(tmp_path):
    cfg = DQNConfig(total_timesteps=1200, learning_starts=300, buffer_size=500, hidden_sizes=(8,))
    state = _init(make_dqn, cfg)
    ckpt = Checkpointer(str(tmp_path / "c"))
    ckpt.save(1, state, algo="dqn", config=to_dict(cfg))
    ckpt.close()
    restored, _, _ = Checkpointer(str(tmp_path / "c")).restore(1, _like(make_dqn, cfg))
    _assert_trees_identical(restored, state)


# ---- 6. a process killed mid-save -------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from jaxlearn.checkpoint import Checkpointer

    big = np.random.default_rng(0).random(25_000_000, dtype=np.float32)  # 100 MB
    ckpt = Checkpointer(sys.argv[1], keep=3)
    ckpt.save(1, {"w": big, "step": np.int32(1)}, algo="x", config={"a": 1})
    ckpt.wait()
    big[:10] = 7.0
    ckpt.save(2, {"w": big, "step": np.int32(2)}, algo="x", config={"a": 1})
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_process_killed_mid_save_leaves_only_loadable_checkpoints(tmp_path):
    d = str(tmp_path / "c")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, d],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    like = {
        "w": jax.ShapeDtypeStruct((25_000_000,), np.float32),
        "step": jax.ShapeDtypeStruct((), np.int32),
    }
    ckpt = Checkpointer(d)
    steps = ckpt.steps()
    assert 1 in steps and set(steps) <= {1, 2}, (steps, os.listdir(d))
    for step in steps:  # whatever lists as complete restores
        state, _, record = ckpt.restore(step, like)
        assert int(state["step"]) == step == record["step"]
    state, _, record, skipped = ckpt.restore_latest_valid(like)
    assert record["step"] == steps[-1] and skipped == []
    if 2 not in steps:  # the interrupted step can be written again
        ckpt.save(
            2, {"w": np.zeros(25_000_000, np.float32), "step": np.int32(2)}, algo="x", config={}
        )
        ckpt.close()
        assert Checkpointer(d).steps() == [1, 2]
        assert int(Checkpointer(d).restore(2, like)[0]["step"]) == 2


def test_each_checkpoint_line_follows_its_own_chunk_line(tmp_path):
    # the write is asynchronous; its line must still come before the next chunk's line
    lines = []
    run(RunConfig(algo="dqn", num_chunks=4), DQN_SMALL, out=str(tmp_path / "r"), log=lines.append)
    chunks = [i for i, s in enumerate(lines) if s.startswith("  chunk ")]
    saves = [i for i, s in enumerate(lines) if s.startswith("  checkpoint ")]
    assert len(chunks) == len(saves) == 4, lines
    spu = 10  # env steps per DQN update (num_envs)
    for c, k in zip(chunks, saves, strict=True):
        assert c < k and not [i for i in chunks if c < i < k], lines  # no chunk between
        step = int(re.search(r"step ([\d,]+)/", lines[c]).group(1).replace(",", ""))
        assert int(lines[k].split()[1]) * spu == step, (lines[c], lines[k])


# ---- 7. divergence guard ----------------------------------------------------------------------

DQN_DIVERGES = DQNConfig(**{**to_dict(DQN_SMALL), "learning_rate": 1e30})


def test_divergence_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    run_cfg = RunConfig(algo="dqn", num_chunks=4, eval_episodes=0)
    reported = []

    def log(line):  # "checkpoint N" only once another reader can list N
        if line.startswith("  checkpoint "):
            step = int(line.split()[1])
            assert step in Checkpointer(os.path.join(out, CHECKPOINT_DIR)).steps(), line
            reported.append(step)

    with pytest.raises(DivergenceError, match="NaN or Inf") as info:
        run(run_cfg, DQN_DIVERGES, out=out, log=log)
    assert reported == [30]
    msg = str(info.value)
    update = int(re.search(r"at update (\d+)", msg).group(1))
    # no learning during chunk 1 (learning_starts=300 = 30 updates): its checkpoint is good
    assert 30 < update <= 60, msg
    assert "last good checkpoint is update 30" in msg and out in msg
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    ckpt = Checkpointer(os.path.join(out, CHECKPOINT_DIR))
    assert ckpt.steps() == [30]  # nothing saved after the divergence
    state, _, _ = ckpt.restore(
        30,
        _like(make_dqn, DQN_DIVERGES),
        algo="dqn",
        config=to_dict(run_cfg) | to_dict(DQN_DIVERGES),
    )
    for leaf in jax.tree.leaves(state.params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def _nan_params(state):
    return state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))


def test_dqn_update_flags_nonfinite():
    cfg = DQNConfig(**{**to_dict(DQN_SMALL), "learning_starts": 0})
    learner = make_dqn(cfg)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.key(0), learner.hparams)
    for _ in range(5):  # 50 transitions: enough for a batch of 32
        state, metrics = update(state, learner.hparams)
    assert float(metrics["learning"]) == 1.0 and float(metrics["nonfinite"]) == 0.0
    _, metrics = update(_nan_params(state), learner.hparams)
    assert float(metrics["nonfinite"]) == 1.0


@pytest.mark.slow
def test_ppo_divergence_is_caught(tmp_path):
    learner = make_ppo(PPO_SMALL)
    state = learner.init(jax.random.key(0), learner.hparams)
    _, metrics = jax.jit(learner.update)(_nan_params(state), learner.hparams)
    assert float(metrics["nonfinite"]) == 1.0
    cfg = PPOConfig(**{**to_dict(PPO_SMALL), "learning_rate": 1e30})
    with pytest.raises(DivergenceError, match="NaN or Inf"):
        run(RunConfig(num_chunks=4, eval_episodes=0), cfg, out=str(tmp_path / "r"), log=_quiet)
    assert not os.path.exists(tmp_path / "r" / "metrics.json")


@pytest.mark.slow
def test_train_script_exits_3_on_divergence(tmp_path):
    out = tmp_path / "run"
    sets = {
        "learning_starts": 300,
        "buffer_size": 500,
        "batch_size": 32,
        "hidden_sizes": 32,
        "n_step": 3,
        "learning_rate": "1e30",
        "num_chunks": 4,
        "eval_episodes": 0,
    }
    args = [sys.executable, TRAIN, "--algo", "dqn", "--total-timesteps", "1200", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "error: training diverged: NaN or Inf" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "metrics.json").exists()


DEFAULTS = config_defaults()

# ---- 8. train.py --resume ---------------------------------------------------------------------

SMALL_YAML = "algo: ppo\ntotal_timesteps: 4096\nnum_envs: 4\nnum_steps: 32\nnum_minibatches: 2\n"


def test_train_script_resume_errors(tmp_path, capsys):
    main = _train_main()
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert main(["--resume", str(nothing)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "missing")]) == 2
    assert "no config.yaml" in capsys.readouterr().err

    done = tmp_path / "done"
    done.mkdir()
    (done / "config.yaml").write_text(SMALL_YAML)
    (done / "metrics.json").write_text("{}")
    assert main(["--resume", str(done)]) == 2
    assert "already finished" in capsys.readouterr().err

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text(SMALL_YAML)
    for extra in (
        ["--seed", "3"],
        ["--set", "learning_rate=0.1"],
        ["--out", "x"],
        ["--algo", "dqn"],
    ):
        assert main(["--resume", str(no_ckpt), *extra]) == 2
        err = capsys.readouterr().err
        assert "--resume takes no other flags" in err and extra[0] in err
    # checkpoints exist but none is valid (another run's): an error, not a restart
    # (a run with no checkpoint at all restarts: tests/test_rundir.py)
    foreign = Checkpointer(str(no_ckpt / CHECKPOINT_DIR), async_save=False)
    foreign.save(8, {"x": np.arange(3.0)}, algo="dqn", config={})
    foreign.close()
    assert main(["--resume", str(no_ckpt)]) == 2
    assert "no valid checkpoint" in capsys.readouterr().err
    assert not (no_ckpt / "metrics.json").exists()


def test_train_script_resume_rejects_falsy_flags(tmp_path, capsys):
    main = _train_main()
    d = tmp_path / "r"
    d.mkdir()
    (d / "config.yaml").write_text(SMALL_YAML)
    assert main(["--resume", str(d), "--seed", "0"]) == 2
    assert "--resume takes no other flags" in capsys.readouterr().err


@pytest.mark.slow
def test_train_script_resumes_skipping_a_damaged_checkpoint(tmp_path, capsys):
    run_cfg = RunConfig(num_chunks=4, eval_episodes=2)
    straight = run(run_cfg, PPO_SMALL, out=str(tmp_path / "straight"), log=_quiet)
    out = tmp_path / "run"
    stopped = run(run_cfg, PPO_SMALL, out=str(out), log=_quiet, stop_after_chunks=2)
    assert stopped["stopped_at_update"] == 16
    ckpt_dir = str(out / CHECKPOINT_DIR)
    assert Checkpointer(ckpt_dir).steps() == [8, 16]
    for f in _data_files(ckpt_dir, 16):  # the newest is damaged: the resume falls back to 8
        _truncate(f)
    proc = subprocess.run(
        [sys.executable, TRAIN, "--resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: skipped checkpoint 16" in proc.stderr
    assert "restored update 8/32" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"] == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] is True
    assert metrics["final_return_mean"] == straight["final_return_mean"]
    like = _like(make_ppo, PPO_SMALL)
    a, _, _ = Checkpointer(str(tmp_path / "straight" / CHECKPOINT_DIR)).restore(32, like)
    b, _, _ = Checkpointer(ckpt_dir).restore(32, like)
    _assert_trees_identical(a, b)
    # a finished run cannot be resumed again
    assert _train_main()(["--resume", str(out)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_a_checkpoint_from_before_a_new_config_field_still_restores(tmp_path):
    """Fields added to jaxlearn later (lora_rank, init_from, memory_fraction, ...) are
    missing from older checkpoints' configs: they match when they hold their defaults (the
    run folder supplies them: the storage layer knows no config classes)."""
    old = {"algo": "ppo", "learning_rate": 0.001}
    ckpt = Checkpointer(str(tmp_path / "c"), async_save=False)
    ckpt.save(1, {"x": np.arange(3.0)}, algo="ppo", config=old)
    ckpt.close()
    like = {"x": np.zeros(3)}
    with pytest.raises(CheckpointError, match=r"fields differ: \['hidden_sizes', 'lora_rank'\]"):
        Checkpointer(str(tmp_path / "c")).restore(
            1, like, config={**old, "lora_rank": 0, "hidden_sizes": [64, 64]}
        )
    now = {**old, "lora_rank": 0, "init_from": None, "hidden_sizes": [64, 64]}
    state, _, _ = Checkpointer(str(tmp_path / "c")).restore(
        1, like, algo="ppo", config=now, defaults=DEFAULTS
    )
    np.testing.assert_array_equal(state["x"], np.arange(3.0))
    with pytest.raises(CheckpointError, match=r"fields differ: \['lora_rank'\]"):
        Checkpointer(str(tmp_path / "c")).restore(
            1, like, algo="ppo", config={**old, "lora_rank": 2}, defaults=DEFAULTS
        )
    with pytest.raises(CheckpointError, match=r"fields differ: \['learning_rate'\]"):
        Checkpointer(str(tmp_path / "c")).restore(
            1, like, algo="ppo", config={**old, "learning_rate": 0.01}, defaults=DEFAULTS
        )
