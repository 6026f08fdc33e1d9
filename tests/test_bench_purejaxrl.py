"""`jaxlearn-bench --purejaxrl DIR`: config mapping, round statistics, the peer protocol and
the flag checks. No network, no peer venv, no PureJaxRL: the peer here is a fake script that
speaks the same JSON-lines protocol, run with this interpreter."""

import importlib.util
import math
import os
import statistics
import sys
import textwrap

import pytest

from jaxlearn.algos.dqn import DQNConfig
from jaxlearn.algos.ppo import PPOConfig
from jaxlearn.bench.purejaxrl import dqn_config, ppo_config, summarise
from jaxlearn.bench.side_by_side import PeerError, PeerServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PureJaxRL's published CartPole hyperparameters (its README / ppo.py and dqn.py), typed here.
PPO = {
    "LR": 2.5e-4,
    "NUM_ENVS": 4,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 5e5,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ENV_NAME": "CartPole-v1",
    "ANNEAL_LR": True,
    "DEBUG": True,
}
DQN = {
    "NUM_ENVS": 10,
    "BUFFER_SIZE": 10000,
    "BUFFER_BATCH_SIZE": 128,
    "TOTAL_TIMESTEPS": 5e5,
    "EPSILON_START": 1.0,
    "EPSILON_FINISH": 0.05,
    "EPSILON_ANNEAL_TIME": 25e4,
    "TARGET_UPDATE_INTERVAL": 500,
    "LR": 2.5e-4,
    "LEARNING_STARTS": 10000,
    "TRAINING_INTERVAL": 10,
    "LR_LINEAR_DECAY": False,
    "GAMMA": 0.99,
    "TAU": 1.0,
    "ENV_NAME": "CartPole-v1",
    "SEED": 0,
    "NUM_SEEDS": 1,
    "WANDB_MODE": "disabled",
    "ENTITY": "",
    "PROJECT": "",
}


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_ppo_config_is_purejaxrl_run():
    kwargs, notes = ppo_config(PPO)
    cfg = PPOConfig(**kwargs)
    # PureJaxRL: NUM_UPDATES = TOTAL // NUM_STEPS // NUM_ENVS, minibatch = batch / minibatches
    assert cfg.num_updates == 500_000 // 128 // 4 == 976
    assert cfg.batch_size // cfg.num_minibatches == 128
    assert (cfg.num_epochs, cfg.learning_rate, cfg.anneal_lr) == (4, 2.5e-4, True)
    assert (cfg.clip_eps, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm) == (0.2, 0.01, 0.5, 0.5)
    assert (cfg.gamma, cfg.gae_lambda, cfg.activation) == (0.99, 0.95, "tanh")
    # fixed in ppo.py's code, not its config
    assert cfg.hidden_sizes == (64, 64) and cfg.clip_value and cfg.normalize_advantages
    assert cfg.adam_eps == 1e-5
    assert not any(n.startswith("DEBUG") for n in notes)  # a print switch, not a setting


def test_unknown_purejaxrl_key_is_reported_not_dropped():
    _, notes = ppo_config({**PPO, "NEW_KNOB": 3})
    assert any(n.startswith("NEW_KNOB=3") for n in notes)


def _purejaxrl_grad_steps(num_envs, interval, vector_steps):
    """Vector steps on which PureJaxRL's dqn.py trains (ignoring learning_starts)."""
    t, out = 0, []
    for i in range(vector_steps):
        t += num_envs
        if t % interval == 0:
            out.append(i)
    return out


@pytest.mark.parametrize("num_envs,interval", [(10, 10), (4, 10), (1, 10), (20, 10)])
def test_dqn_train_frequency_matches_purejaxrl_counter(num_envs, interval):
    kwargs, _ = dqn_config({**DQN, "NUM_ENVS": num_envs, "TRAINING_INTERVAL": interval})
    steps = _purejaxrl_grad_steps(num_envs, interval, 200)
    gap = steps[1] - steps[0]
    assert all(b - a == gap for a, b in zip(steps, steps[1:], strict=False))
    assert kwargs["train_frequency"] == gap * num_envs
    assert kwargs["gradient_steps"] == 1


def test_dqn_config_is_purejaxrl_run():
    kwargs, notes = dqn_config(DQN)
    cfg = DQNConfig(**kwargs)
    assert cfg.num_updates == 500_000 // 10  # one update per vector step of 10 envs
    assert (cfg.buffer_size, cfg.batch_size, cfg.target_update_period) == (10_000, 128, 500)
    assert cfg.exploration_fraction == pytest.approx(25e4 / 5e5)
    assert (cfg.epsilon_start, cfg.epsilon_end, cfg.learning_starts) == (1.0, 0.05, 10_000)
    # dqn.py: plain target, no gradient clipping, optax.adam's default eps
    assert not cfg.double_dqn and math.isinf(cfg.max_grad_norm) and cfg.adam_eps == 1e-8
    assert cfg.hidden_sizes == (120, 84) and cfg.activation == "relu" and cfg.n_step == 1
    assert not any(n.split("=")[0] in ("SEED", "WANDB_MODE", "ENTITY") for n in notes)
    _, decay_notes = dqn_config({**DQN, "LR_LINEAR_DECAY": True})
    assert any(n.startswith("LR_LINEAR_DECAY=True") for n in decay_notes)


def test_summarise_median_and_spread():
    ratios = [1.2, 0.9, 1.05, 1.5]
    s = summarise(ratios)
    assert s["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert (s["ratio_min"], s["ratio_max"]) == (0.9, 1.5)
    assert s["ratio_spread"] == pytest.approx((1.5 - 0.9) / ((1.05 + 1.2) / 2))
    assert summarise([])["ratio_median"] is None


def test_driver_reads_the_one_config_literal(tmp_path):
    driver = _load("purejaxrl_driver", os.path.join(ROOT, "scripts", "peers", "purejaxrl_bench.py"))
    main_block = tmp_path / "a.py"
    main_block.write_text(
        "def make_train(config):\n    config['X'] = 1\n\n"
        "if __name__ == '__main__':\n    config = {'LR': 2.5e-4, 'TOTAL_TIMESTEPS': 5e5}\n"
    )
    assert driver.read_config(str(main_block)) == {"LR": 2.5e-4, "TOTAL_TIMESTEPS": 5e5}
    in_main = tmp_path / "b.py"
    in_main.write_text("def main():\n    config = {'NUM_ENVS': 10}\n    run(config)\n")
    assert driver.read_config(str(in_main)) == {"NUM_ENVS": 10}
    two = tmp_path / "c.py"
    two.write_text("config = {'A': 1}\nconfig = {'A': 2}\n")
    with pytest.raises(ValueError, match="found 2"):
        driver.read_config(str(two))


FAKE_PEER = """
import json, sys
print(json.dumps({"event": "config", "algo": "ppo", "config": {"LR": 1.0}}), flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "quit":
        break
    if words[0] == "crash":
        print("boom: the peer failed", file=sys.stderr, flush=True)
        sys.exit(3)
    if words[0] == "bad":
        print(json.dumps({"event": "error", "error": "no such algo"}), flush=True)
        continue
    print("not json, ignored", flush=True)
    print(json.dumps({"event": "result", "algo": words[1], "run_seconds": 0.5}), flush=True)
"""


def _fake_peer(tmp_path, timeout=30.0):
    script = tmp_path / "peer.py"
    script.write_text(textwrap.dedent(FAKE_PEER))
    return PeerServer([sys.executable, str(script)], timeout, 0.0, str(tmp_path))


def test_peer_server_protocol_and_errors(tmp_path):
    peer = _fake_peer(tmp_path)
    try:
        assert peer.receive("config")["config"] == {"LR": 1.0}
        assert peer.request("run ppo", "result") == {
            "event": "result",
            "algo": "ppo",
            "run_seconds": 0.5,
        }
        with pytest.raises(PeerError, match="no such algo"):
            peer.request("bad x", "result")
        with pytest.raises(PeerError, match="status 3: boom: the peer failed"):
            peer.request("crash", "result")
    finally:
        peer.close()


def test_peer_server_times_out(tmp_path):
    peer = _fake_peer(tmp_path)
    try:
        peer.receive("config")  # the interpreter may take seconds to start on a loaded CI
        peer.timeout = 1.0
        with pytest.raises(PeerError, match="no 'ready' within 1s"):
            peer.receive("ready")  # the fake never sends one
    finally:
        peer.close()
    assert peer.proc.returncode == 0  # `quit` ended it


@pytest.fixture(scope="module")
def bench():
    from jaxlearn.cli import bench as cli_bench

    return cli_bench


def _clone(tmp_path):
    src = tmp_path / "clone" / "purejaxrl"
    src.mkdir(parents=True)
    for name in ("ppo.py", "dqn.py"):
        (src / name).write_text("config = {}\n")
    return str(tmp_path / "clone")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--purejaxrl", "/no/such/dir"], "--purejaxrl '/no/such/dir': no ppo.py or dqn.py"),
        (["--only", "purejaxrl"], "--only purejaxrl needs --purejaxrl DIR"),
        (["--purejaxrl", "CLONE", "--rounds", "0"], "--rounds must be a positive integer"),
        (["--purejaxrl", "CLONE", "--peer-python", "/no/python"], "--peer-python '/no/python'"),
        (["--sweep-trials", "0"], "--sweep-trials must be a positive integer, got 0"),
        (["--devices-timesteps", "0"], "--devices-timesteps must be a positive integer"),
        (["--devices-seeds", "-4"], "--devices-seeds must be a positive integer, got -4"),
        (["--devices-seeds", "3", "--device-counts", "2"], "it is not of [2]"),
        (["--peer-timeout", "-1"], "--peer-timeout must be a number of seconds > 0"),
        (["--stall-seconds", "nan"], "--stall-seconds must be a number of seconds >= 0"),
    ],
)
def test_bad_purejaxrl_flags_exit_2(bench, tmp_path, capsys, argv, message):
    argv = [_clone(tmp_path) if a == "CLONE" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err, err


def test_an_out_file_that_cannot_be_appended_to_exits_2(bench, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--out", str(blocker / "rows.jsonl")])
    assert e.value.code == 2
    assert "--out " in capsys.readouterr().err and blocker.read_text() == "x"


def test_purejaxrl_flag_alone_runs_only_that_bench(bench, tmp_path):
    python = tmp_path / "python"
    python.write_text("")
    args = bench.parse_args(["--purejaxrl", _clone(tmp_path), "--peer-python", str(python)])
    assert args.only == ["purejaxrl"] and args.rounds == 3
    assert "purejaxrl" not in bench.parse_args([]).only  # the default set needs no clone


ROUNDS_PEER = """
import json, sys
config = {"ENV_NAME": "CartPole-v1", "TOTAL_TIMESTEPS": 256, "NUM_ENVS": 2, "NUM_STEPS": 16,
          "UPDATE_EPOCHS": 1, "NUM_MINIBATCHES": 2, "LR": 2.5e-4, "ANNEAL_LR": True}
print(json.dumps({"event": "config", "algo": "ppo", "config": config, "script": "ppo.py",
                  "quiet_overrides": {}, "compat_shims": []}), flush=True)
runs = 0
for line in sys.stdin:
    words = line.split()
    if words[0] == "quit":
        break
    if words[0] == "prepare":
        print(json.dumps({"event": "ready", "algo": "ppo", "compile_seconds": 1.0,
                          "warm_run_seconds": 2.0}), flush=True)
        continue
    runs += 1
    print(json.dumps({"event": "result", "algo": "ppo", "run_seconds": 1.0, "cpu_seconds": 2.0,
                      "total_env_steps": 256, "env_steps_per_second": 100.0 * runs,
                      "final_return_mean": 9.0, "final_return_kind": "fake",
                      "grad_updates": 16}), flush=True)
"""


@pytest.mark.slow
def test_rounds_interleave_and_ratios_use_each_rounds_pair(tmp_path):
    # A fake peer whose speed is 100, 200, 300 env steps/s in rounds 1-3, against a tiny
    # jaxlearn PPO (one compilation): each ratio is that round's jaxlearn speed / the peer's.
    from jaxlearn.bench.side_by_side import run_side_by_side, table

    script = tmp_path / "peer.py"
    script.write_text(textwrap.dedent(ROUNDS_PEER))
    rows = []
    summaries = run_side_by_side(
        clone=str(tmp_path),
        peer_python=sys.executable,
        driver=str(script),
        algos=["ppo"],
        rounds=3,
        seed=0,
        emit=lambda r: rows.append(r) or r,
        log=lambda s: None,
        timeout=600.0,
        stall_seconds=0.0,
        cwd=str(tmp_path),
    )
    timed = [r for r in rows if "round" in r]
    order = [(r["round"], r["impl"]) for r in timed]
    assert order == [
        (0, "jaxlearn"), (0, "purejaxrl"),
        (1, "purejaxrl"), (1, "jaxlearn"),
        (2, "jaxlearn"), (2, "purejaxrl"),
    ]  # fmt: skip
    ours = {r["round"]: r for r in timed if r["impl"] == "jaxlearn"}
    (summary,) = summaries
    expected = [ours[i]["env_steps_per_second"] / (100.0 * (i + 1)) for i in range(3)]
    assert summary["ratios"] == pytest.approx(expected)
    assert summary["ratio_median"] == pytest.approx(statistics.median(expected))
    assert all(ours[i]["total_env_steps"] == 256 for i in range(3))  # 8 updates x 2 x 16
    cpu = [2.0 / ours[i]["cpu_seconds"] for i in range(3)]  # theirs / ours, per round
    assert summary["cpu_ratios"] == pytest.approx(cpu)
    assert summary["purejaxrl_final_return_mean"] == 9.0
    assert "over 3 rounds" in table(summaries)
    config_row = next(r for r in rows if r["impl"] == "config")
    assert config_row["jaxlearn_config"]["num_envs"] == 2
