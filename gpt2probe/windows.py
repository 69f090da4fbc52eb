"""Pack documents into fixed-length token windows: the one packer behind fine-tuning, tuned-lens training and harvesting.

Documents are tokenised without special tokens, each followed by ``<|endoftext|>``,
concatenated, and cut into windows of ``seq_len`` tokens. The separator belongs to the
document before it (at position ``len(document)``). The tail shorter than a window is either
dropped (training: every window is full) or padded with ``<|endoftext|>`` and marked shorter
in ``valid`` (harvesting: every token is read once).

Tokenisation goes through the fast tokenizer's backend (``encode_batch``), which gives the
same ids as ``tokenizer(text, add_special_tokens=False)`` without its per-call overhead or
its warning for texts longer than the model's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor


@dataclass(frozen=True)
class Windows:
    """Packed windows: ``tokens``, ``doc`` (index into the documents given) and ``pos`` (position in the document).

    All three are ``[window, seq_len]``; ``valid[w]`` is the number of real tokens in window ``w``
    (the rest is padding, with ``doc`` and ``pos`` -1). ``n_tokens`` counts every token of the
    documents and separators, including a dropped tail.
    """

    tokens: Int[Tensor, "window pos"]
    doc: Int[Tensor, "window pos"]
    pos: Int[Tensor, "window pos"]
    valid: Int[Tensor, " window"]
    n_tokens: int


def tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, without special tokens."""
    if not texts:
        return []
    return [enc.ids for enc in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def pack_ids(documents: Sequence[Sequence[int]], seq_len: int, eos: int, *, pad_last: bool) -> Windows:
    """Join ``documents`` (token ids) with ``eos`` after each and cut ``seq_len``-token windows.

    ``pad_last``: pad the last, short window with ``eos`` (and mark it in ``valid``); otherwise
    drop it, so every window is full (possibly none).
    """
    ids: list[int] = []
    lengths = []
    for doc in documents:
        ids += doc
        ids.append(eos)
        lengths.append(len(doc) + 1)
    flat_ids = torch.tensor(ids, dtype=torch.int64)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    flat_doc = torch.arange(len(lengths), dtype=torch.int64).repeat_interleave(lengths_t)
    starts = torch.cumsum(lengths_t, 0) - lengths_t  # each document's first index in the stream
    flat_pos = torch.arange(flat_ids.shape[0], dtype=torch.int64) - starts.repeat_interleave(lengths_t)
    total = flat_ids.shape[0]
    if pad_last:
        n_windows = -(-total // seq_len)
        pad = n_windows * seq_len - total
        valid = torch.full((n_windows,), seq_len, dtype=torch.int64)
        if n_windows:
            valid[-1] = seq_len - pad
        if pad:
            flat_ids = torch.cat([flat_ids, torch.full((pad,), eos, dtype=torch.int64)])
            flat_doc = torch.cat([flat_doc, torch.full((pad,), -1, dtype=torch.int64)])
            flat_pos = torch.cat([flat_pos, torch.full((pad,), -1, dtype=torch.int64)])
    else:
        n_windows = total // seq_len
        keep = n_windows * seq_len
        flat_ids, flat_doc, flat_pos = flat_ids[:keep], flat_doc[:keep], flat_pos[:keep]
        valid = torch.full((n_windows,), seq_len, dtype=torch.int64)
    shape = (n_windows, seq_len)
    return Windows(flat_ids.view(shape), flat_doc.view(shape), flat_pos.view(shape), valid, total)
