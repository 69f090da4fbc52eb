"""The tuned lens's trainable part: one affine translator per residual stream.

Its own module so that :mod:`gpt2probe.lens.tuned` (the lens) and
:mod:`gpt2probe.lens.tuned_training` (which trains it, and which the lens imports) can both
name its type without importing each other.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


class Translators(torch.nn.Module):
    """The trainable part: one ``h -> h + h @ weight[i].T + bias[i]`` per translated stream."""

    def __init__(self, n_streams: int, d_model: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_streams, d_model, d_model))
        self.bias = torch.nn.Parameter(torch.zeros(n_streams, d_model))

    def forward(self, h: Float[Tensor, "... d_model"], index: int) -> Float[Tensor, "... d_model"]:
        weight, bias = self.weight[index], self.bias[index]
        return h + (h.to(weight.dtype) @ weight.T + bias).to(h.dtype)
