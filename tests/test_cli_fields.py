"""`train.py --help` lists every config field with its type, default and meaning, generated
from the config dataclasses (`jaxlearn.cli.fields`)."""

import contextlib
import dataclasses
import io
import subprocess
import sys

import pytest

from jaxlearn.algos.dqn.config import DQNConfig
from jaxlearn.algos.fields import data
from jaxlearn.algos.ppo.config import PPOConfig
from jaxlearn.cli import fields
from jaxlearn.cli.train import main, parse_args
from jaxlearn.rundir import RunConfig


@pytest.fixture(scope="module")
def help_text() -> str:
    """What `train.py --help` prints (generated once for this file)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        parse_args(["--help"])
    assert stop.value.code == 0
    return out.getvalue()


def _sections(text: str) -> dict[str, list[str]]:
    """Field lines by section title (the line before them ending in ':')."""
    out, current = {}, None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" ") and "fields (" in line:
            current = line
            out[current] = []
        elif current and line.startswith("  ") and not line.startswith("      "):
            out[current].append(line)
        elif not line.strip():
            current = None
    return out


def test_help_lists_every_field_of_every_config_in_its_section(help_text):
    sections = _sections(help_text)
    expected = {
        "run fields (RunConfig, every --algo):": RunConfig,
        "ppo fields (PPOConfig, --algo ppo):": PPOConfig,
        "dqn fields (DQNConfig, --algo dqn):": DQNConfig,
    }
    assert set(expected) <= set(sections)
    assert [t for t in sections if t in expected] == list(expected)  # the default algo first
    for title, cls in expected.items():
        listed = [line.split(" (", 1)[0].strip() for line in sections[title]]
        assert listed == [f.name for f in dataclasses.fields(cls)], title


def test_help_gives_type_default_and_meaning(help_text):
    text = help_text
    ppo = "\n".join(_sections(text)["ppo fields (PPOConfig, --algo ppo):"])
    run = "\n".join(_sections(text)["run fields (RunConfig, every --algo):"])
    # meanings come from the comment on the field's line
    assert "  total_timesteps (int, default 500000): env steps per seed (over all envs)" in ppo
    assert "  hidden_sizes (tuple[int, ...], default [64, 64])" in ppo
    assert "  learning_rate (float, default 0.00025, data)" in ppo  # declared data(...)
    assert "  anneal_lr (bool, default true): linear decay to 0 over the run" in ppo
    assert "  init_from (str | None, default null): a run folder whose network" in run
    # from EnvConfig's Attributes section (an inherited field)
    assert "  env (str, default CartPole-v1): a registered name or an import path" in ppo


def test_jaxlearn_train_main_prints_the_same_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["-h"])
    assert stop.value.code == 0
    assert "dqn fields (DQNConfig, --algo dqn):" in capsys.readouterr().out


def test_importing_the_train_cli_loads_no_jax():
    # --distributed must initialise JAX before any backend starts: the field reference is
    # loaded only when --help asks for it
    code = "import sys, jaxlearn.cli.train; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@dataclasses.dataclass(frozen=True)
class _Base:
    """A base config.

    Attributes:
        inherited: from the base's Attributes section,
            over two lines.
    """

    inherited: int = 1


@dataclasses.dataclass(frozen=True)
class _Demo(_Base):
    by_metadata: int = dataclasses.field(default=2, metadata={"help": "from metadata"})  # not this
    by_docstring: float = 0.5
    """From the docstring after it.

    Not this paragraph."""
    by_comment: str = "x"  # from the end-of-line comment
    # from the comment block
    # above it
    by_block: bool = True
    nothing: tuple = (1, 2)
    hparam: float = data(0.1)
    hparam_unless: float = data(0.2, static_if="by_block")


def test_each_source_of_a_meaning_is_read_in_order():
    docs = {d.name: d for d in fields.describe(_Demo)}
    assert {n: d.meaning for n, d in docs.items()} == {
        "inherited": "from the base's Attributes section, over two lines.",
        "by_metadata": "from metadata",
        "by_docstring": "From the docstring after it.",
        "by_comment": "from the end-of-line comment",
        "by_block": "from the comment block above it",
        "nothing": None,
        "hparam": None,
        "hparam_unless": None,
    }
    assert docs["by_comment"].default == "x" and docs["by_block"].default == "true"
    assert docs["nothing"].default == "[1, 2]" and docs["nothing"].type == "tuple"
    assert fields.missing_meanings([_Base, _Demo]) == {
        "_Demo": ["nothing", "hparam", "hparam_unless"]
    }


def test_a_field_without_meaning_shows_type_and_default_only():
    lines = fields.section("demo", _Demo).splitlines()
    assert lines[0] == "demo:"
    assert "  nothing (tuple, default [1, 2])" in lines
    assert "  hparam (float, default 0.1, data)" in lines
    assert "  hparam_unless (float, default 0.2, data unless by_block)" in lines
    assert "  by_comment (str, default x): from the end-of-line comment" in lines
    assert all(len(line) <= fields.WIDTH for line in lines)
