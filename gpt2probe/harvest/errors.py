"""Errors of corpus harvesting, here for ``from .errors import ...``; they live in :mod:`gpt2probe.errors`.

One class per meaning: ``gpt2probe.harvest.CorpusError is gpt2probe.CorpusError``, so
``except gpt2probe.CorpusError`` catches a harvest's corpus errors too.
"""

from __future__ import annotations

from ..errors import CorpusError, HarvestConfigError, OutputDirError, ResumeMismatchError

__all__ = ["CorpusError", "HarvestConfigError", "OutputDirError", "ResumeMismatchError"]
