"""The replacement model's backward pass, written out: rows of the adjacency matrix without autograd.

In the local replacement model (:mod:`.replacement`) attention patterns and LayerNorm scales
are constants, MLPs are replaced by what the transcoders and error nodes write, so the
residual stream is a *linear* function of the sources. The gradient of a target (a vector
read at one layer and position) with respect to every earlier point of the stream is
therefore a fixed linear map, which this module applies block by block, from the top down::

    G  = d target / d resid_post[l]          (= d target / d mlp_out[l]: read the layer-l sources here)
    G += centre(G @ W_skip[l]^T) / s2[l]     (the transcoder's skip connection, if it has one)
    G += targets read at mlp_in[l]           (centre(v) / s2[l] at their position)
    G += centre(w1[l] * attn^T(G)) / s1[l]   (attention with its pattern frozen: only the OV path)

where ``centre`` subtracts the mean over ``d_model`` (LayerNorm's centring, the transpose of
itself), ``s1``/``s2`` are ``ln1``/``ln2``'s frozen scales, ``w1`` ``ln1``'s weight (these
transposes are :meth:`gpt2probe.model.layernorm.LayerNorm.frozen_transpose` and
:func:`~gpt2probe.model.layernorm.frozen_normalize_transpose`), and
``attn^T(G)[k] = sum_h sum_q A[h, q, k] (G[q] @ W_O[h]^T) @ W_V[h]^T``.

Why not autograd through the model, as circuit-tracer does? On a CPU the backward pass is
the whole cost of a graph, and autograd through Hugging Face's attention computes the gradient
through the fused ``c_attn`` (queries and keys too, though their pattern is frozen) at every
position. Written out, a target at position ``p`` needs only positions ``0..p`` (causality)
and the value path: about a quarter of the work, and no forward copy of the prompt per target
kept for the backward. The result is checked against autograd through the hooked model in
the tests (``test_edges_equal_single_source_passes``) and, for every graph, by the identity
``edges + constant == value`` whose constants come from a separate forward pass.

Memory per batch of ``b`` targets: one ``[b, pos, d_model]`` gradient and its temporaries;
rows are written straight into the caller's output, layer by layer.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor

from .. import names as N
from ..model.layernorm import LayerNorm, frozen_normalize_transpose
from .replacement import PromptRun
from .transcoders import Probe, TranscoderLike


def ln1s(probe: Probe) -> list[LayerNorm]:
    """Each block's ``ln1``, read through the model seam (:meth:`gpt2probe.model.weights.Weights.block`), detached."""
    weights = probe.weights
    return [weights.block(layer).ln1.detach() for layer in range(probe.cfg.n_layers)]


class LinearBackward:
    """The frozen linear maps of one prompt's replacement model, and their transpose applied to targets.

    Args:
        probe: the model (weights are read once, detached).
        run: the prompt's own forward pass (frozen scales and patterns).
        transcoders: one per layer (only ``W_skip`` is read here).
    """

    def __init__(self, probe: Probe, run: PromptRun, transcoders: list[TranscoderLike]) -> None:
        n_layers = len(transcoders)
        self.n_layers = n_layers
        with torch.no_grad():
            self.s1 = [run.frozen[N.ln_scale(layer, 1)][0, :, 0] for layer in range(n_layers)]  # [pos]
            self.s2 = [run.frozen[N.ln_scale(layer, 2)][0, :, 0] for layer in range(n_layers)]
            self.pattern = [run.frozen[N.pattern(layer)][0] for layer in range(n_layers)]  # [head, q, k]
            self.s_final = run.frozen[N.LN_FINAL_SCALE][0, :, 0]
            self.ln_final = probe.weights.ln_final.detach()
            self.ln1 = ln1s(probe)
            W_V, W_O = probe.W_V.detach(), probe.W_O.detach()  # [layer, head, d_model, d_head], [layer, head, d_head, d_model]
            self.n_heads = W_V.shape[1]
            # flattened over heads, so each map is one matmul: G @ W_O_flat^T and M @ W_V_flat^T
            self.W_O_flat = [rearrange(W_O[layer], "h e d -> (h e) d").contiguous() for layer in range(n_layers)]
            self.W_V_flat = [rearrange(W_V[layer], "h d e -> d (h e)").contiguous() for layer in range(n_layers)]
            self.W_skip = [tc.W_skip.detach() if tc.W_skip is not None else None for tc in transcoders]

    def targets_at_final(self, vectors: Float[Tensor, "n d_model"], positions: Int[Tensor, " n"]) -> Tensor:
        """Gradient at ``resid_post[last layer]`` of ``vectors . ln_final(stream)`` (logit targets)."""
        return self.ln_final.frozen_transpose(vectors, self.s_final[positions, None])

    def attention_transpose(self, layer: int, grad: Float[Tensor, "b p d_model"]) -> Float[Tensor, "b p d_model"]:
        """What ``grad`` at the attention output sends back to the block's input (the OV path, pattern frozen)."""
        p = grad.shape[1]
        heads = rearrange(grad @ self.W_O_flat[layer].T, "b q (h e) -> b q h e", h=self.n_heads)
        mixed = einsum(self.pattern[layer][:, :p, :p], heads, "h q k, b q h e -> b k h e")
        back = rearrange(mixed, "b k h e -> b k (h e)") @ self.W_V_flat[layer].T
        return self.ln1[layer].frozen_transpose(back, self.s1[layer][:p, None])

    def skip_transpose(self, layer: int, grad: Float[Tensor, "b p d_model"]) -> Float[Tensor, "b p d_model"] | None:
        """What ``grad`` at the MLP output sends back through the transcoder's skip connection (``None``: no skip)."""
        W_skip = self.W_skip[layer]
        if W_skip is None:
            return None
        return frozen_normalize_transpose(grad @ W_skip.T, self.s2[layer][: grad.shape[1], None])

    def targets_at_mlp_in(self, layer: int, vectors: Float[Tensor, "n d_model"], positions: Int[Tensor, " n"]) -> Tensor:
        """Gradient at ``resid_mid[layer]`` of ``vectors . mlp_in[layer]`` (feature targets: encoder rows)."""
        return frozen_normalize_transpose(vectors, self.s2[layer][positions, None])
