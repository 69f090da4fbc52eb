"""Corpus-scale harvesting: per-unit statistics and max-activating examples over a whole corpus.

>>> import gpt2probe
>>> probe = gpt2probe.load("tiny-english")
>>> h = gpt2probe.harvest(probe, "docs/*.txt", hooks="blocks.*.mlp.hook_post", out="runs/docs")
>>> h.top_values("blocks.0.mlp.hook_post").shape      # [units, k], descending
>>> h.top_examples("blocks.0.mlp.hook_post", 5)[0]    # value, document, position, context
>>> sae = gpt2probe.SAE.load("saes/blocks.2.hook_resid_post")
>>> f = gpt2probe.harvest(probe, "docs/*.txt", saes=[sae], out="runs/features")
>>> f.stats("blocks.2.hook_resid_post.hook_sae_acts_post")["frequency"]   # each feature's density

Runs in one process or, under ``torchrun``, in one process per device; see ``docs/harvesting.md``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor

from .. import validate
from ..configs.base import build, user_stacklevel
from ..configs.harvest import HarvestConfig
from .corpus import Corpus
from .errors import CorpusError, HarvestConfigError, OutputDirError, ResumeMismatchError
from .runner import run_harvest
from .store import Example, Harvest, Histogram

__all__ = ["Corpus", "CorpusError", "Example", "Harvest", "HarvestConfig", "HarvestConfigError", "Histogram", "OutputDirError",
           "ResumeMismatchError", "harvest"]


def harvest(
    probe,
    corpus: Corpus | str | os.PathLike | Sequence[str | os.PathLike],
    *,
    hooks: str | Sequence[str] = (),
    out: str | os.PathLike,
    config: HarvestConfig | None = None,
    saes: Sequence = (),
    directions: dict[str, Tensor] | None = None,
    resume: bool = False,
    checkpoint_windows: int | None = None,
    progress: bool = True,
    model_source: str | None = None,
    sae_sources: Sequence[str | None] | None = None,
    **settings: Any,
) -> Harvest | None:
    """Run ``probe`` over ``corpus`` and keep running summaries of every unit of ``hooks`` in ``out``.

    What changes the result is a :class:`HarvestConfig`: pass one as ``config``, or its fields
    as keyword arguments (``top_k=20, window=8, seq_len=None, batch_size=8, threshold=0.0,
    n_bins=64, block_chars=65536, seed=None, save_raw=()``; see :class:`HarvestConfig`). The
    same fields are ``gpt2probe harvest``'s flags and the manifest's ``options``.

    Args:
        corpus: a :class:`Corpus`, or paths/globs of text, ``.jsonl`` (needs ``Corpus(field=...)``),
            ``.parquet`` or ``datasets`` directories (need ``Corpus(column=...)``).
        hooks: names or globs (``"blocks.*.mlp.hook_post"``); checked before any work. May be
            empty when ``saes`` are given.
        config: the settings (default: ``HarvestConfig(**settings)``).
        saes: SAEs and transcoders (:class:`gpt2probe.SAE`, :class:`gpt2probe.Transcoder`) whose
            features are summarised as units, under the name ``"<hook_name>.hook_sae_acts_post"``:
            each feature's activation is the coder's ``encode`` of the hook it reads, computed on
            the fly (in float32) from the captured activation. Their top-k keeps only tokens where
            the feature is active (above ``threshold``), so a rare feature has empty slots;
            ``stats(...)["frequency"]`` is its density, and the histogram covers its positive
            activations (zeros fall in the underflow bin). One coder per hook.
        sae_sources: where each of ``saes`` was loaded from (recorded for ``gpt2probe sae report``).
        directions: ``{hook: [n, d_model]}``: summarise projections on these instead of the dimensions.
        resume: continue an interrupted run in ``out`` (same model, corpus, hooks and settings).
        checkpoint_windows: windows harvested between checkpoints (per process); ``None``: one a minute or so.
            (``checkpoint_every`` until this release, still taken with a ``DeprecationWarning``:
            elsewhere ``checkpoint_every`` counts optimiser steps.)
        progress: show a progress bar.
        model_source: how the model was named, recorded so the dashboard can load it again.
        settings: :class:`HarvestConfig` fields, when ``config`` is not given.

    Returns:
        The :class:`Harvest` on every process that can read ``out``; ``None`` on a process that cannot
        (another node under torchrun without a shared ``out``).
    """
    validate.boolean("resume", resume)
    validate.boolean("progress", progress)
    if config is not None and settings:
        raise HarvestConfigError(f"give the settings either as config or as keyword arguments, not both "
                                 f"(got config and {', '.join(sorted(settings))})")
    if "checkpoint_every" in settings:  # the old name of checkpoint_windows, kept for one release
        if checkpoint_windows is not None:
            raise HarvestConfigError("give checkpoint_windows only (checkpoint_every is its old name), not both")
        warnings.warn("harvest's checkpoint_every is now checkpoint_windows (checkpoint_every counts optimiser steps in "
                      "SAE and tuned-lens training); checkpoint_every will stop working in the next release",
                      DeprecationWarning, stacklevel=user_stacklevel(sys._getframe()))
        checkpoint_windows = settings.pop("checkpoint_every")
    if config is None:
        if settings.get("block_chars") is None:  # None has always meant the default block size
            settings.pop("block_chars", None)
        config = cast(HarvestConfig, build(HarvestConfig, settings))  # build() returns an instance of the class it is given
    if not isinstance(corpus, Corpus):
        corpus = Corpus(paths=[corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus))
    return run_harvest(probe, corpus, [hooks] if isinstance(hooks, str) else list(hooks), out, options=config,
                       directions=directions, resume=resume, checkpoint_windows=checkpoint_windows, progress=progress,
                       model_source=model_source, saes=validate.coder_list("saes", saes), sae_sources=sae_sources)


class _CallableModule(sys.modules[__name__].__class__):
    """``gpt2probe.harvest`` is this package and, called, :func:`harvest`: ``gpt2probe.harvest(probe, ...)``."""

    def __call__(self, *args, **kwargs) -> Harvest | None:
        return harvest(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
