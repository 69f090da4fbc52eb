"""Tuned-lens training's settings, declared once in :class:`TunedLensTrainConfig`.

:func:`gpt2probe.lens.tuned_training.train_tuned_lens`'s keyword arguments (``**to_dict(config)``),
``gpt2probe tuned-lens train``'s flags and the ``training`` entry a saved lens records all come
from it. Only settings that change the trained lens are fields; where it is saved, how often it
checkpoints, the device and the progress bar are the command's or the call's own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

from .base import finite_float, positive_int, setting

DEFAULT_SEQ_LEN = 256
"""``gpt2probe tuned-lens train``'s window unless ``--seq-len``: 1,024 costs 6-13 s a step on a 4-layer model."""
OPTIMIZER_NAMES = ("sgd", "adam")


@no_type_check  # values are checked by train_tuned_lens, raising gpt2probe's own errors
@dataclass(frozen=True)
class TunedLensTrainConfig:
    """Everything that changes a trained tuned lens (checked by ``train_tuned_lens``).

    Attributes:
        steps: optimiser steps, each of ``batch_size`` fresh windows.
        batch_size: windows per optimiser step (one forward and backward pass), across all processes.
        seq_len: tokens per window; ``None``: the model's context (the command: at most 256).
        optimizer: ``"sgd"`` (the reference's Nesterov SGD) or ``"adam"`` (AdamW with AMSGrad).
        lr: peak learning rate; ``None``: 1.0 for sgd (the reference's lr_scale), 1e-3 for adam.
        weight_decay: decoupled for adam, L2 in the gradient for sgd.
        warmup: fraction of the steps spent warming up; ``None``: the reference's rule.
        clip_grad_norm: the gradient's global norm is clipped to this (``None``: never).
        seed: orders the windows.
        include_mid: also translate the mid-block streams.
    """

    steps: int | None = setting(None, "optimiser steps (each uses --batch-size new windows)", type=positive_int,
                                required=True)
    batch_size: int = setting(8, "windows per optimiser step, across all processes")
    seq_len: int | None = setting(None, "tokens per window", type=positive_int,
                                  default_text=f"{DEFAULT_SEQ_LEN}, or the model's context length if shorter: a step "
                                               "costs about in proportion to the window; GPT-2 small trains with "
                                               "--seq-len 1024")
    optimizer: str = setting("sgd", "the reference's Nesterov SGD or AdamW with AMSGrad; see docs/tuned-lens.md",
                             choices=list(OPTIMIZER_NAMES))
    lr: float | None = setting(None, "peak learning rate", type=finite_float,
                               default_text="1e-3 for adam, 1.0 for sgd: the reference's lr_scale, which torch's SGD "
                                            "receives times 1 - momentum")
    weight_decay: float = setting(1e-3, "weight decay", cli=False)
    warmup: float | None = setting(None, "fraction of the steps spent warming up", cli=False)
    clip_grad_norm: float | None = setting(1.0, "clip the gradient's global norm to this", cli=False)
    seed: int = setting(0, "orders the windows", type=int)
    include_mid: bool = setting(False, "also the streams between attention and MLP (resid_mid): a translator each")
