"""SAEs and transcoders that ship with a model: ``gpt2probe.load_saes("tiny-english")``, ``load_transcoders``.

Layout inside a model's directory (a shipped model's, or any ``save_pretrained`` folder)::

    saes/<hook name>/cfg.json, sae_weights.safetensors           e.g. saes/blocks.2.hook_resid_post/
    transcoders/<hook written>/cfg.json, sae_weights.safetensors  e.g. transcoders/blocks.2.hook_mlp_out/
    saes/metrics.json, transcoders/metrics.json                   how they were trained and how good they are

Each folder is SAELens 6's format (:meth:`gpt2probe.SAE.load` reads it, and so does SAELens's
``SAE.load_from_disk``). ``tools/train_tiny_english_saes.py`` writes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch

from .. import names as N
from ..errors import FileFormatError, WeightsUnavailableError
from ..shipped import NOTES, shipped_model
from .coder import SAE, SparseCoder, Transcoder
from .saelens_format import CFG_FILE

SAES, TRANSCODERS = "saes", "transcoders"
MAKE = "python tools/train_tiny_english_saes.py --model {model} --out {model}"


def _model_dir(model: str | os.PathLike) -> tuple[Path, str]:
    """The model's directory and a name for messages: a shipped model's name, or a directory."""
    if isinstance(model, str) and model in NOTES:
        return shipped_model(model), model
    path = Path(model).expanduser()
    if not path.is_dir():
        raise WeightsUnavailableError(f"{str(model)!r} is neither a shipped model ({', '.join(NOTES)}) nor a directory")
    return path, str(path)


def _ships(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _folders(model: str | os.PathLike, kind: str) -> tuple[list[Path], str]:
    directory, name = _model_dir(model)
    root = directory / kind
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / CFG_FILE).is_file()) if root.is_dir() else []
    if not folders:
        others = _ships(directory)
        raise WeightsUnavailableError(
            f"{name} ships no {kind} (no {kind}/<hook>/{CFG_FILE} in {str(directory)!r}); it ships: "
            f"{', '.join(others) or 'weights only'}. Train them with `gpt2probe sae train`, or for tiny-english with "
            f"`{MAKE.format(model=directory)}`"
        )
    return folders, name


def _load_all(cls: type[SparseCoder], model, kind: str, device, dtype) -> list[tuple[Path, SparseCoder]]:
    folders, name = _folders(model, kind)
    coders = []
    for folder in folders:
        coder = cls.load(folder, device=device, dtype=dtype)
        if coder.cfg.is_transcoder != (cls is Transcoder):
            raise FileFormatError(f"{str(folder)!r} holds {'a transcoder' if coder.cfg.is_transcoder else 'an SAE'}, "
                                  f"not {'a transcoder' if cls is Transcoder else 'an SAE'} as {kind}/ should")
        coders.append((folder, coder))
    return coders


def load_saes(model: str | os.PathLike = "tiny-english", *, device: str | torch.device | None = None,
              dtype: str | torch.dtype | None = None) -> dict[str, SAE]:
    """The SAEs that ship with ``model``, by the hook they read (in the model's forward order).

    Args:
        model: a shipped model's name (``"tiny-english"``) or a model directory with a ``saes/`` folder.
        device, dtype: where to put them and in which dtype (default: CPU, the files' dtype).

    Returns:
        ``{"blocks.0.hook_resid_post": SAE, ...}``.

    Raises:
        WeightsUnavailableError: the model ships no SAEs (the message names what it ships
            and how to make them).

    Example:
        >>> saes = gpt2probe.load_saes("tiny-english")  # doctest: +SKIP
        >>> logits = probe.run_with_saes("def f(x):", saes=[saes["blocks.2.hook_resid_post"]])  # doctest: +SKIP
    """
    loaded = _load_all(SAE, model, SAES, device, dtype)
    seen: dict[str, str] = {}
    for folder, coder in loaded:  # keyed by hook: a second SAE for a hook would silently replace the first
        hook = coder.cfg.hook_name
        if hook in seen:
            raise FileFormatError(f"{SAES}/ of {model!s} holds two SAEs that read {hook!r} ({seen[hook]}/ and "
                                  f"{folder.name}/): one per hook is expected")
        seen[hook] = folder.name
    coders = [coder for _, coder in loaded]
    order = {n: i for i, n in enumerate(N.all_names(1 + max(c.cfg.layer or 0 for c in coders)))}
    # _load_all(SAE, ...) returns SAEs (a transcoder folder is refused there), so the cast only informs the checker
    return {c.cfg.hook_name: cast(SAE, c) for c in sorted(coders, key=lambda c: order.get(c.cfg.hook_name, len(order)))}


def load_transcoders(model: str | os.PathLike = "tiny-english", *, device: str | torch.device | None = None,
                     dtype: str | torch.dtype | None = None) -> dict[int, Transcoder]:
    """The transcoders that ship with ``model``, by layer (each replaces that block's MLP).

    Args:
        model: a shipped model's name (``"tiny-english"``) or a model directory with a ``transcoders/`` folder.
        device, dtype: where to put them and in which dtype (default: CPU, the files' dtype).

    Returns:
        ``{0: Transcoder, 1: Transcoder, ...}``.

    Raises:
        WeightsUnavailableError: the model ships no transcoders.
        FileFormatError: two transcoders for one layer.

    Example:
        >>> transcoders = gpt2probe.load_transcoders("tiny-english")  # doctest: +SKIP
        >>> transcoders[2].cfg.hook_name_out  # doctest: +SKIP
        'blocks.2.hook_mlp_out'
    """
    out: dict[int, Transcoder] = {}
    for _, coder in _load_all(Transcoder, model, TRANSCODERS, device, dtype):
        layer = N.layer_of(coder.cfg.write_hook)
        if layer is None or layer in out:
            what = "two transcoders for" if layer is not None else "a transcoder without"
            raise FileFormatError(f"{TRANSCODERS}/ of {model!s} holds {what} layer {layer}: one per layer is expected")
        out[layer] = coder  # type: ignore[assignment]
    return dict(sorted(out.items()))
