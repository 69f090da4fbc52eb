"""gpt2probe: look inside GPT-2 with hooks that never leak and numbers you can check.

>>> import gpt2probe
>>> probe = gpt2probe.load("gpt2")
>>> logits, cache = probe.run_with_cache("The Eiffel Tower is in", names="blocks.*.hook_resid_post")
"""

from . import shape_checking as _shape_checking

if _shape_checking.requested():  # must run before the submodules below are imported
    _shape_checking.enable()

from . import diffing, generation, graphs, harvest, head_scores, interventions, names, shipped
from .cache import ActivationCache
from .config import ProbeConfig
from .diffing import ModelDiff, compare
from .errors import (
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
from .graphs import AttributionGraph, attribution_graph
from .harvest import Harvest
from .hooks import HookPoint
from .lens import NEXT_TOKEN, Attribution, LensResult, PromptLens, TunedLens, direct_logit_attribution, logit_lens
from .loading import load
from .probe import GPT2Probe
from .sae import SAE, SAEConfig, Transcoder, load_saes, load_transcoders
from .tokens import Tokens
from .versions import __version__

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
