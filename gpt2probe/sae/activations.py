"""The sparsifying nonlinearities, one small function each, as SAELens 6 computes them at inference.

Each takes the pre-activations ``[..., d_sae]`` and returns the feature activations of the
same shape; all are non-negative.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def relu(pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
    """The standard SAE's ReLU."""
    return pre.relu()


def topk(pre: Float[Tensor, "*batch d_sae"], k: int) -> Float[Tensor, "*batch d_sae"]:
    """Keep each token's ``k`` largest pre-activations, ReLU'd; zero elsewhere (Gao et al. 2024).

    Ties at the ``k``-th value are broken by ``torch.topk``'s order (as in SAELens).
    """
    return topk_with_support(pre, k)[0]


def topk_with_support(pre: Float[Tensor, "*batch d_sae"], k: int
                      ) -> tuple[Float[Tensor, "*batch d_sae"], Int[Tensor, "*batch k"]]:
    """:func:`topk`, and each token's ``k`` kept features: every activation outside them is exactly 0.

    The kept features are distinct; a kept one may still be 0 (a pre-activation at or below 0).
    """
    values, indices = torch.topk(pre, k=k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, values.relu()), indices


def jumprelu(pre: Float[Tensor, "*batch d_sae"], threshold: Float[Tensor, " d_sae"]) -> Float[Tensor, "*batch d_sae"]:
    """ReLU, then zero wherever the pre-activation is at or below its feature's ``threshold``.

    Also batch top-k's inference rule: its threshold is the one learned during training.
    The ReLU matters only for negative thresholds, where SAELens keeps it too.
    """
    return pre.relu() * (pre > threshold).to(pre.dtype)
