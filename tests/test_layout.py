"""The package's shape: components never import a recipe (or the demo world), and imports form no cycle.

Every ``import`` counts, including those inside functions (a late import hides a cycle, it does not remove it);
only ``if TYPE_CHECKING:`` imports, which never run, do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flamingo_vlm

PACKAGE = Path(flamingo_vlm.__file__).parent
ENTRY_POINTS = {"flamingo_vlm.cli", "flamingo_vlm.__main__"}  # they list the recipes to the command line


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node, except under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imports() -> dict[str, set[str]]:
    """``{module: flamingo_vlm modules it imports}``; ``from pkg import name`` counts as ``pkg.name`` if a module."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}  # fmt: skip
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_component_imports_a_recipe_or_the_world() -> None:
    graph = imports()
    for module, imported in graph.items():
        if module in ENTRY_POINTS or module.startswith("flamingo_vlm.recipes"):
            continue
        assert not {m for m in imported if m.startswith("flamingo_vlm.recipes")}, module
        if not module.startswith("flamingo_vlm.world"):
            assert not {m for m in imported if m.startswith("flamingo_vlm.world")}, module


def test_imports_form_no_cycle() -> None:
    graph = imports()
    # a package's __init__ re-exports its modules; importing the package then is importing them, not a cycle back
    edges = {m: {i for i in imported if not m.startswith(i + ".")} for m, imported in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
