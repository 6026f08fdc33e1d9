"""Curriculum: the default table, validation, stage advancement against a NumPy reference,
jit/vmap, no recompile on a stage change inside PPO, and the runner's curriculum report."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.algos.ppo import PPOConfig, make_learner
from jaxlearn.curriculum import (
    DEFAULT_STAGES,
    OUTCOMES,
    Curriculum,
    CurriculumConfig,
    CurriculumState,
    episode_outcomes,
)
from jaxlearn.envs import make
from jaxlearn.runner import RunConfig, run

NAV = "Navigation2D-v0"
EXPLORE = "Exploration-v0"


def bind(spec, env_name=NAV, **env_kwargs):
    env, params = make(env_name, **env_kwargs)
    return Curriculum(CurriculumConfig.from_dict(spec), env, params)


def batch(n=None, *, done=None, **cols):
    """`(done, outcomes)` of one update: `cols` are per-entry lists keyed by OUTCOMES names."""
    cols = {k: np.asarray(v, np.float32) for k, v in cols.items()}
    size = n if n is not None else len(next(iter(cols.values())))
    done = np.ones(size, bool) if done is None else np.asarray(done, bool)
    return jnp.asarray(done), {k: jnp.asarray(v) for k, v in cols.items()}


def tree_equal(a, b):
    return all(
        bool(np.array_equal(np.asarray(x), np.asarray(y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# ---- the default table ---------------------------------------------------------------------

DOCUMENTED = [
    # name, workspace, obstacles, time limit (s), success rate, vision, tool use
    ("BEGINNER", [5.0, 5.0, 3.0], 3, 300.0, 0.70, False, False),
    ("INTERMEDIATE", [8.0, 8.0, 4.0], 5, 250.0, 0.60, True, False),
    ("ADVANCED", [10.0, 10.0, 5.0], 8, 200.0, 0.50, True, True),
    ("EXPERT", [15.0, 15.0, 6.0], 12, 180.0, 0.40, True, True),
]


def test_default_config_has_the_documented_stages():
    cfg = CurriculumConfig.from_dict("default")
    assert cfg.names == tuple(d[0] for d in DOCUMENTED)
    assert CurriculumConfig.from_dict(True) == cfg
    assert CurriculumConfig.from_dict([dict(s) for s in DEFAULT_STAGES]) == cfg
    for stage, (name, ws, n_obs, t, rate, _, _) in zip(cfg.stages, DOCUMENTED, strict=True):
        assert stage.name == name
        assert stage.success_rate == pytest.approx(rate)
        assert list(stage.env["workspace_size"]) == ws
        assert stage.env["num_obstacles"] == n_obs
        assert stage.env["time_limit"] == t
        assert stage.average_reward is None and stage.coverage is None
        assert stage.max_collision_rate is None
    # to_dict round-trips
    assert CurriculumConfig.from_dict(cfg.to_dict()) == cfg


def test_default_table_bound_to_navigation_inherits_fields():
    env, base = make(NAV)
    cur = Curriculum(CurriculumConfig.from_dict("default"), env, base)
    assert cur.num_stages == len(DOCUMENTED)
    t = cur.table
    np.testing.assert_allclose(np.asarray(t.workspace_size), [d[1] for d in DOCUMENTED])
    np.testing.assert_array_equal(np.asarray(t.num_obstacles), [d[2] for d in DOCUMENTED])
    np.testing.assert_allclose(np.asarray(t.time_limit), [d[3] for d in DOCUMENTED])
    # vision is switched on at INTERMEDIATE and tool use at ADVANCED; later stages inherit
    np.testing.assert_array_equal(np.asarray(t.vision), [d[5] for d in DOCUMENTED])
    np.testing.assert_array_equal(np.asarray(t.tool_use), [d[6] for d in DOCUMENTED])
    # fields no stage sets keep the env's values; dtypes and per-stage shapes are unchanged
    for field in ("dt", "goal_radius", "max_velocity"):
        np.testing.assert_array_equal(
            np.asarray(getattr(t, field)), np.full(cur.num_stages, getattr(base, field))
        )
    for leaf_t, leaf_b in zip(jax.tree.leaves(t), jax.tree.leaves(base), strict=True):
        assert leaf_t.shape == (cur.num_stages, *jnp.shape(leaf_b))
        assert leaf_t.dtype == jnp.asarray(leaf_b).dtype
    # env_params(state) is the current stage's row
    state = cur.init()
    for k in range(cur.num_stages):
        got = cur.env_params(state.replace(stage=jnp.int32(k)))
        assert tree_equal(got, cur.stage_params[k])
        assert tree_equal(got, jax.tree.map(lambda x, k=k: x[k], t))


# ---- validation ------------------------------------------------------------------------------


def two(a=None, b=None):
    """A valid two-stage table with overrides for each stage."""
    sa = {"name": "A", "time_limit": 100.0, "num_obstacles": 3, **(a or {})}
    sb = {"name": "B", "time_limit": 80.0, "num_obstacles": 4, **(b or {})}
    return [sa, sb]


BAD = [
    (two(b={"bogus": 1}), r"stages\[1\] \(B\): unknown field\(s\) \['bogus'\]"),
    (two(a={"success_rate": 1.5}), r"stages\[0\] \(A\): success_rate=1.5 is invalid"),
    (
        two(b={"max_collision_rate": -0.1}),
        r"stages\[1\] \(B\): max_collision_rate=-0.1 is invalid",
    ),
    (two(b={"coverage": True}), r"stages\[1\] \(B\): coverage=True is invalid"),
    (
        two(b={"num_obstacles": 2}),
        r"stages\[1\] \(B\): difficulty must not decrease: num_obstacles",
    ),
    (
        two(b={"time_limit": 120.0}),
        r"stages\[1\] \(B\): difficulty must not decrease: time_limit",
    ),
    (
        two(a={"workspace_size": [8.0, 8.0, 4.0]}, b={"workspace_size": [8.0, 7.0, 4.0]}),
        r"stages\[1\] \(B\): difficulty must not decrease: workspace_size",
    ),
    (
        two(a={"vision": True}, b={"vision": False}),
        r"stages\[1\] \(B\): difficulty must not decrease: vision",
    ),
    (
        two(b={"time_limit": 100.0, "num_obstacles": 3}),
        r"stages\[1\] \(B\): difficulty must increase",
    ),
    ([{"name": "A"}, {"name": "B", "success_rate": 0.5}], r"stages\[1\] \(B\): difficulty"),
    (two(a={"min_episodes": 0}), r"stages\[0\] \(A\): min_episodes=0 is invalid"),
    ({"window": 0, "stages": two()}, r"curriculum\.window=0 is invalid"),
    ({"window": 4, "stages": []}, r"curriculum\.stages is invalid: must be a non-empty"),
    ([], r"curriculum\.stages is invalid"),
    ({"stages": two(), "windw": 3}, r"unknown key\(s\) \['windw'\]"),
    (two(b={"name": "A"}), r"duplicate stage name\(s\) \['A'\]"),
    (two(b={"num_obstacles": 13}), r"stages\[1\] \(B\): num_obstacles=13 is invalid.*\[0, 12\]"),
    (two(a={"coverage": 0.5}), r"stages\[0\] \(A\): coverage criterion needs an env"),
]


@pytest.mark.parametrize("spec,match", BAD)
def test_invalid_curricula_raise_naming_stage_and_field(spec, match):
    with pytest.raises(ValueError, match=match):
        bind(spec)


@pytest.mark.parametrize("spec,match", BAD)
def test_invalid_curricula_are_rejected_by_the_ppo_config(spec, match):
    with pytest.raises(ValueError, match=match) as e:
        PPOConfig(env=NAV, curriculum=spec).check_env()  # the env checks run at the edge
    assert str(e.value).startswith("PPOConfig.curriculum")


def test_curriculum_limits_follow_env_kwargs():
    spec = two(b={"num_obstacles": 5})
    PPOConfig(env=NAV, curriculum=spec).check_env()  # fine with the default max_obstacles=12
    with pytest.raises(
        ValueError, match=r"stages\[1\] \(B\): num_obstacles=5 is invalid.*\[0, 4\]"
    ):
        PPOConfig(env=NAV, env_kwargs={"max_obstacles": 4}, curriculum=spec).check_env()


def test_coverage_criterion_is_accepted_on_exploration():
    cur = bind(two(a={"coverage": 0.5}), EXPLORE)
    assert float(cur.coverage[0]) == pytest.approx(0.5)


def test_curriculum_needs_a_task_env():
    with pytest.raises(ValueError, match=r"PPOConfig\.curriculum='default' is invalid.*task env"):
        PPOConfig(env="CartPole-v1", curriculum="default").check_env()
    env, params = make("CartPole-v1")
    with pytest.raises(ValueError, match=r"not a jaxlearn task env"):
        Curriculum(CurriculumConfig.from_dict("default"), env, params)


# ---- advancing -------------------------------------------------------------------------------

THREE = {
    "window": 4,
    "stages": [
        {"name": "A", "time_limit": 100.0, "success_rate": 0.75, "min_episodes": 3},
        {"name": "B", "time_limit": 80.0, "success_rate": 0.5, "min_episodes": 3},
        {"name": "C", "time_limit": 60.0, "success_rate": 0.5, "min_episodes": 3},
    ],
}


def test_advances_exactly_when_success_rate_and_min_episodes_hold():
    cur = bind(THREE)
    step = jax.jit(cur.update)
    s = cur.init()
    assert int(s.stage) == 0 and np.asarray(s.stage_start).tolist() == [0, -1, -1]
    # 2 successes: rate 1.0 but only 2 < min_episodes=3 episodes
    s = step(s, *batch(success=[1, 1]))
    assert int(s.stage) == 0 and int(s.episodes_in_stage) == 2
    # window [1, 1, 0, 0]: 0.5 < 0.75
    s = step(s, *batch(success=[0, 0]))
    assert int(s.stage) == 0
    # window [1, 0, 0, 1] then [0, 0, 1, 1]: 0.5, still below
    for _ in range(2):
        s = step(s, *batch(success=[1]))
        assert int(s.stage) == 0
        assert float(cur.window_means(s)["success"]) == 0.5
    # window [0, 1, 1, 1]: 0.75 >= 0.75 -> advance on this, the 5th, update
    s = step(s, *batch(success=[1]))
    assert int(s.stage) == 1
    assert int(s.updates) == 5
    assert np.asarray(s.stage_start).tolist() == [0, 5, -1]
    assert int(s.episodes_in_stage) == 0
    assert not np.asarray(s.outcomes).any()
    means = cur.window_means(s)
    assert all(float(means[k]) == 0.0 for k in OUTCOMES)
    # the new stage starts with an empty window: old successes do not count towards B
    s = step(s, *batch(success=[1, 1]))
    assert int(s.stage) == 1 and int(s.episodes_in_stage) == 2
    s = step(s, *batch(success=[0]))  # 3 episodes, rate 2/3 >= 0.5
    assert int(s.stage) == 2
    assert np.asarray(s.stage_start).tolist() == [0, 5, 7]
    # never past the last stage
    for _ in range(3):
        s = step(s, *batch(success=[1, 1, 1, 1]))
        assert int(s.stage) == 2
    assert np.asarray(s.stage_start).tolist() == [0, 5, 7]
    assert int(s.episodes_in_stage) == 12 and int(s.updates) == 10
    assert bool(cur.criteria_met(s))  # met, but there is no next stage


def test_min_episodes_counts_across_updates_and_no_episodes_do_nothing():
    cur = bind(THREE)
    s = cur.init()
    s = cur.update(s, *batch(success=[1, 1]))
    s2 = cur.update(s, *batch(3, done=[0, 0, 0], success=[1, 1, 1]))
    assert int(s2.stage) == 0 and int(s2.episodes_in_stage) == 2
    np.testing.assert_array_equal(np.asarray(s2.outcomes), np.asarray(s.outcomes))
    s3 = cur.update(s2, *batch(success=[1]))
    assert int(s3.stage) == 1 and np.asarray(s3.stage_start).tolist() == [0, 3, -1]


ALL = {
    "window": 4,
    "stages": [
        {
            "name": "A",
            "time_limit": 100.0,
            "min_episodes": 3,
            "success_rate": 0.5,
            "average_reward": 1.0,
            "coverage": 0.5,
            "max_collision_rate": 0.25,
        },
        {"name": "B", "time_limit": 80.0},
    ],
}
GOOD = dict(
    success=[1, 1, 0, 0],
    ret=[1.0, 1.0, 0.5, 1.5],
    coverage=[0.5, 0.5, 0.5, 0.5],
    collided=[0, 0, 0, 1],
)


@pytest.mark.parametrize(
    "criterion,change",
    [
        ("none", {}),
        ("min_episodes", {"done": [1, 1, 0, 0]}),
        ("success_rate", {"success": [1, 0, 0, 0]}),
        ("average_reward", {"ret": [1.0, 1.0, 0.5, 1.25]}),
        ("coverage", {"coverage": [0.5, 0.5, 0.5, 0.25]}),
        ("max_collision_rate", {"collided": [0, 0, 1, 1]}),
    ],
)
def test_each_criterion_blocks_on_its_own(criterion, change):
    """GOOD meets every criterion exactly at its threshold; each change breaks just one."""
    cur = bind(ALL, EXPLORE)
    cols = {**GOOD, **change}
    done = cols.pop("done", None)
    cols["return"] = cols.pop("ret")
    s = cur.update(cur.init(), *batch(4, done=done, **cols))
    assert int(s.stage) == (1 if criterion == "none" else 0)


def test_blocked_criterion_then_met_on_a_later_update():
    cur = bind(
        {
            "window": 4,
            "stages": [
                {"name": "A", "time_limit": 100.0, "min_episodes": 3, "average_reward": 5.0},
                {"name": "B", "time_limit": 80.0, "min_episodes": 3, "max_collision_rate": 0.25},
                {"name": "C", "time_limit": 60.0, "min_episodes": 3, "coverage": 0.75},
                {"name": "D", "time_limit": 40.0},
            ],
        },
        EXPLORE,
    )
    s = cur.init()
    s = cur.update(s, *batch(**{"return": [4.0, 5.5, 5.0]}))  # mean 4.83 < 5
    assert int(s.stage) == 0
    s = cur.update(s, *batch(**{"return": [6.0]}))  # mean 5.125
    assert int(s.stage) == 1
    s = cur.update(s, *batch(collided=[1, 1, 0, 0]))  # 0.5 > 0.25
    assert int(s.stage) == 1
    s = cur.update(s, *batch(collided=[0]))  # [1, 0, 0, 0]: 0.25
    assert int(s.stage) == 2
    s = cur.update(s, *batch(coverage=[0.5, 0.5, 1.0]))  # 0.667 < 0.75
    assert int(s.stage) == 2
    s = cur.update(s, *batch(coverage=[1.0]))  # 0.75
    assert int(s.stage) == 3
    assert np.asarray(s.stage_start).tolist() == [0, 2, 4, 6]


def test_window_keeps_the_latest_finished_episodes_in_time_major_order():
    w = 4
    cur = bind({"window": w, "stages": [{"name": "A", "min_episodes": 1000}]})
    rng = np.random.default_rng(0)
    seen = []  # outcomes of finished episodes, oldest first
    s = cur.init()
    step = jax.jit(cur.update)
    for shape in [(3, 5), (2, 5), (1, 5), (4, 5)]:
        done = rng.random(shape) < 0.6
        done[0, 0] = True
        vals = rng.normal(size=(*shape, len(OUTCOMES))).astype(np.float32)
        vals[~done] = 1e6  # entries that are not finished episodes must never count
        outcomes = {k: jnp.asarray(vals[..., i]) for i, k in enumerate(OUTCOMES)}
        s = step(s, jnp.asarray(done), outcomes)
        seen.extend(vals[done])  # boolean indexing flattens in C (time-major) order
        assert int(s.episodes_in_stage) == len(seen)
        want = np.mean(np.asarray(seen[-w:]), axis=0)
        got = cur.window_means(s)
        np.testing.assert_allclose([float(got[k]) for k in OUTCOMES], want, rtol=1e-5)


def test_missing_outcome_columns_count_as_zero():
    cur = bind({"window": 4, "stages": [{"name": "A", "min_episodes": 1000}]})
    s = cur.update(cur.init(), *batch(success=[1, 1]))
    m = cur.window_means(s)
    assert float(m["success"]) == 1.0
    assert float(m["return"]) == float(m["coverage"]) == float(m["collided"]) == 0.0


class Reference:
    """A plain-Python model of the documented semantics."""

    def __init__(self, spec):
        self.w = spec["window"]
        self.stages = spec["stages"]
        self.stage, self.hist, self.updates = 0, [], 0
        self.start = [0] + [-1] * (len(self.stages) - 1)

    def update(self, done, vals):
        self.hist.extend(vals[done.reshape(-1)].tolist())
        self.updates += 1
        st = self.stages[self.stage]
        win = np.asarray(self.hist[-self.w :]).reshape(-1, len(OUTCOMES))
        m = win.mean(0) if len(win) else np.zeros(len(OUTCOMES))
        ok = (
            len(self.hist) >= st.get("min_episodes", 100)
            and m[0] >= st.get("success_rate", 0.0)
            and m[1] >= st.get("average_reward", -np.inf)
            and m[2] >= st.get("coverage", 0.0)
            and m[3] <= st.get("max_collision_rate", 1.0)
        )
        if ok and self.stage < len(self.stages) - 1:
            self.stage += 1
            self.hist = []
            self.start[self.stage] = self.updates


def test_random_batches_match_a_reference_model():
    spec = {
        "window": 4,
        "stages": [
            {"name": "A", "time_limit": 90.0, "min_episodes": 3, "success_rate": 0.6},
            {"name": "B", "time_limit": 80.0, "min_episodes": 5, "average_reward": 0.3},
            {"name": "C", "time_limit": 70.0, "min_episodes": 2, "coverage": 0.4},
            {"name": "D", "time_limit": 60.0, "min_episodes": 2, "max_collision_rate": 0.3},
            {"name": "E", "time_limit": 50.0},
        ],
    }
    cur = bind(spec, EXPLORE)
    ref = Reference(spec)
    step = jax.jit(cur.update)
    rng = np.random.default_rng(1)
    s = cur.init()
    stages = []
    for _ in range(60):
        done = rng.random(6) < 0.35
        vals = np.stack(
            [
                rng.random(6) < 0.7,  # success
                rng.integers(-1, 3, 6),  # return: small ints, means are exact
                rng.integers(0, 3, 6) / 2,  # coverage in {0, 0.5, 1}
                rng.random(6) < 0.2,  # collided
            ],
            axis=-1,
        ).astype(np.float32)
        outcomes = {k: jnp.asarray(vals[:, i]) for i, k in enumerate(OUTCOMES)}
        s = step(s, jnp.asarray(done), outcomes)
        ref.update(done, vals)
        stages.append(ref.stage)
        assert int(s.stage) == ref.stage
        assert int(s.episodes_in_stage) == len(ref.hist)
        assert np.asarray(s.stage_start).tolist() == ref.start
    assert stages[-1] >= 2, "the sequence should exercise several advances"


def test_update_vmaps_over_several_states():
    cur = bind(THREE)
    init = cur.init()
    # three curricula: one at stage B with 2 episodes, two fresh
    s_b = cur.update(init, *batch(success=[1, 1, 1]))
    s_b = cur.update(s_b, *batch(success=[1, 1]))
    assert int(s_b.stage) == 1
    states = [s_b, init, init]
    batches = [
        batch(done=[1, 1, 0, 0], success=[1, 0, 0, 0]),  # B: window [1, 1, 1, 0] -> C
        batch(done=[1, 1, 1, 0], success=[1, 1, 1, 0]),  # A: 3 successes -> B
        batch(done=[1, 1, 0, 0], success=[1, 1, 1, 1]),  # A: 2 episodes, stays
    ]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    done = jnp.stack([b[0] for b in batches])
    outs = {k: jnp.stack([b[1][k] for b in batches]) for k in batches[0][1]}
    got = jax.jit(jax.vmap(cur.update))(stacked, done, outs)
    assert isinstance(got, CurriculumState)
    np.testing.assert_array_equal(np.asarray(got.stage), [2, 1, 0])
    for i, (st, b) in enumerate(zip(states, batches, strict=True)):
        want = cur.update(st, *b)
        assert tree_equal(jax.tree.map(lambda x, i=i: x[i], got), want)
    # and the params gather vmaps too
    params = jax.vmap(cur.env_params)(got)
    np.testing.assert_allclose(np.asarray(params.time_limit), [60.0, 80.0, 100.0])


def test_metrics_and_episode_outcomes():
    cur = bind(THREE)
    s = cur.update(cur.init(), *batch(success=[1, 0]))
    m = cur.metrics(s)
    assert float(m["curriculum_stage"]) == 0.0
    assert float(m["curriculum_success_rate"]) == 0.5
    assert float(m["curriculum_episodes_in_stage"]) == 2.0
    out = episode_outcomes(
        jnp.asarray([1.0, 2.0]),
        {"success": jnp.asarray([1.0, 0.0]), "collisions": jnp.asarray([0.0, 3.0])},
    )
    assert set(out) == {"return", "success", "collided"}
    np.testing.assert_array_equal(np.asarray(out["collided"]), [False, True])
    out = episode_outcomes(jnp.zeros(2), {"coverage": jnp.asarray([0.2, 0.4])})
    assert set(out) == {"return", "coverage"}


# ---- inside PPO and the runner ---------------------------------------------------------------

# Episodes are truncated after time_limit / dt (0.5 s) steps: 8, 6 and 4, each within one
# 8-step rollout, and with no success-rate threshold one finished episode advances a stage.
FAST = {
    "window": 4,
    "stages": [
        {"name": "S0", "time_limit": 4.0, "num_obstacles": 1, "min_episodes": 1},
        {"name": "S1", "time_limit": 3.0, "num_obstacles": 2, "min_episodes": 1},
        {"name": "S2", "time_limit": 2.0, "num_obstacles": 3, "vision": True},
    ],
}
SMALL_PPO = dict(
    env=NAV,
    num_envs=4,
    num_steps=8,
    num_minibatches=1,
    num_epochs=1,
    hidden_sizes=(8,),
    curriculum=FAST,
)


def test_ppo_stage_change_does_not_recompile():
    learner = make_learner(PPOConfig(total_timesteps=4 * 8 * 4, **SMALL_PPO))
    assert learner.curriculum is not None and learner.curriculum.num_stages == 3
    traces = []

    def counted(state, hparams):
        traces.append(1)
        return learner.update(state, hparams)

    step = jax.jit(counted)
    hp = learner.hparams
    state = jax.jit(learner.init)(jax.random.key(0), hp)
    stages = [int(state.curriculum.stage)]
    lengths = []
    for _ in range(4):
        state, metrics = step(state, hp)
        stages.append(int(state.curriculum.stage))
        assert float(metrics["curriculum_stage"]) == stages[-1]
        lengths.append(float(metrics["episode_length_sum"] / metrics["episode_count"]))
    assert stages[0] == 0 and stages[-1] == 2, stages
    assert np.all(np.diff(stages) >= 0)
    start = np.asarray(state.curriculum.stage_start).tolist()
    assert start[1] >= 1 and start[2] > start[1]
    assert len(traces) == 1
    assert step._cache_size() == 1
    # the env ran with the last stage's time limit (4 steps) once it was reached
    assert lengths[-1] <= 4.0


@pytest.mark.slow
def test_runner_reports_the_curriculum(tmp_path):
    out = tmp_path / "run"
    assert not out.exists()
    cfg = PPOConfig(total_timesteps=4 * 8 * 4, **SMALL_PPO)
    summary = run(RunConfig(num_chunks=2, num_seeds=1), cfg, out=str(out), log=lambda s: None)
    with open(out / "metrics.json") as f:
        saved = json.load(f)
    assert saved["curriculum"] == summary["curriculum"]
    c = saved["curriculum"]
    names = [s["name"] for s in FAST["stages"]]
    assert c["stages"] == names
    assert len(c["final_stage_per_seed"]) == len(c["stage_reached_at_step_per_seed"]) == 1
    steps_per_update = cfg.num_envs * cfg.num_steps
    for final, reached in zip(
        c["final_stage_per_seed"], c["stage_reached_at_step_per_seed"], strict=True
    ):
        k = names.index(final)
        # the stages reached are exactly those up to the final one, in order
        assert list(reached) == names[: k + 1]
        steps = [reached[n] for n in names[: k + 1]]
        assert steps[0] == 0
        assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
        assert all(x % steps_per_update == 0 and x <= saved["total_timesteps"] for x in steps)
    # by design every seed reaches the last stage (see FAST)
    assert c["final_stage_per_seed"] == [names[-1]]
    fem = saved["final_episode_metrics"]
    assert {"success", "reward_time_penalty"} <= set(fem)
    assert 0.0 <= fem["success"] <= 1.0
    assert np.isfinite(fem["reward_time_penalty"])
    png = out / "curriculum.png"
    assert png.is_file() and os.path.getsize(png) > 0
    assert summary["run_dir"] == str(out)
