"""Fine-tuning's settings, declared once in :class:`FinetuneConfig`.

:func:`gpt2probe.finetune.finetune`'s keyword arguments, ``gpt2probe finetune``'s flags and
the settings recorded in ``finetune.json`` all come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

from .base import non_negative_int, positive_int, setting

MAX_DEFAULT_SEQ_LEN = 128


@no_type_check  # values are checked by the code that runs them, raising gpt2probe's own errors
@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune (checked by :func:`~gpt2probe.finetune.finetune`).

    Attributes:
        steps: optimiser steps of ``batch_size`` windows of ``seq_len`` tokens.
        batch_size: windows per optimiser step (one forward and backward pass).
        seq_len: tokens per window; ``None``: the model's context, at most 128.
        lr: AdamW's peak learning rate (linear warm-up, cosine decay to 10%).
        weight_decay: AdamW's decoupled weight decay.
        warmup: warm-up steps; ``None``: 10% of ``steps`` (at least 1).
        seed: the batches' order and dropout.
        train, freeze: component selectors (``blocks.2``, ``blocks.*.mlp``, ``embed``...); by default all train.
    """

    steps: int | None = setting(None, "optimiser steps", type=positive_int, required=True)
    batch_size: int = setting(8, "windows per optimiser step")
    seq_len: int | None = setting(None, "tokens per window", type=positive_int,
                                  default_text=f"the model's context, at most {MAX_DEFAULT_SEQ_LEN}")
    lr: float = setting(3e-4, "peak learning rate")
    weight_decay: float = setting(0.0, "AdamW's weight decay")
    warmup: int | None = setting(None, "warm-up steps", type=non_negative_int, default_text="10%% of --steps")
    seed: int = setting(0, "of the batches and dropout", type=int)
    train: tuple[str, ...] | None = setting(None, "train only these components (e.g. blocks.2, blocks.*.mlp, ln_final)",
                                            nargs="+", metavar="COMPONENT")
    freeze: tuple[str, ...] | None = setting(None, "keep these components frozen (e.g. embed)", nargs="+",
                                             metavar="COMPONENT")
