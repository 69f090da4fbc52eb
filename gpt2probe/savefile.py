"""Reading and writing gpt2probe's safetensors files (caches, lens results) with checked metadata.

A file is trusted no more than user input: its metadata (JSON strings) is parsed with
errors that name the file and the entry, and each loader checks the metadata against
the tensors before building anything. Metadata a user adds cannot replace the entries
gpt2probe reads back.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import validate
from .errors import DamagedFileError, FileFormatError, InvalidArgumentError, InvalidTypeError, MissingFileError
from .jsonfile import check_kind, parse_value

_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Tensor],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (and string ``metadata``) as one safetensors file at ``path``, atomically.

    The format (an 8-byte little-endian header length, a JSON header, then each tensor's bytes)
    is written here rather than by ``safetensors.torch.save_file``, because that function writes
    through a temporary file of its own (``.tmpXXXXXX`` beside the target) which a SIGKILL leaves
    behind at full size; here the only temporary file is :func:`gpt2probe.atomic.atomic_path`'s,
    which the next write removes. Tensors are streamed one at a time (no second copy of the
    whole file in memory), and a full disk is a :class:`~gpt2probe.errors.FileWriteError`
    naming ``path``. Storage shared between tensors is simply written twice.
    """
    from .atomic import atomic_path

    header: dict[str, Any] = {}
    prepared: list[Tensor] = []
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise InvalidTypeError(f"safetensors maps names to tensors; got {name!r} -> {type(tensor).__name__}")
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise InvalidTypeError(f"{name!r} has dtype {tensor.dtype}, which gpt2probe does not save; "
                                   f"valid: {', '.join(map(str, _SAFETENSORS_DTYPES))}")
        t = tensor.detach().to("cpu").contiguous()
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        prepared.append(t)
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in prepared:
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
    return Path(path)


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
    target = validate.device("device", device)  # before the file: a bad device is not a damaged file
    if not Path(path).exists():
        raise MissingFileError(f"no such file: {where!r}")
    if Path(path).is_dir():
        raise FileFormatError(f"{where!r} is a directory, not a {what} written by {writer}: give the file's path")
    try:
        with safe_open(where, framework="pt", device=str(target)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != fmt:
                raise FileFormatError(f"{where!r} is not a {what} written by {writer}: its format is "
                                      f"{metadata.get('format')!r}, expected {fmt!r}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as error:
        raise FileFormatError(f"{where!r} is not a complete {what} file written by {writer} (truncated or damaged?): {error}") from None
    except IsADirectoryError:
        raise FileFormatError(f"{where!r} is a directory, not a {what} written by {writer}") from None
    except OSError as error:
        raise FileFormatError(f"cannot read {where!r} as a {what} file: {error.strerror or error}") from None
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
