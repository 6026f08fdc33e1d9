"""A user's own env by import path (`package.module:factory`) and by the `jaxlearn.envs`
entry-point group: resolution, every error case (a `ConfigError` naming `env`), and the
example env examples/reach_env.py (against a NumPy re-implementation), trained, resumed
and evaluated through the scripts."""

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxlearn.config import ConfigError
from jaxlearn.envs import registry
from jaxlearn.envs.setup import base_env
from jaxlearn.runner import resolve_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")
REACH = "examples.reach_env:make"


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root, as a user runs the scripts (examples/ importable)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", [ROOT, *sys.path])  # restored after the test


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A fresh working directory holding the user's modules, not on `sys.path` yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("userenv_"):
            del sys.modules[name]


def _write(folder, name, source):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return path


# ---- the example env against NumPy --------------------------------------------------------


def np_reach_step(x, goal, t, action, step_size=0.1, tolerance=0.05, max_steps=50):
    """One step of the 1-D reach task as documented in examples/reach_env.py."""
    x = min(max(x + (action - 1) * step_size, -1.0), 1.0)
    d = abs(x - goal)
    t += 1
    return x, t, -d, d < tolerance, t >= max_steps


def test_reach_env_steps_match_numpy_and_truncate_at_max_steps(in_root):
    from examples.reach_env import EnvParams, Reach1D

    env = Reach1D()
    params = EnvParams(max_steps_in_episode=6)
    obs, state = env.reset(jax.random.key(3), params)
    x, goal, t = float(state.x), float(state.goal), 0
    np.testing.assert_allclose(np.asarray(obs), [x, goal - x], rtol=1e-6)
    # move away from the goal so the episode cannot terminate: it must be truncated at 6
    away = 0 if goal > x else 2
    step = jax.jit(env.step)
    for i in range(6):
        obs, state, r, term, trunc, info = step(jax.random.key(i), state, away, params)
        x, t, r_np, term_np, trunc_np = np_reach_step(x, goal, t, away, max_steps=6)
        np.testing.assert_allclose(float(r), r_np, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(info["final_observation"]), [x, goal - x], 1e-5)
        assert not bool(term) and not term_np
        assert bool(trunc) == trunc_np == (i == 5)
    assert int(state.time) == 0  # reset by gymnax's step after the truncated step
    # walking towards the goal terminates within tolerance, before any truncation
    obs, state = env.reset(jax.random.key(5), env.default_params)
    x, goal, t = float(state.x), float(state.goal), 0
    for i in range(60):
        a = 2 if goal > x else 0
        obs, state, r, term, trunc, _ = step(jax.random.key(i), state, a, env.default_params)
        x, t, r_np, term_np, trunc_np = np_reach_step(x, goal, t, a)
        assert bool(term) == term_np and bool(trunc) == trunc_np
        np.testing.assert_allclose(float(r), r_np, rtol=1e-5, atol=1e-6)
        if term_np:
            break
    assert term_np and t <= 20  # reached: at most 2 / step_size moves apart


def np_random_policy_return(episodes=2000, seed=0):
    """Mean undiscounted return of uniformly random actions on the reach task (NumPy)."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(episodes):
        x, goal, t = rng.uniform(-1, 1), rng.uniform(-1, 1), 0
        while True:
            x, t, r, term, trunc = np_reach_step(x, goal, t, int(rng.integers(3)))
            total += r
            if term or trunc:
                break
    return total / episodes


# ---- resolution -----------------------------------------------------------------------------


def test_import_path_resolves_through_config_and_records_the_string(in_root):
    from examples.reach_env import Reach1D

    run_cfg, cfg = resolve_config(overrides={"env": REACH, "env_kwargs": {"tolerance": 0.2}})
    assert cfg.env == REACH  # the string is what config.yaml records
    env, params = base_env(cfg)
    assert isinstance(env, Reach1D) and params.tolerance == 0.2  # env_kwargs reach make()
    assert params.max_steps_in_episode == 50
    # an env class is accepted too (its default_params are used)
    env, params = registry.make("examples.reach_env:Reach1D")
    assert isinstance(env, Reach1D) and params == env.default_params
    assert registry.is_registered(REACH) and not registry.is_registered("examples.reach_env:x")


def test_env_in_a_yaml_config_and_a_sweep_spec(in_root, tmp_path):
    from jaxlearn import sweep

    base = tmp_path / "reach.yaml"
    base.write_text(f"env: {REACH}\ntotal_timesteps: 4096\nnum_envs: 4\n")
    _, cfg = resolve_config(config_file=str(base))
    assert cfg.env == REACH
    spec = sweep.spec_from_dict(
        {
            "name": "reach",
            "base": str(base),
            "space": {"learning_rate": {"low": 1e-4, "high": 1e-3}},
        }
    )
    assert spec.algo_cfg.env == REACH


def test_working_directory_is_importable(user_dir):
    src = open(os.path.join(ROOT, "examples", "reach_env.py")).read()
    _write(user_dir, "userenv_pkg/__init__.py", "")
    _write(user_dir, "userenv_pkg/reach.py", src)
    assert str(user_dir) not in sys.path
    env, params = registry.make("userenv_pkg.reach:make")
    assert type(env).__name__ == "Reach1D" and params.max_steps_in_episode == 50
    assert sys.path[0] == str(user_dir)  # as `python -m` has it


ERROR_MODULE = """
from examples.reach_env import EnvParams, Reach1D

def raises():
    raise RuntimeError("no GPU here")

def returns_params():
    return EnvParams()

def returns_triple():
    return Reach1D(), EnvParams(), 3

def returns_number():
    return 3

def tuple_without_params_check():
    return (Reach1D(), EnvParams())

class NoDefaults(Reach1D):
    @property
    def default_params(self):
        raise NotImplementedError("define me")

not_callable = 42
"""


@pytest.mark.parametrize(
    "env, reason",
    [
        ("userenv_nope.envs:make", r"module 'userenv_nope.envs' not found"),
        ("userenv_err:missing", r"'userenv_err' has no attribute 'missing'"),
        ("userenv_err:raises.deeper", r"'userenv_err.raises' has no attribute 'deeper'"),
        ("userenv_err:not_callable", r"is a int, not a factory function or env class"),
        ("userenv_err:raises", r"factory userenv_err:raises raised RuntimeError: no GPU here"),
        ("userenv_err:returns_params", r"returned a EnvParams object, not a gymnax-style env"),
        ("userenv_err:returns_number", r"returned a int object.*no reset, step, observation_sp"),
        ("userenv_err:returns_triple", r"returned a tuple of 3 items, not \(env, params\)"),
        ("userenv_err:NoDefaults", r"NoDefaults.default_params failed \(NotImplementedError"),
        ("userenv_broken:make", r"importing module 'userenv_broken' failed: ZeroDivisionError"),
        ("userenv_dep:make", r"importing module 'userenv_dep' failed: .*no_such_dependency_x"),
        ("userenv_err:", r"import path 'userenv_err:' is malformed"),
        ("a-b:make", r"import path 'a-b:make' is malformed"),
        ("Reach1D-nowhere-v0", r"must be a registered env: .*'package.module:factory'"),
        ("CartPol-v1", r"did you mean CartPole-v1\?"),
    ],
)
def test_errors_name_the_env_field_and_what_failed(user_dir, env, reason):
    sys.path.insert(0, ROOT)  # the error module imports the example env
    _write(user_dir, "userenv_err.py", ERROR_MODULE)
    _write(user_dir, "userenv_broken.py", "x = 1 / 0\n")
    _write(user_dir, "userenv_dep.py", "import no_such_dependency_x\n")
    with pytest.raises(ConfigError, match=r"PPOConfig\.env='[^']*' is invalid: .*" + reason):
        resolve_config(overrides={"env": env})
    with pytest.raises(ConfigError, match=r"^env='[^']*' is invalid: .*" + reason):
        registry.make(env)


def test_factory_that_rejects_env_kwargs_names_env_kwargs(in_root):
    with pytest.raises(ConfigError, match=r"env_kwargs=\{'speed': 2\} is invalid: not accepted"):
        resolve_config(overrides={"env": REACH, "env_kwargs": {"speed": 2}})


def test_train_script_refuses_a_bad_import_path_before_writing(in_root, tmp_path, capsys):
    from jaxlearn.cli.train import main

    out = tmp_path / "never"
    assert main(["--env", "examples.reach_env:nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "env='examples.reach_env:nope' is invalid" in err and "no attribute 'nope'" in err
    assert not out.exists()


# ---- entry points -----------------------------------------------------------------------------


@pytest.fixture
def installed(user_dir, monkeypatch):
    """A package 'installed' in the user's folder: a module and its dist-info declaring
    `jaxlearn.envs` entry points (importlib.metadata finds it on sys.path)."""
    src = open(os.path.join(ROOT, "examples", "reach_env.py")).read()
    _write(user_dir, "userenv_ep/__init__.py", src)
    info = user_dir / "userenv_ep-0.1.dist-info"
    _write(info, "METADATA", "Metadata-Version: 2.1\nName: userenv-ep\nVersion: 0.1\n")
    _write(
        info,
        "entry_points.txt",
        "[jaxlearn.envs]\nReachEP-test-v0 = userenv_ep:make\nBrokenEP-test-v0 = userenv_ep:gone\n",
    )
    monkeypatch.syspath_prepend(str(user_dir))
    return user_dir


def test_entry_point_names_are_registered_and_built(installed):
    names = registry.registered_envs()
    assert "ReachEP-test-v0" in names and "BrokenEP-test-v0" in names
    assert registry.is_registered("ReachEP-test-v0")
    _, cfg = resolve_config(overrides={"env": "ReachEP-test-v0", "algo": "dqn"})
    env, params = base_env(cfg)
    assert type(env).__module__ == "userenv_ep" and params.step_size == 0.1
    with pytest.raises(
        ConfigError,
        match=r"env='BrokenEP-test-v0' is invalid: jaxlearn.envs entry point BrokenEP-test-v0 "
        r"= userenv_ep:gone: 'userenv_ep' has no attribute 'gone'",
    ):
        resolve_config(overrides={"env": "BrokenEP-test-v0"})


def test_entry_points_are_read_only_for_unknown_names(monkeypatch):
    calls = []
    real = importlib.metadata.entry_points

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    registry.make("CartPole-v1")
    registry.make("Navigation2D-v0")
    assert calls == []
    assert not registry.is_registered("NoSuchEnv-ep-v0")
    assert calls and all(c == {"group": "jaxlearn.envs"} for c in calls)


# ---- end to end ------------------------------------------------------------------------------


def _script(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_resume_evaluate_the_example_env_from_the_scripts(in_root, tmp_path):
    from jaxlearn.runner import run

    # train from the CLI, from the repository root (examples/ importable only as cwd)
    out = tmp_path / "reach"
    flags = ["--total-timesteps", "16384", "--seed", "1", "--set", "num_chunks=2"]
    _script(TRAIN, "--env", REACH, *flags, "--out", str(out))
    assert "env: examples.reach_env:make" in (out / "config.yaml").read_text()
    evaluated = json.loads(_script(EVALUATE, str(out), "--episodes", "64").stdout)
    assert evaluated["env"] == REACH
    random_return = np_random_policy_return()  # about -25: random walks rarely arrive
    assert random_return < -15
    # the trained agent walks to the target: well under half the random policy's cost
    assert evaluated["return_mean"] > 0.5 * random_return, (evaluated, random_return)

    # resume an interrupted run in a fresh process: the env is found again from config.yaml
    run_cfg, cfg = resolve_config(
        overrides={"env": REACH, "total_timesteps": 1024, "num_steps": 32, "num_chunks": 2}
    )
    partial = tmp_path / "partial"
    run(run_cfg, cfg, out=str(partial), log=lambda s: None, stop_after_chunks=1)
    assert not (partial / "metrics.json").exists()
    resumed = _script(TRAIN, "--resume", str(partial))
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["run_dir"] == str(partial)
    assert json.loads((partial / "metrics.json").read_text())["env"] == REACH


@pytest.mark.slow
@pytest.mark.optimized
def test_the_python_example_in_the_docs_trains(in_root):
    """docs/custom-env.md's "From Python" block, run as written, learns the task."""
    doc = open(os.path.join(ROOT, "docs", "custom-env.md")).read()
    section = doc[doc.index("## From Python") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    assert 'jaxlearn.register("Reach1D-v0", make)' in code and "make_train" in code
    out = _script("-c", code).stdout
    first, last = (float(v) for v in re.findall(r"update (-?[\d.]+)", out))
    random_return = np_random_policy_return()
    assert first < 0.5 * random_return < last, (out, random_return)
