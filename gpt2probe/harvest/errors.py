"""Errors of corpus harvesting; each is a :class:`~gpt2probe.errors.GPT2ProbeError` and a built-in."""

from __future__ import annotations

from ..errors import GPT2ProbeError


class CorpusError(GPT2ProbeError, ValueError):
    """A corpus that cannot be read: missing files, a glob matching nothing, a missing field, no text."""


class HarvestConfigError(GPT2ProbeError, ValueError):
    """Options that cannot work together (a bad top-k, window, sequence length, direction...)."""


class ResumeMismatchError(GPT2ProbeError, ValueError):
    """``resume`` against an output directory made with another model, corpus, hook set or options."""


class OutputDirError(GPT2ProbeError, FileExistsError):
    """An output directory that already holds a harvest (and ``resume`` was not asked for)."""
