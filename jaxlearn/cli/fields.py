"""The config-field reference of `train.py --help`, generated from the config dataclasses.

Every field of `RunConfig` and of each algorithm's config (`PPOConfig`, `DQNConfig`, ...)
is listed with its type, its default and a one-line meaning. The meaning is read from the
code, first found of:

1. the field's metadata `help` entry (`dataclasses.field(..., metadata={"help": ...})`);
2. a docstring right after the field (a string statement on the next line);
3. a comment at the end of the field's line;
4. the field's entry in its class docstring's `Attributes:` section;
5. a block of comment lines right above the field.

A field with none of these is listed with its type and default only (`missing_meanings`
names them). Fields declared `data(...)` are marked `data`: hyperparameters that may
differ between a sweep's trials without recompiling.

This module imports no JAX at the top: `--distributed` initialises JAX after parsing the
flags, so the configs are imported only when `--help` asks for them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize

WIDTH = 100
DATA_KEY = "jaxlearn.data"  # the metadata key of `jaxlearn.algos.fields.data(...)`


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One config field as --help shows it."""

    name: str
    type: str
    default: str  # as written on the command line (`--set name=...`) or in YAML
    meaning: str | None
    data: bool | str  # True, or the flag that makes it static when true


def _clean(text: str) -> str:
    return " ".join(text.split())


def _defining_class(cls: type, name: str) -> type:
    """The class in `cls`'s MRO whose own body declares the field `name`."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    return cls


@functools.cache
def _attributes_section(klass: type) -> dict[str, str]:
    """`name: meaning` entries of the `Attributes:` section of `klass`'s own docstring."""
    doc = klass.__dict__.get("__doc__")
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, s in enumerate(lines) if s.strip() == "Attributes:")
    except StopIteration:
        return out
    current, indent = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            current = None
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # the next section, or the end of this one
            break
        m = re.match(r"(\w+)(?: \([^)]*\))?:\s*(.*)", line.strip())
        if m and (indent is None or depth == indent):
            indent, current = depth, m.group(1)
            out[current] = m.group(2)
        elif current is not None:
            out[current] += " " + line.strip()
    return {k: _clean(v) for k, v in out.items()}


@functools.cache
def _source_notes(klass: type) -> dict[str, tuple[str, str]]:
    """Per field declared in `klass`'s body: (where, text) of the note written beside it,
    where is `docstring`, `comment` (end of line) or `above` (comment lines above)."""
    try:
        src = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # defined where no source is kept (e.g. in a REPL)
        return {}
    lines = src.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(src).readline)
        if tok.type == tokenize.COMMENT
    }
    body = ast.parse(src).body[0].body
    out: dict[str, tuple[str, str]] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[name] = ("docstring", _clean(inspect.cleandoc(nxt.value.value).split("\n\n")[0]))
            continue
        end = node.end_lineno
        if end in comments and lines[end - 1].split("#", 1)[0].strip():
            out[name] = ("comment", comments[end])
            continue
        block, j = [], node.lineno - 1
        while j >= 1 and lines[j - 1].strip().startswith("#"):
            block.insert(0, comments.get(j, ""))
            j -= 1
        if block:
            out[name] = ("above", _clean(" ".join(block)))
    return out


def _meaning(cls: type, f: dataclasses.Field) -> str | None:
    if f.metadata.get("help"):
        return _clean(str(f.metadata["help"]))
    klass = _defining_class(cls, f.name)
    where, text = _source_notes(klass).get(f.name, (None, None))
    if where in ("docstring", "comment"):
        return text
    attrs = _attributes_section(klass)
    if f.name in attrs:
        return attrs[f.name]
    return text or None


def _type_name(f: dataclasses.Field) -> str:
    t = f.type
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def describe(cls: type) -> list[FieldDoc]:
    """Every field of the config dataclass `cls`, in declaration order."""
    return [
        FieldDoc(
            name=f.name,
            type=_type_name(f),
            default=_default_text(f),
            meaning=_meaning(cls, f),
            data=f.metadata.get(DATA_KEY) or False,
        )
        for f in dataclasses.fields(cls)
    ]


def missing_meanings(classes: list[type]) -> dict[str, list[str]]:
    """Class name -> the fields no note in the code explains (listed by type and default
    only)."""
    out = {}
    for cls in classes:
        names = [d.name for d in describe(cls) if d.meaning is None]
        if names:
            out[cls.__name__] = names
    return out


def section(title: str, cls: type) -> str:
    """One titled block of field lines: `  name (type, default D[, data]): meaning`."""
    lines = [f"{title}:"]
    for d in describe(cls):
        data = "" if not d.data else ", data" if d.data is True else f", data unless {d.data}"
        head = f"  {d.name} ({d.type}, default {d.default}{data})"
        text = f"{head}: {d.meaning}" if d.meaning else head
        lines += textwrap.wrap(text, WIDTH, subsequent_indent=" " * 6, break_on_hyphens=False) or [
            head
        ]
    return "\n".join(lines)


def help_text(run_config: type, algo_configs: dict[str, type]) -> str:
    """The whole field reference: run fields, then each algorithm's fields."""
    intro = textwrap.fill(
        "config fields: set any of them with --set FIELD=VALUE (repeatable) or in a --config "
        "YAML file (flat: run and algorithm fields side by side); reward_weights.NAME, "
        "env_kwargs.NAME and env_params.NAME set one key of that mapping. 'data' marks a "
        "hyperparameter: it can differ between a sweep's trials without recompiling.",
        WIDTH,
    )
    blocks = [intro, section(f"run fields ({run_config.__name__}, every --algo)", run_config)]
    for algo, cls in algo_configs.items():
        blocks.append(section(f"{algo} fields ({cls.__name__}, --algo {algo})", cls))
    return "\n\n".join(blocks)


def config_classes() -> tuple[type, dict[str, type]]:
    """(RunConfig, {algo name: its config class}) as the library defines them."""
    # imported here, not at the top: they load the envs, which start JAX's backend, and
    # `train.py --distributed` must initialise JAX before that
    from jaxlearn import algos
    from jaxlearn.rundir import RunConfig

    # in ALGOS order: the default algo (ppo) first
    return RunConfig, {name: cfg for name, (cfg, _) in algos.ALGOS.items()}


class _KeepLines(argparse.HelpFormatter):
    """Reflows one-paragraph texts (the description) as usual, keeps texts with line breaks
    (the field reference) as they are."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return text
        return super()._fill_text(text, width, indent)


class _HelpWithFields(argparse.Action):
    """-h/--help: the flags, then every config field (loaded only now)."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        run_config, algo_configs = config_classes()
        parser.epilog = help_text(run_config, algo_configs)
        parser.formatter_class = _KeepLines
        parser.print_help(sys.stdout)
        parser.exit()


def add_help(parser: argparse.ArgumentParser) -> None:
    """Give `parser` (made with `add_help=False`) a -h/--help that also lists every config
    field with its type, default and meaning."""
    parser.add_argument(
        "-h",
        "--help",
        action=_HelpWithFields,
        help="show this help, then every config field with its type, default and meaning",
    )


def _dump() -> None:
    run_config, algo_configs = config_classes()
    print(help_text(run_config, algo_configs))
    missing = missing_meanings([run_config, *algo_configs.values()])
    for name, fields in missing.items():
        print(f"# {name}: no meaning written for {', '.join(fields)}", file=sys.stderr)


if __name__ == "__main__":  # python -m jaxlearn.cli.fields: the reference, and what it lacks
    _dump()
