"""Turn a hub id, a ``save_pretrained`` directory or a model object into a :class:`GPT2Probe`.

Loading is conservative: safetensors only unless pickle checkpoints are explicitly allowed,
never remote code, and every failure names what was found and what would work.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    # transformers 5 makes GPT2TokenizerFast a lazy alias of GPT2Tokenizer at import time, which pyright cannot see.
    GPT2TokenizerFast,  # pyright: ignore[reportAttributeAccessIssue]
    PreTrainedTokenizerBase,
)

from . import validate
from .checkpoint import check_directory, check_loading_info, read_json_object
from .errors import (
    CheckpointError,
    InvalidArgumentError,
    InvalidTypeError,
    NotGPT2Error,
    UnsafeCheckpointError,
    UnsupportedError,
    WeightsUnavailableError,
)
from .hub import hub_reachable
from .model.modules import embeddings_tied
from .probe import GPT2Probe
from .shipped import NOTES as SHIPPED
from .shipped import OFFLINE_MODEL, shipped_model
from .tokenizer import gpt2_tokenizer, prepare_for_batches

HUB_GPT2_IDS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def load(
    model: str | os.PathLike | torch.nn.Module,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> GPT2Probe:
    """Load a GPT-2 language model and wrap it in a probe.

    Args:
        model: a hub id (``"gpt2"``, ``"gpt2-medium"``, ``"openai-community/gpt2-xl"``,
            ``"distilgpt2"``...), a model shipped with gpt2probe (``"tiny-english"``,
            ``"toy-induction"``: no download), a local directory written by ``save_pretrained``,
            or an already-built ``GPT2LMHeadModel``. A checkpoint whose tensors do not match
            its config.json is refused (:class:`~gpt2probe.errors.CheckpointError`). A model
            object is wrapped, not copied: it is cast to ``dtype`` (when given), moved to
            ``device`` (the default one too) and put in eval mode in place, so the caller's
            object changes.
        tokenizer: overrides the tokenizer; by default a directory's own tokenizer files,
            else GPT-2's real tokenizer shipped with gpt2probe.
        device: explicit, or the first of cuda, mps, cpu.
        dtype: ``torch.float32`` by default (a model object keeps its own dtype unless given).
        allow_pickle: also accept ``pytorch_model.bin`` checkpoints (pickle can run code).
        attn_implementation: passed to Hugging Face (``"sdpa"`` by default, or ``"eager"``);
            attention patterns are captured correctly either way.
        revision: the hub revision (branch, tag or commit) to download.

    ``allow_pickle``, ``attn_implementation`` and ``revision`` choose how a model is read, so
    they are refused with a model object (it has been read already) rather than ignored.
    """
    validate.boolean("allow_pickle", allow_pickle)
    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise InvalidTypeError(
            f"tokenizer must be a tokenizer object (e.g. GPT2TokenizerFast.from_pretrained(path)), got "
            f"{type(tokenizer).__name__} {tokenizer!r}; leave it out to use the checkpoint's own or GPT-2's"
        )
    if attn_implementation is not None and not isinstance(attn_implementation, str):
        raise InvalidTypeError(f"attn_implementation must be a string such as 'sdpa' or 'eager', got "
                               f"{type(attn_implementation).__name__}")
    target_device = _pick_device(device)
    target_dtype = _pick_dtype(dtype)
    if isinstance(model, torch.nn.Module):
        _refuse_reading_options(allow_pickle=allow_pickle, attn_implementation=attn_implementation, revision=revision)
        hf_model = _check_model_object(model)
        name = hf_model.config.name_or_path or type(model).__name__
        _move(hf_model, target_device, target_dtype)
    else:
        hf_model, name, tokenizer_dir = _load_from_name(
            str(model), allow_pickle=allow_pickle, dtype=target_dtype or torch.float32,
            attn_implementation=attn_implementation, revision=revision,
        )
        _move(hf_model, target_device)
        hf_model.requires_grad_(False)
        if tokenizer is None and tokenizer_dir is not None:
            tokenizer = GPT2TokenizerFast.from_pretrained(tokenizer_dir, trust_remote_code=False)
    hf_model.eval()
    tokenizer = prepare_for_batches(tokenizer) if tokenizer is not None else gpt2_tokenizer()
    _check_tied(hf_model, name)
    return GPT2Probe(hf_model, tokenizer, model_name=name)


def _refuse_reading_options(**options: Any) -> None:
    """Options that only apply to reading a checkpoint, given with a model object: refused, not ignored."""
    given = [name for name, value in options.items() if value not in (None, False)]
    if given:
        raise InvalidArgumentError(
            f"{', '.join(given)} only apply when gpt2probe reads the checkpoint (a hub id, shipped name or "
            f"directory), not to a model object, which is already built; build the object with them instead "
            f"(GPT2LMHeadModel.from_pretrained(path, attn_implementation='eager', revision=...)) or pass the "
            f"path to gpt2probe.load")


def _pick_device(device: str | torch.device | None) -> torch.device:
    # a device this machine lacks is refused now, not deep inside .to()
    explicit = validate.device("device", device, unavailable=UnsupportedError)
    if explicit is not None:
        return explicit
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _pick_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None:
        return dtype
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise InvalidArgumentError(f"dtype must be a floating-point dtype, got {dtype}; valid: {', '.join(_DTYPES)}")
        return dtype
    if not isinstance(dtype, str):
        raise InvalidTypeError(f"dtype must be a torch dtype or one of {', '.join(_DTYPES)}, got {type(dtype).__name__}")
    if dtype not in _DTYPES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _move(model: GPT2LMHeadModel, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Cast ``model`` to ``dtype`` (when given), then move it to ``device``, in place.

    Through transformers' own ``to``, which refuses to cast a quantized model. transformers
    decorates it with ``functools.wraps(torch.nn.Module.to)``, which typeshed types as a
    plain function whose ``self`` is never bound: pyright wants ``self`` passed again, so
    these two calls carry a narrow ignore (the stub is wrong, not the call).
    """
    if dtype is not None:
        model.to(dtype=dtype)  # pyright: ignore[reportCallIssue]
    model.to(device)  # pyright: ignore[reportArgumentType]


def _check_model_object(model: torch.nn.Module) -> GPT2LMHeadModel:
    if isinstance(model, GPT2LMHeadModel):
        return model
    found = type(model).__name__
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    hint = " (a GPT2Model has no LM head: load GPT2LMHeadModel instead)" if found == "GPT2Model" else ""
    raise NotGPT2Error(
        f"expected a transformers GPT2LMHeadModel, got {found}"
        + (f" with model_type {model_type!r}" if model_type else "") + hint
    )


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local directory rather than a hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _load_from_name(name: str, *, allow_pickle: bool, dtype: torch.dtype, attn_implementation: str | None,
                    revision: str | None) -> tuple[GPT2LMHeadModel, str, Path | None]:
    try:
        path = Path(name).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know
        raise WeightsUnavailableError(f"no such directory: {name!r} (the home directory of {name.split('/')[0]!r} "
                                      "cannot be found)") from None
    if not path.exists() and name in SHIPPED:
        path = shipped_model(name)
    if path.exists():
        return _load_directory(path, allow_pickle=allow_pickle, dtype=dtype, attn_implementation=attn_implementation)
    if looks_like_path(name):
        raise WeightsUnavailableError(f"no such directory: {str(path)!r}")
    return _load_hub(name, allow_pickle=allow_pickle, dtype=dtype, attn_implementation=attn_implementation,
                     revision=revision), name, None


def _read_model_type(config_path: Path) -> tuple[str | None, list[str]]:
    config = read_json_object(config_path)
    architectures = config.get("architectures") or []
    return config.get("model_type"), [str(a) for a in architectures] if isinstance(architectures, list) else [str(architectures)]


def _require_gpt2(model_type: str | None, architectures: list[str], where: str) -> None:
    if model_type != "gpt2":
        arch = f" ({', '.join(architectures)})" if architectures else ""
        raise NotGPT2Error(
            f"{where} is not a GPT-2 checkpoint: found model_type {model_type!r}{arch}; "
            "gpt2probe supports gpt2, gpt2-medium/large/xl, distilgpt2 and their fine-tunes"
        )


def _load_directory(path: Path, *, allow_pickle: bool, dtype: torch.dtype,
                    attn_implementation: str | None) -> tuple[GPT2LMHeadModel, str, Path | None]:
    if not path.is_dir():
        raise WeightsUnavailableError(f"{str(path)!r} is a file, not a directory written by save_pretrained")
    if not os.access(path, os.R_OK | os.X_OK):
        raise WeightsUnavailableError(f"cannot read the directory {str(path)!r} (permission denied)")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise WeightsUnavailableError(
            f"{str(path)!r} has no config.json: expected a directory written by save_pretrained"
        )
    _require_gpt2(*_read_model_type(config_path), where=repr(str(path)))
    has_safe = any((path / f).is_file() for f in SAFE_WEIGHTS)
    has_pickle = any((path / f).is_file() for f in PICKLE_WEIGHTS)
    if not has_safe and has_pickle and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{str(path)!r} holds only a pickle checkpoint (pytorch_model.bin), which can run arbitrary code "
            "when loaded; pass allow_pickle=True if you trust it, or convert it to safetensors"
        )
    if not has_safe and not has_pickle:
        raise WeightsUnavailableError(
            f"{str(path)!r} has a config.json but no weights (expected model.safetensors)"
        )
    config = _read_config(path)
    if has_safe:
        check_directory(path, config)  # before loading: HF would fill gaps with random values
    with quiet_transformers():
        try:
            # from_pretrained is annotated as returning the model alone; with output_loading_info=True it
            # returns (model, info), so the annotation is wrong here.
            model, info = GPT2LMHeadModel.from_pretrained(  # pyright: ignore[reportGeneralTypeIssues]
                path, config=config, dtype=dtype, use_safetensors=has_safe, trust_remote_code=False,
                output_loading_info=True,
                **_attention_kwargs(attn_implementation),
            )
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(_refused_pickle(path, error)) from None
        except ImportError as error:  # an attention implementation whose package is missing (flash_attention_2)
            raise UnsupportedError(f"cannot load {str(path)!r} with attn_implementation={attn_implementation!r}: "
                                   f"{error} Use 'sdpa' or 'eager'.") from None
        except (OSError, RuntimeError, ValueError, SafetensorError) as error:  # damaged or unreadable files
            raise CheckpointError(f"cannot load the weights in {str(path)!r}: {error}") from None
    check_loading_info(info, tied=bool(config.tie_word_embeddings), where=repr(str(path)))
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()
    return model, path.name, path if has_tokenizer else None


def _attention_kwargs(attn_implementation: str | None) -> dict[str, Any]:
    """``from_pretrained``'s ``attn_implementation`` when one was asked for (else transformers' default)."""
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def _refused_pickle(where: object, error: Exception) -> str:
    # torch's message says why (after "WeightsUnpickler error:") around advice to unpickle it unsafely: keep only why
    reason = str(error).partition("WeightsUnpickler error:")[2] or str(error)
    first = next((line.strip() for line in reason.splitlines() if line.strip()), type(error).__name__)
    return (f"the pickle checkpoint in {str(where)!r} holds more than tensors, so torch refused to unpickle it "
            f"(weights_only loading; nothing in it ran): {first[:300]}. Convert a checkpoint you trust to safetensors "
            "where it was made")


def _read_config(path: Path) -> GPT2Config:
    """``config.json`` as a GPT2Config, or an error naming the file."""
    try:
        return GPT2Config.from_dict(read_json_object(path / "config.json"))
    except (TypeError, ValueError, KeyError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{str(path / 'config.json')!r} is not a valid GPT-2 config: {error}") from None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar for one load, then restore the user's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_hub(name: str, *, allow_pickle: bool, dtype: torch.dtype, attn_implementation: str | None,
              revision: str | None) -> GPT2LMHeadModel:
    from transformers import AutoConfig

    kwargs: dict[str, Any] = dict(revision=revision, trust_remote_code=False)
    try:  # the HF cache first: works offline
        config = AutoConfig.from_pretrained(name, local_files_only=True, **kwargs)
        local_only = True
    except (OSError, ValueError):
        reachable, why = hub_reachable()
        if not reachable:
            raise WeightsUnavailableError(
                f"the weights of {name!r} are not in the Hugging Face cache ({_hf_cache_dir()}) and the hub "
                f"cannot be reached (offline: {why}). On a connected machine run `hf download {name}` (it fills the "
                "cache under HF_HOME; copy that cache here or set HF_HOME to it), or pass any local directory "
                "written by save_pretrained; or load a model shipped with gpt2probe that needs no download: "
                + ", ".join(f"gpt2probe.load({m!r})" for m in SHIPPED)
            ) from None
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
        except OSError as error:
            raise WeightsUnavailableError(f"cannot load {name!r} from the hub: {error}") from None
        local_only = False
    _require_gpt2(config.model_type, list(config.architectures or []), where=repr(name))
    try:
        with quiet_transformers():
            # (model, info) with output_loading_info=True, whatever from_pretrained's annotation says (see above)
            model, info = GPT2LMHeadModel.from_pretrained(  # pyright: ignore[reportGeneralTypeIssues]
                name, dtype=dtype, local_files_only=local_only, use_safetensors=None if allow_pickle else True,
                output_loading_info=True,
                **kwargs, **_attention_kwargs(attn_implementation),
            )
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(_refused_pickle(name, error)) from None
    except ImportError as error:
        raise UnsupportedError(f"cannot load {name!r} with attn_implementation={attn_implementation!r}: {error} "
                               "Use 'sdpa' or 'eager'.") from None
    except OSError as error:
        hint = "" if allow_pickle else " (only safetensors are accepted; pass allow_pickle=True to allow pickle)"
        raise WeightsUnavailableError(f"cannot load the weights of {name!r}: {error}{hint}") from None
    except RuntimeError as error:  # mis-shaped tensors
        raise CheckpointError(f"cannot load the weights of {name!r}: {error}") from None
    check_loading_info(info, tied=bool(config.tie_word_embeddings), where=repr(name))
    return model


def _hf_cache_dir() -> str:
    """Where huggingface_hub looks for cached models (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    return f"HF_HOME={constants.HF_HOME}"


def _check_tied(model: GPT2LMHeadModel, name: str) -> None:
    """GPT-2 ties ``lm_head`` to ``wte`` (``W_U = W_E.T``); a fine-tune that broke the tie is worth a warning."""
    if not embeddings_tied(model):
        warnings.warn(
            f"{name}: lm_head is not tied to wte, so W_U is lm_head's weight, not W_E.T",
            stacklevel=3,
        )


def load_with_fallback(
    model: str, *, device: str | None = None, allow_fallback: bool = True
) -> tuple[GPT2Probe, str | None]:
    """Load ``model``, or the shipped offline model when a hub id's weights cannot be had.

    If ``model`` is a hub id (not a path) whose weights cannot be had, say why on stderr and load
    the shipped offline model instead. Returns the probe and, after a fallback, a note for reports.
    """
    try:
        return load(model, device=device), None
    except WeightsUnavailableError as error:
        if not allow_fallback or looks_like_path(model) or Path(model).expanduser().exists():
            raise
        print(f"Cannot load {model!r}: {error}", file=sys.stderr)
        print(f"Falling back to gpt2probe's shipped offline model {OFFLINE_MODEL!r}.", file=sys.stderr)
        return load(shipped_model(OFFLINE_MODEL), device=device), SHIPPED[OFFLINE_MODEL]
