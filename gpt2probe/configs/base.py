"""Config dataclasses whose fields carry their own help: keyword arguments, argparse flags and JSON from one list.

Declare a field with :func:`setting`::

    @dataclass(frozen=True)
    class HarvestConfig:
        top_k: int = setting(20, "max-activating examples kept per unit", flag="--examples")

and :func:`add_arguments` adds ``--examples`` (type, default and help from the field) to a
parser, :func:`from_args` builds the config from the parsed namespace, :func:`to_dict` gives
the JSON to save, :func:`from_dict` reads it back (keys a newer version added are refused by
name; keys missing from an older file take their defaults).

A field renamed in this release is listed in the class's ``RENAMED_FIELDS`` (old name -> new):
:func:`from_dict` reads an old file's key under its new name, and :func:`build` still takes the
old keyword for one release, with a ``DeprecationWarning`` naming the new one.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from ..errors import InvalidArgumentError


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def setting(default: Any, help: str, *, flag: str | None = None, cli: bool = True, default_text: str | None = None,
            **argparse_settings: Any) -> Any:
    """A config field: its default, what it means (the help text) and how the command line spells it.

    Args:
        flag: the option's spelling (default: ``--`` and the field name with dashes).
        cli: ``False`` for a setting only Python callers change.
        default_text: how ``--help`` states the default, when the value itself would mislead
            (``None`` meaning "the model's context, at most 128").
        argparse_settings: ``type``, ``nargs``, ``metavar``, ``choices`` (the type defaults to
            :func:`positive_int` for an integer default, :func:`finite_float` for a float).
    """
    metadata = {"help": help, "flag": flag, "cli": cli, "default_text": default_text, "argparse": argparse_settings}
    if isinstance(default, (list, dict, set)):
        raise InvalidArgumentError("a mutable default would be shared between configs; use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    """The command-line spelling of a config field."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help") is not None and f.metadata.get("cli", True)]


def add_arguments(cls: type, parser: argparse.ArgumentParser | argparse._ActionsContainer, *,
                  shared: Mapping[str, Any] = {},  # noqa: B006 (read only)
                  add_shared: Callable[..., argparse.Action] | None = None) -> None:
    """Add one option per field of ``cls`` to ``parser``, storing into the field's name.

    A flag in ``shared`` (the command line's common vocabulary) is added through
    ``add_shared(parser, flag, detail, **settings)``, so its help text starts with the shared meaning.
    """
    for field in cli_fields(cls):
        flag, default = flag_of(field), field.default
        settings = dict(field.metadata["argparse"])
        if isinstance(default, bool):
            settings.setdefault("action", "store_false" if default else "store_true")
        elif "type" not in settings and "nargs" not in settings:
            if isinstance(default, int):
                settings["type"] = positive_int
            elif isinstance(default, float):
                settings["type"] = finite_float
        if isinstance(default, tuple):
            default = list(default)
        shown = field.metadata.get("default_text")
        if shown is None and default is not None and not isinstance(default, bool) and default != []:
            shown = str(default)
        detail = field.metadata["help"] + (f" (default: {shown})" if shown else "")
        if flag in shared and add_shared is not None:
            add_shared(parser, flag, detail, dest=field.name, default=default, **settings)
        else:
            parser.add_argument(flag, dest=field.name, default=default, help=detail, **settings)


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config the parsed ``args`` describe (``overrides`` for settings that are not flags)."""
    values = {f.name: getattr(args, f.name) for f in cli_fields(cls)}
    return build(cls, {**values, **overrides})


def renamed_fields(cls: type) -> dict[str, str]:
    """Old name -> new name of the fields of ``cls`` renamed in this release (its ``RENAMED_FIELDS``)."""
    return dict(getattr(cls, "RENAMED_FIELDS", ()))


def upgrade(cls: type, values: Mapping[str, Any], *, warn: bool) -> dict[str, Any]:
    """``values`` with each renamed field's old key under its new name; both given is refused.

    ``warn``: a caller's keyword (a ``DeprecationWarning`` naming the new name, pointing at the
    first frame outside gpt2probe), not a saved file (read as it is, silently).
    """
    values = dict(values)
    for old, new in renamed_fields(cls).items():
        if old not in values:
            continue
        if new in values:
            raise InvalidArgumentError(f"{cls.__name__}: give {new} only ({old} is its old name), not both")
        if warn:
            warnings.warn(f"{cls.__name__}'s {old} is now {new}; {old} will stop working in the next release",
                          DeprecationWarning, stacklevel=user_stacklevel(sys._getframe()))
        values[new] = values.pop(old)
    return values


_OWN_MODULES = ("gpt2probe", "jaxtyping", "beartype")


def user_stacklevel(frame: FrameType) -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` called in ``frame`` point at gpt2probe's caller.

    For a warning about the caller's own code (an old keyword). Pass ``sys._getframe()``: the
    frame is given, not found, because the shape checkers of the test run (jaxtyping, beartype)
    wrap this function too; their frames count as gpt2probe's.
    """
    level, current = 2, frame.f_back  # stacklevel 1 is frame itself, 2 its caller
    while current is not None and current.f_globals.get("__name__", "").split(".")[0] in _OWN_MODULES:
        level, current = level + 1, current.f_back
    return level


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls(**values)``, with an unknown name refused by name (and the valid ones listed), lists made tuples.

    A renamed field's old name still works for one release, with a ``DeprecationWarning`` (:func:`upgrade`).
    """
    values = upgrade(cls, values, warn=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InvalidArgumentError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                                   f"for {cls.__name__}; valid: {', '.join(sorted(names))}")
    return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


def to_dict(config: Any) -> dict[str, Any]:
    """The config as JSON-ready values (tuples as lists), every field included."""
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(config)}


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """A config from :func:`to_dict`'s output; fields an older file lacks take their defaults, renamed ones their new name."""
    return build(cls, upgrade(cls, data, warn=False))
