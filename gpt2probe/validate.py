"""Checks for the arguments of public functions, so that a bad value fails at the entry with our error.

Without them a NaN steering vector generates ``'!!!!'``, ``k=True`` reads as 1, ``positions=[]``
builds an empty lens, and a lone surrogate in a prompt surfaces as a tokenizers panic.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .errors import GPT2ProbeError, InvalidArgumentError, InvalidTypeError, LayerIndexError, NonFiniteError


def is_number(value: object, kinds: tuple[type, ...] = (int, float)) -> bool:
    """Whether ``value`` is one of ``kinds`` and not a bool (an int to Python: ``steps=True`` is not 1 step)."""
    return isinstance(value, kinds) and not isinstance(value, bool)


def integer(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, refusing bools, floats and anything outside ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            valid = f"between {minimum} and {maximum}"
        else:
            valid = f">= {minimum}" if minimum is not None else f"<= {maximum}"
        raise InvalidArgumentError(f"{name} must be {valid}, got {value}")
    return value


def boolean(name: str, value: object) -> bool:
    """``True`` or ``False`` only: ``"yes"``, ``0`` or ``None`` for a switch is refused, not read by its truthiness."""
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def float_dtype(name: str, value: object) -> torch.dtype | None:
    """``None`` or a floating-point ``torch.dtype`` (a string such as ``"float16"`` or an integer dtype is refused)."""
    if value is None:
        return None
    if not isinstance(value, torch.dtype):
        raise InvalidTypeError(f"{name} must be a torch dtype such as torch.float16 (or None), got "
                               f"{type(value).__name__} {value!r}")
    if not value.is_floating_point:
        raise InvalidArgumentError(f"{name} must be a floating-point dtype (activations would be truncated), got {value}")
    return value


def device(name: str, value: object, *, unavailable: type[GPT2ProbeError] = InvalidArgumentError) -> torch.device | None:
    """``None`` or a device this machine has, as a ``torch.device`` (given as one or as ``"cpu"``, ``"cuda:0"``...).

    Existence is checked here, before any work: ``"cuda"`` on a machine without CUDA, or ``"cuda:3"``
    on one with a single GPU, raises ``unavailable`` naming the devices this machine has, rather than
    a raw torch error from inside a capture hook or from ``.to()``. The one check for every
    ``device=`` argument (captures, :func:`gpt2probe.load`, files read onto a device).
    """
    if value is None:
        return None
    if isinstance(value, torch.device):
        target = value
    elif isinstance(value, str):
        try:
            target = torch.device(value)
        except (RuntimeError, ValueError):
            raise InvalidArgumentError(f"{name} {value!r} is not a device; valid here: {devices_here()} "
                                       "(a device string is 'cpu', 'cuda', 'cuda:N' or 'mps')") from None
    else:
        raise InvalidTypeError(f"{name} must be a device such as 'cpu' or 'cuda' (or None), got {type(value).__name__}")
    problem = _missing(target)
    if problem is not None:
        raise unavailable(f"{name} {str(value)!r} {problem}; valid here: {devices_here()}")
    return target


def _missing(target: torch.device) -> str | None:
    """Why this machine cannot hold tensors on ``target``, or ``None`` when it can (other device types pass to torch)."""
    if target.type == "cuda":
        if not torch.cuda.is_available():
            return "asks for CUDA, but CUDA is not available on this machine (torch built without CUDA, or no GPU visible)"
        if target.index is not None and target.index >= torch.cuda.device_count():
            return f"asks for CUDA device {target.index}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
    if target.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "asks for Apple's MPS, which is not available on this machine"
    return None


def devices_here() -> str:
    """The devices this machine has, quoted for an error message: ``'cpu'``, then ``'cuda:0'``... and ``'mps'``."""
    here = ["cpu"]
    if torch.cuda.is_available():
        here += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        here.append("mps")
    return ", ".join(map(repr, here))


def choice(name: str, value: object, options: Iterable[str]) -> str:
    """One of ``options`` (a list, a dict's keys...); anything else, unhashable values included, is our error."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def function(name: str, value: object, *, optional: bool = True) -> None:
    """A callable (or ``None`` when ``optional``): a number or a string given for a callback fails here, not mid-run."""
    if (value is None and optional) or callable(value):
        return
    raise InvalidTypeError(f"{name} must be a function{' or None' if optional else ''}, got {type(value).__name__}")


def finite_number(name: str, value: object) -> float:
    """A real, finite number (not a bool, not NaN or infinite)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return float(value)


def finite_tensor(name: str, value: object) -> Tensor:
    """A floating-point tensor whose entries are all finite."""
    if not isinstance(value, Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise InvalidTypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        raise InvalidArgumentError(
            f"{name} has {int(bad.sum())} non-finite entries (NaN or inf), the first at index {where}: "
            f"{value[tuple(where)].item()}"
        )
    return value


def finite_result(what: str, value: Tensor, remedy: str = "a hook or the model's weights produced them") -> Tensor:
    """``value`` if every entry is finite, else :class:`~gpt2probe.errors.NonFiniteError` saying ``what`` holds NaN.

    For numbers about to be ranked, counted or maximised: NaN compares false with everything,
    so a rank would read 0, a count "unchanged", and ``argmax``/``topk`` pick arbitrarily.
    """
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        first = bad.nonzero()[0].tolist()
        raise NonFiniteError(f"{what} hold(s) {int(bad.sum())} NaN or infinite value(s), the first at index {first} "
                             f"({value[tuple(first)].item()}): they cannot be ranked or summarised; {remedy}")
    return value


def coder_list(name: str, value: object, *, one: str = "sae") -> list:
    """``value`` (a list, tuple or other iterable of SAEs or transcoders) as a list.

    A single coder is not iterable, and ``list(sae)`` would be a raw ``TypeError``; a string or
    path would be read character by character; a dict would give its keys. Each is refused
    naming the fix (``saes=[sae]``). The entries themselves are checked by the caller, which
    knows what it needs of them.
    """
    if isinstance(value, Mapping):
        raise InvalidTypeError(f"{name} must be a list of SAE or Transcoder objects, got a {type(value).__name__}: "
                               f"pass {name}=list({one}s.values())")
    if isinstance(value, (str, bytes, os.PathLike)):
        raise InvalidTypeError(f"{name} must be a list of SAE or Transcoder objects, got {type(value).__name__} "
                               f"{value!r}: load it first ({name}=[gpt2probe.SAE.load(path)])")
    if not isinstance(value, Iterable):
        raise InvalidTypeError(f"{name} must be a list of SAE or Transcoder objects, got one {type(value).__name__}: "
                               f"pass {name}=[{one}]")
    return list(value)


def index_list(name: str, value: object) -> list[int]:
    """One index or a non-empty list of integer indices (no bools), as a list."""
    items = [value] if isinstance(value, (int, numbers.Integral)) and not isinstance(value, bool) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, (Sequence, Tensor)):
        raise InvalidTypeError(f"{name} must be an integer or a list of integers, got {type(value).__name__}")
    items = items.tolist() if isinstance(items, Tensor) else list(items)
    if not items:
        raise InvalidArgumentError(f"{name} is empty: give at least one index (or None for all)")
    return [integer(f"{name}[{i}]", item) for i, item in enumerate(items)]


def index_in(name: str, value: object, length: int, error: type[Exception] = InvalidArgumentError) -> int:
    """An integer index into ``length`` entries, negative from the end as Python allows; ``error`` for one outside."""
    value = integer(name, value)
    if not -length <= value < length:
        raise error(f"{name} {value} is out of range: there are {length} (valid: 0..{length - 1}, or -1..-{length})")
    return value


def integer_like(name: str, value: object) -> int:
    """An int, a NumPy integer or a 0-d integer tensor as an int (an index taken from ``argmax``, ``topk``, NumPy).

    Bools, floats and float or bool tensors are refused (:func:`integer`): ``1.5`` would be truncated.
    """
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = value.item()
    return integer(name, value)


def index_below(name: str, value: object, size: int, error: type[Exception] = InvalidArgumentError) -> int:
    """An integer in ``0..size-1``, with no negative indexing: for indices that are added to offsets or name a unit.

    ``-1`` there would silently name another node or feature (the last one), so it is ``error``,
    as is ``size``. Ints, NumPy integers and 0-d integer tensors are accepted; bools and floats
    (``1.5`` would be truncated) are refused.
    """
    value = integer_like(name, value)
    if not 0 <= value < size:
        raise error(f"{name} {value} is outside 0..{size - 1}")
    return value


def layer_in(layer: object, n_layers: int, *, allow_end: bool = False, what: str = "layer") -> int:
    """A layer index in ``0..n_layers-1`` (``0..n_layers`` with ``allow_end``, for "after the last block")."""
    last = n_layers if allow_end else n_layers - 1
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise LayerIndexError(f"{what} must be an integer in 0..{last}, got {type(layer).__name__} {layer!r}")
    if not 0 <= int(layer) <= last:
        raise LayerIndexError(f"{what} {layer} is out of range: this model has layers 0..{last}")
    return int(layer)
