"""One error family: everything gpt2probe raises on purpose is a GPT2ProbeError that is also the matching built-in."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import gpt2probe
from gpt2probe import errors

PACKAGE = Path(gpt2probe.__file__).parent
# Errors only: SystemExit and KeyboardInterrupt (BaseException, not Exception) are how a signal unwinds.
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, Exception)}
# Raised for subclasses to override, never for a user's input.
ALLOWED = {("hooks.py", "NotImplementedError"), ("__init__.py", "AttributeError")}  # PEP 562 requires AttributeError


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


# Private control flow, raised and caught inside one method, never seen by a caller: GPT2Probe.run_until's
# "stop after this hook", which the harvest and SAE training use instead of raising their own.
PRIVATE_SIGNALS = {"gpt2probe.probe._StopForward"}


def _package_modules() -> list[str]:
    """Every module of the package (``__main__`` left out: importing it runs the command line)."""
    return sorted(m.name for m in pkgutil.walk_packages(gpt2probe.__path__, "gpt2probe.")
                  if not m.name.endswith(".__main__"))


def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined (not merely imported) at the top level of a package module."""
    found = []
    for name in _package_modules():
        module = importlib.import_module(name)
        found += [cls for cls in vars(module).values()
                  if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name
                  and f"{name}.{cls.__qualname__}" not in PRIVATE_SIGNALS]
    return found


def test_the_walk_sees_every_module_and_the_errors():
    names = _package_modules()
    assert {"gpt2probe.errors", "gpt2probe.harvest.summaries", "gpt2probe.experiments.common"} <= set(names)
    assert {cls.__name__ for cls in _exception_classes()} >= {"CorpusError", "NonFiniteActivationError", "UsageError"}


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_class_of_the_package_is_in_the_family_and_exported(cls):
    """Anywhere in the package: ``except gpt2probe.GPT2ProbeError`` catches it and ``gpt2probe.<Name>`` is it."""
    assert issubclass(cls, errors.GPT2ProbeError)
    assert getattr(gpt2probe, cls.__name__, None) is cls and cls.__name__ in gpt2probe.__all__


def test_no_exception_class_is_hidden_inside_a_function():
    """The walk above sees top-level classes only; a class named like an error inside a function would escape it."""
    nested = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        nested += [f"{path}:{node.lineno}: {node.name}" for node in ast.walk(tree)
                   if isinstance(node, ast.ClassDef) and id(node) not in top
                   and any(ast.unparse(base).endswith(("Error", "Exception")) for base in node.bases)]
    assert not nested, "define exception classes at module level (in gpt2probe/errors.py):\n" + "\n".join(nested)


def test_one_class_per_meaning():
    """The harvest's errors are the package's: ``except gpt2probe.CorpusError`` catches a bad harvest corpus."""
    assert gpt2probe.CorpusError is gpt2probe.harvest.CorpusError is errors.CorpusError
    for name in ("HarvestConfigError", "ResumeMismatchError", "OutputDirError"):
        assert getattr(gpt2probe.harvest, name) is getattr(gpt2probe, name) is getattr(errors, name)
    from gpt2probe.experiments.common import UsageError
    from gpt2probe.harvest.summaries import NonFiniteActivationError
    assert UsageError is gpt2probe.UsageError and NonFiniteActivationError is gpt2probe.NonFiniteActivationError
    names = [cls.__name__ for cls in _exception_classes()]
    assert len(names) == len(set(names)), f"two classes share a name: {sorted(names)}"
