"""Imports among jaxlearn's modules, read from the source (module-level and function-level
imports alike): the run side (run folder, checkpoints, runner, export, transfer) has no
cycle, the checkpoint storage layer imports nothing of jaxlearn, and none of these modules
hides an import inside a function."""

import ast
import os

import pytest

PKG_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jaxlearn"))
RUN_SIDE = [
    "jaxlearn.checkpoint",
    "jaxlearn.rundir",
    "jaxlearn.runner",
    "jaxlearn.export",
    "jaxlearn.transfer",
]


def _modules() -> dict[str, str]:
    """Module name -> file, for every .py file under jaxlearn/ (packages by their name)."""
    out = {}
    base = os.path.dirname(PKG_DIR)
    for d, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported jaxlearn module, inside a function?) for every import in `name`'s file."""
    path = MODULES[name]
    tree = ast.parse(open(path).read())
    is_pkg = path.endswith("__init__.py")
    found = []

    def resolve(target: str) -> str | None:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[: len(parts) - (child.level - 1)]
                    mod = ".".join(parts + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                # `from a import b`: the submodule a.b when there is one, else a itself
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in child.names
                ]
            for t in targets:
                m = resolve(t)
                if m is not None and m != name:
                    found.append((m, inner))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {m: {t for t, _ in _imports(m)} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_cycles_of_any_length():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_sees_every_module_and_function_level_imports():
    assert {"jaxlearn.rundir", "jaxlearn.algos.ppo.train", "jaxlearn.envs"} <= set(MODULES)
    assert "jaxlearn.rundir" in GRAPH["jaxlearn.runner"]
    assert "jaxlearn.checkpoint" in GRAPH["jaxlearn.rundir"]
    # envs/registry.py imports its wrappers inside a function: the walk sees it
    assert ("jaxlearn.envs.wrappers", True) in _imports("jaxlearn.envs.registry")


@pytest.mark.parametrize("module", RUN_SIDE)
def test_no_run_side_module_imports_one_that_imports_it_back(module):
    cycles = [c for c in _cycles(GRAPH) if module in c]
    assert cycles == [], f"{module} is in an import cycle: {cycles}"


def test_the_checkpoint_storage_layer_imports_nothing_of_jaxlearn():
    package = [
        m for m in MODULES if m == "jaxlearn.checkpoint" or m.startswith("jaxlearn.checkpoint.")
    ]
    assert [(m, t) for m in package for t, _ in _imports(m) if t not in package] == []


@pytest.mark.parametrize("module", RUN_SIDE)
def test_run_side_modules_import_jaxlearn_at_module_level_only(module):
    hidden = sorted(m for m, inner in _imports(module) if inner)
    assert hidden == [], f"{module} imports {hidden} inside functions"


def test_no_module_of_the_package_is_in_an_import_cycle():
    assert _cycles(GRAPH) == []
