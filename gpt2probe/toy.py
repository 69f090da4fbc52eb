"""Synthetic token sequences for probing induction behaviour.

A block of random tokens repeated twice is the standard probe for induction
heads: the first copy cannot be predicted, so a model beats chance on the
second copy only by looking back at what followed the earlier occurrence of
the current token.  Tokens are distinct within a block, so every token in the
second copy has exactly one earlier occurrence and a unique induction target.
"""

from __future__ import annotations

import torch
from jaxtyping import Int

from .errors import InvalidArgumentError


def repeated_random_tokens(
    n_seqs: int, half_len: int, vocab_size: int, seed: int, bos: int | None = 0
) -> Int[torch.Tensor, "batch pos"]:
    """Return ``n_seqs`` sequences ``[bos, t_1 .. t_L, t_1 .. t_L]`` with ``L = half_len``.

    Each row's ``t_1 .. t_L`` are distinct tokens drawn uniformly without
    replacement from ``range(vocab_size)`` minus ``bos``, using a CPU
    ``torch.Generator`` seeded with ``seed`` (same tokens on every machine).
    The shape is ``(n_seqs, 2 * half_len + 1)``; pass ``bos=None`` to drop the
    leading BOS column.  With a BOS column, index ``p`` in ``[L + 1, 2L]``
    repeats index ``p - L``, so its induction target is index ``p - L + 1``.
    """
    pool = torch.tensor([t for t in range(vocab_size) if t != bos], dtype=torch.long)
    if n_seqs < 1 or not 1 <= half_len <= len(pool):
        raise InvalidArgumentError(f"need n_seqs >= 1 and 1 <= half_len <= {len(pool)}, got {n_seqs}, {half_len}")
    gen = torch.Generator().manual_seed(seed)
    half = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:half_len]] for _ in range(n_seqs)])
    parts = [half, half] if bos is None else [torch.full((n_seqs, 1), bos, dtype=torch.long), half, half]
    return torch.cat(parts, dim=1)
