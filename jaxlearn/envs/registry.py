"""Name -> environment registry: jaxlearn's own envs first, then every gymnax env, then
import paths and the `jaxlearn.envs` entry-point group.

`make(name)` returns `(env, params)` like `gymnax.make`. Environments follow gymnax 1.0's
functional interface: `reset(key, params) -> (obs, state)` and
`step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`.

A name is looked up in this order:

1. `register`ed names (jaxlearn's task envs and the user's own), then gymnax's envs;
2. an import path `package.module:attribute` (the `module:attribute` convention of uvicorn
   and entry points): the module is imported with the current working directory importable
   (as `python -m` has it) and the attribute, a factory or an env class, is called with the
   config's `env_kwargs`; it returns an env or `(env, params)`;
3. an entry point of the `jaxlearn.envs` group, e.g. in an installed package's
   pyproject.toml `[project.entry-points."jaxlearn.envs"] Reach1D-v0 = "mypkg.envs:make"`,
   read from the installed packages' metadata only when a name is not found above.

A name that cannot be resolved raises `EnvError` (a `ConfigError`) saying what failed.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import Any

import gymnax

from jaxlearn.config import ConfigError

EnvFactory = Callable[..., Any]

ENTRY_POINT_GROUP = "jaxlearn.envs"
ENV_METHODS = ("reset", "step", "observation_space", "action_space")

_REGISTRY: dict[str, EnvFactory] = {}


class EnvError(ConfigError):
    """`env` names nothing `make` can build; `reason` says what failed."""

    def __init__(self, name: Any, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"env={name!r} is invalid: {reason}")


def register(name: str, factory: EnvFactory, *, overwrite: bool = False) -> None:
    """Register `factory(**kwargs) -> env` (or `-> (env, params)`) under `name`.

    Registering a name that exists (ours or gymnax's) raises unless `overwrite=True`.
    A name may not contain ':' (that marks an import path).
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(
            f"register: name={name!r} is invalid: must be a non-empty string without ':'"
        )
    if not overwrite and (name in _REGISTRY or name in gymnax.registered_envs):
        raise ValueError(f"register: an environment named {name!r} is already registered")
    _REGISTRY[name] = factory


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def registered_envs() -> list[str]:
    """All names `make` accepts: jaxlearn's own, then gymnax's, then installed packages'
    `jaxlearn.envs` entry points (besides import paths `package.module:attribute`)."""
    names = list(_REGISTRY)
    names += [n for n in gymnax.registered_envs if n not in _REGISTRY]
    seen = set(names)
    for ep in _entry_points():
        if ep.name not in seen:
            seen.add(ep.name)
            names.append(ep.name)
    return names


def _cwd_importable() -> None:
    """Put the working directory first on `sys.path`, as `python -m` does (a script run as
    `python scripts/train.py` has its own folder there instead)."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: nothing to add
        return
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _is_dotted(s: str) -> bool:
    return bool(s) and all(part.isidentifier() for part in s.split("."))


def _import_attribute(name: str, path: str, origin: str = "") -> EnvFactory:
    """The callable at import path `module:attribute` (attribute may be dotted)."""
    module_name, _, attr = path.partition(":")
    if not _is_dotted(module_name) or not _is_dotted(attr):
        raise EnvError(
            name,
            f"{origin}import path {path!r} is malformed: expected 'package.module:attribute' "
            "(dotted Python names on both sides of one ':')",
        )
    _cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise EnvError(
                name,
                f"{origin}module {module_name!r} not found (looked in the working directory "
                "and sys.path; is the package installed, or are you in the folder that "
                "holds it?)",
            ) from None
        raise EnvError(
            name, f"{origin}importing module {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    except Exception as e:
        raise EnvError(
            name, f"{origin}importing module {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = module_name + "".join("." + p for p in attr.split(".")[:i])
            raise EnvError(name, f"{origin}{where!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EnvError(
            name,
            f"{origin}{path!r} is a {type(obj).__name__}, not a factory function or env class",
        )
    return obj


def _entry_point_factory(name: str) -> EnvFactory | None:
    """The factory an installed package declares for `name` in the `jaxlearn.envs` group."""
    found = [ep for ep in _entry_points() if ep.name == name]
    if not found:
        return None
    values = {ep.value for ep in found}
    if len(values) > 1:
        raise EnvError(
            name,
            f"installed packages declare {len(values)} different {ENTRY_POINT_GROUP!r} entry "
            f"points under this name: {', '.join(sorted(values))}; give one as an import path",
        )
    value = found[0].value
    return _import_attribute(name, value, f"{ENTRY_POINT_GROUP} entry point {name} = {value}: ")


def _unknown(name: Any) -> EnvError:
    names = registered_envs()
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return EnvError(
        name,
        "must be a registered env: a registered name, an installed "
        f"{ENTRY_POINT_GROUP!r} entry point or an import path 'package.module:factory'"
        f"{hint} (registered: {', '.join(names)})",
    )


def _resolve(name: Any) -> tuple[EnvFactory, str]:
    """`(factory, kind)`, kind one of "registered", "gymnax" or "external" (import paths and
    entry points, whose failures are reported as `EnvError`s)."""
    if not isinstance(name, str) or not name:
        raise _unknown(name)
    if name in _REGISTRY:
        return _REGISTRY[name], "registered"
    if name in gymnax.registered_envs:
        return (lambda **kw: gymnax.make(name, **kw)), "gymnax"
    if ":" in name:
        return _import_attribute(name, name), "external"
    factory = _entry_point_factory(name)
    if factory is None:
        raise _unknown(name)
    return factory, "external"


def is_registered(name: str) -> bool:
    """Whether `make(name)` finds a factory: a registered or gymnax name, an installed
    entry point, or an import path whose module imports and whose attribute is callable
    (the factory itself is not called)."""
    try:
        _resolve(name)
    except EnvError:
        return False
    return True


def check_env(name: str, out: Any) -> tuple[Any, Any]:
    """`(env, params)` from what a factory returned (an env or `(env, params)`), checked to
    be a gymnax-style env: callable `reset`, `step`, `observation_space`, `action_space`,
    and params (`default_params` when the factory returned the env alone)."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise EnvError(
                name, f"the factory returned a tuple of {len(out)} items, not (env, params)"
            )
        env, params = out
    else:
        env, params = out, None
    missing = [m for m in ENV_METHODS if not callable(getattr(env, m, None))]
    if missing:
        raise EnvError(
            name,
            f"the factory returned a {type(env).__name__} object, not a gymnax-style env: it "
            f"has no {', '.join(missing)} method(s) (see gymnax.environments.environment)",
        )
    if params is None:
        try:
            params = env.default_params
        except Exception as e:
            raise EnvError(
                name,
                f"{type(env).__name__}.default_params failed ({type(e).__name__}: {e}); "
                "define it or return (env, params) from the factory",
            ) from e
        if params is None:
            raise EnvError(
                name,
                f"{type(env).__name__}.default_params is None; define it or return "
                "(env, params) from the factory",
            )
    return env, params


def make(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build an environment and its default params from a registered name, an import path
    `package.module:factory` or an installed `jaxlearn.envs` entry point.

    Raises:
        EnvError: (a `ConfigError`, so a `ValueError`) when `name` resolves to nothing, its
            module or attribute is missing, an imported factory raised, or it returned
            something other than a gymnax-style env; for an unknown name the message lists
            every registered name.
        TypeError: when the factory does not accept `kwargs`.
    """
    factory, kind = _resolve(name)
    if kind == "gymnax":
        return factory(**kwargs)
    if kind == "registered":
        return check_env(name, factory(**kwargs))
    try:
        out = factory(**kwargs)
    except TypeError:
        if kwargs:  # most likely the kwargs: the caller reports them (env_kwargs)
            raise
        raise EnvError(name, _raised(name, sys.exc_info()[1])) from None
    except Exception as e:
        raise EnvError(name, _raised(name, e)) from e
    return check_env(name, out)


def _raised(name: str, e: BaseException) -> str:
    return f"calling the factory {name} raised {type(e).__name__}: {e}"


def make_vec(
    name: str,
    num_envs: int,
    *,
    normalize_observations: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    reward_clip: float | None = None,
    obs_mask: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The standard training stack: `EpisodeStats` -> `VecEnv` -> optional normalisation.

    Returns `(env, params)`; `env.reset(key, params)` gives observations `[num_envs, ...]`
    and `info` carries `episode_return`/`episode_length`/`episode_done` of the raw reward.
    """
    from jaxlearn.envs import wrappers as w

    env, params = make(name, **kwargs)
    if obs_mask is not None:  # components kept (jaxlearn.envs.masking), innermost
        from jaxlearn.envs.masking import MaskObservation

        env = MaskObservation(env, obs_mask)
    env = w.VecEnv(w.EpisodeStats(env), num_envs)
    if normalize_observations:
        env = w.NormalizeObservation(env)
    if normalize_rewards:
        env = w.ScaleReward(env, gamma=gamma)
    if reward_clip is not None:
        env = w.ClipReward(env, -reward_clip, reward_clip)
    return env, params


def _register_task_envs() -> None:
    """jaxlearn's own task envs (imported lazily so `make` stays cheap)."""

    def navigation(dim):
        def factory(**kwargs):
            from jaxlearn.envs.navigation import Navigation

            return Navigation(dim=dim, **kwargs)

        return factory

    def exploration(**kwargs):
        from jaxlearn.envs.exploration import Exploration

        return Exploration(**kwargs)

    def cooperative(**kwargs):
        from jaxlearn.envs.cooperative import Cooperative

        return Cooperative(**kwargs)

    _REGISTRY["Navigation2D-v0"] = navigation(2)
    _REGISTRY["Navigation3D-v0"] = navigation(3)
    _REGISTRY["Exploration-v0"] = exploration
    _REGISTRY["Cooperative-v0"] = cooperative


_register_task_envs()
