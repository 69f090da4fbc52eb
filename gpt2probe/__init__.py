"""gpt2probe: look inside GPT-2 with hooks that never leak and numbers you can check.

>>> import gpt2probe
>>> probe = gpt2probe.load("gpt2")
>>> logits, cache = probe.run_with_cache("The Eiffel Tower is in", names="blocks.*.hook_resid_post")

Importing the package is cheap: its version and error classes are loaded at once, everything
else (torch, transformers and the modules that need them) on first use, through PEP 562's
module ``__getattr__``. ``gpt2probe.load``, ``from gpt2probe import TunedLens`` and
``gpt2probe.harvest(...)`` work as before; only the moment of the heavy import moves, so that
``gpt2probe --help`` answers at once.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import shape_checking as _shape_checking

if _shape_checking.requested():  # must run before the submodules below are imported
    _shape_checking.enable()

from .errors import (  # noqa: E402 (after the shape-checking hook; errors.py imports nothing)
    ActivationError,
    CheckpointError,
    ConcurrentUseError,
    CorpusError,
    DamagedFileError,
    FileFormatError,
    FileWriteError,
    GPT2ProbeError,
    HarvestConfigError,
    HookNameError,
    HookReturnError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerIndexError,
    LensMismatchError,
    MissingExtraError,
    MissingFileError,
    ModelMismatchError,
    NonFiniteActivationError,
    NonFiniteError,
    NotGPT2Error,
    OutputDirError,
    PositionError,
    PromptError,
    ResumeMismatchError,
    SAEMismatchError,
    ShapeError,
    UnsafeCheckpointError,
    UnsupportedError,
    UsageError,
    WeightsUnavailableError,
)
from .versions import __version__  # noqa: E402 (imports only the standard library)

if TYPE_CHECKING:  # what __getattr__ below provides, for type checkers and readers
    from . import diffing, generation, graphs, harvest, head_scores, interventions, names, shipped
    from .cache import ActivationCache
    from .diffing import ModelDiff, compare
    from .graphs import AttributionGraph, attribution_graph
    from .harvest import Harvest
    from .lens import NEXT_TOKEN, Attribution, LensResult, PromptLens, TunedLens, direct_logit_attribution, logit_lens
    from .loading import load
    from .model.config import ProbeConfig
    from .model.hooks import HookPoint
    from .probe import GPT2Probe
    from .sae import SAE, SAEConfig, Transcoder, load_saes, load_transcoders
    from .tokens import Tokens

_SUBMODULES = ("diffing", "generation", "graphs", "harvest", "head_scores", "interventions", "names", "shipped")
"""Sub-packages and modules reachable as attributes (``gpt2probe.harvest(...)``, ``gpt2probe.names.resid_pre(3)``)."""

_LAZY: dict[str, str] = {
    "ActivationCache": "cache",
    "ProbeConfig": "model.config",
    "ModelDiff": "diffing",
    "compare": "diffing",
    "AttributionGraph": "graphs",
    "attribution_graph": "graphs",
    "Harvest": "harvest",
    "HookPoint": "model.hooks",
    "NEXT_TOKEN": "lens",
    "Attribution": "lens",
    "LensResult": "lens",
    "PromptLens": "lens",
    "TunedLens": "lens",
    "direct_logit_attribution": "lens",
    "logit_lens": "lens",
    "load": "loading",
    "GPT2Probe": "probe",
    "SAE": "sae",
    "SAEConfig": "sae",
    "Transcoder": "sae",
    "load_saes": "sae",
    "load_transcoders": "sae",
    "Tokens": "tokens",
}
"""Exported name -> the module (relative to this package) that defines it, imported on first use."""


def __getattr__(name: str) -> Any:
    """Import a sub-module or an exported name on first use (PEP 562), and keep it as an attribute."""
    if name in _SUBMODULES:
        value: Any = import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES, *_LAZY})


__all__ = [
    "__version__",
    "ConcurrentUseError",
    "NEXT_TOKEN",
    "Attribution",
    "AttributionGraph",
    "attribution_graph",
    "graphs",
    "LensResult",
    "PromptLens",
    "TunedLens",
    "direct_logit_attribution",
    "logit_lens",
    "ActivationCache",
    "ModelDiff",
    "compare",
    "diffing",
    "GPT2Probe",
    "SAE",
    "SAEConfig",
    "Transcoder",
    "load_saes",
    "load_transcoders",
    "GPT2ProbeError",
    "Harvest",
    "HookNameError",
    "HookPoint",
    "LayerIndexError",
    "NonFiniteError",
    "NotGPT2Error",
    "ProbeConfig",
    "PromptError",
    "Tokens",
    "UnsafeCheckpointError",
    "WeightsUnavailableError",
    "load",
    "generation",
    "harvest",
    "head_scores",
    "interventions",
    "names",
    "shipped",
    "CheckpointError",
    "DamagedFileError",
    "FileFormatError",
    "FileWriteError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MissingFileError",
    "ModelMismatchError",
    "MissingExtraError",
    "UnsupportedError",
    "HookReturnError",
    "PositionError",
    "ShapeError",
    "CorpusError",
    "LensMismatchError",
    "HarvestConfigError",
    "NonFiniteActivationError",
    "OutputDirError",
    "ResumeMismatchError",
    "UsageError",
    "SAEMismatchError",
    "ActivationError",
]
