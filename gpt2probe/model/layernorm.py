"""GPT-2's LayerNorm, written once: the statistics, the affine map, the frozen-scale map and the backward.

``LN(x) = (x - mean(x)) / scale * weight + bias`` with ``scale = sqrt(var(x) + eps)`` over
``d_model`` (TransformerLens's ``hook_scale``; ``(x - mean) / scale`` is ``hook_normalized``).
Every place that normalises a residual stream outside the model's own modules (the hook
points, the logit lens, direct logit attribution, the edge sweeps, model diffing, tuned-lens
training) uses a :class:`LayerNorm` from here, so the formulas cannot drift apart.

Each method computes in the dtype of the tensor it is given and converts the weight and bias
to it (``.to`` is free when they already match); callers choose the precision (float32 for a
float16 stream, whose squared entries near 3,000 overflow; float64 where a difference of
two normalised streams must be exact), and get the same floating-point operations, in the
same order, as the copies this module replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class LayerNorm:
    """One LayerNorm's parameters (``weight``, ``bias`` ``[d_model]``) and ``eps``, and the maps built from them.

    Calling it applies it, like the ``torch.nn.LayerNorm`` module it was read from:
    ``ln(x) == F.layer_norm(x, (d_model,), weight, bias, eps)``.
    """

    weight: Float[Tensor, " d_model"]
    bias: Float[Tensor, " d_model"]
    eps: float

    @classmethod
    def of(cls, module: torch.nn.LayerNorm) -> LayerNorm:
        """The live parameters of a ``torch.nn.LayerNorm`` (not detached: gradients reach them)."""
        return cls(module.weight, module.bias, float(module.eps))

    def detach(self) -> LayerNorm:
        """The same LayerNorm with its weight and bias detached (views, no copies)."""
        return LayerNorm(self.weight.detach(), self.bias.detach(), self.eps)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LayerNorm:
        """The weight and bias converted once (e.g. to float64 before a loop that would convert them every time)."""
        return LayerNorm(self.weight.to(device=device, dtype=dtype), self.bias.to(device=device, dtype=dtype), self.eps)

    def __call__(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``LN(x)`` by torch's fused kernel, in ``x``'s dtype and on its device."""
        return F.layer_norm(x, x.shape[-1:], self.weight.to(x.device, x.dtype), self.bias.to(x.device, x.dtype), self.eps)

    def center_and_scale(self, x: Float[Tensor, "... d_model"]) -> tuple[Float[Tensor, "... d_model"], Float[Tensor, "... 1"]]:
        """``(x - mean(x), sqrt(var(x) + eps))``, the biased variance as LayerNorm's (``hook_scale`` is the second)."""
        centered = x - x.mean(-1, keepdim=True)
        return centered, (centered.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def normalize(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``(x - mean(x)) / sqrt(var(x) + eps)``: ``hook_normalized``, before the weight and bias."""
        centered, scale = self.center_and_scale(x)
        return centered / scale

    def affine(self, normalized: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``normalized * weight + bias``: the LayerNorm's output from its normalised input."""
        return normalized * self.weight.to(normalized.dtype) + self.bias.to(normalized.dtype)

    def frozen(self, x: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"]) -> Float[Tensor, "... d_model"]:
        """``(x - mean(x)) / scale * weight``, no bias: the linear map of ``x`` with the scale held fixed.

        With ``scale`` another stream's (the final stream's captured ``hook_scale``), the pieces of
        a decomposition of that stream map to pieces that sum to ``LN(stream) - bias``: direct
        logit attribution, and attribution graphs that freeze every LayerNorm scale.
        """
        return (x - x.mean(-1, keepdim=True)) / scale * self.weight.to(x.device, x.dtype)

    def frozen_transpose(self, grad: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"]) -> Float[Tensor, "... d_model"]:
        """The transpose of :meth:`frozen` (a gradient on ``frozen(x, scale)`` pulled back to ``x``).

        ``frozen`` is ``x -> centre(x) / scale * weight``; centring is its own transpose, so the
        transpose is ``centre(grad * weight) / scale``: the backward pass of a model whose
        LayerNorm scales are frozen (attribution graphs).
        """
        return frozen_normalize_transpose(grad * self.weight.to(grad.device, grad.dtype), scale)

    def backward(self, grad: Float[Tensor, "... d_model"], x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Pull a gradient on ``LN(x)`` back to ``x`` (the Jacobian-vector product at ``x``, scale not frozen)."""
        return self.normalized_backward(grad * self.weight.to(grad.dtype), x)

    def normalized_backward(self, grad: Float[Tensor, "... d_model"], x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Pull a gradient on ``(x - mean) / sqrt(var + eps)`` (before the weight) back to ``x``."""
        centered, sigma = self.center_and_scale(x)
        xhat = centered / sigma
        return (grad - grad.mean(-1, keepdim=True) - xhat * (grad * xhat).mean(-1, keepdim=True)) / sigma


def frozen_normalize_transpose(grad: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"]) -> Float[Tensor, "... d_model"]:
    """The transpose of ``x -> (x - mean(x)) / scale`` with ``scale`` fixed (no weight): ``centre(grad) / scale``.

    What a gradient on a frozen-scale LayerNorm's normalised output (before its weight) sends
    back to the stream, e.g. through a transcoder that reads ``hook_normalized``.
    """
    return (grad - grad.mean(dim=-1, keepdim=True)) / scale
