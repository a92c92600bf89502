"""The layout of ARCHITECTURE.md holds: stage packages, no import cycles, imports pointing one way, small modules.

Imports are read with :mod:`ast` (module level and inside functions alike), so a cycle dodged by a function-local
import still counts as a cycle.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from pipeline import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "transforms", "models")
STAGES = ("ingest", "manifest", "train", "infer", "report", "demo")
MAX_MODULE_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its body (a package's ``__init__`` counts as itself)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_another_that_imports_it_back():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("lower", ["transforms", "models"])
def test_lower_layers_import_nothing_from_pipeline_but_its_leaf_modules(lower):
    graph = _graph()
    leaves = {"pipeline", "pipeline.errors", "pipeline.files"}
    assert all(not targets - {"pipeline"} for name, targets in graph.items() if name in leaves)
    wrong = {f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] == lower
             for t in targets if t.startswith("pipeline") and t not in leaves}
    assert wrong == set()


def test_stages_import_only_stages_below_them():
    allowed = {  # ARCHITECTURE.md: who may import which stage
        "ingest": set(), "manifest": set(), "report": {"manifest"}, "train": {"manifest"},
        "infer": {"train", "manifest", "ingest"}, "demo": set(STAGES) - {"demo"},
    }
    wrong = set()
    for module, targets in _graph().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[0] != "pipeline" or parts[1] not in STAGES:
            continue
        for target in targets:
            t = target.split(".")
            if t[0] == "pipeline" and len(t) > 1 and t[1] in STAGES and t[1] != parts[1] \
                    and t[1] not in allowed[parts[1]]:
                wrong.add(f"{module} -> {target}")
    assert wrong == set()


def test_shell_stays_small_and_every_stage_has_a_command_module():
    top = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 12, top
    for stage in STAGES:
        assert (ROOT / "pipeline" / stage / "command.py").is_file(), stage


def test_no_module_is_over_the_size_limit():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}


def test_every_subcommand_maps_to_a_command_module_handler():
    for command in cli.COMMANDS:
        module, _, function = command.handler.partition(":")
        assert module.endswith(".command") or module == "models.catalog", command.name
        assert function == command.name.replace("-", "_") + "_command", command.name
        assert callable(getattr(importlib.import_module(module), function)), command.name
