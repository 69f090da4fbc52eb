"""Load and save SAEs and transcoders: pick the file format, build the module, fill its parameters.

Formats read: SAELens 6's folders (:mod:`.saelens_format`) and Dunefsky et al.'s GPT-2
transcoder files (:mod:`.dunefsky_format`). Written: SAELens 6's folders, which SAELens's
``SAE.load_from_disk`` reads back to the same numbers.

The functions take the class to build (``SAE`` or ``Transcoder``) as an argument, so this
module needs nothing from :mod:`.coder` and the classes' ``load``/``save`` call into it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .. import validate
from ..errors import InvalidArgumentError, MissingFileError
from .config import SAEConfig
from .dunefsky_format import read_dunefsky
from .saelens_format import CFG_FILE, WEIGHTS_FILE, config_from_saelens, read_sae_cfg_json, read_weights, write_folder

T = TypeVar("T", bound=nn.Module)
_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPE_NAMES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[dtype]


def read_any(path: str | os.PathLike) -> tuple[SAEConfig, dict[str, torch.Tensor], str]:
    """Config, tensors (gpt2probe's layout, CPU) and a description of the format, for a folder or file."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CFG_FILE).is_file():
            cfg = config_from_saelens(read_sae_cfg_json(path / CFG_FILE), path / CFG_FILE)
            return cfg, read_weights(path / WEIGHTS_FILE, cfg), "SAELens"
        held = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in (".pt", ".safetensors"))
        hint = "" if not held else (f"; it holds {len(held)} transcoder file(s) ({', '.join(held[:3])}"
                                    f"{', ...' if len(held) > 3 else ''}): give one file, one transcoder each")
        raise MissingFileError(f"{str(path)!r} has no {CFG_FILE}: expected an SAELens folder ({CFG_FILE} and "
                               f"{WEIGHTS_FILE}) or a Dunefsky et al. transcoder file (.pt){hint}")
    if path.is_file() and path.suffix in (".pt", ".safetensors"):
        cfg, tensors = read_dunefsky(path)
        return cfg, tensors, "Dunefsky et al."
    if path.is_file():
        raise MissingFileError(f"{str(path)!r} is a file; give an SAELens folder ({CFG_FILE} and {WEIGHTS_FILE}) or a "
                               "Dunefsky et al. transcoder .pt file")
    raise MissingFileError(f"no such file or folder: {str(path)!r}")


def build(cls: Callable[[SAEConfig], T], cfg: SAEConfig, tensors: dict[str, torch.Tensor], *,
          device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> T:
    """``cls(cfg)`` with its parameters set to ``tensors``, on ``device`` (CPU by default) in ``dtype`` (the file's by default)."""
    target_dtype = _dtype(dtype) or cfg.dtype
    target_device = validate.device("device", device) or torch.device("cpu")  # a GPU this machine lacks: our error
    cfg = cfg.replace(device=target_device, dtype=target_dtype)
    coder = cls(cfg)
    with torch.no_grad():
        for name, param in coder.named_parameters():
            stored = tensors[name]
            value = stored.to(dtype=target_dtype)
            overflow = torch.isfinite(stored) & ~torch.isfinite(value)  # dtype="float16" on weights beyond 65504
            if bool(overflow.any()):
                raise InvalidArgumentError(f"{name} holds values up to {float(stored[overflow].abs().max()):.4g}, which "
                                           f"{target_dtype} cannot hold (they would become infinite): load it in "
                                           f"{stored.dtype} or a wider dtype")
            param.copy_(value)
    return coder


def load_coder(cls: Callable[[SAEConfig], T], path: str | os.PathLike, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> T:
    """Read ``path`` (any supported format) into a ``cls``."""
    cfg, tensors, _ = read_any(path)
    return build(cls, cfg, tensors, device=device, dtype=dtype)


def save_coder(coder: Any, path: str | os.PathLike) -> Path:
    """Write ``coder`` as an SAELens 6 folder (``cfg.json`` and ``sae_weights.safetensors``)."""
    return write_folder(path, coder.cfg, dict(coder.named_parameters()))
