"""Search uses only elaborate's public API, and its modules import each other acyclically."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import resdsl.search
from resdsl.elaborate import Elaborator

SEARCH = Path(resdsl.search.__file__).parent
MODULES = sorted(SEARCH.glob("*.py"))
# private methods and attributes of the elaborator: search must use the public hooks instead
PRIVATE = {n for n in dir(Elaborator) if n.startswith("_") and not n.startswith("__")}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every ``from ... import`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ["resdsl", "search"][: 2 - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_search_imports_no_private_names_of_elaborate(path):
    for module, names in _imports(path):
        if module == "resdsl.elaborate" or module.startswith("resdsl.elaborate."):
            assert module == "resdsl.elaborate", f"{path.name} imports {module}: use the package"
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name} imports private names of elaborate: {private}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_search_uses_no_private_member_of_the_elaborator(path):
    tree = ast.parse(path.read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    defined = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert not (used & PRIVATE) - defined, f"{path.name} reaches into Elaborator privates"
    if path.name == "counting.py":  # Network's cached layers are set by assignment
        assert "__dict__" not in used


def test_search_modules_import_each_other_without_cycles():
    graph = {p.stem: set() for p in MODULES}
    for path in MODULES:
        for module, names in _imports(path):
            if module == "resdsl.search":
                graph[path.stem] |= {n for n in names if n in graph}
            elif module.startswith("resdsl.search."):
                graph[path.stem].add(module.rsplit(".", 1)[1])
    graph.pop("__init__", None)
    for deps in graph.values():
        deps.discard("__init__")

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, "import cycle: " + " -> ".join((*path, node))
        for dep in sorted(graph.get(node, ())):
            visit(dep, (*path, node))

    for node in graph:
        visit(node, ())
