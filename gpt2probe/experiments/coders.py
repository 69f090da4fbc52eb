"""Read an SAE or transcoder folder given on the command line, as the right class."""

from __future__ import annotations

import json
from pathlib import Path

from .common import UsageError


def load_coder(path: Path, option: str = "--sae"):
    """An SAELens folder as a :class:`gpt2probe.SAE`, or as a :class:`gpt2probe.Transcoder` when it writes elsewhere.

    A transcoder is recognised as SAELens saves one: ``hook_name_out`` in ``cfg.json`` (or
    in its ``metadata``), or a ``d_out`` that differs from ``d_in``.
    """
    from ..errors import FileFormatError
    from ..sae import SAE, Transcoder

    if not path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is not a directory (an SAE folder holds cfg.json and "
                         "sae_weights.safetensors)")
    cfg = path / "cfg.json"
    if not cfg.is_file():
        inside = sorted(p.name for p in path.iterdir() if (p / "cfg.json").is_file())
        if inside:  # a folder of coders (such as a shipped model's saes/): say which to pass
            shown = ", ".join(inside[:4]) + (f" and {len(inside) - 4} more" if len(inside) > 4 else "")
            raise UsageError(f"{option} {str(path)!r} is a folder of {len(inside)} coder folders ({shown}), not one; "
                             f"pass the ones you mean, e.g. {option} {str(path / inside[0])!r}")
        raise UsageError(f"{option} {str(path)!r} has no cfg.json: an SAE or transcoder folder holds cfg.json and "
                         "sae_weights.safetensors (SAELens's format, as gpt2probe sae train writes it)")
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{str(cfg)!r} is not valid JSON ({error}); the folder is damaged") from None
    if not isinstance(meta, dict):
        raise FileFormatError(f"{str(cfg)!r} holds {type(meta).__name__}, not a JSON object of settings")
    metadata = meta.get("metadata")
    inner: dict = metadata if isinstance(metadata, dict) else {}
    transcoder = bool(meta.get("hook_name_out") or inner.get("hook_name_out")
                      or meta.get("d_out", meta.get("d_in")) != meta.get("d_in"))
    return (Transcoder if transcoder else SAE).load(path)
