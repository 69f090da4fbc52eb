"""SAE and transcoder training's settings, declared once in :class:`SAETrainConfig`.

The keyword arguments of :meth:`gpt2probe.SAE.train`, :meth:`gpt2probe.SAE.fit` (and the
transcoder's), ``gpt2probe sae train``'s flags and the options a checkpoint records (and a
resume must match) all come from it. What the coder *is* (``d_sae``, the architecture, ``k``,
its hooks) is :class:`~gpt2probe.sae.config.SAEConfig`'s; this is how it is trained.

``None`` means "chosen from the data": :func:`gpt2probe.sae.training.resolve` replaces each
with its default for the coder's sizes and the number of activations. The resolved settings
(:meth:`SAETrainConfig.fingerprint`) are saved with the trained coder, in ``cfg.json``'s
``metadata`` under :data:`TRAINING_METADATA`; ``from_dict(SAETrainConfig, record)`` reads them back. Where checkpoints go,
how often, whether to resume and whether a bar is shown do not change the result: they are
fields for Python callers but the command's own flags (``--checkpoint-every``, ``--resume``,
``--no-progress``, with checkpoints in ``OUT/checkpoint``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypedDict, no_type_check

from ..errors import InvalidArgumentError
from ..schedule import lr_factor
from .base import finite_float, non_negative_int, positive_int, setting

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
"""The coders gpt2probe trains and runs (``SAEConfig.architecture``, ``--architecture``)."""
B_DEC_INITS = ("geometric_median", "mean", "zeros")
DEFAULT_BATCH_SIZE = 4096
NOT_RESULT = ("checkpoint_dir", "checkpoint_every", "resume", "progress")
"""Fields that do not change the trained coder: left out of the fingerprint a resume compares and of the record."""
TRAINING_METADATA = "gpt2probe_training"
RENAMED_FIELDS = (("batch_size", "train_batch_size_tokens"),)
"""Old name -> new name: a checkpoint or ``cfg.json`` saved before the rename reads under the new one."""
"""The key of a trained coder's ``cfg.metadata`` (and ``cfg.json``'s ``metadata``) holding its resolved settings."""


@no_type_check  # values are checked in __post_init__, raising gpt2probe's own errors
@dataclass(frozen=True, kw_only=True)
class SAETrainConfig:
    """How to train (what the SAE is lives in ``SAEConfig``). ``None`` means "chosen from the data", see ``resolve``.

    Attributes:
        steps: optimiser steps. Default: one pass over the data, but at least ``min_steps``
            (small data is repeated; an iterator needs ``steps``).
        train_batch_size_tokens: tokens (activation rows) per optimiser step, SAELens's name
            (``batch_size`` until this release, which everywhere else counts sequences through the
            model per pass; the old name still works for one release). Default: SAELens's 4,096, or for small data the power of
            two that gives one pass over the data about 128 steps (at least 256): a few hundred
            thousand tokens are seen many times, and more, smaller steps learn more from them
            (measured on tiny-english: 1,024 rows a step reach a higher explained variance
            than 4,096 for the same compute).
        lr: Adam's peak learning rate. Default ``2e-4 / sqrt(d_sae / 16384)`` (Gao et al. 2024's fit).
        warmup_steps: linear warm-up. Default ``min(1000, steps // 20)``.
        decay_steps: linear decay to zero at the end. Default ``steps // 5``.
        min_steps: the fewest steps a default ``steps`` gives.
        l1_coefficient: ``"standard"``'s L1 weight on normalised activations (SAELens's default, 1).
        l1_warmup_steps: the L1 weight ramps up over these steps. Default ``steps // 20``.
        l0_coefficient: ``"jumprelu"``'s L0 weight (SAELens's default, 1).
        jumprelu_bandwidth, jumprelu_init_threshold: JumpReLU's kernel width and initial threshold
            (0.05 and 0.1 of normalised pre-activations: SAELens's 0.001 and 0.001 suit runs of
            billions of tokens; with them a threshold learnt in log space moves too little in a
            few thousand steps, measured on the known-answer data).
        aux_k: dead features used by the aux-k loss. Default ``d_in // 2`` (as SAELens).
        aux_coefficient: the aux-k loss's weight (Gao et al.'s 1/32, on their normalised error: see
            :func:`gpt2probe.sae.losses.aux_k_loss`; SAELens's 1 weighs an unnormalised one).
        dead_after_tokens: tokens without firing after which a feature is dead. Default
            ``min(10M, max(train_batch_size_tokens, steps * train_batch_size_tokens // 10))``.
        threshold_decay: batch top-k's threshold estimate's moving-average decay.
        b_dec_init: ``"geometric_median"``, ``"mean"`` or ``"zeros"`` of a sample of the targets.
        init_sample: rows used for normalisation and ``b_dec``'s initialisation.
        seed: every random choice (initialisation, shuffling).
        buffer_tokens: rows of the shuffle buffer when streaming (memory: rows x width x 4 bytes).
            When a model's activations over the whole corpus fit (one pass has at most this many
            tokens), the model runs over it once and the rows are kept, not recomputed every epoch.
        checkpoint_dir, checkpoint_every: save a checkpoint there every that many steps (and at the end).
        resume: continue from ``checkpoint_dir``'s checkpoint (same data and options) if there is one.
        progress: a progress bar with loss, L0, explained variance and dead fraction.
    """

    steps: int | None = setting(None, "optimiser steps", type=positive_int,
                                default_text="one pass over the corpus, at least --min-steps")
    train_batch_size_tokens: int | None = setting(None, "tokens per optimiser step (SAELens's train_batch_size_tokens)",
                                                  type=positive_int,
                                                  default_text=f"from the corpus size, at most {DEFAULT_BATCH_SIZE}")
    lr: float | None = setting(None, "peak learning rate", type=finite_float,
                               default_text="2e-4 / sqrt(d_sae / 16384)")
    warmup_steps: int | None = setting(None, "warm-up steps", flag="--warmup", type=non_negative_int,
                                       default_text="min(1000, steps / 20)")  # --warmup as in finetune
    decay_steps: int | None = setting(None, "last steps, decaying linearly to zero", type=non_negative_int,
                                      default_text="steps / 5")
    min_steps: int = setting(2000, "the fewest steps when --steps is not given")
    l1_coefficient: float = setting(1.0, "the standard architecture's L1 weight")
    l1_warmup_steps: int | None = setting(None, "steps over which the L1 weight ramps up", type=non_negative_int,
                                          default_text="steps / 20")
    l0_coefficient: float = setting(1.0, "the jumprelu architecture's L0 weight")
    jumprelu_bandwidth: float = setting(0.05, "JumpReLU's kernel width, in normalised units")
    jumprelu_init_threshold: float = setting(0.1, "JumpReLU's initial threshold, in normalised units")
    aux_k: int | None = setting(None, "dead features the aux-k loss uses", type=positive_int,
                                default_text="half the input width")
    aux_coefficient: float = setting(1 / 32, "the aux-k loss's weight")
    dead_after_tokens: int | None = setting(None, "tokens without firing after which a feature is dead",
                                            type=positive_int,
                                            default_text="a tenth of the tokens trained on (at least one batch), at most 10M")
    threshold_decay: float = setting(0.99, "decay of batchtopk's moving-average threshold")
    b_dec_init: str = setting("geometric_median", "the decoder bias starts as this of a sample of the targets",
                              choices=list(B_DEC_INITS))
    init_sample: int = setting(16384, "rows sampled for the normalisation and the decoder bias")
    seed: int = setting(0, "of the initialisation and shuffling", type=int)
    buffer_tokens: int = setting(1 << 16, "rows of the shuffle buffer; memory: rows x width x 4 bytes")
    checkpoint_dir: str | Path | None = setting(None, "save checkpoints in this directory", cli=False)
    checkpoint_every: int | None = setting(None, "steps between checkpoints", cli=False)
    resume: bool = setting(False, "continue from checkpoint_dir's checkpoint", cli=False)
    progress: bool = setting(True, "show a progress bar", cli=False)

    RENAMED_FIELDS: ClassVar[tuple[tuple[str, str], ...]] = RENAMED_FIELDS

    def __post_init__(self) -> None:
        for name in ("steps", "train_batch_size_tokens", "min_steps", "warmup_steps", "decay_steps", "l1_warmup_steps", "aux_k",
                     "dead_after_tokens", "init_sample", "buffer_tokens", "checkpoint_every"):
            value = getattr(self, name)
            low = 0 if name in ("warmup_steps", "decay_steps", "l1_warmup_steps") else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InvalidArgumentError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):  # a bool is an int: True would be seed 1
            raise InvalidArgumentError(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "l1_coefficient", "l0_coefficient", "jumprelu_bandwidth", "jumprelu_init_threshold",
                     "aux_coefficient"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                                      or value < 0 or (value == 0 and name in ("lr", "jumprelu_bandwidth"))):
                raise InvalidArgumentError(f"{name} must be a finite number >= 0 (> 0 for lr and the bandwidth), "
                                           f"got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):  # 1.5 was torch's RuntimeError at the first step
            raise InvalidArgumentError(f"seed must be an integer, got {self.seed!r}")
        for name in ("resume", "progress"):  # resume="no" is truthy: it would resume
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not 0 < self.threshold_decay < 1:
            raise InvalidArgumentError(f"threshold_decay must be in (0, 1), got {self.threshold_decay!r}")
        if self.b_dec_init not in B_DEC_INITS:
            raise InvalidArgumentError(f"b_dec_init {self.b_dec_init!r} is not one of {', '.join(B_DEC_INITS)}")
        if (self.checkpoint_every is not None or self.resume) and self.checkpoint_dir is None:
            raise InvalidArgumentError("checkpoint_every and resume need a checkpoint_dir")

    def with_train_batch_size(self, n_tokens: int | None) -> SAETrainConfig:
        """``train_batch_size_tokens`` chosen from ``n_tokens`` rows of data (``None``: unknown) if it was not given."""
        if self.train_batch_size_tokens is not None:
            return self
        size = DEFAULT_BATCH_SIZE
        if n_tokens is not None:
            size = min(DEFAULT_BATCH_SIZE, max(256, 1 << max(0, (n_tokens // 128).bit_length() - 1)))
        return dataclasses.replace(self, train_batch_size_tokens=size)

    def learning_rate(self, step: int) -> float:
        """The learning rate of ``step`` (0-based) on a resolved schedule."""
        if self.lr is None or self.steps is None:
            raise InvalidArgumentError("the learning rate needs steps and lr: resolve the config first "
                                       "(gpt2probe.sae.training.resolve)")
        return self.lr * lr_factor(step, steps=self.steps, warmup=self.warmup_steps or 0,
                                   decay_steps=self.decay_steps or 0)

    def fingerprint(self) -> dict:
        """What must match for a resume (not where checkpoints go or whether a bar is shown)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_RESULT}


class TrainKeywords(TypedDict, total=False):
    """:class:`SAETrainConfig`'s fields but ``seed``, as ``SAE.train(probe, texts, **options)`` takes them.

    For type checkers only: ``SAE.train`` and ``SAE.fit`` type their ``**options`` with these,
    so a misspelt or mistyped option is flagged in the editor (at run time :func:`~gpt2probe.configs.base.build`
    refuses it by name). The same names and types as the fields (tests/test_configs.py holds
    them to it); ``SAE.train`` takes ``seed`` as its own keyword.
    The old name ``batch_size`` still runs, with a warning, but is not listed.
    """

    steps: int | None
    train_batch_size_tokens: int | None
    lr: float | None
    warmup_steps: int | None
    decay_steps: int | None
    min_steps: int
    l1_coefficient: float
    l1_warmup_steps: int | None
    l0_coefficient: float
    jumprelu_bandwidth: float
    jumprelu_init_threshold: float
    aux_k: int | None
    aux_coefficient: float
    dead_after_tokens: int | None
    threshold_decay: float
    b_dec_init: str
    init_sample: int
    buffer_tokens: int
    checkpoint_dir: str | Path | None
    checkpoint_every: int | None
    resume: bool
    progress: bool


class FitKeywords(TrainKeywords, total=False):
    """Every :class:`SAETrainConfig` field, as ``SAE.fit(activations, **options)`` takes them (``seed`` included)."""

    seed: int


TrainOptions = SAETrainConfig
"""The name :class:`SAETrainConfig` had in ``gpt2probe.sae.training`` (still importable from there)."""
