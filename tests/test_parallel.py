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
