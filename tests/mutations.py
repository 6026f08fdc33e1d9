"""Mutation check: does the quick test subset catch small, realistic wiring bugs?

Each mutation replaces one line of the library in a temporary copy of the repository; the
quick subset (`pytest -m "not slow"`) then runs in that copy and must fail. The files most
likely to catch a mutation run first; when they pass, the rest of the quick subset runs, so
"missed" always means the whole quick subset passed with the bug in place.

    python tests/mutations.py                # every mutation (minutes: one pytest each)
    python tests/mutations.py --list
    python tests/mutations.py --only dqn_double_is_vanilla --only ppo_no_shuffle

Exit status: 0 when every mutation is caught, 1 otherwise, 2 for a stale mutation (its line
is no longer in the source exactly once: update the table).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.pyc", ".pytest_cache")


class Mutation(NamedTuple):
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # test files to run first
    what: str


DQN = ("tests/algos/test_dqn_reference.py", "tests/algos/test_dqn.py")
PPO = ("tests/algos/test_ppo_reference.py", "tests/algos/test_ppo.py")
METRICS = ("tests/test_metrics_reference.py", "tests/test_evaluation.py")

MUTATIONS = [
    Mutation(
        "dqn_double_is_vanilla",
        "jaxlearn/algos/dqn/train.py",
        "double_q_target(q_values(params, batch.next_obs), q_next_target)",
        "double_q_target(q_next_target, q_next_target)",
        DQN,
        "double DQN picks the argmax with the target net (silently vanilla DQN)",
    ),
    Mutation(
        "dqn_per_weights_dropped",
        "jaxlearn/algos/dqn/train.py",
        "weights = weights * sample.weights",
        "weights = weights",
        DQN,
        "prioritized replay's importance weights dropped from the loss",
    ),
    Mutation(
        "dqn_per_priorities_one",
        "jaxlearn/algos/dqn/train.py",
        "jnp.where(batch.valid[:n], jnp.abs(td_error[:n]), 0.0)",
        "jnp.where(batch.valid[:n], 1.0, 0.0)",
        DQN,
        "new priorities 1 instead of |TD error|",
    ),
    Mutation(
        "dqn_target_no_terminal_mask",
        "jaxlearn/algos/dqn/train.py",
        "targets = batch.reward + batch.discount * next_value",
        "targets = batch.reward + hparams.gamma * next_value",
        DQN,
        "Q target bootstraps through terminations (gamma instead of the stored discount)",
    ),
    Mutation(
        "dqn_target_copied_every_update",
        "jaxlearn/algos/common.py",
        "return optax.periodic_update(moved, target, step, period)",
        "return moved",
        DQN,
        "target network copied on every update instead of on its period",
    ),
    Mutation(
        "ppo_advantages_never_normalized",
        "jaxlearn/algos/ppo/learn.py",
        "normalize_advantages=config.normalize_advantages,",
        "normalize_advantages=False,",
        PPO,
        "PPO learner ignores normalize_advantages (hard-wired off)",
    ),
    Mutation(
        "ppo_bootstrap_from_obs",
        "jaxlearn/algos/ppo/train.py",
        "next_values = policy.value(state.params, traj.final_obs)",
        "next_values = policy.value(state.params, traj.obs)",
        PPO,
        "GAE bootstraps from the step's own observation instead of the one it led to",
    ),
    Mutation(
        "ppo_no_shuffle",
        "jaxlearn/algos/ppo/learn.py",
        "perm = jax.random.permutation(k, n)",
        "perm = jnp.arange(n)",
        PPO,
        "minibatches never shuffled",
    ),
    Mutation(
        "ppo_value_clip_ignored",
        "jaxlearn/algos/ppo/learn.py",
        "clip_value=config.clip_value,",
        "clip_value=False,",
        PPO,
        "PPO learner ignores clip_value",
    ),
    Mutation(
        "scale_reward_noop",
        "jaxlearn/envs/wrappers.py",
        "scaled = reward / jnp.sqrt(stats.var + self.eps)",
        "scaled = reward",
        ("tests/envs/test_wrappers_reference.py", "tests/envs/test_envs.py"),
        "ScaleReward leaves rewards unscaled",
    ),
    Mutation(
        "final_returns_per_update",
        "jaxlearn/sinks.py",
        "per_seed = np.where(latest >= 0, total / n, np.nan)",
        "per_seed = np.where(latest >= 0, total / (idx + 1 - start), np.nan)",
        METRICS,
        "final_returns divides by the number of updates, not of episodes",
    ),
    Mutation(
        "summarize_mean_is_max",
        "jaxlearn/evaluation.py",
        '"return_mean": float(arr["returns"].mean())',
        '"return_mean": float(arr["returns"].max())',
        METRICS,
        "evaluation.summarize's return_mean is the max (it picks the best checkpoint)",
    ),
    Mutation(
        "sweep_ignores_reward_weights",
        "jaxlearn/sweep/trials.py",
        "reward_weights=full.reward_weights,",
        "reward_weights=base.reward_weights,",
        ("tests/test_reward_weights_wiring.py", "tests/test_sweep.py"),
        "a sweep trial's reward-weight hparams never reach the env",
    ),
]


def _pytest(copy: str, args: list[str], timeout: float) -> tuple[bool, str, str]:
    """Run the quick subset on `args` in `copy`: (passed, first failing test, output tail)."""
    env = {**os.environ, "PYTHONPATH": copy, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "--tb=no", "-rf"]
    cmd += ["-p", "no:cacheprovider", *args]
    try:
        proc = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return False, "(timed out)", ""
    out = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    if proc.returncode == 5:  # nothing collected: the hint files are gone
        return True, "", out[-2000:]
    return proc.returncode == 0, (failed[0] if failed else ""), out[-2000:]


def _apply(copy: str, m: Mutation) -> str:
    """Apply `m` in `copy`; return the original text (raises SystemExit if stale)."""
    path = os.path.join(copy, m.path)
    with open(path) as f:
        text = f.read()
    if text.count(m.old) != 1:
        print(f"stale mutation {m.name}: {m.old!r} occurs {text.count(m.old)}x in {m.path}")
        raise SystemExit(2)
    with open(path, "w") as f:
        f.write(text.replace(m.old, m.new))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run this mutation (repeat)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:34s} {m.path}: {m.what}")
        return 0
    names = {m.name for m in MUTATIONS}
    unknown = sorted(set(args.only) - names)
    if unknown:
        print(f"error: --only: unknown mutation(s) {unknown}; allowed: {sorted(names)}")
        return 2
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]

    with tempfile.TemporaryDirectory(prefix="jaxlearn-mutants-") as tmp:
        copy = os.path.join(tmp, "repo")
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        probe = subprocess.run(
            [sys.executable, "-c", "import jaxlearn; print(jaxlearn.__file__)"],
            cwd=copy,
            env={**os.environ, "PYTHONPATH": copy},
            capture_output=True,
            text=True,
        )
        if not probe.stdout.startswith(copy):
            print(f"error: the copy's jaxlearn is not the one imported: {probe.stdout.strip()}")
            return 1
        for m in chosen:  # every mutation must still apply (fail fast on a stale table)
            original = _apply(copy, m)
            with open(os.path.join(copy, m.path), "w") as f:
                f.write(original)
        hints = sorted(
            {t for m in chosen for t in m.tests if os.path.exists(os.path.join(ROOT, t))}
        )
        ok, failed, tail = _pytest(copy, hints, args.timeout)
        if not ok:
            print(f"error: the unmutated hint files fail ({failed}); fix them first\n{tail}")
            return 1

        rows = []
        for m in chosen:
            original = _apply(copy, m)
            start = time.perf_counter()
            hint = [t for t in m.tests if os.path.exists(os.path.join(copy, t))]
            passed, failed, _ = _pytest(copy, hint, args.timeout) if hint else (True, "", "")
            where = "hint files"
            if passed:  # the rest of the quick subset
                rest = [f"--deselect={t}" for t in hint]
                passed, failed, _ = _pytest(copy, ["tests", *rest], args.timeout)
                where = "rest of quick subset"
            with open(os.path.join(copy, m.path), "w") as f:
                f.write(original)
            seconds = time.perf_counter() - start
            caught = not passed
            rows.append((m, caught, failed, where, seconds))
            status = f"caught by {failed} ({where})" if caught else "MISSED"
            print(f"{m.name:34s} {status}  [{seconds:.0f} s]", flush=True)

    caught = sum(r[1] for r in rows)
    print(f"\n{caught}/{len(rows)} mutations caught by the quick subset")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
