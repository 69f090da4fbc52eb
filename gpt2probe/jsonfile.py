"""The one reader of every JSON document gpt2probe reads back: files and JSON metadata entries.

A file we wrote is trusted no more than user input: a run killed mid-write, a full disk, an
edit or a copy cut short can leave it truncated, not UTF-8, not JSON, or JSON of another
shape. Each of these becomes one :class:`~gpt2probe.errors.DamagedFileError` (or the caller's
subclass of :class:`~gpt2probe.errors.GPT2ProbeError`) naming the file, the entry inside it,
what was found, and what to do (re-run, or delete the directory), never a ``KeyError`` or a
``json.JSONDecodeError`` from deep inside.

Callers read entries through :class:`JsonObject`, whose :meth:`JsonObject.get` checks the
key is there and the value has the type asked for (``bool`` is never taken for ``int``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .errors import DamagedFileError, GPT2ProbeError, MissingFileError

Kind = type | tuple[type, ...]


def _kinds(kind: Kind) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: Kind) -> str:
    return " or ".join({type(None): "null", dict: "object", list: "list", str: "string", int: "integer",
                        float: "number", bool: "boolean"}.get(k, k.__name__) for k in _kinds(kind))


def _has_kind(value: object, kind: Kind) -> bool:
    kinds = _kinds(kind)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return False  # json accepts NaN and Infinity; no entry of ours may be one
    return isinstance(value, kinds)


@dataclass(frozen=True)
class JsonObject:
    """A JSON object read from ``where`` (at ``path`` inside it), whose entries are checked as they are read.

    ``fix`` is what the user should do when the document is damaged; ``error`` the class raised.
    """

    value: dict[str, Any]
    where: str
    fix: str
    error: type[GPT2ProbeError] = DamagedFileError
    path: str = ""

    def fail(self, problem: str) -> NoReturn:
        """Raise ``error`` naming the file and ``problem``."""
        raise self.error(f"{self.where!r} is damaged: {problem}. {self.fix}")

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def __contains__(self, key: str) -> bool:
        return key in self.value

    def get(self, key: str, kind: Kind, *, items: Kind | None = None) -> Any:
        """Entry ``key``, which must exist and be of ``kind`` (a list's elements of ``items``)."""
        if key not in self.value:
            self.fail(f"the entry {self._at(key)!r} is missing (it has {sorted(self.value)[:12]})")
        value = self.value[key]
        if not _has_kind(value, kind):
            self.fail(f"the entry {self._at(key)!r} should be {_kind_name(kind)}, got {json.dumps(value)[:80]}")
        if items is not None:
            for i, item in enumerate(value):
                if not _has_kind(item, items):
                    self.fail(f"{self._at(key)}[{i}] should be {_kind_name(items)}, got {json.dumps(item)[:80]}")
        return value

    def optional(self, key: str, kind: Kind, default: Any = None) -> Any:
        """Entry ``key`` of ``kind`` if present, else ``default``."""
        return self.get(key, kind) if key in self.value else default

    def object(self, key: str) -> JsonObject:
        """Entry ``key``, which must be an object, as a checked :class:`JsonObject`."""
        return JsonObject(self.get(key, dict), self.where, self.fix, self.error, self._at(key))

    def objects(self, key: str) -> list[JsonObject]:
        """Entry ``key``, which must be a list of objects."""
        return [JsonObject(v, self.where, self.fix, self.error, f"{self._at(key)}[{i}]")
                for i, v in enumerate(self.get(key, list, items=dict))]


def _damaged(where: str, path: str, problem: str, fix: str, error: type[GPT2ProbeError]) -> GPT2ProbeError:
    subject = f"{path} " if path else "it "
    return error(f"{where!r} is damaged: {subject}{problem}. {fix}")


def parse_value(text: str | bytes, *, where: str, fix: str, error: type[GPT2ProbeError] = DamagedFileError,
                path: str = "") -> Any:
    """Any JSON value in ``text`` (a file's contents, or a JSON metadata entry ``path`` of ``where``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _damaged(where, path, f"is not UTF-8 text ({e.reason} at byte {e.start})", fix, error) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        cut = " (truncated?)" if e.pos >= len(text.rstrip()) else ""
        raise _damaged(where, path, f"is not valid JSON{cut} ({e.msg} at line {e.lineno} column {e.colno})",
                       fix, error) from None
    except RecursionError:
        raise _damaged(where, path, "is JSON nested too deeply", fix, error) from None


def check_kind(value: Any, kind: Kind, *, where: str, fix: str, error: type[GPT2ProbeError] = DamagedFileError,
               path: str = "") -> Any:
    """``value`` if it is of ``kind`` (``bool`` is not an ``int``; NaN and infinities are no number), else an error."""
    if not _has_kind(value, kind):
        raise _damaged(where, path, f"should be {_kind_name(kind)}, got {json.dumps(value)[:80]}", fix, error)
    return value


def parse_object(text: str | bytes, *, where: str, fix: str, error: type[GPT2ProbeError] = DamagedFileError,
                 path: str = "", keys: str = "") -> JsonObject:
    """``text`` (a file's contents, or the JSON metadata entry ``path`` of ``where``) as a JSON object.

    ``keys`` prefixes the entries' names in errors (``"progress"`` gives ``'progress.window' is missing``).
    """
    value = parse_value(text, where=where, fix=fix, error=error, path=path)
    return JsonObject(check_kind(value, dict, where=where, fix=fix, error=error, path=path), where, fix, error, keys)


def read_object(path: str | os.PathLike, *, fix: str, error: type[GPT2ProbeError] = DamagedFileError,
                unreadable: type[GPT2ProbeError] | None = None) -> JsonObject:
    """The JSON object in the file ``path``.

    Args:
        fix: what the user should do if the file is damaged (e.g. "re-run the harvest into a new directory").
        error: the class raised for a damaged file (a :class:`~gpt2probe.errors.GPT2ProbeError`).
        unreadable: the class raised when the file cannot be read at all (missing, a directory,
            no permission); ``error`` by default, :class:`MissingFileError` for a missing file.

    Example:
        >>> meta = read_object(directory / "tuned_lens.json", fix="train the lens again")  # doctest: +SKIP
        >>> meta.get("stream_names", list, items=str)  # doctest: +SKIP
    """
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise (unreadable or MissingFileError)(f"no such file: {where!r}. {fix}") from None
    except IsADirectoryError:
        raise (unreadable or error)(f"{where!r} is a directory, not a JSON file. {fix}") from None
    except OSError as e:
        raise (unreadable or error)(f"cannot read {where!r}: {e.strerror or e}") from None
    return parse_object(data, where=where, fix=fix, error=error)
