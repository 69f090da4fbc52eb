"""One error family: everything gpt2probe raises on purpose is a GPT2ProbeError that is also the matching built-in."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

import gpt2probe
from gpt2probe import errors

PACKAGE = Path(gpt2probe.__file__).parent
# Errors only: SystemExit and KeyboardInterrupt (BaseException, not Exception) are how a signal unwinds.
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, Exception)}
# Raised for subclasses to override, never for a user's input.
ALLOWED = {("hooks.py", "NotImplementedError")}


def _builtin_raises(path: Path) -> list[str]:
    """``file:line: raise Name`` for every ``raise`` of a built-in exception class (re-raises pass)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue  # a bare ``raise`` re-raises
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in BUILTIN_EXCEPTIONS and (path.name, exc.id) not in ALLOWED:
            found.append(f"{path}:{node.lineno}: raise {exc.id}")
    return sorted(found, key=lambda hit: int(hit.rsplit(":", 2)[1]))


def test_no_builtin_exception_is_raised_directly():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _builtin_raises(path)]
    assert not offenders, "raise a gpt2probe.errors class instead:\n" + "\n".join(offenders)


def test_the_scan_sees_a_builtin_raise(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    if x:\n        raise ValueError('no')\n    try:\n        x()\n    except OSError as e:\n"
                   "        raise\n    raise KeyError\n", encoding="utf-8")
    assert [h.split(": ", 1)[1] for h in _builtin_raises(bad)] == ["raise ValueError", "raise KeyError"]


ERROR_CLASSES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(cls, errors.GPT2ProbeError) and cls is not errors.GPT2ProbeError]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_ours_and_a_builtin_and_exported(cls):
    assert issubclass(cls, errors.GPT2ProbeError)
    assert any(base.__module__ == "builtins" and base is not Exception for base in cls.__mro__[1:])
    assert getattr(gpt2probe, cls.__name__) is cls and cls.__name__ in gpt2probe.__all__
    assert cls.__doc__
