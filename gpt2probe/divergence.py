"""KL divergence between next-token distributions, exact where it is small.

Every KL the package reports (model diffing, localisation, the logit and tuned lenses'
``kl_to_final``) comes from :func:`kl_from_logits` or, for the lens's fast path, is checked
against it. Two things make a small KL inaccurate in float32, and both are avoided here:

- ``sum p (log p - log q)`` subtracts numbers near ``log p`` (tens of nats) to get a
  difference of 1e-6: float32's 6e-8 relative rounding of the log-softmaxes alone gives
  errors of 1e-6 and negative values. Everything here is float64.
- The plain sum is first-order in any error of the two normalisers. Since ``sum q = 1``,
  ``KL = sum_v p_v (exp(-d_v) - 1 + d_v)`` with ``d = log p - log q``: every term is
  non-negative (``e^x >= 1 + x``), so the result is never negative, and a normaliser error
  ``delta`` changes it only by ``delta**2 / 2``. ``expm1`` keeps ``exp(-d) - 1`` accurate
  for tiny ``d``.

The logits themselves are taken as given (float32 from the model is fine: its values are
exact in float64); the KL of those logits is then accurate to ~1e-12 relative.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import ShapeError

DEFAULT_CHUNK_BYTES = 64 * 2**20


def kl_from_logits(
    p_logits: Float[Tensor, "... d_vocab"],
    q_logits: Float[Tensor, "... d_vocab"],
    *,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Float[Tensor, "..."]:
    """``KL(softmax(p_logits) || softmax(q_logits))`` in nats over the last axis, in float64.

    Computed a block of rows at a time (``max_chunk_bytes`` of float64 per working tensor),
    on the device of ``p_logits`` (on the CPU for MPS, which has no float64). Never negative;
    exactly 0 for identical inputs.
    """
    if p_logits.shape != q_logits.shape:
        raise ShapeError(f"KL needs logits of one shape, got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    d_vocab = p_logits.shape[-1]
    p_rows = p_logits.reshape(-1, d_vocab)
    if p_rows.device.type == "mps":
        p_rows = p_rows.cpu()
    q_rows = q_logits.reshape(-1, d_vocab).to(p_rows.device)
    rows = max(1, max_chunk_bytes // (8 * max(d_vocab, 1)))
    out = torch.empty(p_rows.shape[0], dtype=torch.float64, device=p_rows.device)
    for start in range(0, p_rows.shape[0], rows):
        log_p = torch.log_softmax(p_rows[start : start + rows].double(), dim=-1)
        d = log_p - torch.log_softmax(q_rows[start : start + rows].double(), dim=-1)
        # exp(-d) - 1 + d >= 0 term by term; sum p exp(-d) = sum q = 1 makes it the KL
        out[start : start + rows] = (log_p.exp() * (torch.expm1(-d) + d)).sum(-1)
    return out.reshape(p_logits.shape[:-1])
