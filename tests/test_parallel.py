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


def test_seeds_sharded_over_8_devices_match_one_device(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
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
    from jaxlearn.algos.ppo.train import learn, make_policy, _adam
    from jaxlearn.algos.dqn import DQNConfig
    from jaxlearn.algos.dqn.nstep import Transition
    from jaxlearn.algos.dqn.train import make_agent, make_optimizer, update
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
        opt_state = _adam(cfg).init(params)
        p1, _, m1 = jax.jit(partial(learn, policy=policy, config=cfg))(
            params, opt_state, batch, k[5], hp, hp.learning_rate)
        dp = data_parallel(partial(learn, policy=policy, config=cfg, axis_name="data"), mesh)
        p8, _, m8 = dp(params=params, opt_state=opt_state, batch=batch, key=k[5], hparams=hp,
                       learning_rate=hp.learning_rate)
        report["ppo_" + env_name] = {"param_diff": max_diff(p1, p8),
                                     "loss_diff": abs(float(m1["loss"]) - float(m8["loss"])),
                                     "moved": max_diff(p1, params)}

    # DQN: one gradient step
    cfg = DQNConfig()
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
    one = jax.jit(partial(update, q_values=agent.q_values, tx=tx, double_dqn=True))
    p1, _, _, m1 = one(params, params, tx.init(params), batch, weights, hp)
    dp = data_parallel(partial(update, q_values=agent.q_values, tx=tx, double_dqn=True,
                               axis_name="data"), mesh, sharded=("batch", "weights"))
    # td_error is per-sample (sharded); only compare the replicated outputs
    p8, _, _, m8 = dp(params=params, target_params=params, opt_state=tx.init(params),
                      batch=batch, weights=weights, hparams=hp)
    report["dqn"] = {"param_diff": max_diff(p1, p8), "moved": max_diff(p1, params),
                     "loss_diff": abs(float(m1["loss"]) - float(m8["loss"]))}
    try:
        data_parallel(partial(update, q_values=agent.q_values, tx=tx, axis_name="data"), mesh,
                      sharded=("batch", "weights"))(params=params, target_params=params,
            opt_state=tx.init(params), batch=jax.tree.map(lambda x: x[:100], batch),
            weights=weights[:100], hparams=hp)
        report["error"] = None
    except ValueError as e:
        report["error"] = str(e)
    print(json.dumps(report))
    """
)


def test_data_parallel_update_equals_the_single_device_update(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DP_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("ppo_CartPole-v1", "ppo_Pendulum-v1", "dqn"):
        assert report[name]["moved"] > 1e-4, report  # the update did something
        assert report[name]["param_diff"] <= 1e-5, report
        assert report[name]["loss_diff"] <= 1e-4, report
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


def test_one_agent_trains_data_parallel_with_identical_replicas(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DP_RUN_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["data_parallel"] and r["num_devices"] == 8 and r["finite"], r
    assert r["replicas_identical"], r  # pmean keeps every device's parameters equal
    assert r["envs_differ"], r  # each device steps its own envs
    assert r["dqn_rc"] == 2 and "ppo only" in r["dqn_err"] and not r["wrote_dqn"], r


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_train_the_seeds_of_one_process_run(tmp_path):
    # jax.distributed with CPU devices (gloo): each process trains one of the two seeds.
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    common = [
        "--num-seeds",
        "2",
        "--total-timesteps",
        "8192",
        "--set",
        "num_chunks=2",
        "--set",
        "eval_episodes=2",
    ]
    train = [sys.executable, "scripts/train.py"]
    port = _free_port()
    dist = ["--distributed", "--coordinator-address", f"localhost:{port}", "--num-processes", "2"]
    out = str(tmp_path / "multi")
    procs = [
        subprocess.Popen(
            train + dist + ["--process-id", str(i), "--out", out] + common,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 0)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    single = subprocess.run(
        train + ["--out", str(tmp_path / "single")] + common,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi = json.load(open(os.path.join(out, "metrics.json")))
    one = json.load(open(tmp_path / "single" / "metrics.json"))
    assert multi["num_processes"] == 2 and one["num_processes"] == 1
    assert multi["final_return_per_seed"] == pytest.approx(one["final_return_per_seed"], rel=1e-5)
    for i in (0, 1):  # each process checkpoints its own seeds
        assert os.listdir(os.path.join(out, "checkpoints", f"process_{i}"))
