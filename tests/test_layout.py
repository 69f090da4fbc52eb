"""The package's shape: no import cycle, and no process-wide tables keyed by ``id()``.

The import graph counts every import statement anywhere in a module (function bodies and
``if TYPE_CHECKING:`` blocks included): a cycle hidden behind a lazy or type-only import is
still two modules that cannot be understood, tested or moved apart. The graph is checked twice:
module by module, and with each sub-package as one node (importing any module of a
sub-package runs its ``__init__`` and everything that re-exports).
"""

from __future__ import annotations

import ast
import re
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


def unit_of(name: str, subpackages: set[str]) -> str:
    """The sub-package directly under the top package that holds module ``name``, else ``name`` itself."""
    top = ".".join(name.split(".")[:2])
    return top if top in subpackages else name


def unit_graph(graph: dict[str, set[str]], subpackages: set[str]) -> dict[str, set[str]]:
    """The import graph with each sub-package (``gpt2probe.report``, ``gpt2probe.lens``...) as one node.

    Importing any module of a sub-package first runs its ``__init__``, which imports what it
    re-exports: ``lens.result`` importing ``report.tables`` ran ``report/__init__``, which
    imports ``report.lens``, which imports ``lens.result``. No two modules formed a cycle, yet
    ``report`` and ``lens`` could not be loaded, understood or moved apart. At this level that
    is the cycle ``report -> lens -> report``.
    """
    units: dict[str, set[str]] = {}
    for name, targets in graph.items():
        unit = unit_of(name, subpackages)
        units.setdefault(unit, set()).update(unit_of(t, subpackages) for t in targets)
    return {unit: targets - {unit} for unit, targets in units.items()}


def subpackages(package: Path = PACKAGE) -> set[str]:
    """The packages directly under the top one (``gpt2probe.lens``, ``gpt2probe.report``...)."""
    return {module_name(p, package) for p in package.glob("*/__init__.py")}


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "gpt2probe.model.hooks" in graph["gpt2probe.probe"]
    assert "gpt2probe.generation" in graph["gpt2probe.probe"]
    assert "gpt2probe.probe" not in graph["gpt2probe.generation"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_unit_graph_sees_a_cycle_through_a_subpackage_init():
    """Two modules that never import each other, in two sub-packages that do: a cycle at the package level."""
    graph = {"p": set(), "p.report": {"p.report.figs"}, "p.report.figs": {"p.lens.result"},
             "p.report.tables": set(), "p.lens": {"p.lens.result"}, "p.lens.result": {"p.report.tables"}}
    assert find_cycle(graph) is None
    assert find_cycle(unit_graph(graph, {"p.report", "p.lens"})) == ["p.lens", "p.report", "p.lens"]
    assert "gpt2probe.report" in subpackages() and "gpt2probe.display" in subpackages()


def test_no_import_cycle_between_subpackages():
    """Every sub-package (and every top-level module) as one node: still no cycle."""
    cycle = find_cycle(unit_graph(import_graph(), subpackages()))
    assert cycle is None, "import cycle between sub-packages: " + " -> ".join(cycle)


def test_display_is_a_leaf():
    """Notebook tables and escaping import nothing of the package, so a result's ``_repr_html_`` loads no figures."""
    graph = import_graph()
    display = {name for name in graph if name == "gpt2probe.display" or name.startswith("gpt2probe.display.")}
    outside = {f"{name} -> {target}" for name in display for target in graph[name] - display}
    assert not outside, f"gpt2probe.display imports other package modules: {sorted(outside)}"
    for name in display:
        tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level}
        assert not {m for m in imported if m.split(".")[0] in ("plotly", "gpt2probe")}, (name, imported)


MODEL_TREE = frozenset({"transformer", "ln_f", "ln_1", "ln_2", "c_attn", "c_fc", "c_proj", "wte", "wpe", "lm_head"})
"""Attributes of Hugging Face's GPT-2 module tree: only ``gpt2probe.model`` may name them."""


def tree_accesses(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, attribute)`` for every ``x.<attr>`` and ``getattr(x, "<attr>")`` of the module tree in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in MODEL_TREE:
            found.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in MODEL_TREE):
            found.append((node.lineno, str(node.args[1].value)))
    return sorted(found)


def test_the_tree_scan_sees_attribute_access_and_getattr():
    tree = ast.parse('w = probe.model.transformer.h[0].ln_1.weight\nm = getattr(model, "lm_head")\n'
                     'name = "transformer.wte"\nlayer = blocks.attn\n')
    assert tree_accesses(tree) == [(1, "ln_1"), (1, "transformer"), (2, "lm_head")]


_TREE_NAMES = "|".join(sorted(MODEL_TREE))
PARAMETER_NAME = re.compile(rf"(?<![\w-])(?:{_TREE_NAMES})\.|\.(?:{_TREE_NAMES})(?!\w)")
"""A module-tree name joined to another by a dot: ``transformer.h.0``, ``lm_head.weight``, ``attn.c_attn``."""


def parameter_names(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` for every string that spells a HF parameter or module name (``"transformer.h."``, ``"ln_1"``).

    A string is one if it is a module-tree name itself or joins one to another name with a dot
    (``\\.`` in a regular expression counts as a dot). Docstrings and other bare string
    statements are prose and not counted; f-strings are, part by part.
    """
    prose = {id(node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value.replace("\\.", ".")
            if text in MODEL_TREE or PARAMETER_NAME.search(text):
                found.append((node.lineno, node.value))
    return sorted(found)


def test_the_name_scan_sees_parameter_names_in_strings():
    tree = ast.parse('''"""Reads transformer.h.0 (a docstring: prose)."""
a = "transformer.wte."
b = r"transformer\\.h\\.(\\d+)\\.(ln_1|ln_2)"
c = {"ln_1": "ln1"}
d = f"blocks.{i}.attn.c_proj"
e = "lm_head.weight"
f = "pip install 'gpt2probe[transformer-lens]'"
g = " + ln_f bias "
h = "lm_head is tied to wte, so W_U is W_E.T"
''')
    assert [line for line, _ in parameter_names(tree)] == [2, 3, 4, 5, 6]


def test_only_the_model_package_reaches_into_the_module_tree():
    """The model seam (issue 23): ``.transformer``, ``ln_f``, ``c_attn``... are read in ``gpt2probe/model/`` only.

    Everything else asks :mod:`gpt2probe.model` (the weights view, its LayerNorm, the module
    accessors, the parameter names) or the probe (``run_until``, ``decode_step``), so a change
    of the tree is made once. That covers attribute access (``model.transformer.h``), ``getattr``
    with a tree name, and strings that spell a parameter name (``"transformer.h.0.attn.c_attn.weight"``,
    which ``named_parameters`` and state dicts use).
    """
    offenders = []
    for name, path in modules().items():
        if name == "gpt2probe.model" or name.startswith("gpt2probe.model."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(PACKAGE.parent)
        offenders += [f"{where}:{line}: .{attr}" for line, attr in tree_accesses(tree)]
        offenders += [f"{where}:{line}: {text!r}" for line, text in parameter_names(tree)]
    assert not offenders, "ask gpt2probe.model instead of reaching into the HF module tree:\n" + "\n".join(offenders)


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


def test_the_package_ships_its_types():
    """PEP 561: ``py.typed`` tells users' type checkers to read gpt2probe's annotations; it must be package data."""
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"py.typed"' in package_data, package_data
