"""Reading and writing gpt2probe's safetensors files (caches, lens results) with checked metadata.

A file is trusted no more than user input: its metadata (JSON strings) is parsed with
errors that name the file and the entry, and each loader checks the metadata against
the tensors before building anything. Metadata a user adds cannot replace the entries
gpt2probe reads back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import DamagedFileError, FileFormatError, InvalidArgumentError, InvalidTypeError, MissingFileError
from .jsonfile import check_kind, parse_value


def merge_metadata(reserved: Mapping[str, str], extra: Mapping[str, Any]) -> dict[str, str]:
    """``reserved`` plus the user's ``extra`` entries, which must be strings under other keys."""
    clash = sorted(set(extra) & set(reserved))
    if clash:
        raise InvalidArgumentError(
            f"metadata keys {clash} are reserved (gpt2probe writes and reads them: {sorted(reserved)}); "
            "choose other names"
        )
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTypeError(f"metadata must map strings to strings; {key!r} maps to {type(value).__name__}")
    return {**reserved, **extra}


def read(path: str | os.PathLike, *, fmt: str, what: str, writer: str, device: str | torch.device = "cpu"
         ) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The metadata and tensors of a ``what`` file that must have been written by ``writer`` (format ``fmt``)."""
    from safetensors import SafetensorError, safe_open

    where = str(path)
    if not Path(path).exists():
        raise MissingFileError(f"no such file: {where!r}")
    try:
        with safe_open(where, framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != fmt:
                raise FileFormatError(f"{where!r} is not a {what} written by {writer}: its format is "
                                      f"{metadata.get('format')!r}, expected {fmt!r}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as error:
        raise FileFormatError(f"{where!r} is not a complete {what} file written by {writer} (truncated or damaged?): {error}") from None
    except IsADirectoryError:
        raise FileFormatError(f"{where!r} is a directory, not a {what} written by {writer}") from None
    return metadata, tensors


def entry(metadata: Mapping[str, str], key: str, where: str, kind: type | tuple[type, ...], *, parse: bool = True) -> Any:
    """Metadata entry ``key``, parsed as JSON (unless ``parse=False``) and of type ``kind``."""
    fix = "Save it again from its source, or delete the file."
    if key not in metadata:
        raise DamagedFileError(f"{where!r} lacks the metadata entry {key!r}. {fix}")
    raw = metadata[key]
    value = parse_value(raw, where=where, fix=fix, path=f"metadata entry {key!r}") if parse else raw
    return check_kind(value, kind, where=where, fix=fix, path=f"metadata entry {key!r}")


def require(condition: bool, where: str, message: str) -> None:
    """Refuse a file whose contents disagree with each other."""
    if not condition:
        raise FileFormatError(f"{where!r}: {message}")
