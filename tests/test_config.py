"""Config validation at the edge: finite float32 values, strict YAML, lists stay lists."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from jaxlearn.config import FLOAT32_MAX, ConfigError, check_float32, load_yaml, parse_set
from jaxlearn.runner import resolve_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAV = {"algo": "ppo", "env": "Navigation2D-v0"}


def resolve(**overrides):
    return resolve_config(overrides=overrides)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e39"])
def test_learning_rate_must_be_finite_float32(algo, value):
    with pytest.raises(
        ConfigError, match=r"learning_rate=.*must be a finite number in \(0\.0, inf\)"
    ):
        resolve(algo=algo, learning_rate=value)


def test_ent_coef_inf_rejected_and_interval_says_open():
    with pytest.raises(ConfigError, match=r"PPOConfig\.ent_coef=inf is invalid"):
        resolve(ent_coef="inf")
    with pytest.raises(ConfigError, match=r"must be a finite number in \[0\.0, inf\)"):
        resolve(ent_coef="-1")


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_max_grad_norm_documents_inf_as_no_clipping(algo):
    _, cfg = resolve(algo=algo, max_grad_norm="inf")
    assert cfg.max_grad_norm == math.inf
    with pytest.raises(ConfigError, match="max_grad_norm"):
        resolve(algo=algo, max_grad_norm="nan")


@pytest.mark.parametrize(
    "weights, field",
    [
        ({"time_penalty": math.nan}, "time_penalty"),
        ({"collision": -1.0e39}, "collision"),
        ({"completion": math.inf}, "completion"),
        ({"completion": "ten"}, "completion"),
    ],
)
def test_reward_weights_must_be_finite_float32(weights, field):
    with pytest.raises(ConfigError, match=rf"reward_weights.*{field}"):
        resolve(**NAV, reward_weights=weights)


@pytest.mark.parametrize(
    "params, field",
    [({"dt": math.nan}, "dt"), ({"max_velocity": 1e39}, "max_velocity"), ({"dt": "x"}, "dt")],
)
def test_env_params_must_be_finite(params, field):
    with pytest.raises(ConfigError, match=rf"env_params.*{field}"):
        resolve(**NAV, env_params=params)


def test_env_params_flags_and_ints_checked():
    with pytest.raises(ConfigError, match="vision"):
        resolve(**NAV, env_params={"vision": 2})
    with pytest.raises(ConfigError, match="num_obstacles"):
        resolve(**NAV, env_params={"num_obstacles": 1e12})
    _, cfg = resolve(**NAV, env_params={"vision": True, "dt": 0.05})
    assert cfg.env_params == {"vision": True, "dt": 0.05}


def test_curriculum_values_must_be_finite():
    stages = [{"name": "A", "success_rate": 0.5, "average_reward": 1e39}]
    with pytest.raises(ConfigError, match="average_reward"):
        resolve(**NAV, curriculum={"stages": stages})
    stages = [{"name": "A", "success_rate": 0.5, "dt": math.nan}]
    with pytest.raises(ValueError, match="dt"):
        resolve(**NAV, curriculum={"stages": stages})


def test_check_float32_bounds():
    assert check_float32("C", "x", FLOAT32_MAX) == FLOAT32_MAX
    assert check_float32("C", "x", math.inf, allow_inf=True) == math.inf
    for bad in (FLOAT32_MAX * 1.01, math.inf, math.nan, True, "1", None):
        with pytest.raises(ConfigError, match=r"C\.x="):
            check_float32("C", "x", bad)
    with pytest.raises(ConfigError, match="NaN"):
        check_float32("C", "x", math.nan, allow_inf=True)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algo: ppo\nlearning_rate: [0.1\nnum_envs: 4\n")
    with pytest.raises(ConfigError, match=rf"--config {path}:\d+:\d+: invalid YAML"):
        resolve_config(config_file=str(path))


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("algo: ppo\nlearning_rate: 0.1\nnum_envs: 4\nlearning_rate: 0.2\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:1: .*duplicate key 'learning_rate'"):
        resolve_config(config_file=str(path))
    nested = tmp_path / "nested.yaml"
    nested.write_text("env: Navigation2D-v0\nreward_weights:\n  collision: -1\n  collision: -2\n")
    with pytest.raises(ConfigError, match="duplicate key 'collision'"):
        load_yaml(str(nested))


@pytest.mark.parametrize(
    "text,shown",
    [
        ("1: 2\n", "1"),
        ("null: 3\n", "None"),
        ("? [a, b]\n: 3\n", "a collection"),
        ("env: Navigation2D-v0\nreward_weights: {1: 2}\n", "1"),
    ],
    ids=["int", "null", "list", "nested"],
)
def test_a_yaml_key_that_is_not_a_string_is_named(tmp_path, text, shown):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"keys\.yaml:\d+:\d+: .*key {shown} is not a name"):
        resolve_config(config_file=str(path))


def test_integers_are_read_exactly_and_seeds_bounded():
    big = 2**53 + 1  # a float would read it as 2**53
    assert resolve(seed=str(big))[0].seed == big
    assert resolve(total_timesteps="1e5")[1].total_timesteps == 100_000
    assert resolve(seed=str(2**63 - 1))[0].seed == 2**63 - 1
    with pytest.raises(
        ValueError, match=r"RunConfig.seed=9223372036854775808 .*\[0, 2\*\*63 - 1\]"
    ):
        resolve(seed=str(2**63))


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(str(path))
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(str(tmp_path / "empty.yaml")) == {}


def test_a_binary_file_or_a_folder_as_config_names_the_flag(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"algo: ppo\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"--config .*model\.yaml'?: not a UTF-8 text file"):
        resolve_config(config_file=str(path))
    with pytest.raises(ConfigError, match=r"--config .*: a folder; give a YAML file"):
        resolve_config(config_file=str(tmp_path))


def test_scalar_where_a_list_is_expected(tmp_path):
    path = tmp_path / "scalar.yaml"
    path.write_text("hidden_sizes: 64\n")
    with pytest.raises(ConfigError, match=r"hidden_sizes: 64 is not a list \(write \[64\]"):
        resolve_config(config_file=str(path))
    # On the command line a bare comma list is the list syntax.
    _, cfg = resolve(hidden_sizes="64")
    assert cfg.hidden_sizes == (64,)
    _, cfg = resolve(hidden_sizes="32,16")
    assert cfg.hidden_sizes == (32, 16)
    with pytest.raises(ConfigError, match="hidden_sizes: cannot parse"):
        resolve(hidden_sizes="[64")


def test_parse_set_errors_are_config_errors():
    assert parse_set(["learning-rate=0.1"]) == {"learning_rate": "0.1"}
    with pytest.raises(ConfigError, match="expected field=value"):
        parse_set(["learning_rate"])
    with pytest.raises(ConfigError, match=r"--set num_envs is given twice \('0', then '4'\)"):
        parse_set(["num_envs=0", "num-envs=4"])


def test_train_script_rejects_duplicate_key_before_writing(tmp_path):
    """End to end: exit 2, one `error:` line naming file and line, no run folder."""
    path = tmp_path / "dup.yaml"
    path.write_text("learning_rate: 0.1\nlearning_rate: 0.2\n")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", str(path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and f"{path}:2:1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_total_timesteps_bounded_for_int32_counters(algo):
    with pytest.raises(ConfigError, match=r"total_timesteps=1000000000000000 .*2147483647"):
        resolve(algo=algo, total_timesteps="1e15")
    with pytest.raises(ConfigError, match=r"total_timesteps=2000000000 .*2\*\*30.*int32"):
        resolve(algo=algo, total_timesteps=2_000_000_000)
    _, cfg = resolve(algo=algo, total_timesteps=2**30)
    assert cfg.total_timesteps == 2**30


def test_integer_fields_fit_int32():
    with pytest.raises(ConfigError, match=r"num_envs=4294967296 is invalid: .*at most 2147483647"):
        resolve(num_envs=2**32)


def test_a_dotted_name_sets_one_key_of_a_mapping_and_later_sources_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "env: Cooperative-v0\nreward_weights: {collision: -2.0}\nreward_weights.formation: 1.0\n"
        "env_kwargs: {num_agents: 3, comm_dim: 2}\n"
    )
    over = parse_set(["reward_weights.formation=4", "env_kwargs.num_agents=4"])
    _, cfg = resolve_config(config_file=str(path), overrides=over)
    assert cfg.reward_weights == {"collision": -2.0, "formation": 4.0}  # the file's key kept
    assert cfg.env_kwargs == {"num_agents": 4, "comm_dim": 2}
    # a whole mapping on the command line replaces the file's, its keys included
    _, cfg = resolve_config(config_file=str(path), overrides={"reward_weights": "{base: 2.0}"})
    assert cfg.reward_weights == {"base": 2.0}
    with pytest.raises(ConfigError, match=r"foo.bar='1' is invalid: a dotted name sets one key"):
        resolve_config(overrides=parse_set(["foo.bar=1"]))
    with pytest.raises(ConfigError, match=r"reward_weights.formation='x' is invalid"):
        resolve_config(config_file=str(path), overrides=parse_set(["reward_weights.formation=x"]))
