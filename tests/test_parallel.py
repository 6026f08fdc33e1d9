"""Seeds sharded over devices: same results as one device; device selection rules.

The multi-device runs happen in a subprocess with 8 forced CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), since the flag must be set before
JAX creates its CPU backend.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from forced_devices import last_json, run_on_cpu_devices

from jaxlearn.parallel import select_devices

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_auto_uses_all_devices_only_when_they_divide_the_seeds():
    devs = list(range(8))
    assert select_devices("auto", 16, devs) == devs
    assert select_devices("auto", 6, devs) == [0]
    assert select_devices(None, 8, devs) == devs
    assert select_devices("auto", 3, [0]) == [0]
    assert select_devices("all", 8, devs) == devs
    assert select_devices("4", 8, devs) == [0, 1, 2, 3]
    assert select_devices(2, 6, devs) == [0, 1]


@pytest.mark.parametrize(
    "spec, seeds, match",
    [
        (
            "all",
            6,
            r"8 devices, which does not divide num_seeds=6: use a device count in \[1, 2, 3, 6\]",
        ),
        ("3", 8, r"3 devices, which does not divide num_seeds=8"),
        ("9", 9, r"has 8 local device\(s\)"),
        ("0", 8, r"count in 1..8"),
        ("many", 8, r"use 'auto', 'all' or a count"),
    ],
)
def test_impossible_splits_are_rejected_with_what_would_divide(spec, seeds, match):
    with pytest.raises(ValueError, match=match):
        select_devices(spec, seeds, list(range(8)))


def test_run_config_rejects_a_bad_devices_value():
    from jaxlearn.runner import RunConfig

    with pytest.raises(ValueError, match=r"RunConfig.devices='x' is invalid"):
        RunConfig(devices="x")


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import jax, numpy as np
    from jaxlearn import algos
    from jaxlearn.checkpoint import Checkpointer
    from jaxlearn.runner import resolve_config, run

    out = sys.argv[1]
    assert len(jax.local_devices()) == 8, jax.local_devices()
    report = {}
    for algo, extra in [
        ("ppo", {"total_timesteps": 2048, "num_envs": 4, "num_steps": 32, "num_minibatches": 2}),
        ("dqn", {"total_timesteps": 1200, "learning_starts": 200, "buffer_size": 500,
                 "batch_size": 32, "train_frequency": 4, "target_update_period": 100}),
    ]:
        finals = {}
        for devices in ("1", "all"):
            over = {"algo": algo, "num_seeds": 8, "num_chunks": 2, "eval_episodes": 0,
                    "devices": devices, **extra}
            run_cfg, cfg = resolve_config(overrides=over)
            d = os.path.join(out, f"{algo}_{devices}")
            summary = run(run_cfg, cfg, out=d, log=lambda s: None)
            learner = algos.ALGOS[algo][1](cfg)
            keys = jax.random.split(jax.random.key(0), 8)
            like = jax.eval_shape(jax.vmap(learner.init, in_axes=(0, None)), keys, learner.hparams)
            state, _, _ = Checkpointer(os.path.join(d, "checkpoints")).restore(None, like)
            finals[devices] = (state, summary["num_devices"])
        (a, n1), (b, n8) = finals["1"], finals["all"]
        diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                 for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))]
        report[algo] = {"devices": [n1, n8], "max_param_diff": max(diffs)}
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_seeds_sharded_over_8_devices_match_one_device(tmp_path):
    report = last_json(run_on_cpu_devices(["-c", SCRIPT, str(tmp_path)], 8))
    for algo in ("ppo", "dqn"):
        assert report[algo]["devices"] == [1, 8], report
        assert report[algo]["max_param_diff"] <= 1e-5, report


DP_SCRIPT = textwrap.dedent(
    """
    import json
    from functools import partial
    import jax, jax.numpy as jnp, numpy as np
    from jaxlearn.algos.ppo import PPOConfig
    from jaxlearn.algos.ppo.losses import PPOBatch
    from jaxlearn.algos.common import make_optimizer
    from jaxlearn.algos.ppo.train import learn, make_policy
    from jaxlearn.algos.dqn import DQNConfig
    from jaxlearn.algos.dqn.nstep import Transition
    from jaxlearn.algos.dqn.train import gradient_step, make_agent
    from jaxlearn.envs import make
    from jaxlearn.parallel import data_mesh, data_parallel

    assert len(jax.local_devices()) == 8
    mesh = data_mesh(jax.local_devices())
    report = {}
    n = 256
    k = jax.random.split(jax.random.key(1), 8)

    def max_diff(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    # PPO: one full-batch epoch (1 minibatch) on 1 device vs the batch split over 8
    for env_name in ("CartPole-v1", "Pendulum-v1"):
        cfg = PPOConfig(env=env_name, num_envs=8, num_steps=32, num_minibatches=1, num_epochs=1)
        env, env_params = make(env_name)
        policy = make_policy(cfg, env, env_params)
        obs = jax.random.normal(k[0], (n, *env.observation_space(env_params).shape))
        params = policy.network.init(k[1], obs[:1])
        action, log_prob, value = policy.sample(k[2], params, obs)
        batch = PPOBatch(obs=obs, action=action, log_prob=log_prob + 0.05, value=value,
                         advantage=jax.random.normal(k[3], (n,)) * 2.0 + 0.5,
                         target=value + jax.random.normal(k[4], (n,)))
        hp = cfg.hparams()
        opt_state = make_optimizer(cfg).init(params)
        p1, _, m1 = jax.jit(partial(learn, policy=policy, config=cfg))(
            params, opt_state, batch, k[5], hp, hp.learning_rate)
        dp = data_parallel(partial(learn, policy=policy, config=cfg, axis_name="data"), mesh)
        p8, _, m8 = dp(params=params, opt_state=opt_state, batch=batch, key=k[5], hparams=hp,
                       learning_rate=hp.learning_rate)
        report["ppo_" + env_name] = {"param_diff": max_diff(p1, p8),
                                     "loss_diff": abs(float(m1["loss"]) - float(m8["loss"])),
                                     "moved": max_diff(p1, params)}

    # DQN: one gradient step
    cfg = DQNConfig(double_dqn=True)
    env, env_params = make("CartPole-v1")
    agent = make_agent(cfg, env, env_params)
    tx = make_optimizer(cfg)
    obs = jax.random.normal(k[0], (n, 4))
    params = agent.network.init(k[1], obs[:1])
    batch = Transition(obs=obs, action=jax.random.randint(k[2], (n,), 0, 2),
                       reward=jax.random.normal(k[3], (n,)), discount=jnp.full((n,), 0.99),
                       next_obs=jax.random.normal(k[4], (n, 4)), valid=jnp.ones((n,), bool))
    weights = jax.random.uniform(k[5], (n,))
    hp = cfg.hparams()
    one = jax.jit(partial(gradient_step, q_values=agent.q_values, config=cfg))
    p1, _, _, m1 = one(params, params, tx.init(params), batch, weights, hp)
    dp = data_parallel(partial(gradient_step, q_values=agent.q_values, config=cfg,
                               axis_name="data"), mesh, sharded=("batch", "weights"))
    # td_error is per-sample (sharded); only compare the replicated outputs
    p8, _, _, m8 = dp(params=params, target_params=params, opt_state=tx.init(params),
                      batch=batch, weights=weights, hparams=hp)
    report["dqn"] = {"param_diff": max_diff(p1, p8), "moved": max_diff(p1, params),
                     "loss_diff": abs(float(m1["loss"]) - float(m8["loss"])),
                     "metric_diff": max(abs(float(m1[k]) - float(m8[k]))
                                        for k in ("q_mean", "td_abs_mean", "grad_norm"))}
    try:
        data_parallel(partial(gradient_step, q_values=agent.q_values, config=cfg,
                              axis_name="data"), mesh,
                      sharded=("batch", "weights"))(params=params, target_params=params,
            opt_state=tx.init(params), batch=jax.tree.map(lambda x: x[:100], batch),
            weights=weights[:100], hparams=hp)
        report["error"] = None
    except ValueError as e:
        report["error"] = str(e)
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_data_parallel_update_equals_the_single_device_update(tmp_path):
    report = last_json(run_on_cpu_devices(["-c", DP_SCRIPT], 8))
    for name in ("ppo_CartPole-v1", "ppo_Pendulum-v1", "dqn"):
        assert report[name]["moved"] > 1e-4, report  # the update did something
        assert report[name]["param_diff"] <= 1e-5, report
        assert report[name]["loss_diff"] <= 1e-4, report
    assert report["dqn"]["metric_diff"] <= 1e-4, report  # q_mean etc. over the whole batch
    assert "100 items, not a multiple of the 8 devices" in report["error"]


DP_RUN_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, subprocess, sys
    import jax, numpy as np
    from jaxlearn.algos.ppo import make_learner
    from jaxlearn.checkpoint import Checkpointer
    from jaxlearn.runner import resolve_config, run

    out = sys.argv[1]
    over = {"num_seeds": 1, "devices": "all", "num_envs": 8, "num_steps": 32,
            "num_minibatches": 2, "total_timesteps": 8192, "num_chunks": 2, "eval_episodes": 2}
    run_cfg, cfg = resolve_config(overrides=over)
    summary = run(run_cfg, cfg, out=os.path.join(out, "dp"), log=lambda s: None)
    # one device's replica: the same agent with num_envs / 8 envs
    local = dataclasses.replace(cfg, num_envs=1)
    one = jax.eval_shape(make_learner(local).init, jax.random.key(0), cfg.hparams())
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct((8, *x.shape), x.dtype), one)
    state = Checkpointer(os.path.join(out, "dp", "checkpoints")).restore(None, like)
    params = state[0].params
    same = all(bool(np.all(np.asarray(x) == np.asarray(x)[:1])) for x in jax.tree.leaves(params))
    envs_differ = not np.array_equal(np.asarray(state[0].obs)[0], np.asarray(state[0].obs)[1])
    bad = subprocess.run([sys.executable, "scripts/train.py", "--devices", "all", "--algo",
                          "dqn", "--out", os.path.join(out, "x")], capture_output=True, text=True)
    print(json.dumps({"replicas_identical": same, "envs_differ": envs_differ,
                      "data_parallel": summary["data_parallel"],
                      "num_devices": summary["num_devices"],
                      "finite": bool(np.isfinite(summary["final_return_mean"])),
                      "dqn_rc": bad.returncode, "dqn_err": bad.stderr[-400:],
                      "wrote_dqn": os.path.exists(os.path.join(out, "x"))}))
    """
)


@pytest.mark.slow
def test_one_agent_trains_data_parallel_with_identical_replicas(tmp_path):
    r = last_json(run_on_cpu_devices(["-c", DP_RUN_SCRIPT, str(tmp_path)], 8))
    assert r["data_parallel"] and r["num_devices"] == 8 and r["finite"], r
    assert r["replicas_identical"], r  # pmean keeps every device's parameters equal
    assert r["envs_differ"], r  # each device steps its own envs
    # DQN with the default num_envs=1 cannot split: refused before anything is written
    assert r["dqn_rc"] == 2 and not r["wrote_dqn"], r
    assert "DQNConfig.num_envs=1 is invalid: must be a multiple of the 8 devices" in r["dqn_err"]
    assert "device counts that divide num_envs, buffer_size, batch_size, train_frequency: [1]" in r[
        "dqn_err"
    ]


DQN_DP_RUN_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, sys
    import jax, numpy as np
    from jaxlearn.algos.dqn import make_learner
    from jaxlearn.checkpoint import Checkpointer
    from jaxlearn.runner import resolve_config, run

    out = sys.argv[1]
    over = {"algo": "dqn", "num_seeds": 1, "devices": "all", "num_envs": 8,
            "total_timesteps": 4000, "learning_starts": 400, "buffer_size": 800,
            "batch_size": 64, "train_frequency": 16, "target_update_period": 160,
            "num_chunks": 2, "eval_episodes": 2, "prioritized": sys.argv[2] == "per"}
    run_cfg, cfg = resolve_config(overrides=over)
    summary = run(run_cfg, cfg, out=os.path.join(out, "dp"), log=lambda s: None)
    # one device's replica: 1 env, a replay shard of 100, batches of 8
    local = dataclasses.replace(cfg, num_envs=1, buffer_size=100, batch_size=8,
                                train_frequency=2, target_update_period=20)
    one = jax.eval_shape(make_learner(local).init, jax.random.key(0), cfg.hparams())
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct((8, *x.shape), x.dtype), one)
    state, history, _ = Checkpointer(os.path.join(out, "dp", "checkpoints")).restore(None, like)

    def same(tree):
        return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1])) for x in jax.tree.leaves(tree))

    def differ(x):
        return not np.array_equal(np.asarray(x)[0], np.asarray(x)[1])

    print(json.dumps({
        "params_identical": same((state.params, state.target_params, state.opt_state)),
        "episodes_identical": same(state.episodes),  # one epsilon schedule for all devices
        "envs_differ": differ(state.obs),
        "shards_differ": differ(state.buffer.items.obs),
        "shard_size": int(np.asarray(state.buffer.size)[0]),
        "learned": float(np.asarray(history["learning"]).sum()),
        "episode_count": float(np.asarray(history["episode_count"]).sum()),
        "data_parallel": summary["data_parallel"], "num_devices": summary["num_devices"],
        "finite": bool(np.isfinite(summary["final_return_mean"]))}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("replay", ["uniform", "per"])
def test_one_dqn_agent_trains_data_parallel_with_identical_replicas(tmp_path, replay):
    r = last_json(run_on_cpu_devices(["-c", DQN_DP_RUN_SCRIPT, str(tmp_path), replay], 8))
    assert r["data_parallel"] and r["num_devices"] == 8 and r["finite"], r
    assert r["params_identical"] and r["episodes_identical"], r  # pmean keeps replicas equal
    assert r["envs_differ"] and r["shards_differ"], r  # each device: its envs, its replay
    assert r["shard_size"] == 100, r  # buffer_size / 8, full after 4000 env steps
    assert r["learned"] > 0 and r["episode_count"] > 0, r


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


TWO_PROCESS_FLAGS = [
    "--num-seeds",
    "2",
    "--total-timesteps",
    "8192",
    "--set",
    "num_chunks=2",
    "--set",
    "eval_episodes=2",
]


def _two_processes(args_of):
    """Run `args_of(process_id)` (argv after the interpreter) as processes 1 and 0 of a
    2-process jax.distributed job on localhost (CPU devices, gloo); fail on an error."""
    port = _free_port()
    dist = ["--distributed", "--coordinator-address", f"localhost:{port}", "--num-processes", "2"]
    procs = [
        subprocess.Popen(
            [sys.executable, *args_of(i), *dist, "--process-id", str(i)],
            cwd=ROOT,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 0)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted 2-process PPO run of 2 seeds (one per process); its folder."""
    out = str(tmp_path_factory.mktemp("two_processes") / "multi")
    _two_processes(lambda i: ["scripts/train.py", "--out", out, *TWO_PROCESS_FLAGS])
    return out


def _final_state(run_dir, num_seeds=2):
    import jax

    from jaxlearn.algos.ppo import make_learner
    from jaxlearn.checkpoint import Checkpointer
    from jaxlearn.runner import resolve_config

    _, cfg = resolve_config(config_file=os.path.join(run_dir, "config.yaml"))
    learner = make_learner(cfg)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    like = jax.eval_shape(jax.vmap(learner.init, in_axes=(0, None)), keys, learner.hparams)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"))
    state, history, record = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return state, history, record


@pytest.mark.slow
def test_two_processes_on_localhost_train_the_seeds_of_one_process_run(tmp_path, two_process_run):
    # jax.distributed with CPU devices (gloo): each process trains one of the two seeds.
    out = two_process_run
    single = subprocess.run(
        [sys.executable, "scripts/train.py", "--out", str(tmp_path / "single")] + TWO_PROCESS_FLAGS,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi = json.load(open(os.path.join(out, "metrics.json")))
    one = json.load(open(tmp_path / "single" / "metrics.json"))
    assert multi["num_processes"] == 2 and one["num_processes"] == 1
    assert multi["final_return_per_seed"] == pytest.approx(one["final_return_per_seed"], rel=1e-5)
    # process 0 writes one checkpoint of both processes' seeds, laid out as a 1-process run's
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["16", "8"]
    _, history, record = _final_state(out)
    assert record["step"] == 16 and len(record["eval"]["return_per_seed"]) == 2
    assert history["episode_count"].shape == (2, 16)


STOP_SCRIPT = textwrap.dedent(
    """
    import argparse, sys
    import jax

    p = argparse.ArgumentParser()
    for flag in ("--out", "--coordinator-address", "--num-processes", "--process-id"):
        p.add_argument(flag)
    p.add_argument("--distributed", action="store_true")
    a = p.parse_args()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(a.coordinator_address, int(a.num_processes), int(a.process_id))
    from jaxlearn import compile_cache
    from jaxlearn.runner import resolve_config, run  # after initialize (gymnax starts XLA)

    compile_cache.enable()  # as scripts/train.py does ($JAXLEARN_COMPILE_CACHE)

    over = {"num_seeds": 2, "total_timesteps": 8192, "num_chunks": 2, "eval_episodes": 2}
    run_cfg, cfg = resolve_config(overrides=over)
    print(run(run_cfg, cfg, out=a.out, stop_after_chunks=1))
    """
)


@pytest.mark.slow
def test_two_process_run_stopped_after_a_chunk_resumes_to_the_uninterrupted_result(
    tmp_path, two_process_run
):
    import jax
    import numpy as np

    out = str(tmp_path / "stopped")
    _two_processes(lambda i: ["-c", STOP_SCRIPT, "--out", out])  # same flags as the fixture's
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    assert os.listdir(os.path.join(out, "checkpoints")) == ["8"]
    _two_processes(lambda i: ["scripts/train.py", "--resume", out])
    resumed = json.load(open(os.path.join(out, "metrics.json")))
    whole = json.load(open(os.path.join(two_process_run, "metrics.json")))
    assert resumed["resumed"] and resumed["num_processes"] == 2
    assert resumed["final_return_per_seed"] == whole["final_return_per_seed"]
    a, history_a, _ = _final_state(out)
    b, history_b, _ = _final_state(two_process_run)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):  # params, Adam moments, env states, keys
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for k in history_b:
        np.testing.assert_array_equal(history_a[k], history_b[k])


ACROSS_FLAGS = [
    "--num-seeds",
    "1",
    "--total-timesteps",
    "4096",
    "--set",
    "num_envs=8",
    "--set",
    "num_chunks=2",
    "--set",
    "eval_episodes=2",
]
DQN_ACROSS_FLAGS = [
    "--algo",
    "dqn",
    "--num-seeds",
    "1",
    "--total-timesteps",
    "3000",
    "--set",
    "num_envs=4",
    "--set",
    "learning_starts=400",
    "--set",
    "buffer_size=800",
    "--set",
    "batch_size=64",
    "--set",
    "train_frequency=8",
    "--set",
    "target_update_period=160",
    "--set",
    "num_chunks=2",
    "--set",
    "eval_episodes=2",
]


def _one_agent_on_two_local_devices(out, flags):
    run_on_cpu_devices(["scripts/train.py", "--out", out, "--devices", "all", *flags], 2)


def _checkpoint_arrays(run_dir, like_dir):
    """Every array of run_dir's newest checkpoint, restored into like_dir's structure."""
    import jax

    from jaxlearn import algos
    from jaxlearn.checkpoint import Checkpointer
    from jaxlearn.parallel import DATA_AXIS
    from jaxlearn.runner import resolve_config

    run_cfg, cfg = resolve_config(config_file=os.path.join(like_dir, "config.yaml"))
    _, make_learner = algos.ALGOS[run_cfg.algo]
    learner = make_learner(cfg, data_shards=2)
    # one replica per device: vmap names the data axis as shard_map does
    init = jax.vmap(learner.init, in_axes=(0, None), axis_name=DATA_AXIS)
    like = jax.eval_shape(init, jax.random.split(jax.random.key(0), 2), learner.hparams)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"))
    state, history, record = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    leaves = [
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        for x in jax.tree.leaves(state)
    ]
    return leaves, history, record


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_one_agent_across_two_processes_equals_one_agent_on_two_devices(tmp_path, algo):
    # jax.distributed on localhost (CPU, gloo): num_seeds=1 with 2 processes of 1 device
    # each trains one agent data parallel over a 2-device global mesh; the same run as one
    # process with 2 devices, array for array.
    import numpy as np

    flags = ACROSS_FLAGS if algo == "ppo" else DQN_ACROSS_FLAGS
    across, local = str(tmp_path / "across"), str(tmp_path / "local")
    _two_processes(lambda i: ["scripts/train.py", "--out", across, *flags])
    _one_agent_on_two_local_devices(local, flags)
    a = json.load(open(os.path.join(across, "metrics.json")))
    b = json.load(open(os.path.join(local, "metrics.json")))
    assert a["across_processes"] and a["num_processes"] == 2 and a["num_devices"] == 2, a
    assert a["data_parallel"] and b["data_parallel"] and not b["across_processes"]
    assert a["final_return_per_seed"] == pytest.approx(b["final_return_per_seed"], rel=1e-5)
    leaves_a, history_a, record_a = _checkpoint_arrays(across, local)
    leaves_b, history_b, record_b = _checkpoint_arrays(local, local)
    assert record_a["step"] == record_b["step"]
    assert record_a["eval"]["return_mean"] == pytest.approx(record_b["eval"]["return_mean"])
    for x, y in zip(leaves_a, leaves_b, strict=True):  # both replicas: params, envs, buffers
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    for k in history_b:
        np.testing.assert_allclose(history_a[k], history_b[k], rtol=1e-5, atol=1e-6)
    if algo == "dqn":
        return  # resume across processes runs the same runner code for both algorithms
    # an interrupted run resumes across the processes to the same end
    stopped = str(tmp_path / "stopped")
    script = STOP_SCRIPT.replace(
        '{"num_seeds": 2, "total_timesteps": 8192, "num_chunks": 2, "eval_episodes": 2}',
        json.dumps(_overrides(flags)),
    )
    _two_processes(lambda i: ["-c", script, "--out", stopped])
    assert not os.path.exists(os.path.join(stopped, "metrics.json"))
    _two_processes(lambda i: ["scripts/train.py", "--resume", stopped])
    leaves_c, _, _ = _checkpoint_arrays(stopped, local)
    for x, y in zip(leaves_c, leaves_a, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _overrides(flags):
    """The run overrides that train.py flags stand for (as RunConfig/algo fields)."""
    names = {"--algo": "algo", "--num-seeds": "num_seeds", "--total-timesteps": "total_timesteps"}
    out = {}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag == "--set":
            k, v = value.split("=")
            out[k] = int(v)
        else:
            out[names[flag]] = value if flag == "--algo" else int(value)
    return out
