"""Check a GPT-2 checkpoint's files against its own config before any weight is loaded.

Hugging Face fills a tensor the checkpoint lacks (or has in another shape) with random
values and only prints a report: a ``config.json`` that says 3 layers over 2 layers of
weights would give a model whose last block is noise. Here every tensor the config implies
must be in the files with its shape, and nothing else may be, except what GPT-2 checkpoints
legitimately carry or leave out (the causal-mask buffers and the tied unembedding: HF's
parameter names are :mod:`gpt2probe.model.parameters`'s to know).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .errors import CheckpointError, WeightsUnavailableError
from .jsonfile import read_object
from .model.parameters import TIED_UNEMBED, is_mask_buffer, model_keys

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
"""Safetensors dtypes a weight may have (a checkpoint's other tensors are refused before loading)."""
_SHOWN = 8


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (through :mod:`gpt2probe.jsonfile`), or an error naming the file."""
    return read_object(path, fix="Fix or replace the checkpoint's file (save_pretrained writes it).",
                       error=CheckpointError, unreadable=WeightsUnavailableError).value


def file_shapes(directory: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Every tensor's name, shape and file in a directory's safetensors (single file or sharded index)."""
    from safetensors import SafetensorError, safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{str(index)!r} has no 'weight_map' object")
        files = sorted({directory / str(name) for name in weight_map.values()})
    else:
        files = [directory / "model.safetensors"]
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"the checkpoint names {file.name!r} but {str(file)!r} does not exist")
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    part = f.get_slice(key)
                    if part.get_dtype() not in FLOAT_DTYPES and not is_mask_buffer(key):
                        # an int32 wte.weight would be cast to float on load, silently
                        raise CheckpointError(f"{str(file)!r}: {key!r} is stored as {part.get_dtype()}; GPT-2's weights "
                                              f"are floating point ({', '.join(FLOAT_DTYPES)}): fix or re-save the checkpoint")
                    shapes[key] = (tuple(part.get_shape()), file)
        except SafetensorError as error:
            raise CheckpointError(f"{str(file)!r} is not a complete safetensors file (truncated or damaged?): {error}") from None
        except OSError as error:
            raise WeightsUnavailableError(f"cannot read {str(file)!r}: {error.strerror or error}") from None
    return shapes


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """The state dict ``GPT2LMHeadModel(config)`` has, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            model = GPT2LMHeadModel(config)
    except (ValueError, TypeError, AttributeError) as error:  # e.g. n_embd not a multiple of n_head
        raise CheckpointError(f"config.json describes no buildable GPT-2: {error}") from None
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(map(repr, keys[:_SHOWN]))
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def check_tensors(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], *,
                  tied: bool, where: str) -> None:
    """Refuse any missing, unexpected or mis-shaped tensor, naming the keys."""
    renamed = model_keys(found)
    have = {renamed[k]: shape for k, shape in found.items()}
    _refuse_mismatch(
        where,
        missing=[k for k in expected if k not in have and not (tied and k == TIED_UNEMBED)],
        unexpected=[k for k in have if k not in expected and not is_mask_buffer(k)],
        mismatched=[f"{k} {have[k]} (config implies {expected[k]})" for k in expected
                    if k in have and tuple(have[k]) != tuple(expected[k])],
    )


def _refuse_mismatch(where: str, *, missing: list[str], unexpected: list[str], mismatched: list[str],
                     errors: Iterable[object] = ()) -> None:
    """One error naming every missing, unexpected and mis-shaped key, if there is any."""
    problems = [f"{len(keys)} {what}: {_listed(keys)}" for keys, what in (
        (missing, "tensor(s) the config implies are missing"),
        (unexpected, "tensor(s) GPT-2 does not have"),
        (mismatched, "tensor(s) have the wrong shape"),
    ) if keys] + [str(e) for e in list(errors)[:_SHOWN]]
    if problems:
        raise CheckpointError(
            f"{where}: the weights do not match config.json ({'; '.join(problems)}). Loading would fill the "
            "gaps with random values; fix the config or the weights"
        )


def check_directory(directory: Path, config: GPT2Config) -> None:
    """Check a ``save_pretrained`` directory's safetensors against ``config`` without loading them."""
    found = {key: shape for key, (shape, _) in file_shapes(directory).items()}
    check_tensors(found, expected_shapes(config), tied=bool(config.tie_word_embeddings), where=repr(str(directory)))


def check_loading_info(info: Mapping[str, Any], *, tied: bool, where: str) -> None:
    """The same rules applied to what ``from_pretrained(..., output_loading_info=True)`` reports (hub, pickle)."""
    _refuse_mismatch(
        where,
        missing=[k for k in info.get("missing_keys", ()) if not (tied and k == TIED_UNEMBED)],
        unexpected=[k for k in info.get("unexpected_keys", ()) if not is_mask_buffer(k)],
        mismatched=[str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())],
        errors=info.get("error_msgs", ()),
    )
