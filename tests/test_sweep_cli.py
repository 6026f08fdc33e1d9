"""`sweep.py --set field=value`: overrides of the base train config, checked like train.py's
`--set`, applied after the spec's `base` and `config`; bad ones exit 2 and write nothing."""

import os

import pytest

from jaxlearn import sweep
from jaxlearn.cli.sweep import main

ROOT = os.path.join(os.path.dirname(__file__), "..")
SPEC = os.path.abspath(os.path.join(ROOT, "experiments", "sweeps", "ppo_cartpole.yaml"))


def test_set_wins_over_the_spec_config_and_leaves_the_rest():
    plain = sweep.load_spec(SPEC)
    assert plain.algo_cfg.total_timesteps == 100000  # the spec's config says so
    spec = sweep.load_spec(SPEC, config_overrides={"total_timesteps": "50000", "gamma": "0.9"})
    assert spec.algo_cfg.total_timesteps == 50000
    assert spec.algo_cfg.gamma == pytest.approx(0.9)
    assert spec.space == plain.space and spec.num_trials == plain.num_trials
    assert spec.algo_cfg.num_envs == plain.algo_cfg.num_envs  # from the base, untouched
    # what sweep.yaml records, so --resume trains the shortened sweep too
    assert sweep.spec_record(spec)["config"]["total_timesteps"] == 50000


def test_the_script_passes_set_to_the_sweep_it_runs(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(sweep, "run", lambda spec, out: ran.append(spec) or {"folder": out})
    out = str(tmp_path / "s")
    argv = [SPEC, "--out", out, "--set", "total_timesteps=50000", "--set", "ent_coef=0.02"]
    assert main(argv) == 0
    (spec,) = ran
    assert spec.algo_cfg.total_timesteps == 50000
    assert spec.algo_cfg.ent_coef == pytest.approx(0.02)


@pytest.mark.parametrize(
    "item, names",
    [
        ("bogus=1", ["bogus"]),
        ("total_timesteps=abc", ["total_timesteps", "'abc'"]),
        ("gamma=2", ["gamma", "[0.0, 1.0]"]),
        ("num_seeds=4", ["num_seeds", "seeds-per-trial"]),
        ("devices=2", ["devices"]),
        ("total_timesteps", ["total_timesteps", "field=value"]),
    ],
)
def test_a_bad_set_exits_2_naming_the_field_and_writes_nothing(
    item, names, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a sweep without --out would create ./sweeps/
    out = tmp_path / "never"
    assert main([SPEC, "--out", str(out), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for name in names:
        assert name in err
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_resume_refuses_set(tmp_path, capsys):
    assert main(["--resume", str(tmp_path), "--set", "total_timesteps=50000"]) == 2
    assert "--resume takes no --set" in capsys.readouterr().err


def test_an_out_that_cannot_be_created_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([SPEC, "--out", str(blocker / "sweep"), "--set", "total_timesteps=2048"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "cannot create a folder there" in err
    assert blocker.read_text() == "x"


def test_export_best_into_a_missing_folder_exits_2_before_the_sweep(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(sweep, "run", lambda spec, out: ran.append(spec) or {"folder": out})
    target = tmp_path / "missing" / "best.yaml"
    argv = [SPEC, "--out", str(tmp_path / "s"), "--export-best", str(target)]
    assert main(argv) == 2
    assert "--export-best" in capsys.readouterr().err
    assert ran == [] and not (tmp_path / "s").exists()


def test_a_folder_as_the_spec_points_to_resume(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep spec ") and "--resume DIR" in err
