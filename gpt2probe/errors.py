"""Exceptions that say what was wrong and what would have been valid.

Every error gpt2probe raises on purpose is a :class:`GPT2ProbeError`, and each subclass
also derives from the built-in exception a Python user would expect (``ValueError``,
``TypeError``, ``IndexError``, ``KeyError``, ``FileNotFoundError``, ``OSError``), so
``except GPT2ProbeError`` catches everything of ours and ``except ValueError`` keeps working.
"""

from __future__ import annotations


class GPT2ProbeError(Exception):
    """Base class for every error gpt2probe raises on purpose."""


# -- arguments -------------------------------------------------------------------------
class InvalidArgumentError(GPT2ProbeError, ValueError):
    """An argument of the right type with a value that is not allowed (out of range, NaN, unknown option)."""


class NonFiniteError(InvalidArgumentError):
    """A weight, activation or result that is NaN or infinite where a number is summarised; the message says where.

    NaN compares false with everything: counted, ranked or maximised it would read as unchanged or arbitrary.
    """


class InvalidTypeError(GPT2ProbeError, TypeError):
    """An argument of the wrong type (a float where an integer is needed, a bool for ``k``...)."""


class ShapeError(GPT2ProbeError, ValueError):
    """A tensor (or nested list) whose shape does not fit what it is combined with."""


class PositionError(GPT2ProbeError, IndexError):
    """A token position outside the prompt."""


class HookNameError(GPT2ProbeError, KeyError):
    """An unknown hook name; the message lists the nearest valid ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class LayerIndexError(GPT2ProbeError, IndexError):
    """A layer (or head) index outside the model."""


class PromptError(GPT2ProbeError, ValueError):
    """A prompt the model cannot run: empty, too long, not valid text, or token ids outside the vocabulary."""


# -- models and checkpoints ------------------------------------------------------------
class NotGPT2Error(GPT2ProbeError, ValueError):
    """A checkpoint or model object that is not a GPT-2 language model."""


class CheckpointError(GPT2ProbeError, ValueError):
    """A checkpoint whose files are damaged or whose tensors do not match its own config."""


class WeightsUnavailableError(GPT2ProbeError, OSError):
    """Weights that cannot be found locally and cannot be downloaded."""


class UnsafeCheckpointError(GPT2ProbeError, ValueError):
    """A pickle checkpoint that was not explicitly allowed."""


# -- files -----------------------------------------------------------------------------
class MissingFileError(GPT2ProbeError, FileNotFoundError):
    """A file gpt2probe was asked to read that does not exist."""


class FileFormatError(GPT2ProbeError, ValueError):
    """A saved cache or result file that is not what it claims to be (metadata and tensors disagree)."""


class DamagedFileError(FileFormatError):
    """A file gpt2probe wrote that cannot be read back: truncated, not UTF-8, not JSON, entries missing or mistyped.

    The message names the file and what to do (re-run the command, or delete the directory).
    """


class FileWriteError(GPT2ProbeError, OSError):
    """A file that could not be written; the message names the destination, not a temporary file."""


# -- running ---------------------------------------------------------------------------
class ConcurrentUseError(GPT2ProbeError, RuntimeError):
    """A probe used from a second thread while another thread runs it or has hooks attached."""


class LensMismatchError(GPT2ProbeError, ValueError):
    """A tuned lens (or training checkpoint) used with a model, streams or settings it was not made for."""


class CorpusError(GPT2ProbeError, ValueError):
    """Text to train on or harvest that cannot give what was asked.

    A corpus that cannot be read (missing files, a glob matching nothing, a missing field, not
    UTF-8), holds no text, is not a list of strings, or is too short for the steps asked. One class
    for the harvest and for training (tuned lens, fine-tuning): ``except gpt2probe.CorpusError``
    catches both.
    """


class HookReturnError(GPT2ProbeError, ValueError, TypeError):
    """A hook function returned something that cannot replace the activation: not a tensor, or the wrong shape, dtype or device."""


class UnsupportedError(GPT2ProbeError, ValueError):
    """A model setting gpt2probe cannot serve correctly (an attention implementation, a dtype on this device)."""


class ModelMismatchError(GPT2ProbeError, ValueError):
    """Two models that a comparison needs to share (architecture, tokenizer, weights) do not."""


class MissingExtraError(GPT2ProbeError, ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


class NonFiniteActivationError(GPT2ProbeError, ValueError):
    """A NaN or infinite activation where a summary needs finite numbers (a harvest's running statistics)."""


# -- harvesting ------------------------------------------------------------------------
class HarvestConfigError(GPT2ProbeError, ValueError):
    """Harvest options that cannot work together (a bad top-k, window, sequence length, direction...)."""


class ResumeMismatchError(GPT2ProbeError, ValueError):
    """``resume`` against an output directory made with another model, corpus, hook set or options."""


class OutputDirError(GPT2ProbeError, FileExistsError):
    """An output directory that already holds a harvest (and ``resume`` was not asked for)."""


# -- the command line ------------------------------------------------------------------
class UsageError(GPT2ProbeError, ValueError):
    """A command-line argument that cannot work (checked before anything heavy runs)."""


class ActivationError(InvalidArgumentError):
    """Activations that an SAE or transcoder cannot be trained on (wrong width, non-finite, too few)."""


class SAEMismatchError(GPT2ProbeError, ValueError):
    """An SAE or transcoder used with a model whose hooks or widths it was not made for."""
