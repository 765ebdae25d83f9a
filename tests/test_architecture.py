"""The package's shape, read from its source with `ast`: no import circle among aura_tl's modules, imports inside
functions only where a module defers on purpose, and the gate rule depending on nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import aura_tl

PACKAGE = Path(aura_tl.__file__).resolve().parent
# the command-line shell defers the library until a command runs (argument errors come before torch and
# TransformerLens load); nothing else imports project modules inside functions
DEFERRING = {"aura_tl.cli"}


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["aura_tl", *path.relative_to(PACKAGE).with_suffix("").parts]
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = module_files()


def imports_of(path: Path, *, inside_functions: bool | None = None) -> set[str]:
    """Project modules `path` imports (`from aura_tl.x import y` names aura_tl.x.y when that is a module), at
    module level (False), inside functions (True) or both (None)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = set()
    for node in ast.walk(tree):
        if inside_functions is not None and (id(node) in nested) != inside_functions:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("aura_tl"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("aura_tl")}
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path) - {name} for name, path in MODULES.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_the_modules():
    edges = graph()
    assert len(edges) > 20 and "aura_tl.intervention" in edges["aura_tl.methods._transport"]
    assert circles(edges) == []


def test_imports_inside_functions_only_where_a_module_defers_on_purpose():
    inside = {name: imports_of(path, inside_functions=True) for name, path in MODULES.items()}
    assert inside["aura_tl.cli"], "the check reads function bodies"
    assert {name for name, found in inside.items() if found} <= DEFERRING


def test_the_gate_rule_module_depends_on_nothing_above_it():
    assert imports_of(MODULES["aura_tl.gating"]) <= {"aura_tl.options", "aura_tl.registry"}
    assert imports_of(MODULES["aura_tl.registry"]) == set()
    assert imports_of(MODULES["aura_tl.options"]) == set()
    # the one import that runs back up: an intervention looks its method up in the registry
    up = {name for name in imports_of(MODULES["aura_tl.intervention"]) if name.startswith("aura_tl.methods")}
    assert up == {"aura_tl.methods", "aura_tl.methods.base"}
