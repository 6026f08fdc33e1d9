"""`env_step`: env steps per second of random stepping in vmapped CartPole-v1.

Raw gymnax (`gymnax.make` + `jax.vmap`) against jaxlearn's training stack (`make_vec`:
EpisodeStats -> VecEnv), 1,000 steps of each number of envs in one scan; jaxlearn's rows carry
the ratio to gymnax and the wrappers' overhead.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable

from jaxlearn.bench.rows import (
    ENV_NAME,
    Emitter,
    compile_and_time,
    error_text,
    log,
    memory_fields,
    timing_fields,
)

ENV_STEP_LENGTH = 1000  # steps per env in the env_step bench


def random_stepper(step: Callable, num_envs: int, num_actions: int, num_steps: int) -> Callable:
    """`run(state, obs, key)`: `num_steps` random-action steps of `num_envs` envs in one scan.

    The last observation, per-env reward sums and done counts are carried and returned, so XLA
    cannot drop any output of `step`.
    """
    import jax
    import jax.numpy as jnp

    def run(state, obs, key):
        def body(carry, k):
            state, obs, reward_sum, done_count = carry
            k_act, k_env = jax.random.split(k)
            action = jax.random.randint(k_act, (num_envs,), 0, num_actions)
            obs, state, reward, terminated, truncated, _ = step(k_env, state, action)
            done = jnp.logical_or(terminated, truncated).astype(jnp.int32)
            return (state, obs, reward_sum + reward, done_count + done), None

        zeros = jnp.zeros(num_envs, jnp.float32)
        carry = (state, obs, zeros, zeros.astype(jnp.int32))
        carry, _ = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
        return carry

    return run


def bench_env_step(args: argparse.Namespace, emit: Emitter, on_gpu: bool) -> None:
    import gymnax
    import jax

    from jaxlearn.envs import make_vec

    if args.env_counts:
        counts = args.env_counts
    elif on_gpu and not args.quick:
        counts = [1024, 16384, 131072, 1048576]
    else:
        counts = [1024, 16384]
    gym_env, gym_params = gymnax.make(ENV_NAME)
    num_actions = int(gym_env.action_space(gym_params).n)

    for n in counts:
        total = n * ENV_STEP_LENGTH
        base = {"bench": "env_step", "env": ENV_NAME, "num_envs": n, "num_steps": ENV_STEP_LENGTH}

        # Raw gymnax (the peer, in this process: we share gymnax 1.0.1).
        def gym_step(k, s, a, n=n):
            keys = jax.random.split(k, n)
            return jax.vmap(gym_env.step, in_axes=(0, 0, 0, None))(keys, s, a, gym_params)

        def gym_reset(key, n=n):
            keys = jax.random.split(key, n)
            return jax.vmap(gym_env.reset, in_axes=(0, None))(keys, gym_params)

        # jaxlearn's training stack: EpisodeStats -> VecEnv.
        vec_env, vec_params = make_vec(ENV_NAME, n)

        def vec_step(k, s, a, vec_env=vec_env, vec_params=vec_params):
            return vec_env.step(k, s, a, vec_params)

        def vec_reset(key, vec_env=vec_env, vec_params=vec_params):
            return vec_env.reset(key, vec_params)

        results = {}
        for impl, reset, step, stack in (
            ("gymnax", gym_reset, gym_step, "gymnax.make + jax.vmap"),
            ("jaxlearn", vec_reset, vec_step, "make_vec: EpisodeStats -> VecEnv"),
        ):
            log(f"env_step {impl} {n} envs x {ENV_STEP_LENGTH} steps")
            reset_fn = jax.jit(reset)

            def make_args(reset_fn=reset_fn):
                obs, state = reset_fn(jax.random.key(0))
                return state, obs, jax.random.key(1)

            try:
                stepper = random_stepper(step, n, num_actions, ENV_STEP_LENGTH)
                t = compile_and_time(stepper, make_args, what={**base, "impl": impl})
            except Exception as e:
                emit({**base, "impl": impl, "error": error_text(e)})
                traceback.print_exc()
                continue
            sps = total / t.run_seconds
            results[impl] = t
            row = {
                **base,
                "impl": impl,
                "stack": stack,
                "total_env_steps": total,
                **timing_fields(t),
                "env_steps_per_second": sps,
                **memory_fields(),
            }
            if impl == "jaxlearn" and "gymnax" in results:
                g = results["gymnax"]
                row["ratio_vs_gymnax"] = g.run_seconds / t.run_seconds
                row["wrapper_overhead_fraction"] = t.run_seconds / g.run_seconds - 1.0
            emit(row)
            del t
