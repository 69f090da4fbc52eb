"""The learning-rate schedule of every training loop: linear warm-up, constant, then decay.

Fine-tuning decays with a cosine to 10% after its warm-up; the tuned lens decays linearly to
zero after its warm-up; SAEs and transcoders stay constant and decay linearly to zero over
their last ``decay_steps``. One function covers all three, so each loop states only its
numbers (tests/test_schedule_and_windows.py checks it gives each loop's former values exactly).
"""

from __future__ import annotations

import math

from .errors import InvalidArgumentError


def lr_factor(step: int, *, steps: int, warmup: int, decay_steps: int | None = None, shape: str = "linear",
              floor: float = 0.0) -> float:
    """The multiple of the peak learning rate at ``step`` (0-based) of ``steps``.

    Args:
        warmup: steps of linear warm-up, ``(step + 1) / warmup``; 0 for none.
        decay_steps: the last steps, decaying to ``floor`` at ``steps``; default: every step after the warm-up.
        shape: ``"linear"`` (``remaining / decay_steps``) or ``"cosine"`` (half a cosine).
        floor: the fraction of the peak the decay ends at.
    """
    if shape not in ("linear", "cosine"):
        raise InvalidArgumentError(f"shape must be 'linear' or 'cosine', got {shape!r}")
    decay_steps = steps - warmup if decay_steps is None else decay_steps
    factor = 1.0
    if warmup and step < warmup:
        factor = (step + 1) / warmup
    remaining = steps - step
    if decay_steps and remaining <= decay_steps:
        if shape == "linear":
            decayed = remaining / decay_steps
        else:
            progress = (step - (steps - decay_steps)) / max(1, decay_steps)
            decayed = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if floor:
            decayed = floor + (1 - floor) * decayed
        factor = min(factor, decayed)
    return factor
