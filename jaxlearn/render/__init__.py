"""Pictures of episodes: draw each state of an episode with matplotlib and write an animation.

    info = render_episodes("runs/ppo_Navigation2D-v0", "nav.gif")   # a run folder
    info = render_episodes("cartpole_policy", "cartpole.mp4")       # an exported policy

or, with any policy `act(obs [B, ...]) -> action [B, ...]`:

    states, rewards = collect_episode(act, env, env_params, key)
    render(env, env_params, [states], "episode.gif")

Frames: an episode of `L` steps gives `L + 1` frames, the state after `reset` and the state
after each step (the last one is the state the episode ended in, before gymnax's automatic
reset). Several episodes are written one after the other into one file. Each frame's title
shows the step and the return so far, so no two consecutive frames are identical (GIF
writers merge identical frames).

Formats: `.gif` (Pillow, which ships with matplotlib) or `.mp4` (needs `ffmpeg` on PATH).
Renderers are chosen by the env's class (`RENDERERS`; subclasses inherit their parent's);
`renderable()` lists the env names they cover. Figures are made without pyplot, so
rendering changes no global matplotlib state.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments.classic_control import Acrobot, CartPole, Pendulum
from matplotlib.animation import FFMpegWriter, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubplotParams

from jaxlearn.envs.cooperative import Cooperative
from jaxlearn.envs.exploration import Exploration
from jaxlearn.envs.masking import MaskObservation
from jaxlearn.envs.navigation import Navigation
from jaxlearn.envs.registry import make
from jaxlearn.envs.setup import base_env, make_curriculum
from jaxlearn.evaluation import POLICIES, default_max_steps
from jaxlearn.export import ExportedPolicy, export_from_run, load_policy, load_run
from jaxlearn.render import classic, tasks

__all__ = [
    "RENDERERS",
    "check_path",
    "collect_episode",
    "collect_episodes",
    "render",
    "render_episodes",
    "renderable",
    "renderer_for",
]

# env class -> (draw(fig, env, params, states, t), the registered names it covers)
RENDERERS: dict[type, tuple[Callable[..., None], tuple[str, ...]]] = {
    Navigation: (tasks.draw_navigation, ("Navigation2D-v0", "Navigation3D-v0")),
    Exploration: (tasks.draw_exploration, ("Exploration-v0",)),
    Cooperative: (tasks.draw_cooperative, ("Cooperative-v0",)),
    CartPole: (classic.draw_cartpole, ("CartPole-v1",)),
    Pendulum: (classic.draw_pendulum, ("Pendulum-v1",)),
    Acrobot: (classic.draw_acrobot, ("Acrobot-v1",)),
}

SUFFIXES = (".gif", ".mp4")


def renderable() -> list[str]:
    """The env names that have a renderer."""
    return [name for _, names in RENDERERS.values() for name in names]


def renderer_for(env: Any) -> Callable[..., None]:
    """The draw function for `env`'s class (or its nearest renderable base class).

    Raises:
        ValueError: no renderer; the message names the env and lists what can be rendered.
    """
    for cls in type(env).__mro__:
        if cls in RENDERERS:
            return RENDERERS[cls][0]
    name = getattr(env, "name", type(env).__name__)
    wrapped = " (pass the unwrapped env)" if hasattr(env, "_env") else ""
    raise ValueError(
        f"no renderer for env {name!r} (class {type(env).__name__}); renderable envs: "
        f"{', '.join(renderable())}{wrapped}"
    )


def check_path(path: str) -> str:
    """The output format of `path` (`"gif"` or `"mp4"`), checked before any work is done.

    Raises:
        ValueError: another suffix, `.mp4` without `ffmpeg` on PATH, a path that exists
            (never overwritten) or cannot be written; the message names the `--render`
            flag and what is allowed.
    """
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"--render {path!r} is invalid: the file name must end in .gif, or .mp4 when "
            "ffmpeg is on PATH"
        )
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise ValueError(
            f"--render {path!r} needs ffmpeg on PATH to write .mp4, and none was found: "
            "install ffmpeg or use a .gif file name"
        )
    if os.path.lexists(path):  # never write over what a user has (a picture, a folder)
        raise ValueError(
            f"--render {path!r} already exists; jaxlearn never overwrites a file: choose a "
            "new file name or remove it yourself"
        )
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # missing folders are made when the file is written
        folder = os.path.dirname(folder)
    try:  # a probe file, not os.access: root passes that everywhere, /proc included
        if not os.path.isdir(folder):
            raise NotADirectoryError(f"{folder!r} is a file")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(
            f"--render {path!r}: cannot write there ({e.strerror or e}); choose a writable "
            "file path"
        ) from None
    return suffix[1:]


def _rollout(act, env, env_params, key, max_steps: int, core_state=None, sampled=False):
    """One episode of `act` in a `lax.scan` of `max_steps` steps; frozen once it ends.
    With `core_state` (`[1, H]`), `act(obs, h) -> (action, h)` carries it through the
    episode (a recurrent policy). With `sampled`, `act` takes a PRNG key last, step `t`'s
    `fold_in(fold_in(key, 1), t)`; the reset does not depend on it, so greedy and sampled
    episodes of one key start from the same state.

    Returns the initial state, the states after each step `[max_steps, ...]`, rewards
    `[max_steps]` and `active` `[max_steps]` (the step belongs to the episode).
    """
    k_reset, k_step = jax.random.split(key)
    k_act = jax.random.fold_in(key, 1)
    obs, state = env.reset(k_reset, env_params)

    def body(carry, t):
        obs, state, done, h = carry
        batch = jax.tree.map(lambda o: o[None], obs)
        draw = (jax.random.fold_in(k_act, t),) if sampled else ()
        if h is None:
            action = act(batch, *draw)
        else:
            action, h = act(batch, h, *draw)
        action = jax.tree.map(lambda a: a[0], action)
        # step_env, not step: keep the state the episode ends in (step would auto-reset)
        obs2, state2, reward, terminated, _ = env.step_env(
            jax.random.fold_in(k_step, t), state, action, env_params
        )
        ended = jnp.logical_or(terminated, env.is_truncated(state2, env_params))
        keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        state2 = jax.tree.map(keep, state2, state)
        obs2 = jax.tree.map(keep, obs2, obs)
        reward = jnp.where(done, 0.0, jnp.asarray(reward, jnp.float32))
        return (obs2, state2, done | ended, h), (state2, reward, ~done)

    carry = (obs, state, jnp.bool_(False), core_state)
    _, (states, rewards, active) = jax.lax.scan(body, carry, jnp.arange(max_steps))
    return state, states, rewards, active


def collect_episodes(
    act: Callable[[Any], Any],
    env: Any,
    env_params: Any,
    keys: jax.Array,
    max_steps: int | None = None,
    core_state: Any = None,
    sampled: bool = False,
) -> list[tuple[Any, np.ndarray]]:
    """Run one episode of `act` per key (one jitted, vmapped `lax.scan`); bring them to the host.

    Args:
        act: `obs [B, *obs_shape] -> action [B, ...]` (e.g. `load_policy(...).act`); it is
            called with B = 1. With `core_state`, `act(obs, state) -> (action, state)`.
            With `sampled`, it takes a PRNG key last (e.g. `load_policy(...).sample`).
        env: an unwrapped gymnax-style env (`jaxlearn.make(name)[0]`).
        env_params: its params.
        keys: `[E]` PRNG keys, one episode each.
        max_steps: step limit; default the env's episode length (`default_max_steps`).
        core_state: a recurrent policy's state `[1, H]` every episode starts from
            (`policy.initial_state(1)`); None for a feed-forward `act`.

    Returns:
        Per episode `(states, rewards)`: the NumPy state pytree with a leading axis of
        `L + 1` (the reset state, then the state after each step) and the rewards `[L]`
        float32, for an episode of `L` steps.
    """
    if max_steps is None:
        max_steps = int(default_max_steps(env_params))
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"collect_episodes: max_steps={max_steps!r} must be an int >= 1")
    run = jax.jit(
        jax.vmap(lambda k: _rollout(act, env, env_params, k, max_steps, core_state, sampled))
    )
    first, states, rewards, active = jax.device_get(run(keys))
    out = []
    for e in range(len(active)):
        n = int(np.sum(active[e]))
        episode = jax.tree.map(
            lambda a, b, e=e, n=n: np.concatenate([np.asarray(a)[e][None], np.asarray(b)[e, :n]]),
            first,
            states,
        )
        out.append((episode, np.asarray(rewards[e, :n], np.float32)))
    return out


def collect_episode(
    act: Callable[[Any], Any],
    env: Any,
    env_params: Any,
    key: jax.Array,
    max_steps: int | None = None,
) -> tuple[Any, np.ndarray]:
    """`(states, rewards)` of one episode: `collect_episodes` with the one key `key`."""
    return collect_episodes(act, env, env_params, key[None], max_steps)[0]


def _frames(states: Any) -> int:
    return int(np.shape(jax.tree.leaves(states)[0])[0])


def render(
    env: Any,
    env_params: Any,
    episodes: Sequence[Any],
    path: str,
    *,
    returns: Sequence[Sequence[float]] | None = None,
    fps: int = 10,
    dpi: int = 80,
) -> int:
    """Draw the states of each episode and write them as one animation to `path`.

    Args:
        env, env_params: the env the states come from (its class picks the renderer).
        episodes: one host state pytree per episode, each with a leading time axis.
        path: `.gif`, or `.mp4` when ffmpeg is on PATH.
        returns: optional per-episode `[frames]` return so far, shown in the titles.
        fps: frames per second.
        dpi: dots per inch of the 4-inch-high figure.

    Returns:
        The number of frames written (the sum of the episodes' leading axes).
    """
    fmt = check_path(path)
    draw = renderer_for(env)
    name = getattr(env, "name", type(env).__name__)
    # fixed margins: a constrained layout would double the drawing time of each frame
    margins = SubplotParams(left=0.12, right=0.97, bottom=0.1, top=0.86, wspace=0.3)
    fig = Figure(figsize=tasks.figure_size(env), subplotpars=margins)
    FigureCanvasAgg(fig)
    if fmt == "gif":
        writer = PillowWriter(fps=fps)
    else:
        writer = FFMpegWriter(fps=fps, codec="libx264", extra_args=["-pix_fmt", "yuv420p"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with writer.saving(fig, path, dpi):
        for e, states in enumerate(episodes):
            n = _frames(states)
            for t in range(n):
                fig.clear()
                draw(fig, env, env_params, states, t)
                title = f"{name}  episode {e + 1}/{len(episodes)}  step {t}/{n - 1}"
                if returns is not None:
                    title += f"  return {returns[e][t]:.2f}"
                fig.suptitle(title, fontsize=9)
                writer.grab_frame()
                count += 1
    return count


def _on_unmasked(policy: ExportedPolicy, sampled: bool) -> tuple[Any, Any]:
    """`(act, core_state)` of `policy` (its `sample` when `sampled`, taking a key last)
    taking the unmasked env's observations (its `obs_mask` applied first); `core_state` is
    None unless the policy is recurrent."""
    keep = policy.spec["config"].get("obs_mask")
    view = (lambda obs: obs) if keep is None else (lambda obs: obs[..., jnp.asarray(keep)])  # noqa: E731
    act = policy.sample if sampled else policy.act
    if policy.initial_state is None:
        return (lambda obs, *key: act(view(obs), *key)), None
    return (lambda obs, h, *key: act(view(obs), h, *key)), policy.initial_state(1)


def _policy_and_env(source: Any, checkpoint: Any, seed_index: int, sampled: bool):
    """`(act, core_state, env, env_params)` from a run folder, an export folder or an
    ExportedPolicy; `env` is unwrapped (renderable), `act` takes its observations."""
    if isinstance(source, ExportedPolicy):
        policy = source
    elif isinstance(source, str) and os.path.isfile(os.path.join(source, "policy.json")):
        policy = load_policy(source)
    else:
        run = load_run(source, checkpoint)
        env, env_params = base_env(run.algo_cfg)
        env = env.unwrapped if isinstance(env, MaskObservation) else env
        c_state = getattr(run.state, "curriculum", None)
        curriculum = make_curriculum(run.algo_cfg, env, env_params)
        if curriculum is not None and c_state is not None:
            # the curriculum stage this seed had reached, as its evaluation uses
            env_params = curriculum.env_params(jax.tree.map(lambda x: x[seed_index], c_state))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "policy")
            export_from_run(source, out, seed_index, checkpoint=run.step)
            policy = load_policy(out)
        return (*_on_unmasked(policy, sampled), env, env_params)
    cfg = policy.spec["config"]
    env, _ = make(cfg["env"], **(cfg.get("env_kwargs") or {}))
    # the env parameters it was trained on (the curriculum stage of its checkpoint)
    return (*_on_unmasked(policy, sampled), env, policy.env_params)


def render_episodes(
    source: Any,
    path: str,
    episodes: int = 1,
    seed: int = 0,
    *,
    checkpoint: Any = "best",
    seed_index: int = 0,
    max_steps: int | None = None,
    fps: int = 10,
    policy: str = "greedy",
) -> dict[str, Any]:
    """Render episodes of a trained policy to `path` (`.gif`, or `.mp4` with ffmpeg).

    Args:
        source: a run folder (its `checkpoint` of seed `seed_index` is exported and
            loaded; the env has the run's `env_params` and, with a curriculum, the stage
            that seed reached), an exported policy folder (`policy.json`: the env is built
            from its `env` and `env_kwargs`, with the env parameters it was trained on,
            `policy.env_params`), or an `ExportedPolicy`.
        path: the animation file.
        episodes: episodes drawn one after the other; episode `i` resets with
            `jax.random.split(jax.random.key(seed), episodes)[i]`.
        max_steps: step limit per episode (default: the env's episode length).
        fps: frames per second.
        policy: `"greedy"` (argmax or the Gaussian's mean) or `"sampled"` (actions drawn as
            in training, `ExportedPolicy.sample`; episode `i` starts from the same state
            either way).

    Returns:
        `path`, `frames`, `lengths` and `returns` per episode.
    """
    check_path(path)  # before restoring anything
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"render_episodes: episodes={episodes!r} must be an int >= 1")
    if policy not in POLICIES:
        raise ValueError(f"render_episodes: policy={policy!r} is invalid: allowed {POLICIES}")
    sampled = policy == "sampled"
    act, core_state, env, env_params = _policy_and_env(source, checkpoint, seed_index, sampled)
    renderer_for(env)  # fail before running episodes
    keys = jax.random.split(jax.random.key(seed), episodes)
    runs = collect_episodes(act, env, env_params, keys, max_steps, core_state, sampled)
    so_far = [np.concatenate([[0.0], np.cumsum(rewards)]) for _, rewards in runs]
    frames = render(env, env_params, [s for s, _ in runs], path, returns=so_far, fps=fps)
    return {
        "path": path,
        "frames": frames,
        "lengths": [len(rewards) for _, rewards in runs],
        "returns": [float(np.sum(rewards)) for _, rewards in runs],
    }
