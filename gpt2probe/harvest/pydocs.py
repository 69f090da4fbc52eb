"""An offline corpus that every Python installation has: its documentation topics and its docstrings.

``write_python_docs(directory)`` writes two JSONL files with the text in field ``"text"``:

- ``topics.jsonl``: ``pydoc_data.topics`` (the language reference topics behind ``help()``),
  sorted by topic name;
- ``docstrings.jsonl``: the module, class and function docstrings of the standard library's
  own ``.py`` files (sorted by path; tests and ``site-packages`` excluded), read with ``ast``,
  so nothing is imported.

Used by the harvest demo, tests and benchmarks: ``gpt2probe harvest --corpus DIR/*.jsonl --field text``.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_path


def topics() -> Iterator[dict]:
    """Python's documentation topics (``pydoc_data.topics``) as JSONL records."""
    import pydoc_data.topics as pydoc_topics

    for name, text in sorted(pydoc_topics.topics.items()):
        yield {"topic": name, "text": text}


def docstrings(max_files: int | None = None) -> Iterator[dict]:
    """Docstrings of the standard library's Python files, in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not {"test", "tests", "site-packages", "idle_test"} & set(p.relative_to(root).parts))
    for path in files[:max_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately broken (lib2to3 test data and the like)
        module = str(path.relative_to(root))
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text:
                    yield {"module": module, "name": getattr(node, "name", ""), "text": text}


def write_python_docs(directory: str | Path, *, max_files: int | None = None, repeat: int = 1,
                      include_topics: bool = True) -> list[Path]:
    """Write ``topics.jsonl`` and ``docstrings.jsonl`` (each ``repeat`` times over) into ``directory``."""
    directory = Path(directory)
    out = []
    sources = [("topics.jsonl", topics)] if include_topics else []
    for name, records in [*sources, ("docstrings.jsonl", lambda: docstrings(max_files))]:
        path = directory / name
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for _ in range(repeat):
                for record in records():
                    f.write(json.dumps(record) + "\n")
        out.append(path)
    return out
