"""The project's import graph has no circles, and lower layers never import higher ones.

Read from the source (every import, function-local ones too), so a circle kept loading by
an import inside a function still fails here.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("meshcore", "agents", "infermesh_site", "dashboard", "devtools")

# A lower layer may not import these (it calls hooks they register at app start instead).
LAYERS = {
    "meshcore.writeguard": ("meshcore",),
    "meshcore.kinds": ("meshcore",),
    "meshcore.models": ("meshcore.registry", "meshcore.replication", "meshcore.events", "meshcore.live"),
    "meshcore.replication": ("meshcore.registry", "meshcore.events", "meshcore.live", "meshcore.api"),
    "meshcore.registry": ("meshcore.live", "meshcore.api", "meshcore.admin"),
    "meshcore.live": ("meshcore.api", "meshcore.admin"),
}
LEAVES_MAY_IMPORT = {"meshcore.writeguard": (), "meshcore.kinds": ()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a name imported from a package counts as its submodule if it is one)."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {target for target in targets if target in known and target != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_it_finds_a_circle_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_project_has_no_import_circle(graph):
    # A package's __init__ re-exporting its submodules imports them: that is a face, not a circle.
    without_faces = {
        name: {target for target in targets if not target.startswith(name + ".")} for name, targets in graph.items()
    }
    assert circles(without_faces) == []


@pytest.mark.parametrize("lower", sorted(LAYERS))
def test_a_lower_layer_imports_no_higher_one(graph, lower):
    forbidden = LAYERS[lower]
    offenders = {
        name: sorted(
            target
            for target in targets
            if any(target == f or target.startswith(f + ".") for f in forbidden)
            and not (target == lower or target.startswith(lower + "."))
            and target not in LEAVES_MAY_IMPORT
        )
        for name, targets in graph.items()
        if name == lower or name.startswith(lower + ".")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
