"""Policy transfer (--init-from) and LoRA adapters: counts, unchanged start, frozen base."""

import dataclasses
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import lora, transfer
from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.dqn import make_learner as dqn_learner
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.algos.ppo import make_learner as ppo_learner
from jaxlearn.runner import RunConfig, run

ROOT = os.path.join(os.path.dirname(__file__), "..")
TRAIN = os.path.join(ROOT, "scripts", "train.py")
TINY = dict(total_timesteps=1024, num_envs=4, num_steps=64, hidden_sizes=(16, 16))
QUIET = dict(log=lambda s: None)


def _leaves(params):
    return {lora.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}


def test_lora_parameter_count_is_rank_times_in_plus_out_per_dense_layer():
    rank = 3
    learner = ppo_learner(PPOConfig(**TINY, lora_rank=rank))
    params = learner.init(jax.random.key(0), learner.hparams).params
    trainable, total = lora.count(params)
    # CartPole: obs 4, actions 2; actor 4-16-16-2, critic 4-16-16-1
    dense = [(4, 16), (16, 16), (16, 2), (4, 16), (16, 16), (16, 1)]
    assert trainable == sum(rank * (i + o) for i, o in dense)
    base = ppo_learner(PPOConfig(**TINY))
    plain = base.init(jax.random.key(0), base.hparams).params
    assert total == trainable + lora.count(plain)[1]
    assert lora.count(plain) == (lora.count(plain)[1],) * 2  # no adapters: all train


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_zero_adapters_leave_the_source_outputs_unchanged_and_only_adapters_train(algo):
    if algo == "ppo":
        make, cfg = ppo_learner, PPOConfig(**TINY)
    else:
        make = dqn_learner
        cfg = DQNConfig(
            total_timesteps=400,
            buffer_size=100,
            batch_size=8,
            learning_starts=20,
            target_update_period=20,
            hidden_sizes=(16,),
        )
    src_l = make(cfg)
    src = src_l.init(jax.random.key(1), src_l.hparams)
    tgt_l = make(dataclasses.replace(cfg, lora_rank=2, lora_alpha=4.0))
    tgt = tgt_l.init(jax.random.key(2), tgt_l.hparams)
    source = transfer.Source(
        "src", algo, cfg.env, 0, "latest", jax.tree.map(lambda x: x[None], src.params), 1
    )
    assert transfer.check_fits(source, tgt.params, algo)  # adapters are the extra leaves
    grafted = transfer.graft(jax.tree.map(lambda x: x[None], tgt.params), source, [0])
    grafted = jax.tree.map(lambda x: x[0], grafted)
    obs = jax.random.normal(jax.random.key(3), (5, 4))
    if algo == "ppo":
        net_s, net_t = ppo_net(src_l, cfg), ppo_net(tgt_l, dataclasses.replace(cfg, lora_rank=2))
    else:
        net_s, net_t = dqn_net(cfg), dqn_net(dataclasses.replace(cfg, lora_rank=2, lora_alpha=4.0))
    out_s = net_s.apply(src.params, obs)
    out_t = net_t.apply(grafted, obs)
    for a, b in zip(jax.tree.leaves(out_s), jax.tree.leaves(out_t), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # train a few updates: the base leaves stay bit-identical, the adapters move
    state = tgt.replace(params=grafted)
    if algo == "dqn":
        state = state.replace(target_params=grafted)
    update = jax.jit(tgt_l.update)
    for _ in range(8):
        state, _ = update(state, tgt_l.hparams)
    before, after = _leaves(grafted), _leaves(state.params)
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved and all(k.rsplit("/", 1)[-1] in ("lora_b", "lora_a") for k in moved)
    assert any(k.endswith("lora_b") for k in moved)


def ppo_net(learner, cfg):
    from jaxlearn.algos.ppo.train import make_policy
    from jaxlearn.envs.setup import build_env

    env, params, _ = build_env(cfg, cfg.num_envs)
    return make_policy(cfg, env, params).network


def dqn_net(cfg):
    from jaxlearn.algos.dqn.networks import QNetwork

    return QNetwork(2, 1, tuple(cfg.hidden_sizes), cfg.activation, cfg.lora_rank, cfg.lora_alpha)


def test_adapters_save_and_load_on_their_own(tmp_path):
    learner = ppo_learner(PPOConfig(**TINY, lora_rank=2))
    params = learner.init(jax.random.key(0), learner.hparams).params
    bumped = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 1.0 if lora.path_str(p).endswith("lora_b") else x, params
    )
    folder = str(tmp_path / "ad")
    lora.save_adapters(folder, bumped, {"note": "x"})
    spec = json.load(open(os.path.join(folder, "adapters.json")))
    assert spec["parameters"] == lora.count(params)[0] and spec["note"] == "x"
    loaded = lora.load_adapters(folder, params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(bumped), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError):
        lora.save_adapters(folder, params)
    other = ppo_learner(PPOConfig(**TINY, lora_rank=3))
    wrong = other.init(jax.random.key(0), other.hparams).params
    with pytest.raises(ValueError, match=r"lora_a has shape \(4, 2\) in .* but \(4, 3\) here"):
        lora.load_adapters(folder, wrong)
    with open(os.path.join(folder, "adapters.msgpack"), "r+b") as f:
        f.seek(40)
        f.write(b"\x00\x01")
    with pytest.raises(ValueError, match="SHA-256"):
        lora.load_adapters(folder, params)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("src") / "run")
    run(RunConfig(num_seeds=2, num_chunks=2, eval_episodes=2), PPOConfig(**TINY), out, **QUIET)
    return out


@pytest.mark.slow
def test_init_from_starts_every_seed_from_the_source_network(source_run, tmp_path):
    src = transfer.load_source(source_run, "latest")
    out = str(tmp_path / "ft")
    cfg = PPOConfig(**TINY, learning_rate=1e-12, anneal_lr=False)  # almost no movement
    summary = run(
        RunConfig(
            num_seeds=3,
            num_chunks=1,
            eval_episodes=0,
            init_from=source_run,
            init_checkpoint="latest",
        ),
        cfg,
        out,
        **QUIET,
    )
    assert summary["init_from"]["run_dir"] == source_run
    got = transfer.load_source(out, "latest").params
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(src.params), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b[[0, 1, 0]], atol=1e-6)  # seed i <- source i % 2


def test_init_from_rejects_a_network_that_does_not_fit(source_run, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(
        ValueError,
        match=r"Dense_0/kernel has shape \(4, 16\) in the source "
        r"but \(4, 32\) here",
    ):
        run(
            RunConfig(init_from=source_run),
            PPOConfig(**{**TINY, "hidden_sizes": (32, 16)}),
            str(out),
            **QUIET,
        )
    assert not out.exists()  # nothing written
    with pytest.raises(ValueError, match="is a ppo run; this run is dqn"):
        run(RunConfig(algo="dqn", init_from=source_run), DQNConfig(), str(out), **QUIET)
    with pytest.raises(ValueError, match="no such run folder"):
        run(RunConfig(init_from=str(tmp_path / "nope")), PPOConfig(**TINY), str(out), **QUIET)
    with pytest.raises(ValueError, match=r"RunConfig.init_checkpoint='first' is invalid"):
        RunConfig(init_from=source_run, init_checkpoint="first")
    with pytest.raises(ValueError, match=r"init_checkpoint='latest' needs init_from"):
        RunConfig(init_checkpoint="latest")  # never ignored


@pytest.mark.slow
def test_lora_fine_tune_from_the_cli_saves_adapters_and_compares_with_scratch(source_run, tmp_path):
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "lora"
    rc = mod.main(
        [
            "--init-from",
            source_run,
            "--out",
            str(out),
            "--compare-scratch",
            "--total-timesteps",
            "1024",
            "--set",
            "num_envs=4",
            "--set",
            "num_steps=64",
            "--set",
            "hidden_sizes=16,16",
            "--set",
            "lora_rank=2",
            "--set",
            "num_chunks=2",
            "--set",
            "eval_episodes=0",
        ]
    )
    assert rc == 0
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]
    assert (out / "adapters" / "seed_0" / "adapters.msgpack").exists()
    result = json.load(open(out / "transfer.json"))
    assert set(result) == {"transfer", "scratch"}
    assert (out / "transfer.png").stat().st_size > 0
    scratch = json.load(open(out / "scratch" / "metrics.json"))
    assert scratch["parameters"]["trainable"] == scratch["parameters"]["total"]
    assert scratch["init_from"] is None
    assert mod.main(["--compare-scratch", "--out", str(tmp_path / "x")]) == 2


def test_lora_rank_is_validated():
    with pytest.raises(ValueError, match=r"PPOConfig.lora_rank=-1 is invalid"):
        PPOConfig(lora_rank=-1)
    with pytest.raises(ValueError, match=r"DQNConfig.lora_alpha=0.0 is invalid"):
        DQNConfig(lora_alpha=0.0)


def test_lora_dense_matches_dense_when_b_is_zero():
    from jaxlearn.networks import LoRADense

    layer = LoRADense(5, rank=2, alpha=8.0)
    x = jax.random.normal(jax.random.key(0), (3, 4))
    p = layer.init(jax.random.key(1), x)
    expected = x @ p["params"]["kernel"] + p["params"]["bias"]
    np.testing.assert_array_equal(np.asarray(layer.apply(p, x)), np.asarray(expected))
    p2 = jax.tree_util.tree_map_with_path(
        lambda q, v: jnp.ones_like(v) if lora.path_str(q).endswith("lora_b") else v, p
    )
    delta = layer.apply(p2, x) - expected
    a = p["params"]["lora_a"]
    np.testing.assert_allclose(delta, 4.0 * (x @ a) @ jnp.ones((2, 5)), rtol=1e-5, atol=1e-5)
