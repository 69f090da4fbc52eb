"""SAELens 6's on-disk format: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

This is what SAELens's ``save_model`` writes and ``SAE.load_from_disk`` reads, and how its
pretrained releases are laid out on the Hugging Face hub (one folder per SAE):

- ``cfg.json``: ``d_in``, ``d_sae``, ``dtype``, ``apply_b_dec_to_input``,
  ``normalize_activations``, ``reshape_activations``, ``architecture`` and its options
  (``k`` and ``rescale_acts_by_decoder_norm`` for top-k, ``d_out`` for transcoders), and a
  ``metadata`` object with ``hook_name`` (``hook_name_out`` for transcoders), ``model_name``
  and the training run's details. Files from SAELens before 6.0 keep ``hook_point`` at the
  top level instead; both are read.
- ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``,
  ``b_dec``, ``threshold`` (JumpReLU) and ``W_skip [d_out, d_in]`` (skip transcoders;
  gpt2probe keeps it as ``[d_in, d_out]``).

Every file problem is a :class:`~gpt2probe.errors.FileFormatError` (or
:class:`~gpt2probe.errors.MissingFileError`) naming the file and what was expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path, write_text_atomic
from ..errors import FileFormatError, GPT2ProbeError, MissingFileError, NonFiniteError
from .config import SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# What gpt2probe writes as metadata["sae_lens_version"]: the format's version (SAELens reads
# files without it as pre-6.0 ones), not a claim about which SAELens wrote the file.
FORMAT_VERSION = "6.0.0"

# SAELens architecture name -> (gpt2probe architecture, is a transcoder, has W_skip)
ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "standard": ("standard", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "batchtopk": ("batchtopk", False, False),
    "transcoder": ("standard", True, False),
    "skip_transcoder": ("standard", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
NO_TOPK_TRANSCODER = ("SAELens's format has no top-k transcoder (its transcoders are standard and JumpReLU, each with "
                      "or without W_skip), and gpt2probe saves coders only in SAELens's format")
"""Why a top-k transcoder cannot be saved: for :func:`config_to_saelens` and ``gpt2probe sae train``'s early check."""

DERIVED_METADATA = ("gpt2probe_architecture", "gpt2probe_k")
"""Metadata gpt2probe writes from the config itself (batch top-k saved as JumpReLU): written afresh on every save."""
# Keys of cfg.json that SparseCoder settings come from; everything else is kept as metadata.
_READ_KEYS = {"d_in", "d_sae", "d_out", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
              "reshape_activations", "architecture", "k", "rescale_acts_by_decoder_norm", "metadata",
              "hook_name", "hook_point", "model_name"}


# -- reading cfg.json ------------------------------------------------------------------------
def read_sae_cfg_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or an error naming the file and what is wrong with it.

    A local stand-in for the package's shared JSON reader (same behaviour: missing file,
    unreadable file, bad UTF-8, bad JSON, or not an object, each named with the path).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{str(path)!r} does not exist") from None
    except UnicodeDecodeError as error:
        raise FileFormatError(f"{str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise MissingFileError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value


def _get(raw: dict[str, Any], key: str, types: type | tuple[type, ...], path: Path, default: Any = ...) -> Any:
    """``raw[key]`` checked against ``types`` (bools are not integers), or ``default`` when absent."""
    if key not in raw or raw[key] is None and default is not ...:
        if default is ...:
            raise FileFormatError(f"{str(path)!r} has no {key!r} (an SAELens cfg.json needs it)")
        return default
    value = raw[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        names = " or ".join(t.__name__ for t in allowed)
        raise FileFormatError(f"{str(path)!r}: {key!r} must be {names}, got {type(value).__name__} {value!r}")
    return value


def _dtype(raw: dict[str, Any], path: Path) -> torch.dtype:
    name = _get(raw, "dtype", str, path, "float32").removeprefix("torch.")
    if name not in _DTYPES:
        raise FileFormatError(f"{str(path)!r}: dtype {name!r} is not one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def config_from_saelens(raw: dict[str, Any], path: Path) -> SAEConfig:
    """An :class:`SAEConfig` from a parsed SAELens ``cfg.json`` (6.x, or the pre-6 layout)."""
    metadata = _get(raw, "metadata", dict, path, {})
    arch_name = _get(raw, "architecture", str, path, "standard")
    if arch_name not in ARCHITECTURES:
        raise FileFormatError(f"{str(path)!r}: architecture {arch_name!r} is not supported; gpt2probe reads "
                              f"{', '.join(ARCHITECTURES)}")
    architecture, is_transcoder, skip = ARCHITECTURES[arch_name]
    if architecture == "jumprelu" and metadata.get("gpt2probe_architecture") == "batchtopk":
        architecture = "batchtopk"  # written by gpt2probe: SAELens keeps batch top-k as JumpReLU
    if _get(raw, "reshape_activations", str, path, "none") != "none":
        raise FileFormatError(f"{str(path)!r}: reshape_activations={raw['reshape_activations']!r} (per-head hook_z "
                              "SAEs) is not supported; gpt2probe splices SAEs on [batch, pos, width] streams")
    hook_name = metadata.get("hook_name") or raw.get("hook_name") or raw.get("hook_point")
    if not isinstance(hook_name, str):
        raise FileFormatError(f"{str(path)!r} names no hook (metadata.hook_name, or hook_point in older files)")
    hook_name_out = metadata.get("hook_name_out") or raw.get("hook_name_out")
    if is_transcoder and not isinstance(hook_name_out, str):
        raise FileFormatError(f"{str(path)!r} is a transcoder ({arch_name!r}) but names no metadata.hook_name_out")
    k: Any = None
    if architecture == "topk":
        k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
        if isinstance(k, bool) or not isinstance(k, int):
            raise FileFormatError(f"{str(path)!r}: a top-k SAE needs an integer 'k', got {k!r}")
    elif architecture == "batchtopk":
        k = metadata.get("gpt2probe_k", raw.get("k"))
    kwargs_of_model = metadata.get("model_from_pretrained_kwargs") or raw.get("model_from_pretrained_kwargs") or {}
    centered = bool(isinstance(kwargs_of_model, dict) and kwargs_of_model.get("center_writing_weights"))
    kept = {key: value for key, value in raw.items() if key not in _READ_KEYS}
    try:
        return SAEConfig(
            d_in=_get(raw, "d_in", int, path),
            d_sae=_get(raw, "d_sae", int, path),
            d_out=_get(raw, "d_out", int, path, None) if is_transcoder else None,
            architecture=architecture,
            hook_name=hook_name,
            hook_name_out=hook_name_out if is_transcoder else None,
            k=k,
            apply_b_dec_to_input=_get(raw, "apply_b_dec_to_input", bool, path, not is_transcoder),
            normalize_activations=_get(raw, "normalize_activations", str, path, "none"),
            rescale_acts_by_decoder_norm=_get(raw, "rescale_acts_by_decoder_norm", bool, path, False),
            skip=skip,
            center_input=centered and not is_transcoder,
            dtype=_dtype(raw, path),
            model_name=metadata.get("model_name") or raw.get("model_name"),
            metadata={**kept, **metadata},
        )
    except GPT2ProbeError as error:
        raise FileFormatError(f"{str(path)!r}: {error}") from None


def config_to_saelens(cfg: SAEConfig) -> dict[str, Any]:
    """``cfg`` as SAELens 6 writes ``cfg.json`` (batch top-k as JumpReLU, as SAELens saves it for inference)."""
    architecture = cfg.architecture
    metadata = {key: value for key, value in cfg.metadata.items() if key not in DERIVED_METADATA}
    metadata.setdefault("sae_lens_version", FORMAT_VERSION)
    metadata.setdefault("sae_lens_training_version", FORMAT_VERSION)
    metadata["hook_name"] = cfg.hook_name
    if cfg.model_name is not None:
        metadata["model_name"] = cfg.model_name
    if cfg.center_input:
        metadata["model_from_pretrained_kwargs"] = {**(metadata.get("model_from_pretrained_kwargs") or {}),
                                                    "center_writing_weights": True}
    if architecture == "batchtopk":
        architecture = "jumprelu"
        metadata["gpt2probe_architecture"] = "batchtopk"
        if cfg.k is not None:
            metadata["gpt2probe_k"] = cfg.k
    raw: dict[str, Any] = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": str(cfg.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if cfg.is_transcoder:
        metadata["hook_name_out"] = cfg.hook_name_out
        raw["d_out"] = cfg.d_out
        architecture = {("standard", False): "transcoder", ("standard", True): "skip_transcoder",
                        ("jumprelu", False): "jumprelu_transcoder",
                        ("jumprelu", True): "jumprelu_skip_transcoder"}.get((architecture, cfg.skip), "")
        if not architecture:
            raise FileFormatError(f"cannot save a {cfg.architecture!r} transcoder: {NO_TOPK_TRANSCODER}. Transcoders "
                                  "that save: architecture 'standard', 'jumprelu', or 'batchtopk' (written as a JumpReLU "
                                  "transcoder with its thresholds, read back as batch top-k); a top-k SAE saves too")
    if architecture == "topk":
        raw["k"] = cfg.k
        raw["rescale_acts_by_decoder_norm"] = cfg.rescale_acts_by_decoder_norm
    raw["architecture"] = architecture
    return raw


# -- weights -----------------------------------------------------------------------------------
def expected_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    """Each tensor SAELens stores for ``cfg``, with its shape in the file (``W_skip`` is ``[d_out, d_in]`` there)."""
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_out), "b_dec": (cfg.d_out,)}
    if cfg.thresholded:
        shapes["threshold"] = (cfg.d_sae,)
    if cfg.skip:
        shapes["W_skip"] = (cfg.d_out, cfg.d_in)
    return shapes


def _non_finite(name: str, tensor: torch.Tensor) -> str | None:
    """What is wrong with a NaN or infinite weight, or ``None``: a ``threshold`` may be ``+inf`` (a feature that never fires)."""
    bad = torch.isnan(tensor) if name == "threshold" else ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    first = bad.nonzero()[0].tolist()
    return f"{name} holds {int(bad.sum())} NaN or infinite value(s), the first at index {first} ({tensor[tuple(first)].item()})"


def check_finite(path: Path, name: str, tensor: torch.Tensor) -> None:
    """Refuse a NaN or infinite weight (a damaged file: loaded, it would turn every activation spliced through it to NaN)."""
    problem = _non_finite(name, tensor)
    if problem is not None:
        raise FileFormatError(f"{str(path)!r}: {problem}: the file is damaged")


def read_weights(path: Path, cfg: SAEConfig) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` checked against ``cfg`` (names and shapes), in gpt2probe's layout, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise MissingFileError(f"{str(path)!r} does not exist (an SAELens folder holds {CFG_FILE} and {WEIGHTS_FILE})")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise FileFormatError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
    expected = expected_shapes(cfg)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise FileFormatError(f"{str(path)!r} does not hold the tensors its cfg.json implies "
                              f"({cfg.architecture}{', transcoder' if cfg.is_transcoder else ''}): "
                              f"missing {missing or 'none'}, unexpected {extra or 'none'}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise FileFormatError(f"{str(path)!r}: {name} has shape {list(tensors[name].shape)}, but cfg.json "
                                  f"implies {list(shape)}")
        if not tensors[name].dtype.is_floating_point:
            raise FileFormatError(f"{str(path)!r}: {name} is {tensors[name].dtype}, not floating point")
        check_finite(path, name, tensors[name])
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].T.contiguous()
    return tensors


def write_folder(directory: str | os.PathLike, cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into ``directory`` (each file atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    raw = config_to_saelens(cfg)  # outside the try: its refusals (a top-k transcoder) say what is wrong themselves
    try:
        text = json.dumps(raw, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:  # metadata set in code that JSON cannot hold
        raise FileFormatError(f"cannot write {str(directory / CFG_FILE)!r}: the config's metadata is not JSON ({error})") from None
    stored = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    for name, tensor in stored.items():  # before a byte is written: load() would refuse the file as damaged
        problem = _non_finite(name, tensor)
        if problem is not None:
            raise NonFiniteError(f"cannot save to {str(directory)!r}: {problem} (a diverged training run, or an edit?)")
    if "W_skip" in stored:
        stored["W_skip"] = stored["W_skip"].T.contiguous()
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(stored, tmp)
    write_text_atomic(directory / CFG_FILE, text)
    return directory
