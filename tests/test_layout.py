"""The package's shape: no import cycle, and no process-wide tables keyed by ``id()``.

The import graph counts every import statement anywhere in a module (function bodies and
``if TYPE_CHECKING:`` blocks included): a cycle hidden behind a lazy or type-only import is
still two modules that cannot be understood, tested or moved apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gpt2probe"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports.

    ``from .x import y`` is an edge to ``pkg.x.y`` when that is a module, else to ``pkg.x``
    (the module that defines ``y``); ``from . import y`` likewise to ``pkg.y`` or ``pkg``.
    """
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return {m for m in found if m in known and m != name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "gpt2probe.hooks" in graph["gpt2probe.probe"]
    assert "gpt2probe.generation" in graph["gpt2probe.probe"]
    assert "gpt2probe.probe" not in graph["gpt2probe.generation"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _keyed_by_id(node: ast.AST) -> bool:
    """A dict display or comprehension with ``id(...)`` keys, or a subscript ``table[id(...)]``."""
    def is_id_call(n: ast.AST | None) -> bool:
        return isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "id"

    if isinstance(node, ast.Dict):
        return any(is_id_call(k) for k in node.keys)
    if isinstance(node, ast.DictComp):
        return is_id_call(node.key)
    if isinstance(node, ast.Subscript):
        return is_id_call(node.slice)
    return False


def test_no_table_keyed_by_id():
    """Process-wide (or any) tables keyed by ``id()`` confuse objects that die and are replaced at the same address."""
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _keyed_by_id(node) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "pop", "setdefault") and node.args and _is_id(node.args[0])
            ):  # fmt: skip
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"tables keyed by id(): {offenders}"


def _is_id(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id"
