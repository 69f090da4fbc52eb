"""Exceptions that say what was wrong and what would have been valid."""

from __future__ import annotations


class GPT2ProbeError(Exception):
    """Base class for every error gpt2probe raises on purpose."""


class InvalidArgumentError(GPT2ProbeError, ValueError):
    """An argument of the right type with a value that is not allowed (out of range, NaN, unknown option)."""


class HookNameError(GPT2ProbeError, KeyError):
    """An unknown hook name; the message lists the nearest valid ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class LayerIndexError(GPT2ProbeError, IndexError):
    """A layer (or head) index outside the model."""


class PromptError(GPT2ProbeError, ValueError):
    """A prompt the model cannot run: empty, too long, or token ids outside the vocabulary."""


class NotGPT2Error(GPT2ProbeError, ValueError):
    """A checkpoint or model object that is not a GPT-2 language model."""


class WeightsUnavailableError(GPT2ProbeError, OSError):
    """Weights that cannot be found locally and cannot be downloaded."""


class UnsafeCheckpointError(GPT2ProbeError, ValueError):
    """A pickle checkpoint that was not explicitly allowed."""


class ConcurrentUseError(GPT2ProbeError, RuntimeError):
    """A probe used from a second thread while another thread runs it or has hooks attached."""


class HookReturnError(GPT2ProbeError, ValueError, TypeError):
    """A hook function returned something that cannot replace the activation: not a tensor, or the wrong shape, dtype or device."""


class UnsupportedError(GPT2ProbeError, ValueError):
    """A model setting gpt2probe cannot serve correctly (an attention implementation, a dtype on this device)."""


class ModelMismatchError(GPT2ProbeError, ValueError):
    """Two models that a comparison needs to share (architecture, tokenizer, weights) do not."""


class InvalidArgumentError(GPT2ProbeError, ValueError):
    """An argument outside what a function accepts; the message says what is valid."""


class MissingExtraError(GPT2ProbeError, ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""
