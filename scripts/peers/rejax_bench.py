#!/usr/bin/env python
"""rejax's side of `scripts/bench.py`: run with the peer venv's interpreter, not jaxlearn's.

rejax 0.1.x unpacks gymnax 0.0.9's 5-tuple `step`, so it cannot share jaxlearn's venv
(gymnax 1.0.1). `scripts/bench.py --peer-python PATH` runs this file as a subprocess right
after the matching jaxlearn run, on the same device, and passes jaxlearn's resolved config as
`--spec` JSON. This file maps that config onto rejax's keys, states what did not map, and
prints one JSON object per seed count on stdout (progress on stderr). It imports nothing from
jaxlearn.

Timing is the same as jaxlearn's: `jax.jit(f).lower(...).compile()`, one warm-up run, then a
timed second run with `jax.block_until_ready`. rejax's periodic evaluation is replaced by a
no-op during the timed run (one "evaluation" at the very end, which does nothing); the trained
agents are evaluated afterwards, untimed, with rejax's own `evaluate` (128 episodes per seed).
"""

from __future__ import annotations

import argparse
import fractions
import importlib.metadata
import json
import math
import os
import resource
import sys
import time
import traceback
from typing import Any

EVAL_EPISODES = 128


def log(msg: str) -> None:
    print(f"[rejax] {msg}", file=sys.stderr, flush=True)


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(_clean(row), allow_nan=False), flush=True)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("rejax", "gymnax", "jax", "flax", "optax", "distrax"):
        try:
            out[f"{pkg}_version"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[f"{pkg}_version"] = None
    return out


# ---------------------------------------------------------------------------------------------
# Mapping jaxlearn's config onto rejax's keys.


class Mapping:
    """Collects rejax kwargs and, for every jaxlearn field, how (or whether) it was mapped."""

    def __init__(self, ours: dict[str, Any]):
        self.ours = ours
        self.kwargs: dict[str, Any] = {}
        self.described: dict[str, Any] = {}  # JSON-able view of kwargs
        self.not_mapped: list[str] = []
        self.handled: set[str] = set()

    def same(self, field: str, key: str | None = None) -> None:
        key = key or field
        self.kwargs[key] = self.ours[field]
        self.described[key] = self.ours[field]
        self.handled.add(field)

    def set(self, key: str, value: Any, described: Any = None) -> None:
        self.kwargs[key] = value
        self.described[key] = value if described is None else described

    def miss(self, field: str, reason: str) -> None:
        self.not_mapped.append(f"{field}={self.ours.get(field)!r}: {reason}")
        self.handled.add(field)

    def ok(self, *fields: str) -> None:
        """Fields that need no rejax key (same behaviour, or only matter for other envs)."""
        self.handled.update(fields)

    def finish(self) -> None:
        for field in sorted(set(self.ours) - self.handled):
            self.miss(field, "no rejax equivalent known to this script")


def _activation(m: Mapping) -> None:
    import flax.linen as nn

    act = m.ours.get("activation", "tanh")
    rejax_name = {"gelu": "gelu", "silu": "swish", "elu": "elu"}.get(act, act)
    if hasattr(nn, rejax_name):
        m.kwargs.setdefault("agent_kwargs", {})["activation"] = rejax_name
        m.described.setdefault("agent_kwargs", {})["activation"] = rejax_name
        m.handled.add("activation")
    else:
        m.miss("activation", "flax.linen has no such activation")


def map_ppo(spec: dict[str, Any]) -> Mapping:
    import optax

    ours = spec["config"]
    m = Mapping(ours)
    steps = int(spec["num_updates"]) * int(spec["env_steps_per_update"])
    m.same("env")
    m.handled.add("total_timesteps")
    # One eval "period" covering the whole run: exactly num_updates iterations, like ours.
    m.set("total_timesteps", steps)
    m.set("eval_freq", steps)
    m.set("skip_initial_evaluation", True)
    for f in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "gamma", "gae_lambda"):
        m.same(f)
    for f in ("clip_eps", "ent_coef", "vf_coef", "normalize_observations", "normalize_rewards"):
        m.same(f)
    m.same("max_grad_norm")
    m.not_mapped.append(
        f"max_grad_norm={ours['max_grad_norm']!r}: rejax applies optax.clip (each gradient "
        "element clipped to +-max_grad_norm, per network) where jaxlearn clips the global norm"
    )
    lr = float(ours["learning_rate"])
    if ours.get("anneal_lr"):
        opt_steps = spec["num_updates"] * ours["num_epochs"] * ours["num_minibatches"]
        m.set(
            "learning_rate",
            optax.linear_schedule(lr, 0.0, opt_steps),
            f"optax.linear_schedule({lr}, 0.0, {opt_steps})",
        )
        m.handled.update(("learning_rate", "anneal_lr"))
        m.not_mapped.append(
            "anneal_lr=True: mapped approximately, rejax decays per gradient step "
            "(linear_schedule over all minibatch steps) where jaxlearn decays per update"
        )
    else:
        m.same("learning_rate")
        m.ok("anneal_lr")
    hidden = list(ours.get("hidden_sizes", (64, 64)))
    m.kwargs.setdefault("agent_kwargs", {})["hidden_layer_sizes"] = tuple(hidden)
    m.described.setdefault("agent_kwargs", {})["hidden_layer_sizes"] = hidden
    m.handled.add("hidden_sizes")
    _activation(m)
    if ours.get("clip_value", True):
        m.ok("clip_value")  # rejax always clips the value update by clip_eps
    else:
        m.miss("clip_value", "rejax always clips the value update")
    if ours.get("normalize_advantages", True):
        m.ok("normalize_advantages")  # rejax normalises advantages per minibatch
    else:
        m.miss("normalize_advantages", "rejax always normalises advantages")
    m.miss("adam_eps", "rejax uses optax.adam's default eps=1e-8")
    if ours.get("reward_clip") is None:
        m.ok("reward_clip")
    else:
        m.miss("reward_clip", "rejax has no reward clipping")
    # Continuous-control and speed-only fields: nothing to map for a discrete env.
    m.ok("policy", "action_squash", "log_std_init", "rollout_unroll")
    m.finish()
    m.not_mapped.extend(
        [
            "network: rejax's actor and critic are separate MLPs with flax's default init and "
            "one Adam each; jaxlearn's use orthogonal init and one Adam over both",
            "truncation: gymnax 0.0.9 reports one `done`, so rejax cuts the return at the "
            "500-step time limit; jaxlearn bootstraps truncated steps",
        ]
    )
    return m


def map_dqn(spec: dict[str, Any]) -> Mapping:
    ours = spec["config"]
    m = Mapping(ours)
    m.same("env")
    # Equal gradient updates per env step: ours does gradient_steps every train_frequency env
    # steps; rejax does num_epochs every vector step of num_envs env steps.
    rate = fractions.Fraction(int(ours["gradient_steps"]), int(ours["train_frequency"]))
    n_ours = int(ours["num_envs"])
    if (rate * n_ours).denominator == 1:
        num_envs, num_epochs = n_ours, int(rate * n_ours)
    else:
        num_envs, num_epochs = rate.denominator, rate.numerator
    m.set("num_envs", num_envs)
    m.set("num_epochs", num_epochs)
    m.handled.update(("num_envs", "train_frequency", "gradient_steps"))
    if num_envs != n_ours:
        m.not_mapped.append(
            f"num_envs={n_ours}: rejax runs {num_envs} envs x {num_epochs} gradient step(s) per "
            f"vector step to match jaxlearn's {ours['gradient_steps']} step(s) every "
            f"{ours['train_frequency']} env steps ({float(rate):g} updates per env step)"
        )
    steps = int(spec["num_updates"]) * int(spec["env_steps_per_update"])
    vector_steps = math.ceil(steps / num_envs)
    m.set("total_timesteps", vector_steps * num_envs)
    m.set("eval_freq", vector_steps * num_envs)
    m.set("skip_initial_evaluation", True)
    m.handled.add("total_timesteps")
    m.same("buffer_size")
    m.same("batch_size")
    m.same("learning_rate")
    m.same("gamma")
    m.same("learning_starts", "fill_buffer")
    m.same("target_update_period", "target_update_freq")
    m.set("polyak", 1.0 - float(ours["tau"]))
    m.handled.add("tau")
    m.same("double_dqn", "ddqn")
    m.same("max_grad_norm")
    m.not_mapped.append(
        f"max_grad_norm={ours['max_grad_norm']!r}: rejax applies optax.clip (each gradient "
        "element) where jaxlearn clips the global norm"
    )
    if ours.get("epsilon_schedule", "linear") == "linear":
        m.same("epsilon_start", "eps_start")
        m.same("epsilon_end", "eps_end")
        m.same("exploration_fraction")
        m.ok("epsilon_schedule", "epsilon_decay")
    else:
        m.miss("epsilon_schedule", "rejax only has a linear epsilon schedule")
    if ours.get("loss", "mse") == "mse":
        m.ok("loss")  # rejax: optax.l2_loss = 0.5 * td^2, jaxlearn's mse
    else:
        m.miss("loss", "rejax uses optax.l2_loss (0.5 * td^2)")
    for field, default, why in (
        ("n_step", 1, "rejax is 1-step only"),
        ("prioritized", False, "rejax has no prioritized replay"),
        ("adam_eps", 1e-8, "rejax uses optax.adam's default eps=1e-8"),
    ):
        if ours.get(field, default) == default:
            m.ok(field)
        else:
            m.miss(field, why)
    if not ours.get("prioritized", False):
        m.ok("per_alpha", "per_beta_start", "per_beta_end", "per_eps")
    m.ok("rollout_unroll")
    _activation(m)
    m.handled.add("hidden_sizes")  # set by replacing rejax's agent after create()
    m.finish()
    m.not_mapped.append(
        "warm-up: rejax samples uniform random actions until fill_buffer, jaxlearn follows "
        "its epsilon schedule from the first step"
    )
    return m


# ---------------------------------------------------------------------------------------------


def build(algo: str, m: Mapping, ours: dict[str, Any]):
    """A rejax algorithm object with the mapped config; evaluation disabled during training."""
    import jax.numpy as jnp
    from rejax import DQN, PPO

    kwargs = dict(m.kwargs)
    if algo == "ppo":
        agent = PPO.create(**kwargs)
    else:
        import flax.linen as nn
        from rejax.networks import DiscreteQNetwork, EpsilonGreedyPolicy

        agent = DQN.create(**kwargs)
        # rejax's DQN.create hard-codes hidden_layer_sizes=(64, 64); set ours instead.
        hidden = tuple(ours.get("hidden_sizes", (64, 64)))
        activation = getattr(nn, kwargs.get("agent_kwargs", {}).get("activation", "swish"))
        q_net = EpsilonGreedyPolicy(DiscreteQNetwork)(
            hidden_layer_sizes=hidden,
            action_dim=agent.env.action_space(agent.env_params).n,
            activation=activation,
        )
        agent = agent.replace(agent=q_net)
        m.described.setdefault("agent_kwargs", {})["hidden_layer_sizes"] = list(hidden)

    def no_eval(algo_, ts, rng):
        del algo_, ts, rng
        return jnp.zeros(())

    return agent.replace(eval_callback=no_eval)


def grad_steps(algo: str, ts) -> int:
    import numpy as np

    train_state = ts.actor_ts if algo == "ppo" else ts.q_ts
    return int(np.asarray(train_state.step).reshape(-1)[0])


def run(args: argparse.Namespace) -> int:
    spec = json.loads(args.spec)
    base = {"bench": f"{args.algo}_e2e", "impl": "rejax", **versions()}
    try:
        import jax
        import numpy as np
        from rejax.evaluate import evaluate
    except Exception as e:
        emit({**base, "skipped": f"cannot import rejax: {type(e).__name__}: {e}"})
        traceback.print_exc()
        return 0

    dev = jax.devices()[0]
    base.update(
        device=dev.device_kind,
        platform=dev.platform,
        num_devices=jax.device_count(),
        jax_version=jax.__version__,
        env=spec["config"]["env"],
    )
    try:
        m = map_ppo(spec) if args.algo == "ppo" else map_dqn(spec)
        agent = build(args.algo, m, spec["config"])
    except Exception as e:
        emit({**base, "skipped": f"could not build rejax {args.algo}: {type(e).__name__}: {e}"})
        traceback.print_exc()
        return 0

    max_steps = int(agent.env_params.max_steps_in_episode)

    def final_return(ts, key):
        _, returns = evaluate(
            agent.make_act(ts), key, agent.env, agent.env_params, EVAL_EPISODES, max_steps
        )
        return returns.mean()

    for num_seeds in args.seeds:
        log(f"{args.algo} {num_seeds} seed(s), {m.described['total_timesteps']:,} env steps each")
        row = {**base, "num_seeds": num_seeds}
        key = jax.random.PRNGKey(spec.get("seed", 0))
        if num_seeds == 1:
            fn, arg = agent.train, key
            evaluate_all = jax.jit(lambda ts, k: final_return(ts, k)[None])
        else:
            fn, arg = jax.vmap(agent.train), jax.random.split(key, num_seeds)
            evaluate_all = jax.jit(
                lambda ts, k, s=num_seeds: jax.vmap(final_return)(ts, jax.random.split(k, s))
            )
        try:
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(arg).compile()
            compile_seconds = time.perf_counter() - t0
            jax.block_until_ready(compiled(arg))  # warm-up run
            t0 = time.perf_counter()
            ts, _ = jax.block_until_ready(compiled(arg))
            run_seconds = time.perf_counter() - t0
            per_seed = np.asarray(evaluate_all(ts, jax.random.PRNGKey(12345)), dtype=np.float64)
        except Exception as e:
            emit({**row, "skipped": f"rejax {args.algo} failed: {type(e).__name__}: {e}"})
            traceback.print_exc()
            continue
        steps = int(np.asarray(ts.global_step).reshape(-1)[0])
        updates = grad_steps(args.algo, ts)
        try:
            stats = dev.memory_stats() or {}
        except Exception:
            stats = {}
        row.update(
            {
                "total_timesteps": steps,
                "total_env_steps": num_seeds * steps,
                "run_seconds": run_seconds,
                "compile_seconds": compile_seconds,
                "env_steps_per_second": num_seeds * steps / run_seconds,
                "env_steps_per_second_per_agent": steps / run_seconds,
                "final_return_mean": float(per_seed.mean()),
                "final_return_min": float(per_seed.min()),
                "final_return_kind": (
                    f"rejax.evaluate after training: {EVAL_EPISODES} episodes per seed with "
                    "algo.make_act (PPO samples its policy; DQN epsilon=0.005)"
                ),
                "grad_updates_per_seed": updates,
                "grad_updates_per_env_step": updates / steps if steps else None,
                "peak_device_memory_bytes": stats.get("peak_bytes_in_use"),
                "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "host_load_1min": os.getloadavg()[0],
                "rejax_config": m.described,
                "not_mapped": m.not_mapped,
            }
        )
        emit(row)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=("ppo", "dqn"), required=True)
    p.add_argument("--spec", required=True, help="JSON: jaxlearn config and derived sizes")
    p.add_argument(
        "--seeds", type=lambda s: [int(x) for x in s.split(",") if x.strip()], default=[1]
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
